//! Cache telemetry. Each worker's handle owns its counters and is their
//! only writer (relaxed load + store, no locked instruction on the hit
//! path); any thread sums them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::pool::{AtomicHistogram, Histogram};

#[derive(Default)]
pub(crate) struct LocalStats {
    hits: AtomicU64,
    misses: AtomicU64,
    computes: AtomicU64,
    early_refreshes: AtomicU64,
    lock_timeouts: AtomicU64,
    store_failures: AtomicU64,
    waiting: AtomicU64,
    lock_wait: AtomicHistogram,
}

/// Counts its caller as waiting until dropped, so a cancelled waiter stops
/// counting too.
pub(crate) struct Waiting<'a>(&'a LocalStats);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let w = &self.0.waiting;
        w.store(w.load(Relaxed).saturating_sub(1), Relaxed);
    }
}

fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
}

impl LocalStats {
    pub(crate) fn hit(&self) {
        bump(&self.hits);
    }
    pub(crate) fn miss(&self) {
        bump(&self.misses);
    }
    pub(crate) fn compute(&self) {
        bump(&self.computes);
    }
    pub(crate) fn early_refresh(&self) {
        bump(&self.early_refreshes);
    }
    pub(crate) fn lock_timeout(&self) {
        bump(&self.lock_timeouts);
    }
    pub(crate) fn store_failure(&self) {
        bump(&self.store_failures);
    }
    pub(crate) fn start_waiting(&self) -> Waiting<'_> {
        bump(&self.waiting);
        Waiting(self)
    }
    pub(crate) fn waited(&self, d: Duration) {
        self.lock_wait.record(d);
    }

    pub(crate) fn add_to(&self, t: &mut CacheStats) {
        let g = |a: &AtomicU64| a.load(Relaxed);
        t.hits += g(&self.hits);
        t.misses += g(&self.misses);
        t.computes += g(&self.computes);
        t.early_refreshes += g(&self.early_refreshes);
        t.lock_timeouts += g(&self.lock_timeouts);
        t.store_failures += g(&self.store_failures);
        t.waiting += g(&self.waiting);
        t.lock_wait.merge(&self.lock_wait.snapshot());
    }
}

/// One cache's numbers in this process, summed over its worker handles.
/// All counters are cumulative.
#[derive(Clone, Debug, Default)]
pub struct CacheStats {
    /// The cache's name.
    pub name: String,
    /// Calls answered from Redis (a cached error counts too).
    pub hits: u64,
    /// Calls that found nothing usable in Redis.
    pub misses: u64,
    /// Computations run in this process (early refreshes included).
    pub computes: u64,
    /// Computations started early by XFetch while the value was valid.
    pub early_refreshes: u64,
    /// Waits for another process's lock that reached `wait_timeout`.
    pub lock_timeouts: u64,
    /// Computed values (or errors) that could not be written to Redis; the
    /// callers still got them.
    pub store_failures: u64,
    /// Callers waiting right now for someone else's computation (a gauge).
    pub waiting: u64,
    /// How long each caller that waited for someone else's computation
    /// (in this process or another) waited.
    pub lock_wait: Histogram,
}
