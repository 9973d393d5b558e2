//! The example server end to end, against real PostgreSQL and Redis.

mod support;

use support::App;
use tidepool_testkit::{PgServer, PgUser, RedisServer};

#[test]
fn plaintext_json_health_and_clean_shutdown() {
    let app = App::start(&["--workers", "2"]);
    assert_eq!(app.get("/plaintext"), (200, "Hello, World!".into()));
    assert_eq!(
        app.get("/json"),
        (200, r#"{"message":"Hello, World!"}"#.into())
    );
    assert_eq!(app.get("/health").0, 200);
    assert_eq!(app.get("/db").0, 404, "no --pg: not configured");
    assert!(app.metric("tidepool_http_requests_total").unwrap() >= 4.0);
    assert!(app.stop().success(), "SIGTERM exits cleanly");
}

#[test]
fn database_routes() {
    let pg = PgServer::shared();
    let redis = RedisServer::shared();
    let app = App::start(&[
        "--workers",
        "2",
        "--pg",
        &pg.url(PgUser::Md5),
        "--redis",
        &redis.url(),
    ]);
    let (status, body) = app.get("/db");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = v["id"].as_i64().unwrap();
    assert!((1..=10_000).contains(&id));
    assert!(v["randomNumber"].as_i64().is_some());
    for (q, n) in [
        ("n=5", 5),
        ("n=0", 1),
        ("n=999", 500),
        ("n=abc", 1),
        ("", 1),
    ] {
        let (status, body) = app.get(&format!("/queries?{q}"));
        assert_eq!(status, 200);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        assert_eq!(rows.len(), n, "/queries?{q}");
    }
    assert_eq!(pg.psql("SELECT count(*) FROM world").trim(), "10000");
    assert_eq!(app.get("/db/sleep?ms=20").0, 200);
    assert_eq!(app.get("/redis"), (200, "Hello, World!".into()));
    assert_eq!(app.get("/cache/k1").0, 404);
    assert_eq!(app.request("PUT", "/cache/k1?ttl=30", b"v\r\n\x00x").0, 204);
    assert_eq!(app.get("/cache/k1"), (200, "v\r\n\0x".into()));
    let ttl: i64 = redis.cli(&["TTL", "cache:k1"]).trim().parse().unwrap();
    assert!((1..=30).contains(&ttl));
    for m in [
        "tidepool_pool_max_open{pool=\"pg\"}",
        "tidepool_pool_open{pool=\"pg\"}",
        "tidepool_pool_in_use{pool=\"pg\"}",
        "tidepool_pool_idle{pool=\"pg\"}",
        "tidepool_pool_waiting{pool=\"pg\"}",
        "tidepool_pool_acquire_wait_seconds{pool=\"pg\",quantile=\"0.99\"}",
        "tidepool_pool_query_seconds{pool=\"redis\",quantile=\"0.5\"}",
        "tidepool_http_requests_total",
    ] {
        assert!(app.metric(m).is_some(), "metric {m} missing");
    }
    assert_eq!(app.metric("tidepool_pool_max_open{pool=\"pg\"}"), Some(8.0));
    assert!(app.stop().success());
}
