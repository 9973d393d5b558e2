//! A small JSON API on Tidepool: todos in PostgreSQL, read through a Redis
//! cache, with autoscaled pools sized from a config file.
//!
//! ```text
//! todo --listen ADDR --pg URL --redis URL [--config FILE] [--workers N]
//! POST  /todos            {"title": "…"}           -> 201 {"id", "title", "done"}
//! GET   /todos/{id}                                -> 200, or 404 {"error": …}
//! PATCH /todos/{id}       {"title"?: …, "done"?: …} -> 200
//! GET   /todos?limit=N                             -> 200 [ … ] (newest first)
//! ```
//! Bad JSON is a 400 with a JSON message; the database down, a 503.

mod api;

use std::process::ExitCode;
use std::sync::Arc;

use tidepool::config::Settings;
use tidepool::drivers::pg::{self, Client};
use tidepool::drivers::pool::pg::PgManager;
use tidepool::drivers::pool::redis::RedisManager;
use tidepool::drivers::pool::supervised::Probe;
use tidepool::drivers::pool::{Pool, PoolConfig};
use tidepool::drivers::redis;
use tidepool::engine::rt;
use tidepool::engine::workers::{default_workers, on_termination_signal};
use tidepool::supervisor::{PoolAutoscale, SupervisedPool, Supervisor, SupervisorConfig};
use tidepool::{HttpConfig, Server};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS todos (
    id bigserial PRIMARY KEY, title text NOT NULL, done boolean NOT NULL DEFAULT false)";

struct Args {
    listen: String,
    pg: String,
    redis: String,
    config: Option<String>,
    workers: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        listen: "127.0.0.1:8080".into(),
        pg: String::new(),
        redis: String::new(),
        config: None,
        workers: default_workers(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => a.listen = v,
            "--pg" => a.pg = v,
            "--redis" => a.redis = v,
            "--config" => a.config = Some(v),
            "--workers" => a.workers = v.parse().map_err(|_| format!("--workers {v}"))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.pg.is_empty() || a.redis.is_empty() {
        return Err("usage: todo --listen ADDR --pg URL --redis URL [--config FILE]".into());
    }
    Ok(a)
}

fn run(args: Args) -> Result<(), String> {
    // Before any thread starts: they inherit the blocked signals.
    let (tx, rx) = std::sync::mpsc::channel();
    on_termination_signal(move || {
        let _ = tx.send(());
    })
    .map_err(|e| e.to_string())?;
    let settings = Settings::load(args.config.as_deref().map(std::path::Path::new))
        .and_then(|s| s.check(&[], &["pg", "redis"]).map(|()| s))
        .map_err(|e| e.to_string())?;
    let pg_cfg = pg::Config::from_url(&args.pg)
        .map_err(|e| e.to_string())?
        .application_name("todo");
    rt::block_on(async {
        let mut c = Client::connect(&pg_cfg).await?;
        c.batch_execute(SCHEMA).await
    })
    .map_err(|e| format!("PostgreSQL: {e}"))?;
    let redis_cfg = redis::Config::from_url(&args.redis).map_err(|e| e.to_string())?;
    let pool_cfg = |name| {
        settings
            .pool(name, PoolConfig::default())
            .map_err(|e| e.to_string())
    };
    let redis_pool_cfg = pool_cfg("redis")?;
    let manager = RedisManager::new(redis_cfg, redis_pool_cfg.max_in_flight);
    let pools = Arc::new(api::Pools {
        pg: Pool::new("pg", pool_cfg("pg")?, PgManager::new(pg_cfg), args.workers)
            .map_err(|e| e.to_string())?,
        redis: Pool::new("redis", redis_pool_cfg, manager, args.workers)
            .map_err(|e| e.to_string())?,
    });
    let autoscale = |name| {
        settings
            .autoscale(name, PoolAutoscale::default())
            .map_err(|e| e.to_string())
    };
    let supervised: Vec<(Box<dyn SupervisedPool>, PoolAutoscale, usize)> = vec![
        (Box::new(Probe::new(pools.pg.clone())), autoscale("pg")?, 0),
        (
            Box::new(Probe::new(pools.redis.clone())),
            autoscale("redis")?,
            0,
        ),
    ];
    let _supervisor = Supervisor::start(SupervisorConfig::default(), supervised)?;
    let http = settings
        .http(HttpConfig::default())
        .map_err(|e| e.to_string())?;
    let listen = args.listen.parse().map_err(|e| format!("--listen: {e}"))?;
    let server = Server::bind(listen)
        .workers(args.workers)
        .http_config(http)
        .serve(move |w| api::router(&pools, w.index))
        .map_err(|e| format!("cannot serve on {listen}: {e}"))?;
    eprintln!("todo: listening on http://{}", server.local_addr());
    let _ = rx.recv();
    server.shutdown();
    Ok(())
}

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("todo: {e}");
            ExitCode::FAILURE
        }
    }
}
