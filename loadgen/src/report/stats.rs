//! Latency histograms and counters, per one-second interval and per class.
//!
//! Percentiles are only ever read from a histogram: per-second values from
//! that second's histogram (merged over threads), totals from the merge of
//! every second. Percentiles are never averaged.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds up to 100 s (longer ones are clamped).
pub const MAX_US: u64 = 100_000_000;

/// A success counts toward goodput when it arrives within this long of its
/// intended send time (an answer later than this is as good as lost to
/// most callers).
pub const GOOD_WITHIN_US: u64 = 200_000;

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("static histogram bounds")
}

#[inline]
pub fn record(h: &mut Histogram<u64>, us: u64) {
    // saturating_record clamps to the highest trackable value.
    h.saturating_record(us.max(1));
}

/// One class's responses in one interval.
#[derive(Clone, Debug)]
pub struct ClassInterval {
    /// From the intended send time (coordinated-omission corrected).
    pub corrected: Histogram<u64>,
    /// From the moment the request was written.
    pub uncorrected: Histogram<u64>,
    /// Responses by status class: 1xx..5xx at indices 1..5.
    pub status: [u64; 6],
    /// Requests that failed without a response (I/O error, timeout).
    pub failed: u64,
    pub sent: u64,
    pub offered: u64,
    /// 2xx and 3xx responses within [`GOOD_WITHIN_US`] of the intended send.
    pub good: u64,
    /// 503 responses: the server turned the request away (shed, pool
    /// timeout, database down), as opposed to failing it.
    pub unavailable: u64,
    /// How long those 503s took, from the intended send (a shed should be
    /// fast; a timed-out wait is not).
    pub unavailable_latency: Histogram<u64>,
}

impl Default for ClassInterval {
    fn default() -> Self {
        ClassInterval {
            corrected: new_hist(),
            uncorrected: new_hist(),
            status: [0; 6],
            failed: 0,
            sent: 0,
            offered: 0,
            good: 0,
            unavailable: 0,
            unavailable_latency: new_hist(),
        }
    }
}

impl ClassInterval {
    pub fn merge(&mut self, o: &ClassInterval) {
        self.corrected.add(&o.corrected).expect("same bounds");
        self.uncorrected.add(&o.uncorrected).expect("same bounds");
        for i in 0..6 {
            self.status[i] += o.status[i];
        }
        self.failed += o.failed;
        self.sent += o.sent;
        self.offered += o.offered;
        self.good += o.good;
        self.unavailable += o.unavailable;
        self.unavailable_latency
            .add(&o.unavailable_latency)
            .expect("same bounds");
    }

    pub fn completed(&self) -> u64 {
        self.status.iter().sum()
    }

    pub fn errors(&self) -> u64 {
        self.failed + self.status[4] + self.status[5]
    }
}

/// Counters of one thread (or all threads) for one second.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub offered: u64,
    pub sent: u64,
    pub late: u64,
    pub dropped: u64,
    pub timeouts: u64,
    pub io_errors: u64,
    pub connect_errors: u64,
    pub reconnects: u64,
    pub unfinished: u64,
    pub bytes_in: u64,
}

impl Counters {
    pub fn merge(&mut self, o: &Counters) {
        self.offered += o.offered;
        self.sent += o.sent;
        self.late += o.late;
        self.dropped += o.dropped;
        self.timeouts += o.timeouts;
        self.io_errors += o.io_errors;
        self.connect_errors += o.connect_errors;
        self.reconnects += o.reconnects;
        self.unfinished += o.unfinished;
        self.bytes_in += o.bytes_in;
    }
}

/// Everything one thread saw in one second.
#[derive(Clone, Debug)]
pub struct Interval {
    pub second: u64,
    pub classes: Vec<Option<ClassInterval>>,
    pub counters: Counters,
    /// How late the schedule fired (µs): the generator's own lag.
    pub lag: Histogram<u64>,
    /// Connections open at the end of the interval.
    pub open_connections: u64,
}

impl Interval {
    pub fn new(second: u64, classes: usize) -> Interval {
        Interval {
            second,
            classes: vec![None; classes],
            counters: Counters::default(),
            lag: new_hist(),
            open_connections: 0,
        }
    }

    pub fn class(&mut self, i: usize) -> &mut ClassInterval {
        self.classes[i].get_or_insert_with(ClassInterval::default)
    }

    pub fn merge(&mut self, o: &Interval) {
        for (a, b) in self.classes.iter_mut().zip(&o.classes) {
            if let Some(b) = b {
                a.get_or_insert_with(ClassInterval::default).merge(b);
            }
        }
        self.counters.merge(&o.counters);
        self.lag.add(&o.lag).expect("same bounds");
        self.open_connections += o.open_connections;
    }

    /// All classes merged.
    pub fn all(&self) -> ClassInterval {
        let mut a = ClassInterval::default();
        for c in self.classes.iter().flatten() {
            a.merge(c);
        }
        a
    }
}

/// Percentiles of a histogram in milliseconds, as written to the series and summary.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_percentiles_are_not_averaged() {
        // One fast second and one slow second: the p99 of the two together
        // is the slow one's, not the mean of the two p99s.
        let mut a = Interval::new(0, 1);
        let mut b = Interval::new(0, 1);
        for _ in 0..990 {
            record(&mut a.class(0).corrected, 1_000);
        }
        for _ in 0..10 {
            record(&mut a.class(0).corrected, 1_000);
        }
        for _ in 0..1000 {
            record(&mut b.class(0).corrected, 100_000);
        }
        let pa = Latency::of(&a.class(0).corrected).p99_ms;
        let pb = Latency::of(&b.class(0).corrected).p99_ms;
        a.merge(&b);
        let merged = Latency::of(&a.class(0).corrected);
        assert_eq!(merged.count, 2000);
        assert!((merged.p99_ms - 100.0).abs() < 0.1, "{merged:?}");
        assert!((merged.p99_ms - (pa + pb) / 2.0).abs() > 40.0);
        assert!((merged.p50_ms - 1.0).abs() < 0.01);
    }

    #[test]
    fn values_past_the_top_are_clamped() {
        let mut h = new_hist();
        record(&mut h, MAX_US * 10);
        record(&mut h, 0);
        assert_eq!(h.len(), 2);
        assert!(h.max() >= MAX_US);
        assert_eq!(h.min(), 1);
    }
}
