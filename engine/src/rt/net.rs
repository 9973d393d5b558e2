//! Sockets over the worker's backend: ring operations on io_uring,
//! readiness-driven syscalls on epoll (`epoll::ops`).
//!
//! Each socket's fd lives in an `Rc<Fd>`; every ring operation in flight
//! holds a clone, so the fd is closed only after the last completion on it
//! arrived, never while the kernel may still act on that fd number. On
//! epoll the `Fd` also holds the socket's registration.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;

use io_uring::{opcode, types};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::epoll::ops::{self as readiness, Io};
use super::epoll::set_nonblocking;
use super::executor::{try_with_core, with_core};
use super::uring::multishot::Received;
use super::uring::op::Op;

/// io_uring recv/send flag (5.19+): arm the poll before trying the I/O.
const IORING_RECVSEND_POLL_FIRST: u16 = 1;

/// An owned fd, closed through the ring when the last handle goes (on
/// epoll: deregistered and closed).
pub(crate) struct Fd {
    raw: RawFd,
    /// The epoll registration; `None` on io_uring.
    reg: Option<usize>,
}

impl Fd {
    pub(crate) fn raw(&self) -> RawFd {
        self.raw
    }

    /// Takes ownership of `raw` on the current worker: on epoll it is made
    /// non-blocking and registered.
    fn adopt(raw: RawFd) -> io::Result<Rc<Fd>> {
        Self::adopt_as(raw, false)
    }

    /// Like `adopt`, for an fd already non-blocking (`accept4` with
    /// `SOCK_NONBLOCK`, a started connect): saves two `fcntl` calls.
    fn adopt_as(raw: RawFd, nonblocking: bool) -> io::Result<Rc<Fd>> {
        let reg = with_core(|core| match core.poller() {
            None => Ok(None),
            Some(p) => {
                let set = if nonblocking {
                    Ok(())
                } else {
                    set_nonblocking(raw)
                };
                set.and_then(|()| p.borrow_mut().register(raw)).map(Some)
            }
        });
        match reg {
            Ok(reg) => Ok(Rc::new(Fd { raw, reg })),
            Err(e) => {
                // SAFETY: `raw` was handed to us and nothing else refers to it.
                unsafe { libc::close(raw) };
                Err(e)
            }
        }
    }

    /// The readiness handle, on an epoll worker.
    fn io(&self) -> Option<Io> {
        self.reg.map(|key| Io { fd: self.raw, key })
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        let fd = self.raw;
        if let Some(key) = self.reg {
            // No syscall is in flight on readiness: forget the
            // registration, then close (which leaves the epoll set).
            try_with_core(|core| {
                if let Some(p) = core.poller() {
                    if let Ok(mut p) = p.try_borrow_mut() {
                        p.deregister(key);
                    }
                }
            });
            // SAFETY: we own `fd`; nothing else refers to it.
            unsafe { libc::close(fd) };
            return;
        }
        // Closing through the ring batches the close with other submissions.
        // When the last handle goes while the driver itself is busy (an
        // orphaned op's final completion being reaped), no SQE can still
        // name this fd, so a direct close is safe.
        let queued = try_with_core(|core| match core.uring().map(|d| d.try_borrow_mut()) {
            Some(Ok(mut d)) => {
                d.close_fd(fd);
                true
            }
            _ => false,
        });
        if queued != Some(true) {
            // SAFETY: we own `fd`, and no queued or in-flight op refers to it
            // (each would hold a handle to this Fd).
            unsafe { libc::close(fd) };
        }
    }
}

fn sock_fd(socket: Socket) -> io::Result<Rc<Fd>> {
    Fd::adopt(socket.into_raw_fd())
}

/// A listening TCP socket (SO_REUSEPORT, so every worker can own one on the same port).
pub struct TcpListener {
    fd: Rc<Fd>,
    local: SocketAddr,
    multishot: Option<usize>,
    multishot_supported: bool,
}

