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

use tidepool::config::{ConfigError, Settings};
use tidepool::drivers::cache::{Cache, CacheConfig, OnTimeout, DEFAULT_XFETCH_BETA};
use tidepool::drivers::pool::pg::{PgManager, PgSharedManager, WarmupSlots};
use tidepool::drivers::pool::redis::RedisManager;
use tidepool::drivers::pool::supervised::Probe;
use tidepool::drivers::pool::{Pool, PoolConfig};
use tidepool::drivers::{pg, redis};
use tidepool::engine::workers::{default_workers, on_termination_signal};
use tidepool::engine::{HttpConfig, Server};
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

/// Pool `name`'s configuration: the example's defaults, then the config
/// file and the environment, then the flags given.
fn pool_config(
    settings: &Settings,
    name: &str,
    args: &args::Args,
) -> Result<PoolConfig, ConfigError> {
    let ms = Duration::from_millis;
    let base = match name {
        "pg" => PoolConfig {
            max_open: 8,
            ..PoolConfig::default()
        },
        "pg-shared" => PoolConfig {
            max_open: 4,
            max_in_flight: PG_SHARED_IN_FLIGHT,
            ..PoolConfig::default()
        },
        _ => PoolConfig {
            max_open: 2,
            ..PoolConfig::default()
        },
    };
    let mut c = settings.pool(name, base)?;
    let flag = |f: &str| args.given(f);
    match name {
        "pg" => {
            if flag("--pg-max-open") {
                c.max_open = args.pg_max_open;
            }
            if flag("--pg-min-idle") {
                c.min_idle = args.pg_min_idle;
            }
            if flag("--warmup-delay") {
                c.warmup_delay = ms(args.warmup_delay_ms);
            }
            if flag("--warmup-jitter") {
                c.warmup_jitter = ms(args.warmup_jitter_ms);
            }
            if flag("--warmup-pause") {
                c.warmup_pause = ms(args.warmup_pause_ms);
            }
        }
        "pg-shared" if flag("--pg-shared-max-open") => c.max_open = args.pg_shared_max_open,
        "redis" if flag("--redis-max-open") => c.max_open = args.redis_max_open,
        _ => {}
    }
    Ok(c)
}

/// Pool `name`'s autoscaling: the file's and the environment's settings
/// over the example's, with the rails of a `--*-autoscale MIN:MAX` flag
/// winning.
fn autoscale_config(
    settings: &Settings,
    name: &str,
    rails: Option<(usize, usize)>,
) -> Result<PoolAutoscale, ConfigError> {
    let mut a = settings.autoscale(name, autoscale(rails))?;
    if let Some((min, max)) = rails {
        a.enabled = true;
        a.min = min;
        a.max = max;
    }
    Ok(a)
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
    let settings = match Settings::load(args.config.as_deref())
        .and_then(|s| s.check(&[], &["pg", "pg-shared", "redis"]).map(|()| s))
    {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    // Every pool's settings are checked now, the pools not started as well.
    for name in ["pg", "pg-shared", "redis"] {
        let checked = pool_config(&settings, name, &args)
            .and_then(|_| autoscale_config(&settings, name, None));
        if let Err(e) = checked {
            return fail(e);
        }
    }
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
            let pool_cfg = match pool_config(&settings, "pg", &args) {
                Ok(c) => c,
                Err(e) => return fail(e),
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
            let shared_cfg = match pool_config(&settings, "pg-shared", &args) {
                Ok(c) => c,
                Err(e) => return fail(e),
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
            let pool_cfg = match pool_config(&settings, "redis", &args) {
                Ok(c) => c,
                Err(e) => return fail(e),
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
    let http = match settings.http(HttpConfig::default()) {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let mut server = Server::bind(args.listen)
        .http_config(http)
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
            match autoscale_config(&settings, "pg", args.pg_autoscale) {
                Ok(a) => a,
                Err(e) => return fail(e),
            },
            p.config().min_idle,
        ));
    }
    if let Some(p) = &shared.pg_shared {
        supervised.push((
            Box::new(Probe::new(p.clone())),
            match autoscale_config(&settings, "pg-shared", args.pg_shared_autoscale) {
                Ok(a) => a,
                Err(e) => return fail(e),
            },
            p.config().min_idle,
        ));
    }
    if let Some(p) = &shared.redis {
        supervised.push((
            Box::new(Probe::new(p.clone())),
            match autoscale_config(&settings, "redis", args.redis_autoscale) {
                Ok(a) => a,
                Err(e) => return fail(e),
            },
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
