//! The table of operations in flight, sans-IO: what each submitted
//! operation is waiting for, and what a completion means for it. No ring,
//! no syscall: `complete` turns a completion into [`Effects`] that the
//! driver carries out (wake a task, count or return a provided buffer,
//! close an fd nobody will take, stop a receive at its cap).
//!
//! Every slot carries a generation, stamped at submission and carried in
//! the SQE's `user_data` above the key, so a completion or a cancel aimed at
//! an operation that has ended can never touch the next one that reuses the
//! key.

use std::any::Any;
use std::collections::VecDeque;
use std::task::Waker;

use io_uring::cqueue;
use slab::Slab;

/// Provided buffers one multishot receive may hold unread before it is
/// stopped (64 KiB): a connection whose reader is busy then waits in its
/// socket's own buffer (TCP flow control pushes back on the peer) instead
/// of taking every buffer and pushing the other connections onto one-shot
/// receives. Reading what it holds re-arms it.
pub(crate) const RECV_CAP: usize = 16;

pub(crate) enum Slot {
    /// Submitted; the waker is the task to notify.
    Waiting(Option<Waker>),
    /// Completed; result waits for its future to be polled.
    Done { res: i32, flags: u32 },
    /// A multishot operation: completions queue up until read.
    Multi {
        waker: Option<Waker>,
        queue: VecDeque<(i32, u32)>,
        ended: bool,
        /// A receive holding [`RECV_CAP`] buffers unread was asked to
        /// stop: its end (ECANCELED) means "read, then re-arm".
        capped: bool,
        /// The activity epoch in which it last completed (see `sources`).
        epoch: u32,
    },
    /// The future was dropped while the kernel still owns the operation: the
    /// parked resources (buffers, fd handles) live until the final CQE.
    Orphan(#[allow(dead_code)] Option<Box<dyn Any>>),
    /// An operation of an event loop (`events.rs`): each completion becomes
    /// a [`Fired`] event named by `tag`; `buf` (the bytes a send reads) goes
    /// back with the last one, `keep` (what else the SQE points at) is
    /// dropped then.
    Event {
        tag: u64,
        buf: Option<Vec<u8>>,
        #[allow(dead_code)]
        keep: Option<Box<dyn Any>>,
    },
}

/// A completion of an event-loop operation, queued for the loop to take.
#[derive(Debug)]
pub(crate) struct Fired {
    pub(crate) tag: u64,
    pub(crate) res: i32,
    pub(crate) flags: u32,
    /// The bytes the operation was given, back with its last completion.
    pub(crate) buf: Option<Vec<u8>>,
}

/// What the table knows of a slot beyond its state.
#[derive(Clone, Copy, Default)]
struct Meta {
    /// Stamped on the slot at submission and carried in `user_data`.
    generation: u32,
    /// A successful completion is a new fd (an accept): if nobody takes
    /// it, it must be closed.
    yields_fd: bool,
    /// A one-shot completion with exactly this result wakes no one (see
    /// [`Slots::set_quiet`]).
    quiet: Option<i32>,
}

/// `user_data` of a slot's SQEs: its generation above its key.
fn user_data(key: usize, generation: u32) -> u64 {
    debug_assert!(key < 1 << 32);
    (u64::from(generation) << 32) | key as u64
}

/// What the driver must do about one completion.
#[derive(Default)]
pub(crate) struct Effects {
    /// The task to wake.
    pub(crate) wake: Option<Waker>,
    /// The completion handed a provided buffer to a reader (count it taken).
    pub(crate) taken: bool,
    /// A provided buffer nobody will read: count it taken and give it back.
    pub(crate) give_back: Option<u16>,
    /// An fd nobody will take (an orphaned accept's): close it.
    pub(crate) close: Option<i32>,
    /// A receive reached [`RECV_CAP`] unread buffers: cancel it.
    pub(crate) cap: Option<usize>,
    /// An event-loop operation completed: queue this for the loop.
    pub(crate) event: Option<Fired>,
}

#[derive(Default)]
pub(crate) struct Slots {
    slots: Slab<Slot>,
    /// Indexed by slot key.
    meta: Vec<Meta>,
    next_generation: u32,
    /// Distinct multishot operations (a connection's receives, a listener's
    /// accepts) that completed in the current epoch: how many independent
    /// peers keep this worker busy.
    sources: u32,
    epoch: u32,
}

impl Slots {
    /// Registers a one-shot operation; returns its key and `user_data`.
    /// `yields_fd`: a successful result is a new fd (an accept).
    pub(crate) fn insert_one_shot(&mut self, yields_fd: bool) -> (usize, u64) {
        let key = self.slots.insert(Slot::Waiting(None));
        (key, self.stamp(key, yields_fd))
    }

