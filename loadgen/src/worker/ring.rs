//! The io_uring backend: the generator's fast path.
//!
//! Each connection's socket sits in a registered file slot (its index), so
//! its operations skip the file-table lookup. A connection has one
//! multishot receive armed over a ring of provided buffers, where responses
//! are parsed as the kernel put them; sends are queued during the turn and
//! submitted together with the wait, in one `io_uring_enter`. The kernel's
//! view of our memory stays valid because a connection's `out` is not
//! touched while its send is in flight, a closing connection cancels its
//! operations and keeps its socket until their last completions arrive
//! (`Conn::ops`), and the provided buffers are freed only at the end, when
//! no operation is left (leaked if the loop fails).

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use socket2::{Domain, Socket, Type};
use tidepool_engine::rt::bufring::{BufRing, GROUP};

use super::{tcp_socket, After, Got, Io, State, Worker, CONNECT_BACKOFF};

/// What a completion's `user_data` names: connection index << 2 | operation.
const RECV: u64 = 0;
const SEND: u64 = 1;
const CONNECT: u64 = 2;
const CANCEL: u64 = 3;

fn user_data(conn: usize, op: u64) -> u64 {
    ((conn as u64) << 2) | op
}

/// Connection `i`'s registered file slot.
fn slot(i: usize) -> types::Fixed {
    types::Fixed(i as u32)
}

/// How long a held wait may gather completions (closed loop only).
const HOLD_WINDOW: Duration = Duration::from_micros(50);
/// Connections with a request out before a wait is held: with fewer, a
/// held wait would mostly sit out its window.
const HOLD_MIN_BUSY: usize = 16;
const RECV_BUFFER_SIZE: usize = 16 * 1024;

pub(super) struct Ring {
    ring: IoUring,
    /// Kept in an Option so teardown can hand it back to the kernel.
    bufs: Option<BufRing>,
    /// Whether waits may be held (closed loop, and the kernel has min_wait).
    hold: bool,
    /// Sends submitted with the next enter: their completions come inline.
    sends_queued: u32,
    cqes: Vec<(u64, i32, u32)>,
}

/// The ring could not be set up: what failed, and the kernel's answer
/// (kept whole, so that the caller can tell "unavailable here" apart).
pub(super) struct SetupError {
    what: &'static str,
    pub(super) cause: io::Error,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.cause)
    }
}

fn new_ring(entries: u32) -> io::Result<IoUring> {
    // Deferred task work runs only when this thread enters the ring, so
    // completions gather while it works instead of interrupting it.
    let mut b = IoUring::builder();
    b.setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(entries * 4);
    match b.build(entries) {
        Ok(r) => Ok(r),
        Err(_) => IoUring::builder().setup_cqsize(entries * 4).build(entries),
    }
}

impl Ring {
    pub(super) fn new(connections: usize, closed_loop: bool) -> Result<Ring, SetupError> {
        let fail = |what| move |cause| SetupError { what, cause };
        let entries = (connections as u32 * 4)
            .next_power_of_two()
            .clamp(256, 4096);
        let ring = new_ring(entries).map_err(fail("cannot set up io_uring"))?;
        let count = (connections * 2).next_power_of_two().clamp(64, 4096) as u16;
        let bufs = BufRing::register(&ring, count, RECV_BUFFER_SIZE).map_err(fail(
            "io_uring provided-buffer rings are unavailable (Linux 6.0 or later is needed)",
        ))?;
        // Each connection's socket sits in a registered slot (its index), so
        // operations on it skip the file-table lookup.
        ring.submitter()
            .register_files_sparse(connections as u32)
            .map_err(fail(
                "cannot register io_uring file slots (Linux 6.0 or later is needed)",
            ))?;
        let hold = closed_loop && ring.params().is_feature_min_timeout();
        Ok(Ring {
            ring,
            bufs: Some(bufs),
            hold,
            sends_queued: 0,
            cqes: Vec::with_capacity(entries as usize * 4),
        })
    }

