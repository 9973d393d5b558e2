//! The readiness backend: one edge-triggered epoll instance per generator
//! thread, for where io_uring is unavailable (a container's seccomp profile
//! answers its syscalls with EPERM, `kernel.io_uring_disabled` is set, the
//! kernel is too old) or was not wanted (`--io epoll`).
//!
//! The state machine, the dispatch and the bookkeeping are the worker's;
//! this only moves bytes, as wrk does. Sockets are non-blocking and each is
//! registered once, for input and output, edge-triggered, after its connect
//! started; a connect completes on the output edge, with `SO_ERROR` telling
//! success from failure. An input edge reads until the kernel says "would
//! block" (or a read comes back short) into one buffer per thread, from
//! which the exchange parses responses as the ring's provided buffers are
//! parsed (it keeps the unfinished tail per connection). A connection's
//! requests are written at the end of the turn with `send(MSG_NOSIGNAL)`;
//! what does not fit in the socket is written on its next output edge.
//!
//! Unlike the ring, the kernel never holds our memory or an operation here:
//! a syscall completes during the call or leaves nothing behind, so a
//! closing connection closes its socket at once (which also takes it out
//! of the epoll set), and nothing needs to be given back at the end.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use super::{tcp_socket, Got, Io, State, Worker};

/// One read's worth: plenty for many pipelined responses at once.
const READ_BUFFER_SIZE: usize = 64 * 1024;

pub(super) struct Epoll {
    epfd: OwnedFd,
    /// What the last wait reported (capacity: one per connection, as edge
    /// triggering reports a socket at most once per wait).
    events: Vec<libc::epoll_event>,
    /// Connections whose requests are to be written at the end of the turn.
    queued: Vec<usize>,
    buf: Box<[u8]>,
    /// `epoll_pwait2` is there (Linux 5.11+, and allowed): waits to the
    /// microsecond, as the ring's do. Without it, `epoll_wait` waits whole
    /// milliseconds, rounded up, so open-loop sends may leave up to a
    /// millisecond late (which the corrected latency shows).
    fine_timeout: bool,
}

/// How a write of a connection's requests ended.
enum Wrote {
    All,
    /// The socket is full: the rest goes on its next output edge.
    Blocked,
    Failed,
}

