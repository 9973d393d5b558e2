//! The floor of the readiness backend: a bare edge-triggered epoll
//! responder doing what `floor_uring` does (count request ends, answer
//! each with a canned response, all of a read's responses in one send), so
//! the epoll backend's cost can be read against what any epoll server must
//! pay: one `recv` and one `send` per exchange and a share of one
//! `epoll_wait` per turn. Reads stop at a short read (the socket is
//! drained), as the engine's backend does.
//!
//! usage: floor_epoll ADDR:PORT

use std::net::TcpListener;
use std::os::fd::AsRawFd;

use slab::Slab;
use tidepool_benches::{count_ends, set_nodelay, FLOOR_RESPONSE as RESPONSE};

const BUF: usize = 16 * 1024;
const LISTENER: u64 = u64::MAX;

struct Conn {
    fd: i32,
    matched: usize,
}

fn add(epfd: i32, fd: i32, data: u64, events: i32) {
    let mut ev = libc::epoll_event {
        events: events as u32,
        u64: data,
    };
    // SAFETY: `ev` is live for the call.
    let r = unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    assert_eq!(r, 0, "epoll_ctl: {}", std::io::Error::last_os_error());
}

/// Reads what arrived and answers it; false when the connection ended.
fn serve(c: &mut Conn, rbuf: &mut [u8], wbuf: &mut Vec<u8>) -> bool {
    loop {
        // SAFETY: `rbuf` is live and writable for its length.
        let n = unsafe { libc::recv(c.fd, rbuf.as_mut_ptr().cast(), rbuf.len(), 0) };
        if n < 0 {
            return std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN);
        }
        if n == 0 {
            return false;
        }
        let ends = count_ends(&rbuf[..n as usize], &mut c.matched);
        if ends > 0 {
            wbuf.clear();
            for _ in 0..ends {
                wbuf.extend_from_slice(RESPONSE);
            }
            // SAFETY: `wbuf` is live and readable for its length.
            let sent =
                unsafe { libc::send(c.fd, wbuf.as_ptr().cast(), wbuf.len(), libc::MSG_NOSIGNAL) };
            if sent != wbuf.len() as isize {
                // A short send never happens for these sizes; treat it as an end.
                return false;
            }
        }
        if (n as usize) < rbuf.len() {
            return true;
        }
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8083".into());
    let listener = TcpListener::bind(&addr).expect("bind");
    listener.set_nonblocking(true).expect("non-blocking");
    eprintln!("floor_epoll: listening on {addr}");
    // SAFETY: no preconditions.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(epfd >= 0, "epoll_create1");
    let lfd = listener.as_raw_fd();
    add(epfd, lfd, LISTENER, libc::EPOLLIN | libc::EPOLLET);
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut rbuf = vec![0u8; BUF];
    let mut wbuf = Vec::with_capacity(64 * 1024);
    loop {
        // SAFETY: the kernel writes at most `events.len()` entries.
        let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            continue;
        }
        for ev in &events[..n as usize] {
            if ev.u64 == LISTENER {
                loop {
                    // SAFETY: no address is asked for.
                    let fd = unsafe {
                        libc::accept4(
                            lfd,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        )
                    };
                    if fd < 0 {
                        break;
                    }
                    set_nodelay(fd);
                    let key = conns.insert(Conn { fd, matched: 0 });
                    add(
                        epfd,
                        fd,
                        key as u64,
                        libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET,
                    );
                }
                continue;
            }
            let key = ev.u64 as usize;
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            if !serve(c, &mut rbuf, &mut wbuf) {
                // SAFETY: our fd; closing it also leaves the epoll set.
                unsafe { libc::close(c.fd) };
                conns.remove(key);
            }
        }
    }
}
