//! `demo`: the built-in pattern three times on the same seed against the
//! example app: with adaptive pools (PoolAutoscale and the adaptive acquire
//! queue), with static pools sized for the average the adaptive run held,
//! and with static pools sized for its peak; then a page that puts the
//! three side by side (`versus`).

use std::path::{Path, PathBuf};

use crate::cli::{parse_run_args, read_series, read_summary, run_with, RunArgs};
use crate::report::versus::{self, Run};
use crate::stack::{app_path, split_extras, App, DemoExtras, Sizing, Stack};

/// The built-in pattern: steady, square-wave bursts, a diurnal sine, a mix
/// drifting from Redis-heavy to Postgres-heavy, and an overload of about
/// 2.5x what the database gives the app (two minutes).
pub const DEMO_PATTERN: &str = include_str!("../patterns/demo.toml");

/// Options of `demo`: the same flags as `run` (`--pattern`, `--duration`,
/// `--out`, `--target`, ...); the default pattern is [`DEMO_PATTERN`].
pub type DemoOptions = RunArgs;

/// Connections the generator opens unless told otherwise: enough that an
/// overloaded server, not the generator, is where requests wait (a FIFO
/// queue holds up to 1,000 arrivals a second for its 5 s acquire timeout;
/// with fewer connections, requests of every class would queue in the
/// generator behind the batch job's).
const DEMO_CONNECTIONS: usize = 4096;

/// The generator's schedule-lag bound unless told otherwise.
const DEMO_LAG_BOUND: std::time::Duration = std::time::Duration::from_millis(10);

pub fn cmd_demo(args: &[String]) -> Result<i32, String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: tidepool-loadgen demo [--pattern FILE] [--duration SECS] [--out DIR] [--app PATH] [--app-workers N] [--app-io BACKEND] [--target URL] [run options]\n\
             Starts an ephemeral PostgreSQL and redis-server and the example app, and runs the built-in\n\
             pattern (loadgen/patterns/demo.toml, with an overload phase) scaled to --duration three times on\n\
             the same seed: adaptive pools (PoolAutoscale, adaptive acquire queue), then static pools sized\n\
             for the average and for the peak of what the adaptive run held (FIFO queues). Each run's\n\
             report goes to --out/NAME/ (default loadgen-demo); --out/report.html and comparison.txt put\n\
             the three side by side. --app PATH uses an already built example binary; --app-workers N and\n\
             --app-io io_uring|epoll start it with that many workers (default 1) on that backend; --target URL\n\
             drives a server you started (one run, no comparison)."
        );
        return Ok(0);
    }
    let (args, extras) = split_extras(args)?;
    let mut opts = parse_run_args(&args)?;
    if opts.out.is_none() {
        opts.out = Some("loadgen-demo".into());
    }
    run_demo(opts, extras)
}

/// Runs the demo: with `--target`, once against that server; otherwise
/// three times against a stack it starts and stops itself (the app pinned
/// to the last allowed CPU, the generator to the first).
pub fn run_demo(mut opts: DemoOptions, extras: DemoExtras) -> Result<i32, String> {
    let plan = opts.plan(Some(DEMO_PATTERN))?;
    if opts.target.is_some() || opts.dry_run {
        return run_with(&opts, plan);
    }
    let app = app_path(extras)?;
    opts.connections.get_or_insert(DEMO_CONNECTIONS);
    // The demo's latencies that matter are 10 ms and up (its SLO is 50
    // ms) and a late send counts in the latency measured from its intended
    // time; the generator is called behind only past a fifth of the SLO
    // (bursts of thousands of 503s arrive at once when FIFO waiters time
    // out).
    opts.lag_bound.get_or_insert(DEMO_LAG_BOUND);
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("loadgen-demo"));
    eprintln!(
        "demo: {:.0} s of traffic, three times: adaptive pools, then static pools sized for the average and for the peak of what they held",
        plan.duration()
    );
    let mut runs: Vec<Run> = Vec::new();
    let mut worst = 0;
    for name in ["adaptive", "static-average", "static-peak"] {
        let sizing = match (name, runs.first()) {
            ("adaptive", _) => Sizing::Adaptive,
            ("static-average", Some(a)) => static_sizing(a, mean_in_use)?,
            (_, Some(a)) => {
                static_sizing(a, |r, pool| r.summary.pools.get(pool).map(|p| p.peak_open))?
            }
            (_, None) => unreachable!("the adaptive run comes first"),
        };
        let dir = out.join(name);
        let code = run_one(&opts, &app, &sizing, &dir, name)?;
        if code == 3 {
            return Err(format!("demo: the {name} run failed (see above)"));
        }
        worst = worst.max(code);
        runs.push(Run {
            name: name.into(),
            sizing: sizing.describe(),
            summary: read_summary(&dir.join("summary.json").to_string_lossy())?,
            seconds: read_series(&dir.join("series.jsonl"))?,
        });
    }
    let table = versus::table(&runs);
    println!("{table}");
    let write = |file: &str, text: &str| {
        let p = out.join(file);
        std::fs::write(&p, text).map_err(|e| format!("demo: {}: {e}", p.display()))
    };
    write("comparison.txt", &table)?;
    write("report.html", &versus::render(&runs))?;
    let summary = serde_json::json!({
        "verdict": versus::Verdict::of(&runs),
        "runs": runs.iter().map(|r| serde_json::json!({
            "name": r.name,
            "sizing": r.sizing,
            "summary": r.summary,
        })).collect::<Vec<_>>(),
    });
    write(
        "summary.json",
        &serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?,
    )?;
    eprintln!(
        "demo: comparison: {}  (each run: {}/<name>/report.html)",
        out.join("report.html").display(),
        out.display()
    );
    Ok(worst)
}

