//! When a saturated worker holds its wait to gather completions.
//!
//! Under load, completions trickle in: a request here, a database reply
//! there. Waking for each one costs a loop turn, and a turn that ends with a
//! handful of queued statements costs a database write. Since 6.12 the kernel
//! can hold a wait for up to a window (`min_wait_usec`) while it gathers a
//! number of completions, and returns with whatever came once the window has
//! passed. A wait that starts after a long idle spell is not held at all: the
//! window counts from the start of the wait.
//!
//! Holding costs latency: a request passes several waits on its way through
//! (its arrival, its database reply), and each may be held. Below
//! saturation that latency buys nothing users want: the CPU it saves is
//! capacity the worker does not need, and an open-loop client sees every
//! microsecond of it. So a wait is held only when:
//! - the worker is saturated: without holding, its thread uses at least
//!   [`HOT`] of a CPU (until that falls under [`COOL`]). Holding itself
//!   lowers the share, so it is measured in epochs that hold nothing: all
//!   of them while holding is off, and one in [`SAMPLE_EVERY`] while it is
//!   on; a running mean keeps one busy epoch from switching it on;
//! - holding does not cost throughput: completions per second in held
//!   epochs stay within [`KEEP_RATE`] of the unheld epochs'. A peer that
//!   waits for this worker's replies before it sends more (a closed-loop
//!   client, another batching runtime) turns every held wait into idle
//!   time on both sides; then holding is off for a while, longer each time
//!   it fails this way;
//! - at least [`MIN_SOURCES`] distinct connections were active in the last
//!   epoch;
//! - held waits keep gathering more completions than they hold back lone
//!   ones, with a probe now and then when they did not.
//!
//! This module is the policy only: durations and counts in, a decision out,
//! no clock and no ring.

use std::time::Duration;

/// Share of a CPU used by the worker, holding nothing, from which waits
/// are held: a worker with idle time left is not saturated...
pub(crate) const HOT: f64 = 0.98;
/// ...and below which they no longer are.
pub(crate) const COOL: f64 = 0.9;

/// While holding, one epoch in this many holds nothing, to measure the
/// share of a CPU and the throughput the worker has without it.
pub(crate) const SAMPLE_EVERY: u32 = 16;

/// Weight of a new sample in the running means.
const WEIGHT: f64 = 0.25;

/// Throughput held epochs must keep, as a share of the unheld epochs'.
pub(crate) const KEEP_RATE: f64 = 0.95;

/// Held epochs whose throughput is averaged before it is judged.
const JUDGE_AFTER: u32 = 8;

/// Epochs holding stays off after it cost throughput: the first time, and
/// the most that doubles to (1 s and about 80 s at 10 ms epochs).
const BLOCKED: (u32, u32) = (100, 8192);

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
    /// Hold every wait, whatever the policy says (tests, measurements).
    always: bool,
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
    /// Running mean of the share of a CPU used in epochs that held nothing.
    share: f64,
    /// Whether that share says the worker is saturated.
    hot: bool,
    /// Running means of completions per second in epochs that held nothing
    /// and in epochs that held.
    rate_unheld: f64,
    rate_held: f64,
    /// Epochs that held since holding (re)started; judged after [`JUDGE_AFTER`].
    held_epochs: u32,
    /// Epochs left during which holding is off because it cost
    /// throughput, and how long the next such spell lasts.
    blocked: u32,
    block_len: u32,
    /// Epochs since holding switched on (every [`SAMPLE_EVERY`]th holds nothing).
    epochs: u32,
    /// Whether the current epoch held a wait.
    held_in_epoch: bool,
    /// Waits held so far (diagnostics).
    pub(crate) held_total: u64,
}

/// Bound of `worth`, so a long good run is undone by a few bad waits.
const WORTH_MAX: i32 = 8;

impl Coalesce {
    /// `window` zero turns coalescing off: every wait asks for one completion.
    pub(crate) fn new(window: Duration, max: u32, always: bool) -> Coalesce {
        Coalesce {
            window,
            max: max.max(1),
            always,
            worth: 0,
            until_probe: 0,
            gap: PROBE_GAP.0,
            held: false,
            sources: 0,
            share: 0.0,
            hot: false,
            rate_unheld: 0.0,
            rate_held: 0.0,
            held_epochs: 0,
            blocked: 0,
            block_len: BLOCKED.0,
            epochs: 0,
            held_in_epoch: false,
            held_total: 0,
        }
    }

