//! Small parsers and a seeded random number generator.

use std::time::Duration;

/// Parses "30s", "500ms", "2m", "1h", "250us" or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs = parse_seconds(s)?;
    if secs < 0.0 {
        return Err(format!("duration {s:?} is negative"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Like [`parse_duration`] but as f64 seconds, sign kept (validation is the caller's).
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (use e.g. 30s, 500ms, 2m)"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {s:?}")),
    };
    if !v.is_finite() {
        return Err(format!("not a finite duration: {s:?}"));
    }
    Ok(v * scale)
}

/// Formats seconds compactly for humans ("1.50s", "250.0ms", "2m5s").
pub fn fmt_secs(s: f64) -> String {
    if s >= 120.0 {
        let whole = s.round() as u64;
        format!("{}m{}s", whole / 60, whole % 60)
    } else if s >= 1.0 {
        format!("{s:.2}s")
    } else {
        format!("{:.1}ms", s * 1e3)
    }
}

/// Formats microseconds the way wrk does (us, ms, s).
pub fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0}us")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

/// xoshiro256++ seeded through splitmix64: fast, good enough for load
/// shaping, and reproducible across platforms for a given seed.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// An independent stream for `index` (threads, purposes) from one seed.
    pub fn derive(seed: u64, index: u64) -> Rng {
        Rng::new(seed ^ index.wrapping_mul(0xA076_1D64_78BD_642F).rotate_left(17))
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in lo..=hi.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        let span = hi - lo + 1;
        if span == 0 {
            return self.next_u64();
        }
        // Multiply-shift: unbiased enough for ids (bias < span / 2^64).
        lo + ((u128::from(self.next_u64()) * u128::from(span)) >> 64) as u64
    }

    /// Exponential with mean 1.
    pub fn exp1(&mut self) -> f64 {
        // 1 - U is in (0, 1], so the log is finite.
        -(1.0 - self.f64()).ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("3 fortnights").is_err());
    }

    #[test]
    fn rng_is_seeded_and_ranges_hold() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut c = Rng::new(8);
        assert_ne!(a.next_u64(), c.next_u64());
        let mut seen = [false; 10];
        for _ in 0..10_000 {
            let v = a.range(1, 10);
            assert!((1..=10).contains(&v));
            seen[(v - 1) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        let mean: f64 = (0..100_000).map(|_| a.exp1()).sum::<f64>() / 100_000.0;
        assert!((mean - 1.0).abs() < 0.02, "exp mean {mean}");
    }
}
