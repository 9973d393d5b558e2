//! One HTTP/1.1 server connection as a sans-IO state machine, as
//! quinn-proto's connections and hyper's `proto::h1::conn` are: bytes go
//! in, complete requests come out one at a time, their responses go in,
//! and the machine says what the connection needs next (send, receive
//! until a deadline, close). It owns the connection's plaintext buffers
//! and every framing rule (pipelining, bodies, `100 Continue`, limits,
//! which error closes); it does no I/O, reads no clock and runs no
//! handler, so it is unit-tested and fuzzed without sockets. `serve.rs`
//! drives it on a worker's ring.
//!
//! The driver's loop:
//! 1. [`Conn::next_request`] until it answers [`Next::Wait`]: each
//!    [`Next::Request`] gets its response through [`Conn::respond`], a
//!    [`Next::Reject`] through [`Conn::reject`].
//! 2. [`Conn::poll_io`]: send [`Conn::take_output`], then close, go back
//!    to 1, or receive into [`Conn::take_input`] until the deadline
//!    ([`Conn::timed_out`] when it passes).

use std::time::Instant;

use super::chunked::{ChunkedDecoder, ChunkedLimits, Progress};
use super::parse::{
    find_head_end, parse_request, BodyFraming, Header, Limits, ParseError, Parsed, RequestHead,
    Version,
};
use super::response::{encode, police, Framing, Response};
use super::server::HttpConfig;
use super::status::Status;

/// Header slots per request; `HttpConfig::limits.max_headers` may lower it.
pub const MAX_HEADERS: usize = 64;

/// Header slots tried first: initialising all `MAX_HEADERS` (2 KiB) for
/// every request cost about 4% of a pipelined request's CPU, and few
/// requests carry more than 16 fields.
pub const FEW_HEADERS: usize = 16;

/// Empty header slots for [`Conn::next_request`]. Not inlined on purpose:
/// filled inline in a connection's task, the slots' sixteen addresses were
/// hoisted and written out again each time the task resumed its loop
/// (80 to 100 instructions per request, coming and going with unrelated
/// inlining); the call fills them with 32 stores through one pointer.
#[inline(never)]
pub fn header_slots<'a>() -> [Header<'a>; FEW_HEADERS] {
    [Header::EMPTY; FEW_HEADERS]
}

/// Where the body of the request at the front of the buffer stands.
enum BodyState {
    /// No head yet.
    Head,
    /// Head parsed; `total` bytes (head + body) must be buffered.
    Length { total: usize },
    /// Head parsed; decoding chunks. Decoded chunk bytes are removed from
    /// the read buffer as they are decoded, so it holds the head plus at
    /// most one read of undecoded input.
    Chunked {
        head_len: usize,
        decoder: ChunkedDecoder,
        body: Vec<u8>,
        /// Chunked bytes decoded (and drained) so far.
        wire: usize,
        done: bool,
    },
}

/// What the request handed out last needs for its response.
#[derive(Clone, Copy)]
struct Pending {
    consumed: usize,
    head_only: bool,
    keep_alive: bool,
    http10: bool,
}

/// The state of one connection. `'c` is the server's configuration.
pub struct Conn<'c> {
    cfg: &'c HttpConfig,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Bytes at the front of `rbuf` consumed by requests this turn.
    off: usize,
    /// Requests served this turn (bounded by `max_pipelined`).
    handled: usize,
    /// Bytes of the request at `off` already searched for a head end.
    scanned: usize,
    body: BodyState,
    /// When the first byte of the request at `off` was seen.
    started: Option<Instant>,
    sent_continue: bool,
    /// Whether this request's first line was already checked.
    line_checked: bool,
    pending: Option<Pending>,
    /// No more requests are read: the connection ends after its output.
    closing: bool,
    /// Whether the last `Io::Receive` waited for the rest of a request
    /// (the input buffer itself may be out with the receive then).
    under_way: bool,
}

/// What [`Conn::next_request`] found.
pub enum Next<'a> {
    /// A complete request: run its handler, then give the response to
    /// [`Conn::respond`] (before asking for the next one).
    Request(Incoming<'a>),
    /// Decoding moved on (a chunked body's head was read): ask again.
    Again,
    /// No complete request is buffered, this turn's pipelining budget is
    /// spent, or the connection is closing: ask [`Conn::poll_io`].
    Wait,
    /// The input is malformed or over a limit: answer with this response
    /// through [`Conn::reject`]; the connection closes after it.
    Reject(Response),
}