impl Epoll {
    pub(super) fn new(connections: usize) -> io::Result<Epoll> {
        // SAFETY: epoll_create1 has no memory-safety preconditions.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create epoll: {e}"),
            ));
        }
        Ok(Epoll {
            // SAFETY: `fd` was just created and nobody else owns it.
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: Vec::with_capacity(connections.clamp(16, 4096)),
            queued: Vec::with_capacity(connections),
            buf: vec![0; READ_BUFFER_SIZE].into_boxed_slice(),
            fine_timeout: true,
        })
    }

    /// Registers connection `i`'s socket for both directions, edge
    /// triggered. It is never duplicated, so closing it unregisters it.
    fn register(&self, fd: RawFd, i: usize) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: i as u64,
        };
        // SAFETY: `ev` is a live epoll_event for the call to read.
        if unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` for edges, into `events`.
    fn wait_for(&mut self, timeout: Duration) -> io::Result<()> {
        self.events.clear();
        let max = self.events.capacity().min(i32::MAX as usize) as i32;
        let mut n = -1;
        if self.fine_timeout {
            let ts = libc::timespec {
                tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: timeout.subsec_nanos() as libc::c_long,
            };
            // Through syscall(2), not libc's wrapper: the wrapper needs
            // glibc 2.35 to link, the syscall only a kernel that has it.
            // SAFETY: the kernel writes at most `max` events into the
            // vector's spare capacity and reads `ts`, both live for the
            // call; no signal mask is passed.
            n = unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    self.epfd.as_raw_fd(),
                    self.events.as_mut_ptr(),
                    max,
                    &ts as *const libc::timespec,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            } as i32;
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    // Not in this kernel, or not allowed by a seccomp
                    // filter: coarse waits from now on.
                    Some(libc::ENOSYS) | Some(libc::EPERM) => self.fine_timeout = false,
                    Some(libc::EINTR) => return Ok(()),
                    _ => return Err(e),
                }
            }
        }
        if !self.fine_timeout {
            // Rounded up: waking before the deadline would only spin.
            let ms = i32::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
            // SAFETY: the kernel writes at most `max` events into the
            // vector's spare capacity, live for the call.
            n = unsafe {
                libc::epoll_wait(self.epfd.as_raw_fd(), self.events.as_mut_ptr(), max, ms)
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EINTR) => Ok(()),
                    _ => Err(e),
                };
            }
        }
        // SAFETY: the wait initialised the first `n` entries (n <= max,
        // which is within the capacity).
        unsafe { self.events.set_len(n as usize) };
        Ok(())
    }

    fn on_event(w: &mut Worker<Epoll>, i: usize, bits: u32, now: Instant) {
        let bits = bits as i32;
        let hangup = libc::EPOLLERR | libc::EPOLLHUP;
        if let State::Connecting(_) = w.conns[i].state {
            if bits & (libc::EPOLLOUT | hangup) == 0 {
                return;
            }
            let socket = w.conns[i].socket.as_ref().expect("a connecting socket");
            // A refused connect reports its output edge too, with the cause
            // in SO_ERROR.
            let ok = bits & libc::EPOLLOUT != 0 && matches!(socket.take_error(), Ok(None));
            w.connected(i, ok, now);
        }
        if w.conns[i].state != State::Open {
            // An edge of a socket closed earlier in this turn, or a failed connect.
            return;
        }
        if bits & (libc::EPOLLIN | libc::EPOLLRDHUP | hangup) != 0 {
            Epoll::receive(w, i, bits & (libc::EPOLLRDHUP | hangup) != 0, now);
            if w.conns[i].state != State::Open {
                return;
            }
        }
        if bits & (libc::EPOLLOUT | hangup) != 0 && w.conns[i].sending {
            Epoll::write(w, i, now);
        }
    }

    /// Reads what connection `i` has received, until the kernel has no
    /// more. `to_end`: the edge reported the end of the stream, which a
    /// short read does not reach.
    fn receive(w: &mut Worker<Epoll>, i: usize, to_end: bool, now: Instant) {
        let c = &mut w.conns[i];
        let Some(mut socket) = c.socket.as_ref() else {
            return;
        };
        let buf = &mut w.io.buf;
        let got = loop {
            match socket.read(buf) {
                Ok(0) => break Got::Eof,
                Ok(n) => {
                    if c.ex.feed(&buf[..n], now, w.book.at(now)).is_err() {
                        break Got::Broken;
                    }
                    // A short read emptied the socket; bytes that come
                    // later bring an edge of their own.
                    if n < buf.len() && !to_end {
                        break Got::Data;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Got::Data,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break Got::Failed,
            }
        };
        w.got(i, got, now);
    }

    /// Writes connection `i`'s requests from where the last write stopped.
    fn write(w: &mut Worker<Epoll>, i: usize, now: Instant) {
        let c = &mut w.conns[i];
        let Some(socket) = c.socket.as_ref() else {
            return;
        };
        let wrote = loop {
            if c.written >= c.out.len() {
                break Wrote::All;
            }
            // MSG_NOSIGNAL: a server that closed gives EPIPE, not SIGPIPE.
            match socket.send_with_flags(&c.out[c.written..], libc::MSG_NOSIGNAL) {
                Ok(0) => break Wrote::Failed,
                Ok(n) => c.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Wrote::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break Wrote::Failed,
            }
        };
        match wrote {
            Wrote::All => w.sent(i, now),
            Wrote::Blocked => {}
            Wrote::Failed => w.send_failed(i, now),
        }
    }
}

impl Io for Epoll {
    fn socket(&mut self, _: usize, domain: Domain) -> io::Result<Socket> {
        tcp_socket(domain, Type::STREAM.nonblocking())
    }

    fn start_connect(w: &mut Worker<Epoll>, i: usize, now: Instant) {
        let socket = w.conns[i].socket.as_ref().expect("a new socket");
        let started = match socket.connect(&w.addr) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
            Err(e) => Err(e),
        };
        // Registered once the connect started: epoll then reports the
        // connect's end, not the hang-up of a socket not yet connecting.
        match started.and_then(|done| w.io.register(socket.as_raw_fd(), i).map(|()| done)) {
            Ok(true) => w.connected(i, true, now),
            Ok(false) => {}
            Err(_) => w.connected(i, false, now),
        }
    }

    /// Nothing to arm: input edges come as bytes arrive.
    fn opened(_: &mut Worker<Epoll>, _: usize) {}

    fn send(w: &mut Worker<Epoll>, i: usize) {
        w.conns[i].sending = true;
        w.io.queued.push(i);
    }

    /// Nothing is in flight with the kernel.
    fn cancel(_: &mut Worker<Epoll>, _: usize) {}

    /// Closing the socket takes it out of the epoll set.
    fn detach(&mut self, _: usize) {}

    fn reap(w: &mut Worker<Epoll>, now: Instant) {
        let mut events = std::mem::take(&mut w.io.events);
        for ev in &events {
            // Copied out: the struct is packed on some targets.
            let (i, bits) = (ev.u64 as usize, ev.events);
            Epoll::on_event(w, i, bits, now);
        }
        events.clear();
        w.io.events = events;
    }

    /// Writes the turn's requests. A connection whose requests all went out
    /// may take more at once (its next requests are queued behind).
    fn flush(w: &mut Worker<Epoll>, now: Instant) {
        let mut k = 0;
        while k < w.io.queued.len() {
            let i = w.io.queued[k];
            k += 1;
            let c = &w.conns[i];
            if c.state == State::Open && c.sending {
                Epoll::write(w, i, now);
            }
        }
        w.io.queued.clear();
    }

    fn wait(w: &mut Worker<Epoll>, _: Instant, deadline: Instant, _: usize) -> io::Result<()> {
        // From the clock now, not the turn's: the writes may have taken a
        // while, and the deadline is a time to be awake at.
        w.io.wait_for(deadline.saturating_duration_since(Instant::now()))
    }

    fn finish(_: &mut Worker<Epoll>, _: bool) {}
}
