//! The generator on its epoll backend (where io_uring is unavailable): the
//! same runs as on the ring give the same counts, and the backend is chosen
//! and reported as the engine's is. Each run is about a second against the
//! tiny std::net server on loopback.

mod common;

use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Behaviour, TestServer};
use tidepool_engine::rt::IoChoice;
use tidepool_loadgen::client::http::parse_target;
use tidepool_loadgen::client::run::{execute, RunOptions};
use tidepool_loadgen::plan::config::Shorthand;
use tidepool_loadgen::report::summary::{summarize, Summary};
use tidepool_testkit::seccomp::deny_io_uring;

fn options(server: &TestServer, sh: Shorthand, io: IoChoice) -> RunOptions {
    let plan = sh.plan(7, false, None).unwrap();
    let mut o = RunOptions::new(parse_target(&server.url()).unwrap(), plan);
    o.pin = false;
    o.connections = 4;
    o.drain = Duration::from_secs(3);
    o.metrics_path = None;
    o.io = Some(io);
    o
}

fn run(o: &RunOptions) -> Summary {
    let c = execute(o, None, false).unwrap();
    summarize(&c, o)
}

fn shorthand(rate: &str, duration: f64, path: &str) -> Shorthand {
    Shorthand {
        rate: Some(rate.into()),
        duration: Some(duration),
        paths: vec![path.into()],
        ..Default::default()
    }
}

#[test]
fn closed_loop_on_epoll_completes_every_request_without_errors() {
    let server = TestServer::start(Behaviour::default());
    let o = options(&server, shorthand("max", 1.0, "/"), IoChoice::Epoll);
    let s = run(&o);
    assert_eq!(s.generator.io, "epoll (requested)");
    assert_eq!(s.mode, "closed");
    assert!(s.completed > 500, "{}", s.completed);
    assert_eq!(s.errors, 0, "{s:?}");
    assert_eq!(s.completed, s.sent, "every request sent was answered");
    assert_eq!((s.connect_errors, s.reconnects), (0, 0), "{s:?}");
    assert_eq!(server.requests.load(Ordering::Relaxed), s.completed);
}

#[test]
fn pipelined_requests_leave_together_on_epoll_as_on_the_ring() {
    // Auto is the ring wherever the kernel allows it (and epoll where it
    // does not, which this test then compares with itself).
    for io in [IoChoice::Auto, IoChoice::Epoll] {
        let server = TestServer::start(Behaviour::default());
        let mut o = options(&server, shorthand("max", 0.6, "/"), io);
        o.connections = 2;
        o.pipeline = 8;
        let s = run(&o);
        assert_eq!(s.errors, 0, "{io:?}: {s:?}");
        assert!(s.completed > 200, "{io:?}: {}", s.completed);
        assert_eq!(s.completed, s.sent, "{io:?}");
        // A full pipeline is written at once, so it arrives in one read.
        assert_eq!(server.max_batch.load(Ordering::Relaxed), 8, "{io:?}");
    }
}

#[test]
fn pipelined_open_loop_on_epoll_delivers_the_schedule() {
    let server = TestServer::start(Behaviour::default());
    let mut o = options(
        &server,
        Shorthand {
            rate: Some("1000".into()),
            duration: Some(1.0),
            paths: vec!["ok=/".into(), "missing=/missing".into()],
            ..Default::default()
        },
        IoChoice::Epoll,
    );
    o.connections = 2;
    o.pipeline = 8;
    let s = run(&o);
    assert_eq!(s.completed, 1000);
    assert_eq!(s.io_errors + s.timeouts + s.dropped, 0, "{s:?}");
    assert_eq!(s.status_4xx, s.classes["missing"].completed);
    assert_eq!(s.errors, s.status_4xx);
}

#[test]
fn unanswered_requests_time_out_and_connections_are_replaced_on_epoll() {
    let server = TestServer::start(Behaviour::default());
    let mut o = options(&server, shorthand("20", 1.0, "/hang"), IoChoice::Epoll);
    o.connections = 2;
    o.timeout = Duration::from_millis(300);
    let s = run(&o);
    assert_eq!(s.completed, 0);
    assert!(s.timeouts >= 2, "{s:?}");
    assert!(s.reconnects >= 2, "{s:?}");
    assert_eq!(s.timeouts + s.dropped + s.unfinished, s.offered, "{s:?}");
    assert_eq!(s.errors, s.offered - s.unfinished);
}

#[test]
fn a_dead_target_on_epoll_counts_failed_connects() {
    // Bind then drop a listener: the port is almost surely closed now.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let plan = shorthand("50", 1.0, "/").plan(1, false, None).unwrap();
    let mut o = RunOptions::new(parse_target(&format!("http://{addr}")).unwrap(), plan);
    o.pin = false;
    o.connections = 2;
    o.metrics_path = None;
    o.timeout = Duration::from_millis(500);
    o.io = Some(IoChoice::Epoll);
    let s = run(&o);
    assert_eq!(s.completed, 0);
    // Refused at once, then retried after the back-off: a handful, not a storm.
    assert!(
        s.connect_errors >= 2 && s.connect_errors < 200,
        "{}",
        s.connect_errors
    );
    assert_eq!((s.offered, s.dropped), (50, 50), "{s:?}");
}

