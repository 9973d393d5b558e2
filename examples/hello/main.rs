//! Tidepool's example server.
//!
//! ```text
//! cargo run --release --example hello -- --listen 127.0.0.1:8080 [--workers N] \
//!     [--pg URL [--pg-max-open N] [--pg-autoscale MIN:MAX]
//!               [--pg-shared-max-open N] [--pg-shared-autoscale MIN:MAX]] \
//!     [--redis URL [--redis-max-open N] [--redis-autoscale MIN:MAX]]
//! ```
//! Routes: `GET /plaintext`, `/json`, `/health`, `/metrics`; with `--pg`:
//! `/db`, `/queries?n=N`, `/db/sleep?ms=N`; with `--redis`: `/redis`,
//! `GET|PUT /cache/{key}`; with both: `/report/{day}` (a slow query behind
//! the stampede-protected cache).

mod app;
mod args;
mod log;
mod setup;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tidepool::drivers::cache::{Cache, CacheConfig, OnTimeout, DEFAULT_XFETCH_BETA};
use tidepool::drivers::pool::pg::{PgManager, PgSharedManager, WarmupSlots};
use tidepool::drivers::pool::redis::RedisManager;
use tidepool::drivers::pool::supervised::Probe;
use tidepool::drivers::pool::{Pool, PoolConfig};
use tidepool::drivers::{pg, redis};
use tidepool::engine::workers::{default_workers, on_termination_signal};
use tidepool::engine::Server;
use tidepool::supervisor::{PoolAutoscale, SupervisedPool, Supervisor, SupervisorConfig, Target};

/// Rails from the command line; a short window so a demo shows movement
/// within seconds (production services keep the 30 s default).
fn autoscale(rails: Option<(usize, usize)>) -> PoolAutoscale {
    match rails {
        None => PoolAutoscale::default(),
        Some((min, max)) => PoolAutoscale {
            enabled: true,
            min,
            max,
            target: Target::AcquireWaitP99(Duration::from_millis(5)),
            window: Duration::from_secs(5),
            step: 1,
            cooldown: Duration::from_secs(2),
        },
    }
}

