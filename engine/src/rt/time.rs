//! Per-worker timers: a binary heap of deadlines over a slab of entries.
//!
//! The ring waits with a timeout equal to the earliest deadline, so timers
//! cost no SQEs. A timer's heap item may come up before its deadline:
//! moving a deadline anywhere not earlier than the item already queued
//! only writes a field, and the item is re-pushed at the real deadline
//! when it comes up. A keep-alive connection moves its deadline twice per
//! request, earlier to the write timeout and back to the idle timeout;
//! the write deadlines only ever move later, so after the first request
//! neither move pushes: about one push per connection per write timeout,
//! not one per request. Moving a deadline before its queued item, or
//! removing a timer, leaves a stale heap item behind; when stale items
//! outnumber live timers the heap is rebuilt from the live ones, so its
//! size is bounded by the number of timers, never by the request rate.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

use super::executor::{try_with_core, with_core};

struct Entry {
    deadline: Instant,
    /// When this timer's live heap item comes up: never after `deadline`
    /// (meaningless once fired, when it has none).
    queued: Instant,
    generation: u64,
    waker: Option<Waker>,
    fired: bool,
}

/// Stale heap items tolerated beyond one per live timer before a rebuild.
const STALE_SLACK: usize = 64;

#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    entries: Slab<Entry>,
    generation: u64,
}

impl Timers {
    fn insert(&mut self, deadline: Instant) -> usize {
        self.generation += 1;
        let key = self.entries.insert(Entry {
            deadline,
            queued: deadline,
            generation: self.generation,
            waker: None,
            fired: false,
        });
        self.push(deadline, key, self.generation);
        key
    }

    fn reset(&mut self, key: usize, deadline: Instant) {
        let entry = &mut self.entries[key];
        entry.deadline = deadline;
        // A deadline at or after the queued item waits for that item to
        // come up (see `fire`); only one before it needs a push.
        if entry.fired || deadline < entry.queued {
            // The old heap item is now stale: a new generation retires it.
            self.generation += 1;
            entry.generation = self.generation;
            entry.queued = deadline;
            entry.fired = false;
            self.push(deadline, key, self.generation);
        }
    }

    /// Pushes a heap item, first rebuilding the heap from the live timers
    /// when stale items make up more than half of it. A rebuild costs
    /// O(live) and follows at least `live + STALE_SLACK` stale pushes, so
    /// a push stays amortised O(log n).
    fn push(&mut self, deadline: Instant, key: usize, generation: u64) {
        if self.heap.len() >= 2 * self.entries.len() + STALE_SLACK {
            self.rebuild();
        }
        self.heap.push(Reverse((deadline, key, generation)));
    }

    /// The heap with exactly one item per pending timer, at its deadline.
    fn rebuild(&mut self) {
        let mut items = std::mem::take(&mut self.heap).into_vec();
        items.clear();
        items.extend(
            self.entries
                .iter_mut()
                .filter(|(_, e)| !e.fired)
                .map(|(key, e)| {
                    e.queued = e.deadline;
                    Reverse((e.deadline, key, e.generation))
                }),
        );
        // Give back what a burst of stale items grew.
        items.shrink_to(2 * items.len() + STALE_SLACK);
        self.heap = BinaryHeap::from(items);
    }

    /// Heap items, live and stale (diagnostics and tests).
    pub(crate) fn heap_len(&self) -> usize {
        self.heap.len()
    }

    fn remove(&mut self, key: usize) {
        self.entries.remove(key);
    }

    /// Fires every timer due at `now`.
    pub(crate) fn fire(&mut self, now: Instant) {
        while let Some(&Reverse((deadline, key, generation))) = self.heap.peek() {
            if deadline > now {
                break;
            }
            self.heap.pop();
            let Some(entry) = self.entries.get_mut(key) else {
                continue;
            };
            if entry.generation != generation || entry.fired {
                continue;
            }
            if entry.deadline > now {
                // Moved later since it was pushed: wait for the new deadline.
                entry.queued = entry.deadline;
                self.heap.push(Reverse((entry.deadline, key, generation)));
                continue;
            }
            entry.fired = true;
            if let Some(w) = entry.waker.take() {
                w.wake();
            }
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((d, _, _))| *d)
    }
}

/// The current time as seen by this worker's loop turn (no syscall).
pub fn now() -> Instant {
    with_core(|core| core.now())
}