    /// Registers a multishot operation (it may complete many times).
    pub(crate) fn insert_multi(&mut self, yields_fd: bool) -> (usize, u64) {
        let key = self.slots.insert(Slot::Multi {
            waker: None,
            queue: VecDeque::new(),
            ended: false,
            capped: false,
            epoch: self.epoch.wrapping_sub(1),
        });
        (key, self.stamp(key, yields_fd))
    }

    /// Registers an event-loop operation named `tag` (it may complete many
    /// times); `buf` and `keep` hold what its SQE points into.
    pub(crate) fn insert_event(
        &mut self,
        tag: u64,
        buf: Option<Vec<u8>>,
        keep: Option<Box<dyn Any>>,
    ) -> (usize, u64) {
        let key = self.slots.insert(Slot::Event { tag, buf, keep });
        (key, self.stamp(key, false))
    }

    fn stamp(&mut self, key: usize, yields_fd: bool) -> u64 {
        if self.meta.len() <= key {
            self.meta.resize(key + 1, Meta::default());
        }
        self.next_generation = self.next_generation.wrapping_add(1);
        self.meta[key] = Meta {
            generation: self.next_generation,
            yields_fd,
            quiet: None,
        };
        user_data(key, self.next_generation)
    }

    /// The `user_data` that names the operation now in `key` (what a cancel
    /// aims at).
    pub(crate) fn target(&self, key: usize) -> u64 {
        user_data(key, self.meta[key].generation)
    }

    /// Lets the waiting one-shot operation in `key` complete without
    /// waking its task when its result is `res` (a send that went out in
    /// full, for a task that also waits on something else and will find
    /// it done when that wakes it); any other result wakes as usual.
    /// `None` makes every completion wake again.
    pub(crate) fn set_quiet(&mut self, key: usize, res: Option<i32>) {
        if let Some(meta) = self.meta.get_mut(key) {
            meta.quiet = res;
        }
    }

    pub(crate) fn get(&self, key: usize) -> Option<&Slot> {
        self.slots.get(key)
    }

    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut Slot> {
        self.slots.get_mut(key)
    }

    pub(crate) fn set(&mut self, key: usize, slot: Slot) {
        self.slots[key] = slot;
    }

    pub(crate) fn remove(&mut self, key: usize) -> Slot {
        self.slots.remove(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots.iter().map(|(k, _)| k)
    }

    /// Whether the kernel may still act on some operation.
    pub(crate) fn busy(&self) -> bool {
        self.slots.iter().any(|(_, s)| {
            matches!(
                s,
                Slot::Orphan(_)
                    | Slot::Waiting(_)
                    | Slot::Multi { ended: false, .. }
                    | Slot::Event { .. }
            )
        })
    }

    /// Finished slots nobody will read (at teardown).
    pub(crate) fn finished(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Done { .. } | Slot::Multi { ended: true, .. }))
            .map(|(k, _)| k)
    }

    /// The fd in result `res` of operation `key`, if it is one that nobody
    /// will take now (an accept's).
    pub(crate) fn unclaimed_fd(&self, key: usize, res: i32) -> Option<i32> {
        (res >= 0 && self.meta[key].yields_fd).then_some(res)
    }

    /// Takes every slot out of the table without dropping what they park
    /// (teardown that could not wait for the kernel).
    pub(crate) fn take_all(&mut self) -> Slab<Slot> {
        std::mem::take(&mut self.slots)
    }

    /// Ends an activity epoch: how many distinct sources completed in it.
    pub(crate) fn end_epoch(&mut self) -> u32 {
        self.epoch = self.epoch.wrapping_add(1);
        std::mem::take(&mut self.sources)
    }

