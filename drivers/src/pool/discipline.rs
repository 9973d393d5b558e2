//! The acquire queue's discipline: who is served next, and who is turned
//! away, when callers wait for a connection. Pure: the shard feeds it the
//! time; tests use a fake clock.
//!
//! Plain FIFO lets an overloaded pool fail everyone: every waiter ages
//! toward the acquire timeout, and the ones served are the oldest, whose
//! clients have often given up. The adaptive mode (Facebook's CoDel
//! variant for server queues, with adaptive LIFO):
//!
//! - **A standing queue** is one that has held more waiters than the pool
//!   has connections, with the pool at its cap, for an interval (100 ms),
//!   its oldest waiter past the target (5 ms). A shorter queue is served
//!   within one hold time however long the holds are (a lone caller
//!   waiting for a long transaction is not overload), and a pool still
//!   opening connections is not overloaded. A pool with room ends the
//!   standing state at once; a queue the connections keep up with ends it
//!   after an interval of that (shedding and LIFO service empty a
//!   standing queue in moments while the overload goes on: ending there
//!   would let the next waiters age a whole interval unshed).
//! - **Classes** are served in order (`Critical`, then `Default`, then
//!   `Sheddable`), oldest first within a class.
//! - **While it stands**, the newest within a class is served first
//!   (its client is still there), except among `Critical` waiters, who are
//!   never shed and keep their order until their own oldest has waited an
//!   interval (critical demand alone is then over capacity); a `Default` waiter that waited more
//!   than twice the target, or a `Sheddable` one more than the target, is
//!   turned away at once (a fast 503 instead of a slow one), unless it was
//!   queued while the queue stood (below): then it was expected to make
//!   that limit, and is given the interval. `Critical` waiters are never
//!   shed for standing.
//! - **On arrival while it stands**, a `Default` or `Sheddable` caller is
//!   turned away at once when the waiters of its class and the more
//!   important ones could not all be served within its class's limit
//!   (counting the connections that more important callers, at their rate
//!   over the last interval, take meanwhile, and what the oldest of its
//!   class, served last, has waited already): one of them would be shed at
//!   the limit, and a 503 now lets its client retry or degrade without
//!   waiting for it. Turning callers away keeps the queue short, which
//!   does not end the standing state.
//! - **Whatever the state**, a waiter whose deadline comes before it can
//!   expect a connection (those ahead of it, times the mean hold time, over
//!   the connections) is turned away on arrival.
//!
//! The adaptive mode is the default. FIFO mode keeps the plain queue
//! (classes ignored), for comparison.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How a pool's acquire queue is run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueMode {
    /// First come, first served; waiters leave only by timing out (for
    /// comparison, and for pools whose callers must all wait their turn).
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

impl QueueConfig {
    /// How long waiter `e` may wait while the queue stands before it is
    /// shed (`None`: never). One admitted by the arrival check was
    /// expected to make its class's limit, and misses it by chance: more
    /// important callers arrived in a cluster and took the next few
    /// connections. It is given the interval: a later 200 rather than a
    /// slow 503. (Given twice its limit instead, the default class's 503s
    /// at 2x overload took 25 ms at p99 against 1.4 ms.) One queued before
    /// the queue stood had no such check: past the limit, it is the
    /// backlog that keeps fresh callers waiting.
    fn shed_after(&self, e: &Entry) -> Option<Duration> {
        let limit = self.limit(e.class)?;
        Some(if e.checked {
            limit.max(self.interval)
        } else {
            limit
        })
    }

    /// How long a waiter of `class` may wait while the queue stands
    /// (`None`: never shed for standing).
    fn limit(&self, class: Class) -> Option<Duration> {
        match class {
            Class::Critical => None,
            Class::Default => Some(self.target * 2),
            Class::Sheddable => Some(self.target),
        }
    }
}

/// How much a caller's work matters when the pool is overloaded. Chosen
/// per call (`LocalPool::get_as`) or per route (`PoolConfig::classes`,
/// read by `get_for`); written `critical`, `default`, `sheddable` in
/// configuration files.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
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
    /// Queued while the queue stood, so admitted by the arrival check
    /// (expected to be served within its class's limit).
    checked: bool,
}