/// A future that completes at a deadline; it can be moved with [`Sleep::reset`].
pub struct Sleep {
    key: Option<usize>,
    deadline: Instant,
    /// The deadline the worker's timer holds, never after `deadline`. A
    /// move later stays here, with no visit to the timers: a keep-alive
    /// connection moves its deadline twice per request, and its timer
    /// entry is one more cache line per request. The timer then fires at
    /// `armed`, and the poll that sees it moves it on to `deadline`.
    armed: Instant,
}

/// Completes after `dur`.
pub fn sleep(dur: Duration) -> Sleep {
    sleep_until(Instant::now() + dur)
}

/// Completes at `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        key: None,
        deadline,
        armed: deadline,
    }
}

impl Sleep {
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline; a fired timer becomes pending again.
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if deadline >= self.armed {
            // Later: the timer fires at `armed` and `poll` moves it on
            // (a fired one is pending again from that poll).
            return;
        }
        self.armed = deadline;
        if let Some(key) = self.key {
            with_core(|core| core.timers.borrow_mut().reset(key, deadline));
        }
    }

    pub fn is_elapsed(&self) -> bool {
        self.deadline <= Instant::now()
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        with_core(|core| {
            let mut timers = core.timers.borrow_mut();
            let key = match this.key {
                Some(k) => k,
                None => {
                    if this.deadline <= Instant::now() {
                        return Poll::Ready(());
                    }
                    let k = timers.insert(this.deadline);
                    this.key = Some(k);
                    this.armed = this.deadline;
                    k
                }
            };
            if timers.entries[key].fired {
                if this.deadline <= this.armed || this.deadline <= core.now() {
                    return Poll::Ready(());
                }
                // Fired at a deadline since moved later, not yet reached.
                this.armed = this.deadline;
                timers.reset(key, this.deadline);
            }
            let entry = &mut timers.entries[key];
            match &entry.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => entry.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            try_with_core(|core| core.timers.borrow_mut().remove(key));
        }
    }
}

/// The error of a [`timeout`] whose deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// Runs `fut` for at most `dur`; dropping it on expiry cancels its ring operations.
pub fn timeout<F: Future>(
    dur: Duration,
    fut: F,
) -> impl Future<Output = Result<F::Output, Elapsed>> {
    timeout_at(Instant::now() + dur, fut)
}

/// Runs `fut` until `deadline` at most.
pub fn timeout_at<F: Future>(
    deadline: Instant,
    fut: F,
) -> impl Future<Output = Result<F::Output, Elapsed>> {
    Timeout {
        sleep: sleep_until(deadline),
        fut,
    }
}

pin_project_lite::pin_project! {
    /// [`timeout_at`]'s future, holding `fut` once (see [`Race`]).
    struct Timeout<F> {
        sleep: Sleep,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Runs `fut` until `timer` fires (`None`). Reusing one timer across many
/// operations (as a connection does) moves its deadline instead of
/// inserting and removing a timer per operation.
pub fn race<'t, F: Future>(
    timer: &'t mut Sleep,
    fut: F,
) -> impl Future<Output = Option<F::Output>> + use<'t, F> {
    Race { timer, fut }
}

