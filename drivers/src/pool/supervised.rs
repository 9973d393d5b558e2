//! How the supervisor sees a pool: per-tick signals computed from two
//! successive snapshots (gauges now; counters and percentiles over the tick).

use std::time::Duration;

use tidepool_supervisor::{Signals, SupervisedPool};

use super::{CloseReason, ConnectFailure, Manager, Pool, PoolStats};

/// A pool handed to the supervisor.
pub struct Probe<M: Manager> {
    pool: Pool<M>,
    prev: Option<PoolStats>,
}

impl<M: Manager> Probe<M> {
    pub fn new(pool: Pool<M>) -> Probe<M> {
        Probe { pool, prev: None }
    }
}

/// Signals from `now` relative to `prev` (the previous tick's snapshot);
/// `queue_target` is the pool's `QueueConfig::target`.
pub fn signals(
    now: &PoolStats,
    prev: Option<&PoolStats>,
    tick: Duration,
    queue_target: Duration,
) -> Signals {
    let t = &now.total;
    let errors = |s: &PoolStats| {
        s.total.connect_failures[ConnectFailure::Transient as usize]
            + s.total.connect_failures[ConnectFailure::Fatal as usize]
            + s.total.connect_failures[ConnectFailure::Timeout as usize]
            + s.total.closes[CloseReason::Broken as usize]
            + s.total.closes[CloseReason::FailedCheck as usize]
            + s.total.query_errors
    };
    let (wait, hold, query, completed, errs, timeouts) = match prev {
        Some(p) => (
            t.acquire_wait.since(&p.total.acquire_wait),
            t.hold.since(&p.total.hold),
            t.query_latency.since(&p.total.query_latency),
            t.acquires.saturating_sub(p.total.acquires),
            errors(now).saturating_sub(errors(p)),
            t.query_timeouts.saturating_sub(p.total.query_timeouts),
        ),
        None => (
            t.acquire_wait.clone(),
            t.hold.clone(),
            t.query_latency.clone(),
            t.acquires,
            errors(now),
            t.query_timeouts,
        ),
    };
    // Waiters shed for a standing queue waited past its limit without
    // being counted as waits: they read as waits of twice the target (a
    // pool too small grows; when the database is the bottleneck the
    // controller's latency and error guards hold it, and say so).
    let standing = |s: &PoolStats| -> u64 {
        s.total
            .sheds
            .iter()
            .map(|c| c[super::ShedReason::Standing as usize])
            .sum()
    };
    let shed = prev.map_or(standing(now), |p| standing(now).saturating_sub(standing(p)));
    let acquire_wait_p99 = if shed > 0 {
        wait.quantile(0.99).max(queue_target * 2)
    } else {
        wait.quantile(0.99)
    };
    Signals {
        max_open: now.max_open,
        open: t.open,
        // Connections busy (for multiplexed pools `in_use` counts commands).
        in_use: t.open - t.idle.min(t.open),
        idle: t.idle.min(t.open),
        waiting: t.waiting,
        acquire_wait_p99,
        // Statement latency from send to reply where the connections
        // record it (PostgreSQL); else hold time per checkout, which is the
        // command's round trip on a multiplexed connection (Redis).
        query_p99: if query.total > 0 {
            query.quantile(0.99)
        } else {
            hold.quantile(0.99)
        },
        completed,
        errors: errs,
        timeouts,
        tick,
        ceiling: None,
    }
}

impl<M: Manager> SupervisedPool for Probe<M> {
    fn name(&self) -> &str {
        self.pool.name()
    }

    fn signals(&mut self, tick: Duration) -> Signals {
        let now = self.pool.stats();
        let target = self.pool.config().queue.target;
        let mut s = signals(&now, self.prev.as_ref(), tick, target);
        s.ceiling = self.pool.ceiling();
        self.prev = Some(now);
        s
    }

    /// What the supervisor asked for: under a fleet's ceiling the pool's
    /// effective `max_open` may be lower.
    fn max_open(&self) -> usize {
        self.pool.requested_max_open()
    }

    fn set_max_open(&self, n: usize) {
        self.pool.set_max_open(n);
    }
}
