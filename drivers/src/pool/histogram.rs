//! A log-linear latency histogram that one thread records into and any
//! thread can read, without locks.
//!
//! Values are microseconds. Below 64 µs each value has its own bucket; above,
//! every power of two is split into 32 buckets, so a bucket's width is at
//! most 1/32 of its value (quantiles within ~3%). The owning worker is the
//! only writer (relaxed load + store, no locked instruction); readers copy
//! the counts and subtract two copies for a windowed view.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

const LINEAR: usize = 64;
const SUB: usize = 32;
const MAX_EXP: usize = 40; // 2^40 µs ≈ 12.7 days: anything longer is clamped.
pub(crate) const BUCKETS: usize = LINEAR + (MAX_EXP - 6 + 1) * SUB;

fn index(us: u64) -> usize {
    if us < LINEAR as u64 {
        return us as usize;
    }
    let exp = (63 - us.leading_zeros()) as usize;
    if exp > MAX_EXP {
        return BUCKETS - 1;
    }
    let shift = exp - 5;
    let sub = ((us >> shift) as usize) & (SUB - 1);
    LINEAR + (exp - 6) * SUB + sub
}

/// The largest value that lands in bucket `i` (what quantiles report, so
/// they never understate).
fn upper(i: usize) -> u64 {
    if i < LINEAR {
        return i as u64;
    }
    let exp = (i - LINEAR) / SUB + 6;
    let sub = ((i - LINEAR) % SUB) as u64;
    let shift = exp - 5;
    (((SUB as u64) + sub + 1) << shift) - 1
}

pub struct AtomicHistogram {
    counts: Box<[AtomicU64]>,
    total: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

fn bump(a: &AtomicU64, n: u64) {
    a.store(a.load(Relaxed).wrapping_add(n), Relaxed);
}

impl AtomicHistogram {
    /// Records one value. Only the owning worker may call this.
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        bump(&self.counts[index(us)], 1);
        bump(&self.total, 1);
        bump(&self.sum_us, us);
        if us > self.max_us.load(Relaxed) {
            self.max_us.store(us, Relaxed);
        }
    }

    /// A copy of the counts so far (cumulative since creation).
    pub fn snapshot(&self) -> Histogram {
        Histogram {
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            total: self.total.load(Relaxed),
            sum_us: self.sum_us.load(Relaxed),
            max_us: self.max_us.load(Relaxed),
        }
    }
}

/// A plain copy of a histogram: mergeable, subtractable, queryable.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    pub total: u64,
    pub sum_us: u64,
    /// Largest value ever recorded (not windowed by `since`).
    pub max_us: u64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max_us", &self.max_us)
            .finish()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            sum_us: 0,
            max_us: 0,
        }
    }
}

impl Histogram {
    /// Adds another histogram's counts (merging shards; never averaging percentiles).
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.sum_us += other.sum_us;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// What was recorded after `earlier` (a previous snapshot of the same source).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram {
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            total: self.total.saturating_sub(earlier.total),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
            max_us: self.max_us,
        }
    }

    /// The value at quantile `q` (0..=1); zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_micros(upper(i));
            }
        }
        Duration::from_micros(self.max_us)
    }

    pub fn mean(&self) -> Duration {
        Duration::from_micros(self.sum_us.checked_div(self.total).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for us in (0..2_000_000u64).step_by(7) {
            let i = index(us);
            assert!(i >= last, "index must not decrease at {us}");
            last = i;
            let up = upper(i);
            assert!(up >= us, "upper({i})={up} < {us}");
            assert!(up - us <= us / 32 + 1, "bucket too wide at {us}: {up}");
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_merge_and_windows() {
        let a = AtomicHistogram::default();
        for ms in 1..=100u64 {
            a.record(Duration::from_millis(ms));
        }
        let s1 = a.snapshot();
        let p99 = s1.quantile(0.99).as_micros() as f64;
        assert!((p99 - 99_000.0).abs() / 99_000.0 < 0.035, "{p99}");
        let p50 = s1.quantile(0.5).as_micros() as f64;
        assert!((p50 - 50_000.0).abs() / 50_000.0 < 0.035, "{p50}");
        for _ in 0..10 {
            a.record(Duration::from_secs(2));
        }
        let window = a.snapshot().since(&s1);
        assert_eq!(window.total, 10);
        assert!(window.quantile(0.5) >= Duration::from_secs(2));
        let mut m = s1.clone();
        m.merge(&window);
        assert_eq!(m.total, 110);
        assert_eq!(Histogram::default().quantile(0.99), Duration::ZERO);
    }
}
