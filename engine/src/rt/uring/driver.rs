//! The reactor: one io_uring per worker, carrying out what the table of
//! operations in flight (`slots.rs`, sans-IO) decides.
//!
//! A completion either wakes the task waiting on its slot or, when the
//! future that asked for it was dropped, frees the buffers that were parked
//! in the slot for the kernel's sake (and closes a socket an orphaned accept
//! produced). Nothing handed to the kernel is freed before its CQE: a worker
//! that cannot wait for them at teardown leaks what is parked instead.

use std::any::Any;
use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring};

use super::bufring::BufRing;
use super::slots::{Effects, Fired, Slot, Slots};

/// Provided buffers per worker for multishot receives: enough for the data
/// in flight at once (each is handed back as soon as it is copied out).
const RECV_BUFFERS: u16 = 512;
pub(crate) const RECV_BUFFER_SIZE: usize = 4096;

/// user_data of SQEs whose completion nobody waits for (cancels, closes).
pub(crate) const IGNORED: u64 = u64::MAX;

// io_uring_enter(2) flags; the io-uring crate keeps its own copies private.
const IORING_ENTER_GETEVENTS: u32 = 1 << 0;
const IORING_ENTER_EXT_ARG: u32 = 1 << 3;

/// Carries out what a completion means (see `Slots::complete`).
fn apply(
    fx: Effects,
    bufring: Option<&mut BufRing>,
    to_cap: &mut Vec<usize>,
    fired: &mut VecDeque<Fired>,
) {
    if let Some(br) = bufring {
        if fx.taken {
            br.taken();
        }
        if let Some(bid) = fx.give_back {
            br.taken();
            // SAFETY: the completion just reaped handed `bid` over, and
            // nobody else saw it.
            unsafe { br.give_back(bid) };
        }
    }
    if let Some(fd) = fx.close {
        close_fd_now(fd);
    }
    if let Some(key) = fx.cap {
        to_cap.push(key);
    }
    if let Some(ev) = fx.event {
        fired.push_back(ev);
    }
    if let Some(w) = fx.wake {
        w.wake();
    }
}

/// Closes an fd nobody took, at once (not through the ring: no operation
/// can name it).
fn close_fd_now(fd: i32) {
    // SAFETY: a socket the kernel accepted for this worker and handed to no
    // one, so this is its only owner.
    unsafe { libc::close(fd) };
}

/// How the ring was set up, as found by probing the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingMode {
    /// IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN (6.1+): completions
    /// are only processed when this thread enters the ring.
    DeferTaskrun,
    /// IORING_SETUP_COOP_TASKRUN (5.19+).
    CoopTaskrun,
    /// No task-run flags (older kernels).
    Plain,
}

pub(crate) struct Driver {
    ring: IoUring,
    pub(crate) ops: Slots,
    mode: RingMode,
    /// Completions the kernel could not post (CQ overflow) seen so far.
    pub(crate) cq_overflow: u64,
    /// Buffers for multishot receives; `None` when the kernel has no
    /// provided-buffer rings (before 5.19), and then receives are one-shot.
    pub(crate) bufring: Option<BufRing>,
    /// Cleared when the kernel refuses multishot receives (before 6.0).
    pub(crate) recv_multi: bool,
    /// Whether a wait can be held to gather completions (`min_wait_usec`, 6.12).
    pub(crate) min_wait: bool,
    /// Completions reaped in the current epoch: the worker's throughput.
    completions: u32,
    /// Receives that reached their cap in this reap, to be stopped after it.
    to_cap: Vec<usize>,
    /// Completions of event-loop operations not yet taken (`events.rs`;
    /// always empty on an executor's ring).
    pub(crate) fired: VecDeque<Fired>,
}

/// A blocking wait: until `want` completions arrive, except that once
/// `window` (if any) has passed one is enough; never past `timeout`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wait {
    pub(crate) timeout: Option<Duration>,
    pub(crate) want: u32,
    pub(crate) window: Option<Duration>,
}

/// The overall bound of a held wait that has no timer to wake for: the
/// kernel needs one to turn the window into "any completion will do".
const HELD_WAIT_BOUND: Duration = Duration::from_secs(1);

