//! The server connection as a whole (head + body + pipelining + limits +
//! deadlines: the request-smuggling surface), through its sans-IO state
//! machine, on an arbitrary byte stream fed whole and split at arbitrary
//! points. Checks:
//! - split invariance: the same requests reach the handler (method,
//!   target, body), and the same bytes go back apart from `100 Continue`
//!   (sent only when the body has not arrived with the head);
//! - nothing is read after a rejection, and a rejection is the last
//!   response, with `Connection: close`, and the connection closes;
//! - the responses are self-delimiting (the load generator's parser reads
//!   them back), one per request, in order;
//! - the input buffer stays bounded by the limits;
//! - a request handed back (`Conn::hand_back`, as the server does when a
//!   request it took to answer in place turns out to need its async
//!   path) is handed out again the same, and changes nothing on the wire.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tidepool_engine::http::conn::{Conn, Io, Next, FEW_HEADERS};
use tidepool_engine::http::parse::Header;
use tidepool_engine::http::{HttpConfig, Response};
use tidepool_loadgen::client::http::{parse_response, Parsed};

const DATE: &[u8] = b"Thu, 03 Dec 2026 00:00:00 GMT";
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[derive(Debug, Default, PartialEq)]
struct Seen {
    requests: Vec<(String, String, Vec<u8>)>,
    rejected: Option<u16>,
    out: Vec<u8>,
    closed: bool,
}

fn serve(conn: &mut Conn<'_>, now: Instant, seen: &mut Seen, back: &mut Flips) -> Io {
    let mut handed_back: Option<(String, String, Vec<u8>, usize)> = None;
    loop {
        loop {
            let mut few = [Header::EMPTY; FEW_HEADERS];
            let mut many = None;
            let next = conn.next_request(now, &mut few, &mut many);
            if let Some((m, t, b, wire)) = handed_back.take() {
                let Next::Request(inc) = &next else {
                    panic!("a request handed back came out as {}", kind(&next));
                };
                assert_eq!(inc.head.method.to_string(), m, "handed back: the same method");
                assert_eq!(inc.head.target.to_string(), t, "handed back: the same target");
                assert_eq!(inc.body, &b[..], "handed back: the same body");
                assert_eq!(inc.wire_len, wire, "handed back: the same length");
            }
            match next {
                Next::Again => continue,
                Next::Wait => break,
                Next::Reject(r) => {
                    assert!(seen.rejected.is_none(), "a second rejection");
                    seen.rejected = Some(r.status.as_u16());
                    conn.reject(&r, DATE);
                    break;
                }
                Next::Request(inc) => {
                    assert!(seen.rejected.is_none(), "a request after a rejection");
                    if back.next() {
                        handed_back = Some((
                            inc.head.method.to_string(),
                            inc.head.target.to_string(),
                            inc.body.to_vec(),
                            inc.wire_len,
                        ));
                        conn.hand_back();
                        continue;
                    }
                    let entry = (
                        inc.head.method.to_string(),
                        inc.head.target.to_string(),
                        inc.body.to_vec(),
                    );
                    assert!(inc.wire_len >= inc.head.head_len + inc.body.len());
                    let body = format!("{} {} {}", entry.0, entry.1, entry.2.len());
                    seen.requests.push(entry);
                    conn.respond(Response::text_owned(body), DATE, false);
                }
            }
        }
        let io = conn.poll_io(now, None, false);
        let out = conn.take_output();
        seen.out.extend_from_slice(&out);
        conn.put_output(out);
        if io != Io::Flush {
            return io;
        }
    }
}

