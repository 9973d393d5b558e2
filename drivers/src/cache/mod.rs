//! A read-through cache on Redis with cache-stampede protection:
//! [`LocalCache::get_or_compute`].
//!
//! A hit is one `GET`. On a miss exactly one caller computes the value:
//!
//! - within a worker, later callers wait on the first (no lock);
//! - across the workers of the process, the first worker's caller leads and
//!   the others wait on it (a mutex-guarded registry, touched only on
//!   misses);
//! - across processes, the leader takes a Redis lock (`SET lock:{key}
//!   token NX PX lease`); leaders of other processes poll the cache with
//!   jittered back-off until the value appears, the lock frees up, or
//!   [`CacheConfig::wait_timeout`] passes ([`OnTimeout`] decides what then).
//!
//! The lock is released only by its holder (a token-checked script); a
//! crashed holder's lock expires with its lease. A leader whose future is
//! dropped hands over: one of its waiters leads instead.
//!
//! With [`CacheConfig::xfetch_beta`] set, values carry their compute time δ
//! and expiry, and a reader refreshes early with probability rising toward
//! the expiry (XFetch, Vattani et al., VLDB 2015); one refresher at a time,
//! while everyone else keeps reading the still-valid value.
//!
//! The lock deduplicates work; it is not mutual exclusion. A paused holder
//! can outlive its lease while another computes. Use fencing tokens where
//! two concurrent computations would be wrong, not merely wasteful.
//!
//! ```no_run
//! use std::time::Duration;
//! use tidepool_drivers::cache::{Cache, CacheConfig};
//! use tidepool_drivers::pool::{redis::RedisManager, Pool, PoolConfig};
//! use tidepool_drivers::redis::Config;
//!
//! // Declared once, shared by every worker.
//! let redis = Pool::new(
//!     "redis",
//!     PoolConfig::default(),
//!     RedisManager::new(Config::from_url("redis://127.0.0.1/").unwrap(), 64),
//!     1,
//! )
//! .unwrap();
//! let cache = Cache::new("reports", CacheConfig::default()).unwrap();
//! tidepool_engine::rt::block_on(async {
//!     // Per worker.
//!     let local = cache.local(redis.local(0));
//!     let n: u64 = local
//!         .get_or_compute("answer", Duration::from_secs(60), || async {
//!             Ok::<_, std::io::Error>(42)
//!         })
//!         .await
//!         .unwrap();
//!     assert_eq!(n, 42);
//! });
//! ```

mod codec;
mod config;
mod entry;
mod flight;
mod lock;
mod rand;
mod stats;

use std::fmt;
use std::future::Future;
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tidepool_engine::rt::time;

pub use codec::{Codec, Json};
pub use config::{CacheConfig, ConfigError, OnTimeout, DEFAULT_XFETCH_BETA};
pub use stats::CacheStats;

use crate::pool::redis::RedisManager;
use crate::pool::{AcquireError, LocalPool, Pooled};
use crate::redis::{self, SetOptions};
use entry::{Entry, Kind, Meta};
use flight::{Join, LocalFlights, Outcome, Registry};
use rand::Rng;
use stats::LocalStats;

/// How a computation failed, as `get_or_compute` hands it to its callers.
/// Any `Display` error converts into one (a failure of the computation
/// itself); [`ComputeError::unavailable`] marks a failure for lack of
/// capacity instead (a pool that shed the request or timed out), which
/// its callers get as [`CacheError::Unavailable`] and which is never
/// negatively cached: it says nothing about the value.
///
/// ```
/// # use tidepool_drivers::cache::ComputeError;
/// # async fn f(pool: &tidepool_drivers::pool::LocalPool<tidepool_drivers::pool::pg::PgManager>)
/// # -> Result<i64, ComputeError> {
/// let mut c = pool.get().await.map_err(ComputeError::unavailable)?;
/// let row = c.query_one("SELECT 1::int8", &[]).await?;
/// Ok(row.get(0))
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ComputeError {
    message: String,
    unavailable: bool,
}

