//! The user-facing knobs: [`PoolAutoscale`], its [`Target`], and validation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::Signals;

/// Automatic resizing of one pool's `max_open`.
///
/// The controller moves `max_open` inside `[min, max]`, one `step` at a time,
/// when the `target` signal says the pool is too small or too large for a whole
/// `window`, and never more often than `cooldown`. See `docs/autoscale.md` for
/// the algorithm and the guards that stop it from growing into a database that
/// cannot take more connections.
///
/// # Defaults
///
/// | field      | default                                  |
/// |------------|------------------------------------------|
/// | `enabled`  | `false` (a pool keeps its static size)   |
/// | `min`      | `1`                                      |
/// | `max`      | `32`                                     |
/// | `target`   | `Target::AcquireWaitP99(5 ms)`           |
/// | `window`   | `30 s`                                   |
/// | `step`     | `1`                                      |
/// | `cooldown` | `5 s`                                    |
///
/// ```
/// use std::time::Duration;
/// use tidepool_supervisor::{PoolAutoscale, Target};
///
/// let d = PoolAutoscale::default();
/// assert!(!d.enabled);
/// assert_eq!((d.min, d.max), (1, 32));
/// assert!(matches!(d.target, Target::AcquireWaitP99(t) if t == Duration::from_millis(5)));
/// assert_eq!(d.window, Duration::from_secs(30));
/// assert_eq!(d.step, 1);
/// assert_eq!(d.cooldown, Duration::from_secs(5));
///
/// // Typical use: switch it on and set the rails; keep the rest.
/// let cfg = PoolAutoscale { enabled: true, min: 4, max: 64, ..PoolAutoscale::default() };
/// assert!(cfg.validate(16, 2).is_ok());
/// ```
///
/// In a configuration file (TOML, as `tidepool::config` loads it), under
/// the pool's `autoscale` table:
///
/// ```toml
/// enabled = true
/// min = 4
/// max = 64
/// target = { acquire_wait_p99 = "5ms" }   # or { idle_ratio = 0.3 }
/// window = "30s"
/// cooldown = "5s"
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolAutoscale {
    /// Whether the controller may resize the pool at all. Default `false`:
    /// autoscaling is opt-in, because a static pool is easier to reason about
    /// and most services are sized once.
    pub enabled: bool,
    /// Lower rail for `max_open`. Default `1`. The controller never goes below
    /// it, whatever the signals say; set it to what the service needs to
    /// answer its first burst without waiting for a growth step.
    pub min: usize,
    /// Upper rail for `max_open`. Default `32`. The controller never goes above
    /// it; set it to the share of the database's `max_connections` this
    /// process may use (divide by the number of replicas of the service).
    pub max: usize,
    /// What "too small" and "too large" mean. Default
    /// `Target::AcquireWaitP99(5 ms)`.
    pub target: Target,
    /// How long a signal must hold before the controller acts on it, and how
    /// much evidence it gathers at a new size before judging that size.
    /// Default `30 s`. A first growth, and every shrink, needs a full window
    /// of samples since the last change in which two thirds (growth) or all
    /// (shrink) of the ticks agree; growth that follows up its own previous
    /// step needs only a `cooldown` (see `docs/autoscale.md`).
    #[serde(with = "tidepool_engine::config::duration")]
    pub window: Duration,
    /// Connections added or removed per change. Default `1`. Raise it when
    /// bursts need many connections quickly: settling after a burst takes
    /// about `⅔ × window + (ceil(deficit / step) − 1) × cooldown`, plus the
    /// time to drain the queue.
    pub step: usize,
    /// Minimum time between two changes, in either direction. Default `5 s`.
    /// It is also the pace of follow-up growth during a sustained shortage:
    /// once a first step was taken on a full window of evidence, each
    /// further step needs only this long (while queries have not slowed
    /// down since). Raise it to space changes out when connection setup is
    /// expensive.
    #[serde(with = "tidepool_engine::config::duration")]
    pub cooldown: Duration,
}

