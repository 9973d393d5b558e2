//! How capacity moves between a pool's shards: the registry that finds
//! this worker's shard of a pool, what other workers post to it (a new
//! cap, a unit lent or borrowed, a handle to a connection shared), and
//! the asking side of lending and sharing.

use std::any::Any;
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::time::Duration;

use tidepool_engine::rt::{self, time};

use super::connect::connect_task;
use super::{clock, Shard, Slot};
use crate::pool::stats::{set, CloseReason, ShardStats};
use crate::pool::Manager;

thread_local! {
    /// This worker's shards, so a resize posted from another thread finds
    /// its shard by pool id.
    static SHARDS: RefCell<Vec<(u64, Weak<dyn Capacity>)>> = const { RefCell::new(Vec::new()) };
}

/// What other workers ask of a shard: a new cap, a unit lent or borrowed.
/// (`Any`: `local` finds the typed shard a worker already runs.)
pub(super) trait Capacity: Any {
    fn set_cap(self: Rc<Self>, cap: usize);
    fn lend(self: Rc<Self>, to: usize, epoch: u64, spare_only: bool);
    fn borrowed(self: Rc<Self>, granted: bool, epoch: u64);
    fn share_to(self: Rc<Self>, to: usize);
    fn shared(self: Rc<Self>, exported: Option<Box<dyn Any + Send>>);
    fn probe_asked(self: Rc<Self>);
    fn peer_down(self: Rc<Self>);
    fn peer_up(self: Rc<Self>);
}

/// How long a connection must have sat idle before its shard gives its
/// capacity to another shard whose callers wait.
const LEND_IDLE: Duration = Duration::from_millis(200);

/// How soon a shard whose request for capacity was refused asks again.
pub(super) const BORROW_RETRY: Duration = Duration::from_millis(50);

/// Takes a unit of the starting cap of a shard not started yet (the
/// caller holds the pool's workers lock); false if it has none.
pub(super) fn claim(stats: &ShardStats) -> bool {
    use std::sync::atomic::Ordering::SeqCst;
    let taken = stats
        .target_cap
        .fetch_update(SeqCst, SeqCst, |c| c.checked_sub(1))
        .is_ok();
    if taken {
        // What other shards read when they look for a lender.
        let _ = stats.cap.fetch_update(SeqCst, SeqCst, |c| c.checked_sub(1));
    }
    taken
}

/// Files a shard just started as this worker's shard of its pool.
pub(super) fn register<M: Manager>(shard: &Rc<Shard<M>>) {
    let weak: Weak<dyn Capacity> = Rc::downgrade(shard) as Weak<dyn Capacity>;
    SHARDS.with(|s| {
        let mut s = s.borrow_mut();
        s.retain(|(_, w)| w.strong_count() > 0);
        s.push((shard.pool.id, weak));
    });
}

/// This worker's shard of pool `id`, if it runs one.
pub(super) fn running(id: u64) -> Option<Rc<dyn Capacity>> {
    SHARDS.with(|s| {
        s.borrow()
            .iter()
            .find(|(i, _)| *i == id)
            .and_then(|(_, w)| w.upgrade())
    })
}

/// Runs `f` on this worker's shard of pool `id`, if it has one.
pub(super) fn with_shard(id: u64, f: impl FnOnce(Rc<dyn Capacity>)) {
    if let Some(shard) = running(id) {
        f(shard);
    }
}

/// Applies a new cap to this worker's shard of pool `id` (posted by
/// `Pool::set_max_open`).
pub(crate) fn apply_cap(id: u64, cap: usize) {
    with_shard(id, |shard| shard.set_cap(cap));
}

