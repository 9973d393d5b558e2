//! Taking a connection and giving it back: the claim on an available
//! slot, the health check of one that sat idle, the guard that returns
//! it (also on panic), and the release that hands it to the next waiter
//! or closes it.

use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{clock, Grant, Shard, State};
use crate::pool::discipline::Class;
use crate::pool::stats::{add, CloseReason};
use crate::pool::{AcquireError, Manager};

impl<M: Manager> Shard<M> {
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
            // delegated statement costs two hops between workers. One
            // nobody here is on is looked at in `checkout`.
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

    /// Gives slot `key` (free, connection inside) to the first waiter, or
    /// files it as idle.
    pub(super) fn hand_off(&self, st: &mut State<M::Conn>, key: usize) {
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
    pub(super) async fn checkout(self: &Rc<Self>, key: usize) -> Option<Pooled<M>> {
        let (conn, stale) = {
            let mut st = self.state.borrow_mut();
            let slot = &mut st.slots[key];
            let stale = self
                .pool
                .config
                .check_after_idle
                .is_some_and(|t| clock().saturating_duration_since(slot.idle_since) > t);
            let conn = 'conn: {
                if !M::MULTIPLEXED {
                    break 'conn slot.conn.take().expect("free slot holds its connection");
                }
                // The shared connection broke between this caller's grant
                // and its turn to run (another user's release took it out,
                // or its reader saw the end), or, with no other claim on
                // it, a look finds the server gone: give the claim back and
                // take the connection out; the last claim out retires the
                // slot.
                let manager = &self.pool.manager;
                let only = slot.in_flight == 1;
                let dead = match slot.conn.as_mut() {
                    None => Some(CloseReason::Broken),
                    Some(c) if !manager.is_usable(c) => Some(CloseReason::Broken),
                    Some(c) => (only && !manager.poll_idle(c)).then_some(CloseReason::FailedCheck),
                };
                let Some(why) = dead else {
                    let shared = slot.conn.as_ref().expect("checked above");
                    break 'conn manager.share(shared);
                };
                let closing = slot.conn.take();
                slot.in_flight -= 1;
                let retire = slot.in_flight == 0;
                st.in_use -= 1;
                if retire && !st.remove(key).remote {
                    self.stats.closed(why);
                }
                self.publish(&st);
                drop(st);
                drop(closing);
                return None;
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

    /// A caller gives its claim back. `conn` is the exclusive connection (or
    /// the caller's handle of a shared one); `reason` forces a close.
    pub(super) fn release(
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