/// A complete request, borrowed from the connection's buffer.
pub struct Incoming<'a> {
    pub head: RequestHead<'a, 'a>,
    pub body: &'a [u8],
    /// Head and body bytes on the wire (a chunked body's framing included).
    pub wire_len: usize,
    /// When its first byte was seen.
    pub started: Instant,
}

/// What the connection needs from its driver next. In every case the
/// output ([`Conn::take_output`]) is sent first.
#[derive(Debug, PartialEq, Eq)]
pub enum Io {
    /// Then close. With `drain`, half-close and read what the client still
    /// sends for a moment first, so unread request bytes do not turn the
    /// close into a reset that destroys the responses before the client
    /// reads them.
    Close { drain: bool },
    /// Then go back to [`Conn::next_request`]: more requests are buffered
    /// than one turn serves.
    Flush,
    /// And receive at the same time, until `deadline` at the latest.
    /// `idle`: no request is under way (a shutdown may end the wait, and
    /// the deadline passing is not an error).
    Receive { deadline: Instant, idle: bool },
}

impl<'c> Conn<'c> {
    pub fn new(cfg: &'c HttpConfig) -> Conn<'c> {
        Conn {
            cfg,
            rbuf: Vec::with_capacity(cfg.read_buffer),
            wbuf: Vec::new(),
            off: 0,
            handled: 0,
            scanned: 0,
            body: BodyState::Head,
            started: None,
            sent_continue: false,
            line_checked: false,
            pending: None,
            closing: false,
            under_way: false,
        }
    }

    /// Whether [`Conn::next_request`] could hand anything out: false when
    /// it would answer `Wait` at once (nothing buffered past the requests
    /// handled, or the connection is closing or at its pipelining cap). A
    /// caller checks this before making header slots: most calls find the
    /// buffer empty, and the slots cost more than the check.
    #[inline]
    pub fn has_input(&self) -> bool {
        !(self.closing || self.off >= self.rbuf.len() || self.handled >= self.cfg.max_pipelined)
    }

    /// The next complete request in the buffer, if any. `now` dates the
    /// request's first byte; `few` and `many` are the header slots its
    /// head is parsed into (made by the caller, so the head may borrow
    /// them).
    #[inline(always)]
    pub fn next_request<'a>(
        &'a mut self,
        now: Instant,
        few: &'a mut [Header<'a>; FEW_HEADERS],
        many: &'a mut Option<Box<[Header<'a>]>>,
    ) -> Next<'a> {
        assert!(self.pending.is_none(), "the last request has no response");
        let cfg = self.cfg;
        if !self.has_input() {
            return Next::Wait;
        }
        if matches!(self.body, BodyState::Head) {
            // Empty lines before a request line are ignored (RFC 9112
            // §2.2); they are dropped with the consumed bytes, so a client
            // sending only those grows nothing. A CR and its LF may arrive
            // in different reads: the search starts again after them.
            while self.rbuf[self.off..].starts_with(b"\r\n") {
                self.off += 2;
                self.scanned = 0;
            }
            if self.off == self.rbuf.len() {
                return Next::Wait;
            }
        }
        self.started.get_or_insert(now);
        // A chunked body is decoded before the head is borrowed, since
        // decoding removes the consumed bytes from the buffer.
        if let BodyState::Chunked {
            head_len,
            decoder,
            body: out,
            wire,
            done: done @ false,
        } = &mut self.body
        {
            let start = self.off + *head_len;
            match decoder.decode(&self.rbuf[start..], out) {
                Ok((used, progress)) => {
                    self.rbuf.drain(start..start + used);
                    *wire += used;
                    if progress == Progress::NeedMore {
                        return Next::Wait;
                    }
                    *done = true;
                }
                Err(e) => return self.reject_with(Response::error(e.status(), e.reason())),
            }
        }
        let avail = &self.rbuf[self.off..];
        // A head seen whole on its first look (most are) is parsed at once,
        // in one pass. Only after a first look found it partial (`scanned`
        // is then non-zero) do later reads scan just their new bytes for
        // its end before parsing again.
        if let (BodyState::Head, 1..) = (&self.body, self.scanned) {
            if find_head_end(avail, self.scanned.saturating_sub(3)).is_none() {
                self.scanned = avail.len();
                // Over the limits, the parser names the error (414/431/400)
                // instead of letting the buffer grow; and once the request
                // line has ended, a malformed one is refused at once rather
                // than after a timeout. Each check parses the head at most
                // once per request, so a client sending it a byte at a time
                // costs O(n), not a parse of the whole head per read.
                if checkable(avail, &mut self.line_checked, &cfg.limits) {
                    if let Err(e) = parse_head(avail, few, many, &cfg.limits) {
                        self.closing = true;
                        return Next::Reject(Response::error(e.status(), e.reason()));
                    }
                }
                return Next::Wait;
            }
            self.scanned = 0;
        }
        let parsed = parse_head(avail, few, many, &cfg.limits);
        // Borrowed where the parser left it, and copied once, into the
        // request handed out.
        let head = match parsed {
            Ok(Parsed::Complete(ref h)) => h,
            Ok(Parsed::Partial) => {
                if let BodyState::Head = self.body {
                    // The parse just checked all of it (limits included):
                    // the next read's scan starts where this one ended.
                    self.scanned = avail.len();
                    self.line_checked |= memchr::memchr(b'\n', avail).is_some();
                }
                return Next::Wait;
            }
            // A head that has not ended may fail to parse only because it
            // is incomplete (a lone CR of a CRLF before the request line):
            // it is judged as partial heads are above, which refuse it only
            // once its request line has ended or it is over the limits.
            Err(_)
                if matches!(self.body, BodyState::Head)
                    && find_head_end(avail, 0).is_none()
                    && !checkable(avail, &mut self.line_checked, &cfg.limits) =>
            {
                self.scanned = avail.len();
                return Next::Wait;
            }
            Err(e) => {
                self.closing = true;
                return Next::Reject(Response::error(e.status(), e.reason()));
            }
        };
        if let BodyState::Head = self.body {
            self.body = match head.framing {
                BodyFraming::None => BodyState::Length {
                    total: head.head_len,
                },
                BodyFraming::Length(n) if n > cfg.max_body => {
                    self.closing = true;
                    return Next::Reject(Response::error(
                        Status::CONTENT_TOO_LARGE,
                        "request body too large",
                    ));
                }
                BodyFraming::Length(n) => BodyState::Length {
                    total: head.head_len + n as usize,
                },
                BodyFraming::Chunked => BodyState::Chunked {
                    head_len: head.head_len,
                    decoder: ChunkedDecoder::new(ChunkedLimits {
                        max_body: cfg.max_body,
                        ..ChunkedLimits::default()
                    }),
                    body: Vec::new(),
                    wire: 0,
                    done: false,
                },
            };
            if head.expect_continue && head.version == Version::Http11 {
                let complete =
                    matches!(self.body, BodyState::Length { total } if avail.len() >= total);
                if !complete && !self.sent_continue {
                    // The client waits for this before sending the body.
                    self.sent_continue = true;
                    self.wbuf
                        .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
            }
            if let BodyState::Chunked { .. } = self.body {
                // Decoded at the next call.
                return Next::Again;
            }
        }
        let (consumed, wire_len, body): (usize, usize, &[u8]) = match &self.body {
            BodyState::Head => unreachable!("set above"),
            BodyState::Length { total } if avail.len() < *total => return Next::Wait,
            BodyState::Length { total } => (*total, *total, &avail[head.head_len..*total]),
            BodyState::Chunked {
                head_len,
                body,
                wire,
                ..
            } => (*head_len, *head_len + *wire, body),
        };
        self.pending = Some(Pending {
            consumed,
            head_only: head.method == "HEAD",
            keep_alive: head.keep_alive,
            http10: head.version == Version::Http10,
        });
        Next::Request(Incoming {
            head: *head,
            body,
            wire_len,
            started: self.started.unwrap_or(now),
        })
    }

    /// Leaves the request [`Conn::next_request`] handed out last
    /// unanswered, to be handed out again by the next call: its bytes are
    /// still buffered and its body already framed (a chunked one decoded),
    /// so the next call parses the same head and answers the same.
    pub fn hand_back(&mut self) {
        self.pending = None;
    }

    fn reject_with<'a>(&mut self, response: Response) -> Next<'a> {
        self.closing = true;
        Next::Reject(response)
    }

    /// Queues the response to the request [`Conn::next_request`] handed
    /// out last, framed for it, and returns its length. `close` ends the
    /// connection after it (as its request's `Connection: close`, the
    /// response's own, or an HTTP/1.0 request without keep-alive do).
    #[inline]
    pub fn respond(&mut self, mut response: Response, date: &[u8], close: bool) -> usize {
        let pending = self
            .pending
            .take()
            .expect("respond answers the request handed out last");
        let close = police(&mut response) | close | !pending.keep_alive;
        let framing = Framing {
            head_only: pending.head_only,
            close,
            keep_alive_10: pending.http10,
        };
        let before = self.wbuf.len();
        encode(&response, date, framing, &mut self.wbuf);
        self.off += pending.consumed;
        self.handled += 1;
        self.body = BodyState::Head;
        self.started = None;
        self.sent_continue = false;
        self.line_checked = false;
        self.closing |= close;
        self.wbuf.len() - before
    }

    /// Queues the answer to a [`Next::Reject`] (or to [`Conn::timed_out`])
    /// and returns its length; nothing more is read.
    pub fn reject(&mut self, response: &Response, date: &[u8]) -> usize {
        self.pending = None;
        self.closing = true;
        let framing = Framing {
            close: true,
            ..Framing::default()
        };
        let before = self.wbuf.len();
        encode(response, date, framing, &mut self.wbuf);
        self.wbuf.len() - before
    }

    /// What to do once no request is ready. `handshake` is a TLS
    /// handshake's deadline while one is under way; `shutdown` whether the
    /// worker is shutting down (an idle connection then closes).
    pub fn poll_io(&mut self, now: Instant, handshake: Option<Instant>, shutdown: bool) -> Io {
        assert!(self.pending.is_none(), "the last request has no response");
        let cfg = self.cfg;
        if self.off > 0 {
            if self.off == self.rbuf.len() {
                self.rbuf.clear();
            } else {
                self.rbuf.drain(..self.off);
            }
            self.off = 0;
        }
        let handled = std::mem::take(&mut self.handled);
        if self.closing {
            return Io::Close { drain: true };
        }
        if handled >= cfg.max_pipelined && !self.rbuf.is_empty() {
            return Io::Flush;
        }
        self.under_way = false;
        if let Some(deadline) = handshake {
            return Io::Receive {
                deadline,
                idle: false,
            };
        }
        if self.rbuf.is_empty() && matches!(self.body, BodyState::Head) {
            if shutdown {
                // Whatever was answered still goes out.
                self.closing = true;
                return Io::Close { drain: false };
            }
            if self.rbuf.capacity() > cfg.read_buffer * 4 {
                // A large body grew the buffer: an idle connection gives it back.
                self.rbuf = Vec::with_capacity(cfg.read_buffer);
            }
            return Io::Receive {
                deadline: now + cfg.idle_timeout,
                idle: true,
            };
        }
        if let BodyState::Length { total } = self.body {
            // Room for the whole body, so it arrives without copies.
            if self.rbuf.capacity() < total {
                self.rbuf.reserve(total - self.rbuf.len());
            }
        }
        self.under_way = true;
        let started = *self.started.get_or_insert(now);
        let deadline = match self.body {
            BodyState::Head => started + cfg.header_timeout,
            _ => started + cfg.header_timeout + cfg.body_timeout,
        };
        Io::Receive {
            deadline,
            idle: false,
        }
    }

    /// A [`Io::Receive`] deadline passed without input. Returns the
    /// response owed to a client whose request was under way (408, to go
    /// through [`Conn::reject`]); the connection closes either way.
    pub fn timed_out(&mut self) -> Option<Response> {
        self.closing = true;
        self.under_way
            .then(|| Response::error(Status::REQUEST_TIMEOUT, "request timeout"))
    }

    /// Whether no more requests will be read.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// The input buffer, for a receive to append to; at least 512 bytes
    /// spare. Give it back with [`Conn::put_input`].
    pub fn take_input(&mut self) -> Vec<u8> {
        debug_assert_eq!(self.off, 0, "poll_io compacts before a receive");
        let mut buf = std::mem::take(&mut self.rbuf);
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(self.cfg.read_buffer);
        }
        buf
    }

    /// Gives back the input buffer with what was received appended.
    pub fn put_input(&mut self, buf: Vec<u8>) {
        self.rbuf = buf;
    }

    /// Appends received bytes (for drivers that receive elsewhere: tests).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.rbuf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet consumed by a request.
    pub fn buffered(&self) -> usize {
        self.rbuf.len() - self.off
    }

    /// The responses queued so far, to send; give the buffer back with
    /// [`Conn::put_output`] once sent.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.wbuf)
    }

    /// Gives back a sent output buffer (kept for the next responses unless
    /// a large response grew it).
    pub fn put_output(&mut self, buf: Vec<u8>) {
        debug_assert!(self.wbuf.is_empty(), "output queued while a send was out");
        self.wbuf = recycle(buf);
    }

    /// Whether responses are queued.
    pub fn has_output(&self) -> bool {
        !self.wbuf.is_empty()
    }
}

