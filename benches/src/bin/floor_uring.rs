//! The floor reference for the plaintext comparisons: a bare io_uring
//! responder that does the least a server can do. One thread, one ring;
//! a multishot accept, a one-shot receive per connection, and for every
//! request end (`\r\n\r\n`) in what arrived, one canned response, all of a
//! read's responses in one send; one `submit_and_wait` per loop turn. It
//! parses nothing else, keeps no timers and checks no limits: whatever
//! Tidepool spends beyond it is the price of being a real server.
//!
//! With `--parse`, every request head also goes through Tidepool's parser
//! (`http::parse::parse_request`, the strict one): the floor plus the one
//! piece of work no conforming server can skip, to tell the price of
//! parsing HTTP from the price of the rest of the runtime.
//!
//! usage: floor_uring ADDR:PORT [--parse]

use std::net::TcpListener;
use std::os::fd::AsRawFd;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;
use tidepool_benches::{count_ends, set_nodelay, FLOOR_RESPONSE as RESPONSE};
use tidepool_engine::http::parse::{parse_request, Header, Limits, Parsed};

const ACCEPT: u64 = u64::MAX;
const BUF: usize = 16 * 1024;

struct Conn {
    fd: i32,
    rbuf: Box<[u8]>,
    wbuf: Vec<u8>,
    /// Bytes of a request end (`\r\n\r\n`) matched at the end of the last read.
    matched: usize,
    /// With `--parse`: an incomplete head left at the end of the last read.
    carry: Vec<u8>,
}

/// `--parse`: every complete head in `data` (after `carry`) through
/// Tidepool's parser, as a strict server must; returns how many parsed.
fn parse_heads(data: &[u8], carry: &mut Vec<u8>) -> usize {
    let joined;
    let buf = if carry.is_empty() {
        data
    } else {
        carry.extend_from_slice(data);
        joined = std::mem::take(carry);
        &joined[..]
    };
    let limits = Limits::default();
    let mut n = 0;
    let mut at = 0;
    loop {
        let mut headers = [Header::EMPTY; 16];
        match parse_request(&buf[at..], &mut headers, &limits) {
            Ok(Parsed::Complete(head)) => {
                n += 1;
                at += head.head_len;
            }
            Ok(Parsed::Partial) => break,
            Err(e) => panic!("floor_uring --parse: {e:?}"),
        }
    }
    carry.extend_from_slice(&buf[at..]);
    n
}

/// user_data: the connection's key, with the top bit set for sends.
const SEND: u64 = 1 << 62;

fn push(ring: &mut IoUring, sqe: &squeue::Entry) {
    loop {
        // SAFETY: every buffer an SQE points at lives in a `Conn` (boxed,
        // so it does not move) that is removed only after its last
        // completion, or is the listener that outlives the ring.
        if unsafe { ring.submission().push(sqe) }.is_ok() {
            return;
        }
        ring.submit().expect("submit");
    }
}

fn recv(ring: &mut IoUring, key: usize, c: &mut Conn) {
    let sqe = opcode::Recv::new(types::Fd(c.fd), c.rbuf.as_mut_ptr(), BUF as u32)
        .build()
        .user_data(key as u64);
    push(ring, &sqe);
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8082".into());
    let parse = std::env::args().nth(2).as_deref() == Some("--parse");
    let listener = TcpListener::bind(&addr).expect("bind");
    eprintln!("floor_uring: listening on {addr}");
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(4096)
        .build(1024)
        .expect("io_uring");
    let accept = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
        .build()
        .user_data(ACCEPT);
    push(&mut ring, &accept);
    let mut conns: Slab<Conn> = Slab::new();
    let mut done = Vec::with_capacity(1024);
    loop {
        // EINTR comes from profilers (callgrind_control, perf) signalling us.
        match ring.submit_and_wait(1) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.expect("submit_and_wait"),
        };
        done.clear();
        done.extend(
            ring.completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(data, res, flags) in &done {
            if data == ACCEPT {
                if res >= 0 {
                    set_nodelay(res);
                    let key = conns.insert(Conn {
                        fd: res,
                        rbuf: vec![0; BUF].into_boxed_slice(),
                        wbuf: Vec::with_capacity(4096),
                        matched: 0,
                        carry: Vec::new(),
                    });
                    recv(&mut ring, key, &mut conns[key]);
                }
                if !cqueue::more(flags) {
                    push(&mut ring, &accept);
                }
                continue;
            }
            let key = (data & !SEND) as usize;
            if data & SEND != 0 {
                let c = &mut conns[key];
                if res < 0 || res as usize != c.wbuf.len() {
                    // A short send never happens for these sizes; treat it as an end.
                    // SAFETY: our fd; its receive completed and its send just did.
                    unsafe { libc::close(c.fd) };
                    conns.remove(key);
                    continue;
                }
                c.wbuf.clear();
                recv(&mut ring, key, c);
                continue;
            }
            let c = &mut conns[key];
            if res <= 0 {
                // SAFETY: our fd; nothing is in flight on it (one op at a time).
                unsafe { libc::close(c.fd) };
                conns.remove(key);
                continue;
            }
            let n = if parse {
                parse_heads(&c.rbuf[..res as usize], &mut c.carry)
            } else {
                count_ends(&c.rbuf[..res as usize], &mut c.matched)
            };
            if n == 0 {
                recv(&mut ring, key, c);
                continue;
            }
            for _ in 0..n {
                c.wbuf.extend_from_slice(RESPONSE);
            }
            // The next receive is armed only after this send completed, so
            // `wbuf` stays put while the kernel reads it.
            let sqe = opcode::Send::new(types::Fd(c.fd), c.wbuf.as_ptr(), c.wbuf.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(key as u64 | SEND);
            push(&mut ring, &sqe);
        }
    }
}
