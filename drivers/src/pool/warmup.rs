//! Warm-up pacing: when a shard starts, `min_idle` connections are opened
//! after a delay plus jitter, in batches with pauses, so a fleet restarting
//! at once does not open all its connections in the same second; and one
//! cluster-wide warm-up slot per process, not per worker nor per pool:
//! pools that name the same slots share one gate (`process_gate`).

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tidepool_engine::rt::time;

/// How often a shard waiting for another shard of its process to get the
/// cluster slot looks again.
const GATE_POLL: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, PartialEq, Eq)]
enum GateState {
    /// Nobody holds or is taking the slot.
    Free,
    /// One shard is waiting for the cluster slot for the whole process.
    Taking,
    /// The process holds the slot: every shard may warm up.
    Open,
}

/// The process's share of the cluster-wide warm-up gate for one pool: the
/// first shard to warm up takes the slot (one lock session) and holds it
/// until every shard of the process has warmed up; the others wait for it
/// instead of each taking a slot of their own (16 workers are one process,
/// not 16).
pub(crate) struct ProcessGate {
    state: Mutex<GateState>,
    /// Shards whose warm-up is under way.
    warming: AtomicUsize,
}

impl Default for ProcessGate {
    fn default() -> Self {
        ProcessGate {
            state: Mutex::new(GateState::Free),
            warming: AtomicUsize::new(0),
        }
    }
}

/// The gate of every pool of this process that names the cluster slots
/// `key` (see `Manager::warmup_key`): the process takes one slot for all
/// of them and holds it until the last of their shards has warmed up.
pub(crate) fn process_gate(key: &str) -> Arc<ProcessGate> {
    static GATES: Mutex<Option<HashMap<String, Weak<ProcessGate>>>> = Mutex::new(None);
    let mut gates = GATES.lock().unwrap_or_else(|e| e.into_inner());
    let gates = gates.get_or_insert_with(HashMap::new);
    gates.retain(|_, g| g.strong_count() > 0);
    if let Some(g) = gates.get(key).and_then(Weak::upgrade) {
        return g;
    }
    let g = Arc::new(ProcessGate::default());
    gates.insert(key.to_string(), Arc::downgrade(&g));
    g
}

/// What the shard that took the slot holds for the process.
pub(crate) struct Held(Option<Box<dyn Any>>);

impl ProcessGate {
    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A shard's warm-up starts (before its delay) / ends.
    pub(crate) fn begin(&self) {
        self.warming.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn end(&self) {
        self.warming.fetch_sub(1, Ordering::SeqCst);
    }

    /// Waits until this process may warm up. The first caller takes the
    /// cluster slot with `take` and gets it back as `Some` to hold; the
    /// others wait for it and get `None`.
    pub(crate) async fn enter<F>(&self, take: impl FnOnce() -> F) -> Option<Held>
    where
        F: Future<Output = Option<Box<dyn Any>>>,
    {
        loop {
            let mine = {
                let mut st = self.state();
                match *st {
                    GateState::Open => return None,
                    GateState::Taking => false,
                    GateState::Free => {
                        *st = GateState::Taking;
                        true
                    }
                }
            };
            if mine {
                // Back to Free if this task is dropped while taking, so the
                // other shards are not left waiting for nobody.
                struct Taking<'a>(&'a ProcessGate, bool);
                impl Drop for Taking<'_> {
                    fn drop(&mut self) {
                        if !self.1 {
                            *self.0.state() = GateState::Free;
                        }
                    }
                }
                let mut taking = Taking(self, false);
                let slot = take().await;
                *self.state() = GateState::Open;
                taking.1 = true;
                return Some(Held(slot));
            }
            time::sleep(GATE_POLL).await;
        }
    }

    /// The holder's warm-up is done: it lets the slot go once the other
    /// shards of the process are done too.
    pub(crate) async fn release(&self, held: Held) {
        while self.warming.load(Ordering::SeqCst) > 1 {
            time::sleep(GATE_POLL).await;
        }
        drop(held.0);
        *self.state() = GateState::Free;
    }
}

/// Open `count` connections at `at` (from the shard's start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WarmupStep {
    pub at: Duration,
    pub count: usize,
}

/// The warm-up schedule for `target` connections: the first batch at
/// `delay + jitter * u` (u uniform in [0, 1)), then one batch of `batch`
/// every `pause` (a batch's own connect time comes on top at run time).
pub fn warmup_plan(
    target: usize,
    delay: Duration,
    jitter: Duration,
    u: f64,
    batch: usize,
    pause: Duration,
) -> Vec<WarmupStep> {
    let batch = batch.max(1);
    let start = delay + jitter.mul_f64(u.clamp(0.0, 1.0));
    (0..target.div_ceil(batch))
        .map(|i| WarmupStep {
            at: start + pause * i as u32,
            count: batch.min(target - i * batch),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_paced_after_delay_and_jitter() {
        let ms = Duration::from_millis;
        let plan = warmup_plan(7, ms(500), ms(1000), 0.25, 3, ms(100));
        assert_eq!(
            plan,
            vec![
                WarmupStep {
                    at: ms(750),
                    count: 3
                },
                WarmupStep {
                    at: ms(850),
                    count: 3
                },
                WarmupStep {
                    at: ms(950),
                    count: 1
                },
            ]
        );
        assert!(warmup_plan(0, ms(1), ms(1), 0.5, 2, ms(1)).is_empty());
        // Jitter spreads instances over [delay, delay + jitter].
        let first = |u| warmup_plan(1, ms(200), ms(800), u, 1, ms(0))[0].at;
        assert_eq!(first(0.0), ms(200));
        assert_eq!(first(0.999_999), ms(200) + ms(800).mul_f64(0.999_999));
    }
}
