//! Pool telemetry: per-shard counters and gauges that the owning worker
//! writes (relaxed load + store, no locked instructions) and any thread
//! reads; `PoolStats` is their sum.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::histogram::{AtomicHistogram, Histogram};

/// Why a connection was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// I/O or protocol error, or left unusable (failed transaction).
    Broken,
    /// Past `max_lifetime`.
    Expired,
    /// Idle past `idle_timeout`.
    Idle,
    /// Over the shard's cap after a shrink.
    Shrink,
    /// Failed its health check.
    FailedCheck,
}

impl CloseReason {
    pub const ALL: [CloseReason; 5] = [
        CloseReason::Broken,
        CloseReason::Expired,
        CloseReason::Idle,
        CloseReason::Shrink,
        CloseReason::FailedCheck,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Broken => "broken",
            CloseReason::Expired => "expired",
            CloseReason::Idle => "idle",
            CloseReason::Shrink => "shrink",
            CloseReason::FailedCheck => "failed_check",
        }
    }
}

/// Why a connect failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectFailure {
    /// Worth retrying: refused, reset, timeout, "too many connections".
    Transient,
    /// Not retried: authentication, missing database.
    Fatal,
    /// The connect budget ran out.
    Timeout,
}

#[derive(Default)]
pub(crate) struct ShardStats {
    /// The cap the shard runs with (set by the shard when it applies one).
    pub(crate) cap: AtomicU64,
    /// The cap last asked for by `set_max_open`; a shard created later
    /// starts from it.
    pub(crate) target_cap: AtomicU64,
    pub(crate) open: AtomicU64,
    pub(crate) idle: AtomicU64,
    pub(crate) in_use: AtomicU64,
    pub(crate) opening: AtomicU64,
    pub(crate) waiting: AtomicU64,
    /// The most callers busy or waiting at once since the last
    /// `Pool::take_peak_demand` (what a fleet lease asks for).
    pub(crate) peak_demand: AtomicU64,
    pub(crate) down: AtomicU64,
    pub(crate) probing: AtomicU64,
    pub(crate) acquires: AtomicU64,
    pub(crate) acquire_timeouts: AtomicU64,
    pub(crate) fast_failures: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) connect_failures: [AtomicU64; 3],
    pub(crate) closes: [AtomicU64; 5],
    pub(crate) leaks: AtomicU64,
    pub(crate) query_errors: AtomicU64,
    pub(crate) query_timeouts: AtomicU64,
    /// Waiters turned away by the queue's discipline, by class and reason.
    pub(crate) sheds: [[AtomicU64; 2]; 3],
    pub(crate) acquire_wait: AtomicHistogram,
    pub(crate) hold: AtomicHistogram,
    /// Statement latency, send to reply, recorded by the connections.
    pub(crate) query_latency: Arc<AtomicHistogram>,
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

pub(crate) fn set(c: &AtomicU64, v: usize) {
    c.store(v as u64, Relaxed);
}

impl ShardStats {
    pub(crate) fn connect_failed(&self, why: ConnectFailure) {
        add(&self.connect_failures[why as usize], 1);
    }

    pub(crate) fn closed(&self, why: CloseReason) {
        add(&self.closes[why as usize], 1);
    }

    pub(crate) fn snapshot(&self) -> ShardSnapshot {
        let g = |a: &AtomicU64| a.load(Relaxed);
        ShardSnapshot {
            cap: g(&self.cap) as usize,
            target_cap: g(&self.target_cap) as usize,
            open: g(&self.open) as usize,
            idle: g(&self.idle) as usize,
            in_use: g(&self.in_use) as usize,
            opening: g(&self.opening) as usize,
            waiting: g(&self.waiting) as usize,
            down: g(&self.down) as usize,
            probing: g(&self.probing) as usize,
            acquires: g(&self.acquires),
            acquire_timeouts: g(&self.acquire_timeouts),
            fast_failures: g(&self.fast_failures),
            connects: g(&self.connects),
            connect_failures: [
                g(&self.connect_failures[0]),
                g(&self.connect_failures[1]),
                g(&self.connect_failures[2]),
            ],
            closes: std::array::from_fn(|i| g(&self.closes[i])),
            leaks: g(&self.leaks),
            query_errors: g(&self.query_errors),
            query_timeouts: g(&self.query_timeouts),
            sheds: std::array::from_fn(|c| std::array::from_fn(|r| g(&self.sheds[c][r]))),
            acquire_wait: self.acquire_wait.snapshot(),
            hold: self.hold.snapshot(),
            query_latency: self.query_latency.snapshot(),
        }
    }
}

