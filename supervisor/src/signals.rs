//! What the supervisor thread reports about a pool each tick.

use std::time::Duration;

/// One sample of a pool, taken every tick by the supervisor thread (values
/// over the last tick unless noted).
///
/// This is the whole interface between a pool and the controller: a pool
/// that can fill this struct can be autoscaled. Gauges (`max_open` .. `waiting`)
/// are read at the end of the tick; the rest cover the tick.
///
/// ```
/// use std::time::Duration;
/// use tidepool_supervisor::Signals;
///
/// let s = Signals { max_open: 8, open: 8, in_use: 8, waiting: 3, completed: 950,
///                   acquire_wait_p99: Duration::from_millis(12), ..Signals::default() };
/// assert_eq!(s.idle_ratio(), 0.0);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Signals {
    /// The pool's current cap (gauge). The controller trusts its own value;
    /// this one is for logs and for spotting a resize the pool refused.
    pub max_open: usize,
    /// Connections open, in use or idle (gauge).
    pub open: usize,
    /// Connections checked out (gauge).
    pub in_use: usize,
    /// Connections open and not checked out (gauge).
    pub idle: usize,
    /// Acquires queued for a connection (gauge).
    pub waiting: usize,
    /// p99 of the acquire waits that *ended* during the tick, whether with a
    /// connection or with an acquire timeout (a timed-out acquire counts as a
    /// wait of the full timeout). Zero when no acquire ended. Acquires served
    /// at once count as zero waits.
    pub acquire_wait_p99: Duration,
    /// p99 of the database round trips that ended during the tick (query
    /// sent to reply received, excluding the acquire wait).
    pub query_p99: Duration,
    /// Operations that finished successfully during the tick.
    pub completed: u64,
    /// Operations that failed at the database or on the connection during the
    /// tick (query errors, broken connections, failed connects).
    pub errors: u64,
    /// Operations that timed out *at the database* during the tick (statement
    /// or query timeouts). Acquire timeouts are not counted here: they mean
    /// the pool was short, not that the database was slow, and they already
    /// show in `acquire_wait_p99`.
    pub timeouts: u64,
    /// How long this tick lasted; the supervisor reports what it measured, so
    /// a late tick is weighted by its true length.
    pub tick: Duration,
    /// A cap from outside the controller (a fleet's lease on the database's
    /// connections): growth stops at it, whatever the rails allow.
    pub ceiling: Option<usize>,
}

impl Signals {
    /// Fraction of open connections that are idle; `0.0` when nothing is open
    /// (an empty pool says nothing about excess).
    pub fn idle_ratio(&self) -> f64 {
        if self.open == 0 {
            0.0
        } else {
            self.idle as f64 / self.open as f64
        }
    }
}
