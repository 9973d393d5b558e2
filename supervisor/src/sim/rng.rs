//! A tiny deterministic PRNG: the simulator must give the same run for the
//! same seed on every machine, and needs nothing cryptographic.

/// SplitMix64 (Steele, Lea, Flood 2014): one add and three xor-shift-multiply
/// rounds per draw, full 2^64 period, good enough for queueing noise.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so `ln` below is always finite.
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * self.unit().ln()
    }

    /// Erlang-2 with the given mean: a service-time shape with a real tail
    /// (p99 about 3.3x the mean) but without the exponential's mass near zero,
    /// which no database round trip has.
    pub fn erlang2(&mut self, mean: f64) -> f64 {
        self.exp(mean / 2.0) + self.exp(mean / 2.0)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() <= p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_mean_is_right() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let n = 200_000;
        let mean = (0..n).map(|_| a.erlang2(4.0)).sum::<f64>() / n as f64;
        assert!((mean - 4.0).abs() < 0.05, "{mean}");
    }
}
