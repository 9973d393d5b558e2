//! The example's routes and per-worker state.

use std::cell::Cell;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidepool::app::Pools;
use tidepool::drivers::cache::{ComputeError, LocalCache};
use tidepool::drivers::pg::ToSql;
use tidepool::drivers::pool::pg::{PgManager, PgSharedManager};
use tidepool::drivers::pool::redis::RedisManager;
use tidepool::drivers::pool::{Class, LocalPool};
use tidepool::drivers::redis::SetOptions;
use tidepool::engine::http::IntoResponse;
use tidepool::engine::{Method, Request, Response, Router, Status};
use tidepool::supervisor::SupervisorState;

/// One worker's state: its shards of the pools.
pub struct State {
    pg: Option<LocalPool<PgManager>>,
    pg_shared: Option<LocalPool<PgSharedManager>>,
    redis: Option<LocalPool<RedisManager>>,
    report_cache: Option<LocalCache>,
    /// For POST /debug/supervisor-panic, when fault injection is on.
    supervisor: Option<std::sync::Arc<SupervisorState>>,
    rng: Cell<u64>,
}

impl State {
    /// A world id in 1..=10000 (xorshift: handlers need spread, not secrecy).
    fn random_id(&self) -> i32 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        (x % 10_000) as i32 + 1
    }
}

#[derive(Serialize)]
struct Message {
    message: &'static str,
}

#[derive(Serialize)]
struct World {
    id: i32,
    #[serde(rename = "randomNumber")]
    random_number: i32,
}

fn not_configured(flag: &str) -> Response {
    Response::error(
        Status::NOT_FOUND,
        &format!("not configured (start the server with {flag})"),
    )
}

macro_rules! pool_or {
    ($opt:expr, $flag:expr) => {
        match $opt {
            Some(p) => p,
            None => return not_configured($flag),
        }
    };
}

macro_rules! try_or {
    ($e:expr, $status:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Response::error($status, &e.to_string()),
        }
    };
}

const WORLD_BY_ID: &str = "SELECT id, randomnumber FROM world WHERE id = $1";

async fn db(_: &Request<'_>, st: &State) -> Response {
    let pool = pool_or!(&st.pg_shared, "--pg");
    let c = try_or!(pool.get_for("/db").await, Status::SERVICE_UNAVAILABLE);
    let row = try_or!(
        c.query_one(WORLD_BY_ID, &[&st.random_id()]).await,
        Status::INTERNAL_SERVER_ERROR
    );
    Response::json(&World {
        id: row.get(0),
        random_number: row.get(1),
    })
}

/// N rows, TechEmpower style: N clamped to 1..=500, anything else is 1.
/// The N queries go out in one pipeline: one round trip.
async fn queries(req: &Request<'_>, st: &State) -> Response {
    let pool = pool_or!(&st.pg_shared, "--pg");
    let n = req
        .query_param("n")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(1)
        .clamp(1, 500) as usize;
    let ids: Vec<i32> = (0..n).map(|_| st.random_id()).collect();
    let params: Vec<[&dyn ToSql; 1]> = ids.iter().map(|id| [id as &dyn ToSql]).collect();
    let sets: Vec<&[&dyn ToSql]> = params.iter().map(|p| &p[..]).collect();
    let c = try_or!(pool.get_for("/queries").await, Status::SERVICE_UNAVAILABLE);
    let results = try_or!(
        c.query_many(WORLD_BY_ID, &sets).await,
        Status::INTERNAL_SERVER_ERROR
    );
    let mut out = Vec::with_capacity(n);
    for r in results {
        let r = try_or!(r, Status::INTERNAL_SERVER_ERROR);
        let Some(row) = r.rows.first() else {
            return Response::error(Status::INTERNAL_SERVER_ERROR, "row missing");
        };
        out.push(World {
            id: row.get(0),
            random_number: row.get(1),
        });
    }
    Response::json(&out)
}

