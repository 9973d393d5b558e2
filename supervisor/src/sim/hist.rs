//! Latency percentiles for the simulator.

/// A log-linear histogram of nanosecond values: 128 buckets per power of two,
/// so any reported quantile is within 0.8% of the true sample. Whole-run
/// percentiles need this because a simulated hour holds millions of samples;
/// per-tick percentiles use exact selection instead (see [`quantile`]).
#[derive(Clone, Debug)]
pub struct Hist {
    counts: Vec<u64>,
    total: u64,
}

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;

impl Default for Hist {
    fn default() -> Self {
        Hist {
            counts: vec![0; ((64 - SUB_BITS as usize) + 1) * SUB as usize],
            total: 0,
        }
    }
}

impl Hist {
    fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let e = 63 - v.leading_zeros();
        let shift = e - SUB_BITS;
        ((shift as u64 + 1) * SUB + (v >> shift) - SUB) as usize
    }

    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let shift = i / SUB - 1;
        let sub = i % SUB + SUB;
        // Middle of the bucket.
        (sub << shift) + ((1u64 << shift) >> 1)
    }

    pub fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
    }

    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The `q` quantile (nearest rank), 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i);
            }
        }
        0
    }
}

/// Exact nearest-rank quantile of a small sample, reordering it in place.
pub fn quantile(v: &mut [u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    *v.select_nth_unstable(rank - 1).1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hist_is_within_one_percent() {
        let mut h = Hist::default();
        let mut all: Vec<u64> = (1..=100_000u64).map(|i| i * 997 % 50_000_000 + 1).collect();
        for &v in &all {
            h.record(v);
        }
        for q in [0.5, 0.99, 0.999] {
            let exact = quantile(&mut all, q) as f64;
            let approx = h.quantile(q) as f64;
            assert!(
                (approx - exact).abs() / exact < 0.01,
                "q{q}: {approx} vs {exact}"
            );
        }
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Hist::default();
        for v in 0..100 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 49);
        assert_eq!(quantile(&mut [5, 1, 3], 0.99), 5);
        assert_eq!(quantile(&mut [], 0.5), 0);
    }
}