#[test]
fn a_body_until_close_completes_when_the_server_closes_on_both_backends() {
    // The response and the server's close usually arrive before the
    // generator reads: the end of the stream must be read in the same turn.
    for io in [IoChoice::Auto, IoChoice::Epoll] {
        let server = TestServer::start(Behaviour::default());
        let mut o = options(&server, shorthand("40", 0.5, "/close"), io);
        o.connections = 2;
        o.timeout = Duration::from_secs(2);
        let s = run(&o);
        assert_eq!((s.completed, s.errors), (20, 0), "{io:?}: {s:?}");
        // Every response ended its connection.
        assert!(s.reconnects >= 18, "{io:?}: {s:?}");
    }
}

#[test]
fn requests_larger_than_the_socket_buffer_are_written_across_output_edges() {
    // 16 MiB does not fit a socket's send buffer: each send stops short and
    // goes on when the server has read some.
    const BODY: usize = 16 << 20;
    let server = TestServer::start(Behaviour::default());
    let mut o = options(
        &server,
        Shorthand {
            rate: Some("5".into()),
            duration: Some(1.0),
            paths: vec!["/upload".into()],
            method: Some("POST".into()),
            body: Some("x".repeat(BODY)),
            ..Default::default()
        },
        IoChoice::Epoll,
    );
    o.connections = 1;
    let s = run(&o);
    assert_eq!((s.completed, s.errors), (5, 0), "{s:?}");
    assert_eq!(
        server.body_bytes.load(Ordering::Relaxed),
        5 * BODY as u64,
        "every body arrived whole"
    );
}

// The command line: which backend, chosen how, said where.

fn loadgen(server: &TestServer, out: &std::path::Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidepool-loadgen"));
    cmd.args(["run", "--target", &server.url(), "--rate", "200"])
        .args(["--duration", "0.5s", "--connections", "2", "--no-pin"])
        .args(["--no-metrics", "--quiet", "--out", out.to_str().unwrap()])
        .args(extra)
        .env_remove("TIDEPOOL_IO");
    cmd
}

fn out_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tidepool-loadgen-epoll-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn summary_in(dir: &std::path::Path) -> Summary {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn under_a_seccomp_io_uring_block_auto_runs_on_epoll_and_says_why() {
    let server = TestServer::start(Behaviour::default());
    let dir = out_dir("seccomp");
    let out = deny_io_uring(&mut loadgen(&server, &dir, &[]))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("I/O: epoll (seccomp_or_sysctl)"),
        "{stdout}"
    );
    let s = summary_in(&dir);
    assert_eq!(s.generator.io, "epoll (seccomp_or_sysctl)");
    assert_eq!((s.completed, s.errors), (100, 0), "{s:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn requiring_io_uring_under_the_block_fails_with_the_cause() {
    let server = TestServer::start(Behaviour::default());
    let dir = out_dir("required");
    let mut cmd = loadgen(&server, &dir, &[]);
    cmd.env("TIDEPOOL_IO", "io_uring");
    let out = deny_io_uring(&mut cmd).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("cannot set up io_uring")
            && stderr.contains("seccomp_or_sysctl")
            && stderr.contains("--io epoll"),
        "the message names the cause and the way out: {stderr}"
    );
    assert_eq!(server.requests.load(Ordering::Relaxed), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_flag_wins_over_the_environment_and_both_are_reported() {
    let server = TestServer::start(Behaviour::default());
    let cases: [(&[&str], Option<&str>, &str); 3] = [
        (&[], Some("epoll"), "I/O: epoll (requested)"),
        (
            &["--io", "io_uring"],
            Some("epoll"),
            "I/O: io_uring (required)",
        ),
        (&["--io=epoll"], None, "I/O: epoll (requested)"),
    ];
    for (k, (flags, env, line)) in cases.into_iter().enumerate() {
        let dir = out_dir(&format!("choice{k}"));
        let mut cmd = loadgen(&server, &dir, flags);
        if let Some(v) = env {
            cmd.env("TIDEPOOL_IO", v);
        }
        let out = cmd.output().unwrap();
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{flags:?} {env:?}: {stderr}");
        assert!(stdout.contains(line), "{flags:?} {env:?}: {stdout}");
        assert_eq!(summary_in(&dir).errors, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn bad_choices_are_refused_before_any_traffic() {
    let server = TestServer::start(Behaviour::default());
    let dir = out_dir("bad");
    let out = loadgen(&server, &dir, &["--io", "kqueue"])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--io") && stderr.contains("kqueue"),
        "{stderr}"
    );
    let out = loadgen(&server, &dir, &[])
        .env("TIDEPOOL_IO", "kqueue")
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("TIDEPOOL_IO"), "{stderr}");
    assert_eq!(server.requests.load(Ordering::Relaxed), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
