//! Connection pools: one pool declared once, living as one shard per worker.
//!
//! Each connection belongs to the worker whose ring it lives on; handlers
//! acquire from their own worker's shard ([`LocalPool`]), so a checkout never
//! crosses threads or takes a lock. `max_open` is the total across workers:
//! the shards' caps never sum to more, and [`Pool::set_max_open`] moves it at
//! run time (growing lets waiters connect at once; shrinking closes idle
//! connections first and retires busy ones as they come back). Capacity
//! follows demand: a shard with callers waiting and no room borrows a unit
//! of cap from a shard that is not using it (never opened, or a connection
//! idle for 200 ms, which it closes), so a machine with more workers than
//! connections serves every worker's callers instead of timing out those
//! whose even share was 0. It cannot help where more workers than there
//! are connections all keep theirs busy: then the borrowers wait.
//!
//! Two checkout modes share one implementation:
//! - exclusive (PostgreSQL): a connection serves one caller at a time;
//! - multiplexed (Redis, shared PostgreSQL): many callers share a
//!   connection, up to `max_in_flight` each; "acquire" takes an in-flight
//!   slot, and acquire-wait is the wait for one. A caller gets the busiest
//!   connection that still has room, so what the handlers of one loop turn
//!   issue leaves in one write and the server answers it as one batch;
//!   further connections carry only the overflow (packing rather than
//!   spreading measured 0.87x the CPU per request on the example's /db,
//!   paired median of 9 rounds).

mod backoff;
mod config;
pub mod discipline;

pub use discipline::{Class, QueueConfig, QueueMode, ShedReason};
mod histogram;
pub mod pg;
pub mod redis;
mod shard;
mod stats;
pub mod supervised;
mod warmup;

use std::any::Any;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidepool_engine::rt::{self, WorkerHandle};

pub use backoff::{retry_within, Backoff};
pub use config::{split, ConfigError, PoolConfig};
pub use histogram::AtomicHistogram;
pub use histogram::Histogram;
pub use shard::Pooled;
pub use stats::{CloseReason, ConnectFailure, PoolStats, ShardSnapshot};
pub use warmup::{warmup_plan, WarmupStep};

use shard::Shard;
use stats::ShardStats;

/// Errors a pool must classify: transient ones are retried with back-off,
/// the others (authentication, missing database) surface at once.
pub trait PoolError: std::error::Error + 'static {
    fn is_transient(&self) -> bool;
}

/// How a pool makes, checks and shares its connections.
pub trait Manager: Send + Sync + 'static {
    type Conn: 'static;
    type Error: PoolError;

    /// Multiplexed pools share each connection among many callers.
    const MULTIPLEXED: bool = false;

    /// Opens one connection on the current worker.
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, Self::Error>>;

    /// False once the connection must never be handed out again (broken,
    /// or left inside a failed transaction).
    fn is_usable(&self, conn: &Self::Conn) -> bool;

    /// A cheap liveness check for a connection that sat idle.
    fn check(&self, conn: &mut Self::Conn) -> impl Future<Output = Result<(), Self::Error>>;

    /// Whether an idle connection is still usable by what its socket
    /// already holds (the server closed it, or sent a FATAL while it sat
    /// idle), without a round trip. Run at every checkout of an exclusive
    /// connection, and of a shared one that none of this worker's callers
    /// is using (a shared connection still owed replies may answer `true`
    /// without looking: its reader sees the end with them).
    fn poll_idle(&self, _conn: &mut Self::Conn) -> bool {
        true
    }

    /// Another handle to a shared connection (multiplexed pools only).
    fn share(&self, _conn: &Self::Conn) -> Self::Conn {
        unreachable!("share() is only called on multiplexed pools")
    }

    /// Statements (or commands) on `conn` so far that failed at the
    /// database and that timed out, as running totals; the pool counts the
    /// growth of each per connection. `(0, 0)` when a kind does not tell.
    fn outcomes(&self, _conn: &Self::Conn) -> (u64, u64) {
        (0, 0)
    }

    /// Asks a new connection to record each statement's latency, from
    /// send to reply, into `sink` (the shard's). Kinds that cannot leave
    /// it empty, and the pool reads hold time per checkout instead.
    fn record_latency(&self, _conn: &mut Self::Conn, _sink: &Arc<AtomicHistogram>) {}

    /// A handle to shared connection `conn` that another worker can use,
    /// its operations delegated to this worker (multiplexed pools whose
    /// connections support it); `None` if this kind cannot.
    /// Whether other workers hold handles to `conn` (see `export`): it is
    /// in use though none of its owner's callers has it.
    fn used_elsewhere(&self, _conn: &Self::Conn) -> bool {
        false
    }

    fn export(&self, _conn: &Self::Conn) -> Option<Box<dyn Any + Send>> {
        None
    }

    /// The other worker's side of [`Manager::export`].
    fn import(&self, _exported: Box<dyn Any + Send>) -> Option<Self::Conn> {
        None
    }

    /// An optional cluster-wide gate held while this shard warms up (for
    /// example one of N advisory-lock slots); dropped when warm-up ends.
    fn warmup_gate(&self) -> impl Future<Output = Option<Box<dyn Any>>> {
        async { None }
    }

    /// Names the cluster gate `warmup_gate` takes a slot of: pools of one
    /// process that name the same one take a single slot between them.
    /// `None`: this pool's gate is its own.
    fn warmup_key(&self) -> Option<String> {
        None
    }
}

