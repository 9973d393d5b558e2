//! Multishot operations (accepts, receives into provided buffers): armed
//! once, completing many times. Their whole lifecycle lives here, next to
//! the slots and the buffer ring, so sockets (`net.rs`) only ask for the
//! next result and never see a slot or a buffer id.

use std::any::Any;
use std::io;
use std::os::fd::RawFd;
use std::task::{Context, Poll};

use io_uring::{cqueue, opcode, types};

use super::bufring::GROUP;
use super::driver::Driver;
use super::slots::Slot;

/// What one look at a multishot receive's completions found.
pub(crate) enum Received {
    /// This many bytes were appended to the caller's buffer.
    Data(usize),
    Failed(io::Error),
    /// The kernel ended the receive with no data pending: the caller
    /// forgets it (`remove_multi`) and re-arms; with `no_buffers`, after
    /// one one-shot read, since every provided buffer is taken.
    Ended {
        no_buffers: bool,
    },
    /// The kernel does not know multishot receives.
    Unsupported,
}

impl Driver {
    /// Arms a multishot accept on listener `fd`; its results are new fds,
    /// closed by the driver when nobody takes them.
    pub(crate) fn arm_accept(&mut self, fd: RawFd) -> usize {
        let sqe = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build();
        // SAFETY: the SQE points at no memory. The caller keeps `fd` open
        // until the operation's last completion (`release_multi` parks a
        // handle to it).
        unsafe { self.submit_multi(sqe, true) }
    }

    /// Arms a multishot receive on `fd` into the provided buffers; `None`
    /// when this ring has none, or the kernel refused multishot receives.
    pub(crate) fn arm_recv(&mut self, fd: RawFd) -> Option<usize> {
        if !self.recv_multi {
            return None;
        }
        let sqe = opcode::RecvMulti::new(types::Fd(fd), GROUP).build();
        // SAFETY: the SQE points at no memory (the kernel picks provided
        // buffers, which the ring owns); `fd` as for `arm_accept`.
        Some(unsafe { self.submit_multi(sqe, false) })
    }

    /// The next result of multishot operation `key`, and whether the
    /// operation has ended with it (`None`: ended with nothing queued).
    pub(crate) fn poll_multi(
        &mut self,
        key: usize,
        cx: &mut Context<'_>,
    ) -> Poll<(Option<i32>, bool)> {
        match self.ops.get_mut(key) {
            Some(Slot::Multi {
                waker,
                queue,
                ended,
                ..
            }) => {
                if let Some((res, flags)) = queue.pop_front() {
                    let last = !cqueue::more(flags);
                    return Poll::Ready((Some(res), last && queue.is_empty()));
                }
                if *ended {
                    return Poll::Ready((None, true));
                }
                set_waker(waker, cx);
                Poll::Pending
            }
            _ => Poll::Ready((None, true)),
        }
    }

    /// Copies every queued completion's bytes of multishot receive `key`
    /// into `buf`, handing the buffers back. An end of stream or error
    /// queued after data is left for the next call, so the data is
    /// reported first.
    pub(crate) fn poll_received(
        &mut self,
        key: usize,
        buf: &mut Vec<u8>,
        cx: &mut Context<'_>,
    ) -> Poll<Received> {
        let Some(Slot::Multi {
            waker,
            queue,
            ended,
            capped,
            ..
        }) = self.ops.get_mut(key)
        else {
            return Poll::Ready(Received::Ended { no_buffers: false });
        };
        let mut got = 0usize;
        while let Some(&(res, flags)) = queue.front() {
            if res <= 0 {
                if got > 0 {
                    break;
                }
                queue.pop_front();
                return Poll::Ready(match -res {
                    0 => Received::Data(0),
                    libc::ENOBUFS => Received::Ended { no_buffers: true },
                    // Stopped at its cap: everything it held was read.
                    libc::ECANCELED if *capped => Received::Ended { no_buffers: false },
                    libc::EINVAL if *ended && queue.is_empty() => Received::Unsupported,
                    e => Received::Failed(io::Error::from_raw_os_error(e)),
                });
            }
            queue.pop_front();
            let n = res as usize;
            let br = self
                .bufring
                .as_mut()
                .expect("multishot receive without buffers");
            let bid = cqueue::buffer_select(flags).expect("a receive completion names its buffer");
            // SAFETY: this completion handed `bid` over (counted taken at
            // reap) and it leaves the queue here, given back exactly once.
            unsafe {
                buf.extend_from_slice(br.data(bid, n));
                br.give_back(bid);
            }
            got += n;
        }
        if got > 0 {
            return Poll::Ready(Received::Data(got));
        }
        if *ended {
            return Poll::Ready(Received::Ended { no_buffers: false });
        }
        set_waker(waker, cx);
        Poll::Pending
    }

    /// Forgets multishot operation `key` after it ended (the caller may
    /// arm a new one).
    pub(crate) fn remove_multi(&mut self, key: usize) {
        self.ops.remove(key);
    }

    /// The kernel refused a multishot receive: forget `key`, and receive
    /// one-shot from now on.
    pub(crate) fn recv_unsupported(&mut self, key: usize) {
        self.ops.remove(key);
        self.recv_multi = false;
    }

    /// Lets go of multishot operation `key`, whose owner is gone. Results
    /// nobody will read are discarded: their buffers go back to the ring,
    /// accepted sockets are closed. An operation still armed is cancelled
    /// and keeps `parked` (the fd it works on) until its last completion,
    /// whose results are discarded the same way when reaped.
    pub(crate) fn release_multi<P: Any>(&mut self, key: usize, parked: P) {
        let Some(Slot::Multi { queue, ended, .. }) = self.ops.get_mut(key) else {
            return;
        };
        let ended = *ended;
        let queued = std::mem::take(queue);
        for (res, flags) in queued {
            if let (Some(bid), Some(br)) = (cqueue::buffer_select(flags), &mut self.bufring) {
                // SAFETY: handed over by this queued completion, which
                // leaves the queue here.
                unsafe { br.give_back(bid) };
            }
            self.discard_result(key, res);
        }
        if ended {
            self.ops.remove(key);
        } else {
            self.ops.set(key, Slot::Orphan(Some(Box::new(parked))));
            self.cancel(key);
        }
    }
}

fn set_waker(slot: &mut Option<std::task::Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}
