//! The io_uring backend: the generator's fast path, on the engine's
//! [`EventRing`] (the one layer that touches io_uring, so this file holds
//! no `unsafe`).
//!
//! Each connection's socket sits in a registered file slot (its index). A
//! connection has one multishot receive armed over the ring's provided
//! buffers, where responses are parsed as the kernel put them; sends are
//! queued during the turn and submitted together with the wait, in one
//! `io_uring_enter`. A send takes the connection's `out` until its
//! completion hands it back, and a closing connection cancels its
//! operations and keeps its socket until their last completions arrive
//! (`Conn::ops`).

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use tidepool_engine::rt::events::{Event, EventRing, Hold, SetupError};

use super::{tcp_socket, Got, Io, State, Worker};

/// What an event's tag names: connection index << 2 | operation.
const RECV: u64 = 0;
const SEND: u64 = 1;
const CONNECT: u64 = 2;

fn tag(conn: usize, op: u64) -> u64 {
    ((conn as u64) << 2) | op
}

/// Connection `i`'s registered file slot.
fn file(i: usize) -> u32 {
    i as u32
}

/// How long a held wait may gather completions (closed loop only).
const HOLD_WINDOW: Duration = Duration::from_micros(50);
/// Connections with a request out before a wait is held: with fewer, a
/// held wait would mostly sit out its window.
const HOLD_MIN_BUSY: usize = 16;
const RECV_BUFFER_SIZE: usize = 16 * 1024;

pub(super) struct Ring {
    ring: EventRing,
    /// Whether waits may be held (closed loop, and the kernel has min_wait).
    hold: bool,
    /// Sends submitted with the next enter: their completions come inline.
    sends_queued: u32,
}

impl Ring {
    pub(super) fn new(connections: usize, closed_loop: bool) -> Result<Ring, SetupError> {
        let entries = (connections as u32 * 4)
            .next_power_of_two()
            .clamp(256, 4096);
        let buffers = (connections * 2).next_power_of_two().clamp(64, 4096) as u16;
        let ring = EventRing::new(entries, connections as u32, buffers, RECV_BUFFER_SIZE)?;
        let hold = closed_loop && ring.can_hold();
        Ok(Ring {
            ring,
            hold,
            sends_queued: 0,
        })
    }

    fn arm_recv(w: &mut Worker<Ring>, i: usize) {
        w.conns[i].ops += 1;
        w.io.ring.recv_multi(file(i), tag(i, RECV));
    }

    fn on_recv(w: &mut Worker<Ring>, i: usize, ev: Event, now: Instant) {
        let c = &mut w.conns[i];
        if !ev.more {
            c.ops -= 1;
        }
        let mut broken = false;
        if let Some(data) = ev.data {
            if ev.res > 0 && c.state == State::Open {
                broken = c.ex.feed(&data, now, w.book.at(now)).is_err();
            }
        }
        let got = if c.state != State::Open {
            // `got` lets a closing connection settle.
            Got::Nothing
        } else if broken {
            Got::Broken
        } else if ev.res > 0 {
            if !ev.more {
                Ring::arm_recv(w, i);
            }
            Got::Data
        } else if ev.res == 0 {
            Got::Eof
        } else if ev.res == -libc::ENOBUFS {
            // Every buffer was taken at once; they are back by the next wait.
            Ring::arm_recv(w, i);
            Got::Nothing
        } else {
            Got::Failed
        };
        w.got(i, got, now);
    }

    fn on_send(w: &mut Worker<Ring>, i: usize, ev: Event, now: Instant) {
        let c = &mut w.conns[i];
        c.ops -= 1;
        c.sending = false;
        if let Some(out) = ev.sent {
            c.out = out;
        }
        if c.state != State::Open {
            w.settle(i);
            return;
        }
        if ev.res <= 0 {
            w.send_failed(i, now);
            return;
        }
        c.written += ev.res as usize;
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
        self.ring.set_file(file(i), s.as_raw_fd())?;
        Ok(s)
    }

    fn start_connect(w: &mut Worker<Ring>, i: usize, _now: Instant) {
        w.conns[i].ops += 1;
        w.io.ring.connect(file(i), &w.addr, tag(i, CONNECT));
    }

    fn opened(w: &mut Worker<Ring>, i: usize) {
        Ring::arm_recv(w, i);
    }

    fn send(w: &mut Worker<Ring>, i: usize) {
        let c = &mut w.conns[i];
        // The ring holds the bytes until the send completes; no request is
        // added meanwhile (`sending`).
        let out = std::mem::take(&mut c.out);
        c.ops += 1;
        c.sending = true;
        w.io.sends_queued += 1;
        w.io.ring.send(file(i), out, c.written, tag(i, SEND));
    }

    fn cancel(w: &mut Worker<Ring>, i: usize) {
        if w.conns[i].ops > 0 {
            w.io.ring.cancel_file(file(i));
        }
    }

    fn detach(&mut self, i: usize) {
        // The slot holds the socket open too: empty it so it closes now.
        self.ring.clear_file(file(i));
    }

    fn reap(w: &mut Worker<Ring>, now: Instant) {
        while let Some(ev) = w.io.ring.next_event() {
            let i = (ev.tag >> 2) as usize;
            match ev.tag & 3 {
                RECV => Ring::on_recv(w, i, ev, now),
                SEND => Ring::on_send(w, i, ev, now),
                _ => {
                    w.conns[i].ops -= 1;
                    w.connected(i, ev.res >= 0, now);
                }
            }
        }
    }

    /// Sends go out with the wait: nothing to do before it.
    fn flush(_: &mut Worker<Ring>, _: Instant) {}

    fn wait(w: &mut Worker<Ring>, now: Instant, deadline: Instant, busy: usize) -> io::Result<()> {
        let ring = &mut w.io;
        let mut hold = None;
        if ring.hold && busy >= HOLD_MIN_BUSY {
            // A held wait gathers up to `want` arrivals for at most the
            // window; the sends going out now complete inline, so they are
            // not counted as arrivals.
            hold = Some(Hold {
                want: ((busy / 2).min(32) + ring.sends_queued as usize) as u32,
                window: HOLD_WINDOW,
            });
        }
        ring.sends_queued = 0;
        ring.ring
            .wait(deadline.saturating_duration_since(now), hold)
    }

    /// Dropping the ring cancels what is left and waits for the kernel
    /// (bounded), leaking rather than freeing what it still holds.
    fn finish(_: &mut Worker<Ring>, _clean: bool) {}
}