/// The /report cache: a lease well above the query's 200 ms, a short wait
/// before computing anyway (a late report beats a 503), and XFetch so a
/// hot report is refreshed before it expires.
/// The HTTPS configuration from `--tls-cert`/`--tls-key` pairs.
fn tls_config(
    pairs: &[(String, Option<String>)],
) -> Result<std::sync::Arc<tidepool::engine::tls::rustls::ServerConfig>, String> {
    use tidepool::engine::tls;
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

fn report_cache() -> Cache {
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

/// Callers per shared PostgreSQL connection: room for a worker's whole
/// burst of point queries on one backend, so they batch into one write
/// (against 32: 0.955x CPU per request on /db, paired median of 6 rounds,
/// and 1.12x req/s). Connections beyond the first take only the overflow.
const PG_SHARED_IN_FLIGHT: usize = 64;

/// First advisory-lock key of the example's warm-up slots ("tide" in ASCII).
const WARMUP_LOCK_BASE: i64 = 0x7469_6465_0000;

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("hello: {msg}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    log::install();
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let workers = if args.workers == 0 {
        default_workers()
    } else {
        args.workers
    };
    let (pg, pg_shared) = match &args.pg {
        None => (None, None),
        Some(url) => {
            if let Err(e) = setup::prepare_pg(url) {
                return fail(format!("PostgreSQL at {url}: {e}"));
            }
            let cfg = match pg::Config::from_url(url) {
                Ok(c) => c.application_name("tidepool-hello"),
                Err(e) => return fail(e),
            };
            let pool_cfg = PoolConfig {
                max_open: args.pg_max_open,
                min_idle: args.pg_min_idle,
                warmup_delay: Duration::from_millis(args.warmup_delay_ms),
                warmup_jitter: Duration::from_millis(args.warmup_jitter_ms),
                warmup_pause: Duration::from_millis(args.warmup_pause_ms),
                ..PoolConfig::default()
            };
            // The cluster-wide warm-up slots gate the pool that warms up
            // (the exclusive one, with --pg-min-idle): one slot per process.
            let mut manager = PgManager::new(cfg.clone());
            if args.warmup_slots > 0 {
                manager = manager.with_warmup_slots(WarmupSlots {
                    slots: args.warmup_slots,
                    key_base: WARMUP_LOCK_BASE,
                    wait_max: Duration::from_secs(60),
                });
            }
            let exclusive = match Pool::new("pg", pool_cfg, manager, workers) {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            // Point queries pipelined on a few shared connections: a
            // backend answers a batch for far less CPU than one wake-up
            // per query.
            let shared_cfg = PoolConfig {
                max_open: args.pg_shared_max_open,
                max_in_flight: PG_SHARED_IN_FLIGHT,
                ..PoolConfig::default()
            };
            let m = PgSharedManager::new(cfg);
            match Pool::new("pg-shared", shared_cfg, m, workers) {
                Ok(p) => (Some(exclusive), Some(p)),
                Err(e) => return fail(e),
            }
        }
    };
    let redis = match &args.redis {
        None => None,
        Some(url) => {
            let cfg = match redis::Config::from_url(url) {
                Ok(c) => c.client_name("tidepool-hello"),
                Err(e) => return fail(e),
            };
            let cfg = match &args.redis_ca {
                Some(ca) if url.starts_with("rediss://") => cfg.tls_ca(ca),
                Some(_) => return fail("--redis-ca needs a rediss:// URL"),
                None => cfg,
            };
            if let Err(e) = setup::prepare_redis(&cfg) {
                return fail(format!("Redis at {url}: {e}"));
            }
            let pool_cfg = PoolConfig {
                max_open: args.redis_max_open,
                ..PoolConfig::default()
            };
            let m = RedisManager::new(cfg, pool_cfg.max_in_flight);
            match Pool::new("redis", pool_cfg, m, workers) {
                Ok(p) => Some(p),
                Err(e) => return fail(e),
            }
        }
    };
    let report_cache = redis.as_ref().map(|_| report_cache());
    let shared = Arc::new(app::Shared {
        pg,
        pg_shared,
        redis,
        http_stats: Default::default(),
        windows: Default::default(),
        fault_injection: args.fault_injection,
        supervisor: Default::default(),
        report_cache,
        cache_windows: Default::default(),
    });
    let (tx, rx) = std::sync::mpsc::channel();
    if let Err(e) = on_termination_signal(move || {
        let _ = tx.send(());
    }) {
        return fail(format!("cannot install signal handling: {e}"));
    }
    let for_workers = shared.clone();
    let mut server = Server::bind(args.listen)
        .workers(workers)
        .pin_workers(args.pin)
        .io(args.io);
    if let Some(us) = args.coalesce_us {
        server = server.coalesce_window(Duration::from_micros(us));
    }
    if !args.tls.is_empty() {
        match tls_config(&args.tls) {
            Ok(c) => server = server.tls(c),
            Err(e) => return fail(e),
        }
    }
    let server = match server.serve(move |info| app::router(info, for_workers.clone())) {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot serve on {}: {e}", args.listen)),
    };
    let _ = shared.http_stats.set(server.worker_stats());
    // The supervisor samples both pools (for /metrics) and resizes those
    // given rails.
    let mut supervised: Vec<(Box<dyn SupervisedPool>, PoolAutoscale, usize)> = Vec::new();
    if let Some(p) = &shared.pg {
        supervised.push((
            Box::new(Probe::new(p.clone())),
            autoscale(args.pg_autoscale),
            p.config().min_idle,
        ));
    }
    if let Some(p) = &shared.pg_shared {
        supervised.push((
            Box::new(Probe::new(p.clone())),
            autoscale(args.pg_shared_autoscale),
            p.config().min_idle,
        ));
    }
    if let Some(p) = &shared.redis {
        supervised.push((
            Box::new(Probe::new(p.clone())),
            autoscale(args.redis_autoscale),
            p.config().min_idle,
        ));
    }
    let supervisor = match Supervisor::start(SupervisorConfig::default(), supervised) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let _ = shared.supervisor.set(supervisor.state());
    let io: Vec<String> = tidepool::engine::rt::backend::selections()
        .iter()
        .map(|s| format!("{} ({})", s.backend, s.reason))
        .collect();
    eprintln!(
        "hello: listening on {}://{} with {workers} workers, I/O on {}",
        if args.tls.is_empty() { "http" } else { "https" },
        server.local_addr(),
        io.join(", ")
    );
    let _ = rx.recv();
    eprintln!("hello: shutting down");
    server.shutdown();
    supervisor.stop();
    ExitCode::SUCCESS
}
