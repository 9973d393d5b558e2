//! The command line: `run`, `compare`, `report`, `demo`.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::http::parse_target;
use crate::client::run::{execute, RunOptions, Second};
use crate::plan::config::{load_pattern, Plan, Shorthand};
use crate::report::summary::{summarize, Summary};
use crate::report::threshold::Threshold;
use crate::util::{parse_duration, parse_seconds};
use tidepool_engine::rt::IoChoice;

pub const USAGE: &str = "\
tidepool-loadgen: open-loop HTTP/1.1 load with rate curves, corrected latency and pool metrics

usage:
  tidepool-loadgen run --target http://127.0.0.1:8080 [LOAD] [OPTIONS]
  tidepool-loadgen compare A.json B.json
  tidepool-loadgen report DIR              re-render DIR/report.html from DIR/summary.json + series.jsonl
  tidepool-loadgen demo [--pattern FILE] [--duration SECS] [--out DIR] --target URL
  tidepool-loadgen soak [--minutes N] [--out DIR]     the demo for N minutes while the databases
                                                       are killed and restarted (scripts/soak.sh)

LOAD (one of):
  --pattern FILE.toml        phases, classes and mix drift (see loadgen/patterns/demo.toml);
                             with --duration, every time in the file is scaled to that length
  --rate N|max               steady N req/s, or closed loop as fast as possible (max)
  --ramp FROM:TO             linear ramp over --duration
  --step FROM:TO[:STEPS]     STEPS equal stairs (default 1) over --duration
  --spike BASE:PEAK:AT:WIDTH
  --sine BASE:AMP:PERIOD[:PHASE]    PHASE as a fraction of a period
  --burst LOW:HIGH:PERIOD:DUTY[:RISE]
  --trace FILE.jsonl[:SPEED] lines of {\"offset\": s, \"path\": ..., \"method\", \"body\", \"class\"}
  --duration D               e.g. 30s, 2m (default 10s for shorthands)
  --path [NAME=]PATH         request path for shorthands, repeatable (equal weights);
                             templates like /db?id={rand:1..10000}
  --method M, --body TEXT    for shorthand classes

OPTIONS:
  --connections N            keep-alive connections (default 64)
  --pipeline N               requests in flight per connection (default 1)
  --threads N                generator threads, each pinned to a CPU (default 1)
  --cpus LIST                CPUs to pin to, e.g. 0 or 2,3 (default: the first allowed)
  --no-pin                   do not pin generator threads
  --seed N                   seed for arrivals, mix and random ids
  --poisson | --uniform      arrival process (default uniform, or the pattern file's)
  --slo D                    latency SLO for p99 (default 50ms, or the pattern file's)
  --threshold EXPR           e.g. 'p99<50ms', 'error_rate<1%', 'db:p99.9<200ms', 'rps>=900';
                             repeatable; any failure makes the exit code 1
  --timeout D                per-request timeout (default 10s)
  --connect-timeout D        (default 2s)
  --late D                   a send later than this after its intended time is 'late' (default 10ms)
  --lag-bound D              schedule lag p99 above this means the generator is behind (default 5ms)
  --drain D                  time after the schedule for responses to finish (default 2s)
  --max-queue N              requests waiting for a connection before new ones are dropped
  --quantum D                send on a grid of D (e.g. 100us): fewer wake-ups at high rates,
                             up to D of added lateness (counted in corrected latency); default 0
  --metrics PATH | --no-metrics   Prometheus endpoint scraped each second (default /metrics)
  --io auto|io_uring|epoll   the generator's I/O: auto (default) uses io_uring and falls back to
                             epoll where io_uring is unavailable (seccomp, kernel.io_uring_disabled);
                             without --io, TIDEPOOL_IO decides (as it does for the server)
  --out DIR                  where series.jsonl, summary.json, report.html go (default loadgen-out)
  --dry-run                  print the rate and mix of every second; send nothing
  --quiet                    no live progress line

exit codes: 0 ok, 1 a threshold failed, 2 bad usage or settings, 3 the run could not be done";

/// Parsed `run` (and `demo`) arguments.
#[derive(Clone, Debug, Default)]
pub struct RunArgs {
    pub target: Option<String>,
    pub pattern: Option<PathBuf>,
    pub shorthand: Shorthand,
    pub connections: Option<usize>,
    pub pipeline: Option<usize>,
    pub threads: Option<usize>,
    pub cpus: Option<Vec<usize>>,
    pub no_pin: bool,
    pub seed: Option<u64>,
    pub poisson: Option<bool>,
    pub slo: Option<f64>,
    pub thresholds: Vec<String>,
    pub timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub late: Option<Duration>,
    pub lag_bound: Option<Duration>,
    pub drain: Option<Duration>,
    pub quantum: Option<Duration>,
    pub max_queue: Option<usize>,
    pub metrics: Option<Option<String>>,
    pub io: Option<IoChoice>,
    pub out: Option<PathBuf>,
    pub dry_run: bool,
    pub quiet: bool,
}

fn need<'a>(it: &mut impl Iterator<Item = &'a String>, flag: &str) -> Result<&'a String, String> {
    it.next().ok_or_else(|| format!("{flag} needs a value"))
}

fn parse_num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: {v:?} is not a valid number"))
}

