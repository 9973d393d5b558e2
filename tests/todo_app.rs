//! The todo example end to end against real PostgreSQL and Redis: every
//! route, every error shape, the cache, and the database down.

mod support;

use serde_json::Value;
use support::{App, TempFile};
use tidepool_testkit::{PgServer, PgUser, RedisServer};

const JSON: &str = "Content-Type: application/json\r\n";

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

/// An error response: the status and its JSON `error` message.
fn error(app: &App, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    let (status, text) = app.request_with(method, path, headers, body.as_bytes());
    let v = json(&text);
    let message = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {text}"))
        .to_string();
    (status, message)
}

fn start(pg: &PgServer, redis: &RedisServer) -> App {
    start_with(pg, redis, &[])
}

fn start_with(pg: &PgServer, redis: &RedisServer, more: &[&str]) -> App {
    let (pg, redis) = (pg.url(PgUser::Md5), redis.url());
    let mut args = vec!["--workers", "2", "--pg", &pg, "--redis", &redis];
    args.extend_from_slice(more);
    App::start_example("todo", &args, |_| {})
}

#[test]
fn every_route_and_error() {
    let pg = PgServer::shared();
    let redis = RedisServer::shared();
    let app = start(pg, redis);
    // Create.
    let (status, body) = app.request_with("POST", "/todos", JSON, br#"{"title":"write tests"}"#);
    assert_eq!(status, 201, "{body}");
    let created = json(&body);
    let id = created["id"].as_i64().unwrap();
    assert_eq!(
        (created["title"].as_str(), created["done"].as_bool()),
        (Some("write tests"), Some(false))
    );
    // Read, through the cache: the first read fills it.
    let key = format!("todo:{id}");
    assert_eq!(redis.cli(&["EXISTS", &key]).trim(), "0");
    let (status, body) = app.get(&format!("/todos/{id}"));
    assert_eq!(
        (status, json(&body)["title"].as_str()),
        (200, Some("write tests"))
    );
    assert_eq!(
        redis.cli(&["EXISTS", &key]).trim(),
        "1",
        "cached after a read"
    );
    // A percent-encoded id is the same id.
    let encoded: String = id
        .to_string()
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect();
    assert_eq!(app.get(&format!("/todos/{encoded}")).0, 200);
    // Patch: the row changes and the cached copy goes.
    let (status, body) =
        app.request_with("PATCH", &format!("/todos/{id}"), JSON, br#"{"done":true}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["done"], Value::Bool(true));
    assert_eq!(redis.cli(&["EXISTS", &key]).trim(), "0", "invalidated");
    assert_eq!(
        json(&app.get(&format!("/todos/{id}")).1)["done"],
        Value::Bool(true)
    );
    // List, newest first, bounded by limit.
    app.request_with("POST", "/todos", JSON, br#"{"title":"newer"}"#);
    let (status, body) = app.get("/todos?limit=1");
    assert_eq!(status, 200);
    let list = json(&body);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["title"].as_str(), Some("newer"));
    assert!(json(&app.get("/todos").1).as_array().unwrap().len() >= 2);
    // Errors, all as {"error": "..."}.
    assert_eq!(error(&app, "GET", "/todos/999999999", "", "").0, 404);
    let (status, message) = error(&app, "POST", "/todos", JSON, r#"{"title": "#);
    assert_eq!(status, 400);
    assert!(message.contains("invalid JSON"), "{message}");
    assert_eq!(
        error(&app, "POST", "/todos", JSON, r#"{"name":"x"}"#).0,
        422
    );
    assert_eq!(error(&app, "POST", "/todos", "", r#"{"title":"x"}"#).0, 415);
    assert_eq!(
        error(
            &app,
            "PATCH",
            &format!("/todos/{id}"),
            JSON,
            r#"{"done":"yes"}"#
        )
        .0,
        422
    );
    assert_eq!(
        error(&app, "PATCH", "/todos/999999999", JSON, r#"{"done":true}"#).0,
        404
    );
    let (status, message) = error(&app, "GET", "/todos/abc", "", "");
    assert_eq!(status, 400);
    assert!(message.contains("`id`"), "{message}");
    assert_eq!(error(&app, "GET", "/todos?limit=many", "", "").0, 400);
    assert_eq!(error(&app, "GET", "/nowhere", "", "").0, 404);
    assert_eq!(error(&app, "DELETE", "/todos/1", "", "").0, 405);
    // What App serves besides the routes.
    assert_eq!(app.get("/health"), (200, "ok".into()));
    assert_eq!(
        app.metric("tidepool_pool_max_open{pool=\"pg\"}"),
        Some(10.0)
    );
    assert_eq!(
        app.metric("tidepool_pool_max_open{pool=\"redis\"}"),
        Some(10.0)
    );
    assert!(app.metric("tidepool_http_requests_total").unwrap() >= 20.0);
    // Per route, method and status, with the route's pattern as its label.
    let shown = |route: &str, method: &str, status: u16| {
        app.metric(&format!(
            "tidepool_http_request_duration_seconds_count{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"
        ))
    };
    assert!(shown("/todos/{id}", "GET", 200).unwrap() >= 3.0);
    assert_eq!(shown("/todos/{id}", "GET", 404), Some(1.0));
    assert_eq!(shown("/todos", "POST", 201), Some(2.0));
    assert_eq!(shown("", "other", 405), Some(1.0), "no route took it");
    let status = app.stop();
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
}

/// The App reads `--config` (and the environment) for the pools it declares.
#[test]
fn the_config_file_sizes_the_apps_pools() {
    let pg = PgServer::shared();
    let redis = RedisServer::shared();
    let file = TempFile::new(
        "[pools.pg]\nmax_open = 3\n[pools.redis.autoscale]\nenabled = true\nmax = 4\n",
    );
    let app = start_with(pg, redis, &["--config", file.path()]);
    assert_eq!(app.metric("tidepool_pool_max_open{pool=\"pg\"}"), Some(3.0));
    assert_eq!(
        app.metric_eventually("tidepool_supervisor_autoscale_enabled{pool=\"redis\"}"),
        1.0
    );
    assert!(app.stop().success());
}

#[test]
fn the_database_down_is_a_503() {
    // Its own servers: ids start at 1 here, and the shared Redis may cache
    // another database's todo 1.
    let pg = PgServer::start().expect("PostgreSQL starts");
    let redis = RedisServer::start().expect("redis-server starts");
    let app = start(&pg, &redis);
    let (status, body) = app.request_with("POST", "/todos", JSON, br#"{"title":"before"}"#);
    assert_eq!(status, 201, "{body}");
    let id = json(&body)["id"].as_i64().unwrap();
    pg.kill9();
    let (status, message) = error(&app, "GET", "/todos", "", "");
    assert_eq!(status, 503, "{message}");
    // Never read, so never cached: it needs PostgreSQL too.
    assert_eq!(error(&app, "GET", &format!("/todos/{id}"), "", "").0, 503);
    assert_eq!(
        error(&app, "POST", "/todos", JSON, r#"{"title":"after"}"#).0,
        503
    );
    let status = app.stop();
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
}
