//! The acquire queue's discipline: who is served next, and who is turned
//! away, when callers wait for a connection. Pure: the shard feeds it the
//! time; tests use a fake clock.
//!
//! Plain FIFO lets an overloaded pool fail everyone: every waiter ages
//! toward the acquire timeout, and the ones served are the oldest, whose
//! clients have often given up. The adaptive mode (Facebook's CoDel
//! variant for server queues, with adaptive LIFO):
//!
//! - **A standing queue** is one whose waits have all been above the
//!   target (5 ms) for an interval (100 ms) without the queue draining.
//!   An acquire served at once, or a wait within target, clears it, so a
//!   pool below capacity never looks overloaded.
//! - **While it stands**, waiters are served newest first (their clients
//!   are still there) and by class (`Critical`, then `Default`, then
//!   `Sheddable`); a `Default` waiter that waited more than twice the
//!   target, or a `Sheddable` one more than the target, is turned away at
//!   once (a fast 503 instead of a slow one). `Critical` waiters are never
//!   shed for standing.
//! - **Whatever the state**, a waiter whose deadline comes before it can
//!   expect a connection (those ahead of it, times the mean hold time, over
//!   the connections) is turned away on arrival.
//!
//! FIFO mode keeps the plain queue, for comparison.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How a pool's acquire queue is run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueMode {
    /// First come, first served; waiters leave only by timing out.
    Fifo,
    /// Standing-queue detection, adaptive LIFO, shedding (the default).
    #[default]
    Adaptive,
}

/// The acquire queue's settings (`PoolConfig::queue`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    pub mode: QueueMode,
    /// A wait longer than this in every acquire of an interval means the
    /// queue stands (default 5 ms).
    #[serde(with = "tidepool_engine::config::duration")]
    pub target: Duration,
    /// How long the queue must stand before it counts (default 100 ms).
    #[serde(with = "tidepool_engine::config::duration")]
    pub interval: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            mode: QueueMode::Adaptive,
            target: Duration::from_millis(5),
            interval: Duration::from_millis(100),
        }
    }
}

/// How much a caller's work matters when the pool is overloaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Served first and never shed for a standing queue.
    Critical,
    #[default]
    Default,
    /// Shed first.
    Sheddable,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Critical, Class::Default, Class::Sheddable];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Critical => "critical",
            Class::Default => "default",
            Class::Sheddable => "sheddable",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a waiter was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShedReason {
    /// The queue stands and this waiter waited past its class's limit.
    Standing,
    /// It could not expect a connection before its deadline.
    Deadline,
}

impl ShedReason {
    pub const ALL: [ShedReason; 2] = [ShedReason::Standing, ShedReason::Deadline];

    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::Standing => "standing_queue",
            ShedReason::Deadline => "deadline",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: usize,
    since: Instant,
    class: Class,
}

/// The queue of waiters' keys with its discipline.
#[derive(Debug)]
pub struct WaitQueue {
    cfg: QueueConfig,
    entries: VecDeque<Entry>,
    /// Since when every wait has been above target without the queue
    /// draining (CoDel's "first above time").
    above_since: Option<Instant>,
    standing: bool,
}

