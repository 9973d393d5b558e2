//! What the example wires into its `App`: the databases' preparation, the
//! pools' starting values and flag overrides, the report cache, HTTPS.

use std::sync::Arc;
use std::time::Duration;

use tidepool::app::{App, HookResult, Startup};
use tidepool::drivers::cache::{Cache, CacheConfig, OnTimeout, DEFAULT_XFETCH_BETA};
use tidepool::drivers::fleet::FleetConfig;
use tidepool::drivers::pool::pg::WarmupSlots;
use tidepool::drivers::pool::PoolConfig;
use tidepool::drivers::redis::SetOptions;
use tidepool::engine::tls;
use tidepool::supervisor::{PoolAutoscale, Target};

use crate::args::Args;

/// Callers per shared PostgreSQL connection: room for a worker's whole
/// burst of point queries on one backend, so they batch into one write
/// (against 32: 0.955x CPU per request on /db, paired median of 6 rounds,
/// and 1.12x req/s). Connections beyond the first take only the overflow.
const PG_SHARED_IN_FLIGHT: usize = 64;

/// First advisory-lock key of the example's warm-up slots ("tide" in ASCII).
const WARMUP_LOCK_BASE: i64 = 0x7469_6465_0000;

/// Creates `world(id, randomnumber)` with 10,000 rows when it is absent,
/// and sets the Redis `greeting` when it is absent.
pub async fn prepare(db: &Startup, pg: bool, redis: bool) -> HookResult {
    if pg {
        let mut c = db.postgres("pg").await?;
        // Instances starting together take turns (CREATE TABLE IF NOT
        // EXISTS races otherwise).
        c.batch_execute(
            "BEGIN; SELECT pg_advisory_xact_lock(7416);
             CREATE TABLE IF NOT EXISTS world (id int PRIMARY KEY, randomnumber int NOT NULL);
             INSERT INTO world SELECT g, 1 + floor(random() * 10000)::int
             FROM generate_series(1, 10000) g ON CONFLICT (id) DO NOTHING; COMMIT",
        )
        .await?;
        let _ = c.close().await;
    }
    if redis {
        let c = db.redis("redis").await?;
        let _: bool = c
            .set_with("greeting", "Hello, World!", SetOptions::new().nx())
            .await?;
    }
    Ok(())
}

/// Rails from the command line; a short window so a demo shows movement
/// within seconds (production services keep the 30 s default).
fn demo_autoscale(min: usize, max: usize) -> PoolAutoscale {
    PoolAutoscale {
        enabled: true,
        min,
        max,
        target: Target::AcquireWaitP99(Duration::from_millis(5)),
        window: Duration::from_secs(5),
        step: 1,
        cooldown: Duration::from_secs(2),
    }
}

/// Pool `name`'s starting values and the flags that win over the
/// configuration file and the environment.
pub fn pool(app: App, name: &'static str, args: &Args) -> App {
    let (max_open, in_flight) = match name {
        "pg" => (8, PoolConfig::default().max_in_flight),
        "pg-shared" => (4, PG_SHARED_IN_FLIGHT),
        _ => (2, PoolConfig::default().max_in_flight),
    };
    let base = PoolConfig {
        max_open,
        max_in_flight: in_flight,
        ..PoolConfig::default()
    };
    let flag = |f: &str| args.given(f);
    let ms = Duration::from_millis;
    let (max_flag, max_value, rails) = match name {
        "pg" => ("--pg-max-open", args.pg_max_open, args.pg_autoscale),
        "pg-shared" => (
            "--pg-shared-max-open",
            args.pg_shared_max_open,
            args.pg_shared_autoscale,
        ),
        _ => (
            "--redis-max-open",
            args.redis_max_open,
            args.redis_autoscale,
        ),
    };
    let max = flag(max_flag).then_some(max_value);
    let pg = name == "pg";
    let min_idle = (pg && flag("--pg-min-idle")).then_some(args.pg_min_idle);
    let delay = (pg && flag("--warmup-delay")).then_some(ms(args.warmup_delay_ms));
    let jitter = (pg && flag("--warmup-jitter")).then_some(ms(args.warmup_jitter_ms));
    let pause = (pg && flag("--warmup-pause")).then_some(ms(args.warmup_pause_ms));
    let mut app = app.pool_config(name, base).override_pool(name, move |c| {
        c.max_open = max.unwrap_or(c.max_open);
        c.min_idle = min_idle.unwrap_or(c.min_idle);
        c.warmup_delay = delay.unwrap_or(c.warmup_delay);
        c.warmup_jitter = jitter.unwrap_or(c.warmup_jitter);
        c.warmup_pause = pause.unwrap_or(c.warmup_pause);
    });
    if let Some((min, max)) = rails {
        app = app
            .autoscale(name, demo_autoscale(min, max))
            .override_autoscale(name, move |a| (a.enabled, a.min, a.max) = (true, min, max));
    }
    if pg && args.warmup_slots > 0 {
        // The cluster-wide warm-up slots gate the pool that warms up (the
        // exclusive one, with --pg-min-idle): one slot per process.
        app = app.warmup_slots(
            name,
            WarmupSlots {
                slots: args.warmup_slots,
                key_base: WARMUP_LOCK_BASE,
                wait_max: Duration::from_secs(60),
            },
        );
    }
    app
}

/// The /report cache: a lease well above the query's 200 ms, a short wait
/// before computing anyway (a late report beats a 503), and XFetch so a
/// hot report is refreshed before it expires.
pub fn report_cache() -> Cache {
    let cfg = CacheConfig {
        key_prefix: "hello:".into(),
        lease: Duration::from_secs(5),
        wait_timeout: Duration::from_secs(2),
        on_timeout: OnTimeout::Compute,
        xfetch_beta: Some(DEFAULT_XFETCH_BETA),
        ..CacheConfig::default()
    };
    Cache::new("report", cfg).expect("the report cache's configuration is valid")
}

/// The HTTPS configuration from `--tls-cert`/`--tls-key` pairs.
pub fn tls_config(
    pairs: &[(String, Option<String>)],
) -> Result<Arc<tls::rustls::ServerConfig>, String> {
    let mut certs = Vec::new();
    for (cert, key) in pairs {
        let key = key.as_deref().unwrap_or_default();
        certs.push(tls::ServerCert {
            chain: tls::load_certs(cert.as_ref()).map_err(|e| e.to_string())?,
            key: tls::load_key(key.as_ref()).map_err(|e| e.to_string())?,
        });
    }
    tls::server_config(certs, &[b"http/1.1"]).map_err(|e| e.to_string())
}

/// `--fleet NAME --pg-fleet-budget N [--fleet-lease-ttl MS] [--fleet-safe-capacity N]`.
pub fn fleet(args: &Args) -> Result<Option<FleetConfig>, String> {
    let (name, budget) = match (&args.fleet, args.pg_fleet_budget) {
        (None, None) => return Ok(None),
        (Some(n), Some(b)) if args.pg.is_some() => (n, b),
        (Some(_), Some(_)) => return Err("--fleet needs --pg".into()),
        _ => return Err("--fleet and --pg-fleet-budget go together".into()),
    };
    let mut cfg = FleetConfig::new(name.clone(), budget);
    if let Some(ms) = args.fleet_lease_ttl_ms {
        cfg.ttl = std::time::Duration::from_millis(ms);
    }
    if let Some(n) = args.fleet_safe_capacity {
        cfg.safe_capacity = n;
    }
    Ok(Some(cfg))
}
