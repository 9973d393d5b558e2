//! `demo`: the built-in composite pattern against a Tidepool app.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tidepool_testkit::{PgServer, PgUser, RedisServer};

use crate::cli::{parse_run_args, run_with, RunArgs};

/// The built-in pattern: steady, square-wave bursts, a diurnal sine, and a
/// mix drifting from Redis-heavy to Postgres-heavy (about two minutes).
pub const DEMO_PATTERN: &str = include_str!("../patterns/demo.toml");

/// Options of `demo`: the same flags as `run` (`--pattern`, `--duration`,
/// `--out`, `--target`, ...); the default pattern is [`DEMO_PATTERN`].
pub type DemoOptions = RunArgs;

/// What `demo` adds to the `run` flags.
#[derive(Debug, Default)]
pub struct DemoExtras {
    /// The example server binary; by default it is built (release) with cargo.
    pub app: Option<PathBuf>,
}

/// Takes `--app PATH` out of the argument list.
pub fn split_extras(args: &[String]) -> Result<(Vec<String>, DemoExtras), String> {
    let mut rest = Vec::new();
    let mut extras = DemoExtras::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--app" {
            let v = it.next().ok_or("--app needs a path")?;
            extras.app = Some(PathBuf::from(v));
        } else if let Some(v) = a.strip_prefix("--app=") {
            extras.app = Some(PathBuf::from(v));
        } else {
            rest.push(a.clone());
        }
    }
    Ok((rest, extras))
}

pub fn cmd_demo(args: &[String]) -> Result<i32, String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: tidepool-loadgen demo [--pattern FILE] [--duration SECS] [--out DIR] [--app PATH] [--target URL] [run options]\n\
             Starts an ephemeral PostgreSQL and redis-server and the example app (PoolAutoscale on for both\n\
             pools), runs the built-in composite pattern (loadgen/patterns/demo.toml) scaled to --duration,\n\
             writes report.html and summary.json into --out (default loadgen-demo) and stops everything.\n\
             --app PATH uses an already built example binary; --target URL drives a server you started."
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

/// The workspace root (loadgen's parent directory).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Builds the example server in release mode with the cargo that runs us.
fn build_app() -> Result<PathBuf, String> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("demo: building the example server (cargo build --release --example hello)");
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "--quiet", "--example", "hello"])
        .status()
        .map_err(|e| format!("demo: cannot run {cargo}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "demo: building the example server failed ({status})"
        ));
    }
    Ok(root.join("target/release/examples/hello"))
}

/// The example app as a child process; stopped (SIGTERM, then SIGKILL) on drop.
struct AppProcess {
    child: Child,
}

