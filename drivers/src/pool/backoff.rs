//! Retries with exponential back-off and full jitter, whose whole budget
//! fits strictly inside the caller's deadline.

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, Instant};

use tidepool_engine::rt::time;

use super::PoolError;

/// Full-jitter exponential back-off: before retry `n` (1-based) wait a
/// uniform time in `[0, min(max, base * 2^(n-1))]`.
#[derive(Clone, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_secs(1),
            max_attempts: 8,
        }
    }
}

impl Backoff {
    /// The delay before retry `n`, for a uniform sample `u` in [0, 1).
    pub fn delay(&self, n: u32, u: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << n.saturating_sub(1).min(20));
        exp.min(self.max).mul_f64(u.clamp(0.0, 1.0))
    }
}

/// How a retried operation ended without success.
#[derive(Debug)]
pub enum RetryError<E> {
    /// A failure that is not worth retrying, or the last of the attempts.
    Failed(E),
    /// The deadline came first; carries the last failure, if any.
    TimedOut(Option<E>),
}

/// Runs `attempt` until it succeeds, fails permanently, runs out of
/// attempts, or the next try could not finish before `deadline`. Each
/// attempt is itself bounded by the deadline.
pub async fn retry_within<T, E, F, Fut>(
    deadline: Instant,
    backoff: &Backoff,
    attempt: F,
) -> Result<T, RetryError<E>>
where
    E: PoolError,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry_observed(deadline, backoff, attempt, |_| None).await
}

/// [`retry_within`], telling `failed` of each failure that will be retried
/// before its back-off starts; a `Some(cap)` it returns caps that delay
/// (a pool that learns the database is down probes at a steadier pace).
pub async fn retry_observed<T, E, F, Fut>(
    deadline: Instant,
    backoff: &Backoff,
    mut attempt: F,
    mut failed: impl FnMut(&E) -> Option<Duration>,
) -> Result<T, RetryError<E>>
where
    E: PoolError,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut n = 0u32;
    // Kept so a deadline that cuts an attempt short still reports why the
    // earlier ones failed.
    let mut last: Option<E> = None;
    loop {
        n += 1;
        if Instant::now() >= deadline {
            return Err(RetryError::TimedOut(last));
        }
        let e = match time::timeout_at(deadline, attempt()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e,
            Err(_) => return Err(RetryError::TimedOut(last)),
        };
        if !e.is_transient() || n >= backoff.max_attempts {
            return Err(RetryError::Failed(e));
        }
        let mut delay = backoff.delay(n, random_unit());
        if let Some(cap) = failed(&e) {
            delay = delay.min(cap);
        }
        // Strictly inside the budget: a retry that would start at or after
        // the deadline is not made.
        if Instant::now() + delay >= deadline {
            return Err(RetryError::TimedOut(Some(e)));
        }
        last = Some(e);
        time::sleep(delay).await;
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let local = 0u8;
    t ^ ((&local as *const u8 as u64).rotate_left(32)) ^ 0x9E37_79B9_7F4A_7C15
}

/// A uniform sample in [0, 1) from a per-thread splitmix64 generator
/// (jitter needs spread, not cryptographic quality).
pub(crate) fn random_unit() -> f64 {
    RNG.with(|s| {
        let mut z = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Debug)]
    struct E(bool);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "e{}", self.0)
        }
    }
    impl std::error::Error for E {}
    impl PoolError for E {
        fn is_transient(&self) -> bool {
            self.0
        }
    }

    #[test]
    fn delays_grow_and_are_capped() {
        let b = Backoff::default();
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(20));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(80));
        assert_eq!(b.delay(30, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
        for _ in 0..1000 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn permanent_errors_are_not_retried() {
        let calls = RefCell::new(0);
        let r: Result<(), _> = tidepool_engine::rt::block_on(retry_within(
            Instant::now() + Duration::from_secs(5),
            &Backoff::default(),
            || {
                *calls.borrow_mut() += 1;
                async { Err(E(false)) }
            },
        ));
        assert!(matches!(r, Err(RetryError::Failed(E(false)))));
        assert_eq!(*calls.borrow(), 1);
    }

    #[test]
    fn transient_errors_retry_within_the_deadline() {
        let calls = RefCell::new(0);
        let start = Instant::now();
        let budget = Duration::from_millis(150);
        let b = Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(40),
            max_attempts: 100,
        };
        let r: Result<(), _> =
            tidepool_engine::rt::block_on(retry_within(start + budget, &b, || {
                *calls.borrow_mut() += 1;
                async { Err(E(true)) }
            }));
        assert!(matches!(r, Err(RetryError::TimedOut(Some(E(true))))));
        assert!(*calls.borrow() >= 2, "retried");
        assert!(
            start.elapsed() < budget + Duration::from_millis(20),
            "stayed inside the budget"
        );
        let calls = RefCell::new(0);
        let r =
            tidepool_engine::rt::block_on(retry_within(start + Duration::from_secs(5), &b, || {
                *calls.borrow_mut() += 1;
                let n = *calls.borrow();
                async move {
                    if n < 3 {
                        Err(E(true))
                    } else {
                        Ok(n)
                    }
                }
            }));
        assert_eq!(r.unwrap(), 3);
    }
}
