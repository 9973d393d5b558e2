//! Per-worker HTTP counters.
//!
//! Each worker is the only writer of its counters, so an increment is a
//! relaxed load and store (plain moves on x86): no lock, no locked
//! instruction on the hot path. Other threads read and sum them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use super::route_stats::RouteStats;

#[derive(Default)]
pub struct WorkerStats {
    pub requests: AtomicU64,
    /// Responses by status class: 1xx..5xx.
    pub responses: [AtomicU64; 5],
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub parse_errors: AtomicU64,
    pub timeouts: AtomicU64,
    /// Per-route histograms (`HttpConfig::route_metrics`), laid out when
    /// the worker's router is built.
    pub routes: OnceLock<Arc<RouteStats>>,
}

impl std::fmt::Debug for WorkerStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerStats")
            .field("requests", &self.requests)
            .field("responses", &self.responses)
            .finish_non_exhaustive()
    }
}

/// Adds `n` to a counter that only the calling worker writes.
#[inline]
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

#[inline]
pub(crate) fn sub(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_sub(n), Relaxed);
}

/// A sum of every worker's counters at one moment.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct HttpStats {
    pub requests: u64,
    pub responses: [u64; 5],
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connections_open: u64,
    pub connections_accepted: u64,
    pub connections_rejected: u64,
    pub parse_errors: u64,
    pub timeouts: u64,
}

impl HttpStats {
    pub fn sum<'a>(workers: impl IntoIterator<Item = &'a WorkerStats>) -> HttpStats {
        let mut s = HttpStats::default();
        for w in workers {
            s.requests += w.requests.load(Relaxed);
            for (dst, src) in s.responses.iter_mut().zip(&w.responses) {
                *dst += src.load(Relaxed);
            }
            s.bytes_in += w.bytes_in.load(Relaxed);
            s.bytes_out += w.bytes_out.load(Relaxed);
            s.connections_open += w.connections_open.load(Relaxed);
            s.connections_accepted += w.connections_accepted.load(Relaxed);
            s.connections_rejected += w.connections_rejected.load(Relaxed);
            s.parse_errors += w.parse_errors.load(Relaxed);
            s.timeouts += w.timeouts.load(Relaxed);
        }
        s
    }
}
