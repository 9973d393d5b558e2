//! When the database is out of reach: a shard with nothing open whose
//! connect was refused goes down, its callers fail fast naming the
//! error, one probe at a time dials until a connect succeeds, and the
//! news crosses to the other shards.

use std::rc::Rc;
use std::task::Waker;
use std::time::Duration;

use tidepool_engine::rt::{self, time};

use super::capacity::with_shard;
use super::connect::connect_task;
use super::{Grant, Shard, State};
use crate::pool::backoff::random_unit;
use crate::pool::stats::add;
use crate::pool::Manager;

/// While the database is down, no connect attempt waits longer than this
/// after the last, and a new probe starts within it (jittered over its
/// second half): recovery is noticed within about this long.
pub(super) const PROBE_INTERVAL: Duration = Duration::from_millis(500);

impl<M: Manager> Shard<M> {
    /// Whether the pool as a whole finds the database down: some shard is
    /// `down` and no shard has a connection open. `Some(Some(j))` names a
    /// down shard that has capacity but no probe running (to be asked for
    /// one); `Some(None)` means a probe is already out.
    fn pool_down(&self) -> Option<Option<usize>> {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let mut down = None;
        for (j, s) in self.others() {
            if load(&s.open) > 0 {
                return None;
            }
            if load(&s.down) > 0 && load(&s.cap) > 0 {
                if load(&s.probing) > 0 {
                    down = Some(None);
                } else if down.is_none() {
                    down = Some(Some(j));
                }
            }
        }
        down
    }

    /// A shard with no capacity and no connection of its own, while the
    /// shards that have capacity find the database down: the message to
    /// fail its callers with, at once. Waiting for capacity or a handle to
    /// be lent would only wait out the acquire timeout. Keeps a probe
    /// going on a shard that can dial.
    pub(super) fn outage_elsewhere(&self, st: &State<M::Conn>) -> Option<String> {
        if st.cap != 0 || st.open() + st.opening + st.remote != 0 || self.closed.get() {
            return None;
        }
        let ok = &self.pool.connects_ok;
        if ok.load(std::sync::atomic::Ordering::Acquire)
            != self
                .pool
                .outage_ok
                .load(std::sync::atomic::Ordering::Acquire)
        {
            // A connect succeeded since the last shard found the database
            // down: wait for capacity or a handle instead.
            return None;
        }
        let prober = self.pool_down()?;
        self.pool
            .asked_elsewhere
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(j) = prober {
            if let Some(w) = self.pool.workers.lock().unwrap()[j].clone() {
                let id = self.pool.id;
                w.post(move || with_shard(id, |s| s.probe_asked()));
            }
        }
        let last = self.pool.outage.lock().unwrap().clone().unwrap_or_default();
        Some(format!(
            "the database is unreachable; failing fast until a connect succeeds (last connect: {last})"
        ))
    }

    /// Fails the waiters if `outage_elsewhere` says so; returns whether it did.
    pub(super) fn fail_waiters_on_outage_elsewhere(&self) -> bool {
        let wake = {
            let mut st = self.state.borrow_mut();
            if st.queue.is_empty() {
                return false;
            }
            let Some(msg) = self.outage_elsewhere(&st) else {
                return false;
            };
            let wake = self.fail_waiters(&mut st, &msg);
            add(&self.stats.fast_failures, wake.len() as u64);
            self.publish(&st);
            wake
        };
        for w in wake {
            w.wake();
        }
        true
    }

    /// A shard left with no capacity cannot probe: it stops speaking for
    /// the database (its callers go by the shards that can dial, see
    /// `outage_elsewhere`), and a connect still in flight ends as an
    /// ordinary one.
    pub(super) fn no_capacity_no_outage(st: &mut State<M::Conn>) {
        if st.cap == 0 {
            st.down = false;
            st.probing = false;
        }
    }

    /// While down: starts a probe connect unless one is on its way
    /// (reserving it in the books); the caller spawns `connect_task`.
    pub(super) fn start_probe(&self, st: &mut State<M::Conn>) -> bool {
        let probe =
            st.down && !st.probing && st.opening == 0 && st.open() < st.cap && !self.closed.get();
        if probe {
            st.opening += 1;
            st.probing = true;
        }
        probe
    }

