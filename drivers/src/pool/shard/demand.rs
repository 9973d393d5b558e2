//! A shard's demand (callers holding a connection or waiting for one),
//! averaged over time. It tells a shard persistently short of connections
//! from one whose callers queued for a moment, or whose worker the OS did
//! not run for a few milliseconds (eight workers on two cores): only the
//! first is worth moving a connection for, which costs a close on one
//! worker and a connect on another. Sans-IO: the caller passes the clock.

use std::time::{Duration, Instant};

/// The averaging's time constant: an imbalance has to last about this
/// long to show.
pub(super) const WINDOW: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug)]
pub(super) struct Demand {
    /// The average up to `at`.
    avg: f64,
    /// The demand since `at`.
    now: usize,
    at: Instant,
}

impl Demand {
    pub(super) fn new(at: Instant) -> Demand {
        Demand {
            avg: 0.0,
            now: 0,
            at,
        }
    }

    /// The demand is `current` from `now` on. Observations at one instant
    /// (a loop turn's clock) cost no arithmetic: the last one counts.
    pub(super) fn observe(&mut self, now: Instant, current: usize) {
        if now > self.at {
            self.avg = self.average(now);
            self.at = now;
        }
        self.now = current;
    }

    /// The time-weighted average as of `now`: exponentially weighted over
    /// `WINDOW`, the present demand counted since it began.
    pub(super) fn average(&self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        let keep = (-dt / WINDOW.as_secs_f64()).exp();
        self.now as f64 + (self.avg - self.now as f64) * keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_demand_held_for_a_window_counts_about_two_thirds() {
        let t0 = Instant::now();
        let mut d = Demand::new(t0);
        d.observe(t0, 3);
        let a = d.average(t0 + WINDOW);
        assert!((a - 3.0 * (1.0 - (-1f64).exp())).abs() < 1e-9, "{a}");
        // And tends to the demand held.
        assert!((d.average(t0 + WINDOW * 20) - 3.0).abs() < 1e-6);
    }

    #[test]
    fn a_moment_of_queueing_barely_moves_the_average() {
        let t0 = Instant::now();
        let mut d = Demand::new(t0);
        let mut t = t0;
        // One caller busy a third of the time, with a spike to five
        // callers for 5 ms every 100 ms.
        for _ in 0..100 {
            d.observe(t, 1);
            t += 30 * MS;
            d.observe(t, 5);
            t += 5 * MS;
            d.observe(t, 0);
            t += 65 * MS;
        }
        let a = d.average(t);
        assert!(a > 0.3 && a < 0.8, "{a}");
    }

    #[test]
    fn splitting_an_interval_changes_nothing() {
        let t0 = Instant::now();
        let (mut one, mut many) = (Demand::new(t0), Demand::new(t0));
        one.observe(t0, 2);
        many.observe(t0, 2);
        for i in 1..=10 {
            // Same demand observed again, and several times at one instant.
            many.observe(t0 + 70 * MS * i, 2);
            many.observe(t0 + 70 * MS * i, 2);
        }
        let end = t0 + 700 * MS;
        assert!((one.average(end) - many.average(end)).abs() < 1e-9);
        // The last observation at an instant is the one that counts.
        many.observe(end, 7);
        many.observe(end, 1);
        one.observe(end, 1);
        let later = end + 300 * MS;
        assert!((one.average(later) - many.average(later)).abs() < 1e-9);
    }
}