impl<M: Manager> Capacity for Shard<M> {
    fn set_cap(self: Rc<Self>, cap: usize) {
        let victims = {
            let mut st = self.state.borrow_mut();
            st.cap = cap;
            set(&self.stats.cap, cap);
            Self::no_capacity_no_outage(&mut st);
            // Shrinking closes idle connections first (least recently used);
            // busy ones are retired as they come back.
            let mut victims = Vec::new();
            while st.open() > st.cap {
                let Some(key) = self.pop_idle_lru(&mut st) else {
                    break;
                };
                victims.push(st.remove(key).conn);
                self.stats.closed(CloseReason::Shrink);
            }
            self.publish(&st);
            victims
        };
        drop(victims);
        // Growing lets waiters connect at once.
        self.maybe_connect();
    }

    /// A shard with nothing open failed a caller fast on this shard's
    /// outage: probe (again) if no probe is on its way.
    fn probe_asked(self: Rc<Self>) {
        let probe = {
            let mut st = self.state.borrow_mut();
            st.asked = true;
            let probe = self.start_probe(&mut st);
            self.publish(&st);
            probe
        };
        if probe {
            rt::spawn(connect_task(self.clone()));
        }
    }

    /// Another shard found the database down.
    fn peer_down(self: Rc<Self>) {
        self.fail_waiters_on_outage_elsewhere();
    }

    /// Another shard's connect just succeeded: the database is back. A
    /// down shard dials now instead of at its next probe (up to
    /// `PROBE_INTERVAL` away), so every worker recovers within one connect.
    fn peer_up(self: Rc<Self>) {
        let go = self.reserve_redial(&mut self.state.borrow_mut());
        if go {
            rt::spawn(connect_task(self.clone()));
        }
    }

    /// Another shard's callers wait: give it a unit of cap if this shard is
    /// not using one (never opened, or, unless `spare_only`, a connection
    /// idle for `LEND_IDLE`, which is closed), and tell it either way.
    fn lend(self: Rc<Self>, to: usize, epoch: u64, spare_only: bool) {
        let current = self.split_is(epoch);
        let (granted, victim) = {
            let mut st = self.state.borrow_mut();
            let mut victim = None;
            let spare = st.cap > st.open() + st.opening && st.queue.is_empty();
            let granted = current
                && (spare
                    || !spare_only && {
                        let now = clock();
                        let key = st
                            .slots
                            .iter()
                            .find(|(_, s)| {
                                s.in_flight == 0
                                    && !s.remote
                                    && now.saturating_duration_since(s.idle_since) >= LEND_IDLE
                                    && !s
                                        .conn
                                        .as_ref()
                                        .is_some_and(|c| self.pool.manager.used_elsewhere(c))
                            })
                            .map(|(k, _)| k);
                        if let Some(key) = key {
                            st.idle.retain(|k| *k != key);
                            victim = st.remove(key).conn;
                            self.stats.closed(CloseReason::Shrink);
                        }
                        key.is_some()
                    });
            if granted {
                st.cap -= 1;
                set(&self.stats.cap, st.cap);
                Self::no_capacity_no_outage(&mut st);
            }
            self.publish(&st);
            (granted, victim)
        };
        drop(victim);
        let id = self.pool.id;
        if let Some(w) = self.pool.workers.lock().unwrap()[to].clone() {
            w.post(move || with_shard(id, |s| s.borrowed(granted, epoch)));
        }
    }

    /// Another shard's callers wait and it has no connection: hand it a
    /// handle to one of ours (the least busy), so its statements run here
    /// at once instead of waiting for capacity to move (multiplexed pools
    /// whose connections can be delegated to).
    fn share_to(self: Rc<Self>, to: usize) {
        let exported = {
            let st = self.state.borrow();
            st.slots
                .iter()
                .filter(|(_, s)| !s.remote)
                .filter_map(|(_, s)| s.conn.as_ref().map(|c| (s.in_flight, c)))
                .min_by_key(|(n, _)| *n)
                .and_then(|(_, c)| self.pool.manager.export(c))
        };
        let id = self.pool.id;
        if let Some(w) = self.pool.workers.lock().unwrap()[to].clone() {
            w.post(move || with_shard(id, |s| s.shared(exported)));
        }
    }