/// The error a worker reports when its ring cannot be set up, naming the cause.
pub(crate) fn ring_unavailable(err: io::Error) -> io::Error {
    let why = match err.raw_os_error() {
        Some(libc::ENOSYS) => "the kernel was built without io_uring (ENOSYS)",
        Some(libc::EPERM) => {
            "io_uring is forbidden here (EPERM): a seccomp profile (Docker's default blocks it) or \
             the sysctl kernel.io_uring_disabled. Run the container with a seccomp profile that \
             allows io_uring_setup/io_uring_enter/io_uring_register, or set \
             kernel.io_uring_disabled=0"
        }
        Some(libc::ENOMEM) => {
            "the ring could not be allocated (ENOMEM): raise RLIMIT_MEMLOCK (ulimit -l) or the \
             memory cgroup limit, or use fewer ring entries"
        }
        _ => "io_uring_setup failed",
    };
    io::Error::new(
        err.kind(),
        format!("tidepool: cannot create an io_uring: {why} ({err})"),
    )
}

/// Adds one ring mode's setup flags to a builder.
type SetupFlags = fn(&mut io_uring::Builder);

impl Driver {
    /// Sets up a ring; the error is the kernel's, unwrapped, so the
    /// backend selection can tell "unavailable" from a real failure.
    pub(crate) fn new(entries: u32) -> io::Result<Driver> {
        Driver::with_buffers(entries, RECV_BUFFERS, RECV_BUFFER_SIZE)
    }