impl Default for PoolAutoscale {
    fn default() -> Self {
        PoolAutoscale {
            enabled: false,
            min: 1,
            max: 32,
            target: Target::default(),
            window: Duration::from_secs(30),
            step: 1,
            cooldown: Duration::from_secs(5),
        }
    }
}

/// The signal the controller steers by.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tidepool_supervisor::{Pressure, Target};
///
/// // Keep the p99 wait for a connection under 5 ms (the default).
/// let t = Target::AcquireWaitP99(Duration::from_millis(5));
/// // Keep at most 30% of open connections idle.
/// let t = Target::IdleRatio(0.30);
/// // Anything else: say Grow / Shrink / Hold for each sample.
/// let t = Target::Custom(Arc::new(|s| if s.waiting > 8 { Pressure::Grow } else { Pressure::Hold }));
/// assert_eq!(format!("{t:?}"), "Custom");
/// ```
#[derive(Clone)]
pub enum Target {
    /// Grow while the p99 time to acquire a connection stays above this;
    /// shrink only when it stays under half of it, nobody waits, and more
    /// than half of the open connections sit idle.
    AcquireWaitP99(Duration),
    /// Shrink while more than this fraction (in `(0, 1)`) of open connections
    /// sit idle and nobody waits; grow while no connection is idle and
    /// requests wait.
    IdleRatio(f64),
    /// A signal of your own, asked once per sample. `Grow` must hold for most
    /// of the window and `Shrink` for all of it, like the built-in targets;
    /// the guards, rails, cooldown and oscillation lock still apply.
    Custom(Arc<dyn Fn(&Signals) -> Pressure + Send + Sync>),
}

impl Default for Target {
    fn default() -> Self {
        Target::AcquireWaitP99(Duration::from_millis(5))
    }
}

/// How a [`Target`] is written in a configuration file: a table with one
/// key, `acquire_wait_p99 = "5ms"` or `idle_ratio = 0.3`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum TargetRepr {
    AcquireWaitP99(#[serde(with = "tidepool_engine::config::duration")] Duration),
    IdleRatio(f64),
}

impl serde::Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Target::AcquireWaitP99(d) => TargetRepr::AcquireWaitP99(*d).serialize(s),
            Target::IdleRatio(r) => TargetRepr::IdleRatio(*r).serialize(s),
            Target::Custom(_) => Err(serde::ser::Error::custom(
                "a custom autoscale target cannot be written to a configuration",
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match TargetRepr::deserialize(d)? {
            TargetRepr::AcquireWaitP99(t) => Target::AcquireWaitP99(t),
            TargetRepr::IdleRatio(r) => Target::IdleRatio(r),
        })
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::AcquireWaitP99(d) => f.debug_tuple("AcquireWaitP99").field(d).finish(),
            Target::IdleRatio(r) => f.debug_tuple("IdleRatio").field(r).finish(),
            Target::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// What a [`Target::Custom`] signal says about one sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pressure {
    /// The pool is too small.
    Grow,
    /// The pool is too large.
    Shrink,
    /// The pool is fine.
    Hold,
}

