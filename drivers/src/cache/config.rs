//! `CacheConfig`: the knobs of one cache, each with a conservative default,
//! validated when the cache is declared.

use std::fmt;
use std::time::Duration;

/// What a caller does when another process has held the computation lock
/// for longer than [`CacheConfig::wait_timeout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnTimeout {
    /// Compute without the lock and store the result. Favours availability:
    /// a stuck or slow holder costs one extra computation per process.
    Compute,
    /// Fail with [`CacheError::LockTimeout`](super::CacheError::LockTimeout).
    /// Favours the backend: nothing more is computed while a holder exists.
    Fail,
}

/// Configuration of one [`Cache`](super::Cache).
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Prepended to every key: the value lives at `{prefix}{key}`, its lock
    /// at `lock:{prefix}{key}`. Default `"cache:"`.
    pub key_prefix: String,
    /// How long the computation lock lives unless its holder releases it
    /// first; a crashed holder blocks others for at most this long. Keep it
    /// above the slowest computation, or a second process starts computing
    /// while the first is still at it. Default 10 s.
    pub lease: Duration,
    /// How long a process waits for another process's computation before
    /// [`on_timeout`](CacheConfig::on_timeout) applies. Default 5 s.
    pub wait_timeout: Duration,
    /// First delay between polls of the cache while waiting; it doubles up
    /// to `poll_max`, with jitter. Default 5 ms.
    pub poll_min: Duration,
    /// Longest delay between polls. Default 100 ms.
    pub poll_max: Duration,
    /// See [`OnTimeout`]. Default [`OnTimeout::Compute`].
    pub on_timeout: OnTimeout,
    /// Probabilistic early refresh (XFetch) with this β; `None` turns it
    /// off. β = 1 is the paper's choice; above 1 refreshes earlier. Default
    /// `None`.
    pub xfetch_beta: Option<f64>,
    /// Cache compute errors for this long (negative caching); `None` never
    /// stores them. Default `None`.
    pub negative_ttl: Option<Duration>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            key_prefix: "cache:".into(),
            lease: Duration::from_secs(10),
            wait_timeout: Duration::from_secs(5),
            poll_min: Duration::from_millis(5),
            poll_max: Duration::from_millis(100),
            on_timeout: OnTimeout::Compute,
            xfetch_beta: None,
            negative_ttl: None,
        }
    }
}

/// The β the XFetch paper recommends.
pub const DEFAULT_XFETCH_BETA: f64 = 1.0;

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid cache configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl CacheConfig {
    /// Checks the values against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(ConfigError(m.to_string()));
        // Redis takes PX in whole milliseconds, and PX 0 is an error.
        if self.lease < Duration::from_millis(1) {
            return err("lease must be at least 1 ms");
        }
        if self.poll_min.is_zero() {
            return err("poll_min must be above zero (a zero delay spins on Redis)");
        }
        if self.poll_min > self.poll_max {
            return err("poll_min must not exceed poll_max");
        }
        if let Some(b) = self.xfetch_beta {
            if !(b.is_finite() && b > 0.0) {
                return err("xfetch_beta must be a positive finite number");
            }
        }
        if let Some(t) = self.negative_ttl {
            if t < Duration::from_millis(1) {
                return err("negative_ttl must be at least 1 ms");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        CacheConfig::default().validate().unwrap();
        let bad = [
            CacheConfig {
                lease: Duration::from_micros(10),
                ..CacheConfig::default()
            },
            CacheConfig {
                poll_min: Duration::ZERO,
                ..CacheConfig::default()
            },
            CacheConfig {
                poll_min: Duration::from_secs(1),
                poll_max: Duration::from_millis(1),
                ..CacheConfig::default()
            },
            CacheConfig {
                xfetch_beta: Some(f64::NAN),
                ..CacheConfig::default()
            },
            CacheConfig {
                xfetch_beta: Some(0.0),
                ..CacheConfig::default()
            },
            CacheConfig {
                negative_ttl: Some(Duration::ZERO),
                ..CacheConfig::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