    /// As [`new`](Self::new), with `count` provided buffers (rounded up to
    /// a power of two; none when 0) of `size` bytes.
    pub(crate) fn with_buffers(entries: u32, count: u16, size: usize) -> io::Result<Driver> {
        let count = if count == 0 {
            0
        } else {
            count.checked_next_power_of_two().unwrap_or(1 << 15)
        };
        // Try the best setup first; each fallback is what an older kernel accepts.
        let attempts: [(RingMode, SetupFlags); 3] = [
            (RingMode::DeferTaskrun, |b| {
                b.setup_single_issuer().setup_defer_taskrun();
            }),
            (RingMode::CoopTaskrun, |b| {
                b.setup_coop_taskrun();
            }),
            (RingMode::Plain, |_| {}),
        ];
        let mut last_err = None;
        for (mode, configure) in attempts {
            let mut builder = IoUring::builder();
            // Multishot accept and bursts of sends can post more completions
            // than there are SQEs: a CQ four times the SQ keeps overflow rare.
            builder.setup_cqsize(entries * 4);
            configure(&mut builder);
            match builder.build(entries) {
                Ok(ring) => {
                    let bufring = (count > 0)
                        .then(|| BufRing::register(&ring, count, size).ok())
                        .flatten();
                    let min_wait = ring.params().is_feature_min_timeout();
                    return Ok(Driver {
                        ring,
                        ops: Slots::default(),
                        mode,
                        cq_overflow: 0,
                        recv_multi: bufring.is_some(),
                        min_wait,
                        completions: 0,
                        to_cap: Vec::new(),
                        fired: VecDeque::new(),
                        bufring,
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    /// The ring itself (the backend probe runs a NOP through it).
    pub(crate) fn ring(&self) -> &IoUring {
        &self.ring
    }

    pub(crate) fn mode(&self) -> RingMode {
        self.mode
    }

    /// Queues an SQE, flushing the SQ to the kernel first when it is full.
    ///
    /// # Safety
    /// Every pointer inside `sqe` refers to memory that stays valid, and is
    /// not otherwise accessed while the kernel may, until the completion
    /// arrives: parked in the operation's slot, or owned by the slot's owner
    /// for that long.
    pub(super) unsafe fn push(&mut self, sqe: squeue::Entry) {
        loop {
            // SAFETY: the caller's guarantee for `sqe`.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return;
            }
            if let Err(e) = self.enter(None) {
                // Busy means the CQ is full: reap, then retry the push.
                if e.raw_os_error() != Some(libc::EBUSY) {
                    panic!("tidepool: io_uring_enter failed: {e}");
                }
            }
            self.reap();
        }
    }

    /// Registers a one-shot operation and queues its SQE; returns the slot
    /// key. `yields_fd`: a successful result is a new fd (an accept).
    ///
    /// # Safety
    /// As for `push`: what `sqe` points into outlives the operation (the
    /// caller parks it in the returned slot, see `Op`).
    pub(crate) unsafe fn submit_op(&mut self, sqe: squeue::Entry, yields_fd: bool) -> usize {
        let (key, ud) = self.ops.insert_one_shot(yields_fd);
        // SAFETY: the caller's guarantee.
        unsafe { self.push(sqe.user_data(ud)) };
        key
    }

    /// Registers a multishot operation (it may complete many times).
    ///
    /// # Safety
    /// As for `submit_op`, for as long as the operation is armed.
    pub(crate) unsafe fn submit_multi(&mut self, sqe: squeue::Entry, yields_fd: bool) -> usize {
        let (key, ud) = self.ops.insert_multi(yields_fd);
        // SAFETY: the caller's guarantee.
        unsafe { self.push(sqe.user_data(ud)) };
        key
    }

    /// Registers an event-loop operation named `tag` and queues its SQE;
    /// each completion is queued in `fired`.
    ///
    /// # Safety
    /// As for `push`: what `sqe` points into is `buf`'s or `keep`'s heap
    /// memory (parked in the slot until the last completion) or outlives
    /// the operation.
    pub(crate) unsafe fn submit_event(
        &mut self,
        sqe: squeue::Entry,
        tag: u64,
        buf: Option<Vec<u8>>,
        keep: Option<Box<dyn Any>>,
    ) {
        let (_, ud) = self.ops.insert_event(tag, buf, keep);
        // SAFETY: the caller's guarantee; the slot parks `buf` and `keep`.
        unsafe { self.push(sqe.user_data(ud)) };
    }

    /// Asks the kernel to cancel the operation in `key`; its completion
    /// still arrives. The cancel names the slot's generation, so if the
    /// operation ends and its key is reused before the cancel is submitted,
    /// the new operation is left alone.
    pub(crate) fn cancel(&mut self, key: usize) {
        let target = self.ops.target(key);
        // SAFETY: a cancel points at no memory.
        unsafe { self.push(opcode::AsyncCancel::new(target).build().user_data(IGNORED)) };
    }

    /// Closes an fd through the ring: batched with the other submissions
    /// rather than costing a syscall of its own.
    pub(crate) fn close_fd(&mut self, fd: i32) {
        // SAFETY: a close points at no memory.
        unsafe { self.push(opcode::Close::new(types::Fd(fd)).build().user_data(IGNORED)) };
    }

    /// Ends an activity epoch: returns how many distinct sources completed
    /// in it, and how many completions were reaped.
    pub(crate) fn take_epoch(&mut self) -> (u32, u32) {
        (self.ops.end_epoch(), std::mem::take(&mut self.completions))
    }

    /// SQEs queued and not yet handed to the kernel.
    pub(crate) fn queued(&mut self) -> usize {
        self.ring.submission().len()
    }

    /// Submits queued SQEs; with a `wait`, blocks as it says.
    pub(crate) fn enter(&mut self, wait: Option<Wait>) -> io::Result<()> {
        let to_submit = self.ring.submission().len() as u32;
        let submitter = self.ring.submitter();
        let mut flags = 0u32;
        // DEFER_TASKRUN runs completion work only when we ask for events,
        // so every enter asks; with the other modes it is only needed to wait.
        if wait.is_some() || self.mode == RingMode::DeferTaskrun {
            flags |= IORING_ENTER_GETEVENTS;
        }
        let (min_complete, timeout, window) = match wait {
            None => (0, None, None),
            Some(w) => {
                let window = w.window.filter(|_| self.min_wait && w.want > 1);
                let timeout = match window {
                    Some(_) => Some(w.timeout.unwrap_or(HELD_WAIT_BOUND)),
                    None => w.timeout,
                };
                (if window.is_some() { w.want } else { 1 }, timeout, window)
            }
        };
        let res = match timeout {
            Some(t) => {
                let ts = types::Timespec::from(t);
                let mut args = types::SubmitArgs::new().timespec(&ts);
                if let Some(win) = window {
                    args = args.min_wait_usec(u32::try_from(win.as_micros()).unwrap_or(u32::MAX));
                }
                // SAFETY: `args` and `ts` outlive the call, and the SQEs being
                // submitted point at memory parked in `ops`.
                unsafe {
                    submitter.enter(
                        to_submit,
                        min_complete,
                        flags | IORING_ENTER_EXT_ARG,
                        Some(&args),
                    )
                }
            }
            // SAFETY: as above; no extra argument is passed.
            None => unsafe {
                submitter.enter::<libc::sigset_t>(to_submit, min_complete, flags, None)
            },
        };
        match res {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                // Woken by a signal or the timeout: not a failure of the ring.
                Some(libc::EINTR) | Some(libc::ETIME) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// Moves every available completion into its slot and wakes its task.
    pub(crate) fn reap(&mut self) -> usize {
        let mut n = 0;
        let mut cq = self.ring.completion();
        self.cq_overflow = u64::from(cq.overflow());
        cq.sync();
        for cqe in &mut cq {
            n += 1;
            let ud = cqe.user_data();
            if ud == IGNORED {
                continue;
            }
            let fx = self.ops.complete(ud, cqe.result(), cqe.flags());
            apply(fx, self.bufring.as_mut(), &mut self.to_cap, &mut self.fired);
        }
        drop(cq);
        self.completions = self.completions.saturating_add(n as u32);
        let mut capped = std::mem::take(&mut self.to_cap);
        for key in capped.drain(..) {
            self.cancel(key);
        }
        self.to_cap = capped;
        n
    }

    /// Number of operations the kernel still owns.
    pub(crate) fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Closes what operation `key`'s result `res` holds, when nobody will
    /// take it (the fd of an accept).
    pub(crate) fn discard_result(&self, key: usize, res: i32) {
        if let Some(fd) = self.ops.unclaimed_fd(key, res) {
            close_fd_now(fd);
        }
    }

    /// Removes a finished one-shot slot whose result nobody will read,
    /// closing an fd it holds.
    pub(crate) fn remove_done(&mut self, key: usize) {
        if let Some(Slot::Done { res, .. }) = self.ops.get(key) {
            self.discard_result(key, *res);
        }
        self.ops.remove(key);
    }

    /// Whether the kernel may still act on some operation of this ring.
    fn busy(&self) -> bool {
        self.ops.busy()
    }

    /// Cancels everything still in flight and waits (bounded) for the kernel
    /// to give the memory back. What it has not given back by the deadline
    /// is leaked, never freed: a worker never exits with buffers that the
    /// kernel may still write to.
    pub(crate) fn drain(&mut self, budget: Duration) {
        let keys: Vec<usize> = self.ops.keys().collect();
        for key in keys {
            self.cancel(key);
        }
        // Queued closes and cancels must reach the kernel even when nothing
        // is left to wait for.
        let _ = self.enter(None);
        self.reap();
        let deadline = std::time::Instant::now() + budget;
        while self.busy() {
            let now = std::time::Instant::now();
            if now >= deadline {
                // Parked buffers and fds, and the provided buffers (dropped
                // unreleased), stay allocated for the process's life rather
                // than freed under the kernel.
                std::mem::forget(self.ops.take_all());
                drop(self.bufring.take());
                return;
            }
            let wait = Wait {
                timeout: Some(deadline - now),
                want: 1,
                window: None,
            };
            if self.enter(Some(wait)).is_err() {
                break;
            }
            self.reap();
            // Finished results nobody will read are dropped here (an
            // accepted socket among them is closed).
            let finished: Vec<usize> = self.ops.finished().collect();
            for key in finished {
                self.remove_done(key);
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let Some(br) = self.bufring.take() else {
            return;
        };
        if self.busy() {
            // A receive may still pick a buffer: dropped unreleased, the
            // ring leaks its memory rather than free what the kernel can write.
            drop(br);
        } else {
            br.release(&self.ring);
        }
    }
}
