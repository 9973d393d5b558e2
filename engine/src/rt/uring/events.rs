//! The ring for a loop that owns its connections and wants completions as
//! events rather than wakers (the load generator): the same driver, slots
//! and provided buffers as the executor's ring, so this layer stays the
//! only code that touches io_uring, and its safety rules hold here too.
//!
//! The ring owns everything the kernel points into: a send takes its bytes
//! by value and hands them back with its last completion, a connect's
//! address is parked in its slot, received data is lent out as a
//! [`RecvBuf`] that returns its buffer when dropped. Nothing here needs an
//! `unsafe` call from the loop. Sockets sit in registered file slots, so
//! their operations skip the file-table lookup.
//!
//! Dropping the ring cancels what is in flight and waits (bounded) for the
//! kernel to let go; what it has not let go of by then is leaked, never
//! freed.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::{cqueue, opcode, types};
use socket2::SockAddr;

pub use super::bufring::RecvBuf;
use super::bufring::GROUP;
use super::driver::{Driver, Wait, IGNORED};

/// How long dropping the ring waits for the kernel to finish what was
/// cancelled before it leaks what is left.
const TEARDOWN_BUDGET: Duration = Duration::from_secs(1);

/// The ring could not be set up: what failed, and the kernel's answer
/// (kept whole, so the caller can tell "unavailable here" apart).
#[derive(Debug)]
pub struct SetupError {
    pub what: &'static str,
    pub cause: io::Error,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.cause)
    }
}

impl std::error::Error for SetupError {}

/// One completion of an operation started on an [`EventRing`].
#[derive(Debug)]
pub struct Event {
    /// The tag the operation was started with.
    pub tag: u64,
    /// The kernel's result: bytes moved, 0, or a negative errno.
    pub res: i32,
    /// More completions of the same operation will follow (a multishot
    /// receive still armed).
    pub more: bool,
    /// A receive's bytes; the buffer goes back to the kernel when dropped.
    pub data: Option<RecvBuf>,
    /// A send's bytes, handed back with its completion.
    pub sent: Option<Vec<u8>>,
}

/// A held wait: until `want` completions arrive, or, once `window` has
/// passed, any one (kernels with `min_wait`, 6.12).
#[derive(Clone, Copy, Debug)]
pub struct Hold {
    pub want: u32,
    pub window: Duration,
}

pub struct EventRing {
    driver: Driver,
    files: u32,
}

