//! `PoolConfig`: every knob with a finite, conservative default, validated
//! when the pool is built.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::discipline::Class;

/// Configuration of one pool (all shards together). It reads from a
/// configuration file (TOML, as `tidepool::config` loads it): durations
/// with units (`acquire_timeout = "2s"`), and `"off"` for the optional ones.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Connections kept open even when idle (spread over the shards).
    /// Default 0.
    pub min_idle: usize,
    /// Total connections across all workers; each worker's shard gets an
    /// even share (remainder spread). Default 10. The supervisor may move it.
    pub max_open: usize,
    /// How long `get()` waits for a connection before failing. Default 5 s.
    #[serde(with = "tidepool_engine::config::duration")]
    pub acquire_timeout: Duration,
    /// Budget for establishing one connection, retries included. Default 5 s.
    #[serde(with = "tidepool_engine::config::duration")]
    pub connect_timeout: Duration,
    /// An idle connection unused this long is closed (never below
    /// `min_idle`). Default 60 s.
    #[serde(with = "tidepool_engine::config::duration")]
    pub idle_timeout: Duration,
    /// A connection is retired after this age (when idle; never while in
    /// use), with +-`lifetime_jitter` so connections do not all reconnect in
    /// the same second. Default 30 min.
    #[serde(with = "tidepool_engine::config::duration::option")]
    pub max_lifetime: Option<Duration>,
    /// Fraction of `max_lifetime` used as jitter. Default 0.1.
    pub lifetime_jitter: f64,
    /// A connection idle longer than this is health-checked before it is
    /// handed out. Default 30 s; `None` never checks.
    #[serde(with = "tidepool_engine::config::duration::option")]
    pub check_after_idle: Option<Duration>,
    /// A connection held longer than this is reported as a possible leak,
    /// with the route that holds it. Default `None`.
    #[serde(with = "tidepool_engine::config::duration::option")]
    pub leak_threshold: Option<Duration>,
    /// Connects in flight at once per shard (bounded fan-out). Default 2.
    pub max_connecting: usize,
    /// How often each shard reaps idle and expired connections on its own
    /// timer, independent of the supervisor. Default 1 s.
    #[serde(with = "tidepool_engine::config::duration")]
    pub reap_interval: Duration,
    /// Warm-up: wait this long after start ... Default 0.
    #[serde(with = "tidepool_engine::config::duration")]
    pub warmup_delay: Duration,
    /// ... plus a uniform random delay in `[0, warmup_jitter]`. Default 1 s.
    #[serde(with = "tidepool_engine::config::duration")]
    pub warmup_jitter: Duration,
    /// Warm-up opens `min_idle` in batches of this many ... Default 2.
    pub warmup_batch: usize,
    /// ... with this pause between batches. Default 100 ms.
    #[serde(with = "tidepool_engine::config::duration")]
    pub warmup_pause: Duration,
    /// Multiplexed pools (Redis): commands in flight per connection before
    /// a new connection is opened or callers wait. Ignored for exclusive
    /// pools. Default 64.
    pub max_in_flight: usize,
    /// How callers waiting for a connection are served and shed under
    /// overload (default: adaptive; see `pool::discipline`).
    pub queue: super::discipline::QueueConfig,
    /// Request class by route, for `get_for(route)` (routes not listed
    /// are `default`; `get_as` names the class per call). In TOML:
    /// `[pools.pg.classes]` with `"/report" = "sheddable"`.
    pub classes: BTreeMap<String, Class>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            min_idle: 0,
            max_open: 10,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            lifetime_jitter: 0.1,
            check_after_idle: Some(Duration::from_secs(30)),
            leak_threshold: None,
            max_connecting: 2,
            reap_interval: Duration::from_secs(1),
            warmup_delay: Duration::ZERO,
            warmup_jitter: Duration::from_secs(1),
            warmup_batch: 2,
            warmup_pause: Duration::from_millis(100),
            max_in_flight: 64,
            queue: super::discipline::QueueConfig::default(),
            classes: BTreeMap::new(),
        }
    }
}

/// A configuration that cannot work, named by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid pool configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl PoolConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if self.max_open == 0 {
            return err("max_open must be at least 1".into());
        }
        if self.min_idle > self.max_open {
            return err(format!(
                "min_idle ({}) exceeds max_open ({})",
                self.min_idle, self.max_open
            ));
        }
        for (name, d) in [
            ("acquire_timeout", self.acquire_timeout),
            ("connect_timeout", self.connect_timeout),
            ("idle_timeout", self.idle_timeout),
            ("reap_interval", self.reap_interval),
        ] {
            if d.is_zero() {
                return err(format!("{name} must be greater than zero"));
            }
        }
        if self.max_lifetime.is_some_and(|d| d.is_zero()) {
            return err("max_lifetime must be greater than zero (or None)".into());
        }
        if !(0.0..0.5).contains(&self.lifetime_jitter) {
            return err(format!(
                "lifetime_jitter ({}) must be in [0, 0.5)",
                self.lifetime_jitter
            ));
        }
        if self.max_connecting == 0 {
            return err("max_connecting must be at least 1".into());
        }
        if self.warmup_batch == 0 {
            return err("warmup_batch must be at least 1".into());
        }
        if self.max_in_flight == 0 {
            return err("max_in_flight must be at least 1".into());
        }
        Ok(())
    }
}

/// Splits `total` over `shards` as evenly as possible (the first
/// `total % shards` get one more), so the caps always sum to `total`.
pub fn split(total: usize, shards: usize) -> Vec<usize> {
    (0..shards.max(1))
        .map(|i| share(total, shards, i))
        .collect()
}

/// Shard `index`'s part of [`split`]`(total, shards)`, without the Vec.
pub fn share(total: usize, shards: usize, index: usize) -> usize {
    let shards = shards.max(1);
    total / shards + usize::from(index < total % shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sums_to_total() {
        for total in 0..50 {
            for shards in 1..9 {
                let s = split(total, shards);
                assert_eq!(s.iter().sum::<usize>(), total);
                assert!(s.iter().max().unwrap() - s.iter().min().unwrap() <= 1);
            }
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(PoolConfig::default().validate().is_ok());
        let bad = |f: fn(&mut PoolConfig)| {
            let mut c = PoolConfig::default();
            f(&mut c);
            c.validate().unwrap_err().0
        };
        assert!(bad(|c| c.max_open = 0).contains("max_open"));
        assert!(bad(|c| c.min_idle = 11).contains("min_idle"));
        assert!(bad(|c| c.acquire_timeout = Duration::ZERO).contains("acquire_timeout"));
        assert!(bad(|c| c.lifetime_jitter = 0.7).contains("lifetime_jitter"));
        assert!(bad(|c| c.max_connecting = 0).contains("max_connecting"));
    }
}