impl WaitQueue {
    pub fn new(cfg: QueueConfig, _now: Instant) -> WaitQueue {
        WaitQueue {
            cfg,
            entries: VecDeque::new(),
            above_since: None,
            standing: false,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the queue is standing (as of the last event).
    pub fn standing(&self) -> bool {
        self.standing
    }

    /// Moves the standing-queue detection to `now`: a waiter older than
    /// the target means waits are above it from the moment it crossed.
    fn advance(&mut self, now: Instant) {
        if self.cfg.mode == QueueMode::Fifo {
            return;
        }
        if let Some(oldest) = self.entries.iter().map(|e| e.since).min() {
            let crossed = oldest + self.cfg.target;
            if now > crossed {
                let since = self.above_since.get_or_insert(crossed);
                *since = (*since).min(crossed);
            }
        }
        self.standing = self
            .above_since
            .is_some_and(|a| now.saturating_duration_since(a) >= self.cfg.interval);
    }

    /// The queue is healthy again: a wait within target, or drained.
    fn clear(&mut self) {
        self.above_since = None;
        self.standing = false;
    }

    /// An acquire was served without waiting.
    pub fn served_at_once(&mut self, now: Instant) {
        self.note_wait(Duration::ZERO, now);
    }

    fn note_wait(&mut self, w: Duration, now: Instant) {
        if w <= self.cfg.target {
            self.clear();
        } else if self.cfg.mode == QueueMode::Adaptive {
            self.above_since.get_or_insert(now);
        }
    }

    /// Whether a caller arriving at `now` with `deadline`, expecting to
    /// wait `expected` if queued, may wait; `Err` turns it away.
    pub fn admit(
        &mut self,
        now: Instant,
        deadline: Instant,
        expected: Duration,
    ) -> Result<(), ShedReason> {
        self.advance(now);
        if self.cfg.mode == QueueMode::Adaptive && now + expected > deadline {
            return Err(ShedReason::Deadline);
        }
        Ok(())
    }

    /// Queues waiter `key`.
    pub fn push(&mut self, key: usize, class: Class, now: Instant) {
        self.advance(now);
        self.entries.push_back(Entry {
            key,
            since: now,
            class,
        });
    }

    /// The waiter to serve next, if any.
    pub fn pop(&mut self, now: Instant) -> Option<usize> {
        self.advance(now);
        let i = if self.standing {
            // Newest first within the most important class waiting.
            let best = self.entries.iter().map(|e| e.class).min()?;
            self.entries.iter().rposition(|e| e.class == best)?
        } else if self.entries.is_empty() {
            return None;
        } else {
            0
        };
        let e = self.entries.remove(i)?;
        self.note_wait(now.saturating_duration_since(e.since), now);
        if self.entries.is_empty() {
            self.clear();
        }
        Some(e.key)
    }

    /// Waiters to turn away now (a standing queue's over-limit waiters),
    /// removed from the queue.
    pub fn shed(&mut self, now: Instant) -> Vec<usize> {
        self.advance(now);
        if !self.standing {
            return Vec::new();
        }
        let target = self.cfg.target;
        let mut out = Vec::new();
        self.entries.retain(|e| {
            let limit = match e.class {
                Class::Critical => return true,
                Class::Default => target * 2,
                Class::Sheddable => target,
            };
            if now.saturating_duration_since(e.since) > limit {
                out.push(e.key);
                false
            } else {
                true
            }
        });
        if self.entries.is_empty() {
            self.clear();
        }
        out
    }

    /// Removes waiter `key` (it left: a timeout, a dropped acquire).
    pub fn remove(&mut self, key: usize) {
        self.entries.retain(|e| e.key != key);
        if self.entries.is_empty() {
            self.clear();
        }
    }

    /// The keys in the queue, oldest first.
    pub fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.entries.iter().map(|e| e.key)
    }

    /// Takes every waiter out (an outage fails them all), oldest first.
    pub fn drain(&mut self) -> Vec<usize> {
        self.clear();
        self.entries.drain(..).map(|e| e.key).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn queue(mode: QueueMode) -> (WaitQueue, Instant) {
        let t0 = Instant::now();
        let cfg = QueueConfig {
            mode,
            ..QueueConfig::default()
        };
        (WaitQueue::new(cfg, t0), t0)
    }

    #[test]
    fn below_capacity_nothing_stands_and_order_is_fifo() {
        let (mut q, t0) = queue(QueueMode::Adaptive);
        // Short waits, and some acquires served at once: for a second.
        for i in 0..1000usize {
            let now = t0 + MS * i as u32;
            q.push(i, Class::Default, now);
            if i % 3 == 0 {
                q.served_at_once(now);
            }
            if i >= 2 {
                assert_eq!(q.pop(now + MS), Some(i - 2), "FIFO");
            }
            assert!(q.shed(now + MS).is_empty());
            assert!(!q.standing());
        }
    }

    #[test]
    fn a_standing_queue_is_detected_served_lifo_and_sheds_the_old() {
        let (mut q, t0) = queue(QueueMode::Adaptive);
        // Ten waiters arrive at once; one is served every 20 ms: every
        // wait is above target and the queue never drains.
        for k in 0..10 {
            q.push(k, Class::Default, t0);
        }
        assert_eq!(q.pop(t0 + MS * 20), Some(0), "not standing yet: FIFO");
        assert!(!q.standing());
        // An interval later it stands: the over-limit waiters are shed...
        let now = t0 + MS * 120;
        q.push(10, Class::Default, now);
        assert!(q.standing());
        let shed = q.shed(now);
        assert_eq!(shed, (1..10).collect::<Vec<_>>());
        // ... and the newest is served first.
        q.push(11, Class::Default, now + MS);
        assert_eq!(q.pop(now + MS * 2), Some(11));
        // Drained: no longer standing, FIFO again.
        assert_eq!(q.pop(now + MS * 3), Some(10));
        assert!(!q.standing());
        q.push(12, Class::Default, now + MS * 4);
        q.push(13, Class::Default, now + MS * 4);
        assert_eq!(q.pop(now + MS * 5), Some(12));
    }

    #[test]
    fn classes_order_service_and_shedding_under_a_standing_queue() {
        let (mut q, t0) = queue(QueueMode::Adaptive);
        q.push(0, Class::Default, t0);
        q.push(1, Class::Default, t0);
        let later = t0 + MS * 150;
        q.push(2, Class::Sheddable, later - MS * 8);
        q.push(3, Class::Critical, later - MS * 50);
        q.push(4, Class::Default, later - MS * 8);
        q.push(5, Class::Sheddable, later - MS * 2);
        // No grant in the interval while the oldest waited 150 ms: standing.
        let shed = q.shed(later);
        assert!(q.standing());
        // Default waits over 10 ms go, sheddable over 5 ms; critical stays.
        assert_eq!(shed, vec![0, 1, 2]);
        assert_eq!(q.pop(later), Some(3), "critical first");
        assert_eq!(q.pop(later), Some(4), "then default");
        assert_eq!(q.pop(later), Some(5));
        assert!(q.is_empty());
    }

    #[test]
    fn a_waiter_that_cannot_be_served_in_time_is_turned_away_on_arrival() {
        let (mut q, t0) = queue(QueueMode::Adaptive);
        let deadline = t0 + MS * 50;
        assert_eq!(q.admit(t0, deadline, MS * 10), Ok(()));
        assert_eq!(q.admit(t0, deadline, MS * 60), Err(ShedReason::Deadline));
        // FIFO mode admits everyone and never sheds.
        let (mut f, t0) = queue(QueueMode::Fifo);
        assert_eq!(f.admit(t0, t0 + MS, MS * 60), Ok(()));
        for k in 0..10 {
            f.push(k, Class::Sheddable, t0);
        }
        assert!(f.shed(t0 + MS * 1000).is_empty());
        assert_eq!(f.pop(t0 + MS * 1000), Some(0));
    }

    #[test]
    fn removing_the_last_waiter_clears_the_standing_state() {
        let (mut q, t0) = queue(QueueMode::Adaptive);
        q.push(0, Class::Default, t0);
        q.push(1, Class::Critical, t0);
        q.shed(t0 + MS * 150);
        assert!(q.standing());
        q.remove(1);
        assert!(!q.standing());
        assert!(q.is_empty());
    }
}