/// Holds a pooled connection for `ms` (creates acquire-wait on demand), in
/// request class `class` (critical, default or sheddable: who is served
/// and shed first when the pool's queue is adaptive and overloaded), or
/// the route's configured class.
async fn db_sleep(req: &Request<'_>, st: &State) -> Response {
    let pool = pool_or!(&st.pg, "--pg");
    let ms = req
        .query_param("ms")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(10)
        .min(60_000);
    // `?class=` names the class per call; without it the route's class
    // in the pool's configuration applies (`[pools.pg.classes]`).
    let got = match req.query_param("class").as_deref() {
        Some("critical") => pool.get_as("/db/sleep", Class::Critical).await,
        Some("sheddable") => pool.get_as("/db/sleep", Class::Sheddable).await,
        Some(_) => pool.get_as("/db/sleep", Class::Default).await,
        None => pool.get_for("/db/sleep").await,
    };
    // A shed acquire is a fast 503 with Retry-After (AcquireError's own
    // response).
    let mut c = match got {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let secs = ms as f64 / 1000.0;
    try_or!(
        c.execute("SELECT pg_sleep($1)", &[&secs]).await,
        Status::INTERNAL_SERVER_ERROR
    );
    Response::text_owned(format!("slept {ms} ms"))
}

async fn redis_greeting(_: &Request<'_>, st: &State) -> Response {
    let pool = pool_or!(&st.redis, "--redis");
    let c = try_or!(pool.get_for("/redis").await, Status::SERVICE_UNAVAILABLE);
    match try_or!(
        c.get::<Option<String>>("greeting").await,
        Status::INTERNAL_SERVER_ERROR
    ) {
        Some(v) => Response::text_owned(v),
        None => Response::error(Status::NOT_FOUND, "greeting not set"),
    }
}

async fn cache_get(req: &Request<'_>, st: &State) -> Response {
    let pool = pool_or!(&st.redis, "--redis");
    let key = format!("cache:{}", req.param("key").unwrap_or_default());
    let c = try_or!(pool.get_for("/cache").await, Status::SERVICE_UNAVAILABLE);
    match try_or!(
        c.get::<Option<Vec<u8>>>(key).await,
        Status::INTERNAL_SERVER_ERROR
    ) {
        Some(v) => Response::bytes("application/octet-stream", v),
        None => Response::error(Status::NOT_FOUND, "no such key"),
    }
}

/// Stores the body with a TTL (`?ttl=SECONDS`, default 60).
async fn cache_put(req: &Request<'_>, st: &State) -> Response {
    let pool = pool_or!(&st.redis, "--redis");
    let key = format!("cache:{}", req.param("key").unwrap_or_default());
    let ttl = req
        .query_param("ttl")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(60)
        .clamp(1, 30 * 24 * 3600);
    let c = try_or!(pool.get_for("/cache").await, Status::SERVICE_UNAVAILABLE);
    let _: bool = try_or!(
        c.set_with(key, req.body(), SetOptions::new().ex(ttl)).await,
        Status::INTERNAL_SERVER_ERROR
    );
    Response::new(Status::NO_CONTENT)
}

/// A deliberately slow query (~200 ms in PostgreSQL), the kind of result a
/// burst of identical requests must not all recompute.
const REPORT: &str = "SELECT $1::text AS day, pg_sleep(0.2), count(*) FROM world";
const REPORT_TTL: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
struct Report {
    day: String,
    worlds: i64,
    /// When the query ran: equal across responses served from one
    /// computation.
    generated_at_ms: u64,
}

/// `GET /report/{day}`: the slow query through the cache, so concurrent
/// requests on every worker of every server process share one query per
/// TTL.
async fn report(req: &Request<'_>, st: &State) -> Response {
    let pg = pool_or!(&st.pg, "--pg");
    let cache = pool_or!(&st.report_cache, "--redis");
    let day = req.param("day").unwrap_or_default();
    let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'-';
    if day.is_empty() || day.len() > 32 || !day.bytes().all(valid) {
        return Response::error(Status::BAD_REQUEST, "day: 1 to 32 letters, digits or '-'");
    }
    let r = cache
        .get_or_compute(&format!("report:{day}"), REPORT_TTL, || async {
            // No connection (shed under overload, or none in time) is no
            // verdict on the report: its callers get a 503, not a 500.
            let mut c = pg
                .get_for("/report")
                .await
                .map_err(ComputeError::unavailable)?;
            let row = c.query_one(REPORT, &[&day.as_ref()]).await?;
            let generated_at_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            Ok::<_, ComputeError>(Report {
                day: row.get(0),
                worlds: row.get(2),
                generated_at_ms,
            })
        })
        .await;
    // Overload, a lock held elsewhere or Redis out of reach: 503 with
    // Retry-After; a failed computation: 500 (`IntoResponse for CacheError`).
    match r {
        Ok(report) => Response::json(&report),
        Err(e) => e.into_response(),
    }
}

/// A worker's router, over its shards of the pools the flags declared.
pub fn router(pools: &Pools, fault_injection: bool) -> Router<State> {
    let state = State {
        pg: pools.has("pg").then(|| pools.pg("pg")),
        pg_shared: pools.has("pg-shared").then(|| pools.pg_shared("pg-shared")),
        redis: pools.has("redis").then(|| pools.redis("redis")),
        // The cache's handle shares the route's shard of the Redis pool.
        report_cache: pools.has("redis").then(|| pools.cache("report")),
        supervisor: fault_injection.then(|| pools.supervisor()),
        rng: Cell::new(0x2545_F491_4F6C_DD1D ^ ((pools.worker() as u64 + 1) << 32)),
    };
    Router::new(state)
        .get_sync("/plaintext", |_, _| Response::text("Hello, World!"))
        .get_sync("/json", |_, _| {
            Response::json(&Message {
                message: "Hello, World!",
            })
        })
        .get("/db", db)
        .get("/queries", queries)
        .get("/db/sleep", db_sleep)
        .get("/redis", redis_greeting)
        .get("/cache/{key}", cache_get)
        .put("/cache/{key}", cache_put)
        .get("/report/{day}", report)
        .route_sync(
            Method::Post,
            "/debug/supervisor-panic",
            |_, st: &State| match &st.supervisor {
                Some(s) => {
                    s.inject_panic();
                    Response::text("the supervisor's next tick panics")
                }
                _ => Response::error(
                    Status::NOT_FOUND,
                    "fault injection is off (--fault-injection)",
                ),
            },
        )
}