pub fn parse_run_args(args: &[String]) -> Result<RunArgs, String> {
    let mut a = RunArgs::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        // --flag=value is accepted as well as --flag value.
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (flag.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => need(&mut it, &flag).cloned(),
            }
        };
        match flag.as_str() {
            "--target" => a.target = Some(value()?),
            "--pattern" => a.pattern = Some(PathBuf::from(value()?)),
            "--rate" => a.shorthand.rate = Some(value()?),
            "--ramp" => a.shorthand.ramp = Some(value()?),
            "--step" => a.shorthand.step = Some(value()?),
            "--spike" => a.shorthand.spike = Some(value()?),
            "--sine" => a.shorthand.sine = Some(value()?),
            "--burst" => a.shorthand.burst = Some(value()?),
            "--trace" => a.shorthand.trace = Some(value()?),
            "--duration" => {
                let v = value()?;
                let d = parse_seconds(&v).map_err(|e| format!("--duration: {e}"))?;
                if d.is_nan() || d <= 0.0 {
                    return Err(format!("--duration {v}: must be > 0"));
                }
                a.shorthand.duration = Some(d);
            }
            "--path" => a.shorthand.paths.push(value()?),
            "--method" => a.shorthand.method = Some(value()?),
            "--body" => a.shorthand.body = Some(value()?),
            "--connections" | "-c" => a.connections = Some(parse_num(&flag, &value()?)?),
            "--pipeline" => a.pipeline = Some(parse_num(&flag, &value()?)?),
            "--threads" | "-t" => a.threads = Some(parse_num(&flag, &value()?)?),
            "--cpus" => {
                let v = value()?;
                let list = v
                    .split(',')
                    .map(|c| parse_num::<usize>("--cpus", c.trim()))
                    .collect::<Result<Vec<_>, _>>()?;
                a.cpus = Some(list);
            }
            "--no-pin" => a.no_pin = true,
            "--seed" => a.seed = Some(parse_num(&flag, &value()?)?),
            "--poisson" => a.poisson = Some(true),
            "--uniform" => a.poisson = Some(false),
            "--slo" => {
                a.slo = Some(
                    parse_duration(&value()?)
                        .map_err(|e| format!("--slo: {e}"))?
                        .as_secs_f64(),
                )
            }
            "--threshold" => a.thresholds.push(value()?),
            "--timeout" => a.timeout = Some(dur(&flag, &value()?)?),
            "--connect-timeout" => a.connect_timeout = Some(dur(&flag, &value()?)?),
            "--late" => a.late = Some(dur(&flag, &value()?)?),
            "--lag-bound" => a.lag_bound = Some(dur(&flag, &value()?)?),
            "--drain" => a.drain = Some(dur(&flag, &value()?)?),
            "--quantum" => a.quantum = Some(dur(&flag, &value()?)?),
            "--max-queue" => a.max_queue = Some(parse_num(&flag, &value()?)?),
            "--metrics" => a.metrics = Some(Some(value()?)),
            "--no-metrics" => a.metrics = Some(None),
            "--io" => {
                let v = value()?;
                a.io = Some(
                    v.parse()
                        .map_err(|_| format!("--io {v:?}: not one of auto, io_uring, epoll"))?,
                );
            }
            "--out" => a.out = Some(PathBuf::from(value()?)),
            "--dry-run" => a.dry_run = true,
            "--quiet" | "-q" => a.quiet = true,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(a)
}