/// Why `get()` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireError {
    /// No connection within `acquire_timeout`. Names the pool's state and
    /// the last connect error, so a wrong password never reads as a bare
    /// time-out.
    Timeout {
        pool: String,
        max_open: usize,
        waited: Duration,
        open: usize,
        in_use: usize,
        idle: usize,
        waiting: usize,
        last_connect_error: Option<String>,
    },
    /// Connecting failed with an error that retrying cannot fix.
    Connect { pool: String, message: String },
    /// Turned away by the queue's discipline under overload (a standing
    /// queue, or a deadline the wait could not meet): answer fast, with a
    /// `Retry-After`, rather than late.
    Shed {
        pool: String,
        class: discipline::Class,
        reason: discipline::ShedReason,
        waited: Duration,
    },
}

impl AcquireError {
    /// Whether this acquire was shed under overload.
    pub fn is_shed(&self) -> bool {
        matches!(self, AcquireError::Shed { .. })
    }
}

impl std::fmt::Display for AcquireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcquireError::Timeout {
                pool,
                max_open,
                waited,
                open,
                in_use,
                idle,
                waiting,
                last_connect_error,
            } => {
                write!(
                    f,
                    "pool {pool}: no connection after {waited:?} (max_open {max_open}, open {open}, \
                     in use {in_use}, idle {idle}, waiting {waiting})"
                )?;
                if let Some(e) = last_connect_error {
                    write!(f, "; last connect error: {e}")?;
                }
                Ok(())
            }
            AcquireError::Connect { pool, message } => {
                write!(f, "pool {pool}: cannot connect: {message}")
            }
            AcquireError::Shed {
                pool,
                class,
                reason,
                waited,
            } => match reason {
                ShedReason::Standing => write!(
                    f,
                    "pool {pool}: overloaded, {class} request shed after {waited:?} in a standing queue"
                ),
                ShedReason::Deadline => write!(
                    f,
                    "pool {pool}: overloaded, {class} request shed: no connection could come before its deadline"
                ),
            },
        }
    }
}

impl std::error::Error for AcquireError {}

/// A handler can return an acquire error as it is (`?` on
/// `pool.get()`): 503 with `Retry-After: 1`, the message in the body
/// (through the router's error renderer).
impl tidepool_engine::http::IntoResponse for AcquireError {
    fn into_response(self) -> tidepool_engine::http::Response {
        try_again_soon(&self.to_string())
    }
}

/// The answer to a request turned away for lack of capacity: 503 with
/// `Retry-After: 1` (asking again shortly may succeed), `message` in the
/// body through the router's error renderer.
pub(crate) fn try_again_soon(message: &str) -> tidepool_engine::http::Response {
    tidepool_engine::http::Response::error(
        tidepool_engine::http::Status::SERVICE_UNAVAILABLE,
        message,
    )
    .with_header("Retry-After", "1")
}

static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct PoolInner<M: Manager> {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) config: PoolConfig,
    pub(crate) manager: M,
    max_open: AtomicUsize,
    /// What `set_max_open` asked for and the ceiling from outside (a fleet
    /// lease), applied together: `max_open` is the smaller.
    sizing: Mutex<Sizing>,
    pub(crate) shards: Vec<Arc<ShardStats>>,
    pub(crate) workers: Mutex<Vec<Option<WorkerHandle>>>,
    /// Bumped by every `set_max_open`: capacity lent between shards under
    /// an older split is not applied after a newer one (see `shard::lend`).
    pub(crate) cap_epoch: AtomicU64,
    /// The process's hold on the cluster-wide warm-up slot.
    pub(crate) warmup_gate: Arc<warmup::ProcessGate>,
    /// The connect error of the last shard that found the database out of
    /// reach: what a shard with no connection of its own tells its callers
    /// while the pool is down (see `shard::Shard::pool_down`).
    pub(crate) outage: Mutex<Option<String>>,
    /// A shard without capacity failed a caller fast: the probing shard
    /// keeps probing as if its own caller had asked.
    pub(crate) asked_elsewhere: std::sync::atomic::AtomicBool,
    /// Connects that succeeded, on any shard: a connect attempt that fails
    /// after another shard's succeeded (it began before the database came
    /// back) is stale evidence of an outage.
    pub(crate) connects_ok: AtomicU64,
    /// `connects_ok` when a shard last found the database out of reach:
    /// once it has moved on, the outage is over for every shard, even one
    /// whose own connect (or news of another's) has not landed yet.
    pub(crate) outage_ok: AtomicU64,
}

