//! `demo`: the built-in composite pattern against a Tidepool app.

use crate::cli::{parse_run_args, run_with, RunArgs};

/// The built-in pattern: steady, square-wave bursts, a diurnal sine, and a
/// mix drifting from Redis-heavy to Postgres-heavy (about two minutes).
pub const DEMO_PATTERN: &str = include_str!("../patterns/demo.toml");

/// Options of `demo`: the same flags as `run` (`--pattern`, `--duration`,
/// `--out`, `--target`, ...); the default pattern is [`DEMO_PATTERN`].
pub type DemoOptions = RunArgs;

pub fn cmd_demo(args: &[String]) -> Result<i32, String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: tidepool-loadgen demo --target URL [--pattern FILE] [--duration SECS] [--out DIR] [run options]\n\
             Runs the built-in composite pattern (loadgen/patterns/demo.toml), scaled to --duration."
        );
        return Ok(0);
    }
    let mut opts = parse_run_args(args)?;
    if opts.out.is_none() {
        opts.out = Some("loadgen-demo".into());
    }
    run_demo(opts)
}

// ==========================================================================
// LEAD: wire-up point for `demo`.
//
// Today `run_demo` expects a running server given by `--target`. The plan
// is for it to start PostgreSQL and Redis (testkit), then the example app
// (`hello --pg ... --redis ... --pg-autoscale MIN:MAX --redis-autoscale
// MIN:MAX`), wait for /health, set `opts.target` to the app's address, run
// the pattern below, and stop everything afterwards. The classes in
// patterns/demo.toml expect the app's routes /plaintext, /db,
// /queries?n=5, /redis and /cache/{key}.
// ==========================================================================
pub fn run_demo(opts: DemoOptions) -> Result<i32, String> {
    if opts.target.is_none() && !opts.dry_run {
        return Err(
            "demo: --target URL is required for now (start the example app with PostgreSQL and Redis, e.g. \
             `hello --listen 127.0.0.1:8080 --pg postgres://... --redis redis://... --pg-autoscale 2:32`)"
                .into(),
        );
    }
    let plan = opts.plan(Some(DEMO_PATTERN))?;
    run_with(&opts, plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_pattern_builds_and_scales() {
        let plan = crate::config::parse_pattern(DEMO_PATTERN, None, None).unwrap();
        assert!((plan.duration() - 120.0).abs() < 1e-9);
        let names: Vec<&str> = plan.classes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["plaintext", "db", "queries", "redis", "cache"]);
        // Redis-heavy at the start, Postgres-heavy at the end.
        let start = plan.mix.shares_at(1.0);
        let end = plan.mix.shares_at(119.0);
        assert!(start[3] > start[1] * 3.0 && end[1] > end[3] * 3.0);
        assert!(!plan.schedule.as_ref().unwrap().edges().is_empty());
        let short = crate::config::parse_pattern(DEMO_PATTERN, None, Some(30.0)).unwrap();
        assert!((short.duration() - 30.0).abs() < 1e-9);
    }
}
