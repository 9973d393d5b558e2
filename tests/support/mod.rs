//! Runs the example server as a child process against the test harness's
//! databases, and talks HTTP/1.1 to it.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The example binary cargo built next to this test.
pub fn example_path() -> PathBuf {
    example_named("hello")
}

/// Example `name`'s binary, refused when older than its sources.
pub fn example_named(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/examples/<name>
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join("examples").join(name);
    assert!(
        p.exists(),
        "{} missing: scripts/test.sh builds it (or run `cargo build --examples`)",
        p.display()
    );
    // `cargo test` does not build example binaries into target/*/examples:
    // refuse a stale one rather than test old code.
    let built = std::fs::metadata(&p).unwrap().modified().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let own = format!("examples/{name}");
    for dir in [
        own.as_str(),
        "src",
        "engine/src",
        "drivers/src",
        "supervisor/src",
    ] {
        for entry in walk(&root.join(dir)) {
            let changed = std::fs::metadata(&entry).unwrap().modified().unwrap();
            assert!(
                changed <= built,
                "{} is older than {}: run `cargo build --examples` first",
                p.display(),
                entry.display()
            );
        }
    }
    p
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else if path.extension().is_some_and(|x| x == "rs")
                // Unit-test modules are not part of the binary: editing
                // them leaves it rightly unrebuilt.
                && path.file_name().is_some_and(|n| n != "tests.rs")
            {
                out.push(path);
            }
        }
    }
    out
}

/// One GET to a server this test started, its status; `None` on any I/O
/// trouble (for load threads that must not panic while a server dies).
#[allow(dead_code)]
pub fn try_get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    std::str::from_utf8(out.get(9..12)?).ok()?.parse().ok()
}

pub struct App {
    pub child: Child,
    pub addr: SocketAddr,
}

impl App {
    pub fn start(args: &[&str]) -> App {
        Self::start_with(args, |_| {})
    }

    /// Like `start`, with `configure` applied to the command first (its
    /// environment, a seccomp filter).
    pub fn start_with(args: &[&str], configure: impl FnOnce(&mut Command)) -> App {
        Self::start_example("hello", args, configure)
    }

    /// Example `name` (started with `--listen` and `args`).
    pub fn start_example(name: &str, args: &[&str], configure: impl FnOnce(&mut Command)) -> App {
        let port = tidepool_testkit::free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut cmd = Command::new(example_named(name));
        cmd.arg("--listen")
            .arg(addr.to_string())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        configure(&mut cmd);
        let mut child = cmd.spawn().expect("start example");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{name} exited before listening ({status}); its stderr is above");
            }
            assert!(
                Instant::now() < deadline,
                "example never listened on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        App { child, addr }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, b"")
    }

    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        self.request_with(method, path, "", body)
    }

    /// A request with extra header lines (`headers`: each ending in CRLF).
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &str,
        body: &[u8],
    ) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text[9..12].parse().unwrap();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// The value of one metric sample line (`name{labels}`), if present.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Waits until `/metrics` has `sample` (a supervisor publishes after
    /// its first tick) and returns its value.
    pub fn metric_eventually(&self, sample: &str) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = self.metric(sample) {
                return v;
            }
            assert!(Instant::now() < deadline, "{sample} never appeared");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and wait; the exit status must be a clean one.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: signals only the child this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl App {
    /// SIGTERM and wait, returning the exit status and what the example
    /// wrote to stderr (start it with `stderr(Stdio::piped())`).
    pub fn stop_with_stderr(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: signals only the child this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        (status, err)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A file written for a test and removed when it ends.
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn new(text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "tidepool-test-{}-{}.toml",
            std::process::id(),
            tidepool_testkit::free_port()
        ));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
