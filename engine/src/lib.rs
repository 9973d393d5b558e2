//! Tidepool's engine: thread-per-core workers, each with its own io_uring,
//! and the HTTP/1.1 server that runs on them.

pub mod http;
pub mod rt;
