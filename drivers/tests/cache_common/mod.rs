//! Helpers of the cache tests: pools over real Redis, several workers
//! sharing one `Cache`, and bounded waits on observable conditions.

#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tidepool_drivers::cache::CacheConfig;
use tidepool_drivers::pool::redis::RedisManager;
use tidepool_drivers::pool::{Pool, PoolConfig};
use tidepool_drivers::redis::Config;
use tidepool_engine::rt::{self, time};

/// What the tests cache: enough structure to show a serde round trip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub day: String,
    pub rows: u64,
    pub by: String,
}

pub fn pool(url: &str, workers: usize) -> Pool<RedisManager> {
    let cfg = PoolConfig {
        max_open: 2 * workers,
        max_in_flight: 256,
        acquire_timeout: Duration::from_secs(5),
        ..PoolConfig::default()
    };
    let m = RedisManager::new(Config::from_url(url).unwrap(), cfg.max_in_flight);
    Pool::new("cache-test", cfg, m, workers).unwrap()
}

/// A key prefix no other test (or earlier run against the same server)
/// uses.
pub fn prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "t:{test}:{}:{nanos}:{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn config(prefix: &str) -> CacheConfig {
    CacheConfig {
        key_prefix: prefix.to_string(),
        ..CacheConfig::default()
    }
}

/// Runs `f(i)` on `n` worker threads, each its own `rt::block_on`
/// runtime, and returns their results in order.
pub fn on_workers<T, F, Fut>(n: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + 'static,
{
    let f = Arc::new(f);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let f = f.clone();
            std::thread::spawn(move || rt::block_on(f(i)))
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Polls `f` every few milliseconds until it holds; panics after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        time::sleep(Duration::from_millis(2)).await;
    }
}

/// The same, from a plain thread.
pub fn wait_until_blocking(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `calls` of one command in `INFO commandstats`.
pub fn command_calls(info: &str, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}
