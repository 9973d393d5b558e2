//! The readiness backend: one edge-triggered epoll instance per worker, for
//! where io_uring is forbidden (container seccomp profiles, the
//! `kernel.io_uring_disabled` sysctl) or missing.
//!
//! Each socket is registered once, for input and output, edge-triggered.
//! The poller keeps, per registration, whether each direction may make
//! progress and which tasks wait for it. An operation tries its syscall
//! first and waits only after the kernel said "would block"; an edge
//! (new data, freed send space) sets the direction ready again and wakes
//! the waiters. One `epoll_wait` per loop turn gathers every edge.
//!
//! Unlike the ring, the kernel never owns memory here: a syscall either
//! completes during the call or leaves nothing behind, so dropping a future
//! at any point is free.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use slab::Slab;

pub(crate) mod ops;

/// One direction of a registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    Read,
    Write,
}

/// Edges gathered per `epoll_wait`; more stay queued in the kernel for the
/// next turn.
const EVENTS: usize = 1024;

#[derive(Default)]
struct Half {
    /// Whether the last attempt may not have drained the socket (set by an
    /// edge, cleared when the kernel answers "would block").
    ready: bool,
    /// Tasks waiting for the next edge. Usually one; a Vec so that two
    /// tasks waiting on one direction cannot steal each other's wake-up.
    waiters: Vec<Waker>,
}

#[derive(Default)]
struct Registration {
    read: Half,
    write: Half,
}

impl Registration {
    fn half(&mut self, dir: Dir) -> &mut Half {
        match dir {
            Dir::Read => &mut self.read,
            Dir::Write => &mut self.write,
        }
    }
}

pub(crate) struct Poller {
    epfd: OwnedFd,
    regs: Slab<Registration>,
    events: Vec<libc::epoll_event>,
    /// Wakers collected by `wait`, woken by the caller after the poller's
    /// borrow ends (a woken task's drop may deregister a socket).
    woken: Vec<Waker>,
    /// `epoll_pwait2` is there (Linux 5.11+) and allowed: timers fire to
    /// the microsecond, as on the ring. Without it `epoll_wait` waits
    /// whole milliseconds, rounded up.
    fine_timeout: bool,
}

impl Poller {
    pub(crate) fn new() -> io::Result<Poller> {
        // SAFETY: epoll_create1 has no memory-safety preconditions.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poller {
            // SAFETY: `fd` was just created and nobody else owns it.
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
            regs: Slab::with_capacity(64),
            events: Vec::with_capacity(EVENTS),
            woken: Vec::new(),
            fine_timeout: true,
        })
    }

    /// Registers `fd` (already non-blocking) for both directions, edge
    /// triggered. Both start ready: the first attempt finds out for itself,
    /// which saves a loop turn on a socket that already has data.
    pub(crate) fn register(&mut self, fd: RawFd) -> io::Result<usize> {
        let entry = self.regs.vacant_entry();
        let key = entry.key();
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: key as u64,
        };
        // SAFETY: `ev` is a live epoll_event for the call to read.
        if unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        entry.insert(Registration {
            read: Half {
                ready: true,
                waiters: Vec::new(),
            },
            write: Half {
                ready: true,
                waiters: Vec::new(),
            },
        });
        Ok(key)
    }

    /// Forgets registration `key`; the caller closes its fd right after,
    /// which removes it from the epoll set (no `EPOLL_CTL_DEL` needed: the
    /// fd is never duplicated).
    pub(crate) fn deregister(&mut self, key: usize) {
        self.regs.try_remove(key);
    }

    /// Ready if direction `dir` of `key` may make progress; otherwise
    /// records the task to wake at the next edge.
    pub(crate) fn poll_ready(&mut self, key: usize, dir: Dir, cx: &Context<'_>) -> Poll<()> {
        let Some(reg) = self.regs.get_mut(key) else {
            // Deregistered: let the caller's syscall report the error.
            return Poll::Ready(());
        };
        let half = reg.half(dir);
        if half.ready {
            return Poll::Ready(());
        }
        if !half.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            half.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Whether direction `dir` of `key` may make progress (no waiter recorded).
    pub(crate) fn is_ready(&self, key: usize, dir: Dir) -> bool {
        self.regs.get(key).is_some_and(|r| match dir {
            Dir::Read => r.read.ready,
            Dir::Write => r.write.ready,
        })
    }

    /// The kernel answered "would block" in direction `dir`: wait for the
    /// next edge before trying again.
    pub(crate) fn clear(&mut self, key: usize, dir: Dir) {
        if let Some(reg) = self.regs.get_mut(key) {
            reg.half(dir).ready = false;
        }
    }

    /// Registered sockets (diagnostics and tests).
    pub(crate) fn registered(&self) -> usize {
        self.regs.len()
    }

    /// Waits for edges (at most `timeout`; `None` waits indefinitely) and
    /// marks their directions ready. Returns the wakers to wake, which the
    /// caller wakes once this poller is no longer borrowed, then hands the
    /// emptied vector back with [`Poller::recycle`].
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Vec<Waker>> {
        self.events.clear();
        let n = match timeout {
            Some(t) if self.fine_timeout => {
                let ts = libc::timespec {
                    tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
                    tv_nsec: t.subsec_nanos() as libc::c_long,
                };
                // Through syscall(2), not libc's wrapper: the wrapper needs
                // glibc 2.35 to link, the syscall only a kernel that has it.
                // SAFETY: the kernel writes at most `capacity` events into
                // the vector's spare capacity and reads `ts`, both live for
                // the call; no signal mask is passed.
                let n = unsafe {
                    libc::syscall(
                        libc::SYS_epoll_pwait2,
                        self.epfd.as_raw_fd(),
                        self.events.as_mut_ptr(),
                        self.events.capacity() as libc::c_int,
                        &ts as *const libc::timespec,
                        std::ptr::null::<libc::sigset_t>(),
                        0usize,
                    )
                } as i32;
                let missing = n < 0
                    && matches!(
                        io::Error::last_os_error().raw_os_error(),
                        Some(libc::ENOSYS) | Some(libc::EPERM)
                    );
                if missing {
                    // Not in this kernel, or refused by a seccomp filter:
                    // millisecond waits from now on.
                    self.fine_timeout = false;
                    self.wait_ms(timeout)
                } else {
                    n
                }
            }
            _ => self.wait_ms(timeout),
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(std::mem::take(&mut self.woken));
            }
            return Err(e);
        }
        // SAFETY: epoll_wait initialised the first `n` entries.
        unsafe { self.events.set_len(n as usize) };
        let mut woken = std::mem::take(&mut self.woken);
        for ev in &self.events {
            let Some(reg) = self.regs.get_mut(ev.u64 as usize) else {
                continue;
            };
            let bits = ev.events as i32;
            // Errors and hang-ups make both directions "ready": the next
            // syscall reports them.
            let fail = libc::EPOLLERR | libc::EPOLLHUP;
            if bits & (libc::EPOLLIN | libc::EPOLLRDHUP | fail) != 0 {
                reg.read.ready = true;
                woken.append(&mut reg.read.waiters);
            }
            if bits & (libc::EPOLLOUT | fail) != 0 {
                reg.write.ready = true;
                woken.append(&mut reg.write.waiters);
            }
        }
        Ok(woken)
    }

    /// `epoll_wait`, its timeout in whole milliseconds; returns its result.
    fn wait_ms(&mut self, timeout: Option<Duration>) -> i32 {
        let ms = match timeout {
            None => -1,
            // Rounded up: waking before the deadline would only spin.
            Some(t) => i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX),
        };
        // SAFETY: the kernel writes at most `capacity` events into the
        // vector's spare capacity, live for the call.
        unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.capacity() as i32,
                ms,
            )
        }
    }

    /// Takes back the (emptied) vector `wait` returned, keeping its allocation.
    pub(crate) fn recycle(&mut self, mut woken: Vec<Waker>) {
        woken.clear();
        self.woken = woken;
    }
}