    /// Queues `sqe`, submitting what is queued first when the ring is full.
    ///
    /// # Safety
    /// Whatever `sqe` points the kernel at must stay valid until its
    /// completion arrives.
    unsafe fn push(&mut self, sqe: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller keeps what `sqe` points at alive.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn arm_recv(w: &mut Worker<Ring>, i: usize) {
        let sqe = opcode::RecvMulti::new(slot(i), GROUP)
            .build()
            .user_data(user_data(i, RECV));
        w.conns[i].ops += 1;
        // SAFETY: the receive writes only into provided buffers, which live
        // until teardown, after every operation completed.
        if unsafe { w.io.push(&sqe) }.is_err() {
            w.conns[i].ops -= 1;
        }
    }

    fn on_recv(w: &mut Worker<Ring>, i: usize, res: i32, flags: u32, now: Instant) {
        let more = cqueue::more(flags);
        let c = &mut w.conns[i];
        if !more {
            c.ops -= 1;
        }
        let mut broken = false;
        if let Some(bid) = cqueue::buffer_select(flags) {
            let bufs = w.io.bufs.as_mut().expect("buffers live until teardown");
            // SAFETY: this completion handed `bid` over just now; the guard
            // gives it back once, when it drops.
            let data = unsafe { bufs.take(bid, res.max(0) as usize) };
            if res > 0 && c.state == State::Open {
                broken = c.ex.feed(&data, now, w.book.at(now)).is_err();
            }
        }
        let got = if c.state != State::Open {
            // `got` lets a closing connection settle.
            Got::Nothing
        } else if broken {
            Got::Broken
        } else if res > 0 {
            if !more {
                Ring::arm_recv(w, i);
            }
            Got::Data
        } else if res == 0 {
            Got::Eof
        } else if res == -libc::ENOBUFS {
            // Every buffer was taken at once; they are all back by now.
            Ring::arm_recv(w, i);
            Got::Nothing
        } else {
            Got::Failed
        };
        w.got(i, got, now);
    }

    fn on_send(w: &mut Worker<Ring>, i: usize, res: i32, now: Instant) {
        let c = &mut w.conns[i];
        c.ops -= 1;
        c.sending = false;
        if c.state != State::Open {
            w.settle(i);
            return;
        }
        if res <= 0 {
            w.send_failed(i, now);
            return;
        }
        c.written += res as usize;
        if c.written < c.out.len() {
            Ring::send(w, i);
            return;
        }
        w.sent(i, now);
    }
}

impl Io for Ring {
    fn socket(&mut self, i: usize, domain: Domain) -> io::Result<Socket> {
        let s = tcp_socket(domain, Type::STREAM)?;
        self.ring
            .submitter()
            .register_files_update(i as u32, &[s.as_raw_fd()])?;
        Ok(s)
    }

    fn start_connect(w: &mut Worker<Ring>, i: usize, now: Instant) {
        let sqe = opcode::Connect::new(slot(i), w.addr.as_ptr().cast(), w.addr.len())
            .build()
            .user_data(user_data(i, CONNECT));
        w.conns[i].ops += 1;
        // SAFETY: `addr` belongs to the worker and outlives every operation
        // (teardown waits for all of them).
        if unsafe { w.io.push(&sqe) }.is_err() {
            let c = &mut w.conns[i];
            c.ops -= 1;
            c.state = State::Closing(After::Reconnect(now + CONNECT_BACKOFF));
            w.settle(i);
        }
    }

    fn opened(w: &mut Worker<Ring>, i: usize) {
        Ring::arm_recv(w, i);
    }

    fn send(w: &mut Worker<Ring>, i: usize) {
        let c = &mut w.conns[i];
        let rest = &c.out[c.written..];
        let sqe = opcode::Send::new(slot(i), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(i, SEND));
        c.ops += 1;
        c.sending = true;
        w.io.sends_queued += 1;
        // SAFETY: `out` is neither touched nor freed while `sending` is set
        // (until this send's completion), and the connection table is never
        // resized, so the bytes stay where they are.
        if unsafe { w.io.push(&sqe) }.is_err() {
            let c = &mut w.conns[i];
            c.ops -= 1;
            c.sending = false;
        }
    }

    fn cancel(w: &mut Worker<Ring>, i: usize) {
        if w.conns[i].ops > 0 {
            let sqe = opcode::AsyncCancel2::new(types::CancelBuilder::fd(slot(i)).all())
                .build()
                .user_data(user_data(i, CANCEL));
            // SAFETY: a cancel points the kernel at nothing of ours.
            let _ = unsafe { w.io.push(&sqe) };
        }
    }

    fn detach(&mut self, i: usize) {
        // The slot holds the socket open too: empty it so it closes now.
        let _ = self.ring.submitter().register_files_update(i as u32, &[-1]);
    }

    fn reap(w: &mut Worker<Ring>, now: Instant) {
        w.io.cqes.clear();
        w.io.cqes.extend(
            w.io.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for k in 0..w.io.cqes.len() {
            let (ud, res, flags) = w.io.cqes[k];
            let i = (ud >> 2) as usize;
            match ud & 3 {
                RECV => Ring::on_recv(w, i, res, flags, now),
                SEND => Ring::on_send(w, i, res, now),
                CONNECT => {
                    w.conns[i].ops -= 1;
                    w.connected(i, res >= 0, now);
                }
                _ => {}
            }
        }
    }

    /// Sends go out with the wait: nothing to do before it.
    fn flush(_: &mut Worker<Ring>, _: Instant) {}

    fn wait(w: &mut Worker<Ring>, now: Instant, deadline: Instant, busy: usize) -> io::Result<()> {
        let ring = &mut w.io;
        let wait = deadline.saturating_duration_since(now);
        let ts = types::Timespec::from(wait);
        let mut args = types::SubmitArgs::new().timespec(&ts);
        let mut want = 1;
        if ring.hold && busy >= HOLD_MIN_BUSY {
            // A held wait gathers up to `want` arrivals for at most the
            // window; the sends going out now complete inline, so they are
            // not counted as arrivals.
            want = (busy / 2).min(32) + ring.sends_queued as usize;
            args = args.min_wait_usec(HOLD_WINDOW.as_micros() as u32);
        }
        ring.sends_queued = 0;
        match ring.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn finish(w: &mut Worker<Ring>, clean: bool) {
        let Some(bufs) = w.io.bufs.take() else {
            return;
        };
        if clean {
            bufs.release(&w.io.ring);
        } else {
            // Operations may still be in flight: the kernel could yet write
            // into the receive buffers, so they are never freed.
            std::mem::forget(bufs);
        }
    }
}
