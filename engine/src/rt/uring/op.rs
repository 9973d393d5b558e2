//! A ring operation as a future that owns the resources the kernel uses.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use io_uring::squeue;

use super::slots::Slot;
use crate::rt::executor::{try_with_core, with_core};

/// The raw completion of an operation: `res` is the kernel's result
/// (negative errno on failure), `flags` the CQE flags.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Completion {
    pub(crate) res: i32,
    #[allow(dead_code)]
    pub(crate) flags: u32,
}

impl Completion {
    pub(crate) fn into_result(self) -> std::io::Result<u32> {
        if self.res < 0 {
            Err(std::io::Error::from_raw_os_error(-self.res))
        } else {
            Ok(self.res as u32)
        }
    }
}

/// An in-flight operation. `data` holds everything the SQE points into
/// (buffers, socket addresses, the fd handle); if the future is dropped
/// early, `data` is parked in the driver until the completion arrives.
///
/// An operation belongs to the ring of the worker that submitted it: it is
/// not `Send`, and polling or dropping it on another worker's thread (a
/// later `block_on` on the same thread) never touches that worker's slots.
pub(crate) struct Op<T: 'static> {
    key: Option<usize>,
    data: Option<T>,
    core: usize,
    _not_send: PhantomData<Rc<()>>,
}

impl<T: 'static> Op<T> {
    /// Submits `sqe`; `yields_fd` says a successful result is a new fd (an
    /// accept), which the driver closes if the future is dropped.
    ///
    /// # Safety
    /// Every pointer in `sqe` points into `data`'s heap allocations (which
    /// do not move when `data` moves) or into memory that outlives the
    /// operation, and nothing else accesses that memory while it runs.
    pub(crate) unsafe fn submit(sqe: squeue::Entry, data: T, yields_fd: bool) -> Op<T> {
        let (key, core) = with_core(|core| {
            // SAFETY: the caller's guarantee; `data` is parked with the slot.
            let key = unsafe { core.driver().borrow_mut().submit_op(sqe, yields_fd) };
            (key, core.id())
        });
        Op {
            key: Some(key),
            data: Some(data),
            core,
            _not_send: PhantomData,
        }
    }
}

// Op never hands out a pinned reference to `data`; pinning it is not needed.
impl<T: 'static> Unpin for Op<T> {}

impl<T: 'static> Future for Op<T> {
    type Output = (Completion, T);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Op holds no self-references, so it is Unpin.
        self.get_mut().poll_quiet(cx, None)
    }
}

impl<T: 'static> Op<T> {
    /// Polls the operation; while it waits, a completion with result
    /// `quiet` will not wake the task (see `Slots::set_quiet`): the task
    /// finds it done when it is next polled for another reason.
    pub(crate) fn poll_quiet(
        &mut self,
        cx: &mut Context<'_>,
        quiet: Option<i32>,
    ) -> Poll<(Completion, T)> {
        let this = self;
        let key = this.key.expect("Op polled after completion");
        let done = with_core(|core| {
            assert_eq!(
                core.id(),
                this.core,
                "tidepool: an operation was polled on a worker other than its own"
            );
            let mut driver = core.driver().borrow_mut();
            let slot = driver.ops.get_mut(key).expect("op slot vanished");
            match slot {
                Slot::Done { res, flags } => {
                    let c = Completion {
                        res: *res,
                        flags: *flags,
                    };
                    driver.ops.remove(key);
                    Some(c)
                }
                Slot::Waiting(w) => {
                    match w {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => *w = Some(cx.waker().clone()),
                    }
                    driver.ops.set_quiet(key, quiet);
                    None
                }
                _ => unreachable!("one-shot op in a multishot or orphan slot"),
            }
        });
        match done {
            Some(c) => {
                this.key = None;
                Poll::Ready((c, this.data.take().expect("op data")))
            }
            None => Poll::Pending,
        }
    }
}

impl<T: 'static> Drop for Op<T> {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let this_core = self.core;
        let mut data = self.data.take();
        let parked = try_with_core(|core| {
            if core.id() != this_core {
                // Its own ring is gone or elsewhere: nothing here may be touched.
                return false;
            }
            let mut driver = core.driver().borrow_mut();
            match driver.ops.get_mut(key) {
                Some(Slot::Done { .. }) => {
                    // Finished, never read: an accepted fd in it is closed.
                    driver.remove_done(key);
                }
                Some(slot) => {
                    *slot =
                        Slot::Orphan(data.take().map(|d| Box::new(d) as Box<dyn std::any::Any>));
                    driver.cancel(key);
                }
                None => {}
            }
            true
        });
        if parked != Some(true) {
            // No ring to park in (thread teardown): leaking is the only way
            // to be sure the kernel never writes into freed memory.
            std::mem::forget(data);
        }
    }
}