    /// The answer to this shard's request for a handle to another worker's
    /// connection: filed as a slot and handed to the waiting callers.
    fn shared(self: Rc<Self>, exported: Option<Box<dyn Any + Send>>) {
        let conn = exported.and_then(|e| self.pool.manager.import(e));
        let got = conn.is_some();
        {
            let mut st = self.state.borrow_mut();
            st.sharing = false;
            if let Some(conn) = conn {
                if !self.closed.get() {
                    let now = clock();
                    let key = st.slots.insert(Slot {
                        conn: Some(conn),
                        in_flight: 0,
                        expires: None,
                        idle_since: now,
                        checked_out_at: now,
                        route: "",
                        leak_reported: false,
                        remote: true,
                        seen: (0, 0),
                    });
                    st.remote += 1;
                    self.hand_off(&mut st, key);
                }
            }
            self.publish(&st);
        }
        if !got {
            // Nothing to share there (its connection just closed): callers
            // still waiting ask again shortly.
            self.state.borrow_mut().sharing = true;
            self.share_later();
        }
    }

    /// The answer to this shard's request for capacity.
    fn borrowed(self: Rc<Self>, granted: bool, epoch: u64) {
        let current = self.split_is(epoch);
        {
            let mut st = self.state.borrow_mut();
            st.borrowing = false;
            // Under a newer split the lender's cap was set anew too: a
            // unit lent under the old one is not added on top.
            if granted && current {
                st.cap += 1;
                set(&self.stats.cap, st.cap);
            }
            self.publish(&st);
        }
        self.maybe_connect();
        if granted {
            // Callers may still be short of room: ask again at once.
            self.borrow_capacity();
        } else {
            // Nothing to lend yet (its idle connections are too fresh).
            self.borrow_later();
        }
    }
}

