//! Database clients that live on a worker's ring (or epoll instance).

pub mod cache;
mod delegate;
pub mod fleet;
pub mod pg;
pub mod pool;
pub mod redis;