fn dur(flag: &str, v: &str) -> Result<Duration, String> {
    parse_duration(v).map_err(|e| format!("{flag}: {e}"))
}

impl RunArgs {
    /// The plan: a pattern file (scaled by --duration when given) or a shorthand.
    pub fn plan(&self, builtin: Option<&str>) -> Result<Plan, String> {
        let mut plan = if let Some(p) = &self.pattern {
            if !self.shorthand.is_empty() {
                return Err(
                    "give either --pattern or a load shorthand (--rate, --burst, ...), not both"
                        .into(),
                );
            }
            load_pattern(p, self.shorthand.duration)?
        } else if let (Some(text), true) = (builtin, self.shorthand.is_empty()) {
            crate::plan::config::parse_pattern(text, None, self.shorthand.duration)?
        } else {
            if self.shorthand.is_empty() {
                return Err(
                    "no load given: use --rate N (or max), another shorthand, or --pattern FILE"
                        .into(),
                );
            }
            self.shorthand.plan(
                self.seed.unwrap_or(1),
                self.poisson.unwrap_or(false),
                self.slo,
            )?
        };
        if let Some(s) = self.seed {
            plan.seed = s;
        }
        if let Some(p) = self.poisson {
            plan.poisson = p;
        }
        if let Some(s) = self.slo {
            plan.slo = Some(s);
        }
        Ok(plan)
    }

    pub fn options(&self, plan: Plan) -> Result<RunOptions, String> {
        let url = self
            .target
            .as_deref()
            .ok_or("--target URL is required (e.g. --target http://127.0.0.1:8080)")?;
        let target = parse_target(url)?;
        let mut o = RunOptions::new(target, plan);
        if let Some(v) = self.connections {
            o.connections = v;
        }
        if let Some(v) = self.pipeline {
            o.pipeline = v;
        }
        if let Some(v) = self.threads {
            o.threads = v;
        }
        o.cpus = self.cpus.clone();
        o.pin = !self.no_pin;
        if let Some(v) = self.timeout {
            o.timeout = v;
        }
        if let Some(v) = self.connect_timeout {
            o.connect_timeout = v;
        }
        if let Some(v) = self.late {
            o.late_after = v;
        }
        if let Some(v) = self.lag_bound {
            o.lag_bound = v;
        }
        if let Some(v) = self.drain {
            o.drain = v;
        }
        if let Some(v) = self.quantum {
            o.quantum = v;
        }
        if let Some(v) = self.max_queue {
            o.max_queue = v.max(1);
        }
        if let Some(m) = &self.metrics {
            o.metrics_path = m.clone();
        }
        o.io = self.io;
        o.validate()?;
        Ok(o)
    }
}

/// Entry point; returns the process exit code.
pub fn main(args: &[String]) -> i32 {
    let Some(cmd) = args.first() else {
        eprintln!("{USAGE}");
        return 2;
    };
    let rest = &args[1..];
    let result = match cmd.as_str() {
        "run" => cmd_run(rest),
        "compare" => cmd_compare(rest),
        "report" => cmd_report(rest),
        "demo" => crate::demo::cmd_demo(rest),
        "soak" => crate::soak::cmd_soak(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(0)
        }
        other => Err(format!("unknown command {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tidepool-loadgen: {e}");
            2
        }
    }
}

