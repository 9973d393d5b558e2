//! Reaching a worker from other threads: a channel plus an eventfd that the
//! worker keeps a read armed on (io_uring) or registered (epoll), so a
//! message wakes a sleeping worker.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::task::{Context, Waker};

use crossbeam_channel::{Receiver, Sender};
use io_uring::{opcode, types};

use super::epoll::Dir;
use super::executor::Core;
use super::uring::op::Op;

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
                reg: None,
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
    /// The eventfd's registration, on an epoll worker.
    reg: Option<usize>,
}

impl Inbox {
    pub(crate) fn arm(&mut self, core: &Core) {
        if let Some(poller) = core.poller() {
            let key = poller
                .borrow_mut()
                .register(self.efd)
                .unwrap_or_else(|e| panic!("tidepool: cannot register the worker's eventfd: {e}"));
            self.reg = Some(key);
            return;
        }
        self.arm_read();
    }

    fn arm_read(&mut self) {
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
                self.arm_read();
            }
        }
        if let (Some(key), Some(poller)) = (self.reg, core.poller()) {
            let mut poller = poller.borrow_mut();
            if poller.is_ready(key, Dir::Read) {
                // Reset the counter: every later write is a new edge.
                let mut n = 0u64;
                // SAFETY: reads 8 bytes into a live u64 from our own
                // non-blocking eventfd; the result does not matter (empty
                // is as good as reset).
                unsafe {
                    libc::read(
                        self.efd,
                        (&mut n as *mut u64).cast(),
                        std::mem::size_of::<u64>(),
                    )
                };
                poller.clear(key, Dir::Read);
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
