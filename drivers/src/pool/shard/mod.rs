//! One worker's shard of a pool: its connections, its FIFO of waiters, its
//! connects in flight, its reaper. Everything here runs on the owning
//! worker, so the books are a `RefCell`, never a lock.
//!
//! Book-keeping rule: a change is written into `State` (and published to
//! the stats) before the connection is acted on — before a connect is
//! started, before a connection is closed or handed over.
//!
//! The books and the shard live here; each rule that acts on them has a
//! module of its own:
//! - `checkout`: taking a connection and giving it back (the `Pooled` guard);
//! - `wait`: a caller with nothing available, queued or turned away;
//! - `connect`: who may open, the connect task, the paced warm-up;
//! - `outage`: failing fast and probing while the database is out of reach;
//! - `capacity`: how capacity and connections move between workers' shards
//!   (`demand`: when a shard is short for long enough to be worth it);
//! - `reaper`: when a connection is idle, expired, dead or leaked.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use slab::Slab;
use tidepool_engine::rt::{self, time};

use super::config::share;
use super::discipline::{Class, ShedReason, WaitQueue};
use super::stats::{set, ShardStats};
use super::{Manager, PoolInner};

mod capacity;
mod checkout;
mod connect;
mod demand;
mod outage;
mod reaper;
mod wait;

pub(crate) use capacity::apply_cap;
pub use checkout::Pooled;

use capacity::running;
use connect::warm_up;
use reaper::reaper;

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
    /// Callers holding or waiting, averaged over time (written by
    /// `publish`, which sees every change).
    demand: Cell<demand::Demand>,
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
                demand: Cell::new(demand::Demand::new(clock())),
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
        capacity::register(&shard);
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

    fn publish(&self, st: &State<M::Conn>) {
        let s = &*self.stats;
        set(&s.open, st.open());
        set(&s.idle, st.idle_count(M::MULTIPLEXED));
        set(&s.in_use, st.in_use);
        set(&s.opening, st.opening);
        set(&s.waiting, st.queue.len());
        let mut average = st.demand.get();
        average.observe(clock(), st.in_use + st.queue.len());
        st.demand.set(average);
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

    /// Callers one connection serves at once: `max_in_flight` on a
    /// multiplexed pool, else one.
    fn callers_per_connection(&self) -> usize {
        if M::MULTIPLEXED {
            self.pool.config.max_in_flight
        } else {
            1
        }
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