fn cmd_run(args: &[String]) -> Result<i32, String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(0);
    }
    let a = parse_run_args(args)?;
    let plan = a.plan(None)?;
    run_with(&a, plan)
}

/// Runs (or dry-runs) a plan with the given arguments; shared by `run` and `demo`.
pub fn run_with(a: &RunArgs, plan: Plan) -> Result<i32, String> {
    if a.dry_run {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        match crate::plan::dryrun::print(&plan, a.threads.unwrap_or(1), &mut out) {
            // `| head` closing the pipe is not an error.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.to_string()),
            _ => return Ok(0),
        }
    }
    let thresholds = a
        .thresholds
        .iter()
        .map(|t| Threshold::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let opts = a.options(plan)?;
    let out_dir = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("loadgen-out"));
    let progress = !a.quiet && is_tty(2);
    crate::signal::install();
    match run_to_dir(&opts, &out_dir, &thresholds, progress) {
        Ok(summary) => {
            if summary.thresholds.iter().any(|t| !t.ok) {
                Ok(1)
            } else {
                Ok(0)
            }
        }
        Err(RunError::Usage(e)) => Err(e),
        Err(RunError::Failed(e)) => {
            eprintln!("tidepool-loadgen: {e}");
            Ok(3)
        }
    }
}

pub enum RunError {
    Usage(String),
    Failed(String),
}

fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// Runs, writes the three files into `dir`, prints the spectrum and the
/// summary, and returns the summary (thresholds evaluated).
pub fn run_to_dir(
    opts: &RunOptions,
    dir: &Path,
    thresholds: &[Threshold],
    progress: bool,
) -> Result<Summary, RunError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| RunError::Usage(format!("cannot create {}: {e}", dir.display())))?;
    let series_path = dir.join("series.jsonl");
    let file = std::fs::File::create(&series_path)
        .map_err(|e| RunError::Usage(format!("cannot write {}: {e}", series_path.display())))?;
    let mut series = BufWriter::new(file);
    let plan = &opts.plan;
    eprintln!(
        "Running {:.1}s against {} ({} loop{}): {} connection(s), pipeline {}, {} thread(s)",
        plan.duration(),
        opts.target.host_header,
        if plan.schedule.is_some() {
            "open"
        } else {
            "closed"
        },
        if plan.schedule.is_some() {
            format!(
                ", {} arrivals, {:.0} req/s mean",
                if plan.poisson { "poisson" } else { "uniform" },
                plan.schedule
                    .as_ref()
                    .map_or(0.0, |s| s.total() / s.duration)
            )
        } else {
            String::new()
        },
        opts.connections,
        opts.pipeline,
        opts.threads
    );
    let collected = execute(opts, Some(&mut series), progress).map_err(RunError::Usage)?;
    series
        .flush()
        .map_err(|e| RunError::Failed(format!("writing {}: {e}", series_path.display())))?;
    let mut summary = summarize(&collected, opts);
    for t in thresholds {
        match t.check(&summary) {
            Ok(r) => summary.thresholds.push(r),
            Err(e) => {
                summary
                    .thresholds
                    .push(crate::report::summary::ThresholdResult {
                        expr: t.expr.clone(),
                        value: f64::NAN,
                        ok: false,
                    });
                eprintln!("tidepool-loadgen: {e}");
            }
        }
    }
    let summary_path = dir.join("summary.json");
    let json =
        serde_json::to_string_pretty(&summary).map_err(|e| RunError::Failed(e.to_string()))?;
    std::fs::write(&summary_path, json)
        .map_err(|e| RunError::Failed(format!("writing {}: {e}", summary_path.display())))?;
    let html = crate::report::html::render(&summary, &collected.seconds);
    let report_path = dir.join("report.html");
    std::fs::write(&report_path, html)
        .map_err(|e| RunError::Failed(format!("writing {}: {e}", report_path.display())))?;

    let all = collected.all();
    let stdout = std::io::stdout();
    let mut o = stdout.lock();
    let _ = write!(
        o,
        "{}",
        crate::report::spectrum::spectrum("Recorded Latency, from intended send", &all.corrected)
    );
    let _ = writeln!(o, "  Uncorrected latency (service time, from actual send):");
    for (q, v) in [
        ("50.000%", summary.service.p50_ms),
        ("90.000%", summary.service.p90_ms),
        ("99.000%", summary.service.p99_ms),
        ("99.900%", summary.service.p999_ms),
        ("100.000%", summary.service.max_ms),
    ] {
        let _ = writeln!(o, "{q:>8}  {v:>8.2}ms");
    }
    print_summary(&mut o, &summary, &collected.seconds);
    let _ = writeln!(
        o,
        "Wrote {}, {}, {}",
        series_path.display(),
        summary_path.display(),
        report_path.display()
    );
    drop(o);
    if summary.sent == 0 && collected.io.is_empty() {
        // No generator thread got going (e.g. io_uring required where it
        // is blocked): the run was not done, rather than not kept up with.
        let why = collected.totals.fatal.first().cloned();
        return Err(RunError::Failed(
            why.unwrap_or_else(|| "no generator thread could start".into()),
        ));
    }
    if summary.generator.saturated {
        eprintln!("\n!!! WARNING: THE GENERATOR COULD NOT KEEP UP — results understate the offered load !!!");
        for m in &summary.generator.messages {
            eprintln!("!!!   {m}");
        }
        eprintln!(
            "!!!   Use more --threads / --cpus, a --quantum (e.g. 100us) at high rates, or a lower rate.\n"
        );
    }
    if summary.sent == 0 && summary.connect_errors > 0 {
        return Err(RunError::Failed(format!(
            "could not connect to {} ({} connect errors)",
            opts.target.host_header, summary.connect_errors
        )));
    }
    Ok(summary)
}

