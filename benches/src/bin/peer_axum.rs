//! The peer for the database comparisons: what users would pick instead of
//! Tidepool — axum on a current-thread tokio runtime (one thread, pinned by
//! the caller), tokio-postgres behind deadpool-postgres for `GET /db`, and
//! redis-rs's multiplexed connection for `GET /redis`. Same routes and
//! same responses as Tidepool's example.
//!
//! usage: peer_axum ADDR:PORT --pg URL --pg-max-open N --redis URL

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::Serialize;

struct App {
    pg: Pool,
    redis: redis::aio::MultiplexedConnection,
    rng: AtomicU64,
}

#[derive(Serialize)]
struct World {
    id: i32,
    #[serde(rename = "randomNumber")]
    random_number: i32,
}

fn random_id(app: &App) -> i32 {
    let mut x = app.rng.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    app.rng.store(x, Ordering::Relaxed);
    (x % 10_000) as i32 + 1
}

fn internal(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
}

async fn db(State(app): State<Arc<App>>) -> Response {
    let client = match app.pg.get().await {
        Ok(c) => c,
        Err(e) => return internal(e),
    };
    let stmt = match client
        .prepare_cached("SELECT id, randomnumber FROM world WHERE id = $1")
        .await
    {
        Ok(s) => s,
        Err(e) => return internal(e),
    };
    match client.query_one(&stmt, &[&random_id(&app)]).await {
        Ok(row) => Json(World {
            id: row.get(0),
            random_number: row.get(1),
        })
        .into_response(),
        Err(e) => internal(e),
    }
}

async fn redis_greeting(State(app): State<Arc<App>>) -> Response {
    let mut c = app.redis.clone();
    let v: redis::RedisResult<Option<String>> =
        redis::cmd("GET").arg("greeting").query_async(&mut c).await;
    match v {
        Ok(Some(s)) => ([("content-type", "text/plain; charset=utf-8")], s).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => internal(e),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| panic!("{name} required"))
    };
    let addr: std::net::SocketAddr = args[1].parse().expect("ADDR:PORT");
    let pg_url = arg("--pg");
    let max_open: usize = arg("--pg-max-open").parse().unwrap();
    let redis_url = arg("--redis");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let pg_cfg: tokio_postgres::Config = pg_url.parse().expect("pg url");
        let mgr = Manager::from_config(
            pg_cfg,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pg = Pool::builder(mgr).max_size(max_open).build().unwrap();
        let client = redis::Client::open(redis_url).expect("redis url");
        let redis = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis connect");
        let app = Arc::new(App {
            pg,
            redis,
            rng: AtomicU64::new(0x2545_F491_4F6C_DD1D),
        });
        let router = Router::new()
            .route(
                "/plaintext",
                get(|| async { ([("content-type", "text/plain")], "Hello, World!") }),
            )
            .route("/db", get(db))
            .route("/redis", get(redis_greeting))
            .with_state(app);
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        eprintln!("peer_axum: listening on {addr}");
        axum::serve(listener, router).await.unwrap();
    });
}
