//! How many completions an idle worker asks the kernel to gather before it
//! wakes up.
//!
//! Under load, completions trickle in: a request here, a database reply
//! there. Waking for each one costs a loop turn, and a turn that ends with a
//! handful of queued statements costs a database write. Since 6.12 the kernel
//! can hold a wait for up to a window (`min_wait_usec`) while it gathers a
//! number of completions, and returns with whatever came once the window has
//! passed. A wait that starts after a long idle spell is not held at all: the
//! window counts from the start of the wait.
//!
//! Holding only pays when many independent peers keep the worker busy: with
//! a few, a held wait mostly delays the one reply that was coming. So a wait
//! is held only when at least [`MIN_SOURCES`] distinct connections were
//! active in the last epoch, and only while held waits keep gathering more
//! completions than they hold back lone ones; otherwise the policy probes
//! now and then, with a backoff. This module is the policy only: durations
//! and counts in, a decision out, no clock and no ring.

use std::time::Duration;

/// Distinct active peers below which waits are never held.
pub(crate) const MIN_SOURCES: u32 = 16;

/// How often the count of active peers is renewed.
pub(crate) const EPOCH: Duration = Duration::from_millis(10);

/// A held wait that returned within this much past the window was released
/// by the window, not by a late first arrival.
const SLACK: Duration = Duration::from_micros(10);

/// Waits between probes while holding is off: the first gap, and the most
/// it doubles to while probes keep failing.
const PROBE_GAP: (u32, u32) = (8, 256);

#[derive(Debug, Clone)]
pub(crate) struct Coalesce {
    window: Duration,
    max: u32,
    /// Held waits' record: twice the completions they gathered beyond the
    /// first, less one for each that held a lone completion back; holding
    /// stays on while this is positive.
    worth: i32,
    /// While holding is off: waits until the next probe, and the gap after it.
    until_probe: u32,
    gap: u32,
    /// Whether the wait being observed was held.
    held: bool,
    /// Distinct peers active in the last epoch.
    sources: u32,
    /// Waits held so far (diagnostics).
    pub(crate) held_total: u64,
}

/// Bound of `worth`, so a long good run is undone by a few bad waits.
const WORTH_MAX: i32 = 8;

impl Coalesce {
    /// `window` zero turns coalescing off: every wait asks for one completion.
    pub(crate) fn new(window: Duration, max: u32) -> Coalesce {
        Coalesce {
            window,
            max: max.max(1),
            worth: 0,
            until_probe: 0,
            gap: PROBE_GAP.0,
            held: false,
            sources: 0,
            held_total: 0,
        }
    }

    /// Records how many distinct peers were active in the epoch just ended.
    pub(crate) fn epoch_ended(&mut self, sources: u32) {
        self.sources = sources;
    }

    /// The next wait: how many completions it asks for and the window it
    /// may be held for (`None`: return at the first completion).
    pub(crate) fn next(&mut self) -> (u32, Option<Duration>) {
        self.held = !self.window.is_zero()
            && self.max > 1
            && self.sources >= MIN_SOURCES
            && self.should_hold();
        if self.held {
            self.held_total += 1;
            (self.max, Some(self.window))
        } else {
            (1, None)
        }
    }

    fn should_hold(&mut self) -> bool {
        if self.worth > 0 {
            return true;
        }
        if self.until_probe == 0 {
            self.until_probe = self.gap;
            return true;
        }
        self.until_probe -= 1;
        false
    }

    /// Records what a wait got: `completions` after `waited`.
    pub(crate) fn observe(&mut self, waited: Duration, completions: usize) {
        if !self.held {
            return;
        }
        if completions >= 2 {
            // An extra completion saves a loop turn (a syscall, often a
            // database write); a lone one held back costs latency, not
            // CPU: so one gathered outweighs two held back.
            let extra = i32::try_from(2 * (completions - 1)).unwrap_or(WORTH_MAX);
            self.worth = (self.worth.max(0) + extra).min(WORTH_MAX);
            self.gap = PROBE_GAP.0;
        } else if completions == 1 && waited <= self.window + SLACK {
            // One completion, returned by the window: it came early and
            // was held back for nothing.
            self.worth -= 1;
            if self.worth <= 0 {
                self.worth = 0;
                self.gap = (self.gap * 2).min(PROBE_GAP.1);
                self.until_probe = self.gap;
            }
        }
        // Otherwise nothing came within the window: holding cost nothing.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// Runs `waits` waits, each answered by `answer(held)`; returns how
    /// many were held.
    fn busy(window: Duration) -> Coalesce {
        let mut c = Coalesce::new(window, 32);
        c.epoch_ended(64);
        c
    }

    fn run(c: &mut Coalesce, waits: usize, answer: impl Fn() -> (u64, usize)) -> usize {
        let mut held = 0;
        for _ in 0..waits {
            let (want, window) = c.next();
            if window.is_some() {
                assert_eq!(want, 32);
                held += 1;
            } else {
                assert_eq!(want, 1);
            }
            let (t, n) = answer();
            c.observe(us(t), n);
        }
        held
    }

    #[test]
    fn one_request_at_a_time_is_rarely_held() {
        let mut c = busy(us(50));
        // A lone reply 40 µs into every wait: holding only delays it.
        let held = run(&mut c, 10_000, || (50, 1));
        // The probes back off to one in 256 waits.
        assert!(held <= 10_000 / 256 + 8, "held {held} of 10000");
        assert!(held >= 10_000 / 257, "still probes: held {held}");
    }

    #[test]
    fn many_independent_arrivals_are_gathered() {
        let mut c = busy(us(50));
        let held = run(&mut c, 1_000, || (50, 3));
        // Off for the first probe gap only.
        assert!(held >= 1_000 - 2 * PROBE_GAP.0 as usize, "held {held}");
    }

    #[test]
    fn a_load_that_drops_to_one_at_a_time_stops_holding_at_once() {
        let mut c = busy(us(50));
        run(&mut c, 100, || (50, 4));
        assert!(c.next().1.is_some());
        c.observe(us(50), 1);
        // Worth was at its cap: a few lone completions turn holding off.
        let held = run(&mut c, 100, || (50, 1));
        assert!(held <= WORTH_MAX as usize + 1, "held {held}");
    }

    #[test]
    fn a_late_lone_arrival_does_not_count_against_holding() {
        let mut c = busy(us(50));
        run(&mut c, 100, || (50, 4));
        // Quiet spells: nothing came within the window, so holding cost nothing.
        let held = run(&mut c, 100, || (400, 1));
        assert_eq!(held, 100);
    }

    #[test]
    fn a_few_peers_are_never_held_for() {
        let mut c = busy(us(50));
        c.epoch_ended(MIN_SOURCES - 1);
        assert_eq!(run(&mut c, 100, || (50, 3)), 0);
        c.epoch_ended(MIN_SOURCES);
        assert!(run(&mut c, 100, || (50, 3)) > 0);
    }

    #[test]
    fn a_zero_window_never_holds() {
        let mut c = busy(Duration::ZERO);
        assert_eq!(run(&mut c, 100, || (50, 8)), 0);
    }
}