/// Why a [`PoolAutoscale`] was rejected. The message names the field.
#[derive(Clone, Debug, PartialEq)]
pub enum ConfigError {
    /// `min` is above `max`.
    MinAboveMax { min: usize, max: usize },
    /// `max` is zero: the pool could never hand out a connection.
    MaxZero,
    /// `min` is zero while the pool must keep `min_idle` idle connections.
    MinZeroWithMinIdle { min_idle: usize },
    /// `window` is zero: there would be no evidence behind a decision.
    ZeroWindow,
    /// `step` is zero: the controller could never change anything.
    ZeroStep,
    /// `Target::AcquireWaitP99` is zero: every wait would count as pressure.
    ZeroAcquireWaitTarget,
    /// `Target::IdleRatio` is NaN or outside `(0, 1)`.
    IdleRatioOutOfRange { value: f64 },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::MinAboveMax { min, max } => {
                write!(f, "autoscale.min ({min}) is above autoscale.max ({max})")
            }
            ConfigError::MaxZero => f.write_str("autoscale.max must be at least 1"),
            ConfigError::MinZeroWithMinIdle { min_idle } => write!(
                f,
                "autoscale.min is 0 but the pool keeps min_idle = {min_idle} idle connections; \
                 set autoscale.min >= 1"
            ),
            ConfigError::ZeroWindow => f.write_str("autoscale.window must be longer than zero"),
            ConfigError::ZeroStep => f.write_str("autoscale.step must be at least 1"),
            ConfigError::ZeroAcquireWaitTarget => {
                f.write_str("autoscale.target AcquireWaitP99 must be longer than zero")
            }
            ConfigError::IdleRatioOutOfRange { value } => write!(
                f,
                "autoscale.target IdleRatio must be a number strictly between 0 and 1, got {value}"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl PoolAutoscale {
    /// Checks the knobs against each other and against the pool they will
    /// drive (`start_max_open` is the pool's configured size, `min_idle` its
    /// minimum of idle connections).
    ///
    /// A disabled config is checked too, so a typo is caught the day it is
    /// written rather than the day someone flips `enabled`.
    ///
    /// `start_max_open` outside `[min, max]` is *not* an error: the controller
    /// clamps it onto the nearest rail at start (see [`Controller::new`]), so
    /// a pool configured with 100 connections and `max = 32` starts at 32.
    ///
    /// ```
    /// use tidepool_supervisor::{ConfigError, PoolAutoscale, Target};
    ///
    /// let bad = PoolAutoscale { min: 8, max: 4, ..PoolAutoscale::default() };
    /// assert_eq!(bad.validate(4, 0), Err(ConfigError::MinAboveMax { min: 8, max: 4 }));
    ///
    /// let nan = PoolAutoscale { target: Target::IdleRatio(f64::NAN), ..PoolAutoscale::default() };
    /// assert!(nan.validate(4, 0).unwrap_err().to_string().contains("IdleRatio"));
    ///
    /// // Starting outside the rails is clamped, not rejected.
    /// assert!(PoolAutoscale::default().validate(100, 0).is_ok());
    /// ```
    ///
    /// [`Controller::new`]: crate::Controller::new
    pub fn validate(&self, start_max_open: usize, min_idle: usize) -> Result<(), ConfigError> {
        // Clamped by the controller, documented above; named so the
        // signature says what the caller passes.
        let _ = start_max_open;
        if self.max == 0 {
            return Err(ConfigError::MaxZero);
        }
        if self.min > self.max {
            return Err(ConfigError::MinAboveMax {
                min: self.min,
                max: self.max,
            });
        }
        if self.min == 0 && min_idle > 0 {
            return Err(ConfigError::MinZeroWithMinIdle { min_idle });
        }
        if self.window.is_zero() {
            return Err(ConfigError::ZeroWindow);
        }
        if self.step == 0 {
            return Err(ConfigError::ZeroStep);
        }
        match &self.target {
            Target::AcquireWaitP99(t) if t.is_zero() => Err(ConfigError::ZeroAcquireWaitTarget),
            // Written so that NaN fails too: every comparison with NaN is false.
            Target::IdleRatio(r) if !(*r > 0.0 && *r < 1.0) => {
                Err(ConfigError::IdleRatioOutOfRange { value: *r })
            }
            _ => Ok(()),
        }
    }

    /// `start` moved onto the nearest rail, as the controller does at start.
    pub fn clamp(&self, start: usize) -> usize {
        // Not `usize::clamp`: that panics on min > max, and an unvalidated
        // config must not take the supervisor thread down.
        start.max(self.min).min(self.max.max(1))
    }
}
