//! One worker's shard of a pool: its connections, its FIFO of waiters, its
//! connects in flight, its reaper. Everything here runs on the owning
//! worker, so the books are a `RefCell`, never a lock.
//!
//! Book-keeping rule: a change is written into `State` (and published to
//! the stats) before the connection is acted on — before a connect is
//! started, before a connection is closed or handed over.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;
use tidepool_engine::rt::{self, time};

use super::backoff::{random_unit, retry_observed, Backoff, RetryError};
use super::config::share;
use super::discipline::{Class, ShedReason, WaitQueue};
use super::stats::{add, set, CloseReason, ConnectFailure, ShardStats};
use super::warmup::warmup_plan;
use super::{AcquireError, Manager, PoolError, PoolInner};

struct Slot<C> {
    /// `None` while an exclusive caller holds the connection.
    conn: Option<C>,
    in_flight: usize,
    expires: Option<Instant>,
    idle_since: Instant,
    checked_out_at: Instant,
    route: &'static str,
    leak_reported: bool,
    /// A handle to a connection another worker owns (multiplexed pools):
    /// operations on it are delegated there. Not a connection of this
    /// shard: it takes no capacity and closing it closes nothing.
    remote: bool,
    /// The connection's outcome totals when last counted (see `release`).
    seen: (u64, u64),
}

enum Grant {
    Slot(usize),
    Failed(String),
    Shed(ShedReason),
}

/// Why a wait ended without a connection.
enum Denied {
    Failed(String),
    Shed(ShedReason),
}

struct Waiter {
    waker: Option<Waker>,
    grant: Option<Grant>,
}

struct State<C> {
    cap: usize,
    slots: Slab<Slot<C>>,
    /// Exclusive pools: idle slot keys, most recently used at the back.
    idle: VecDeque<usize>,
    opening: usize,
    /// Callers holding a connection (exclusive) or an in-flight slot (multiplexed).
    in_use: usize,
    waiters: Slab<Waiter>,
    queue: WaitQueue,
    /// Mean time a connection is held (EWMA), for the expected wait of a
    /// newcomer to the queue.
    hold_ewma: Duration,
    last_error: Option<String>,
    /// The last connect failed with nothing open: the database is out of
    /// reach from here. Callers fail at once (naming the error) instead of
    /// each waiting out `acquire_timeout`, while one connect at a time
    /// probes for its return; the first connect that succeeds clears it.
    down: bool,
    /// Successful connects pool-wide when this shard went down: once
    /// another shard's connect has succeeded since, the database is back
    /// and callers here wait for this shard's own connect instead of
    /// failing fast (the news that it should dial crosses workers, and a
    /// caller can arrive before it).
    down_ok: u64,
    /// While `down`: a probe connect is running or scheduled.
    probing: bool,
    /// While `down`: a caller failed fast since the last probe began. Probes
    /// go on only while someone asks, so a database nobody needs is not
    /// dialled forever.
    asked: bool,
    /// A request for another shard's unused capacity is out.
    borrowing: bool,
    /// Slots that are remote handles (see `Slot::remote`).
    remote: usize,
    /// A request for a handle to another worker's connection is out.
    sharing: bool,
}

impl<C> State<C> {
    /// Connections this shard opened (remote handles are not).
    fn open(&self) -> usize {
        self.slots.len() - self.remote
    }

    /// Removes slot `key`, keeping the count of remote handles.
    fn remove(&mut self, key: usize) -> Slot<C> {
        let slot = self.slots.remove(key);
        if slot.remote {
            self.remote -= 1;
        }
        slot
    }

    fn idle_count(&self, multiplexed: bool) -> usize {
        if multiplexed {
            self.slots.iter().filter(|(_, s)| s.in_flight == 0).count()
        } else {
            self.idle.len()
        }
    }
}

pub(crate) struct Shard<M: Manager> {
    pool: Arc<PoolInner<M>>,
    pub(crate) stats: Arc<ShardStats>,
    index: usize,
    state: RefCell<State<M::Conn>>,
    /// Set when the worker shuts down: no new connects.
    closed: Cell<bool>,
    /// Warm-up is under way: `min_idle` is opened by its schedule (delay,
    /// jitter, batches, the cluster slot), not topped up at once by the
    /// reaper or a release.
    warming: Cell<bool>,
}

thread_local! {
    /// This worker's shards, so a resize posted from another thread finds
    /// its shard by pool id.
    static SHARDS: RefCell<Vec<(u64, Weak<dyn Capacity>)>> = const { RefCell::new(Vec::new()) };
}