fn print_summary(o: &mut dyn Write, s: &Summary, seconds: &[Second]) {
    let _ = writeln!(
        o,
        "  {} requests in {:.2}s ({} offered, {} sent, {} seconds recorded)",
        s.completed,
        s.duration_s,
        s.offered,
        s.sent,
        seconds.len()
    );
    let _ = writeln!(
        o,
        "  Errors: {} ({:.3}%) — timeouts {}, io {}, 4xx {}, 5xx {}, dropped {}, connect {}, reconnects {}, unfinished {}",
        s.errors,
        s.error_rate * 100.0,
        s.timeouts,
        s.io_errors,
        s.status_4xx,
        s.status_5xx,
        s.dropped,
        s.connect_errors,
        s.reconnects,
        s.unfinished
    );
    if s.interrupted {
        let _ = writeln!(
            o,
            "  (interrupted after {:.2}s: figures cover that part only)",
            s.duration_s
        );
    }
    let _ = writeln!(o, "Requests/sec: {:>10.2}", s.throughput_rps);
    let _ = writeln!(
        o,
        "Latency (intended): p50 {:.2}ms  p99 {:.2}ms  p99.9 {:.2}ms  max {:.2}ms",
        s.latency.p50_ms, s.latency.p99_ms, s.latency.p999_ms, s.latency.max_ms
    );
    let _ = writeln!(
        o,
        "Service time:       p50 {:.2}ms  p99 {:.2}ms  p99.9 {:.2}ms",
        s.service.p50_ms, s.service.p99_ms, s.service.p999_ms
    );
    let _ = writeln!(
        o,
        "Seconds over SLO (p99 > {}ms): {}   late sends: {}",
        s.slo_ms, s.seconds_over_slo, s.late
    );
    for (name, c) in &s.classes {
        let _ = writeln!(
            o,
            "  class {name:<12} {:>9} done  {:>6} err  p50 {:>8.2}ms  p99 {:>8.2}ms",
            c.completed, c.errors, c.latency.p50_ms, c.latency.p99_ms
        );
    }
    for e in &s.edges {
        let pools: Vec<String> = e
            .pools
            .iter()
            .map(|(p, pe)| {
                format!(
                    "{p} settled {}{}",
                    pe.settle_s.map_or("never".into(), |v| format!("{v:.0}s")),
                    pe.overshoot_pct
                        .map_or(String::new(), |v| format!(" overshoot {v:.0}%"))
                )
            })
            .collect();
        let _ = writeln!(
            o,
            "  edge {:>6.1}s {:>7.0}->{:<7.0} latency settled {}{}{}",
            e.t,
            e.from_rps,
            e.to_rps,
            e.latency_settle_s
                .map_or("never".into(), |v| format!("{v:.0}s")),
            if pools.is_empty() { "" } else { "; " },
            pools.join(", ")
        );
    }
    for (name, p) in &s.pools {
        let _ = writeln!(
            o,
            "  pool {name}: {:.0} connection-seconds, open mean {:.1} peak {:.0}, max_open peak {:.0}, {:.0} grow / {:.0} shrink, acquire-wait p99 max {:.2}ms",
            p.connection_seconds, p.mean_open, p.peak_open, p.peak_max_open, p.grow_decisions, p.shrink_decisions, p.acquire_wait_p99_max_ms
        );
    }
    let _ =
        writeln!(
        o,
        "Generator: lag p99 {:.2}ms (bound {:.1}ms), busiest thread CPU mean {:.0}% max {:.0}%{}",
        s.generator.lag_p99_ms,
        s.generator.lag_bound_ms,
        s.generator.worker_cpu_mean * 100.0,
        s.generator.worker_cpu_max * 100.0,
        if s.generator.saturated { "  << COULD NOT KEEP UP" } else { "" }
    );
    if !s.generator.io.is_empty() {
        let _ = writeln!(o, "I/O: {}", s.generator.io);
    }
    for t in &s.thresholds {
        let _ = writeln!(
            o,
            "threshold {:<24} {} (measured {:.3})",
            t.expr,
            if t.ok { "ok" } else { "FAILED" },
            t.value
        );
    }
}

