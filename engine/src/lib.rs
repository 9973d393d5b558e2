//! Tidepool's engine: thread-per-core workers, each with its own io_uring,
//! and the HTTP/1.1 server that runs on them.

pub mod cgroup;
pub mod config;
pub mod http;
pub mod rt;
pub mod tls;
pub mod workers;

pub use http::{
    HttpConfig, IntoResponse, Json, Method, Query, Rejection, Request, Response, Router, Server,
    ServerHandle, Status,
};
pub use workers::{Runtime, RuntimeConfig, ShutdownHandle, WorkerInfo};