/// The two inputs of a pool's `max_open`.
#[derive(Debug)]
struct Sizing {
    requested: usize,
    ceiling: Option<usize>,
}

/// A pool declared once for all workers. Cheap to clone, `Send + Sync`:
/// the supervisor holds one to read stats and resize. Each worker takes its
/// shard with [`Pool::local`] on its own thread (`tidepool::app::App` does
/// all of this for an application).
///
/// ```no_run
/// use tidepool_drivers::pg::Config;
/// use tidepool_drivers::pool::pg::PgManager;
/// use tidepool_drivers::pool::{Pool, PoolConfig};
/// use tidepool_engine::rt;
///
/// let cfg: Config = "postgres://app@127.0.0.1/app".parse().unwrap();
/// let config = PoolConfig { max_open: 4, ..PoolConfig::default() };
/// let pool = Pool::new("pg", config, PgManager::new(cfg), 1).unwrap();
/// let todos: i64 = rt::block_on(async move {
///     let shard = pool.local(0); // on worker 0's thread
///     let mut c = shard.get_for("/count").await.unwrap();
///     c.query_one("SELECT count(*) FROM todos", &[]).await.unwrap().get(0)
/// });
/// # let _ = todos;
/// ```
pub struct Pool<M: Manager> {
    inner: Arc<PoolInner<M>>,
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
        }
    }
}

