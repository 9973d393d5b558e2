//! `GET /report/{day}` end to end: two example-server processes of two
//! workers each, against one PostgreSQL and one Redis. A burst of
//! concurrent requests on a cold day runs the slow query once in total,
//! and /metrics shows it.

mod support;

use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use support::App;
use tidepool_testkit::{PgServer, PgUser, RedisServer};

/// Servers start one at a time: each creates the `world` table when it
/// starts, and two concurrent `CREATE TABLE IF NOT EXISTS` can collide.
fn start(args: &[&str]) -> App {
    static STARTING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    App::start(args)
}

fn sample(app: &App, name: &str) -> f64 {
    app.metric(&format!("{name}{{cache=\"report\"}}"))
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

#[test]
fn a_cold_report_is_computed_once_across_two_server_processes() {
    let pg = PgServer::shared();
    let redis = RedisServer::shared();
    let pg_url = pg.url(PgUser::Md5);
    let redis_url = redis.url();
    let args = ["--workers", "2", "--pg", &pg_url, "--redis", &redis_url];
    let a = start(&args);
    let b = start(&args);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let path = format!("/report/d-{}-{nanos}", std::process::id());

    let per_app = 20;
    let start_line = Barrier::new(2 * per_app);
    let started = Instant::now();
    let responses: Vec<(u16, String)> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..2 * per_app)
            .map(|i| {
                let (app, path, start_line) =
                    (if i % 2 == 0 { &a } else { &b }, &path, &start_line);
                s.spawn(move || {
                    start_line.wait();
                    app.get(path)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    for (status, body) in &responses {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body, &responses[0].1, "one computation's result for all");
    }
    let v: serde_json::Value = serde_json::from_str(&responses[0].1).unwrap();
    assert_eq!(v["day"], path.trim_start_matches("/report/"));
    assert_eq!(v["worlds"], 10_000);
    assert!(v["generated_at_ms"].as_u64().is_some());
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");

    let computes =
        sample(&a, "tidepool_cache_computes_total") + sample(&b, "tidepool_cache_computes_total");
    assert_eq!(computes, 1.0, "one query across both processes");
    let misses =
        sample(&a, "tidepool_cache_misses_total") + sample(&b, "tidepool_cache_misses_total");
    let hits = sample(&a, "tidepool_cache_hits_total") + sample(&b, "tidepool_cache_hits_total");
    assert_eq!(misses + hits, (2 * per_app) as f64);
    let waited = sample(&a, "tidepool_cache_lock_wait_seconds_count")
        + sample(&b, "tidepool_cache_lock_wait_seconds_count");
    // Every miss but the computing one waits, except a request whose miss
    // came just before the value landed and which then found it under the
    // lock: timing decides how many, not correctness.
    assert!(
        waited >= 1.0 && waited <= misses - 1.0,
        "{waited} waits for {misses} misses"
    );
    for app in [&a, &b] {
        assert_eq!(sample(app, "tidepool_cache_lock_timeouts_total"), 0.0);
        assert!(app
            .metric("tidepool_cache_lock_wait_seconds{cache=\"report\",quantile=\"0.99\"}")
            .is_some());
        assert!(sample(app, "tidepool_cache_lock_wait_seconds_sum") >= 0.0);
    }

    // Cached now: a hit on either server, no second query.
    let (status, body) = b.get(&path);
    assert_eq!((status, &body), (200, &responses[0].1));
    let computes =
        sample(&a, "tidepool_cache_computes_total") + sample(&b, "tidepool_cache_computes_total");
    assert_eq!(computes, 1.0);

    assert_eq!(a.get("/report/no%20spaces").0, 400);
    assert!(a.stop().success());
    assert!(b.stop().success());
}

#[test]
fn reports_need_both_pg_and_redis() {
    let redis = RedisServer::shared();
    let app = start(&["--workers", "1", "--redis", &redis.url()]);
    let (status, body) = app.get("/report/today");
    assert_eq!(status, 404);
    assert!(body.contains("not configured"), "{body}");
    assert!(app.stop().success());

    let pg = PgServer::shared();
    let app = start(&["--workers", "1", "--pg", &pg.url(PgUser::Md5)]);
    let (status, body) = app.get("/report/today");
    assert_eq!(status, 404);
    assert!(body.contains("not configured"), "{body}");
    assert!(
        app.metric("tidepool_cache_hits_total{cache=\"report\"}")
            .is_none(),
        "no cache, no cache metrics"
    );
    assert!(app.stop().success());
}