    /// Ends an epoch of length `len` in which `sources` distinct peers were
    /// active, `completions` were reaped, and the worker's thread used
    /// `cpu` of CPU time.
    pub(crate) fn epoch_ended(
        &mut self,
        sources: u32,
        completions: u32,
        len: Duration,
        cpu: Duration,
    ) {
        self.sources = sources;
        let held = std::mem::take(&mut self.held_in_epoch);
        if len.is_zero() {
            return;
        }
        let rate = f64::from(completions) / len.as_secs_f64();
        if held {
            self.rate_held = if self.held_epochs == 0 {
                rate
            } else {
                self.rate_held + WEIGHT * (rate - self.rate_held)
            };
            self.held_epochs += 1;
        } else {
            let busy = cpu.as_secs_f64() / len.as_secs_f64();
            self.share += WEIGHT * (busy - self.share);
            self.rate_unheld += WEIGHT * (rate - self.rate_unheld);
        }
        let was_hot = self.hot;
        self.hot = self.share >= if was_hot { COOL } else { HOT };
        if !self.hot {
            // A new load: whatever holding cost under the old one is history.
            self.held_epochs = 0;
            self.blocked = 0;
            self.block_len = BLOCKED.0;
        }
        self.blocked = self.blocked.saturating_sub(1);
        if self.held_epochs >= JUDGE_AFTER && self.rate_held < KEEP_RATE * self.rate_unheld {
            // Holding made the worker slower, not cheaper: its peers wait
            // on what it holds back.
            self.blocked = self.block_len;
            self.block_len = (self.block_len * 2).min(BLOCKED.1);
            self.held_epochs = 0;
        }
        self.epochs = if self.hot && was_hot {
            self.epochs + 1
        } else {
            0
        };
    }

    /// Whether this epoch holds nothing, to sample the unheld share.
    fn sampling(&self) -> bool {
        self.epochs % SAMPLE_EVERY == SAMPLE_EVERY - 1
    }