/// One run of the pattern against a fresh stack sized by `sizing`.
fn run_one(
    opts: &DemoOptions,
    app: &App,
    sizing: &Sizing,
    dir: &Path,
    name: &str,
) -> Result<i32, String> {
    let stack = Stack::start_sized(app, sizing, dir).map_err(|e| format!("demo: {e}"))?;
    eprintln!(
        "demo: {name}: example server on http://{}, {}",
        stack.addr,
        sizing.describe()
    );
    let mut o = opts.clone();
    o.target = Some(format!("http://{}", stack.addr));
    o.out = Some(dir.to_path_buf());
    if o.cpus.is_none() {
        o.cpus = Some(vec![stack.gen_cpu]);
    }
    let plan = o.plan(Some(DEMO_PATTERN))?;
    let code = run_with(&o, plan);
    drop(stack);
    code
}

/// Static sizes from the adaptive run: `pick` reads a pool's figure (its
/// mean demand, or the most it held), rounded up, at least one connection.
/// A pool the adaptive run exported no figure for cannot be sized from it:
/// the comparison would be made up, so the demo stops.
fn static_sizing(adaptive: &Run, pick: fn(&Run, &str) -> Option<f64>) -> Result<Sizing, String> {
    let size = |pool: &str| {
        pick(adaptive, pool)
            .filter(|v| v.is_finite())
            .map(|v| (v.ceil() as usize).max(1))
            .ok_or_else(|| {
                format!("demo: the adaptive run's metrics have no figures for pool {pool}: cannot size the static runs")
            })
    };
    Ok(Sizing::Static {
        pg: size("pg")?,
        pg_shared: size("pg-shared")?,
        redis: size("redis")?,
    })
}

/// A pool's mean number of connections in use, over the run's seconds:
/// the average demand, which is what "sized for the average" means.
fn mean_in_use(run: &Run, pool: &str) -> Option<f64> {
    let v: Vec<f64> = run
        .seconds
        .iter()
        .filter_map(|s| s.pools.get(pool).and_then(|p| p.in_use))
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_pattern_builds_and_scales() {
        let plan = crate::plan::config::parse_pattern(DEMO_PATTERN, None, None).unwrap();
        assert!((plan.duration() - 120.0).abs() < 1e-9);
        let names: Vec<&str> = plan.classes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "plaintext",
                "db",
                "queries",
                "redis",
                "cache",
                "dbslow",
                "report",
                "batch"
            ]
        );
        // Redis-heavy at the start, Postgres-heavy at the end.
        let start = plan.mix.shares_at(1.0);
        let end = plan.mix.shares_at(119.0);
        assert!(start[3] > start[1] * 3.0 && end[1] > end[3] * 3.0);
        // The batch job runs only in the overload phase, as half the load.
        assert_eq!((start[7], end[7]), (0.0, 0.0));
        let overload = plan.mix.shares_at(100.0);
        assert!((overload[7] - 0.5).abs() < 1e-9, "{overload:?}");
        assert!(!plan.schedule.as_ref().unwrap().edges().is_empty());
        let short = crate::plan::config::parse_pattern(DEMO_PATTERN, None, Some(30.0)).unwrap();
        assert!((short.duration() - 30.0).abs() < 1e-9);
    }
}
