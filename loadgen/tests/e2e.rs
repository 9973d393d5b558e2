//! Short runs against a tiny std::net server on loopback (each bounded to a
//! few seconds).

mod common;

use std::time::Duration;

use common::{Behaviour, TestServer};
use tidepool_loadgen::client::http::parse_target;
use tidepool_loadgen::client::run::{execute, RunOptions};
use tidepool_loadgen::plan::config::Shorthand;
use tidepool_loadgen::report::summary::summarize;

fn options(server: &TestServer, sh: Shorthand) -> RunOptions {
    let plan = sh.plan(7, false, None).unwrap();
    let mut o = RunOptions::new(parse_target(&server.url()).unwrap(), plan);
    o.pin = false;
    o.connections = 4;
    o.drain = Duration::from_secs(3);
    o
}

#[test]
fn a_stall_shows_in_corrected_latency_only() {
    // One connection at 200 req/s for 3 s; the server holds one response
    // for a second. Requests that were due meanwhile wait for the
    // connection: their latency from the intended time is large, while
    // their service time (from the actual send) stays small.
    let server = TestServer::start(Behaviour {
        stall_once_at: Some((150, Duration::from_secs(1))),
        metrics: false,
    });
    let mut o = options(
        &server,
        Shorthand {
            rate: Some("200".into()),
            duration: Some(3.0),
            paths: vec!["/".into()],
            ..Default::default()
        },
    );
    o.connections = 1;
    o.metrics_path = None;
    let c = execute(&o, None, false).unwrap();
    let s = summarize(&c, &o);
    assert_eq!(s.errors, 0, "{s:?}");
    assert_eq!(s.completed, 600);
    assert!(
        s.latency.p99_ms > 500.0,
        "corrected p99 {} ms should show the 1 s stall",
        s.latency.p99_ms
    );
    assert!(
        s.service.p99_ms < 100.0,
        "uncorrected p99 {} ms should not",
        s.service.p99_ms
    );
    assert!(
        s.service.max_ms >= 900.0,
        "the stalled request itself took ~1 s"
    );
    // Requests queued behind the stall left late, and were counted as such.
    assert!(s.late > 100, "late {}", s.late);
    assert!(s.seconds_over_slo >= 1);
}

