//! HTTP/1.1: a sans-IO core (`parse`, `chunked`, `response`, `date`, and
//! `conn`, the connection's state machine) and the parts that drive it on
//! a worker's ring (`serve`, `server`), with
//! routing (`router`, `method`), what handlers return (`into_response`,
//! `status`), typed views of requests (`extract`) and counters (`stats`).

pub mod chunked;
pub mod conn;
pub(crate) mod date;
pub mod extract;
pub mod into_response;
pub mod method;
#[doc(hidden)]
pub mod offline;
pub mod parse;
pub mod response;
pub mod route_stats;
pub mod router;
mod serve;
pub mod server;
pub mod stats;
pub mod status;

pub use extract::{FromRequest, Json, Query, Rejection, RejectionKind};
pub use into_response::IntoResponse;
pub use method::Method;
pub use response::{Body, Response};
pub use route_stats::{RouteSample, RouteStats};
pub use router::{Params, Request, Router};
pub use server::{HttpConfig, Server, ServerHandle};
pub use stats::{HttpStats, WorkerStats};
pub use status::Status;
