//! Per-route request counts and durations, by status, as a histogram.
//!
//! Laid out once from the router's routes when a worker starts: a slot
//! per route and status, written only by the worker (relaxed loads and
//! stores, no locked instruction), read by `/metrics` from any thread.
//! Labels stay bounded whatever clients send: the route is the route's
//! pattern (`/todos/{id}`), the method the route's, and a request no route
//! took counts under route `""`, method `"other"`.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::stats::add;

/// Upper bounds of the duration buckets, in seconds (and `+Inf`).
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// [`BUCKETS`] in microseconds: a request is placed with integer compares.
const BUCKETS_US: [u64; BUCKETS.len()] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    5_000_000,
];

/// Statuses one route keeps apart; more distinct ones count in `overflow`.
const STATUSES: usize = 8;

#[derive(Default)]
struct Slot {
    /// 0 while free.
    status: AtomicU16,
    count: AtomicU64,
    sum_us: AtomicU64,
    /// Cumulative-free: `buckets[i]` counts requests in bucket `i` only.
    buckets: [AtomicU64; BUCKETS.len()],
}

struct Entry {
    method: &'static str,
    route: String,
    slots: [Slot; STATUSES],
}

/// One worker's per-route histograms.
pub struct RouteStats {
    entries: Vec<Entry>,
    /// Requests whose status found no free slot of their route.
    pub overflow: AtomicU64,
}

/// One route and status, summed or from one worker.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteSample {
    pub method: &'static str,
    pub route: String,
    pub status: u16,
    pub count: u64,
    pub sum_seconds: f64,
    /// Requests per bucket (not cumulative), as [`BUCKETS`]; the rest are
    /// above the last bound.
    pub buckets: [u64; BUCKETS.len()],
}

impl RouteStats {
    /// Slots for these routes (method, pattern), then one for requests no
    /// route took.
    pub(crate) fn new(routes: impl IntoIterator<Item = (&'static str, String)>) -> RouteStats {
        let entry = |method, route| Entry {
            method,
            route,
            slots: Default::default(),
        };
        let mut entries: Vec<Entry> = routes.into_iter().map(|(m, r)| entry(m, r)).collect();
        entries.push(entry("other", String::new()));
        RouteStats {
            entries,
            overflow: AtomicU64::new(0),
        }
    }

    /// Stats for these routes, for tests of what reads them.
    #[doc(hidden)]
    pub fn for_tests(routes: impl IntoIterator<Item = (&'static str, String)>) -> RouteStats {
        RouteStats::new(routes)
    }

    /// [`record`](Self::record), for tests of what reads the stats.
    #[doc(hidden)]
    pub fn record_for_tests(&self, route: usize, status: u16, took: Duration) {
        self.record(route, status, took)
    }

    /// The index requests no route took count under.
    pub(crate) fn unmatched(&self) -> usize {
        self.entries.len() - 1
    }

    /// Counts one request of route `route` (an index from the router, or
    /// [`unmatched`](Self::unmatched)) answered `status` after `took`. Only
    /// the worker that owns these stats calls it.
    pub(crate) fn record(&self, route: usize, status: u16, took: Duration) {
        let Some(e) = self.entries.get(route) else {
            return;
        };
        let slot = e.slots.iter().find(|s| {
            let st = s.status.load(Relaxed);
            if st == 0 {
                s.status.store(status, Relaxed);
                true
            } else {
                st == status
            }
        });
        let Some(slot) = slot else {
            add(&self.overflow, 1);
            return;
        };
        let us = took.as_micros() as u64;
        add(&slot.count, 1);
        add(&slot.sum_us, us);
        if let Some(i) = BUCKETS_US.iter().position(|&b| us <= b) {
            add(&slot.buckets[i], 1);
        }
    }

    /// Every route and status seen, with its numbers now.
    pub fn samples(&self) -> Vec<RouteSample> {
        let mut out = Vec::new();
        for e in &self.entries {
            for s in &e.slots {
                let status = s.status.load(Relaxed);
                if status == 0 {
                    break;
                }
                let mut buckets = [0u64; BUCKETS.len()];
                for (b, a) in buckets.iter_mut().zip(&s.buckets) {
                    *b = a.load(Relaxed);
                }
                out.push(RouteSample {
                    method: e.method,
                    route: e.route.clone(),
                    status,
                    count: s.count.load(Relaxed),
                    sum_seconds: s.sum_us.load(Relaxed) as f64 / 1e6,
                    buckets,
                });
            }
        }
        out
    }
}

/// The samples of many workers summed by (method, route, status).
pub fn sum_samples<'a>(workers: impl IntoIterator<Item = &'a RouteStats>) -> Vec<RouteSample> {
    let mut out: Vec<RouteSample> = Vec::new();
    for w in workers {
        for s in w.samples() {
            match out
                .iter_mut()
                .find(|o| o.method == s.method && o.route == s.route && o.status == s.status)
            {
                Some(o) => {
                    o.count += s.count;
                    o.sum_seconds += s.sum_seconds;
                    for (a, b) in o.buckets.iter_mut().zip(s.buckets) {
                        *a += b;
                    }
                }
                None => out.push(s),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> RouteStats {
        RouteStats::new([("GET", "/a".to_string()), ("POST", "/b/{id}".to_string())])
    }

    #[test]
    fn requests_count_by_route_and_status_in_their_bucket() {
        let s = stats();
        s.record(0, 200, Duration::from_micros(300));
        s.record(0, 200, Duration::from_millis(30));
        s.record(0, 404, Duration::from_secs(9));
        s.record(s.unmatched(), 404, Duration::ZERO);
        let samples = s.samples();
        assert_eq!(samples.len(), 3);
        for (us, secs) in BUCKETS_US.iter().zip(BUCKETS) {
            assert_eq!(*us as f64 / 1e6, secs, "the two bucket tables agree");
        }
        let ok = &samples[0];
        assert_eq!(
            (ok.method, ok.route.as_str(), ok.status, ok.count),
            ("GET", "/a", 200, 2)
        );
        assert_eq!(ok.buckets[0], 1, "300 us is in the first bucket");
        assert_eq!(ok.buckets[6], 1, "30 ms is in the 50 ms bucket");
        assert!((ok.sum_seconds - 0.0303).abs() < 1e-9);
        let slow = &samples[1];
        assert_eq!(
            (slow.status, slow.buckets.iter().sum::<u64>()),
            (404, 0),
            "above every bound"
        );
        assert_eq!(
            (samples[2].method, samples[2].route.as_str()),
            ("other", "")
        );
    }

    #[test]
    fn statuses_beyond_the_slots_overflow_and_sums_add_workers() {
        let s = stats();
        for status in 200..(200 + STATUSES as u16 + 3) {
            s.record(1, status, Duration::ZERO);
        }
        assert_eq!(s.overflow.load(Relaxed), 3);
        let t = stats();
        t.record(1, 200, Duration::ZERO);
        let sum = sum_samples([&s, &t]);
        let ok = sum.iter().find(|x| x.status == 200).unwrap();
        assert_eq!(ok.count, 2);
        assert_eq!(sum.len(), STATUSES);
    }
}
