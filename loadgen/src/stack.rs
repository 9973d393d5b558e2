//! The stack a demo or soak runs against: an ephemeral PostgreSQL and
//! redis-server and the example app, its pools sized one of the ways the
//! demo compares ([`Sizing`]), all stopped (app first) when dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tidepool_testkit::{PgServer, PgUser, RedisServer};

/// What `demo` and `soak` add to the `run` flags: which example server
/// to start, and in what shape.
#[derive(Debug, Default)]
pub struct DemoExtras {
    /// The example server binary; by default it is built (release) with cargo.
    pub app: Option<PathBuf>,
    /// `--app-workers`: the app's worker count (default 1). More workers
    /// than cores is the shape where pools are shared across workers.
    pub workers: Option<usize>,
    /// `--app-io`: the app's I/O backend (`io_uring` or `epoll`; default
    /// the app's own choice). `--io` is the generator's.
    pub io: Option<String>,
}

/// The example server a stack starts.
#[derive(Clone, Debug)]
pub struct App {
    pub path: PathBuf,
    pub workers: usize,
    pub io: Option<String>,
}

/// Takes `--app PATH`, `--app-workers N` and `--app-io BACKEND` out of the
/// argument list.
pub fn split_extras(args: &[String]) -> Result<(Vec<String>, DemoExtras), String> {
    let mut rest = Vec::new();
    let mut extras = DemoExtras::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--app") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or(format!("{flag} needs a value"))
        };
        match flag {
            "--app" => extras.app = Some(PathBuf::from(value()?)),
            "--app-workers" => {
                let v = value()?;
                match v.parse::<usize>() {
                    Ok(n) if n > 0 => extras.workers = Some(n),
                    _ => return Err(format!("--app-workers: not a worker count: {v}")),
                }
            }
            "--app-io" => {
                let v = value()?;
                if v != "io_uring" && v != "epoll" {
                    return Err(format!("--app-io: io_uring or epoll, not {v}"));
                }
                extras.io = Some(v);
            }
            _ => rest.push(a.clone()),
        }
    }
    Ok((rest, extras))
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

/// How the example app's pools are sized and queued for one run.
#[derive(Clone, Debug, PartialEq)]
pub enum Sizing {
    /// PoolAutoscale on every pool (PostgreSQL 2..16 against an
    /// acquire-wait p99 of 2 ms, the shared PostgreSQL pool 1..4, Redis
    /// 1..4) and the adaptive acquire queue.
    Adaptive,
    /// Fixed sizes, every connection held open (`min_idle = max_open` for
    /// PostgreSQL), plain FIFO acquire queues: a pool sized by hand.
    Static {
        pg: usize,
        pg_shared: usize,
        redis: usize,
    },
}

impl Sizing {
    /// The PostgreSQL pool's rails under `Adaptive`: the most connections
    /// the app may hold (its share of the database).
    pub const PG_RAILS: (usize, usize) = (2, 16);

    /// One line for logs and reports.
    pub fn describe(&self) -> String {
        match self {
            Sizing::Adaptive => format!(
                "PoolAutoscale (pg {}..{}, pg-shared 1..4, redis 1..4), adaptive queue",
                Self::PG_RAILS.0,
                Self::PG_RAILS.1
            ),
            Sizing::Static {
                pg,
                pg_shared,
                redis,
            } => format!("static (pg {pg}, pg-shared {pg_shared}, redis {redis}), FIFO queue"),
        }
    }

    /// The example's flags for this sizing.
    fn args(&self) -> Vec<String> {
        match self {
            Sizing::Adaptive => vec![
                "--pg-max-open".into(),
                Self::PG_RAILS.0.to_string(),
                "--pg-autoscale".into(),
                format!("{}:{}", Self::PG_RAILS.0, Self::PG_RAILS.1),
                "--pg-shared-max-open".into(),
                "1".into(),
                "--pg-shared-autoscale".into(),
                "1:4".into(),
                "--redis-max-open".into(),
                "1".into(),
                "--redis-autoscale".into(),
                "1:4".into(),
            ],
            Sizing::Static {
                pg,
                pg_shared,
                redis,
            } => vec![
                "--pg-max-open".into(),
                pg.to_string(),
                "--pg-min-idle".into(),
                pg.to_string(),
                "--pg-shared-max-open".into(),
                pg_shared.to_string(),
                "--redis-max-open".into(),
                redis.to_string(),
            ],
        }
    }