impl Drop for AppProcess {
    fn drop(&mut self) {
        // SAFETY: signals only the child this process started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_healthy(addr: &str, app: &mut Child, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            if s.write_all(b"GET /health HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
                .is_ok()
            {
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok() && &buf[9..12] == b"200" {
                    return Ok(());
                }
            }
        }
        if let Ok(Some(status)) = app.try_wait() {
            return Err(format!(
                "demo: the example server exited during start-up ({status})"
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "demo: the example server did not answer /health on {addr} within {limit:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// PostgreSQL, Redis and the example app, started for a run and stopped
/// (app first) when dropped.
pub struct Stack {
    app: AppProcess,
    pub redis: RedisServer,
    pub pg: PgServer,
    pub addr: String,
    /// The CPU the generator should use (the app has the last one).
    pub gen_cpu: usize,
}

impl Stack {
    /// Starts an ephemeral PostgreSQL and redis-server and the example app
    /// at `app_path` (pinned to the last allowed CPU, PoolAutoscale on for
    /// every pool), and waits until it answers /health.
    pub fn start(app_path: &Path) -> Result<Stack, String> {
        if !app_path.exists() {
            return Err(format!("no example server at {}", app_path.display()));
        }
        eprintln!("starting an ephemeral PostgreSQL and redis-server");
        let pg = PgServer::start().map_err(|e| e.to_string())?;
        let redis = RedisServer::start().map_err(|e| e.to_string())?;
        seed_cache(&redis);
        let cpus = tidepool_engine::workers::allowed_cpus();
        let (gen_cpu, app_cpu) = (cpus[0], *cpus.last().unwrap_or(&cpus[0]));
        let port = tidepool_testkit::free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(app_cpu.to_string()).arg(app_path);
        cmd.args(["--listen", &addr, "--workers", "1"])
            .args([
                "--pg",
                &pg.url(PgUser::Md5),
                "--pg-max-open",
                "2",
                "--pg-autoscale",
                "2:16",
                "--pg-shared-max-open",
                "1",
                "--pg-shared-autoscale",
                "1:4",
            ])
            .args([
                "--redis",
                &redis.url(),
                "--redis-max-open",
                "1",
                "--redis-autoscale",
                "1:4",
            ])
            .stdout(Stdio::null());
        let child = cmd.spawn().map_err(|e| {
            format!(
                "cannot start {} (is taskset from util-linux installed?): {e}",
                app_path.display()
            )
        })?;
        let mut app = AppProcess { child };
        wait_healthy(&addr, &mut app.child, Duration::from_secs(60))?;
        Ok(Stack {
            app,
            redis,
            pg,
            addr,
            gen_cpu,
        })
    }

    /// The app's process id.
    pub fn app_pid(&self) -> u32 {
        self.app.child.id()
    }

    /// Stores what the cache and redis classes read again (after a Redis
    /// restart, whose data does not survive).
    pub fn seed_cache(&self) {
        seed_cache(&self.redis);
    }
}

/// The cache class reads keys 1..=100: store them, so reads are hits; and
/// the greeting the redis class reads (the app sets it at start-up only).
fn seed_cache(redis: &RedisServer) {
    let mut mset: Vec<String> = vec!["MSET".into(), "greeting".into(), "Hello, World!".into()];
    for k in 1..=100 {
        mset.push(format!("cache:{k}"));
        mset.push(format!("cached value {k}"));
    }
    let mset: Vec<&str> = mset.iter().map(String::as_str).collect();
    redis.cli(&mset);
}

/// The example app at `--app`, or built now.
pub fn app_path(extras: DemoExtras) -> Result<PathBuf, String> {
    match extras.app {
        Some(p) => Ok(p),
        None => build_app(),
    }
}

/// Runs the demo: with `--target`, against that server; otherwise it starts
/// PostgreSQL, Redis and the example app itself (the app pinned to the last
/// allowed CPU, the generator to the first), and stops them all afterwards.
pub fn run_demo(mut opts: DemoOptions, extras: DemoExtras) -> Result<i32, String> {
    let plan = opts.plan(Some(DEMO_PATTERN))?;
    if opts.target.is_some() || opts.dry_run {
        return run_with(&opts, plan);
    }
    let app_path = app_path(extras)?;
    let stack = Stack::start(&app_path).map_err(|e| format!("demo: {e}"))?;
    eprintln!(
        "demo: example server on http://{} (PoolAutoscale: pg 2..16, pg-shared 1..4, redis 1..4); running {:.0} s of traffic",
        stack.addr,
        plan.duration()
    );
    opts.target = Some(format!("http://{}", stack.addr));
    if opts.cpus.is_none() {
        opts.cpus = Some(vec![stack.gen_cpu]);
    }
    let result = run_with(&opts, plan);
    drop(stack);
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("loadgen-demo"));
    if result.is_ok() {
        eprintln!(
            "demo: report: {}  summary: {}",
            out.join("report.html").display(),
            out.join("summary.json").display()
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_pattern_builds_and_scales() {
        let plan = crate::config::parse_pattern(DEMO_PATTERN, None, None).unwrap();
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
                "report"
            ]
        );
        // Redis-heavy at the start, Postgres-heavy at the end.
        let start = plan.mix.shares_at(1.0);
        let end = plan.mix.shares_at(119.0);
        assert!(start[3] > start[1] * 3.0 && end[1] > end[3] * 3.0);
        assert!(!plan.schedule.as_ref().unwrap().edges().is_empty());
        let short = crate::config::parse_pattern(DEMO_PATTERN, None, Some(30.0)).unwrap();
        assert!((short.duration() - 30.0).abs() < 1e-9);
    }
}
