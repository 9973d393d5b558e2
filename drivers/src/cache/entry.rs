//! What a cache key holds: a one-line text header carrying XFetch's inputs
//! (δ, the recompute time, and the expiry), then the encoded payload.
//!
//! ```text
//! TPC1 v <delta_us> <expiry_unix_ms>\n<codec bytes>
//! TPC1 e <delta_us> <expiry_unix_ms>\n<error message>      (negative entry)
//! ```
//!
//! The expiry travels with the value rather than being read back with
//! `PTTL`, so a hit stays one `GET`. It is wall-clock time, so readers on
//! other hosts compare it against their own clocks: skew shifts when early
//! refresh starts, never whether the value is served.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MAGIC: &[u8] = b"TPC1 ";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Value,
    Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    /// How long the computation that produced it took.
    pub(crate) delta_us: u64,
    /// When Redis drops it (unix milliseconds).
    pub(crate) expiry_ms: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) kind: Kind,
    pub(crate) meta: Meta,
    raw: Vec<u8>,
    body: usize,
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl Meta {
    pub(crate) fn new(delta: Duration, ttl: Duration) -> Meta {
        Meta {
            delta_us: delta.as_micros().min(u128::from(u64::MAX)) as u64,
            expiry_ms: unix_ms().saturating_add(ttl.as_millis() as u64),
        }
    }

    /// XFetch: refresh when `now − δ·β·ln(u) ≥ expiry`, `u` uniform in
    /// (0, 1]. Readers far from the expiry almost never refresh; the closer
    /// it gets, and the slower the computation, the likelier one does.
    pub(crate) fn should_refresh(&self, now_ms: u64, beta: f64, u: f64) -> bool {
        let head_start_ms = self.delta_us as f64 / 1000.0 * beta * -u.ln();
        now_ms as f64 + head_start_ms >= self.expiry_ms as f64
    }
}

pub(crate) fn encode(kind: Kind, meta: Meta, payload: &[u8]) -> Vec<u8> {
    let tag = match kind {
        Kind::Value => 'v',
        Kind::Error => 'e',
    };
    let head = format!("{tag} {} {}\n", meta.delta_us, meta.expiry_ms);
    let mut out = Vec::with_capacity(MAGIC.len() + head.len() + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// `None` for anything this module did not write (another program's key, a
/// future format): the caller treats it as a miss and overwrites it.
pub(crate) fn decode(raw: Vec<u8>) -> Option<Entry> {
    let rest = raw.strip_prefix(MAGIC)?;
    let nl = memchr::memchr(b'\n', rest)?;
    let head = std::str::from_utf8(&rest[..nl]).ok()?;
    let mut it = head.split(' ');
    let kind = match it.next()? {
        "v" => Kind::Value,
        "e" => Kind::Error,
        _ => return None,
    };
    let delta_us = it.next()?.parse().ok()?;
    let expiry_ms = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    let body = MAGIC.len() + nl + 1;
    Some(Entry {
        kind,
        meta: Meta {
            delta_us,
            expiry_ms,
        },
        raw,
        body,
    })
}

impl Entry {
    pub(crate) fn payload(&self) -> &[u8] {
        &self.raw[self.body..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_foreign_values() {
        let meta = Meta {
            delta_us: 1234,
            expiry_ms: 1_700_000_000_123,
        };
        let raw = encode(Kind::Value, meta, b"{\"a\":\n1}");
        let e = decode(raw).unwrap();
        assert_eq!((e.kind, e.meta), (Kind::Value, meta));
        assert_eq!(e.payload(), b"{\"a\":\n1}");
        let e = decode(encode(Kind::Error, meta, b"")).unwrap();
        assert_eq!((e.kind, e.payload()), (Kind::Error, &b""[..]));
        for foreign in [
            &b"plain"[..],
            b"TPC1 v 1 2",
            b"TPC1 x 1 2\n",
            b"TPC1 v a 2\n",
            b"TPC1 v 1 2 3\n",
            b"TPC2 v 1 2\n",
        ] {
            assert!(decode(foreign.to_vec()).is_none(), "{foreign:?}");
        }
    }

    #[test]
    fn xfetch_refreshes_more_often_near_expiry() {
        let now = 1_000_000;
        let m = Meta {
            delta_us: 100_000, // 100 ms to recompute
            expiry_ms: now + 1000,
        };
        // Far from expiry: needs u < e^-10.
        assert!(!m.should_refresh(now, 1.0, 0.5));
        assert!(m.should_refresh(now, 1.0, 1e-5));
        // Past expiry: always.
        assert!(m.should_refresh(now + 1000, 1.0, 1.0));
        // A larger β starts earlier for the same draw.
        assert!(!m.should_refresh(now + 900, 1.0, 0.5));
        assert!(m.should_refresh(now + 900, 2.0, 0.5));
        // The share of readers that refresh at a given distance follows
        // e^(-gap/(δβ)): at 100 ms before expiry with δ = 100 ms, ~37%.
        let mut x = 0x1234_5678_u64;
        let mut hits = 0;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            hits += m.should_refresh(now + 900, 1.0, u) as u32;
        }
        let share = hits as f64 / 100_000.0;
        assert!((share - (-1.0f64).exp()).abs() < 0.01, "{share}");
    }
}