fn kind(next: &Next<'_>) -> &'static str {
    match next {
        Next::Request(_) => "a request",
        Next::Again => "again",
        Next::Wait => "wait",
        Next::Reject(_) => "a rejection",
    }
}

/// Whether to hand the next request back: none when `seed` is 0, else
/// from a small generator (about one request in three).
struct Flips(u32);

impl Flips {
    fn next(&mut self) -> bool {
        if self.0 == 0 {
            return false;
        }
        let x = &mut self.0;
        *x ^= *x << 13;
        *x ^= *x >> 17;
        *x ^= *x << 5;
        *x % 3 == 0
    }
}

fn run(cfg: &HttpConfig, stream: &[u8], cuts: &[usize], seed: u32) -> Seen {
    let mut conn = Conn::new(cfg);
    let mut seen = Seen::default();
    let now = Instant::now();
    let back = &mut Flips(seed);
    let mut io = serve(&mut conn, now, &mut seen, back);
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        let cut = cut.clamp(at, stream.len());
        if matches!(io, Io::Close { .. }) {
            break;
        }
        conn.feed(&stream[at..cut]);
        at = cut;
        io = serve(&mut conn, now, &mut seen, back);
        // Unconsumed input never outgrows the largest thing it may hold.
        let bound = cfg.limits.max_head_bytes + cfg.max_body as usize + stream.len().min(1 << 16);
        assert!(conn.buffered() <= bound.max(cfg.limits.max_head_bytes * 2));
    }
    if let Io::Receive { idle: false, .. } = io {
        // The stream ended mid-request: the deadline passes.
        if let Some(r) = conn.timed_out() {
            seen.rejected = Some(r.status.as_u16());
            conn.reject(&r, DATE);
            seen.out.extend_from_slice(&conn.take_output());
        }
        io = Io::Close { drain: true };
    }
    seen.closed = matches!(io, Io::Close { .. });
    seen
}

fn strip_continue(out: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(out.len());
    let mut i = 0;
    while i < out.len() {
        if out[i..].starts_with(CONTINUE) {
            i += CONTINUE.len();
        } else {
            v.push(out[i]);
            i += 1;
        }
    }
    v
}

/// Reads the responses back: one per request (HEAD ones without a body),
/// then the rejection if there was one, and nothing else. Returns the
/// answers to the requests (the output before the rejection).
fn check_responses(seen: &Seen) -> Vec<u8> {
    let out = strip_continue(&seen.out);
    let mut at = 0;
    let mut answers = 0;
    let expected = seen.requests.len() + usize::from(seen.rejected.is_some());
    for i in 0..expected {
        let head = seen.requests.get(i).is_some_and(|r| r.0 == "HEAD");
        match parse_response(&out[at..], head) {
            Parsed::Done { status, len, close } => {
                if i < seen.requests.len() {
                    assert_eq!(status, 200, "response {i}");
                    if !head {
                        let (m, t, b) = &seen.requests[i];
                        let body = format!("{m} {t} {}", b.len());
                        assert!(out[at..at + len].ends_with(body.as_bytes()), "response {i} answers its request");
                    }
                } else {
                    assert_eq!(Some(status), seen.rejected);
                    assert!(close, "a rejection says Connection: close");
                }
                at += len;
                if i < seen.requests.len() {
                    answers = at;
                }
            }
            other => panic!("response {i} of {expected} reads as {other:?}"),
        }
    }
    assert_eq!(at, out.len(), "nothing after the last response");
    if seen.rejected.is_some() {
        assert!(seen.closed, "a rejection closes the connection");
    }
    out[..answers].to_vec()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let cfg = HttpConfig {
        max_pipelined: 1 + usize::from(data[0] % 4),
        max_body: 64 + u64::from(data[0] >> 2) * 16,
        header_timeout: Duration::from_secs(1),
        ..HttpConfig::default()
    };
    let stream = &data[2..];
    // Cut points from a small generator seeded by the second byte.
    let mut x = u32::from(data[1]) | 0x100;
    let mut cuts = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        at += 1 + (x % 48) as usize;
        cuts.push(at);
    }
    let whole = run(&cfg, stream, &[], 0);
    let whole_answers = check_responses(&whole);
    let split = run(&cfg, stream, &cuts, 0);
    // Handing requests back changes nothing, not even a 100 Continue.
    let seed = u32::from(data[1]) << 8 | 0x5a;
    assert_eq!(split, run(&cfg, stream, &cuts, seed), "requests handed back");
    let bytes: Vec<usize> = (1..stream.len()).collect();
    let single = run(&cfg, stream, &bytes, 0);
    for (name, other) in [("split", &split), ("byte by byte", &single)] {
        let answers = check_responses(other);
        assert_eq!(whole.requests, other.requests, "{name}: the same requests");
        assert_eq!(whole_answers, answers, "{name}: the same answers");
        if whole.rejected != other.rejected {
            // Deliberate: a head is parsed early (before its end arrives)
            // only once its request line ends and once it reaches the size
            // limit, so that a head sent a byte at a time costs O(n). A
            // malformed header line that arrives whole is refused at once;
            // arriving in pieces, at the header deadline (408).
            assert_eq!(other.rejected, Some(408), "{name}: {:?}", whole.rejected);
            assert!(whole.rejected.is_some_and(|s| s >= 400), "{name}");
        }
    }
});