impl<M: Manager> Pool<M> {
    /// Declares a pool with one shard per worker.
    pub fn new(
        name: impl Into<String>,
        config: PoolConfig,
        manager: M,
        workers: usize,
    ) -> Result<Pool<M>, ConfigError> {
        config.validate()?;
        let workers = workers.max(1);
        let caps = split(config.max_open, workers);
        let shards: Vec<Arc<ShardStats>> = caps
            .iter()
            .map(|&c| {
                let s = ShardStats::default();
                stats::set(&s.cap, c);
                stats::set(&s.target_cap, c);
                Arc::new(s)
            })
            .collect();
        let warmup_gate = manager
            .warmup_key()
            .map_or_else(Default::default, |k| warmup::process_gate(&k));
        Ok(Pool {
            inner: Arc::new(PoolInner {
                id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
                name: name.into(),
                max_open: AtomicUsize::new(config.max_open),
                sizing: Mutex::new(Sizing {
                    requested: config.max_open,
                    ceiling: None,
                }),
                config,
                manager,
                shards,
                workers: Mutex::new(vec![None; workers]),
                cap_epoch: AtomicU64::new(0),
                warmup_gate,
                outage: Mutex::new(None),
                asked_elsewhere: Default::default(),
                connects_ok: AtomicU64::new(0),
                outage_ok: AtomicU64::new(0),
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    pub fn manager(&self) -> &M {
        &self.inner.manager
    }

    /// Number of shards (workers).
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// This worker's shard. Call it on worker `index`'s thread (for example
    /// in the server's per-worker app builder); the first call starts the
    /// shard's reaper and warm-up there, and every later call on that
    /// thread returns a handle to the same shard.
    ///
    /// # Panics
    /// When the pool was declared for a different number of workers than
    /// the runtime this thread belongs to runs, or `index` is not this
    /// worker's (or this thread already runs another of the pool's
    /// shards): in the server's app builder that fails `serve` with this
    /// message, at startup.
    pub fn local(&self, index: usize) -> LocalPool<M> {
        let shards = self.inner.shards.len();
        if let Some((here, count)) = tidepool_engine::workers::current_worker_index() {
            assert!(
                count == shards && index == here,
                "tidepool: pool {:?} was declared for {shards} workers and asked for shard \
                 {index}, but this is worker {here} of a runtime with {count}: declare the \
                 pool with the server's worker count and call local(info.index)",
                self.inner.name
            );
        }
        assert!(index < shards, "worker index out of range");
        // The shard reads its starting cap under the lock that another
        // shard takes to claim capacity from one not started yet, so a
        // claimed unit is never counted twice.
        let mut workers = self.inner.workers.lock().unwrap();
        let shard = Shard::local(self.inner.clone(), index);
        workers[index] = Some(rt::current_worker());
        drop(workers);
        LocalPool { shard }
    }

    pub fn max_open(&self) -> usize {
        self.inner.max_open.load(Ordering::Relaxed)
    }

    /// Moves `max_open` (at least 1; less only under a ceiling). Each
    /// worker's shard applies its new cap on its own thread, on its next
    /// loop turn.
    pub fn set_max_open(&self, n: usize) {
        let mut sizing = self.inner.sizing.lock().unwrap();
        sizing.requested = n.max(1);
        self.apply(&sizing);
    }

    /// Caps `max_open` from outside whatever `set_max_open` asks (a
    /// fleet's lease: see `tidepool_drivers::fleet`); `Some(0)` lets the
    /// pool open nothing. `None` lifts the ceiling.
    pub fn set_ceiling(&self, ceiling: Option<usize>) {
        let mut sizing = self.inner.sizing.lock().unwrap();
        sizing.ceiling = ceiling;
        self.apply(&sizing);
    }

    /// The ceiling set by [`Pool::set_ceiling`].
    pub fn ceiling(&self) -> Option<usize> {
        self.inner.sizing.lock().unwrap().ceiling
    }

    /// What `set_max_open` (or the configuration) last asked for, before
    /// the ceiling.
    pub fn requested_max_open(&self) -> usize {
        self.inner.sizing.lock().unwrap().requested
    }

    /// Splits the effective `max_open` over the shards; called with the
    /// sizing locked, so concurrent resizes apply in order.
    fn apply(&self, sizing: &Sizing) {
        let n = sizing.requested.min(sizing.ceiling.unwrap_or(usize::MAX));
        self.inner.max_open.store(n, Ordering::Relaxed);
        self.inner.cap_epoch.fetch_add(1, Ordering::SeqCst);
        let caps = split(n, self.inner.shards.len());
        let workers = self.inner.workers.lock().unwrap().clone();
        for (i, cap) in caps.into_iter().enumerate() {
            // Recorded first, so a shard created later starts at the new cap.
            stats::set(&self.inner.shards[i].target_cap, cap);
            if let Some(w) = &workers[i] {
                let id = self.inner.id;
                w.post(move || shard::apply_cap(id, cap));
            }
        }
    }

    /// Counters, gauges and histograms of every shard, summed.
    pub fn stats(&self) -> PoolStats {
        let shards = self.inner.shards.iter().map(|s| s.snapshot()).collect();
        PoolStats::from_shards(&self.inner.name, self.max_open(), shards)
    }

    /// The most callers busy or waiting at once since the last call (each
    /// shard's high-water mark, summed: a burst between two samples of
    /// `stats` is not missed), and starts the next period.
    pub fn take_peak_demand(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.peak_demand.swap(0, std::sync::atomic::Ordering::Relaxed) as usize)
            .sum()
    }
}

/// A worker's shard of a pool; handlers acquire from it.
pub struct LocalPool<M: Manager> {
    shard: Rc<Shard<M>>,
}

impl<M: Manager> Clone for LocalPool<M> {
    fn clone(&self) -> Self {
        LocalPool {
            shard: self.shard.clone(),
        }
    }
}

impl<M: Manager> LocalPool<M> {
    /// A connection (exclusive pools) or an in-flight slot on a shared
    /// connection (multiplexed pools), waiting up to `acquire_timeout` in
    /// the order `PoolConfig::queue` sets (by class, oldest first, until
    /// the queue stands; see
    /// `pool::discipline`).
    pub async fn get(&self) -> Result<Pooled<M>, AcquireError> {
        self.shard.acquire("", Class::Default).await
    }

    /// Like `get`, naming the route that holds the connection in leak
    /// reports; the caller's class under overload is the route's in
    /// `PoolConfig::classes` (`Default` when it is not listed).
    pub async fn get_for(&self, route: &'static str) -> Result<Pooled<M>, AcquireError> {
        self.shard
            .acquire(route, self.shard.route_class(route))
            .await
    }

    /// Like `get_for`, in request class `class`: under overload `Critical`
    /// callers are served first and never shed for a standing queue,
    /// `Sheddable` ones are shed first.
    pub async fn get_as(
        &self,
        route: &'static str,
        class: Class,
    ) -> Result<Pooled<M>, AcquireError> {
        self.shard.acquire(route, class).await
    }

    /// This shard's numbers.
    pub fn stats(&self) -> ShardSnapshot {
        self.shard.stats.snapshot()
    }

    /// This shard's current cap.
    pub fn cap(&self) -> usize {
        self.shard.cap()
    }

    /// Runs the reaper's work once now (tests and tools).
    pub fn reap_now(&self) {
        self.shard.reap();
    }

    /// Checks the shard's books against its connections; panics on any
    /// disagreement (tests).
    pub fn assert_invariants(&self) {
        self.shard.assert_invariants();
    }
}

#[cfg(test)]
mod tests;