    /// The next wait: how many completions it asks for and the window it
    /// may be held for (`None`: return at the first completion).
    pub(crate) fn next(&mut self) -> (u32, Option<Duration>) {
        self.held = !self.window.is_zero()
            && self.max > 1
            && (self.always
                || self.hot
                    && self.blocked == 0
                    && !self.sampling()
                    && self.sources >= MIN_SOURCES
                    && self.should_hold());
        if self.held {
            self.held_total += 1;
            self.held_in_epoch = true;
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
    /// Completions in an epoch, unless a test varies them.
    const DONE: u32 = 1000;

    fn busy(window: Duration) -> Coalesce {
        let mut c = Coalesce::new(window, 32, false);
        // A whole CPU for a few epochs.
        for _ in 0..16 {
            c.epoch_ended(64, DONE, EPOCH, EPOCH);
        }
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
        c.epoch_ended(MIN_SOURCES - 1, DONE, EPOCH, EPOCH);
        assert_eq!(run(&mut c, 100, || (50, 3)), 0);
        c.epoch_ended(MIN_SOURCES, DONE, EPOCH, EPOCH);
        assert!(run(&mut c, 100, || (50, 3)) > 0);
    }

    /// Ends an epoch in which the worker used `share` of a CPU; returns
    /// whether the next wait is held (and reports it gathering well).
    fn epoch(c: &mut Coalesce, share: f64) -> bool {
        c.epoch_ended(64, DONE, EPOCH, EPOCH.mul_f64(share));
        let held = c.next().1.is_some();
        c.observe(us(50), 4);
        held
    }

    #[test]
    fn a_worker_with_time_to_spare_never_holds() {
        let mut c = Coalesce::new(us(50), 32, false);
        for _ in 0..100 {
            assert!(!epoch(&mut c, 0.5));
        }
    }

    #[test]
    fn a_worker_short_of_saturation_never_holds() {
        // 80% and 95% load: open-loop clients would see every held
        // microsecond, and the CPU it saves is not needed.
        for share in [0.8, 0.95] {
            let mut c = Coalesce::new(us(50), 32, false);
            for _ in 0..1000 {
                assert!(!epoch(&mut c, share), "held at {share}");
            }
        }
    }

    #[test]
    fn one_busy_epoch_does_not_switch_holding_on() {
        let mut c = Coalesce::new(us(50), 32, false);
        for _ in 0..20 {
            epoch(&mut c, 0.8);
        }
        assert!(!epoch(&mut c, 1.0), "a spike");
        assert!(!epoch(&mut c, 0.8));
        // A lasting saturation does.
        let held = (0..12).filter(|_| epoch(&mut c, 1.0)).count();
        assert!(held >= 2, "held in {held} of 12 saturated epochs");
    }

    /// Runs `n` epochs; `epoch(held)` gives the completions and the CPU
    /// share of an epoch that held a wait (or not). Returns how many held.
    fn epochs_with(c: &mut Coalesce, n: u32, epoch: impl Fn(bool) -> (u32, f64)) -> u32 {
        let mut count = 0;
        for _ in 0..n {
            let h = c.next().1.is_some();
            if h {
                c.observe(us(50), 4);
                count += 1;
            }
            let (done, share) = epoch(h);
            c.epoch_ended(64, done, EPOCH, EPOCH.mul_f64(share));
        }
        count
    }

    /// Saturated epochs in which held ones reap `held_done` completions and
    /// unheld ones [`DONE`]; returns how many held.
    fn rated(c: &mut Coalesce, n: u32, held_done: u32) -> u32 {
        epochs_with(c, n, |h| (if h { held_done } else { DONE }, 1.0))
    }

    #[test]
    fn holding_that_costs_throughput_stops_and_backs_off() {
        let mut c = busy(us(50));
        // Peers that wait on what is held back: throughput falls 40%.
        let bad = DONE * 6 / 10;
        let held = rated(&mut c, JUDGE_AFTER + 2, bad);
        assert!(held >= JUDGE_AFTER, "held {held} epochs before judging");
        assert!(c.blocked > 0, "holding is blocked");
        // Off for the whole first spell...
        let mut off = 0;
        while c.blocked > 0 {
            assert_eq!(rated(&mut c, 1, bad), 0, "held while blocked");
            off += 1;
        }
        assert!(off >= BLOCKED.0 - 3, "blocked for {off} epochs");
        // ...then tried again, failed again, and blocked twice as long.
        let held = rated(&mut c, 2 * JUDGE_AFTER + 2, bad);
        assert!(held >= JUDGE_AFTER, "held {held}");
        assert!(c.blocked > BLOCKED.0, "the second spell is longer");
    }

    #[test]
    fn holding_that_keeps_throughput_stays_on() {
        let mut c = busy(us(50));
        let n = 10 * SAMPLE_EVERY;
        let held = rated(&mut c, n, DONE);
        assert!(held >= n - n / SAMPLE_EVERY - 1, "held {held} of {n}");
        assert_eq!(c.blocked, 0);
    }

    /// Runs epochs whose CPU share is `held` when a wait was held in them
    /// and `unheld` otherwise; returns how many held and whether holding
    /// was still on at the end.
    fn epochs(c: &mut Coalesce, n: u32, held: f64, unheld: f64) -> (u32, bool) {
        let count = epochs_with(c, n, |h| (DONE, if h { held } else { unheld }));
        (count, c.hot)
    }

    #[test]
    fn holding_samples_the_unheld_share_and_stops_when_it_falls() {
        let mut c = busy(us(50));
        // Holding brings the share down to 0.3; the load still saturates.
        let (held, on) = epochs(&mut c, SAMPLE_EVERY * 4, 0.3, 1.0);
        assert_eq!(
            held,
            SAMPLE_EVERY * 4 - 4,
            "one epoch in {SAMPLE_EVERY} samples"
        );
        assert!(on);
        // The load falls to 0.4: a few samples switch holding off.
        let (_, on) = epochs(&mut c, SAMPLE_EVERY * 4, 0.2, 0.4);
        assert!(!on, "still holding after the load fell");
    }

    #[test]
    fn always_holds_every_wait_without_evidence() {
        let mut c = Coalesce::new(us(50), 32, true);
        assert_eq!(run(&mut c, 100, || (50, 1)), 100);
    }

    #[test]
    fn a_zero_window_never_holds() {
        let mut c = busy(Duration::ZERO);
        assert_eq!(run(&mut c, 100, || (50, 8)), 0);
    }
}