pub fn read_summary(path: &str) -> Result<Summary, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let s: Summary = serde_json::from_str(&text)
        .map_err(|e| format!("{path} is not a tidepool-loadgen summary: {e}"))?;
    // Every field has a default, so check the one that names the tool.
    if s.tool != "tidepool-loadgen" {
        return Err(format!(
            "{path} is not a tidepool-loadgen summary (its \"tool\" field is missing)"
        ));
    }
    Ok(s)
}

fn cmd_compare(args: &[String]) -> Result<i32, String> {
    let [a, b] = args else {
        return Err("usage: tidepool-loadgen compare A.json B.json".into());
    };
    let sa = read_summary(a)?;
    let sb = read_summary(b)?;
    print!("{}", crate::report::compare::compare(&sa, &sb, a, b));
    Ok(0)
}

/// Reads series.jsonl back.
pub fn read_series(path: &Path) -> Result<Vec<Second>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

fn cmd_report(args: &[String]) -> Result<i32, String> {
    let [dir] = args else {
        return Err("usage: tidepool-loadgen report DIR".into());
    };
    let dir = Path::new(dir);
    let summary = read_summary(&dir.join("summary.json").to_string_lossy())?;
    let seconds = read_series(&dir.join("series.jsonl"))?;
    let out = dir.join("report.html");
    std::fs::write(&out, crate::report::html::render(&summary, &seconds))
        .map_err(|e| format!("writing {}: {e}", out.display()))?;
    println!("Wrote {}", out.display());
    Ok(0)
}
