//! A deterministic discrete-event simulator of a pool in front of a database,
//! for characterising [`Controller`](crate::Controller).
//!
//! The model:
//!
//! - **Arrivals** are open-loop Poisson at the rate of a [`Load`] pattern.
//! - **The pool** has `max_open` connections at most, hands out an idle one
//!   at once if it has one (connections are interchangeable, so which one
//!   does not matter), queues acquires FIFO, and fails an acquire after
//!   `acquire_timeout`. It opens a connection (taking
//!   `connect_time`) only while waiters outnumber connections already being
//!   opened, as HikariCP does, so it never opens more than demand needs. Idle
//!   connections are never reaped by timeout: the only thing that closes them
//!   is a shrink of `max_open`, which makes connection-seconds a direct
//!   measure of the policy. Static pools start with all connections open.
//! - **A request** holds its connection for a query plus app think time
//!   (both Erlang-2), so hold time, not query time, sizes the pool.
//! - **The database** runs `servers` queries at once (its real parallelism),
//!   queues the rest FIFO, and slows every query by `contention` per query in
//!   flight beyond `servers` (lock and cache contention): past the knee more
//!   connections lower throughput. A [`Fault`] makes replies slower and some
//!   fail. Statement timeouts end a query that has run too long.
//! - **The supervisor** samples the pool every `tick` into
//!   [`Signals`](crate::Signals) and applies the controller's decision.
//!
//! Time is simulated nanoseconds; the controller sees it as an `Instant`
//! offset from one base, so it runs exactly as it would on a real clock.
//! Real time is about a second per simulated hour at 1000 requests/s in a
//! release build.

mod engine;
pub mod fleet;
mod hist;
mod load;
pub mod report;
mod rng;
pub mod scenarios;

use std::time::Duration;

pub use engine::{run, run_with, Verdict};
pub use hist::{quantile, Hist};
pub use load::{Fault, Load, Scenario};
pub use rng::Rng;

use crate::{ControllerState, PoolAutoscale, Tuning};

/// The database side of the model.
#[derive(Clone, Debug)]
pub struct DbModel {
    /// Queries served at once (cores, I/O parallelism).
    pub servers: usize,
    /// Mean service time of a query with no contention.
    pub base_service: Duration,
    /// Fractional slow-down of each query per query in flight beyond
    /// `servers`.
    pub contention: f64,
    /// Queries running longer than this end as timeouts.
    pub statement_timeout: Option<Duration>,
}

/// The pool and application side of the model.
#[derive(Clone, Debug)]
pub struct PoolModel {
    /// Time to open one connection.
    pub connect_time: Duration,
    /// An acquire waiting longer than this fails.
    pub acquire_timeout: Duration,
    /// Mean time the application holds a connection after its query
    /// (processing rows, a second statement, ...).
    pub think_time: Duration,
}

/// Everything about a run except the load and the policy.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub db: DbModel,
    pub pool: PoolModel,
    /// Supervisor sampling interval.
    pub tick: Duration,
    pub seed: u64,
    /// Request-latency SLO, for "seconds over SLO".
    pub slo: Duration,
    /// Acquire-wait level that counts as settled after a burst edge.
    pub wait_target: Duration,
}

impl Default for SimConfig {
    /// A modest database: 8 cores, 4 ms queries (2000 queries/s at the knee),
    /// 8% slower per query in flight past 8; 4 ms of think time, so a request
    /// holds a connection ~8 ms and the knee is ~16 busy connections.
    fn default() -> Self {
        SimConfig {
            db: DbModel {
                servers: 8,
                base_service: Duration::from_millis(4),
                contention: 0.03,
                statement_timeout: Some(Duration::from_millis(500)),
            },
            pool: PoolModel {
                connect_time: Duration::from_millis(10),
                acquire_timeout: Duration::from_millis(500),
                think_time: Duration::from_millis(4),
            },
            tick: Duration::from_secs(1),
            seed: 1,
            slo: Duration::from_millis(50),
            wait_target: Duration::from_millis(5),
        }
    }
}