/// One shard (worker) of a pool at one moment.
#[derive(Clone, Debug, Default)]
pub struct ShardSnapshot {
    /// The cap this shard runs with now.
    pub cap: usize,
    /// The cap asked for by the last resize (the shard applies it on its
    /// next loop turn); these always sum to the pool's `max_open`.
    pub target_cap: usize,
    pub open: usize,
    pub idle: usize,
    pub in_use: usize,
    pub opening: usize,
    pub waiting: usize,
    /// Shards (workers) that found the database unreachable with nothing
    /// open: their callers fail fast.
    pub down: usize,
    /// Shards whose probe connect runs or is scheduled.
    pub probing: usize,
    pub acquires: u64,
    pub acquire_timeouts: u64,
    /// Acquires answered at once with the last connect error while down.
    pub fast_failures: u64,
    pub connects: u64,
    /// Indexed by `ConnectFailure as usize`.
    pub connect_failures: [u64; 3],
    /// Indexed by `CloseReason as usize`.
    pub closes: [u64; 5],
    pub leaks: u64,
    /// Statements (commands) that failed at the database, integrity
    /// violations excepted (see `Manager::outcomes`).
    pub query_errors: u64,
    /// Statements (commands) that ran past the query timeout.
    pub query_timeouts: u64,
    /// Waiters turned away by the queue's discipline, indexed by
    /// `[Class as usize][ShedReason as usize]` (see `pool::discipline`).
    pub sheds: [[u64; 2]; 3],
    /// Cumulative acquire-wait histogram (every acquire, waited or not).
    pub acquire_wait: Histogram,
    /// Cumulative hold-time histogram: checkout to return (exclusive pools),
    /// or command latency (multiplexed pools).
    pub hold: Histogram,
    /// Cumulative statement latency, send to reply (empty for connection
    /// kinds that do not record it).
    pub query_latency: Histogram,
}

/// A whole pool: the sum of its shards, plus each shard.
#[derive(Clone, Debug, Default)]
pub struct PoolStats {
    pub name: String,
    pub max_open: usize,
    pub total: ShardSnapshot,
    pub shards: Vec<ShardSnapshot>,
}

impl PoolStats {
    pub(crate) fn from_shards(
        name: &str,
        max_open: usize,
        shards: Vec<ShardSnapshot>,
    ) -> PoolStats {
        let mut t = ShardSnapshot::default();
        for s in &shards {
            t.cap += s.cap;
            t.target_cap += s.target_cap;
            t.open += s.open;
            t.idle += s.idle;
            t.in_use += s.in_use;
            t.opening += s.opening;
            t.waiting += s.waiting;
            t.down += s.down;
            t.probing += s.probing;
            t.acquires += s.acquires;
            t.acquire_timeouts += s.acquire_timeouts;
            t.fast_failures += s.fast_failures;
            t.connects += s.connects;
            for i in 0..3 {
                t.connect_failures[i] += s.connect_failures[i];
            }
            for i in 0..5 {
                t.closes[i] += s.closes[i];
            }
            t.leaks += s.leaks;
            t.query_errors += s.query_errors;
            t.query_timeouts += s.query_timeouts;
            for c in 0..3 {
                for r in 0..2 {
                    t.sheds[c][r] += s.sheds[c][r];
                }
            }
            t.acquire_wait.merge(&s.acquire_wait);
            t.hold.merge(&s.hold);
            t.query_latency.merge(&s.query_latency);
        }
        PoolStats {
            name: name.to_string(),
            max_open,
            total: t,
            shards,
        }
    }
}
