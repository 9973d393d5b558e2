//! Tidepool's example server.
//!
//! ```text
//! cargo run --release --example hello -- --listen 127.0.0.1:8080 [--workers N] \
//!     [--pg URL [--pg-max-open N] [--pg-autoscale MIN:MAX]] \
//!     [--redis URL [--redis-max-open N] [--redis-autoscale MIN:MAX]]
//! ```
//! Routes: `GET /plaintext`, `/json`, `/health`, `/metrics`; with `--pg`:
//! `/db`, `/queries?n=N`, `/db/sleep?ms=N`; with `--redis`: `/redis`,
//! `GET|PUT /cache/{key}`.

mod app;
mod args;
mod setup;

use std::process::ExitCode;
use std::sync::Arc;

use tidepool::drivers::pool::pg::PgManager;
use tidepool::drivers::pool::redis::RedisManager;
use tidepool::drivers::pool::{Pool, PoolConfig};
use tidepool::drivers::{pg, redis};
use tidepool::engine::workers::{allowed_cpus, on_termination_signal};
use tidepool::engine::Server;

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("hello: {msg}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let workers = if args.workers == 0 {
        allowed_cpus().len().max(1)
    } else {
        args.workers
    };
    let pg = match &args.pg {
        None => None,
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
                ..PoolConfig::default()
            };
            match Pool::new("pg", pool_cfg, PgManager::new(cfg), workers) {
                Ok(p) => Some(p),
                Err(e) => return fail(e),
            }
        }
    };
    let redis = match &args.redis {
        None => None,
        Some(url) => {
            if let Err(e) = setup::prepare_redis(url) {
                return fail(format!("Redis at {url}: {e}"));
            }
            let cfg = match redis::Config::from_url(url) {
                Ok(c) => c.client_name("tidepool-hello"),
                Err(e) => return fail(e),
            };
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
    let shared = Arc::new(app::Shared {
        pg,
        redis,
        http_stats: Default::default(),
        windows: Default::default(),
    });
    let (tx, rx) = std::sync::mpsc::channel();
    if let Err(e) = on_termination_signal(move || {
        let _ = tx.send(());
    }) {
        return fail(format!("cannot install signal handling: {e}"));
    }
    let for_workers = shared.clone();
    let server = match Server::bind(args.listen)
        .workers(workers)
        .serve(move |info| app::router(info, for_workers.clone()))
    {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot serve on {}: {e}", args.listen)),
    };
    let _ = shared.http_stats.set(server.worker_stats());
    let _ = (args.pg_autoscale, args.redis_autoscale);
    eprintln!(
        "hello: listening on http://{} with {workers} workers",
        server.local_addr()
    );
    let _ = rx.recv();
    eprintln!("hello: shutting down");
    server.shutdown();
    ExitCode::SUCCESS
}