impl EventRing {
    /// A ring of `entries` SQEs with `files` registered file slots and
    /// `buffers` (a power of two) provided receive buffers of `size` bytes.
    pub fn new(entries: u32, files: u32, buffers: u16, size: usize) -> Result<Self, SetupError> {
        let fail = |what| move |cause| SetupError { what, cause };
        let driver =
            Driver::with_buffers(entries, buffers, size).map_err(fail("cannot set up io_uring"))?;
        if driver.bufring.is_none() {
            return Err(SetupError {
                what:
                    "io_uring provided-buffer rings are unavailable (Linux 6.0 or later is needed)",
                cause: io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        driver
            .ring()
            .submitter()
            .register_files_sparse(files)
            .map_err(fail(
                "cannot register io_uring file slots (Linux 6.0 or later is needed)",
            ))?;
        Ok(EventRing { driver, files })
    }

    /// Whether a wait can be held to gather completions (see [`Hold`]).
    pub fn can_hold(&self) -> bool {
        self.driver.min_wait
    }

    /// Puts socket `fd` in file slot `file` (the slot holds its own
    /// reference: the socket stays open until [`clear_file`](Self::clear_file)).
    pub fn set_file(&mut self, file: u32, fd: RawFd) -> io::Result<()> {
        self.check(file);
        self.driver
            .ring()
            .submitter()
            .register_files_update(file, &[fd])
            .map(drop)
    }

    /// Empties file slot `file`, dropping the ring's reference to its socket.
    pub fn clear_file(&mut self, file: u32) {
        self.check(file);
        let _ = self
            .driver
            .ring()
            .submitter()
            .register_files_update(file, &[-1]);
    }

    fn check(&self, file: u32) {
        assert!(file < self.files, "file slot {file} of {}", self.files);
    }

    /// Connects the socket in `file` to `addr`.
    pub fn connect(&mut self, file: u32, addr: &SockAddr, tag: u64) {
        self.check(file);
        let addr = Box::new(addr.clone());
        let sqe =
            opcode::Connect::new(types::Fixed(file), addr.as_ptr().cast(), addr.len()).build();
        // SAFETY: the SQE points into the boxed address, parked in the slot
        // until the completion (moving the box does not move its contents).
        unsafe { self.driver.submit_event(sqe, tag, None, Some(addr)) };
    }

    /// Arms a multishot receive on `file` into the provided buffers: each
    /// arrival is an [`Event`] with `data`; it ends with `more` unset (the
    /// peer closed, an error, or `-ENOBUFS` when every buffer was taken).
    pub fn recv_multi(&mut self, file: u32, tag: u64) {
        self.check(file);
        let sqe = opcode::RecvMulti::new(types::Fixed(file), GROUP).build();
        // SAFETY: the kernel writes only into provided buffers, which the
        // ring owns and frees only once no operation is in flight.
        unsafe { self.driver.submit_event(sqe, tag, None, None) };
    }

    /// Sends `buf[from..]` on `file`; the bytes come back with the
    /// completion ([`Event::sent`]), whatever it says.
    pub fn send(&mut self, file: u32, buf: Vec<u8>, from: usize, tag: u64) {
        self.check(file);
        let rest = &buf[from..];
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        let sqe = opcode::Send::new(types::Fixed(file), rest.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        // SAFETY: the SQE points into `buf`'s heap memory, parked in the
        // slot (unchanged, unread by us) until the completion.
        unsafe { self.driver.submit_event(sqe, tag, Some(buf), None) };
    }

    /// Cancels every operation on `file`; each still completes (with
    /// `-ECANCELED` or what it had done).
    pub fn cancel_file(&mut self, file: u32) {
        self.check(file);
        let sqe = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fixed(file)).all())
            .build()
            .user_data(IGNORED);
        // SAFETY: a cancel points at no memory of ours.
        unsafe { self.driver.push(sqe) };
    }

    /// Submits what was queued and waits until a completion arrives (or
    /// `hold` says), at most `timeout`. Received buffers dropped since the
    /// last wait go back to the kernel first.
    pub fn wait(&mut self, timeout: Duration, hold: Option<Hold>) -> io::Result<()> {
        if let Some(br) = self.driver.bufring.as_mut() {
            br.reclaim();
        }
        let wait = Wait {
            timeout: Some(timeout),
            want: hold.map_or(1, |h| h.want),
            window: hold.map(|h| h.window),
        };
        match self.driver.enter(Some(wait)) {
            // A full CQ: reaping makes room.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            other => other?,
        }
        self.driver.reap();
        Ok(())
    }

    /// The next completion reaped by [`wait`](Self::wait).
    pub fn next_event(&mut self) -> Option<Event> {
        let fired = self.driver.fired.pop_front()?;
        let data = cqueue::buffer_select(fired.flags).map(|bid| {
            let br = self
                .driver
                .bufring
                .as_ref()
                .expect("buffers live as long as the ring");
            // SAFETY: this completion handed `bid` over (counted taken when
            // reaped); it leaves the queue here, lent exactly once.
            unsafe { br.lend(bid, fired.res.max(0) as usize) }
        });
        Some(Event {
            tag: fired.tag,
            res: fired.res,
            more: cqueue::more(fired.flags),
            data,
            sent: fired.buf,
        })
    }

    /// Operations the kernel still owns.
    pub fn in_flight(&self) -> usize {
        self.driver.in_flight()
    }
}

impl Drop for EventRing {
    fn drop(&mut self) {
        // Buffers lent out are counted back before the driver decides
        // whether it can release the group.
        self.driver.fired.clear();
        if let Some(br) = self.driver.bufring.as_mut() {
            br.reclaim();
        }
        self.driver.drain(TEARDOWN_BUDGET);
    }
}
