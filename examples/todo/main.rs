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

use tidepool::app::App;

/// Instances starting together would race on `CREATE TABLE IF NOT EXISTS`
/// (PostgreSQL answers one of them with a unique violation): an advisory
/// lock held for the transaction makes them take turns.
const SCHEMA: &str = "BEGIN;
SELECT pg_advisory_xact_lock(7415);
CREATE TABLE IF NOT EXISTS todos (
    id bigserial PRIMARY KEY, title text NOT NULL, done boolean NOT NULL DEFAULT false);
COMMIT";

fn run() -> Result<(), String> {
    let mut app = App::new();
    let (mut pg, mut redis) = (None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => app = app.listen(v),
            "--pg" => pg = Some(v),
            "--redis" => redis = Some(v),
            "--config" => app = app.config_file(v),
            "--workers" => app = app.workers(v.parse().map_err(|_| format!("--workers {v}"))?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let (Some(pg), Some(redis)) = (pg, redis) else {
        return Err("usage: todo --listen ADDR --pg URL --redis URL [--config FILE]".into());
    };
    app.postgres("pg", &pg)
        .redis("redis", &redis)
        .on_start(async |db| Ok(db.postgres("pg").await?.batch_execute(SCHEMA).await?))
        .run(api::router)
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("todo: {e}");
            ExitCode::FAILURE
        }
    }
}