    /// The app's configuration file for this sizing: every pool's queue
    /// mode, and the request class of the routes that have one.
    pub fn config_toml(&self) -> String {
        let mode = match self {
            Sizing::Adaptive => "adaptive",
            Sizing::Static { .. } => "fifo",
        };
        let mut t = String::from("# Written by tidepool-loadgen for one run of the example app.\n");
        for pool in ["pg", "pg-shared", "redis"] {
            t.push_str(&format!("\n[pools.{pool}.queue]\nmode = \"{mode}\"\n"));
        }
        // The 8 ms page is what users wait on; the batch job names its
        // own class per call (`?class=sheddable`).
        t.push_str("\n[pools.pg.classes]\n\"/db/sleep\" = \"critical\"\n");
        if *self == Sizing::Adaptive {
            // Waits the PostgreSQL pool grows against: short next to the
            // 8 ms page, so that growing saves latency where a pool sized
            // for the peak would have had a connection ready; two
            // connections a step, so a burst is met within seconds.
            t.push_str(
                "\n[pools.pg.autoscale]\ntarget = { acquire_wait_p99 = \"2ms\" }\nstep = 2\n",
            );
        }
        t
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
    /// at `app_path` (pinned to the last allowed CPU), its pools sized by
    /// `sizing`, and waits until it answers /health. The app's
    /// configuration file is written into `dir`.
    pub fn start_sized(app: &App, sizing: &Sizing, dir: &Path) -> Result<Stack, String> {
        let app_path = app.path.as_path();
        if !app_path.exists() {
            return Err(format!("no example server at {}", app_path.display()));
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let config = dir.join("app.toml");
        std::fs::write(&config, sizing.config_toml())
            .map_err(|e| format!("{}: {e}", config.display()))?;
        eprintln!("starting an ephemeral PostgreSQL and redis-server");
        let pg = PgServer::start().map_err(|e| e.to_string())?;
        let redis = RedisServer::start().map_err(|e| e.to_string())?;
        seed_cache(&redis);
        let cpus = tidepool_engine::workers::allowed_cpus();
        let (gen_cpu, app_cpu) = (cpus[0], *cpus.last().unwrap_or(&cpus[0]));
        if gen_cpu != app_cpu {
            // The databases share the app's CPU, not the generator's: a
            // generator that loses its CPU to a PostgreSQL backend sends
            // late and measures its own delay.
            for pid in [pg.pid(), redis.pid()].into_iter().flatten() {
                pin_tree(pid, app_cpu);
            }
        }
        let port = tidepool_testkit::free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(app_cpu.to_string()).arg(app_path);
        cmd.args(["--listen", &addr, "--workers", &app.workers.to_string()])
            .args(app.io.iter().flat_map(|io| ["--io", io.as_str()]))
            .args(["--pg", &pg.url(PgUser::Md5)])
            .args(["--redis", &redis.url()])
            .args(sizing.args())
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null());
        let child = cmd.spawn().map_err(|e| {
            format!(
                "cannot start {} (is taskset from util-linux installed?): {e}",
                app_path.display()
            )
        })?;
        let mut process = AppProcess { child };
        wait_healthy(&addr, &mut process.child, Duration::from_secs(60))?;
        Ok(Stack {
            app: process,
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

/// Moves process `pid`, its threads and its children (PostgreSQL's
/// background processes; backends forked later inherit the postmaster's
/// mask) onto `cpu`, with util-linux's taskset. Best effort: a process that
/// exits meanwhile is skipped.
fn pin_tree(pid: u32, cpu: usize) {
    let mut pids = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if parent_of(child) == Some(pid) {
                pids.push(child);
            }
        }
    }
    for p in pids {
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", &cpu.to_string(), &p.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The parent of `pid`, from /proc/PID/stat (the field after the name,
/// which is in parentheses and may hold spaces).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
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

/// The example app at `--app` (or built now), in the shape asked for.
pub fn app_path(extras: DemoExtras) -> Result<App, String> {
    let path = match extras.app {
        Some(p) => p,
        None => build_app()?,
    };
    Ok(App {
        path,
        workers: extras.workers.unwrap_or(1),
        io: extras.io,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_app_flags_leave_the_run_flags_alone() {
        let (rest, extras) = split_extras(&args(&[
            "--app",
            "/bin/app",
            "--io",
            "epoll",
            "--app-workers=8",
            "--app-io",
            "epoll",
            "--rate",
            "100",
        ]))
        .unwrap();
        // `--io` is the generator's own.
        assert_eq!(rest, args(&["--io", "epoll", "--rate", "100"]));
        assert_eq!(extras.app, Some(PathBuf::from("/bin/app")));
        assert_eq!(extras.workers, Some(8));
        assert_eq!(extras.io.as_deref(), Some("epoll"));
    }

    #[test]
    fn bad_app_flags_are_refused() {
        for bad in [
            &["--app-workers", "0"][..],
            &["--app-workers", "many"],
            &["--app-io", "kqueue"],
            &["--app-workers"],
        ] {
            assert!(split_extras(&args(bad)).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_app_defaults_to_one_worker_on_its_own_backend() {
        let app = app_path(DemoExtras {
            app: Some(PathBuf::from("/bin/app")),
            ..DemoExtras::default()
        })
        .unwrap();
        assert_eq!(app.workers, 1);
        assert_eq!(app.io, None);
    }
}