    /// Records completion `(user_data, res, flags)`; returns what the
    /// driver must do about it. Inlined into the driver's one call, so the
    /// `Effects` (about 90 bytes) become registers instead of being built,
    /// returned through memory and read back, twice per request.
    #[inline(always)]
    pub(crate) fn complete(&mut self, ud: u64, res: i32, flags: u32) -> Effects {
        let mut fx = Effects::default();
        let key = (ud & u64::from(u32::MAX)) as usize;
        let current = self.meta.get(key).map(|m| m.generation) == Some((ud >> 32) as u32);
        let unclaimed = if current {
            self.unclaimed_fd(key, res)
        } else {
            None
        };
        let Some(slot) = self.slots.get_mut(key).filter(|_| current) else {
            // Slots outlive their operations' last completions, so nothing
            // should arrive for an ended one; if it did, it names no task,
            // and a buffer it took goes back.
            fx.give_back = cqueue::buffer_select(flags);
            return fx;
        };
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        match slot {
            Slot::Waiting(waker) => {
                if self.meta[key].quiet != Some(res) {
                    fx.wake = waker.take();
                }
                *slot = Slot::Done { res, flags };
            }
            Slot::Multi {
                waker,
                queue,
                ended,
                capped,
                epoch,
            } => {
                if *epoch != self.epoch {
                    *epoch = self.epoch;
                    self.sources += 1;
                }
                fx.taken = bid.is_some();
                queue.push_back((res, flags));
                if !more {
                    *ended = true;
                } else if bid.is_some() && !*capped && queue.len() >= RECV_CAP {
                    *capped = true;
                    fx.cap = Some(key);
                }
                fx.wake = waker.take();
            }
            Slot::Orphan(_) => {
                // A receive nobody reads any more still took a buffer; an
                // accept nobody waits for any more still made a socket.
                fx.give_back = bid;
                fx.close = unclaimed;
                if !more {
                    self.slots.remove(key);
                }
            }
            Slot::Event { tag, buf, .. } => {
                fx.taken = bid.is_some();
                fx.event = Some(Fired {
                    tag: *tag,
                    res,
                    flags,
                    buf: if more { None } else { buf.take() },
                });
                if !more {
                    // The kernel is done with what the SQE pointed at.
                    self.slots.remove(key);
                }
            }
            Slot::Done { .. } => {}
        }
        fx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F_BUFFER: u32 = 1;
    const F_MORE: u32 = 2;

    fn with_buffer(bid: u16, more: bool) -> u32 {
        (u32::from(bid) << 16) | F_BUFFER | if more { F_MORE } else { 0 }
    }

    fn waiter(slots: &mut Slots, key: usize) {
        if let Some(Slot::Waiting(w)) = slots.get_mut(key) {
            *w = Some(Waker::noop().clone());
        }
    }

    #[test]
    fn a_quiet_one_shot_wakes_only_on_another_result() {
        let mut s = Slots::default();
        let (k, ud) = s.insert_one_shot(false);
        waiter(&mut s, k);
        s.set_quiet(k, Some(100));
        let fx = s.complete(ud, 100, 0);
        assert!(fx.wake.is_none(), "a full send wakes no one");
        assert!(matches!(s.get(k), Some(Slot::Done { res: 100, .. })));
        s.remove(k);
        // A short send (or an error) still wakes its task.
        let (k, ud) = s.insert_one_shot(false);
        waiter(&mut s, k);
        s.set_quiet(k, Some(100));
        assert!(s.complete(ud, 40, 0).wake.is_some());
        s.remove(k);
        // Made loud again, and a new operation in a reused key starts loud.
        let (k, ud) = s.insert_one_shot(false);
        waiter(&mut s, k);
        s.set_quiet(k, Some(100));
        s.set_quiet(k, None);
        assert!(s.complete(ud, 100, 0).wake.is_some());
        s.remove(k);
        let (k2, ud2) = s.insert_one_shot(false);
        assert_eq!(k2, k);
        waiter(&mut s, k2);
        assert!(s.complete(ud2, 100, 0).wake.is_some());
    }

    #[test]
    fn a_one_shot_completes_once_and_wakes_its_task() {
        let mut s = Slots::default();
        let (k, ud) = s.insert_one_shot(false);
        waiter(&mut s, k);
        let fx = s.complete(ud, 42, 0);
        assert!(fx.wake.is_some());
        assert!(matches!(s.get(k), Some(Slot::Done { res: 42, .. })));
        assert!(!s.busy());
    }

    #[test]
    fn a_reused_key_has_a_new_generation() {
        let mut s = Slots::default();
        let (k, old) = s.insert_one_shot(false);
        s.remove(k);
        let (k2, new) = s.insert_one_shot(false);
        assert_eq!(k, k2, "slab reuses the key");
        assert_ne!(old, new);
        assert_eq!(s.target(k2), new, "a cancel aims at the new operation only");
        assert_eq!(old & 0xffff_ffff, new & 0xffff_ffff);
    }

    #[test]
    fn a_completion_for_an_ended_operation_touches_nothing() {
        let mut s = Slots::default();
        let (k, old) = s.insert_one_shot(false);
        s.remove(k);
        let (k2, _) = s.insert_one_shot(false);
        let fx = s.complete(old, 7, with_buffer(3, false));
        assert!(matches!(s.get(k2), Some(Slot::Waiting(_))), "left waiting");
        assert_eq!(fx.give_back, Some(3), "its buffer goes back");
    }

    #[test]
    fn an_orphaned_receive_gives_its_buffers_back_until_its_last_completion() {
        let mut s = Slots::default();
        let (k, ud) = s.insert_multi(false);
        s.set(k, Slot::Orphan(None));
        let fx = s.complete(ud, 100, with_buffer(5, true));
        assert_eq!(fx.give_back, Some(5));
        assert_eq!(fx.close, None);
        assert!(s.get(k).is_some(), "kept while the kernel may post more");
        let fx = s.complete(ud, -libc::ECANCELED, 0);
        assert_eq!(fx.give_back, None);
        assert!(s.get(k).is_none(), "freed at the final completion");
        assert!(!s.busy());
    }

    #[test]
    fn an_orphaned_accept_closes_the_sockets_it_still_makes() {
        let mut s = Slots::default();
        let (k, ud) = s.insert_multi(true);
        s.set(k, Slot::Orphan(None));
        assert_eq!(s.complete(ud, 17, F_MORE).close, Some(17));
        assert_eq!(s.complete(ud, -libc::ECANCELED, 0).close, None);
        // A receive's byte count is not an fd.
        let (k, ud) = s.insert_multi(false);
        s.set(k, Slot::Orphan(None));
        assert_eq!(s.complete(ud, 17, with_buffer(1, false)).close, None);
    }

    #[test]
    fn a_receive_is_capped_once_at_its_limit_and_ends_on_the_last_completion() {
        let mut s = Slots::default();
        let (k, ud) = s.insert_multi(false);
        let mut caps = 0;
        for bid in 0..(RECV_CAP as u16 + 4) {
            let fx = s.complete(ud, 4096, with_buffer(bid, true));
            assert!(fx.taken);
            caps += usize::from(fx.cap == Some(k));
            if usize::from(bid) + 1 < RECV_CAP {
                assert_eq!(fx.cap, None, "under the cap at {bid}");
            }
        }
        assert_eq!(caps, 1, "asked to stop once");
        s.complete(ud, -libc::ECANCELED, 0);
        assert!(matches!(
            s.get(k),
            Some(Slot::Multi {
                ended: true,
                capped: true,
                ..
            })
        ));
        assert_eq!(s.finished().collect::<Vec<_>>(), [k]);
    }

    #[test]
    fn an_accept_is_never_capped() {
        let mut s = Slots::default();
        let (_, ud) = s.insert_multi(true);
        for fd in 0..(RECV_CAP as i32 * 2) {
            let fx = s.complete(ud, 100 + fd, F_MORE);
            assert_eq!(fx.cap, None);
            assert!(!fx.taken);
        }
    }

    #[test]
    fn an_event_operation_fires_each_completion_and_returns_its_bytes_with_the_last() {
        let mut s = Slots::default();
        let (k, ud) = s.insert_event(7, Some(b"GET /".to_vec()), Some(Box::new(1u8)));
        assert!(s.busy(), "the kernel owns it");
        let fx = s.complete(ud, 3, with_buffer(2, true));
        let ev = fx.event.expect("fired");
        assert_eq!((ev.tag, ev.res), (7, 3));
        assert!(fx.taken, "its buffer is the loop's now");
        assert!(ev.buf.is_none(), "the kernel may still read the bytes");
        assert!(s.get(k).is_some());
        let fx = s.complete(ud, 5, 0);
        assert_eq!(fx.event.expect("fired").buf.as_deref(), Some(&b"GET /"[..]));
        assert!(s.get(k).is_none(), "freed at the last completion");
        assert!(!s.busy());
        // A late completion for the ended operation fires nothing.
        let fx = s.complete(ud, 1, with_buffer(4, false));
        assert!(fx.event.is_none());
        assert_eq!(fx.give_back, Some(4));
    }

    #[test]
    fn sources_count_distinct_operations_per_epoch() {
        let mut s = Slots::default();
        let (_, a) = s.insert_multi(false);
        let (_, b) = s.insert_multi(false);
        for _ in 0..3 {
            s.complete(a, 1, with_buffer(0, true));
        }
        s.complete(b, 1, with_buffer(1, true));
        assert_eq!(s.end_epoch(), 2);
        assert_eq!(s.end_epoch(), 0);
    }
}