pin_project_lite::pin_project! {
    /// [`race`]'s future: holds `fut` once (an `async fn` that pins its
    /// argument holds it twice, as the argument and as the pinned copy).
    struct Race<'t, F> {
        timer: &'t mut Sleep,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Race<'_, F> {
    type Output = Option<F::Output>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Some(v));
        }
        match Pin::new(&mut **this.timer).poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_order_and_respect_resets() {
        let mut t = Timers::default();
        let base = Instant::now();
        let a = t.insert(base + Duration::from_millis(10));
        let b = t.insert(base + Duration::from_millis(20));
        t.reset(a, base + Duration::from_millis(30)); // later: lazily re-pushed
        t.fire(base + Duration::from_millis(15));
        assert!(!t.entries[a].fired);
        assert!(!t.entries[b].fired);
        t.fire(base + Duration::from_millis(25));
        assert!(t.entries[b].fired);
        assert!(!t.entries[a].fired);
        assert_eq!(t.next_deadline(), Some(base + Duration::from_millis(30)));
        t.reset(a, base + Duration::from_millis(5)); // earlier: new generation
        t.fire(base + Duration::from_millis(6));
        assert!(t.entries[a].fired);
        t.remove(a);
        t.remove(b);
        t.fire(base + Duration::from_secs(10));
        assert_eq!(t.next_deadline(), None);
    }

    /// A keep-alive connection moves its deadline earlier (write timeout)
    /// and back (idle timeout) on every request; callers of `timeout` insert
    /// and remove a timer per operation. Neither may grow the heap.
    #[test]
    fn heap_stays_bounded_by_live_timers() {
        let mut t = Timers::default();
        let base = Instant::now();
        let conns: Vec<usize> = (0..64)
            .map(|i| t.insert(base + Duration::from_secs(60) + Duration::from_millis(i)))
            .collect();
        // Live timers: the connections and one operation's.
        let bound = 2 * (conns.len() + 1) + STALE_SLACK;
        for round in 0..10_000u64 {
            let now = base + Duration::from_micros(round);
            for &c in &conns {
                t.reset(c, now + Duration::from_secs(10)); // write deadline: earlier
                t.reset(c, now + Duration::from_secs(60)); // idle deadline: later
            }
            let op = t.insert(now + Duration::from_secs(5));
            t.remove(op);
            assert!(t.heap_len() <= bound, "heap {} > {bound}", t.heap_len());
        }
        // Rebuilds kept every live timer: each still fires at its deadline.
        let last = base + Duration::from_micros(9_999);
        t.fire(last + Duration::from_secs(59));
        assert!(conns.iter().all(|&c| !t.entries[c].fired));
        t.fire(last + Duration::from_secs(60));
        assert!(conns.iter().all(|&c| t.entries[c].fired));
        for c in conns {
            t.remove(c);
        }
        t.insert(base);
        assert!(t.heap_len() <= STALE_SLACK + 1);
    }

    /// The keep-alive pattern: after the first request, moving the deadline
    /// earlier to a write deadline that itself only moves later pushes
    /// nothing, so the heap holds one live and at most one stale item per
    /// connection however many requests pass.
    #[test]
    fn keep_alive_deadline_moves_push_once_per_write_timeout() {
        let mut t = Timers::default();
        let base = Instant::now();
        let conns: Vec<usize> = (0..64)
            .map(|_| t.insert(base + Duration::from_secs(60)))
            .collect();
        for round in 0..10_000u64 {
            let now = base + Duration::from_micros(round);
            for &c in &conns {
                t.reset(c, now + Duration::from_secs(10));
                t.reset(c, now + Duration::from_secs(60));
            }
        }
        assert_eq!(t.heap_len(), 2 * conns.len());
        // The item at the first write deadline comes up early: nothing
        // fires, and each timer is re-queued at its real deadline.
        let last = base + Duration::from_micros(9_999);
        t.fire(base + Duration::from_secs(11));
        assert!(conns.iter().all(|&c| !t.entries[c].fired));
        // The stale items from before the first request come up and go.
        t.fire(base + Duration::from_secs(60));
        assert!(conns.iter().all(|&c| !t.entries[c].fired));
        assert_eq!(t.next_deadline(), Some(last + Duration::from_secs(60)));
        t.fire(last + Duration::from_secs(60));
        assert!(conns.iter().all(|&c| t.entries[c].fired));
    }

    /// A deadline moved earlier, but not before the item already queued,
    /// still fires at the new deadline, not the old one.
    #[test]
    fn an_earlier_move_behind_the_queued_item_fires_on_time() {
        let mut t = Timers::default();
        let base = Instant::now();
        let ms = |n| base + Duration::from_millis(n);
        let a = t.insert(ms(10));
        t.reset(a, ms(30)); // queued item stays at 10
        t.reset(a, ms(20)); // earlier than 30, not before 10: no push
        assert_eq!(t.heap_len(), 1);
        t.fire(ms(15));
        assert!(!t.entries[a].fired);
        assert_eq!(t.next_deadline(), Some(ms(20)));
        t.fire(ms(19));
        assert!(!t.entries[a].fired);
        t.fire(ms(20));
        assert!(t.entries[a].fired);
    }

    #[test]
    fn a_rebuild_keeps_earlier_and_fired_timers_right() {
        let mut t = Timers::default();
        let base = Instant::now();
        let a = t.insert(base + Duration::from_millis(50));
        let b = t.insert(base + Duration::from_millis(10));
        t.fire(base + Duration::from_millis(10));
        assert!(t.entries[b].fired);
        // Churn until the heap is rebuilt at least once.
        for _ in 0..4 * STALE_SLACK {
            let k = t.insert(base + Duration::from_secs(1));
            t.remove(k);
        }
        t.reset(a, base + Duration::from_millis(20));
        assert_eq!(t.next_deadline(), Some(base + Duration::from_millis(20)));
        t.fire(base + Duration::from_millis(20));
        assert!(t.entries[a].fired);
        // A fired timer is not re-fired by a rebuild; a reset re-arms it.
        t.reset(b, base + Duration::from_millis(30));
        t.fire(base + Duration::from_millis(30));
        assert!(t.entries[b].fired);
    }
}