impl TcpListener {
    /// Binds with SO_REUSEADDR and SO_REUSEPORT and starts listening.
    pub fn bind(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
        Self::from_socket(Self::bind_socket(addr, backlog)?)
    }

    /// Takes over a listening socket made elsewhere (for example bound on
    /// the main thread so that port 0 resolves once for every worker).
    pub fn from_socket(socket: Socket) -> io::Result<TcpListener> {
        let local = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("listener has no inet address"))?;
        Ok(TcpListener {
            fd: sock_fd(socket)?,
            local,
            multishot: None,
            multishot_supported: true,
        })
    }

    /// A listening socket with SO_REUSEPORT set, not yet owned by a worker.
    pub fn bind_socket(addr: SocketAddr, backlog: i32) -> io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_cloexec(true)?;
        socket.bind(&addr.into())?;
        socket.listen(backlog)?;
        Ok(socket)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Accepts one connection. The first call arms a multishot accept (one
    /// SQE for many connections); later calls take its queued completions.
    pub async fn accept(&mut self) -> io::Result<TcpStream> {
        if let Some(io) = self.fd.io() {
            let fd = io.accept().await?;
            return Ok(TcpStream::from_fd(Fd::adopt_as(fd, true)?));
        }
        loop {
            if !self.multishot_supported {
                let sqe = opcode::Accept::new(
                    types::Fd(self.fd.raw()),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
                .flags(libc::SOCK_CLOEXEC)
                .build();
                // SAFETY: the SQE points at no memory (no address wanted);
                // the listener's fd stays open with the handle parked in it.
                let (c, _fd) = unsafe { Op::submit(sqe, self.fd.clone(), true) }.await;
                let fd = c.into_result()? as RawFd;
                return Ok(TcpStream::from_fd(Rc::new(Fd { raw: fd, reg: None })));
            }
            let key = match self.multishot {
                Some(k) => k,
                None => {
                    // The listener's fd outlives the accept: on drop, a
                    // handle to it is parked until the last completion.
                    let fd = self.fd.raw();
                    let k = with_core(|core| core.driver().borrow_mut().arm_accept(fd));
                    self.multishot = Some(k);
                    k
                }
            };
            let (res, ended) =
                poll_fn(|cx| with_core(|core| core.driver().borrow_mut().poll_multi(key, cx)))
                    .await;
            if ended {
                // The kernel ended the multishot (an error, or CQ overflow):
                // re-arm on the next call.
                with_core(|core| core.driver().borrow_mut().remove_multi(key));
                self.multishot = None;
            }
            match res {
                Some(res) if res >= 0 => {
                    return Ok(TcpStream::from_fd(Rc::new(Fd {
                        raw: res,
                        reg: None,
                    })));
                }
                Some(res) if -res == libc::EINVAL && ended => {
                    // Kernel without multishot accept (before 5.19).
                    self.multishot_supported = false;
                }
                Some(res) => {
                    let err = io::Error::from_raw_os_error(-res);
                    // Per-connection failures (the peer reset before we took
                    // it, fd exhaustion) must not end the accept loop.
                    return Err(err);
                }
                None => {}
            }
        }
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        if let Some(key) = self.multishot.take() {
            // Accepted fds nobody took are closed; the accept, if still
            // armed, keeps the listener's fd until its final completion.
            let fd = self.fd.clone();
            try_with_core(|core| core.driver().borrow_mut().release_multi(key, fd));
        }
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let Some(key) = self.multi.take() else {
            return;
        };
        // Unread completions give their buffers back; a receive still armed
        // is cancelled, its slot keeping the fd until the final completion.
        let fd = self.fd.clone();
        try_with_core(|core| core.driver().borrow_mut().release_multi(key, fd));
    }
}

/// A connected stream socket (TCP or unix) on the worker's ring.
pub struct TcpStream {
    fd: Rc<Fd>,
    /// The slot of the multishot receive, once [`TcpStream::recv`] armed it.
    multi: Cell<Option<usize>>,
    /// A one-shot receive [`TcpStream::recv`] started (no provided buffer
    /// to spare) whose future was dropped before it finished: it belongs
    /// to the stream, so the next `recv` takes the bytes it may have read.
    one_shot: RefCell<Option<ReadOp>>,
}

/// A one-shot ring receive and the buffer it reads into.
type ReadOp = Op<(Rc<Fd>, Vec<u8>)>;

/// How much a one-shot receive of `recv` reads at most.
const ONE_SHOT_RECV: usize = 16 * 1024;

/// Puts a one-shot receive back in its stream when the future waiting for
/// it is dropped, so its bytes are not lost with the future.
struct KeepInStream<'a> {
    slot: &'a RefCell<Option<ReadOp>>,
    op: Option<ReadOp>,
}