impl SimConfig {
    /// The same model with every duration on the database and application
    /// side (query, think, connect and timeouts) and the latency yardsticks
    /// (`slo`, `wait_target`) multiplied by `factor`. Divide the load's
    /// rates by `factor` and the pool sees the same occupancy with `factor`
    /// times fewer events, which keeps unoptimised test runs fast; only the
    /// supervisor's tick stays as it is, so each sample holds fewer requests.
    pub fn slowed(&self, factor: f64) -> SimConfig {
        let f = |d: Duration| d.mul_f64(factor);
        let mut c = self.clone();
        c.db.base_service = f(c.db.base_service);
        c.db.statement_timeout = c.db.statement_timeout.map(f);
        c.pool.connect_time = f(c.pool.connect_time);
        c.pool.acquire_timeout = f(c.pool.acquire_timeout);
        c.pool.think_time = f(c.pool.think_time);
        c.slo = f(c.slo);
        c.wait_target = f(c.wait_target);
        c
    }
}

/// How the pool's `max_open` is managed during a run.
// A handful are built per run; boxing the config would only make them
// clumsier to write.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Policy {
    /// Fixed at this size, all connections open from the start.
    Static(usize),
    /// Driven by a [`Controller`](crate::Controller); the pool starts with
    /// `start` connections open.
    Adaptive {
        cfg: PoolAutoscale,
        start: usize,
        tuning: Tuning,
    },
}

impl Policy {
    pub fn adaptive(cfg: PoolAutoscale, start: usize) -> Self {
        Policy::Adaptive {
            cfg,
            start,
            tuning: Tuning::default(),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Policy::Static(n) => format!("static-{n}"),
            Policy::Adaptive { .. } => "adaptive".to_string(),
        }
    }
}

/// One simulated second, `[t, t + 1)`.
#[derive(Clone, Debug, Default)]
pub struct SecondRow {
    pub t: u64,
    /// Requests that arrived.
    pub offered: u64,
    /// Requests that finished successfully.
    pub completed: u64,
    /// Requests that failed (acquire timeout, query error, statement timeout).
    pub failed: u64,
    /// Gauges at the end of the second.
    pub max_open: usize,
    pub open: usize,
    pub in_use: usize,
    pub waiting: usize,
    /// p99s over the second, in milliseconds.
    pub acquire_wait_p99_ms: f64,
    pub query_p99_ms: f64,
    pub latency_p99_ms: f64,
}

/// One resize applied during a run.
#[derive(Clone, Debug)]
pub struct DecisionRecord {
    /// Simulated seconds.
    pub t: f64,
    pub from: usize,
    pub to: usize,
    pub reason: String,
}

/// Summary figures of a run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub requests: u64,
    pub completed: u64,
    pub failed: u64,
    /// Request latency (arrival to release or failure), milliseconds.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_p999_ms: f64,
    pub acquire_wait_p99_ms: f64,
    /// Seconds whose request-latency p99 exceeded the SLO.
    pub seconds_over_slo: u64,
    /// Per burst edge: seconds from the edge to the first second whose
    /// acquire-wait p99 is under `wait_target` and which starts ten seconds
    /// of which at least eight are; the phase length if that never happens.
    /// The worst edge; `None` without edges.
    pub settling_max_s: Option<f64>,
    pub settling_mean_s: Option<f64>,
    /// Per high phase: how far the pool's peak size overshot its size at the
    /// end of the phase, as a fraction. The worst phase; `None` without edges.
    pub overshoot: Option<f64>,
    /// ∫ open connections dt.
    pub connection_seconds: f64,
    pub mean_max_open: f64,
    pub peak_max_open: usize,
    pub changes: usize,
    pub direction_changes: usize,
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct SimResult {
    pub scenario: String,
    pub policy: String,
    pub series: Vec<SecondRow>,
    pub decisions: Vec<DecisionRecord>,
    pub summary: Summary,
    /// The controller's state at the end (adaptive runs only).
    pub controller: Option<ControllerState>,
    /// Number of ticks held, per [`Reason::kind`](crate::Reason::kind), for
    /// checking which rules and guards fired.
    pub hold_reasons: Vec<(String, u64)>,
}

impl SimResult {
    /// Number of ticks held for the reason of this kind.
    pub fn holds(&self, kind: &str) -> u64 {
        self.hold_reasons
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, n)| n)
            .sum()
    }
}