impl ComputeError {
    /// A computation that could not run for lack of capacity (`e`: a
    /// pool's shed or time-out): its callers get a 503-class
    /// [`CacheError::Unavailable`].
    pub fn unavailable(e: impl fmt::Display) -> ComputeError {
        ComputeError {
            message: e.to_string(),
            unavailable: true,
        }
    }
}

/// A failure of the computation itself (`ComputeError` is not `Display`,
/// so this does not overlap `From<T> for T`).
impl<E: fmt::Display> From<E> for ComputeError {
    fn from(e: E) -> ComputeError {
        ComputeError {
            message: e.to_string(),
            unavailable: false,
        }
    }
}

/// Why `get_or_compute` failed.
///
/// Cloneable and `Send`: one outcome is handed to every caller waiting on
/// the same computation, on any worker.
#[derive(Clone, Debug)]
pub enum CacheError {
    /// The computation failed; every caller waiting on it gets its message
    /// (and so do readers of a negative-cache entry).
    Compute(String),
    /// The computation could not run for lack of capacity
    /// ([`ComputeError::unavailable`]); every caller waiting on it gets
    /// this. Answer it as overload (503 with `Retry-After`), not as a
    /// failure of the value.
    Unavailable(String),
    /// Another process held the lock for the whole wait and
    /// [`OnTimeout::Fail`] is configured.
    LockTimeout {
        /// How long this process waited.
        waited: Duration,
    },
    /// Talking to Redis failed.
    Redis(redis::Error),
    /// No Redis connection could be had from the pool.
    Pool(AcquireError),
    /// The value could not be serialized, or a waiter could not
    /// deserialize what its leader computed (the same key read as two
    /// different types).
    Codec(String),
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::Compute(m) => write!(f, "computing the value failed: {m}"),
            CacheError::Unavailable(m) => write!(f, "the value cannot be computed now: {m}"),
            CacheError::LockTimeout { waited } => write!(
                f,
                "another process held the cache lock for the whole {waited:?} wait"
            ),
            CacheError::Redis(e) => write!(f, "cache: {e}"),
            CacheError::Pool(e) => write!(f, "cache: {e}"),
            CacheError::Codec(m) => write!(f, "cache codec: {m}"),
        }
    }
}

impl std::error::Error for CacheError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CacheError::Redis(e) => Some(e),
            CacheError::Pool(e) => Some(e),
            _ => None,
        }
    }
}

impl CacheError {
    /// Whether the value could not be had for lack of capacity, not because
    /// something is wrong with it: no computation ran (`Unavailable`), the
    /// lock stayed taken (`LockTimeout`), no Redis connection in time
    /// (`Pool`), or Redis is out of reach for now (a transient error: the
    /// connection failed or timed out). Asking again shortly may succeed.
    pub fn is_unavailable(&self) -> bool {
        match self {
            CacheError::Unavailable(_) | CacheError::LockTimeout { .. } | CacheError::Pool(_) => {
                true
            }
            CacheError::Redis(e) => e.is_transient(),
            CacheError::Compute(_) | CacheError::Codec(_) => false,
        }
    }
}

/// A handler can return a cache error as it is (`?` on `get_or_compute`):
/// what [`is_unavailable`](CacheError::is_unavailable) says is a 503 with
/// `Retry-After: 1`; a failed computation, a Redis error reply or a codec
/// failure is a 500. The message goes in the body, through the router's
/// error renderer.
impl tidepool_engine::http::IntoResponse for CacheError {
    fn into_response(self) -> tidepool_engine::http::Response {
        use tidepool_engine::http::{Response, Status};
        if self.is_unavailable() {
            crate::pool::try_again_soon(&self.to_string())
        } else {
            Response::error(Status::INTERNAL_SERVER_ERROR, &self.to_string())
        }
    }
}

impl From<redis::Error> for CacheError {
    fn from(e: redis::Error) -> CacheError {
        CacheError::Redis(e)
    }
}

struct Inner<C> {
    name: String,
    config: CacheConfig,
    codec: C,
    registry: Arc<Registry>,
    locals: Mutex<Vec<Arc<LocalStats>>>,
}

/// A cache declared once for all workers: configuration, the cross-worker
/// registry of computations in flight, and every worker's counters. Cheap
/// to clone, `Send + Sync`; each worker builds its handle with
/// [`Cache::local`].
pub struct Cache<C: Codec = Json> {
    inner: Arc<Inner<C>>,
}