/// What other workers ask of a shard: a new cap, a unit lent or borrowed.
/// (`Any`: `local` finds the typed shard a worker already runs.)
trait Capacity: Any {
    fn set_cap(self: Rc<Self>, cap: usize);
    fn lend(self: Rc<Self>, to: usize, epoch: u64);
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
const BORROW_RETRY: Duration = Duration::from_millis(50);

/// While the database is down, no connect attempt waits longer than this
/// after the last, and a new probe starts within it (jittered over its
/// second half): recovery is noticed within about this long.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Takes a unit of the starting cap of a shard not started yet (the
/// caller holds the pool's workers lock); false if it has none.
fn claim(stats: &ShardStats) -> bool {
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

/// This worker's shard of pool `id`, if it runs one.
fn running(id: u64) -> Option<Rc<dyn Capacity>> {
    SHARDS.with(|s| {
        s.borrow()
            .iter()
            .find(|(i, _)| *i == id)
            .and_then(|(_, w)| w.upgrade())
    })
}

/// Runs `f` on this worker's shard of pool `id`, if it has one.
fn with_shard(id: u64, f: impl FnOnce(Rc<dyn Capacity>)) {
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
    /// not using one (never opened, or a connection idle for `LEND_IDLE`,
    /// which is closed), and tell it either way.
    fn lend(self: Rc<Self>, to: usize, epoch: u64) {
        let current = self.split_is(epoch);
        let (granted, victim) = {
            let mut st = self.state.borrow_mut();
            let mut victim = None;
            let spare = st.cap > st.open() + st.opening && st.queue.is_empty();
            let granted = current
                && (spare || {
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
    /// This worker's shard of `pool`: the one it already runs, or a new
    /// one. One shard per pool and worker, however many handles the app
    /// asks for (a route's state and a cache's, say): a second shard would
    /// count the worker's share of `max_open` twice, and what other
    /// workers post to this worker's shard (`with_shard`: a unit lent, a
    /// connection shared) would reach one shard while callers wait in the
    /// other.
    pub(crate) fn local(pool: Arc<PoolInner<M>>, index: usize) -> Rc<Shard<M>> {
        let Some(running) = running(pool.id) else {
            return Shard::start(pool, index);
        };
        let running: Rc<dyn Any> = running;
        let shard = running
            .downcast::<Shard<M>>()
            .unwrap_or_else(|_| unreachable!("pool ids are unique, so is the manager type"));
        assert!(
            shard.index == index,
            "tidepool: pool {:?}: this thread runs its shard {} and was asked for shard {index}",
            shard.pool.name,
            shard.index
        );
        shard
    }

    fn start(pool: Arc<PoolInner<M>>, index: usize) -> Rc<Shard<M>> {
        let stats = pool.shards[index].clone();
        let queue_config = pool.config.queue;
        let cap = stats.target_cap.load(std::sync::atomic::Ordering::Relaxed) as usize;
        set(&stats.cap, cap);
        let warming = share(pool.config.min_idle, pool.shards.len(), index) > 0;
        let shard = Rc::new(Shard {
            pool,
            stats,
            index,
            state: RefCell::new(State {
                cap,
                slots: Slab::new(),
                idle: VecDeque::new(),
                opening: 0,
                in_use: 0,
                waiters: Slab::new(),
                queue: WaitQueue::new(queue_config, clock()),
                hold_ewma: Duration::ZERO,
                last_error: None,
                down: false,
                down_ok: 0,
                probing: false,
                asked: false,
                borrowing: false,
                remote: 0,
                sharing: false,
            }),
            closed: Cell::new(false),
            warming: Cell::new(warming),
        });
        let id = shard.pool.id;
        let weak: Weak<dyn Capacity> = Rc::downgrade(&shard) as Weak<dyn Capacity>;
        SHARDS.with(|s| {
            let mut s = s.borrow_mut();
            s.retain(|(_, w)| w.strong_count() > 0);
            s.push((id, weak));
        });
        rt::spawn(reaper(Rc::downgrade(&shard)));
        rt::spawn(warm_up(Rc::downgrade(&shard)));
        shard
    }

    /// The request class configured for `route` (`PoolConfig::classes`).
    pub(crate) fn route_class(&self, route: &str) -> Class {
        let classes = &self.pool.config.classes;
        if classes.is_empty() {
            return Class::Default;
        }
        classes.get(route).copied().unwrap_or_default()
    }

    pub(crate) fn cap(&self) -> usize {
        self.state.borrow().cap
    }

    /// Which `set_max_open` split of the caps is current (see `lend`).
    fn split(&self) -> u64 {
        self.pool
            .cap_epoch
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn split_is(&self, epoch: u64) -> bool {
        self.split() == epoch
    }

    fn publish(&self, st: &State<M::Conn>) {
        let s = &*self.stats;
        set(&s.open, st.open());
        set(&s.idle, st.idle_count(M::MULTIPLEXED));
        set(&s.in_use, st.in_use);
        set(&s.opening, st.opening);
        set(&s.waiting, st.queue.len());
        // One writer (this worker); the reader resets it with a swap. A
        // peak published just before a reset can be lost, not invented.
        let demand = (st.in_use + st.queue.len()) as u64;
        if demand > s.peak_demand.load(std::sync::atomic::Ordering::Relaxed) {
            s.peak_demand
                .store(demand, std::sync::atomic::Ordering::Relaxed);
        }
        set(&s.down, usize::from(st.down));
        set(&s.probing, usize::from(st.probing));
    }

    /// The pool's other shards, with what they publish.
    fn others(&self) -> impl Iterator<Item = (usize, &ShardStats)> + '_ {
        let me = self.index;
        self.pool
            .shards
            .iter()
            .enumerate()
            .filter(move |&(j, _)| j != me)
            .map(|(j, s)| (j, &**s))
    }

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
    fn outage_elsewhere(&self, st: &State<M::Conn>) -> Option<String> {
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

    /// Runs `f` on this pool's shard of every other started worker.
    fn tell_others(&self, f: fn(Rc<dyn Capacity>)) {
        let id = self.pool.id;
        let workers = self.pool.workers.lock().unwrap();
        for (j, w) in workers.iter().enumerate() {
            if let (true, Some(w)) = (j != self.index, w) {
                w.post(move || with_shard(id, f));
            }
        }
    }

    /// Fails the waiters if `outage_elsewhere` says so; returns whether it did.
    fn fail_waiters_on_outage_elsewhere(&self) -> bool {
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
    fn no_capacity_no_outage(st: &mut State<M::Conn>) {
        if st.cap == 0 {
            st.down = false;
            st.probing = false;
        }
    }

    /// While down: starts a probe connect unless one is on its way
    /// (reserving it in the books); the caller spawns `connect_task`.
    fn start_probe(&self, st: &mut State<M::Conn>) -> bool {
        let probe =
            st.down && !st.probing && st.opening == 0 && st.open() < st.cap && !self.closed.get();
        if probe {
            st.opening += 1;
            st.probing = true;
        }
        probe
    }

    fn min_idle_share(&self) -> usize {
        share(
            self.pool.config.min_idle,
            self.pool.shards.len(),
            self.index,
        )
    }

    fn expiry(&self, now: Instant) -> Option<Instant> {
        let cfg = &self.pool.config;
        cfg.max_lifetime.map(|l| {
            // +-jitter so connections made together do not expire together.
            let f = 1.0 + cfg.lifetime_jitter * (2.0 * random_unit() - 1.0);
            now + l.mul_f64(f)
        })
    }

    fn pop_idle_lru(&self, st: &mut State<M::Conn>) -> Option<usize> {
        if M::MULTIPLEXED {
            // One other workers use goes last: closing it fails their
            // requests on the way to it.
            let manager = &self.pool.manager;
            let key = st
                .slots
                .iter()
                .filter(|(_, s)| s.in_flight == 0 && !s.remote)
                .min_by_key(|(_, s)| s.conn.as_ref().is_some_and(|c| manager.used_elsewhere(c)))
                .map(|(k, _)| k)?;
            Some(key)
        } else {
            st.idle.pop_front()
        }
    }

    /// Takes an available connection for a caller, closing expired ones on
    /// the way. Returns the slot key with the caller's claim recorded.
    fn take_available(
        &self,
        st: &mut State<M::Conn>,
        now: Instant,
        route: &'static str,
    ) -> (Option<usize>, Vec<M::Conn>) {
        let mut expired = Vec::new();
        let key = if M::MULTIPLEXED {
            // Pack, don't spread: the busiest connection with room batches best.
            let max = self.pool.config.max_in_flight;
            // A connection that died while nobody used it (the server
            // restarted, a failover cut it) is closed here, never handed
            // out; one still in use is closed by its last release.
            let manager = &self.pool.manager;
            let dead: Vec<usize> = st
                .slots
                .iter()
                .filter(|(_, s)| {
                    s.in_flight == 0 && s.conn.as_ref().is_some_and(|c| !manager.is_usable(c))
                })
                .map(|(k, _)| k)
                .collect();
            for k in dead {
                let slot = st.remove(k);
                if !slot.remote {
                    self.stats.closed(CloseReason::Broken);
                }
                expired.extend(slot.conn);
            }
            // A connection of this worker before a remote handle: a
            // delegated statement costs two hops between workers.
            st.slots
                .iter()
                .filter(|(_, s)| {
                    s.in_flight < max && s.conn.as_ref().is_some_and(|c| manager.is_usable(c))
                })
                .max_by_key(|(_, s)| (!s.remote, s.in_flight))
                .map(|(k, _)| k)
        } else {
            loop {
                let Some(key) = st.idle.pop_back() else {
                    break None;
                };
                if st.slots[key].expires.is_some_and(|e| e <= now) {
                    expired.push(
                        st.slots
                            .remove(key)
                            .conn
                            .expect("idle slot holds its connection"),
                    );
                    self.stats.closed(CloseReason::Expired);
                    continue;
                }
                break Some(key);
            }
        };
        if let Some(k) = key {
            let slot = &mut st.slots[k];
            slot.in_flight += 1;
            slot.checked_out_at = now;
            slot.route = route;
            slot.leak_reported = false;
            st.in_use += 1;
        }
        (key, expired)
    }

    /// Starts connects while callers wait for more connections than are
    /// on their way (creation elision), within the cap and the fan-out bound.
    fn maybe_connect(self: &Rc<Self>) {
        loop {
            let go = {
                let mut st = self.state.borrow_mut();
                let keep = if self.warming.get() {
                    0
                } else {
                    self.min_idle_share()
                };
                let wanted = st.queue.len().max(keep.saturating_sub(st.open()));
                // While down, only the probe dials (see `wait`).
                let ok = !self.closed.get()
                    && !st.down
                    && wanted > st.opening
                    && st.open() + st.opening < st.cap
                    && st.opening < self.pool.config.max_connecting;
                if ok {
                    st.opening += 1;
                    self.publish(&st);
                }
                ok
            };
            if !go {
                return;
            }
            rt::spawn(connect_task(self.clone()));
        }
    }

    /// Callers wait and this shard has no room to connect: asks the shard
    /// with the most unused capacity (or, failing that, an idle connection)
    /// to lend it a unit. One request at a time; the answer asks again
    /// while callers still wait.
    fn borrow_capacity(self: &Rc<Self>) {
        if self.fail_waiters_on_outage_elsewhere() {
            return;
        }
        let donor = {
            let mut st = self.state.borrow_mut();
            let short = !st.queue.is_empty() && st.open() + st.opening >= st.cap;
            if !short || st.borrowing || self.closed.get() || st.down {
                return;
            }
            let load = |c: &std::sync::atomic::AtomicU64| {
                c.load(std::sync::atomic::Ordering::Relaxed) as usize
            };
            let donor = self
                .others()
                .map(|(j, s)| {
                    let unused = load(&s.cap).saturating_sub(load(&s.open) + load(&s.opening));
                    (j, unused, load(&s.idle), load(&s.waiting))
                })
                .filter(|&(_, unused, idle, waiting)| waiting == 0 && (unused > 0 || idle > 0))
                .max_by_key(|&(_, unused, idle, _)| (unused, idle))
                .map(|(j, ..)| j);
            st.borrowing = true;
            donor
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
        worker.post(move || with_shard(id, |s| s.lend(to, epoch)));
    }

    /// Callers wait and this shard has no connection, opening or open, nor
    /// a remote handle: asks the shard with the most connections for a
    /// handle to one (multiplexed pools). Capacity may still move here
    /// later (`borrow_capacity`); until then, statements are delegated.
    fn ask_share(self: &Rc<Self>) {
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

    /// A connect that ended without a result (its task panicked or was
    /// dropped): its reservation is freed; nothing is said of the database.
    fn abandon_connect(self: &Rc<Self>) {
        {
            let mut st = self.state.borrow_mut();
            st.opening -= 1;
            if st.opening == 0 {
                // A probe that never reported: the next caller starts one.
                st.probing = false;
            }
            self.publish(&st);
        }
        self.maybe_connect();
    }

    /// A connect attempt failed and will be retried. With nothing open the
    /// database is out of reach from here: the waiters hear it now, not
    /// after the whole retry budget, later callers fail fast (`wait`), and
    /// the retries go on as the probe, at most `PROBE_INTERVAL` apart.
    fn attempt_failed(&self, e: &M::Error, started: u64) -> Option<Duration> {
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
    fn reserve_redial(&self, st: &mut State<M::Conn>) -> bool {
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
    fn stale(&self, started: u64) -> bool {
        self.pool
            .connects_ok
            .load(std::sync::atomic::Ordering::Acquire)
            != started
    }

    /// The database is out of reach from this shard (nothing open, a
    /// connect refused with `error`): recorded for the shards without
    /// capacity, and, the first time, logged and told to the others.
    fn go_down(&self, st: &mut State<M::Conn>, error: &str) {
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
    fn note_outage(&self, st: &mut State<M::Conn>) -> Vec<Waker> {
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
    fn fail_waiters(&self, st: &mut State<M::Conn>, msg: &str) -> Vec<Waker> {
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
    fn probe_later(self: &Rc<Self>) {
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

    /// A finished connect: the opening slot is released on this same path,
    /// success or failure.
    fn finish_connect(
        self: &Rc<Self>,
        mut res: Result<M::Conn, RetryError<M::Error>>,
        started: u64,
    ) {
        if let Ok(conn) = res.as_mut() {
            self.pool
                .manager
                .record_latency(conn, &self.stats.query_latency);
        }
        let mut drop_later = None;
        let mut failed_waiters = Vec::new();
        let mut probe = false;
        {
            let mut st = self.state.borrow_mut();
            st.opening -= 1;
            match res {
                Ok(conn) => {
                    add(&self.stats.connects, 1);
                    self.pool
                        .connects_ok
                        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    st.last_error = None;
                    // Shards that found the database down dial now, whether
                    // or not this one did (it may have kept connections
                    // through the outage, or never dialled during it).
                    let others_down = self.pool.shards.iter().enumerate().any(|(j, s)| {
                        j != self.index && s.down.load(std::sync::atomic::Ordering::Relaxed) > 0
                    });
                    if st.down {
                        tracing::info!(pool = %self.pool.name, "database reachable again");
                    }
                    if st.down || others_down {
                        self.tell_others(|s| s.peer_up());
                    }
                    st.down = false;
                    st.probing = false;
                    st.asked = false;
                    if st.open() >= st.cap || self.closed.get() {
                        // Shrunk while connecting: not wanted any more.
                        drop_later = Some(conn);
                        self.stats.closed(CloseReason::Shrink);
                    } else {
                        let now = clock();
                        let seen = self.pool.manager.outcomes(&conn);
                        let key = st.slots.insert(Slot {
                            conn: Some(conn),
                            in_flight: 0,
                            expires: self.expiry(now),
                            idle_since: now,
                            checked_out_at: now,
                            route: "",
                            leak_reported: false,
                            remote: false,
                            seen,
                        });
                        self.hand_off(&mut st, key);
                    }
                }
                Err(e) => {
                    let (why, err, fatal) = match e {
                        RetryError::Failed(e) => {
                            let fatal = !e.is_transient();
                            let why = if fatal {
                                ConnectFailure::Fatal
                            } else {
                                ConnectFailure::Transient
                            };
                            (why, Some(e.to_string()), fatal)
                        }
                        RetryError::TimedOut(e) => (
                            ConnectFailure::Timeout,
                            Some(e.map_or_else(
                                || "connect timed out".to_string(),
                                |e| e.to_string(),
                            )),
                            false,
                        ),
                    };
                    self.stats.connect_failed(why);
                    // Once per failed connect (its retries and back-off
                    // already ran): rare, and the one line an operator
                    // needs when a password or a certificate is wrong.
                    tracing::warn!(
                        pool = %self.pool.name,
                        worker = self.index,
                        failure = ?why,
                        error = err.as_deref().unwrap_or(""),
                        fatal,
                        "connect failed"
                    );
                    st.last_error = err.clone();
                    // Retries and back-off already ran for the whole
                    // connect_timeout: with nothing open, waiting longer
                    // only makes every caller slow to fail.
                    if st.open() == 0 && st.cap > 0 && !self.stale(started) {
                        self.go_down(&mut st, err.as_deref().unwrap_or_default());
                    }
                    if fatal || st.down {
                        // Retrying cannot fix it (or has not): every waiter hears it now.
                        let msg = err.unwrap_or_default();
                        failed_waiters = self.fail_waiters(&mut st, &msg);
                    }
                    if st.down && st.opening == 0 {
                        // This was the probe (or the last connect): probe
                        // again while callers ask, else until one does.
                        let elsewhere = self
                            .pool
                            .asked_elsewhere
                            .swap(false, std::sync::atomic::Ordering::Relaxed);
                        if (st.asked || elsewhere) && !self.closed.get() {
                            st.asked = false;
                            st.probing = true;
                            probe = true;
                        } else {
                            st.probing = false;
                        }
                    }
                }
            }
            self.publish(&st);
        }
        drop(drop_later);
        for w in failed_waiters {
            w.wake();
        }
        if probe {
            self.probe_later();
        }
        self.maybe_connect();
    }

    /// Gives slot `key` (free, connection inside) to the first waiter, or
    /// files it as idle.
    fn hand_off(&self, st: &mut State<M::Conn>, key: usize) {
        let now = clock();
        let shed = self.shed(st, now);
        // Woken now: their futures only run on a later poll, once the books
        // are released.
        for w in shed {
            w.wake();
        }
        while let Some(w) = st.queue.pop(now) {
            let Some(waiter) = st.waiters.get_mut(w) else {
                continue;
            };
            let slot = &mut st.slots[key];
            slot.in_flight += 1;
            slot.checked_out_at = clock();
            st.in_use += 1;
            waiter.grant = Some(Grant::Slot(key));
            if let Some(wk) = waiter.waker.take() {
                wk.wake();
            }
            if M::MULTIPLEXED && st.slots[key].in_flight < self.pool.config.max_in_flight {
                // A shared connection can take more waiters.
                continue;
            }
            return;
        }
        if !M::MULTIPLEXED {
            st.slots[key].idle_since = clock();
            st.idle.push_back(key);
        }
    }

    pub(crate) async fn acquire(
        self: &Rc<Self>,
        route: &'static str,
        class: Class,
    ) -> Result<Pooled<M>, AcquireError> {
        let start = clock();
        let deadline = start + self.pool.config.acquire_timeout;
        loop {
            let (key, expired) = {
                let mut st = self.state.borrow_mut();
                // Nobody overtakes callers already waiting.
                let r = if st.queue.is_empty() {
                    let now = clock();
                    let r = self.take_available(&mut st, now, route);
                    if r.0.is_some() {
                        st.queue.served_at_once(now);
                    }
                    r
                } else {
                    (None, Vec::new())
                };
                self.publish(&st);
                r
            };
            drop(expired);
            let key = match key {
                Some(k) => k,
                None => match self.wait(start, deadline, class).await {
                    Ok(k) => {
                        self.state.borrow_mut().slots[k].route = route;
                        k
                    }
                    Err(e) => {
                        // Not an acquire-wait sample: the wait for a
                        // connection that never came (an outage, a timeout)
                        // must not read as a pool too small to the autoscaler.
                        if matches!(e, AcquireError::Timeout { .. }) {
                            add(&self.stats.acquire_timeouts, 1);
                        }
                        return Err(e);
                    }
                },
            };
            match self.checkout(key).await {
                Some(p) => {
                    add(&self.stats.acquires, 1);
                    self.stats
                        .acquire_wait
                        .record(clock().saturating_duration_since(start));
                    return Ok(p);
                }
                // Failed its health check: closed; try again.
                None => continue,
            }
        }
    }

    /// Turns a claimed slot into a guard, health-checking a connection that
    /// sat idle too long.
    async fn checkout(self: &Rc<Self>, key: usize) -> Option<Pooled<M>> {
        let (conn, stale) = {
            let mut st = self.state.borrow_mut();
            let slot = &mut st.slots[key];
            let stale = self
                .pool
                .config
                .check_after_idle
                .is_some_and(|t| clock().saturating_duration_since(slot.idle_since) > t);
            let conn = if M::MULTIPLEXED {
                let Some(shared) = slot.conn.as_ref() else {
                    // The shared connection broke between this caller's
                    // grant and its turn to run (another user's release
                    // took it out): give the claim back; the last claim
                    // out retires the slot.
                    slot.in_flight -= 1;
                    let retire = slot.in_flight == 0;
                    st.in_use -= 1;
                    if retire && !st.remove(key).remote {
                        self.stats.closed(CloseReason::Broken);
                    }
                    self.publish(&st);
                    return None;
                };
                self.pool.manager.share(shared)
            } else {
                slot.conn.take().expect("free slot holds its connection")
            };
            (conn, stale && !M::MULTIPLEXED)
        };
        let mut guard = Pooled {
            shard: self.clone(),
            key,
            conn: Some(conn),
            since: clock(),
        };
        if !M::MULTIPLEXED && !self.pool.manager.poll_idle(guard.conn.as_mut().unwrap()) {
            // Closed by the server while it sat idle: never handed out.
            guard.discard(CloseReason::FailedCheck);
            return None;
        }
        if stale {
            let ok = self
                .pool
                .manager
                .check(guard.conn.as_mut().unwrap())
                .await
                .is_ok();
            if !ok {
                guard.discard(CloseReason::FailedCheck);
                return None;
            }
        }
        Some(guard)
    }

    /// Tells the queue what the pool can serve now.
    fn size_queue(&self, st: &mut State<M::Conn>) {
        let per_conn = if M::MULTIPLEXED {
            self.pool.config.max_in_flight
        } else {
            1
        };
        let servers = st.open() * per_conn;
        // The pool, not only this shard, must be at its cap with its
        // connections open: callers waiting for a connect (at start, after
        // an outage) wait for the database to answer, not for others to
        // finish; and a shard short of its share while another shard could
        // lend it a unit (or an idle connection) is waiting for capacity.
        // Neither is overload; nor is a shard without capacity of its own
        // waiting while another shard still opens the pool's connections
        // (eight workers sharing two connections, at start).
        // (The other shards are read only for a queue longer than this
        // shard serves, the case that can start or keep a standing state:
        // not on every release.)
        let full = st.open() >= st.cap
            && st.opening == 0
            && (st.queue.len() <= servers || !self.others_could_serve());
        st.queue.set_pool(servers, full);
    }

    /// Whether another shard is still opening a connection, or has
    /// capacity it does not use or an idle connection with nobody waiting
    /// for it (what `borrow_capacity` asks for).
    fn others_could_serve(&self) -> bool {
        let load = |c: &std::sync::atomic::AtomicU64| {
            c.load(std::sync::atomic::Ordering::Relaxed) as usize
        };
        self.others().any(|(_, s)| {
            let unused = load(&s.cap).saturating_sub(load(&s.open) + load(&s.opening));
            load(&s.opening) > 0 || (load(&s.waiting) == 0 && (unused > 0 || load(&s.idle) > 0))
        })
    }

    /// Turns away what the queue's discipline sheds now (a standing
    /// queue's over-limit waiters); returns their wakers.
    fn shed(&self, st: &mut State<M::Conn>, now: Instant) -> Vec<Waker> {
        self.size_queue(st);
        let mut wakers = Vec::new();
        for (w, class) in st.queue.shed(now) {
            self.count_shed(class, ShedReason::Standing);
            let waiter = &mut st.waiters[w];
            waiter.grant = Some(Grant::Shed(ShedReason::Standing));
            if let Some(wk) = waiter.waker.take() {
                wakers.push(wk);
            }
        }
        wakers
    }

    fn count_shed(&self, class: Class, reason: ShedReason) {
        add(&self.stats.sheds[class as usize][reason as usize], 1);
    }

    fn shed_error(&self, class: Class, reason: ShedReason, waited: Duration) -> AcquireError {
        AcquireError::Shed {
            pool: self.pool.name.clone(),
            class,
            reason,
            waited,
        }
    }

    async fn wait(
        self: &Rc<Self>,
        start: Instant,
        deadline: Instant,
        class: Class,
    ) -> Result<usize, AcquireError> {
        // Waiters queued before the outage showed (the last connection
        // went in a way that does not pass through `release`) hear it now.
        let failed = self.note_outage(&mut self.state.borrow_mut());
        for w in failed {
            w.wake();
        }
        let key = {
            let mut st = self.state.borrow_mut();
            let back = st.down
                && self
                    .pool
                    .connects_ok
                    .load(std::sync::atomic::Ordering::Acquire)
                    != st.down_ok;
            // Another shard reached the database since this one went down:
            // dial now (as `peer_up` will) and wait for it.
            if back && self.reserve_redial(&mut st) {
                rt::spawn(connect_task(self.clone()));
            }
            if st.down && st.open() == 0 && !back {
                // Everyone fails at once instead of waiting out the
                // timeout, while one connect at a time (its retries paced
                // by the back-off, at most `PROBE_INTERVAL` apart) probes
                // whether the database is back.
                st.asked = true;
                let probe = self.start_probe(&mut st);
                let last = st.last_error.clone().unwrap_or_default();
                add(&self.stats.fast_failures, 1);
                self.publish(&st);
                drop(st);
                if probe {
                    rt::spawn(connect_task(self.clone()));
                }
                return Err(AcquireError::Connect {
                    pool: self.pool.name.clone(),
                    message: format!(
                        "the database is unreachable; failing fast until a connect succeeds (last connect: {last})"
                    ),
                });
            }
            if let Some(message) = self.outage_elsewhere(&st) {
                add(&self.stats.fast_failures, 1);
                self.publish(&st);
                return Err(AcquireError::Connect {
                    pool: self.pool.name.clone(),
                    message,
                });
            }
            let now = clock();
            // What a newcomer can expect to wait: those ahead of it, times
            // the mean hold, over the connections (at least one).
            let ahead = st.queue.len() as u32 + 1;
            let conns = st.cap.max(1) as u32;
            let expected = st.hold_ewma * ahead / conns;
            self.size_queue(&mut st);
            let hold = st.hold_ewma;
            if let Err(reason) = st.queue.admit(now, deadline, expected, class, hold) {
                self.count_shed(class, reason);
                self.publish(&st);
                return Err(self.shed_error(class, reason, Duration::ZERO));
            }
            let k = st.waiters.insert(Waiter {
                waker: None,
                grant: None,
            });
            st.queue.push(k, class, now);
            let shed = self.shed(&mut st, now);
            self.publish(&st);
            drop(st);
            for w in shed {
                w.wake();
            }
            k
        };
        let mut wait = WaitGrant {
            shard: self.clone(),
            key,
            done: false,
        };
        self.maybe_connect();
        self.borrow_capacity();
        self.ask_share();
        match time::timeout_at(deadline, &mut wait).await {
            Ok(Ok(slot)) => Ok(slot),
            Ok(Err(Denied::Failed(msg))) => Err(AcquireError::Connect {
                pool: self.pool.name.clone(),
                message: msg,
            }),
            Ok(Err(Denied::Shed(reason))) => {
                Err(self.shed_error(class, reason, clock().saturating_duration_since(start)))
            }
            Err(_) => {
                drop(wait);
                let st = self.state.borrow();
                Err(AcquireError::Timeout {
                    pool: self.pool.name.clone(),
                    max_open: self
                        .pool
                        .max_open
                        .load(std::sync::atomic::Ordering::Relaxed),
                    waited: clock().saturating_duration_since(start),
                    open: st.open(),
                    in_use: st.in_use,
                    idle: st.idle_count(M::MULTIPLEXED),
                    waiting: st.queue.len(),
                    last_connect_error: st.last_error.clone(),
                })
            }
        }
    }

    /// A caller gives its claim back. `conn` is the exclusive connection (or
    /// the caller's handle of a shared one); `reason` forces a close.
    fn release(
        self: &Rc<Self>,
        key: usize,
        conn: Option<M::Conn>,
        held: Duration,
        reason: Option<CloseReason>,
    ) {
        self.stats.hold.record(held);
        {
            // A tenth of each new hold: the mean over the last few dozen.
            let mut st = self.state.borrow_mut();
            st.hold_ewma = (st.hold_ewma * 9 + held) / 10;
        }
        // At most the caller's handle and the slot's connection: no Vec.
        let mut handle: Option<M::Conn> = None;
        let mut closing: Option<M::Conn> = None;
        let failed;
        {
            let mut st = self.state.borrow_mut();
            st.in_use -= 1;
            let usable = conn.as_ref().is_none_or(|c| self.pool.manager.is_usable(c))
                && st.slots[key]
                    .conn
                    .as_ref()
                    .is_none_or(|c| self.pool.manager.is_usable(c));
            let now = clock();
            let slot = &mut st.slots[key];
            // What failed or timed out on this connection since it was
            // last counted (once per connection, however many callers
            // share it).
            if let Some(c) = conn.as_ref().or(slot.conn.as_ref()) {
                let (failed, timed_out) = self.pool.manager.outcomes(c);
                add(&self.stats.query_errors, failed.saturating_sub(slot.seen.0));
                add(
                    &self.stats.query_timeouts,
                    timed_out.saturating_sub(slot.seen.1),
                );
                slot.seen = (failed, timed_out);
            }
            slot.in_flight -= 1;
            if slot.in_flight == 0 {
                // Idle from now: a shared connection is idle only between
                // uses, not since it was opened.
                slot.idle_since = now;
            }
            if !M::MULTIPLEXED {
                slot.conn = conn;
            } else {
                handle = conn; // the caller's handle; the slot keeps its own
            }
            let why = reason
                .or((!usable).then_some(CloseReason::Broken))
                .or(slot
                    .expires
                    .is_some_and(|e| e <= now)
                    .then_some(CloseReason::Expired))
                .or((st.open() > st.cap && !st.slots[key].remote).then_some(CloseReason::Shrink));
            match why {
                Some(why) if st.slots[key].in_flight == 0 => {
                    // Books first, then the close.
                    let slot = st.remove(key);
                    if !slot.remote {
                        self.stats.closed(why);
                    }
                    closing = slot.conn;
                }
                Some(CloseReason::Broken) => {
                    // A shared connection broke while others still use it:
                    // no new callers get it; the last one out closes it.
                    closing = st.slots[key].conn.take();
                }
                _ => {
                    if st.slots[key].conn.is_some() {
                        self.hand_off(&mut st, key);
                    } else if st.slots[key].in_flight == 0 && !st.remove(key).remote {
                        self.stats.closed(CloseReason::Broken);
                    }
                }
            }
            failed = self.note_outage(&mut st);
            self.publish(&st);
        }
        drop((handle, closing));
        for w in failed {
            w.wake();
        }
        self.maybe_connect();
    }

    /// The reaper's pass: closed by the server while idle, idle past
    /// `idle_timeout` (keeping `min_idle`), expired, leaks; then top up to
    /// `min_idle`.
    pub(crate) fn reap(self: &Rc<Self>) {
        let cfg = &self.pool.config;
        let now = clock();
        let mut closing = Vec::new();
        {
            let mut st = self.state.borrow_mut();
            let keep = self.min_idle_share();
            let keys: Vec<usize> = if M::MULTIPLEXED {
                st.slots
                    .iter()
                    .filter(|(_, s)| s.in_flight == 0)
                    .map(|(k, _)| k)
                    .collect()
            } else {
                st.idle.iter().copied().collect()
            };
            for key in keys {
                let used_elsewhere = st.slots[key]
                    .conn
                    .as_ref()
                    .is_some_and(|c| self.pool.manager.used_elsewhere(c));
                if used_elsewhere {
                    // Other workers' callers use it: not idle.
                    st.slots[key].idle_since = now;
                }
                // An idle exclusive connection the server closed (a restart,
                // a terminated backend) goes now, not at its next checkout:
                // its capacity is free and the pool's count is true.
                let dead = !M::MULTIPLEXED
                    && st.slots[key]
                        .conn
                        .as_mut()
                        .is_some_and(|c| !self.pool.manager.poll_idle(c));
                let slot = &st.slots[key];
                let why = if dead {
                    Some(CloseReason::FailedCheck)
                } else if slot.remote {
                    // A remote handle is let go once this shard has a
                    // connection of its own, or nobody used it for a while.
                    (st.open() > 0
                        || now.saturating_duration_since(slot.idle_since) >= cfg.idle_timeout)
                        .then_some(CloseReason::Idle)
                } else if slot.expires.is_some_and(|e| e <= now) {
                    Some(CloseReason::Expired)
                } else if now.saturating_duration_since(slot.idle_since) >= cfg.idle_timeout
                    && st.open() > keep
                {
                    Some(CloseReason::Idle)
                } else {
                    None
                };
                if let Some(why) = why {
                    st.idle.retain(|k| *k != key);
                    let slot = st.remove(key);
                    if !slot.remote {
                        self.stats.closed(why);
                    }
                    if let Some(c) = slot.conn {
                        closing.push(c);
                    }
                }
            }
            if let Some(limit) = cfg.leak_threshold {
                for (_, slot) in st.slots.iter_mut() {
                    if slot.in_flight > 0
                        && !slot.leak_reported
                        && now.saturating_duration_since(slot.checked_out_at) > limit
                    {
                        slot.leak_reported = true;
                        add(&self.stats.leaks, 1);
                        tracing::warn!(
                            pool = %self.pool.name,
                            route = slot.route,
                            "tidepool: pool {}: a connection has been held for {:?} by route {:?} (leak threshold {:?})",
                            self.pool.name,
                            now.saturating_duration_since(slot.checked_out_at),
                            if slot.route.is_empty() { "(unnamed)" } else { slot.route },
                            limit
                        );
                    }
                }
            }
            self.publish(&st);
        }
        drop(closing);
        self.maybe_connect();
    }

    pub(crate) fn assert_invariants(&self) {
        let st = self.state.borrow();
        let in_flight: usize = st.slots.iter().map(|(_, s)| s.in_flight).sum();
        assert_eq!(in_flight, st.in_use, "in_use matches the claims on slots");
        if !M::MULTIPLEXED {
            let idle = st.slots.iter().filter(|(_, s)| s.in_flight == 0).count();
            assert_eq!(
                idle,
                st.idle.len(),
                "every free slot is on the idle list once"
            );
            assert_eq!(
                st.open(),
                st.idle.len() + st.in_use,
                "open == idle + in_use"
            );
            for &k in &st.idle {
                assert!(st.slots[k].conn.is_some() && st.slots[k].in_flight == 0);
            }
        }
        assert!(st.opening <= self.pool.config.max_connecting);
        for w in st.queue.keys() {
            assert!(
                st.waiters[w].grant.is_none(),
                "queued waiters have no grant"
            );
        }
    }
}

/// The worker loop turn's time: no clock read per acquire and release
/// (accurate to one loop turn, which is what pool timings need).
fn clock() -> Instant {
    time::now()
}

async fn connect_task<M: Manager>(shard: Rc<Shard<M>>) {
    let mut guard = Connecting(Some(shard));
    let shard = guard.0.as_ref().expect("set above");
    let deadline = Instant::now() + shard.pool.config.connect_timeout;
    let manager = &shard.pool.manager;
    // Successful connects pool-wide when the current attempt began.
    let started = Cell::new(0);
    let ok = &shard.pool.connects_ok;
    let res = retry_observed(
        deadline,
        &Backoff::default(),
        || {
            started.set(ok.load(std::sync::atomic::Ordering::Acquire));
            manager.connect()
        },
        |e| shard.attempt_failed(e, started.get()),
    )
    .await;
    let shard = guard.0.take().expect("set above");
    shard.finish_connect(res, started.get());
}

/// Frees the capacity a connect reserved (`opening`) if its task ends
/// without reporting, because it panicked or its worker shut down: the
/// pool must not count a connection that will never arrive.
struct Connecting<M: Manager>(Option<Rc<Shard<M>>>);

impl<M: Manager> Drop for Connecting<M> {
    fn drop(&mut self) {
        if let Some(shard) = self.0.take() {
            shard.abandon_connect();
        }
    }
}

/// Waits for a grant; unregisters (and gives back an unclaimed grant) when dropped.
struct WaitGrant<M: Manager> {
    shard: Rc<Shard<M>>,
    key: usize,
    done: bool,
}

impl<M: Manager> Future for &mut WaitGrant<M> {
    type Output = Result<usize, Denied>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut **self.get_mut();
        let mut st = this.shard.state.borrow_mut();
        let waiter = &mut st.waiters[this.key];
        match waiter.grant.take() {
            Some(g) => {
                st.waiters.remove(this.key);
                this.done = true;
                Poll::Ready(match g {
                    Grant::Slot(k) => Ok(k),
                    Grant::Failed(m) => Err(Denied::Failed(m)),
                    Grant::Shed(r) => Err(Denied::Shed(r)),
                })
            }
            None => {
                match &waiter.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => waiter.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl<M: Manager> Drop for WaitGrant<M> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let granted = {
            let mut st = self.shard.state.borrow_mut();
            let key = self.key;
            st.queue.remove(key);
            let w = st.waiters.remove(key);
            self.shard.publish(&st);
            w.grant
        };
        // A slot granted to a caller who left is given back at once, so a
        // cancelled acquire never loses a connection.
        if let Some(Grant::Slot(slot)) = granted {
            let conn = if M::MULTIPLEXED {
                None
            } else {
                self.shard.state.borrow_mut().slots[slot].conn.take()
            };
            self.shard.release(slot, conn, Duration::ZERO, None);
        }
    }
}

/// A connection checked out of a pool (exclusive), or a claim on a shared
/// one (multiplexed). Returned to its shard when dropped, also on panic.
pub struct Pooled<M: Manager> {
    shard: Rc<Shard<M>>,
    key: usize,
    conn: Option<M::Conn>,
    since: Instant,
}

impl<M: Manager> Pooled<M> {
    fn discard(&mut self, why: CloseReason) {
        let conn = self.conn.take();
        self.shard.release(
            self.key,
            conn,
            clock().saturating_duration_since(self.since),
            Some(why),
        );
    }

    /// Closes the connection instead of returning it.
    pub fn close(mut self) {
        self.discard(CloseReason::Broken);
    }

    /// How long this checkout has been held.
    pub fn held(&self) -> Duration {
        clock().saturating_duration_since(self.since)
    }
}

impl<M: Manager> Deref for Pooled<M> {
    type Target = M::Conn;
    fn deref(&self) -> &M::Conn {
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl<M: Manager> DerefMut for Pooled<M> {
    fn deref_mut(&mut self) -> &mut M::Conn {
        self.conn.as_mut().expect("connection present until drop")
    }
}

impl<M: Manager> Drop for Pooled<M> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.shard.release(
                self.key,
                Some(conn),
                clock().saturating_duration_since(self.since),
                None,
            );
        }
    }
}

/// Each shard reaps its own connections on its own timer, whatever the
/// supervisor does; it ends with the shard or the worker.
async fn reaper<M: Manager>(shard: Weak<Shard<M>>) {
    let interval = match shard.upgrade() {
        Some(s) => s.pool.config.reap_interval,
        None => return,
    };
    let mut shutdown = rt::shutdown_signal();
    loop {
        // Shutdown before the next tick ends the reaper.
        let stopped = time::race(&mut time::sleep(interval), &mut shutdown)
            .await
            .is_some();
        let Some(s) = shard.upgrade() else { return };
        if stopped {
            s.closed.set(true);
            return;
        }
        s.reap();
    }
}

/// Opens this shard's share of `min_idle` after the configured delay and
/// jitter, in paced batches, holding the manager's warm-up gate meanwhile.
async fn warm_up<M: Manager>(shard: Weak<Shard<M>>) {
    let (target, plan) = {
        let Some(s) = shard.upgrade() else { return };
        let c = &s.pool.config;
        let target = s.min_idle_share();
        (
            target,
            warmup_plan(
                target,
                c.warmup_delay,
                c.warmup_jitter,
                random_unit(),
                c.warmup_batch,
                c.warmup_pause,
            ),
        )
    };
    if target == 0 {
        return;
    }
    // Ends warming however this task ends (a dropped task included).
    struct Warming<M: Manager>(Weak<Shard<M>>, Arc<PoolInner<M>>);
    impl<M: Manager> Drop for Warming<M> {
        fn drop(&mut self) {
            self.1.warmup_gate.end();
            if let Some(s) = self.0.upgrade() {
                s.warming.set(false);
                // What warm-up did not open, the usual top-up now does.
                s.maybe_connect();
            }
        }
    }
    let pool = match shard.upgrade() {
        Some(s) => s.pool.clone(),
        None => return,
    };
    pool.warmup_gate.begin();
    let _warming = Warming(shard.clone(), pool.clone());
    let mut start = Instant::now();
    let mut held = None;
    for (i, step) in plan.iter().enumerate() {
        time::sleep_until(start + step.at).await;
        let Some(s) = shard.upgrade() else { return };
        if i == 0 {
            // One cluster slot for the process: the first shard takes it,
            // the others wait for it to be granted.
            held = pool
                .warmup_gate
                .enter(|| s.pool.manager.warmup_gate())
                .await;
            // The batches are paced from when the gate opened: after a
            // long wait for a slot they must not run back to back.
            start = Instant::now() - step.at;
        }
        let mut batch = Vec::new();
        for _ in 0..step.count {
            let go = {
                let mut st = s.state.borrow_mut();
                let ok = !s.closed.get()
                    && st.open() + st.opening < st.cap.min(target)
                    && st.opening < s.pool.config.max_connecting;
                if ok {
                    st.opening += 1;
                    s.publish(&st);
                }
                ok
            };
            if go {
                batch.push(rt::spawn(connect_task(s.clone())));
            }
        }
        drop(s);
        for h in batch {
            let _ = h.await;
        }
    }
    if let Some(held) = held {
        pool.warmup_gate.release(held).await;
    }
}
