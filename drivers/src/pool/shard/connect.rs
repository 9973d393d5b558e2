//! Who may open: connects started while callers wait for more than is on
//! its way (within the cap and the fan-out bound), the connect task and
//! what its end does to the books, and the paced warm-up of `min_idle`.

use std::cell::Cell;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

use tidepool_engine::rt::{self, time};

use super::{clock, Shard, Slot};
use crate::pool::backoff::{random_unit, retry_observed, Backoff, RetryError};
use crate::pool::stats::{add, CloseReason, ConnectFailure};
use crate::pool::warmup::warmup_plan;
use crate::pool::{Manager, PoolError, PoolInner};

impl<M: Manager> Shard<M> {
    /// Starts connects while callers wait for more connections than are
    /// on their way (creation elision), within the cap and the fan-out bound.
    pub(super) fn maybe_connect(self: &Rc<Self>) {
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

    fn expiry(&self, now: Instant) -> Option<Instant> {
        let cfg = &self.pool.config;
        cfg.max_lifetime.map(|l| {
            // +-jitter so connections made together do not expire together.
            let f = 1.0 + cfg.lifetime_jitter * (2.0 * random_unit() - 1.0);
            now + l.mul_f64(f)
        })
    }
}

pub(super) async fn connect_task<M: Manager>(shard: Rc<Shard<M>>) {
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

/// Opens this shard's share of `min_idle` after the configured delay and
/// jitter, in paced batches, holding the manager's warm-up gate meanwhile.
pub(super) async fn warm_up<M: Manager>(shard: Weak<Shard<M>>) {
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