impl<C: Codec> Clone for Cache<C> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
        }
    }
}

impl Cache<Json> {
    /// A JSON cache; `name` labels its metrics.
    pub fn new(name: impl Into<String>, config: CacheConfig) -> Result<Cache<Json>, ConfigError> {
        Cache::with_codec(name, config, Json)
    }
}

impl<C: Codec> Cache<C> {
    /// A cache with another serde format.
    pub fn with_codec(
        name: impl Into<String>,
        config: CacheConfig,
        codec: C,
    ) -> Result<Cache<C>, ConfigError> {
        config.validate()?;
        Ok(Cache {
            inner: Arc::new(Inner {
                name: name.into(),
                config,
                codec,
                registry: Arc::default(),
                locals: Mutex::default(),
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// This worker's handle, over its shard of a Redis pool. Build one per
    /// worker and share it among the worker's tasks (it is cheap to clone):
    /// callers on the same handle wait on each other without locks.
    pub fn local(&self, pool: LocalPool<RedisManager>) -> LocalCache<C> {
        let stats = Arc::new(LocalStats::default());
        self.inner
            .locals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(stats.clone());
        LocalCache {
            inner: Rc::new(LocalInner {
                cache: self.clone(),
                pool,
                flights: Rc::default(),
                stats,
                rng: Rng::new(),
            }),
        }
    }

    /// Counters and the lock-wait histogram, summed over every handle.
    pub fn stats(&self) -> CacheStats {
        let mut t = CacheStats {
            name: self.inner.name.clone(),
            ..CacheStats::default()
        };
        let locals = self
            .inner
            .locals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for s in locals.iter() {
            s.add_to(&mut t);
        }
        t
    }

    /// Keys this process is computing (or waiting on another process for)
    /// right now.
    pub fn in_flight(&self) -> usize {
        self.inner.registry.len()
    }
}

struct LocalInner<C: Codec> {
    cache: Cache<C>,
    pool: LocalPool<RedisManager>,
    flights: Rc<LocalFlights>,
    stats: Arc<LocalStats>,
    rng: Rng,
}

/// A worker's handle on a [`Cache`]. Cheap to clone; never leaves its
/// worker.
pub struct LocalCache<C: Codec = Json> {
    inner: Rc<LocalInner<C>>,
}

impl<C: Codec> Clone for LocalCache<C> {
    fn clone(&self) -> Self {
        LocalCache {
            inner: self.inner.clone(),
        }
    }
}

struct Keys {
    value: String,
}

impl Keys {
    /// Built only on the paths that lock: a hit allocates one key.
    fn lock(&self) -> String {
        format!("lock:{}", self.value)
    }
}

/// An entry read from Redis that this code can use.
struct Found<T> {
    entry: Entry,
    value: Result<T, String>,
}

impl<T> Found<T> {
    fn outcome(&self) -> Outcome {
        match &self.value {
            Ok(_) => Ok(Arc::from(self.entry.payload())),
            Err(m) => Err(CacheError::Compute(m.clone())),
        }
    }

    fn into_result(self) -> Result<T, CacheError> {
        self.value.map_err(CacheError::Compute)
    }
}

/// What a leader ends with: the outcome its waiters share, and its own
/// result (the value itself, not decoded again).
struct Led<T> {
    shared: Outcome,
    mine: Result<T, CacheError>,
}

impl<T> Led<T> {
    fn err(e: CacheError) -> Led<T> {
        Led {
            shared: Err(e.clone()),
            mine: Err(e),
        }
    }

    fn found(f: Found<T>) -> Led<T> {
        Led {
            shared: f.outcome(),
            mine: f.into_result(),
        }
    }
}

impl<C: Codec> LocalCache<C> {
    /// The shared declaration.
    pub fn cache(&self) -> &Cache<C> {
        &self.inner.cache
    }

    fn config(&self) -> &CacheConfig {
        &self.inner.cache.inner.config
    }

    fn codec(&self) -> &C {
        &self.inner.cache.inner.codec
    }

    fn keys(&self, key: &str) -> Keys {
        let value = format!("{}{key}", self.config().key_prefix);
        Keys { value }
    }

    async fn conn(&self) -> Result<Pooled<RedisManager>, CacheError> {
        self.inner.pool.get().await.map_err(CacheError::Pool)
    }

    /// The value cached under `key`, or the one `compute` produces, which
    /// is then cached for `ttl`.
    ///
    /// On a miss, `compute` runs in at most one caller per process at a
    /// time, and in one process at a time while the lock's lease lasts;
    /// the other callers get the same value (or the same error). A caller
    /// whose `compute` is not needed never calls it.
    ///
    /// `ttl` is rounded down to whole milliseconds, at least 1.
    pub async fn get_or_compute<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Duration,
        compute: F,
    ) -> Result<T, CacheError>
    where
        T: Serialize + DeserializeOwned,
        E: Into<ComputeError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let ttl = ttl.max(Duration::from_millis(1));
        let keys = self.keys(key);
        let mut compute = Some(compute);
        let stats = &self.inner.stats;
        if let Some(found) = self.read::<T>(&keys).await? {
            if let Some(beta) = self.config().xfetch_beta {
                let u = self.inner.rng.unit();
                if found.value.is_ok() && found.entry.meta.should_refresh(entry::unix_ms(), beta, u)
                {
                    let seen = found.entry.meta;
                    if let Some(v) = self
                        .refresh_early(key, &keys, ttl, seen, &mut compute)
                        .await
                    {
                        stats.hit();
                        return Ok(v);
                    }
                }
            }
            stats.hit();
            return found.into_result();
        }
        stats.miss();
        self.miss(key, &keys, ttl, &mut compute).await
    }

    /// Deletes the cached value (or cached error) of `key`. A computation
    /// in flight still stores its result when it ends.
    pub async fn invalidate(&self, key: &str) -> Result<(), CacheError> {
        let keys = self.keys(key);
        self.conn().await?.del(&[&keys.value]).await?;
        Ok(())
    }

    /// `None` for an absent key, and for one this code cannot read (another
    /// format, or a value of another type): recomputing overwrites it.
    async fn read<T: DeserializeOwned>(&self, keys: &Keys) -> Result<Option<Found<T>>, CacheError> {
        let raw: Option<Vec<u8>> = self.conn().await?.get(&keys.value).await?;
        let Some(entry) = raw.and_then(entry::decode) else {
            return Ok(None);
        };
        let value = match entry.kind {
            Kind::Value => match self.codec().decode::<T>(entry.payload()) {
                Ok(v) => Ok(v),
                Err(_) => return Ok(None),
            },
            Kind::Error => Err(String::from_utf8_lossy(entry.payload()).into_owned()),
        };
        Ok(Some(Found { entry, value }))
    }

    fn decode<T: DeserializeOwned>(&self, o: Outcome) -> Result<T, CacheError> {
        self.codec().decode(&o?).map_err(CacheError::Codec)
    }

    async fn miss<T, E, F, Fut>(
        &self,
        key: &str,
        keys: &Keys,
        ttl: Duration,
        compute: &mut Option<F>,
    ) -> Result<T, CacheError>
    where
        T: Serialize + DeserializeOwned,
        E: Into<ComputeError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let registry = &self.inner.cache.inner.registry;
        let mut waited: Option<Duration> = None;
        let mut wait = |d: Duration| *waited.get_or_insert(Duration::ZERO) += d;
        let result = loop {
            let local = match self.inner.flights.join(key) {
                Join::Wait(w) => {
                    let t0 = Instant::now();
                    let waiting = self.inner.stats.start_waiting();
                    let r = w.await;
                    drop(waiting);
                    wait(t0.elapsed());
                    match r {
                        Some(o) => break self.decode(o),
                        // The leader was dropped: start over; one of the
                        // callers that were waiting leads now.
                        None => continue,
                    }
                }
                Join::Lead(l) => l,
            };
            break loop {
                match registry.join(key) {
                    Join::Wait(w) => {
                        let t0 = Instant::now();
                        let waiting = self.inner.stats.start_waiting();
                        let r = w.await;
                        drop(waiting);
                        wait(t0.elapsed());
                        if let Some(o) = r {
                            local.finish(o.clone());
                            break self.decode(o);
                        }
                    }
                    Join::Lead(global) => {
                        let mut redis_wait = Duration::ZERO;
                        let led = self.lead(keys, ttl, compute, &mut redis_wait).await;
                        if !redis_wait.is_zero() {
                            wait(redis_wait);
                        }
                        global.finish(led.shared.clone());
                        local.finish(led.shared);
                        break led.mine;
                    }
                }
            };
        };
        if let Some(d) = waited {
            self.inner.stats.waited(d);
        }
        result
    }

    /// The process's leader for a key: takes the Redis lock and computes,
    /// or waits for the process that holds it.
    async fn lead<T, E, F, Fut>(
        &self,
        keys: &Keys,
        ttl: Duration,
        compute: &mut Option<F>,
        waited: &mut Duration,
    ) -> Led<T>
    where
        T: Serialize + DeserializeOwned,
        E: Into<ComputeError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let cfg = self.config();
        let mut wait_start: Option<Instant> = None;
        let mut waiting = None;
        let mut polls = 0u32;
        let lock_key = keys.lock();
        loop {
            match lock::try_acquire(&self.inner.pool, &lock_key, cfg.lease).await {
                Err(e) => return Led::err(e),
                Ok(Some(lock)) => {
                    if let Some(s) = wait_start {
                        *waited = s.elapsed();
                    }
                    drop(waiting);
                    // The previous holder may have stored the value between
                    // this caller's miss and its lock.
                    let led = match self.read::<T>(keys).await {
                        Ok(Some(found)) => Led::found(found),
                        Ok(None) => self.compute_and_store(keys, ttl, compute, true).await,
                        Err(e) => Led::err(e),
                    };
                    // A failed release leaves the lock to its lease.
                    let _ = lock.release().await;
                    return led;
                }
                Ok(None) => {}
            }
            let now = Instant::now();
            let start = *wait_start.get_or_insert(now);
            waiting.get_or_insert_with(|| self.inner.stats.start_waiting());
            let deadline = start + cfg.wait_timeout;
            if now >= deadline {
                *waited = now - start;
                drop(waiting);
                self.inner.stats.lock_timeout();
                return match cfg.on_timeout {
                    OnTimeout::Fail => Led::err(CacheError::LockTimeout {
                        waited: now - start,
                    }),
                    OnTimeout::Compute => self.compute_and_store(keys, ttl, compute, true).await,
                };
            }
            polls += 1;
            time::sleep(self.poll_delay(polls).min(deadline - now)).await;
            match self.read::<T>(keys).await {
                Ok(None) => {}
                Ok(Some(found)) => {
                    *waited = start.elapsed();
                    return Led::found(found);
                }
                Err(e) => {
                    *waited = start.elapsed();
                    return Led::err(e);
                }
            }
        }
    }

    /// Doubling from `poll_min` to `poll_max`, then "equal jitter": half
    /// fixed, so a waiter never hammers Redis, half random, so waiters
    /// that started together drift apart.
    fn poll_delay(&self, n: u32) -> Duration {
        let cfg = self.config();
        let base = cfg
            .poll_min
            .saturating_mul(1u32 << n.saturating_sub(1).min(20))
            .min(cfg.poll_max);
        base / 2 + (base / 2).mul_f64(self.inner.rng.unit())
    }

    async fn compute_and_store<T, E, F, Fut>(
        &self,
        keys: &Keys,
        ttl: Duration,
        compute: &mut Option<F>,
        cache_errors: bool,
    ) -> Led<T>
    where
        T: Serialize + DeserializeOwned,
        E: Into<ComputeError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        // Every path that computes returns right after, so this runs once
        // per call.
        let f = compute.take().expect("compute runs at most once");
        self.inner.stats.compute();
        let t0 = Instant::now();
        let r = f().await;
        let delta = t0.elapsed();
        match r {
            Ok(v) => match self.codec().encode(&v) {
                Ok(bytes) => {
                    let raw = entry::encode(Kind::Value, Meta::new(delta, ttl), &bytes);
                    self.store(&keys.value, raw, ttl).await;
                    Led {
                        shared: Ok(bytes.into()),
                        mine: Ok(v),
                    }
                }
                Err(e) => Led::err(CacheError::Codec(e)),
            },
            Err(e) => {
                let ComputeError {
                    message,
                    unavailable,
                } = e.into();
                if unavailable {
                    return Led::err(CacheError::Unavailable(message));
                }
                if let (true, Some(nttl)) = (cache_errors, self.config().negative_ttl) {
                    let raw =
                        entry::encode(Kind::Error, Meta::new(delta, nttl), message.as_bytes());
                    self.store(&keys.value, raw, nttl).await;
                }
                Led::err(CacheError::Compute(message))
            }
        }
    }

