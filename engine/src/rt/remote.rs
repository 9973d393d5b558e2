//! Reaching a worker from other threads: a channel plus an eventfd that the
//! worker keeps a read armed on, so a message wakes a sleeping ring.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::task::{Context, Waker};

use crossbeam_channel::{Receiver, Sender};
use io_uring::{opcode, types};

use super::executor::Core;
use super::op::Op;

pub(crate) enum RemoteMsg {
    Wake(usize),
    Run(Box<dyn FnOnce() + Send>),
}

pub(crate) struct Remote {
    tx: Sender<RemoteMsg>,
    efd: OwnedFd,
}

impl Remote {
    pub(crate) fn new() -> io::Result<(Remote, Inbox)> {
        // SAFETY: eventfd has no memory-safety preconditions.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let efd = unsafe { OwnedFd::from_raw_fd(fd) };
        let (tx, rx) = crossbeam_channel::unbounded();
        let raw = efd.as_raw_fd();
        Ok((
            Remote { tx, efd },
            Inbox {
                rx,
                efd: raw,
                read: None,
            },
        ))
    }

    pub(crate) fn send(&self, msg: RemoteMsg) {
        if self.tx.send(msg).is_ok() {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our own eventfd. A
            // full counter (EAGAIN) still leaves the worker woken, so the
            // result needs no handling.
            unsafe {
                libc::write(
                    self.efd.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }
}

/// The worker's end: drained once per loop turn.
pub(crate) struct Inbox {
    rx: Receiver<RemoteMsg>,
    efd: i32,
    read: Option<Op<Box<u64>>>,
}

impl Inbox {
    pub(crate) fn arm(&mut self) {
        let mut buf = Box::new(0u64);
        let ptr = (&mut *buf as *mut u64).cast::<u8>();
        let sqe = opcode::Read::new(types::Fd(self.efd), ptr, 8).build();
        // SAFETY: the SQE points into the boxed counter, parked with the op.
        self.read = Some(unsafe { Op::submit(sqe, buf, false) });
    }

    pub(crate) fn drain(&mut self, core: &Core) {
        if let Some(op) = self.read.as_mut() {
            let mut cx = Context::from_waker(Waker::noop());
            if std::pin::Pin::new(op).poll(&mut cx).is_ready() {
                self.read = None;
                self.arm();
            }
        }
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                RemoteMsg::Wake(task) => core.schedule(task),
                // A panicking closure is dropped like a panicking task: the
                // worker and everything else it runs go on.
                RemoteMsg::Run(f) => {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
                }
            }
        }
    }
}

use std::future::Future;
