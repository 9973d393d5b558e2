//! The routes, the worker's state and the API's errors.

use serde::{Deserialize, Serialize};
use tidepool::app::Pools;
use tidepool::drivers::pg::{self, Row};
use tidepool::drivers::pool::pg::PgManager;
use tidepool::drivers::pool::redis::RedisManager;
use tidepool::drivers::pool::{AcquireError, LocalPool};
use tidepool::drivers::redis::{self, SetOptions};
use tidepool::{IntoResponse, Json, Query, Rejection, Request, Response, Router, Status};

/// How long a todo stays in the cache after it was read from PostgreSQL.
const CACHE_SECS: u64 = 60;

/// One worker's shards of the pools.
pub struct State {
    pg: LocalPool<PgManager>,
    redis: LocalPool<RedisManager>,
}

#[derive(Serialize, Deserialize)]
struct Todo {
    id: i64,
    title: String,
    done: bool,
}

impl Todo {
    fn from_row(r: &Row) -> Todo {
        Todo {
            id: r.get(0),
            title: r.get(1),
            done: r.get(2),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTodo {
    title: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    title: Option<String>,
    done: Option<bool>,
}

#[derive(Deserialize)]
struct Page {
    limit: Option<i64>,
}

/// What can go wrong, and the status each is shown with.
enum ApiError {
    Bad(Rejection),
    NotFound,
    /// A database is down or out of connections: retry later.
    Unavailable(String),
    Internal(String),
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        ApiError::Bad(r)
    }
}

impl From<AcquireError> for ApiError {
    fn from(e: AcquireError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<pg::Error> for ApiError {
    fn from(e: pg::Error) -> Self {
        if e.is_broken() || e.is_transient() {
            ApiError::Unavailable(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<redis::Error> for ApiError {
    fn from(e: redis::Error) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

/// `{"error": "…"}` with the status: the shape of every error, the
/// framework's own included (see `error_renderer` below).
fn json_error(status: Status, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Bad(r) => json_error(r.status(), r.message()),
            ApiError::NotFound => json_error(Status::NOT_FOUND, "no such todo"),
            ApiError::Unavailable(m) => json_error(Status::SERVICE_UNAVAILABLE, &m),
            ApiError::Internal(m) => json_error(Status::INTERNAL_SERVER_ERROR, &m),
        }
    }
}

type Result<T> = std::result::Result<T, ApiError>;

fn cache_key(id: i64) -> String {
    format!("todo:{id}")
}

async fn create(req: &Request<'_>, st: &State) -> Result<(Status, Json<Todo>)> {
    let Json(new): Json<NewTodo> = req.extract()?;
    let mut c = st.pg.get_for("POST /todos").await?;
    let row = c
        .query_one(
            "INSERT INTO todos (title) VALUES ($1) RETURNING id, title, done",
            &[&new.title],
        )
        .await?;
    Ok((Status::CREATED, Json(Todo::from_row(&row))))
}

/// Read through the cache: Redis first, PostgreSQL on a miss (then cached).
async fn show(req: &Request<'_>, st: &State) -> Result<Response> {
    let id: i64 = req.path_param("id")?;
    let r = st.redis.get_for("GET /todos/{id}").await?;
    if let Some(json) = r.get::<Option<Vec<u8>>>(cache_key(id)).await? {
        return Ok(Response::bytes("application/json", json));
    }
    let mut c = st.pg.get_for("GET /todos/{id}").await?;
    let row = c
        .query_opt("SELECT id, title, done FROM todos WHERE id = $1", &[&id])
        .await?
        .ok_or(ApiError::NotFound)?;
    let json =
        serde_json::to_vec(&Todo::from_row(&row)).map_err(|e| ApiError::Internal(e.to_string()))?;
    let _: bool = r
        .set_with(cache_key(id), &json[..], SetOptions::new().ex(CACHE_SECS))
        .await?;
    Ok(Response::bytes("application/json", json))
}

async fn update(req: &Request<'_>, st: &State) -> Result<Json<Todo>> {
    let id: i64 = req.path_param("id")?;
    let Json(p): Json<Patch> = req.extract()?;
    let mut c = st.pg.get_for("PATCH /todos/{id}").await?;
    let row = c
        .query_opt(
            "UPDATE todos SET title = coalesce($2, title), done = coalesce($3, done) \
             WHERE id = $1 RETURNING id, title, done",
            &[&id, &p.title, &p.done],
        )
        .await?
        .ok_or(ApiError::NotFound)?;
    // The next read refills the cache from the row just written.
    st.redis
        .get_for("PATCH /todos/{id}")
        .await?
        .del(&[cache_key(id)])
        .await?;
    Ok(Json(Todo::from_row(&row)))
}

async fn list(req: &Request<'_>, st: &State) -> Result<Json<Vec<Todo>>> {
    let Query(page): Query<Page> = req.extract()?;
    let limit = page.limit.unwrap_or(20).clamp(1, 100);
    let mut c = st.pg.get_for("GET /todos").await?;
    let rows = c
        .query(
            "SELECT id, title, done FROM todos ORDER BY id DESC LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(Json(rows.iter().map(Todo::from_row).collect()))
}

/// A worker's router, over its shards of the pools.
pub fn router(pools: &Pools) -> Router<State> {
    let state = State {
        pg: pools.pg("pg"),
        redis: pools.redis("redis"),
    };
    Router::new(state)
        .post("/todos", create)
        .get("/todos", list)
        .get("/todos/{id}", show)
        .patch("/todos/{id}", update)
        .error_renderer(json_error)
}