/// Sets `O_NONBLOCK` on `fd`: readiness I/O must never block the worker.
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd the caller owns, no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn pair() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two fds socketpair writes.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0);
        // SAFETY: both fds were just created and are owned here only.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[test]
    fn an_edge_wakes_the_waiter_and_marks_the_direction_ready() {
        let mut p = Poller::new().unwrap();
        let (a, b) = pair();
        let key = p.register(a.as_raw_fd()).unwrap();
        // Optimistically ready at first, so no wait is recorded.
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let cx = Context::from_waker(&waker);
        assert!(p.poll_ready(key, Dir::Read, &cx).is_ready());
        // The kernel said "would block": now the task waits.
        p.clear(key, Dir::Read);
        assert!(p.poll_ready(key, Dir::Read, &cx).is_pending());
        // Waiting twice with the same waker records it once.
        assert!(p.poll_ready(key, Dir::Read, &cx).is_pending());
        // Drain the registration's initial edge (the socket is writable).
        let w = p.wait(Some(Duration::ZERO)).unwrap();
        assert!(w.is_empty(), "no reader was woken by a write edge");
        p.recycle(w);
        // SAFETY: writes one byte from a live buffer to our own socket.
        assert_eq!(
            unsafe { libc::write(b.as_raw_fd(), b"x".as_ptr().cast(), 1) },
            1
        );
        let w = p.wait(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(w.len(), 1);
        w.into_iter().for_each(Waker::wake);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(p.poll_ready(key, Dir::Read, &cx).is_ready());
    }

    #[test]
    fn a_deregistered_key_reads_as_ready_and_its_edges_are_ignored() {
        let mut p = Poller::new().unwrap();
        let (a, b) = pair();
        let key = p.register(a.as_raw_fd()).unwrap();
        p.deregister(key);
        let waker = Waker::noop();
        let cx = Context::from_waker(waker);
        assert!(p.poll_ready(key, Dir::Write, &cx).is_ready());
        drop(a);
        drop(b);
        let w = p.wait(Some(Duration::ZERO)).unwrap();
        assert!(w.is_empty());
        assert_eq!(p.registered(), 0);
    }

    /// Timed waits go through `epoll_pwait2` (this kernel has it, so
    /// nothing falls back to whole milliseconds) and last their timeout.
    #[test]
    fn timed_waits_are_to_the_microsecond() {
        let mut p = Poller::new().unwrap();
        let start = std::time::Instant::now();
        for _ in 0..5 {
            let w = p.wait(Some(Duration::from_micros(200))).unwrap();
            assert!(w.is_empty());
            p.recycle(w);
        }
        assert!(
            start.elapsed() >= Duration::from_micros(1000),
            "waited the timeout"
        );
        assert!(p.fine_timeout, "epoll_pwait2 refused or missing");
    }
}
