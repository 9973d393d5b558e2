//! HTTP/1.1: a sans-IO core (`parse`, `chunked`, `response`, `date`) and
//! the parts that drive it on a worker's ring (`conn`, `server`), with
//! routing (`router`) and counters (`stats`).

pub mod chunked;
mod conn;
mod date;
pub mod parse;
pub mod response;
pub mod router;
pub mod server;
pub mod stats;

pub use response::{Body, Response};
pub use router::{Params, Request, Router};
pub use server::{HttpConfig, Server, ServerHandle};
pub use stats::{HttpStats, WorkerStats};