#[test]
fn end_to_end_writes_series_summary_report_and_sets_the_exit_code() {
    let server = TestServer::start(Behaviour {
        stall_once_at: None,
        metrics: true,
    });
    let dir = std::env::temp_dir().join(format!("tidepool-loadgen-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let args: Vec<String> = [
        "run",
        "--target",
        &server.url(),
        "--burst",
        "200:800:1s:0.5",
        "--duration",
        "2s",
        "--connections",
        "8",
        "--path",
        "a=/a/{rand:1..100}",
        "--path",
        "b=/b",
        "--no-pin",
        "--quiet",
        "--out",
        dir.to_str().unwrap(),
        "--threshold",
        "p99<10s",
        "--threshold",
        "rps>1000000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let code = tidepool_loadgen::cli::main(&args);
    assert_eq!(code, 1, "the impossible rps threshold fails the run");

    let series = tidepool_loadgen::cli::read_series(&dir.join("series.jsonl")).unwrap();
    assert!(series.len() >= 2, "{} seconds", series.len());
    assert_eq!(series[0].t, 0);
    let offered: u64 = series.iter().map(|s| s.offered).sum();
    // 2 s of a 1 s square wave at 50 % duty: 2 × (400 + 100) requests.
    assert_eq!(offered, 1000);
    assert!(series
        .iter()
        .any(|s| s.classes.contains_key("a") && s.classes.contains_key("b")));
    // Pool gauges from /metrics are on the same timeline.
    assert!(series
        .iter()
        .any(|s| s.pools.get("pg").and_then(|p| p.open).is_some()));

    let summary: tidepool_loadgen::report::summary::Summary =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary.completed, 1000);
    assert_eq!(summary.errors, 0);
    assert_eq!(summary.mode, "open");
    assert_eq!(summary.thresholds.len(), 2);
    assert!(summary.thresholds[0].ok && !summary.thresholds[1].ok);
    assert!(summary.pools["pg"].connection_seconds > 0.0);
    assert!(!summary.edges.is_empty(), "a square wave has edges");

    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    tidepool_loadgen::report::html::check_balanced(&html).unwrap();
    let titles = tidepool_loadgen::report::html::chart_titles(&html);
    assert!(
        titles.contains_key("Offered vs achieved rate"),
        "{titles:?}"
    );
    assert!(
        titles.keys().any(|t| t.starts_with("Pool pg")),
        "{titles:?}"
    );
    assert!(titles.contains_key("Pool acquire-wait p99"), "{titles:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pipelining_and_status_classes() {
    let server = TestServer::start(Behaviour::default());
    let mut o = options(
        &server,
        Shorthand {
            rate: Some("1000".into()),
            duration: Some(1.5),
            paths: vec!["ok=/".into(), "missing=/missing".into()],
            ..Default::default()
        },
    );
    o.connections = 2;
    o.pipeline = 8;
    o.metrics_path = None;
    let c = execute(&o, None, false).unwrap();
    let s = summarize(&c, &o);
    assert_eq!(s.completed, 1500);
    assert_eq!(s.io_errors + s.timeouts + s.dropped, 0, "{s:?}");
    // Every 404 counts as an error, in its own class.
    assert_eq!(s.status_4xx, s.classes["missing"].completed);
    assert_eq!(s.errors, s.status_4xx);
    assert!(s.classes["missing"].completed > 500);
}

#[test]
fn closed_loop_runs_as_fast_as_connections_allow() {
    let server = TestServer::start(Behaviour::default());
    let mut o = options(
        &server,
        Shorthand {
            rate: Some("max".into()),
            duration: Some(1.0),
            ..Default::default()
        },
    );
    o.metrics_path = None;
    let c = execute(&o, None, false).unwrap();
    let s = summarize(&c, &o);
    assert_eq!(s.mode, "closed");
    assert!(s.completed > 500, "{}", s.completed);
    assert_eq!(s.errors, 0);
    assert_eq!(s.completed, s.sent);
}

#[test]
fn a_dead_target_is_reported_not_hung() {
    // Bind then drop a listener: the port is almost surely closed now.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let plan = Shorthand {
        rate: Some("50".into()),
        duration: Some(1.0),
        ..Default::default()
    }
    .plan(1, false, None)
    .unwrap();
    let mut o = RunOptions::new(parse_target(&format!("http://{addr}")).unwrap(), plan);
    o.pin = false;
    o.connections = 2;
    o.metrics_path = None;
    o.timeout = Duration::from_millis(500);
    let c = execute(&o, None, false).unwrap();
    let s = summarize(&c, &o);
    assert_eq!(s.completed, 0);
    assert!(s.connect_errors > 0);
    assert_eq!(s.offered, 50);
    assert_eq!(s.dropped, 50, "every request was given up: {s:?}");
}

#[test]
fn unanswered_requests_time_out_and_connections_are_replaced() {
    let server = TestServer::start(Behaviour::default());
    let mut o = options(
        &server,
        Shorthand {
            rate: Some("20".into()),
            duration: Some(1.0),
            paths: vec!["/hang".into()],
            ..Default::default()
        },
    );
    o.connections = 2;
    o.metrics_path = None;
    o.timeout = Duration::from_millis(300);
    let c = execute(&o, None, false).unwrap();
    let s = summarize(&c, &o);
    assert_eq!(s.completed, 0);
    assert!(s.timeouts >= 2, "{s:?}");
    assert!(s.reconnects >= 2, "{s:?}");
    // Every offered request is accounted for: timed out, dropped while
    // waiting for a connection, or still in flight when the run ended.
    assert_eq!(s.timeouts + s.dropped + s.unfinished, s.offered, "{s:?}");
    assert_eq!(s.errors, s.offered - s.unfinished);
}

#[test]
fn a_quantum_batches_sends_and_the_lateness_shows_in_corrected_latency() {
    let server = TestServer::start(Behaviour::default());
    let mut o = options(
        &server,
        Shorthand {
            rate: Some("200".into()),
            duration: Some(1.0),
            ..Default::default()
        },
    );
    o.metrics_path = None;
    o.quantum = Duration::from_millis(100);
    let c = execute(&o, None, false).unwrap();
    let s = summarize(&c, &o);
    assert_eq!(s.completed, 200);
    // Arrivals wait for the next 100 ms grid point: ~50 ms on average.
    assert!(s.latency.p50_ms > 20.0, "{:?}", s.latency);
    assert!(s.latency.p99_ms < 150.0, "{:?}", s.latency);
    assert!(s.service.p50_ms < 20.0, "{:?}", s.service);
    assert!(s.late > 100, "late {}", s.late);
}