    /// A failed write is counted, not returned: the callers have their
    /// value, and the next miss computes again.
    async fn store(&self, key: &str, raw: Vec<u8>, ttl: Duration) {
        let opts = SetOptions::new().px(ttl.as_millis().max(1) as u64);
        let stored = match self.conn().await {
            Ok(c) => c.set_with::<bool>(key, raw, opts).await.is_ok(),
            Err(_) => false,
        };
        if !stored {
            self.inner.stats.store_failure();
        }
    }

    /// XFetch chose this reader to refresh a still-valid value. It does so
    /// only if nobody in the process is computing the key and it wins the
    /// Redis lock; otherwise (`None`) the reader just uses what it read.
    async fn refresh_early<T, E, F, Fut>(
        &self,
        key: &str,
        keys: &Keys,
        ttl: Duration,
        seen: Meta,
        compute: &mut Option<F>,
    ) -> Option<T>
    where
        T: Serialize + DeserializeOwned,
        E: Into<ComputeError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let local = self.inner.flights.try_lead(key)?;
        let global = self.inner.cache.inner.registry.try_lead(key)?;
        let lock =
            match lock::try_acquire(&self.inner.pool, &keys.lock(), self.config().lease).await {
                Ok(Some(l)) => l,
                _ => return None,
            };
        let led = match self.read::<T>(keys).await {
            // Refreshed by another process since this reader looked.
            Ok(Some(found)) if found.entry.meta != seen => Led::found(found),
            Ok(_) => {
                self.inner.stats.early_refresh();
                // An error must not replace a value that is still valid.
                self.compute_and_store(keys, ttl, compute, false).await
            }
            Err(e) => Led::err(e),
        };
        let _ = lock.release().await;
        global.finish(led.shared.clone());
        local.finish(led.shared);
        // A failed refresh still leaves the reader its valid value.
        led.mine.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_error_answers_503_with_retry_after_only_when_asking_again_can_help() {
        use tidepool_engine::http::{IntoResponse, Status};
        let unavailable = [
            CacheError::Unavailable("pool pg: overloaded".into()),
            CacheError::LockTimeout {
                waited: Duration::from_secs(1),
            },
            CacheError::Pool(AcquireError::Connect {
                pool: "redis".into(),
                message: "refused".into(),
            }),
            CacheError::Redis(redis::Error::Timeout),
            CacheError::Redis(redis::Error::Closed),
        ];
        for e in unavailable {
            assert!(e.is_unavailable(), "{e}");
            let r = e.into_response();
            assert_eq!(r.status, Status::SERVICE_UNAVAILABLE);
            assert!(r
                .headers
                .iter()
                .any(|(n, v)| *n == "Retry-After" && v == "1"));
        }
        let failed = [
            CacheError::Compute("division by zero".into()),
            CacheError::Codec("expected a map".into()),
            CacheError::Redis(redis::Error::Protocol("garbage".into())),
            CacheError::Redis(redis::Error::Tls {
                message: "unknown CA".into(),
                fatal: true,
            }),
        ];
        for e in failed {
            assert!(!e.is_unavailable(), "{e}");
            let r = e.into_response();
            assert_eq!(r.status, Status::INTERNAL_SERVER_ERROR);
            assert!(r.headers.iter().all(|(n, _)| *n != "Retry-After"));
        }
    }

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn declarations_and_outcomes_cross_threads() {
        // One `Cache` is declared for all workers, and one outcome is handed
        // to waiters on every worker.
        send_sync::<Cache>();
        send_sync::<CacheError>();
        send_sync::<CacheStats>();
    }
}
