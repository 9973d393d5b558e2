//! Socket operations on readiness: try the syscall, and wait for the next
//! edge only when the kernel says it would block.
//!
//! A short read or write also marks the direction not ready: a stream
//! socket that returned less than was asked for is drained (or full) at
//! that moment, and more data (or space) is a new edge. That saves the
//! syscall that would only have answered EAGAIN: the common keep-alive
//! turn is one `recv` and one `send`.

use std::future::poll_fn;
use std::io;
use std::os::fd::RawFd;

use socket2::{SockAddr, Socket};

use super::Dir;
use crate::rt::executor::with_core;

/// A registered socket: its fd and its key in the worker's poller.
#[derive(Clone, Copy)]
pub(crate) struct Io {
    pub(crate) fd: RawFd,
    pub(crate) key: usize,
}

impl Io {
    async fn ready(self, dir: Dir) {
        poll_fn(|cx| with_core(|core| poller_of(core).borrow_mut().poll_ready(self.key, dir, cx)))
            .await
    }

    fn clear(self, dir: Dir) {
        with_core(|core| poller_of(core).borrow_mut().clear(self.key, dir));
    }

    /// Runs `syscall` (returning a byte count, an fd, or -1 with errno)
    /// until it does not would-block.
    async fn retry(self, dir: Dir, mut syscall: impl FnMut() -> isize) -> io::Result<usize> {
        loop {
            self.ready(dir).await;
            let r = syscall();
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => self.clear(dir),
                Some(libc::EINTR) => {}
                _ => return Err(e),
            }
        }
    }

    /// Accepts one connection (non-blocking, close-on-exec).
    pub(crate) async fn accept(self) -> io::Result<RawFd> {
        let fd = self.fd;
        self.retry(Dir::Read, || {
            // SAFETY: no address is asked for, so no pointers are passed.
            unsafe {
                libc::accept4(
                    fd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                ) as isize
            }
        })
        .await
        .map(|fd| fd as RawFd)
    }

    /// Receives into `buf`'s spare capacity, extending its length.
    pub(crate) async fn recv(self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let (fd, len) = (self.fd, buf.len());
        let spare = buf.capacity() - len;
        // SAFETY: `len <= capacity`, so the pointer stays inside the allocation.
        let ptr = unsafe { buf.as_mut_ptr().add(len) };
        let n = self
            .retry(Dir::Read, || {
                // SAFETY: `ptr` addresses `spare` writable bytes of `buf`,
                // which nothing else touches during the call.
                unsafe { libc::recv(fd, ptr.cast(), spare, libc::MSG_DONTWAIT) }
            })
            .await?;
        // SAFETY: the kernel initialised `n` bytes after `len`.
        unsafe { buf.set_len(len + n) };
        if n > 0 && n < spare {
            self.clear(Dir::Read);
        }
        Ok(n)
    }

    /// Sends `buf` once; returns the bytes sent.
    pub(crate) async fn send(self, buf: &[u8]) -> io::Result<usize> {
        let fd = self.fd;
        let n = self
            .retry(Dir::Write, || {
                // SAFETY: `buf` is live and readable for its length.
                unsafe {
                    libc::send(
                        fd,
                        buf.as_ptr().cast(),
                        buf.len(),
                        libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                    )
                }
            })
            .await?;
        if n < buf.len() {
            self.clear(Dir::Write);
        }
        Ok(n)
    }
}

fn poller_of(core: &crate::rt::executor::Core) -> &std::cell::RefCell<super::Poller> {
    core.poller()
        .expect("tidepool: readiness operation on an io_uring worker")
}

/// Starts a non-blocking connect. `Ok(true)`: connected at once;
/// `Ok(false)`: in progress, finished by [`finish_connect`] once the socket
/// is registered and writable.
pub(crate) fn start_connect(socket: &Socket, addr: &SockAddr) -> io::Result<bool> {
    socket.set_nonblocking(true)?;
    match socket.connect(addr) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
        // A unix socket whose listener's backlog is full: a readiness
        // connect cannot wait for that, so report it like a refusal.
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("the server's listen backlog is full ({e})"),
        )),
        Err(e) => Err(e),
    }
}

/// Waits until an in-progress connect on `io` has finished; its result.
/// The caller keeps `io`'s fd open throughout.
pub(crate) async fn finish_connect(io: Io) -> io::Result<()> {
    // SAFETY: the caller holds the fd open for this call's duration.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(io.fd) };
    let socket = socket2::SockRef::from(&fd);
    // Registered after `connect` started, the socket's first write edge
    // is the connect's outcome.
    io.clear(Dir::Write);
    loop {
        io.ready(Dir::Write).await;
        if let Some(e) = socket.take_error()? {
            return Err(e);
        }
        match socket.peer_addr() {
            Ok(_) => return Ok(()),
            // Not connected yet (a spurious edge): wait for the next.
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => io.clear(Dir::Write),
            Err(e) => return Err(e),
        }
    }
}
