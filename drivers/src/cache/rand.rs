//! Randomness without a dependency. Lock tokens must never collide between
//! two attempts, in this process or another; jitter and XFetch draws only
//! need spread.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// SipHash under std's per-thread key, which comes from the OS's entropy
/// source, over a process-wide counter, the pid and the time: unique within
/// the process by the counter, and across processes by the key.
fn mix(salt: u8) -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Relaxed));
    h.write_u32(std::process::id());
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u8(salt);
    h.finish()
}

/// A fresh 128-bit lock token, as 32 hex digits.
pub(crate) fn token() -> String {
    format!("{:016x}{:016x}", mix(0), mix(1))
}

/// A per-worker splitmix64 generator.
pub(crate) struct Rng(Cell<u64>);

impl Rng {
    pub(crate) fn new() -> Rng {
        Rng(Cell::new(mix(2)))
    }

    fn next(&self) -> u64 {
        let mut z = self.0.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.0.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so `ln` of it is finite.
    pub(crate) fn unit(&self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_and_units_stay_in_range() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let t = token();
            assert_eq!(t.len(), 32);
            assert!(seen.insert(t));
        }
        let r = Rng::new();
        for _ in 0..10_000 {
            let u = r.unit();
            assert!(u > 0.0 && u <= 1.0);
        }
    }
}
