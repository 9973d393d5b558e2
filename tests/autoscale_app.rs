//! PoolAutoscale through the example server on a real PostgreSQL: a load
//! step of slow queries grows the pool within its rails, the pool shrinks
//! when the load stops, and a panicking supervisor restarts.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::App;
use tidepool_testkit::{PgServer, PgUser};

const MAX_OPEN: &str = "tidepool_pool_max_open{pool=\"pg\"}";

fn wait_metric(app: &App, limit: Duration, what: &str, f: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = app.metric(what) {
            if f(v) {
                return v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what} never satisfied the condition"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn load_step_grows_then_shrinks_and_supervisor_survives_a_panic() {
    let pg = PgServer::shared();
    let url = pg.url(PgUser::Trust);
    let app = Arc::new(App::start(&[
        "--workers",
        "2",
        "--pg",
        &url,
        "--pg-max-open",
        "2",
        "--pg-autoscale",
        "2:8",
        "--fault-injection",
    ]));
    assert_eq!(app.metric(MAX_OPEN), Some(2.0));
    // Load step: 16 clients holding a connection for 50 ms each.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (app, stop) = (app.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (status, _) = app.get("/db/sleep?ms=50");
                    assert!(status == 200 || status == 503, "status {status}");
                }
            })
        })
        .collect();
    let grown = wait_metric(&app, Duration::from_secs(60), MAX_OPEN, |v| v >= 4.0);
    assert!(grown <= 8.0);
    let peak = wait_metric(&app, Duration::from_secs(60), MAX_OPEN, |v| v >= 5.0);
    assert!(peak <= 8.0, "rails respected: {peak}");
    let grows = app
        .metric("tidepool_supervisor_decisions_total{pool=\"pg\",direction=\"grow\"}")
        .unwrap();
    assert!(grows >= 3.0);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let now = app.metric(MAX_OPEN).unwrap();
    let shrunk = wait_metric(&app, Duration::from_secs(60), MAX_OPEN, |v| v < now);
    assert!(shrunk >= 2.0, "never below min");
    // Between resizes the pool is held, and /metrics says why, as one
    // series whose reason label is the rule that holds it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = app.get("/metrics");
        let holds: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("tidepool_supervisor_hold{pool=\"pg\",reason=\""))
            .map(str::to_string)
            .collect();
        assert!(holds.len() <= 1, "one hold reason at a time: {holds:?}");
        if holds.len() == 1 {
            assert!(holds[0].ends_with(" 1"), "{holds:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never held after shrinking"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(app.metric("tidepool_supervisor_panics_total"), Some(0.0));
    // Fault injection: the next tick panics; the thread restarts and the
    // heartbeat moves on.
    let beat = app
        .metric("tidepool_supervisor_last_tick_timestamp_seconds")
        .unwrap();
    assert!(beat > 0.0);
    assert_eq!(app.request("POST", "/debug/supervisor-panic", b"").0, 200);
    wait_metric(
        &app,
        Duration::from_secs(30),
        "tidepool_supervisor_restarts_total",
        |v| v >= 1.0,
    );
    assert_eq!(app.metric("tidepool_supervisor_panics_total"), Some(1.0));
    wait_metric(
        &app,
        Duration::from_secs(30),
        "tidepool_supervisor_last_tick_timestamp_seconds",
        |v| v > beat + 1.0,
    );
    let app = Arc::try_unwrap(app).ok().expect("clients finished");
    assert!(app.stop().success());
}