/// The queue of waiters' keys with its discipline.
#[derive(Debug)]
pub struct WaitQueue {
    cfg: QueueConfig,
    entries: VecDeque<Entry>,
    /// Since when the queue has been longer than the connections serve
    /// in one hold, with the pool at its cap.
    long_since: Option<Instant>,
    /// Since when a standing queue has been no longer than the
    /// connections serve in one hold.
    short_since: Option<Instant>,
    standing: bool,
    /// Callers the pool serves at once (connections, or in-flight slots).
    servers: usize,
    /// Whether the pool is at its cap (it cannot open more).
    full: bool,
    /// Callers queued per class in the interval that began at `window`,
    /// and in the one before: how fast more important callers cut in
    /// ahead of a newcomer while it waits.
    queued: [u32; 3],
    queued_last: [u32; 3],
    window: Instant,
}

impl WaitQueue {
    pub fn new(cfg: QueueConfig, now: Instant) -> WaitQueue {
        WaitQueue {
            cfg,
            entries: VecDeque::new(),
            long_since: None,
            short_since: None,
            standing: false,
            servers: 1,
            full: true,
            queued: [0; 3],
            queued_last: [0; 3],
            window: now,
        }
    }

    /// Moves the per-class count of queued callers to `now`'s interval.
    fn roll(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.window);
        if age < self.cfg.interval {
            return;
        }
        self.queued_last = if age < self.cfg.interval * 2 {
            self.queued
        } else {
            [0; 3]
        };
        self.queued = [0; 3];
        self.window = now;
    }

    /// How many callers the pool serves at once now, and whether it is at
    /// its cap.
    pub fn set_pool(&mut self, servers: usize, full: bool) {
        self.servers = servers.max(1);
        self.full = full;
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

    /// Moves the standing-queue detection to `now`.
    fn advance(&mut self, now: Instant) {
        if self.cfg.mode == QueueMode::Fifo {
            return;
        }
        if !self.full {
            // A pool still opening connections (or with room to): not
            // overloaded.
            self.clear();
            return;
        }
        if self.entries.len() <= self.servers {
            // A queue the connections serve within one hold. A standing
            // queue ends only after an interval of that: shedding and LIFO
            // service empty it in moments while the overload goes on, and
            // ending at once would let the next waiters age a whole
            // interval before anyone is shed again.
            self.long_since = None;
            if self.standing {
                let since = *self.short_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= self.cfg.interval {
                    self.clear();
                }
            }
            return;
        }
        self.short_since = None;
        if self.standing {
            return;
        }
        let since = *self.long_since.get_or_insert(now);
        // It stands once it has been long for an interval and its oldest
        // waiter is past the target.
        let oldest = self.entries.iter().map(|e| e.since).min().unwrap_or(now);
        self.standing = now.saturating_duration_since(since) >= self.cfg.interval
            && now.saturating_duration_since(oldest) > self.cfg.target;
    }

    fn clear(&mut self) {
        self.long_since = None;
        self.short_since = None;
        self.standing = false;
    }

    /// An acquire was served without waiting: nobody was queued (a short
    /// queue, for the standing state's end).
    pub fn served_at_once(&mut self, now: Instant) {
        self.advance(now);
    }

    /// Whether a caller of `class` arriving at `now` with `deadline`,
    /// expecting to wait `expected` behind everyone queued, may wait, given
    /// that each caller holds a connection for `hold` on average; `Err`
    /// turns it away at once.
    ///
    /// While the queue stands, a `Default` or `Sheddable` newcomer is
    /// admitted only if every waiter of its class or a more important one
    /// could be served within its class's limit: otherwise someone would
    /// be shed at the limit (the newcomer, behind the more important; or,
    /// LIFO serving it first, an older one of its class), so it is turned
    /// away now, a 503 in microseconds instead of one after the limit.
    /// The queue of each class stays as long as the connections serve in
    /// its limit: they never run dry, and nobody waits only to be shed.
    pub fn admit(
        &mut self,
        now: Instant,
        deadline: Instant,
        expected: Duration,
        class: Class,
        hold: Duration,
    ) -> Result<(), ShedReason> {
        self.advance(now);
        if self.cfg.mode != QueueMode::Adaptive {
            return Ok(());
        }
        if now + expected > deadline {
            return Err(ShedReason::Deadline);
        }
        self.roll(now);
        if let (true, Some(limit)) = (self.standing, self.cfg.limit(class)) {
            // Connections come free every `hold / servers` on average, the
            // first after half of that: the last of the `ahead` waiters
            // and the newcomer gets the (ahead+1)-th, later by the share
            // of connections that more important callers arriving
            // meanwhile take ahead of them.
            //
            // Served newest first, the newcomer would be served before the
            // older waiters of its class, and the last served would be the
            // oldest of them: it is the one that must make its limit, with
            // what it has waited already. (A waiter already past the limit
            // is shed at once, and counts for nothing.)
            let in_time = |e: &&Entry| {
                e.class != class
                    || self
                        .cfg
                        .shed_after(e)
                        .is_none_or(|l| now.saturating_duration_since(e.since) <= l)
            };
            let ahead = self
                .entries
                .iter()
                .filter(|e| e.class <= class)
                .filter(in_time)
                .count() as f64;
            let waited = self
                .entries
                .iter()
                .filter(|e| e.class == class)
                .find(in_time)
                .map_or(0.0, |e| {
                    now.saturating_duration_since(e.since).as_secs_f64()
                });
            let slot = hold.as_secs_f64() / self.servers as f64;
            let cutting: u32 = self.queued_last[..class as usize].iter().sum();
            let taken = cutting as f64 / self.cfg.interval.as_secs_f64() * slot;
            let wait = waited + (ahead + 0.5) * slot / (1.0 - taken).max(0.0);
            if wait > limit.as_secs_f64() {
                // Turning callers away keeps the queue short while the
                // overload goes on: not a sign that it has ended.
                self.short_since = None;
                return Err(ShedReason::Standing);
            }
        }
        Ok(())
    }

    /// Queues waiter `key`.
    pub fn push(&mut self, key: usize, class: Class, now: Instant) {
        self.advance(now);
        self.roll(now);
        self.queued[class as usize] += 1;
        self.entries.push_back(Entry {
            key,
            since: now,
            class,
            checked: self.standing,
        });
    }

    /// The waiter to serve next, if any.
    pub fn pop(&mut self, now: Instant) -> Option<usize> {
        self.advance(now);
        if self.entries.is_empty() {
            return None;
        }
        let i = if self.cfg.mode == QueueMode::Fifo {
            0
        } else {
            // The most important class waiting first; within it the
            // oldest, or while the queue stands the newest (its client is
            // still there; the old ones are shed). Critical waiters are
            // never shed, so they keep their order while the connections
            // keep up with them (LIFO would only leave the oldest waiting
            // longest), and go newest-first only once their own oldest has
            // waited an interval: critical demand alone is over capacity,
            // and serving the fresh keeps most of them fast.
            let best = self.entries.iter().map(|e| e.class).min()?;
            let lifo = self.standing
                && (best != Class::Critical
                    || self
                        .entries
                        .iter()
                        .find(|e| e.class == Class::Critical)
                        .is_some_and(|e| {
                            now.saturating_duration_since(e.since) > self.cfg.interval
                        }));
            if lifo {
                self.entries.iter().rposition(|e| e.class == best)?
            } else {
                self.entries.iter().position(|e| e.class == best)?
            }
        };
        let e = self.entries.remove(i)?;
        Some(e.key)
    }

    /// Waiters to turn away now (a standing queue's over-limit waiters),
    /// with their classes, removed from the queue.
    pub fn shed(&mut self, now: Instant) -> Vec<(usize, Class)> {
        self.advance(now);
        if !self.standing {
            return Vec::new();
        }
        let cfg = &self.cfg;
        let mut out = Vec::new();
        self.entries.retain(|e| {
            let Some(limit) = cfg.shed_after(e) else {
                return true;
            };
            if now.saturating_duration_since(e.since) > limit {
                out.push((e.key, e.class));
                false
            } else {
                true
            }
        });
        out
    }

    /// Removes waiter `key` (it left: a timeout, a dropped acquire).
    pub fn remove(&mut self, key: usize) {
        self.entries.retain(|e| e.key != key);
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

    #[test]
    fn adaptive_is_the_default() {
        assert_eq!(QueueConfig::default().mode, QueueMode::Adaptive);
        assert_eq!(QueueMode::default(), QueueMode::Adaptive);
    }

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
        // One connection (the default), ten waiters: longer than it can
        // serve in one hold.
        let (mut q, t0) = queue(QueueMode::Adaptive);
        for k in 0..10 {
            q.push(k, Class::Default, t0);
        }
        assert_eq!(q.pop(t0 + MS * 20), Some(0), "not standing yet: FIFO");
        assert!(!q.standing());
        q.push(10, Class::Default, t0 + MS * 115);
        q.push(11, Class::Default, t0 + MS * 118);
        // An interval later it stands: the over-limit waiters are shed ...
        let now = t0 + MS * 120;
        let shed = q.shed(now);
        assert!(q.standing());
        let keys: Vec<usize> = shed.iter().map(|s| s.0).collect();
        assert_eq!(keys, (1..10).collect::<Vec<_>>());
        // ... and the newest is served first.
        assert_eq!(q.pop(now + MS), Some(11));
        // One left, which one connection serves: a moment's short queue
        // does not end the standing state (shedding empties it while the
        // overload goes on) ...
        assert_eq!(q.pop(now + MS * 2), Some(10));
        q.served_at_once(now + MS * 3);
        assert!(q.standing());
        q.push(12, Class::Default, now + MS * 4);
        q.push(13, Class::Default, now + MS * 4);
        assert_eq!(q.pop(now + MS * 5), Some(13), "still LIFO");
        assert_eq!(q.pop(now + MS * 6), Some(12));
        // ... an interval of it does.
        q.served_at_once(now + MS * 50);
        assert!(q.standing());
        q.served_at_once(now + MS * 106);
        assert!(!q.standing());
        q.push(14, Class::Default, now + MS * 107);
        q.push(15, Class::Default, now + MS * 107);
        assert_eq!(q.pop(now + MS * 108), Some(14), "FIFO again");
    }

    #[test]
    fn classes_order_service_and_shedding_under_a_standing_queue() {
        let (mut q, t0) = queue(QueueMode::Adaptive);
        q.push(0, Class::Default, t0);
        q.push(1, Class::Default, t0);
        q.push(6, Class::Default, t0);
        let later = t0 + MS * 150;
        q.push(2, Class::Sheddable, later - MS * 8);
        q.push(3, Class::Critical, later - MS * 50);
        q.push(4, Class::Default, later - MS * 8);
        q.push(5, Class::Sheddable, later - MS * 2);
        let shed = q.shed(later);
        assert!(q.standing());
        // Default waits over 10 ms go; critical stays. The sheddable waiter
        // 2 is past its 5 ms, but was queued while the queue stood (the
        // arrival check expected it to make it): it is given the interval.
        assert_eq!(
            shed,
            vec![
                (0, Class::Default),
                (1, Class::Default),
                (6, Class::Default)
            ]
        );
        q.push(10, Class::Critical, later);
        q.push(11, Class::Critical, later);
        assert_eq!(q.pop(later), Some(3), "critical first, oldest first");
        // Critical waiters older than an interval: the newest first.
        q.push(12, Class::Critical, later + MS * 110);
        assert_eq!(q.pop(later + MS * 111), Some(12));
        assert_eq!(q.pop(later + MS * 111), Some(11));
        assert_eq!(q.pop(later + MS * 111), Some(10));
        assert_eq!(q.pop(later), Some(4), "then default");
        assert_eq!(q.pop(later), Some(5));
        assert_eq!(q.pop(later), Some(2));
        assert!(q.is_empty());
        // Classes order service below overload too (oldest first within),
        // once the queue has been short for an interval.
        let calm = later + MS * 100;
        q.served_at_once(calm);
        assert!(!q.standing());
        q.push(7, Class::Sheddable, calm);
        q.push(8, Class::Default, calm);
        q.push(9, Class::Default, calm);
        assert_eq!(q.pop(calm + MS), Some(8));
    }

    #[test]
    fn a_lone_waiter_or_a_pool_still_opening_is_not_a_standing_queue() {
        let (mut q, t0) = queue(QueueMode::Adaptive);
        // One waiter on one connection, for a second.
        q.push(0, Class::Sheddable, t0);
        assert!(q.shed(t0 + MS * 1000).is_empty());
        // Many waiters while the pool opens connections.
        q.set_pool(1, false);
        for k in 1..10 {
            q.push(k, Class::Sheddable, t0);
        }
        assert!(q.shed(t0 + MS * 1000).is_empty());
        assert!(!q.standing());
        q.set_pool(1, true);
        q.shed(t0 + MS * 1001);
        assert!(!q.standing(), "the interval starts when the pool is full");
        assert_eq!(q.shed(t0 + MS * 1200).len(), 10);
    }

    #[test]
    fn a_waiter_that_cannot_be_served_in_time_is_turned_away_on_arrival() {
        let (mut q, t0) = queue(QueueMode::Adaptive);
        let deadline = t0 + MS * 50;
        assert_eq!(q.admit(t0, deadline, MS * 10, Class::Default, MS), Ok(()));
        assert_eq!(
            q.admit(t0, deadline, MS * 60, Class::Default, MS),
            Err(ShedReason::Deadline)
        );
        // FIFO mode admits everyone and never sheds.
        let (mut f, t0) = queue(QueueMode::Fifo);
        assert_eq!(f.admit(t0, t0 + MS, MS * 60, Class::Sheddable, MS), Ok(()));
        for k in 0..10 {
            f.push(k, Class::Sheddable, t0);
        }
        assert!(f.shed(t0 + MS * 1000).is_empty());
        assert_eq!(f.pop(t0 + MS * 1000), Some(0));
    }

    /// A queue standing on four connections (held 20 ms each in the tests
    /// that use it: one comes free every 5 ms) with `n` waiters of
    /// `class`; the time it stands from, and a far deadline.
    fn standing_on_four(n: usize, class: Class) -> (WaitQueue, Instant, Instant) {
        let (mut q, t0) = queue(QueueMode::Adaptive);
        q.set_pool(4, true);
        for k in 0..n {
            q.push(k, class, t0);
        }
        q.served_at_once(t0);
        let now = t0 + MS * 150;
        q.served_at_once(now);
        assert!(q.standing());
        (q, now, t0 + MS * 10_000)
    }

    #[test]
    fn while_it_stands_a_newcomer_the_more_important_would_keep_past_its_limit_is_turned_away_on_arrival(
    ) {
        let (mut q, now, deadline) = standing_on_four(5, Class::Critical);
        let hold = MS * 20;
        // Five critical waiters ahead: 27.5 ms, past both limits.
        let admit = |q: &mut WaitQueue, class| q.admit(now, deadline, MS, class, hold);
        assert_eq!(admit(&mut q, Class::Sheddable), Err(ShedReason::Standing));
        assert_eq!(admit(&mut q, Class::Default), Err(ShedReason::Standing));
        assert_eq!(
            admit(&mut q, Class::Critical),
            Ok(()),
            "never shed for standing"
        );
        // One critical waiter ahead: 7.5 ms, within the default's 10 ms,
        // past the sheddable's 5 ms.
        for k in 0..4 {
            q.remove(k);
        }
        assert_eq!(admit(&mut q, Class::Default), Ok(()));
        assert_eq!(admit(&mut q, Class::Sheddable), Err(ShedReason::Standing));
        // Waiters of its own class count too (LIFO would serve the
        // newcomer first and leave an older one to be shed), but less
        // important ones do not.
        q.remove(4);
        q.push(10, Class::Default, now);
        assert_eq!(admit(&mut q, Class::Default), Ok(()), "7.5 ms");
        q.push(11, Class::Default, now);
        assert_eq!(admit(&mut q, Class::Default), Err(ShedReason::Standing));
        q.remove(10);
        q.remove(11);
        for k in 20..30 {
            q.push(k, Class::Sheddable, now);
        }
        assert_eq!(admit(&mut q, Class::Default), Ok(()), "2.5 ms");
        assert_eq!(admit(&mut q, Class::Sheddable), Err(ShedReason::Standing));
        for k in 20..30 {
            q.remove(k);
        }
        // Nobody waiting: 2.5 ms, admitted.
        assert_eq!(admit(&mut q, Class::Sheddable), Ok(()));
        // Turning callers away is overload going on: the queue, short
        // meanwhile, still stands an interval later.
        q.push(30, Class::Default, now);
        for i in 0..=30 {
            let t = now + MS * 5 * i;
            assert_eq!(
                q.admit(t, deadline, MS, Class::Sheddable, hold),
                Err(ShedReason::Standing)
            );
        }
        assert!(q.standing());
        q.remove(30);
        q.shed(now + MS * 300);
        assert!(q.standing(), "short for a moment");
        q.shed(now + MS * 401);
        assert!(!q.standing(), "short for an interval");
        // Not standing: nobody is turned away for its class.
        let (mut calm, t0) = queue(QueueMode::Adaptive);
        calm.set_pool(4, true);
        for k in 0..3 {
            calm.push(k, Class::Critical, t0);
        }
        assert_eq!(
            calm.admit(t0, t0 + MS * 10_000, MS, Class::Sheddable, hold),
            Ok(())
        );
    }

    #[test]
    fn a_newcomer_served_first_must_leave_the_oldest_of_its_class_its_limit() {
        let (mut q, now, deadline) = standing_on_four(5, Class::Critical);
        for k in 0..5 {
            q.remove(k);
        }
        let hold = MS * 20;
        // One default waiter: a newcomer would be served first, the waiter
        // after 7.5 ms more. Fresh, it makes its 10 ms.
        q.push(1, Class::Default, now);
        assert_eq!(q.admit(now, deadline, MS, Class::Default, hold), Ok(()));
        // Having waited 3 ms already, it would not: the newcomer is turned
        // away rather than the waiter shed at its limit.
        let later = now + MS * 3;
        assert_eq!(
            q.admit(later, deadline, MS, Class::Default, hold),
            Err(ShedReason::Standing)
        );
        // A sheddable newcomer does not go ahead of it (classes first).
        assert_eq!(
            q.admit(later, deadline, MS, Class::Sheddable, hold),
            Err(ShedReason::Standing),
            "7.5 ms"
        );
        // Queued while the queue stood, it is not shed at its limit but
        // given the interval (it missed the limit by chance), and holds
        // newcomers back meanwhile; once shed, it holds back nobody.
        assert!(q.shed(now + MS * 11).is_empty());
        assert_eq!(
            q.admit(now + MS * 11, deadline, MS, Class::Default, hold),
            Err(ShedReason::Standing)
        );
        assert!(q.shed(now + MS * 99).is_empty());
        assert_eq!(q.shed(now + MS * 101), vec![(1, Class::Default)]);
        assert_eq!(
            q.admit(now + MS * 101, deadline, MS, Class::Default, hold),
            Ok(())
        );
        // One queued before the queue stood is shed at its limit.
        let (mut q, now, _) = standing_on_four(5, Class::Default);
        assert_eq!(q.shed(now).len(), 5);
    }

    #[test]
    fn more_important_callers_arriving_while_a_newcomer_waits_count_against_it() {
        // Ten sheddable waiters keep the queue standing.
        let (mut q, now, deadline) = standing_on_four(10, Class::Sheddable);
        let hold = MS * 20;
        // A default newcomer with one default ahead expects 7.5 ms, within
        // its 10 ms limit: the sheddable callers queued in the last
        // interval do not cut in ahead of it.
        q.push(10, Class::Default, now);
        assert_eq!(q.admit(now, deadline, MS, Class::Default, hold), Ok(()));
        // Critical callers do: 8 in the last interval (80/s) take 2 of
        // every 5 connections that come free, and it would wait
        // 7.5 / 0.6 = 12.5 ms.
        for k in 20..28 {
            q.push(k, Class::Critical, now + MS);
            q.remove(k);
        }
        // (The default waiter, a fresh one: an older one would count what
        // it waited too.)
        let next = now + MS * 100;
        q.remove(10);
        q.push(10, Class::Default, next);
        assert_eq!(
            q.admit(next, deadline, MS, Class::Default, hold),
            Err(ShedReason::Standing)
        );
        // With nobody ahead, 2.5 / 0.6 = 4.2 ms: admitted.
        q.remove(10);
        assert_eq!(q.admit(next, deadline, MS, Class::Default, hold), Ok(()));
        assert!(q.standing());
    }

    #[test]
    fn a_standing_queue_ends_once_the_connections_keep_up_for_an_interval_or_the_pool_has_room() {
        let (mut q, t0) = queue(QueueMode::Adaptive);
        q.push(0, Class::Default, t0);
        q.push(1, Class::Default, t0);
        q.push(2, Class::Critical, t0);
        q.shed(t0 + MS * 150);
        assert!(q.standing());
        q.remove(2);
        assert!(q.is_empty());
        q.shed(t0 + MS * 160);
        assert!(q.standing(), "empty for a moment");
        q.shed(t0 + MS * 259);
        assert!(q.standing());
        q.shed(t0 + MS * 260);
        assert!(!q.standing(), "empty for an interval");
        // Standing again; then the pool gets room: over at once.
        for k in 3..6 {
            q.push(k, Class::Critical, t0 + MS * 300);
        }
        q.shed(t0 + MS * 420);
        assert!(q.standing());
        q.set_pool(1, false);
        q.shed(t0 + MS * 421);
        assert!(!q.standing());
    }
}
