//! Warm-up pacing: when a shard starts, `min_idle` connections are opened
//! after a delay plus jitter, in batches with pauses, so a fleet restarting
//! at once does not open all its connections in the same second.

use std::time::Duration;

/// Open `count` connections at `at` (from the shard's start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WarmupStep {
    pub at: Duration,
    pub count: usize,
}

/// The warm-up schedule for `target` connections: the first batch at
/// `delay + jitter * u` (u uniform in [0, 1)), then one batch of `batch`
/// every `pause` (a batch's own connect time comes on top at run time).
pub fn warmup_plan(
    target: usize,
    delay: Duration,
    jitter: Duration,
    u: f64,
    batch: usize,
    pause: Duration,
) -> Vec<WarmupStep> {
    let batch = batch.max(1);
    let start = delay + jitter.mul_f64(u.clamp(0.0, 1.0));
    (0..target.div_ceil(batch))
        .map(|i| WarmupStep {
            at: start + pause * i as u32,
            count: batch.min(target - i * batch),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_paced_after_delay_and_jitter() {
        let ms = Duration::from_millis;
        let plan = warmup_plan(7, ms(500), ms(1000), 0.25, 3, ms(100));
        assert_eq!(
            plan,
            vec![
                WarmupStep {
                    at: ms(750),
                    count: 3
                },
                WarmupStep {
                    at: ms(850),
                    count: 3
                },
                WarmupStep {
                    at: ms(950),
                    count: 1
                },
            ]
        );
        assert!(warmup_plan(0, ms(1), ms(1), 0.5, 2, ms(1)).is_empty());
        // Jitter spreads instances over [delay, delay + jitter].
        let first = |u| warmup_plan(1, ms(200), ms(800), u, 1, ms(0))[0].at;
        assert_eq!(first(0.0), ms(200));
        assert_eq!(first(0.999_999), ms(200) + ms(800).mul_f64(0.999_999));
    }
}