impl<M: Manager> Shard<M> {
    /// Which `set_max_open` split of the caps is current (see `lend`).
    fn split(&self) -> u64 {
        self.pool
            .cap_epoch
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn split_is(&self, epoch: u64) -> bool {
        self.split() == epoch
    }

    /// Runs `f` on this pool's shard of every other started worker.
    pub(super) fn tell_others(&self, f: fn(Rc<dyn Capacity>)) {
        let id = self.pool.id;
        let workers = self.pool.workers.lock().unwrap();
        for (j, w) in workers.iter().enumerate() {
            if let (true, Some(w)) = (j != self.index, w) {
                w.post(move || with_shard(id, f));
            }
        }
    }

    /// Callers wait and this shard has no room to connect: asks the shard
    /// with the most unused capacity (or, failing that, an idle connection)
    /// to lend it a unit. One request at a time; the answer asks again
    /// while callers still wait.
    pub(super) fn borrow_capacity(self: &Rc<Self>) {
        if self.fail_waiters_on_outage_elsewhere() {
            return;
        }
        let (donor, short_for_long) = {
            let mut st = self.state.borrow_mut();
            let short = !st.queue.is_empty() && st.open() + st.opening >= st.cap;
            if !short || st.borrowing || self.closed.get() || st.down {
                return;
            }
            // A unit another shard does not use moves at once; an open
            // connection (closed there, opened here) moves only to a shard
            // with none, or short on average (`demand`: more callers
            // holding or waiting, over about a second, than its cap serves
            // at once). A close and a connect (a backend forked,
            // authentication, TLS) cost more than a short wait for a
            // release. Without this, a pool at its cap moved connections
            // between busy workers on every momentary queue: eight workers
            // at a steady 1,000 req/s reconnected about twice a second
            // with nothing else changing.
            let serves = st.cap * self.callers_per_connection();
            let short_for_long =
                st.open() + st.opening == 0 || st.demand.get().average(clock()) > serves as f64;
            let load = |c: &std::sync::atomic::AtomicU64| {
                c.load(std::sync::atomic::Ordering::Relaxed) as usize
            };
            let donor = self
                .others()
                .map(|(j, s)| {
                    let unused = load(&s.cap).saturating_sub(load(&s.open) + load(&s.opening));
                    (j, unused, load(&s.idle), load(&s.waiting))
                })
                .filter(|&(_, unused, idle, waiting)| {
                    waiting == 0 && (unused > 0 || short_for_long && idle > 0)
                })
                .max_by_key(|&(_, unused, idle, _)| (unused, idle))
                .map(|(j, ..)| j);
            st.borrowing = true;
            (donor, short_for_long)
        };
        let worker = match donor {
            None => None,
            Some(j) => {
                let workers = self.pool.workers.lock().unwrap();
                match &workers[j] {
                    Some(w) => Some(w.clone()),
                    // A shard whose worker never started (a pool declared
                    // for more workers than run): its capacity is taken
                    // directly, under the lock its start reads it under.
                    None if claim(&self.pool.shards[j]) => {
                        drop(workers);
                        {
                            let mut st = self.state.borrow_mut();
                            st.borrowing = false;
                            st.cap += 1;
                            set(&self.stats.cap, st.cap);
                            self.publish(&st);
                        }
                        self.maybe_connect();
                        return self.borrow_capacity();
                    }
                    None => None,
                }
            }
        };
        let Some(worker) = worker else {
            // Nobody can lend now.
            self.state.borrow_mut().borrowing = false;
            self.borrow_later();
            return;
        };
        let (id, to) = (self.pool.id, self.index);
        let epoch = self.split();
        worker.post(move || with_shard(id, |s| s.lend(to, epoch, !short_for_long)));
    }

    /// Callers wait and this shard has no connection, opening or open, nor
    /// a remote handle: asks the shard with the most connections for a
    /// handle to one (multiplexed pools). Capacity may still move here
    /// later (`borrow_capacity`); until then, statements are delegated.
    pub(super) fn ask_share(self: &Rc<Self>) {
        if !M::MULTIPLEXED || self.fail_waiters_on_outage_elsewhere() {
            return;
        }
        let donor = {
            let mut st = self.state.borrow_mut();
            if st.queue.is_empty()
                || st.open() + st.opening + st.remote > 0
                || st.sharing
                || self.closed.get()
            {
                return;
            }
            let donor = self
                .others()
                .map(|(j, s)| (j, s.open.load(std::sync::atomic::Ordering::Relaxed)))
                .filter(|&(_, open)| open > 0)
                .max_by_key(|&(_, open)| open)
                .map(|(j, _)| j);
            let worker = donor.and_then(|j| self.pool.workers.lock().unwrap()[j].clone());
            // Out until answered, or until the retry below looks again.
            st.sharing = true;
            worker
        };
        let Some(worker) = donor else {
            // No worker has a connection yet (they are still opening, or
            // capacity is on its way here): look again shortly.
            self.share_later();
            return;
        };
        let (id, to) = (self.pool.id, self.index);
        worker.post(move || with_shard(id, |s| s.share_to(to)));
    }

    /// `ask_share` again after `BORROW_RETRY` (`sharing` is set meanwhile).
    fn share_later(self: &Rc<Self>) {
        let weak = Rc::downgrade(self);
        rt::spawn(async move {
            time::sleep(BORROW_RETRY).await;
            if let Some(shard) = weak.upgrade() {
                shard.state.borrow_mut().sharing = false;
                shard.ask_share();
            }
        });
    }

    /// Asks for capacity again after `BORROW_RETRY`, while callers wait:
    /// lenders appear as other shards' connections go idle.
    fn borrow_later(self: &Rc<Self>) {
        {
            let mut st = self.state.borrow_mut();
            if st.borrowing || st.queue.is_empty() {
                return;
            }
            st.borrowing = true;
        }
        let weak = Rc::downgrade(self);
        rt::spawn(async move {
            time::sleep(BORROW_RETRY).await;
            if let Some(shard) = weak.upgrade() {
                shard.state.borrow_mut().borrowing = false;
                shard.borrow_capacity();
            }
        });
    }
}
