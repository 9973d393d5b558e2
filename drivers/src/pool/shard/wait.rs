//! A caller with no connection available: admitted to the queue or
//! turned away (the queue's discipline, fed with what the pool can serve
//! now), then waiting for its grant until the acquire deadline.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tidepool_engine::rt::{self, time};

use super::connect::connect_task;
use super::{clock, Denied, Grant, Shard, State, Waiter};
use crate::pool::discipline::{Class, ShedReason};
use crate::pool::stats::add;
use crate::pool::{AcquireError, Manager};

impl<M: Manager> Shard<M> {
    pub(super) async fn wait(
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

    /// Tells the queue what the pool can serve now.
    fn size_queue(&self, st: &mut State<M::Conn>) {
        let servers = st.open() * self.callers_per_connection();
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
    pub(super) fn shed(&self, st: &mut State<M::Conn>, now: Instant) -> Vec<Waker> {
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