/// Whether a partial head is parsed to look for errors now: once its
/// request line has ended (the first time), or once it is over the limits.
/// Notes in `line_checked` that the line has ended.
fn checkable(avail: &[u8], line_checked: &mut bool, limits: &Limits) -> bool {
    let line_ended = !*line_checked && memchr::memchr(b'\n', avail).is_some();
    *line_checked |= line_ended;
    let over = if *line_checked {
        avail.len() >= limits.max_head_bytes
    } else {
        avail.len() > limits.max_request_line
    };
    line_ended || over
}

/// Parses a request head into `few` slots, or, when it has more fields
/// than those and the limits allow more, into `MAX_HEADERS` slots
/// allocated then: most requests never pay for initialising the large
/// array, and a connection's task does not carry it (2 KiB) while idle.
/// Inlined, so the parsed head (about 100 bytes) is returned once, not
/// copied again through this function's own result.
#[inline(always)]
pub(crate) fn parse_head<'b, 'h>(
    avail: &'b [u8],
    few: &'h mut [Header<'b>; FEW_HEADERS],
    many: &'h mut Option<Box<[Header<'b>]>>,
    limits: &Limits,
) -> Result<Parsed<RequestHead<'b, 'h>>, ParseError> {
    let limit = limits.max_headers.min(MAX_HEADERS);
    if limit <= FEW_HEADERS {
        return parse_request(avail, &mut few[..limit], limits);
    }
    let first = parse_request(avail, &mut few[..], limits);
    if !matches!(first, Err(ParseError::TooManyHeaders)) {
        return first;
    }
    let slots = many.insert(vec![Header::EMPTY; MAX_HEADERS].into_boxed_slice());
    parse_request(avail, &mut slots[..limit], limits)
}

