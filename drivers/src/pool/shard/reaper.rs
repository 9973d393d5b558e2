//! When a connection is idle: each shard's reaper closes connections the
//! server closed, idle past `idle_timeout` (keeping `min_idle`), expired,
//! and reports leaks, on its own timer.

use std::rc::{Rc, Weak};

use tidepool_engine::rt::{self, time};

use super::{clock, Shard, State};
use crate::pool::config::share;
use crate::pool::stats::{add, CloseReason};
use crate::pool::Manager;

impl<M: Manager> Shard<M> {
    pub(super) fn min_idle_share(&self) -> usize {
        share(
            self.pool.config.min_idle,
            self.pool.shards.len(),
            self.index,
        )
    }

    pub(super) fn pop_idle_lru(&self, st: &mut State<M::Conn>) -> Option<usize> {
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

    /// The reaper's pass: closed by the server while idle (exclusive or
    /// shared), idle past `idle_timeout` (keeping `min_idle`), expired,
    /// leaks; then top up to `min_idle`.
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
                // A connection the server closed while idle (a restart, a
                // terminated backend) goes now, not at its next checkout,
                // which may never come on a worker no request reaches: its
                // capacity is free and the pool's count is true. An
                // exclusive one is read without waiting; a shared one has
                // a driver always reading, which has marked it broken.
                let manager = &self.pool.manager;
                let dead = st.slots[key].conn.as_mut().is_some_and(|c| {
                    if M::MULTIPLEXED {
                        !manager.is_usable(c)
                    } else {
                        !manager.poll_idle(c)
                    }
                });
                let slot = &st.slots[key];
                let why = if dead && M::MULTIPLEXED {
                    Some(CloseReason::Broken)
                } else if dead {
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
}

/// Each shard reaps its own connections on its own timer, whatever the
/// supervisor does; it ends with the shard or the worker.
pub(super) async fn reaper<M: Manager>(shard: Weak<Shard<M>>) {
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