impl Drop for KeepInStream<'_> {
    fn drop(&mut self) {
        if let Some(op) = self.op.take() {
            *self.slot.borrow_mut() = Some(op);
        }
    }
}

/// A unix-domain stream socket; the same operations as [`TcpStream`].
pub type UnixStream = TcpStream;

impl TcpStream {
    fn from_fd(fd: Rc<Fd>) -> TcpStream {
        TcpStream {
            fd,
            multi: Cell::new(None),
            one_shot: RefCell::new(None),
        }
    }

    /// Connects over TCP (TCP_NODELAY set).
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_cloexec(true)?;
        socket.set_tcp_nodelay(true)?;
        Self::connect_socket(socket, SockAddr::from(addr)).await
    }

    /// Connects to a unix-domain socket path.
    pub async fn connect_unix(path: impl AsRef<Path>) -> io::Result<TcpStream> {
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.set_cloexec(true)?;
        Self::connect_socket(socket, SockAddr::unix(path)?).await
    }

    async fn connect_socket(socket: Socket, addr: SockAddr) -> io::Result<TcpStream> {
        if with_core(|core| core.poller().is_some()) {
            // Registered after the connect starts: see `finish_connect`.
            let done = readiness::start_connect(&socket, &addr)?;
            let fd = Fd::adopt_as(socket.into_raw_fd(), true)?;
            if !done {
                readiness::finish_connect(fd.io().expect("registered")).await?;
            }
            return Ok(TcpStream::from_fd(fd));
        }
        let fd = sock_fd(socket)?;
        let addr = Box::new(addr);
        let sqe =
            opcode::Connect::new(types::Fd(fd.raw()), addr.as_ptr().cast(), addr.len()).build();
        // SAFETY: the SQE points into `addr`'s box, parked with the op.
        let (c, (fd, _addr)) = unsafe { Op::submit(sqe, (fd, addr), false) }.await;
        c.into_result()?;
        Ok(TcpStream::from_fd(fd))
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        let v: libc::c_int = on.into();
        // SAFETY: passes a live c_int of the size given.
        let r = unsafe {
            libc::setsockopt(
                self.fd.raw(),
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Receives into `buf`'s spare capacity (`buf[len..capacity]`) and extends
    /// its length by the bytes read; 0 means the peer closed. The buffer is
    /// returned in every case. On io_uring, dropping the future before it
    /// finishes may lose bytes the kernel read meanwhile (they went into the
    /// buffer, which is freed with the operation); [`recv`](Self::recv)
    /// loses nothing.
    pub fn read(&self, buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)> {
        self.read_hinted(buf, false)
    }

    /// Like [`read`](Self::read); `expect_empty` says the socket most likely
    /// has no data yet (a response was just sent), so the kernel arms its
    /// poll at once instead of first trying a receive that would fail.
    pub fn read_hinted(
        &self,
        buf: Vec<u8>,
        expect_empty: bool,
    ) -> impl Future<Output = (io::Result<usize>, Vec<u8>)> {
        // Started now, not at the first poll: a ring read goes out with
        // this turn's other submissions.
        let started = self.start_read(buf, expect_empty);
        async move {
            match started {
                Started::Ring(op) => {
                    let (c, (_fd, mut buf)) = op.await;
                    match c.into_result() {
                        Ok(n) => {
                            let len = buf.len();
                            // SAFETY: the kernel initialised `n` bytes after
                            // `len` (the Vec's length is unchanged since the
                            // submission: nothing can reach it meanwhile).
                            unsafe { buf.set_len(len + n as usize) };
                            (Ok(n as usize), buf)
                        }
                        Err(e) => (Err(e), buf),
                    }
                }
                Started::Readiness(io, mut buf) => {
                    let res = io.recv(&mut buf).await;
                    (res, buf)
                }
            }
        }
    }

    fn start_read(&self, mut buf: Vec<u8>, expect_empty: bool) -> Started {
        if buf.capacity() == buf.len() {
            buf.reserve(4096);
        }
        let len = buf.len();
        if let Some(io) = self.fd.io() {
            // The hint is for the ring; readiness knows whether data waits.
            return Started::Readiness(io, buf);
        }
        let spare = buf.capacity() - len;
        // SAFETY: `len <= capacity`, so the pointer stays inside the allocation.
        let ptr = unsafe { buf.as_mut_ptr().add(len) };
        let ioprio = if expect_empty {
            IORING_RECVSEND_POLL_FIRST
        } else {
            0
        };
        let sqe = opcode::Recv::new(types::Fd(self.fd.raw()), ptr, spare as u32)
            .ioprio(ioprio)
            .build();
        // SAFETY: the SQE points into `buf`'s heap allocation, which moves
        // with the op (and is parked with it if the future is dropped); no
        // one else can reach `buf` until the op gives it back.
        Started::Ring(unsafe { Op::submit(sqe, (self.fd.clone(), buf), false) })
    }

    /// Receives whatever arrived, appending it to `buf`; 0 means the peer
    /// closed. The first call arms a multishot receive that stays armed:
    /// the kernel fills buffers from the worker's provided-buffer ring as
    /// data comes, and later calls copy from them with no submission at
    /// all. Once this was called, read the stream only through it (a
    /// one-shot read would race the armed receive for the bytes). Dropping
    /// the future loses nothing: unread data stays queued for the next
    /// call, and so does what a one-shot receive (used while no provided
    /// buffer is free, or on rings without them) read after the drop.
    pub async fn recv(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let mut buf = buf;
        if let Some(io) = self.fd.io() {
            // Room for what a ring receive would deliver at once.
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(4096);
            }
            let res = io.recv(&mut buf).await;
            return (res, buf);
        }
        if self.one_shot.borrow().is_some() {
            // Its bytes come before anything a new receive would get.
            let res = self.recv_one_shot(&mut buf, false).await;
            return (res, buf);
        }
        loop {
            let key = match self.multi.get() {
                Some(k) => k,
                None => {
                    // The fd outlives the receive: on drop, a handle to it
                    // is parked until the last completion.
                    let fd = self.fd.raw();
                    let armed = with_core(|core| core.driver().borrow_mut().arm_recv(fd));
                    match armed {
                        Some(k) => {
                            self.multi.set(Some(k));
                            k
                        }
                        None => {
                            let res = self.recv_one_shot(&mut buf, true).await;
                            return (res, buf);
                        }
                    }
                }
            };
            let step = poll_fn(|cx| {
                with_core(|core| core.driver().borrow_mut().poll_received(key, &mut buf, cx))
            })
            .await;
            match step {
                Received::Data(n) => return (Ok(n), buf),
                Received::Failed(e) => return (Err(e), buf),
                Received::Ended { no_buffers } => {
                    with_core(|core| core.driver().borrow_mut().remove_multi(key));
                    self.multi.set(None);
                    if no_buffers {
                        // Every provided buffer is taken: this read goes
                        // one-shot, the next re-arms.
                        let res = self.recv_one_shot(&mut buf, false).await;
                        return (res, buf);
                    }
                }
                Received::Unsupported => {
                    with_core(|core| core.driver().borrow_mut().recv_unsupported(key));
                    self.multi.set(None);
                }
            }
        }
    }

    /// One one-shot ring receive for `recv`, appended to `buf`: the one
    /// left by a dropped `recv` if any, else a new one. The receive reads
    /// into a buffer of its own, not `buf`, so that it can outlive this
    /// future and hand its bytes to the next call.
    async fn recv_one_shot(&self, buf: &mut Vec<u8>, expect_empty: bool) -> io::Result<usize> {
        let left = self.one_shot.borrow_mut().take();
        let op = match left {
            Some(op) => op,
            None => match self.start_read(Vec::with_capacity(ONE_SHOT_RECV), expect_empty) {
                Started::Ring(op) => op,
                Started::Readiness(..) => unreachable!("a ring stream reads on the ring"),
            },
        };
        let mut keep = KeepInStream {
            slot: &self.one_shot,
            op: Some(op),
        };
        let (c, (_fd, mut own)) =
            poll_fn(|cx| Pin::new(keep.op.as_mut().expect("polled until ready")).poll(cx)).await;
        // Finished: nothing is left to keep.
        keep.op = None;
        let n = c.into_result()?;
        // SAFETY: the kernel initialised `n` bytes at the start of `own`
        // (empty when submitted, untouched since).
        unsafe { own.set_len(n as usize) };
        buf.extend_from_slice(&own);
        Ok(n as usize)
    }

    /// Sends `buf[from..]` once; returns bytes sent.
    pub fn write_from(
        &self,
        buf: Vec<u8>,
        from: usize,
    ) -> impl Future<Output = (io::Result<usize>, Vec<u8>)> {
        self.start_write(buf, from).finish(from)
    }

    fn start_write(&self, buf: Vec<u8>, from: usize) -> Started {
        match self.fd.io() {
            Some(io) => Started::Readiness(io, buf),
            None => Started::Ring(self.submit_send(buf, from)),
        }
    }

    /// A ring send of `buf[from..]` (an io_uring worker's).
    #[inline(always)]
    fn submit_send(&self, buf: Vec<u8>, from: usize) -> Op<(Rc<Fd>, Vec<u8>)> {
        let from = from.min(buf.len());
        // SAFETY: `from <= len`.
        let ptr = unsafe { buf.as_ptr().add(from) };
        let sqe = opcode::Send::new(types::Fd(self.fd.raw()), ptr, (buf.len() - from) as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        // SAFETY: as for `read_hinted`: the SQE points into `buf`, which
        // travels with the op.
        unsafe { Op::submit(sqe, (self.fd.clone(), buf), false) }
    }

    /// Sends all of `buf`.
    pub fn write_all(&self, buf: Vec<u8>) -> impl Future<Output = (io::Result<()>, Vec<u8>)> + '_ {
        self.write_all_with(buf, None)
    }

    /// [`write_all`](Self::write_all) for a task that waits on something
    /// else at the same time (a connection sends responses while it waits
    /// for the next request): while `quiet` holds when this is polled, a
    /// send that goes out in full completes without waking the task, which
    /// finds it done when that other thing (or a timer) wakes it. That
    /// saves a wake-up and a poll per response. A short send or an error
    /// wakes the task as usual (the rest must be sent). Set `quiet` false
    /// and poll again before waiting on this send alone.
    pub fn write_all_quiet<'a>(
        &'a self,
        buf: Vec<u8>,
        quiet: &'a Cell<bool>,
    ) -> impl Future<Output = (io::Result<()>, Vec<u8>)> + 'a {
        // The sending future itself, not one wrapped around it.
        self.write_all_with(buf, Some(quiet))
    }

    async fn write_all_with(
        &self,
        buf: Vec<u8>,
        quiet: Option<&Cell<bool>>,
    ) -> (io::Result<()>, Vec<u8>) {
        let mut buf = buf;
        let mut sent = 0;
        if let Some(io) = self.fd.io() {
            while sent < buf.len() {
                match io.send(&buf[sent..]).await {
                    Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                    Ok(n) => sent += n,
                    Err(e) => return (Err(e), buf),
                }
            }
            return (Ok(()), buf);
        }
        while sent < buf.len() {
            // The operation is polled here, not through `Started::finish`:
            // no nested future to build and move per response.
            let full = i32::try_from(buf.len() - sent).ok();
            let mut op = self.submit_send(buf, sent);
            let (c, (_fd, b)) = poll_fn(|cx| {
                let q = full.filter(|_| quiet.is_some_and(Cell::get));
                op.poll_quiet(cx, q)
            })
            .await;
            buf = b;
            match c.into_result() {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                Ok(n) => sent += n as usize,
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Receives what has already arrived, without waiting and outside the
    /// ring (one `recv` with `MSG_DONTWAIT`): `Ok(0)` is the end of stream,
    /// `WouldBlock` means nothing is there. For a stream with no receive
    /// armed or in flight (a connection that sat idle between requests);
    /// with one, the two would race for the bytes.
    pub fn recv_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        debug_assert!(self.multi.get().is_none(), "a multishot receive is armed");
        // SAFETY: `buf` is live and writable for its whole length; the fd is
        // this stream's, open while `self` lives.
        let n = unsafe {
            libc::recv(
                self.fd.raw(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// What the socket already knows of the peer, without waiting and
    /// without taking anything (one `poll` with a zero timeout): `Some`
    /// once the peer shut its side (`UnexpectedEof`, seen even behind bytes
    /// not yet read, such as a server's last FATAL) or the connection
    /// failed (its error), `None` while it is open. Safe beside an armed or
    /// in-flight receive, which still gets every byte. For protocols whose
    /// peer never half-closes (a database): a connection that sat idle is
    /// found gone before a request is written to it.
    pub fn closed_now(&self) -> Option<io::Error> {
        let mut pfd = libc::pollfd {
            fd: self.fd.raw(),
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one live, writable pollfd and a count of one; a zero
        // timeout never sleeps. The fd is this stream's, open while `self`
        // lives.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        if n <= 0 {
            // Nothing to report, or poll itself failed: nothing known.
            return None;
        }
        if pfd.revents & libc::POLLERR != 0 {
            let e = socket2::SockRef::from(self).take_error().ok().flatten();
            return Some(e.unwrap_or_else(|| io::ErrorKind::ConnectionReset.into()));
        }
        if pfd.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0 {
            return Some(io::ErrorKind::UnexpectedEof.into());
        }
        None
    }

    /// Shuts down one or both directions.
    pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        let how = match how {
            std::net::Shutdown::Read => libc::SHUT_RD,
            std::net::Shutdown::Write => libc::SHUT_WR,
            std::net::Shutdown::Both => libc::SHUT_RDWR,
        };
        // SAFETY: plain syscall on an fd we own.
        if unsafe { libc::shutdown(self.fd.raw(), how) } < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        socket2::SockRef::from(self)
            .peer_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an inet socket"))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        socket2::SockRef::from(self)
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an inet socket"))
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.raw()
    }
}

impl std::os::fd::AsFd for TcpStream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the fd stays open for as long as `self` (and its Rc) lives.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd.raw()) }
    }
}

/// A read or write as started: submitted to the ring, or (readiness) to be
/// tried when first polled.
enum Started {
    Ring(Op<(Rc<Fd>, Vec<u8>)>),
    Readiness(Io, Vec<u8>),
}

impl Started {
    /// Waits for the send of `buf[from..]`.
    async fn finish(self, from: usize) -> (io::Result<usize>, Vec<u8>) {
        match self {
            Started::Ring(op) => {
                let (c, (_fd, buf)) = op.await;
                (c.into_result().map(|n| n as usize), buf)
            }
            Started::Readiness(io, buf) => {
                let res = io.send(&buf[from.min(buf.len())..]).await;
                (res, buf)
            }
        }
    }
}