/// An emptied output buffer, kept for the next responses unless a large
/// response grew it (an idle connection should not hold that memory).
pub(crate) fn recycle(mut buf: Vec<u8>) -> Vec<u8> {
    buf.clear();
    if buf.capacity() > 64 * 1024 {
        buf = Vec::new();
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const DATE: &[u8] = b"Thu, 03 Dec 2026 00:00:00 GMT";

    /// What a connection did with its input: each request the handler saw
    /// (method, target, body), what it sent, and what it asked for last.
    #[derive(Debug, Default)]
    struct Seen {
        requests: Vec<(String, String, Vec<u8>)>,
        rejected: Option<u16>,
        out: Vec<u8>,
    }

    /// Serves every buffered request with a handler that echoes what it
    /// saw, then asks for I/O; a `Flush` is served like the driver does.
    fn turn(conn: &mut Conn<'_>, now: Instant, seen: &mut Seen) -> Io {
        loop {
            loop {
                let mut few = [Header::EMPTY; FEW_HEADERS];
                let mut many = None;
                match conn.next_request(now, &mut few, &mut many) {
                    Next::Again => continue,
                    Next::Wait => break,
                    Next::Reject(r) => {
                        seen.rejected = Some(r.status.as_u16());
                        conn.reject(&r, DATE);
                        break;
                    }
                    Next::Request(inc) => {
                        let entry = (
                            inc.head.method.to_string(),
                            inc.head.target.to_string(),
                            inc.body.to_vec(),
                        );
                        let body = format!("{} {} {}", entry.0, entry.1, entry.2.len());
                        seen.requests.push(entry);
                        conn.respond(Response::text_owned(body), DATE, false);
                    }
                }
            }
            let io = conn.poll_io(now, None, false);
            seen.out.extend_from_slice(&conn.take_output());
            conn.put_output(Vec::new());
            if io != Io::Flush {
                return io;
            }
        }
    }

    fn run(cfg: &HttpConfig, chunks: &[&[u8]]) -> (Seen, Io) {
        let mut conn = Conn::new(cfg);
        let mut seen = Seen::default();
        let now = Instant::now();
        let mut io = turn(&mut conn, now, &mut seen);
        for c in chunks {
            if matches!(io, Io::Close { .. }) {
                break;
            }
            conn.feed(c);
            io = turn(&mut conn, now, &mut seen);
        }
        (seen, io)
    }

    fn text(out: &[u8]) -> String {
        String::from_utf8_lossy(out).into_owned()
    }

    /// A request handed back is handed out again whole: same head, same
    /// body (a chunked one decoded once, not twice), and one 100 Continue.
    #[test]
    fn a_request_handed_back_is_handed_out_again_the_same() {
        let cfg = HttpConfig::default();
        let mut conn = Conn::new(&cfg);
        let now = Instant::now();
        let a = b"POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let b = b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        conn.feed(a);
        conn.feed(b);
        let mut seen = Vec::new();
        for hand_back in [true, false, true, false] {
            loop {
                let mut few = [Header::EMPTY; FEW_HEADERS];
                let mut many = None;
                match conn.next_request(now, &mut few, &mut many) {
                    Next::Again => continue,
                    Next::Request(inc) => {
                        seen.push((inc.head.target.to_string(), inc.body.to_vec(), inc.wire_len));
                        break;
                    }
                    other => panic!("expected a request, got {:?}", matches!(other, Next::Wait)),
                }
            }
            if hand_back {
                conn.hand_back();
            } else {
                conn.respond(Response::text("ok"), DATE, false);
            }
        }
        assert_eq!(
            seen,
            [
                ("/a".to_string(), b"abcde".to_vec(), a.len()),
                ("/a".to_string(), b"abcde".to_vec(), a.len()),
                ("/b".to_string(), Vec::new(), b.len()),
                ("/b".to_string(), Vec::new(), b.len()),
            ]
        );
        let out = text(&conn.take_output());
        assert_eq!(
            out.matches("100 Continue").count(),
            1,
            "once, not per look: {out}"
        );
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    }

    #[test]
    fn a_head_with_more_fields_than_the_few_slots_is_parsed_into_many() {
        let head_with = |n: usize| {
            let mut raw = b"GET /h HTTP/1.1\r\nHost: x\r\n".to_vec();
            for i in 1..n {
                raw.extend_from_slice(format!("X-F{i}: {i}\r\n").as_bytes());
            }
            raw.extend_from_slice(b"\r\n");
            raw
        };
        let limits = Limits::default();
        let few_only = head_with(FEW_HEADERS);
        let (mut few, mut many) = ([Header::EMPTY; FEW_HEADERS], None);
        match parse_head(&few_only, &mut few, &mut many, &limits) {
            Ok(Parsed::Complete(head)) => assert_eq!(head.headers.len(), FEW_HEADERS),
            other => panic!("{other:?}"),
        }
        assert!(
            many.is_none(),
            "a head that fits the few slots allocates nothing"
        );
        let raw = head_with(40);
        let (mut few, mut many) = ([Header::EMPTY; FEW_HEADERS], None);
        match parse_head(&raw, &mut few, &mut many, &limits) {
            Ok(Parsed::Complete(head)) => {
                assert_eq!(head.headers.len(), 40);
                assert_eq!(head.headers[39].value, b"39");
            }
            other => panic!("{other:?}"),
        }
        let over = head_with(MAX_HEADERS + 1);
        let (mut few, mut many) = ([Header::EMPTY; FEW_HEADERS], None);
        assert!(matches!(
            parse_head(&over, &mut few, &mut many, &limits),
            Err(ParseError::TooManyHeaders)
        ));
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_in_one_turn() {
        let cfg = HttpConfig::default();
        let raw: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        let (seen, io) = run(&cfg, &[raw]);
        let targets: Vec<_> = seen.requests.iter().map(|r| r.1.as_str()).collect();
        assert_eq!(targets, ["/a", "/b", "/c"]);
        assert_eq!(seen.requests[1].2, b"abc");
        let out = text(&seen.out);
        let (a, b, c) = (
            out.find("GET /a 0").unwrap(),
            out.find("POST /b 3").unwrap(),
            out.find("GET /c 0").unwrap(),
        );
        assert!(a < b && b < c, "{out}");
        assert!(matches!(io, Io::Receive { idle: true, .. }), "{io:?}");
    }

    #[test]
    fn a_request_split_at_every_byte_is_the_same_request() {
        let cfg = HttpConfig::default();
        let raw: &[u8] = b"\r\nPOST /b?x=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        let (whole, _) = run(&cfg, &[raw]);
        let bytes: Vec<&[u8]> = raw.chunks(1).collect();
        let (split, io) = run(&cfg, &bytes);
        assert_eq!(whole.requests, split.requests);
        assert_eq!(whole.requests[0].2, b"abcde");
        assert_eq!(whole.out, split.out);
        assert!(matches!(io, Io::Receive { idle: true, .. }), "{io:?}");
    }

    #[test]
    fn nothing_after_a_rejected_request_is_read() {
        let cfg = HttpConfig::default();
        // Both framings: a smuggling attempt. The request behind it must
        // never reach a handler.
        let raw: &[u8] = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nPOST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
        let (seen, io) = run(&cfg, &[raw]);
        assert_eq!(seen.requests.len(), 1, "{seen:?}");
        assert_eq!(seen.rejected, Some(400));
        assert_eq!(io, Io::Close { drain: true });
        let out = text(&seen.out);
        let last = &out[out.rfind("HTTP/1.1 ").unwrap()..];
        assert!(last.starts_with("HTTP/1.1 400 "), "{out}");
        assert!(last.contains("\r\nConnection: close\r\n"), "{out}");
    }

    #[test]
    fn a_malformed_request_line_is_refused_before_its_head_ends() {
        let cfg = HttpConfig::default();
        let (seen, io) = run(&cfg, &[b"GET /a HTTP/9.9\r\nHost: x\r\n"]);
        assert!(seen.requests.is_empty());
        assert_eq!(seen.rejected, Some(505));
        assert_eq!(io, Io::Close { drain: true });
    }

    #[test]
    fn an_oversized_body_is_refused_from_its_head() {
        let cfg = HttpConfig {
            max_body: 10,
            ..HttpConfig::default()
        };
        let (seen, io) = run(
            &cfg,
            &[b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n"],
        );
        assert_eq!(seen.rejected, Some(413));
        assert_eq!(io, Io::Close { drain: true });
    }

    #[test]
    fn the_pipelining_budget_flushes_and_goes_on() {
        let cfg = HttpConfig {
            max_pipelined: 2,
            ..HttpConfig::default()
        };
        let mut conn = Conn::new(&cfg);
        conn.feed(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(5));
        let now = Instant::now();
        let mut served = 0;
        let mut ios = Vec::new();
        loop {
            let mut few = [Header::EMPTY; FEW_HEADERS];
            let mut many = None;
            match conn.next_request(now, &mut few, &mut many) {
                Next::Request(_) => {
                    served += 1;
                    conn.respond(Response::text("x"), DATE, false);
                }
                Next::Wait => {
                    let io = conn.poll_io(now, None, false);
                    let flush = io == Io::Flush;
                    ios.push((served, io));
                    let out = conn.take_output();
                    conn.put_output(out);
                    if !flush {
                        break;
                    }
                }
                _ => panic!("unexpected"),
            }
        }
        assert_eq!(served, 5);
        assert_eq!(ios.len(), 3, "{ios:?}");
        assert_eq!(ios[0], (2, Io::Flush));
        assert_eq!(ios[1], (4, Io::Flush));
        assert!(matches!(ios[2], (5, Io::Receive { idle: true, .. })));
    }

    #[test]
    fn deadlines_follow_the_request_and_a_timeout_mid_request_is_a_408() {
        let cfg = HttpConfig::default();
        let mut conn = Conn::new(&cfg);
        let mut seen = Seen::default();
        let t0 = Instant::now();
        assert_eq!(
            turn(&mut conn, t0, &mut seen),
            Io::Receive {
                deadline: t0 + cfg.idle_timeout,
                idle: true
            }
        );
        assert!(conn.timed_out().is_none(), "an idle connection just closes");

        let mut conn = Conn::new(&cfg);
        conn.feed(b"GET / HTTP/1.1\r\nHo");
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            turn(&mut conn, t0, &mut seen),
            Io::Receive {
                deadline: t0 + cfg.header_timeout,
                idle: false
            }
        );
        // The header deadline counts from the request's first byte, not
        // from the latest read.
        conn.feed(b"st: x\r\nContent-Length: 4\r\n\r\nab");
        assert_eq!(
            turn(&mut conn, t1, &mut seen),
            Io::Receive {
                deadline: t0 + cfg.header_timeout + cfg.body_timeout,
                idle: false
            }
        );
        // The buffer may be out with a receive when the deadline passes.
        let lent = conn.take_input();
        let r = conn.timed_out().expect("a request was under way");
        assert_eq!(r.status, Status::REQUEST_TIMEOUT);
        drop(lent);
        assert!(conn.is_closing());
    }

    #[test]
    fn expect_continue_is_answered_once_and_only_when_the_body_is_missing() {
        let cfg = HttpConfig::default();
        let head: &[u8] =
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        let (seen, _) = run(&cfg, &[head, b"a", b"b"]);
        let out = text(&seen.out);
        assert_eq!(out.matches("100 Continue").count(), 1, "{out}");
        assert!(
            out.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"),
            "{out}"
        );
        let whole = [head, b"ab"].concat();
        let (seen, _) = run(&cfg, &[&whole]);
        assert!(!text(&seen.out).contains("100 Continue"));
    }

    #[test]
    fn close_comes_from_the_request_the_response_or_the_driver() {
        let cfg = HttpConfig::default();
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /late HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.0\r\n\r\nGET /late HTTP/1.0\r\n\r\n",
        ] {
            let (seen, io) = run(&cfg, &[raw]);
            assert_eq!(seen.requests.len(), 1, "{}", text(raw));
            assert_eq!(io, Io::Close { drain: true });
            assert!(text(&seen.out).contains("\r\nConnection: close\r\n"));
        }
        // The driver's reason (a panic, a shutdown), and the response's own.
        for (resp, close) in [
            (Response::text("x"), true),
            (
                Response::text("x").with_header("Connection", "close"),
                false,
            ),
        ] {
            let mut conn = Conn::new(&cfg);
            conn.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /late HTTP/1.1\r\nHost: x\r\n\r\n");
            let now = Instant::now();
            let mut few = [Header::EMPTY; FEW_HEADERS];
            let mut many = None;
            assert!(matches!(
                conn.next_request(now, &mut few, &mut many),
                Next::Request(_)
            ));
            conn.respond(resp, DATE, close);
            let mut few = [Header::EMPTY; FEW_HEADERS];
            let mut many = None;
            assert!(matches!(
                conn.next_request(now, &mut few, &mut many),
                Next::Wait
            ));
            assert_eq!(conn.poll_io(now, None, false), Io::Close { drain: true });
        }
    }

    #[test]
    fn shutdown_closes_an_idle_connection_after_its_output() {
        let cfg = HttpConfig::default();
        let mut conn = Conn::new(&cfg);
        conn.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let now = Instant::now();
        let mut few = [Header::EMPTY; FEW_HEADERS];
        let mut many = None;
        assert!(matches!(
            conn.next_request(now, &mut few, &mut many),
            Next::Request(_)
        ));
        conn.respond(Response::text("x"), DATE, false);
        assert_eq!(conn.poll_io(now, None, true), Io::Close { drain: false });
        assert!(conn.has_output(), "the response is still sent");
        // Mid-request, a shutdown waits for the request.
        let mut conn = Conn::new(&cfg);
        conn.feed(b"GET / HTTP/1.1\r\n");
        let mut few = [Header::EMPTY; FEW_HEADERS];
        let mut many = None;
        assert!(matches!(
            conn.next_request(now, &mut few, &mut many),
            Next::Wait
        ));
        assert!(matches!(
            conn.poll_io(now, None, true),
            Io::Receive { idle: false, .. }
        ));
    }

    #[test]
    fn blank_lines_alone_grow_nothing() {
        let cfg = HttpConfig::default();
        let mut conn = Conn::new(&cfg);
        let mut seen = Seen::default();
        for _ in 0..1000 {
            conn.feed(b"\r\n");
            turn(&mut conn, Instant::now(), &mut seen);
        }
        assert_eq!(conn.buffered(), 0);
        assert!(seen.out.is_empty());
    }
}
