//! Tidepool's example server.
//!
//! ```text
//! cargo run --release --example hello -- --listen 127.0.0.1:8080 [--workers N] \
//!     [--config FILE] [--pg URL [--pg-max-open N] [--pg-autoscale MIN:MAX]
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
use std::time::Duration;

use tidepool::app::App;
use tidepool::drivers::{pg, redis};

fn run(args: args::Args) -> Result<(), String> {
    let mut app = App::new().optional_pools(&["pg", "pg-shared", "redis"]);
    // Flags given win over the configuration's [app] table.
    if args.given("--listen") {
        app = app.listen(args.listen.to_string());
    }
    if !args.pin {
        app = app.pin_workers(false);
    }
    if args.workers > 0 {
        app = app.workers(args.workers);
    }
    if let Some(path) = &args.config {
        app = app.config_file(path);
    }
    let (io, coalesce) = (args.io, args.coalesce_us);
    app = app.server(move |s| match coalesce {
        Some(us) => s.io(io).coalesce_window(Duration::from_micros(us)),
        None => s.io(io),
    });
    if !args.tls.is_empty() {
        app = app.tls(setup::tls_config(&args.tls)?);
    }
    if let Some(url) = &args.pg {
        let cfg = pg::Config::from_url(url)
            .map_err(|e| e.to_string())?
            .application_name("tidepool-hello");
        // Exclusive connections for /db/sleep and /report; shared,
        // pipelined ones for the point queries of /db and /queries.
        app = app
            .postgres_config("pg", cfg.clone())
            .postgres_shared_config("pg-shared", cfg);
        app = setup::pool(setup::pool(app, "pg", &args), "pg-shared", &args);
    }
    if let Some(fleet) = setup::fleet(&args)? {
        app = app.fleet(fleet);
    }
    if let Some(url) = &args.redis {
        let mut cfg = redis::Config::from_url(url)
            .map_err(|e| e.to_string())?
            .client_name("tidepool-hello");
        match &args.redis_ca {
            Some(ca) if url.starts_with("rediss://") => cfg = cfg.tls_ca(ca),
            Some(_) => return Err("--redis-ca needs a rediss:// URL".into()),
            None => {}
        }
        app = setup::pool(app.redis_config("redis", cfg), "redis", &args);
        app = app.cache(setup::report_cache(), "redis");
    }
    let (pg, redis) = (args.pg.is_some(), args.redis.is_some());
    let fault_injection = args.fault_injection;
    app.on_start(async move |db| setup::prepare(db, pg, redis).await)
        .run(move |pools| app::router(pools, fault_injection))
        .map_err(|e| e.to_string())
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
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hello: {e}");
            ExitCode::FAILURE
        }
    }
}