    /// A connect attempt failed and will be retried. With nothing open the
    /// database is out of reach from here: the waiters hear it now, not
    /// after the whole retry budget, later callers fail fast (`wait`), and
    /// the retries go on as the probe, at most `PROBE_INTERVAL` apart.
    pub(super) fn attempt_failed(&self, e: &M::Error, started: u64) -> Option<Duration> {
        let mut wake = Vec::new();
        if self.stale(started) {
            // Another shard connected after this attempt began: the
            // database is back, whatever this attempt met on its way (a
            // reset from the server that was going away). Not an outage:
            // dial again at once.
            let mut st = self.state.borrow_mut();
            st.last_error = Some(e.to_string());
            st.down = false;
            st.probing = false;
            self.publish(&st);
            return Some(Duration::ZERO);
        }
        let down = {
            let mut st = self.state.borrow_mut();
            st.last_error = Some(e.to_string());
            if st.open() == 0 && st.cap > 0 && !self.closed.get() {
                let e = e.to_string();
                self.go_down(&mut st, &e);
                st.probing = true;
                wake = self.fail_waiters(&mut st, &e);
                st.asked |= !wake.is_empty();
                self.publish(&st);
            }
            st.down
        };
        for w in wake {
            w.wake();
        }
        down.then_some(PROBE_INTERVAL)
    }

    /// The database is back while this shard is down: reserves a connect
    /// (the caller spawns it) unless one is under way or there is no room.
    /// A probe sleeping in `probe_later` finds this connect under way (or
    /// done) and stands down.
    pub(super) fn reserve_redial(&self, st: &mut State<M::Conn>) -> bool {
        let go = st.down && st.opening == 0 && st.open() < st.cap && !self.closed.get();
        if go {
            st.opening += 1;
            st.probing = true;
            self.publish(st);
        }
        go
    }

    /// Whether a connect attempt that began when `started` connects had
    /// succeeded pool-wide is stale: another has succeeded since.
    pub(super) fn stale(&self, started: u64) -> bool {
        self.pool
            .connects_ok
            .load(std::sync::atomic::Ordering::Acquire)
            != started
    }

    /// The database is out of reach from this shard (nothing open, a
    /// connect refused with `error`): recorded for the shards without
    /// capacity, and, the first time, logged and told to the others.
    pub(super) fn go_down(&self, st: &mut State<M::Conn>, error: &str) {
        *self.pool.outage.lock().unwrap() = Some(error.to_string());
        self.pool.outage_ok.store(
            self.pool
                .connects_ok
                .load(std::sync::atomic::Ordering::Acquire),
            std::sync::atomic::Ordering::Release,
        );
        if !st.down {
            tracing::warn!(pool = %self.pool.name, error, "database unreachable; failing fast while probing");
            st.down = true;
            st.down_ok = self
                .pool
                .connects_ok
                .load(std::sync::atomic::Ordering::Acquire);
            self.tell_others(|s| s.peer_down());
        }
    }

    /// The last connection of this shard went away (or a caller is about
    /// to wait) while a connect in flight has already been refused: that is
    /// an outage as surely as a refusal with nothing open. Waiters hear it
    /// now instead of after the connect's whole retry budget, and the
    /// connect in flight goes on as the probe.
    pub(super) fn note_outage(&self, st: &mut State<M::Conn>) -> Vec<Waker> {
        if st.down || st.open() > 0 || st.opening == 0 || st.cap == 0 || self.closed.get() {
            return Vec::new();
        }
        let Some(e) = st.last_error.clone() else {
            return Vec::new();
        };
        self.go_down(st, &e);
        st.probing = true;
        let wake = self.fail_waiters(st, &e);
        st.asked |= !wake.is_empty();
        wake
    }

    /// Answers every waiter with `msg`; returns their wakers (to be woken
    /// once the books are released).
    pub(super) fn fail_waiters(&self, st: &mut State<M::Conn>, msg: &str) -> Vec<Waker> {
        let mut wakers = Vec::new();
        for w in st.queue.drain() {
            let waiter = &mut st.waiters[w];
            waiter.grant = Some(Grant::Failed(msg.to_string()));
            if let Some(wk) = waiter.waker.take() {
                wakers.push(wk);
            }
        }
        wakers
    }

    /// While down, and while callers still ask: the next probe, after a
    /// jittered pause.
    pub(super) fn probe_later(self: &Rc<Self>) {
        let weak = Rc::downgrade(self);
        let pause = PROBE_INTERVAL.mul_f64(0.5 + 0.5 * random_unit());
        rt::spawn(async move {
            time::sleep(pause).await;
            let Some(shard) = weak.upgrade() else { return };
            let go = {
                let mut st = shard.state.borrow_mut();
                let go = st.down && !shard.closed.get() && st.opening == 0 && st.open() < st.cap;
                if go {
                    st.opening += 1;
                    st.asked = false;
                    shard.publish(&st);
                } else {
                    st.probing = false;
                    shard.publish(&st);
                }
                go
            };
            if go {
                rt::spawn(connect_task(shard));
            }
        });
    }
}
