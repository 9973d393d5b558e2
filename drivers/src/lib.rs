//! Database clients that live on a worker's io_uring.

pub mod cache;
pub mod pg;
pub mod pool;
pub mod redis;
