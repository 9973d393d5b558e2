//! One HTTP/1.1 connection: read, parse every complete request, run the
//! handlers in order, write all responses in one send, repeat.
//!
//! The read buffer is owned by the connection and lent to the kernel for
//! each receive; request heads and bodies borrow it, so parsing copies
//! nothing. Every wait has a deadline from `HttpConfig`.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::chunked::{ChunkedDecoder, ChunkedLimits, Progress};
use super::date::DateCache;
use super::parse::{
    find_head_end, parse_request, BodyFraming, Header, ParseError, Parsed, RequestHead, Version,
};
use super::response::{encode, police, Framing, Response};
use super::route_stats::RouteStats;
use super::router::{Dispatch, Params, Request, Router};
use super::server::HttpConfig;
use super::stats::{add, sub, WorkerStats};
use super::status::Status;
use crate::rt::net::TcpStream;
use crate::rt::time::{race, sleep_until, Sleep};
use crate::rt::{self, shutdown_signal, ShutdownSignal};
use crate::tls::Session;

/// What every connection on a worker shares.
pub(crate) struct Shared<S> {
    pub(crate) router: Router<S>,
    pub(crate) config: HttpConfig,
    pub(crate) stats: Arc<WorkerStats>,
    /// Per-route histograms, when `HttpConfig::route_metrics` is on.
    pub(crate) routes: Option<Arc<RouteStats>>,
    pub(crate) date: RefCell<DateCache>,
    pub(crate) open: Cell<usize>,
}

/// Keeps the open-connection count right however the task ends.
struct OpenGuard<'a, S> {
    shared: &'a Shared<S>,
}

impl<S> Drop for OpenGuard<'_, S> {
    fn drop(&mut self) {
        self.shared.open.set(self.shared.open.get() - 1);
        sub(&self.shared.stats.connections_open, 1);
    }
}

enum ReadEvent {
    Data,
    /// The responses could not be sent (error or write timeout).
    WriteFailed,
    Eof,
    Timeout,
    Shutdown,
    Error,
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
        done: bool,
    },
}

/// Header slots per request; `HttpConfig::limits.max_headers` may lower it.
pub const MAX_HEADERS: usize = 64;

/// Header slots tried first: initialising all `MAX_HEADERS` (2 KiB) for
/// every request cost about 4% of a pipelined request's CPU, and few
/// requests carry more than 16 fields.
const FEW_HEADERS: usize = 16;

/// Parses a request head into `few` slots, or, when it has more fields
/// than those and `limit` allows more, into `MAX_HEADERS` slots made then.
fn parse_head<'b, 'h>(
    avail: &'b [u8],
    few: &'h mut [Header<'b>; FEW_HEADERS],
    many: &'h mut Option<[Header<'b>; MAX_HEADERS]>,
    limit: usize,
    cfg: &HttpConfig,
) -> Result<Parsed<RequestHead<'b, 'h>>, ParseError> {
    if limit <= FEW_HEADERS {
        return parse_request(avail, &mut few[..limit], &cfg.limits);
    }
    let first = parse_request(avail, &mut few[..], &cfg.limits);
    if !matches!(first, Err(ParseError::TooManyHeaders)) {
        return first;
    }
    let slots = many.insert([Header::EMPTY; MAX_HEADERS]);
    parse_request(avail, &mut slots[..limit], &cfg.limits)
}

struct Conn<'s, S> {
    stream: TcpStream,
    shared: &'s Shared<S>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// HTTPS: the session, and its ciphertext buffers (in, out). `rbuf` and
    /// `wbuf` stay plaintext, so parsing and encoding do not change.
    tls: Option<Box<Session>>,
    cipher_in: Vec<u8>,
    cipher_out: Vec<u8>,
    accepted: Instant,
    timer: Sleep,
    /// Registered once per connection, not once per read.
    shutdown: ShutdownSignal,
}

pub(crate) async fn serve<S: 'static>(stream: TcpStream, shared: Rc<Shared<S>>) {
    let shared = &*shared;
    shared.open.set(shared.open.get() + 1);
    add(&shared.stats.connections_open, 1);
    add(&shared.stats.connections_accepted, 1);
    let tls = match &shared.config.tls {
        None => None,
        Some(config) => match Session::server(config.clone()) {
            Ok(s) => Some(Box::new(s)),
            Err(_) => return,
        },
    };
    let mut conn = Conn {
        stream,
        shared,
        rbuf: Vec::with_capacity(shared.config.read_buffer),
        wbuf: Vec::new(),
        tls,
        cipher_in: Vec::new(),
        cipher_out: Vec::new(),
        accepted: rt::time::now(),
        timer: sleep_until(Instant::now() + shared.config.idle_timeout),
        shutdown: shutdown_signal(),
    };
    // Declared after `conn`, so dropped before it: the count is down
    // before the socket closes (on epoll the close is immediate, and a
    // client that saw it may read the count at once).
    let _guard = OpenGuard { shared };
    conn.run().await;
}

/// Runs `fut` for at most `limit`; `None` when it ran out. The timer is
/// armed only once the future has had to wait: a handler that completes
/// at its first poll costs no timer.
async fn bounded<F: Future + Unpin>(
    mut fut: F,
    timer: &mut Sleep,
    limit: Duration,
) -> Option<F::Output> {
    let mut armed = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = Pin::new(&mut fut).poll(cx) {
            return Poll::Ready(Some(v));
        }
        if !armed {
            timer.reset(rt::time::now() + limit);
            armed = true;
        }
        match Pin::new(&mut *timer).poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Polls a handler future, turning a panic into a 500 for this request.
struct CatchUnwind<F>(F);

impl<F: Future<Output = Response> + Unpin> Future for CatchUnwind<F> {
    type Output = Result<Response, ()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Pin::new(fut).poll(cx))) {
            Ok(Poll::Ready(r)) => Poll::Ready(Ok(r)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

impl<S: 'static> Conn<'_, S> {
    async fn run(&mut self) {
        let cfg = &self.shared.config;
        let stats = &*self.shared.stats;
        // Bytes at the front of the buffer already searched for a head end.
        let mut scanned = 0usize;
        let mut body = BodyState::Head;
        let mut request_started: Option<Instant> = None;
        let mut sent_continue = false;
        // Whether this request's first line was already checked.
        let mut line_checked = false;
        loop {
            let mut off = 0usize;
            let mut handled = 0usize;
            let mut close = false;
            let mut failure: Option<Response> = None;
            // Handle every complete request in the buffer.
            while off < self.rbuf.len() && handled < cfg.max_pipelined {
                if matches!(body, BodyState::Head) && scanned == 0 {
                    // Empty lines before a request line are ignored (RFC
                    // 9112 §2.2); they are dropped with the consumed bytes,
                    // so a client sending only those grows nothing.
                    while self.rbuf[off..].starts_with(b"\r\n") {
                        off += 2;
                    }
                    if off == self.rbuf.len() {
                        break;
                    }
                }
                request_started.get_or_insert_with(rt::time::now);
                // A chunked body is decoded before the head is borrowed again,
                // since decoding removes the consumed bytes from the buffer.
                if let BodyState::Chunked {
                    head_len,
                    decoder,
                    body: out,
                    done: false,
                } = &mut body
                {
                    let start = off + *head_len;
                    match decoder.decode(&self.rbuf[start..], out) {
                        Ok((used, progress)) => {
                            self.rbuf.drain(start..start + used);
                            if progress == Progress::NeedMore {
                                break;
                            }
                            if let BodyState::Chunked { done, .. } = &mut body {
                                *done = true;
                            }
                        }
                        Err(e) => {
                            add(&stats.parse_errors, 1);
                            failure = Some(Response::error(e.status(), e.reason()));
                            break;
                        }
                    }
                }
                // Slots for a typical request's fields; the full set is
                // initialised only for a request that fills these.
                let mut few = [Header::EMPTY; FEW_HEADERS];
                let mut many = None;
                let limit = cfg.limits.max_headers.min(MAX_HEADERS);
                let avail = &self.rbuf[off..];
                if let BodyState::Head = body {
                    if find_head_end(avail, scanned.saturating_sub(3)).is_none() {
                        scanned = avail.len();
                        // Over the limits, the parser names the error (414/431/400)
                        // instead of letting the buffer grow; and once the request
                        // line has ended, a malformed one is refused at once rather
                        // than after a timeout. Each check parses the head at most
                        // once per request, so a client sending it a byte at a time
                        // costs O(n), not a parse of the whole head per read.
                        let line_ended = !line_checked && memchr::memchr(b'\n', avail).is_some();
                        line_checked |= line_ended;
                        let over = if line_checked {
                            avail.len() >= cfg.limits.max_head_bytes
                        } else {
                            avail.len() > cfg.limits.max_request_line
                        };
                        if line_ended || over {
                            if let Err(e) = parse_head(avail, &mut few, &mut many, limit, cfg) {
                                add(&stats.parse_errors, 1);
                                failure = Some(Response::error(e.status(), e.reason()));
                            }
                        }
                        break;
                    }
                    scanned = 0;
                }
                let head = match parse_head(avail, &mut few, &mut many, limit, cfg) {
                    Ok(Parsed::Complete(h)) => h,
                    Ok(Parsed::Partial) => break,
                    Err(e) => {
                        add(&stats.parse_errors, 1);
                        failure = Some(Response::error(e.status(), e.reason()));
                        break;
                    }
                };
                if let BodyState::Head = body {
                    body = match head.framing {
                        BodyFraming::None => BodyState::Length {
                            total: head.head_len,
                        },
                        BodyFraming::Length(n) if n > cfg.max_body => {
                            failure = Some(Response::error(
                                Status::CONTENT_TOO_LARGE,
                                "request body too large",
                            ));
                            break;
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
                            done: false,
                        },
                    };
                    if head.expect_continue && head.version == Version::Http11 {
                        let complete =
                            matches!(body, BodyState::Length { total } if avail.len() >= total);
                        if !complete && !sent_continue {
                            // The client waits for this before sending the body.
                            sent_continue = true;
                            self.wbuf
                                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                        }
                    }
                    if let BodyState::Chunked { .. } = body {
                        // Decoded at the top of the next iteration.
                        continue;
                    }
                }
                let (consumed, body_bytes): (usize, &[u8]) = match &body {
                    BodyState::Head => unreachable!("set above"),
                    BodyState::Length { total } if avail.len() < *total => break,
                    BodyState::Length { total } => (*total, &avail[head.head_len..*total]),
                    BodyState::Chunked { head_len, body, .. } => (*head_len, body),
                };
                add(&stats.requests, 1);
                add(&stats.bytes_in, consumed as u64);
                let head_only = head.method == "HEAD";
                let mut params = Params::default();
                let mut route = usize::MAX;
                let response = match self
                    .shared
                    .router
                    .find(head.method, head.path(), &mut params)
                {
                    Err(r) => r,
                    Ok((handler, index)) => {
                        route = index;
                        let req = Request::new(&head, &params, body_bytes);
                        // A sync handler runs inside `dispatch`; an async one
                        // may panic building its future or polling it. Either
                        // way this request gets a 500 and the responses
                        // before it on the connection still go out. So do
                        // the middleware hooks.
                        let router = &self.shared.router;
                        let dispatched =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match router
                                .run_before(&req)
                            {
                                Some(r) => Dispatch::Ready(r),
                                None => router.dispatch(handler, &req),
                            }));
                        let outcome = match dispatched {
                            Ok(Dispatch::Ready(r)) => Ok(r),
                            Ok(Dispatch::Pending(fut)) => {
                                bounded(CatchUnwind(fut), &mut self.timer, cfg.handler_timeout)
                                    .await
                                    .unwrap_or_else(|| {
                                        // Dropped: its work stops at its
                                        // next await.
                                        add(&stats.timeouts, 1);
                                        Ok(Response::error(
                                            Status::SERVICE_UNAVAILABLE,
                                            "handler timed out",
                                        ))
                                    })
                            }
                            Err(_) => Err(()),
                        };
                        let mut r = outcome.unwrap_or_else(|()| {
                            close = true;
                            Response::error(Status::INTERNAL_SERVER_ERROR, "internal server error")
                        });
                        if router.has_after() {
                            let after =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    router.run_after(&req, &mut r)
                                }));
                            if after.is_err() {
                                close = true;
                                r = Response::error(
                                    Status::INTERNAL_SERVER_ERROR,
                                    "internal server error",
                                );
                            }
                        }
                        r
                    }
                };
                let mut response = response;
                self.shared.router.finish(&mut response);
                close |= police(&mut response);
                let now = rt::time::now();
                let took = request_started.map_or(Duration::ZERO, |t| now - t);
                if let Some(routes) = &self.shared.routes {
                    let index = route.min(routes.unmatched());
                    routes.record(index, response.status.as_u16(), took);
                }
                if cfg.access_log {
                    tracing::info!(
                        target: "tidepool::access",
                        method = head.method,
                        path = head.path(),
                        status = response.status.as_u16(),
                        micros = took.as_micros() as u64,
                        "request"
                    );
                }
                // Checked after the handler: shutdown may have come meanwhile.
                close |= !head.keep_alive || rt::shutdown_requested();
                let framing = Framing {
                    head_only,
                    close,
                    keep_alive_10: head.version == Version::Http10,
                };
                let before = self.wbuf.len();
                let date = *self.shared.date.borrow_mut().get(now);
                encode(&response, &date, framing, &mut self.wbuf);
                add(&stats.bytes_out, (self.wbuf.len() - before) as u64);
                add(&stats.responses[class(response.status)], 1);
                off += consumed;
                handled += 1;
                body = BodyState::Head;
                request_started = None;
                sent_continue = false;
                line_checked = false;
                if close {
                    break;
                }
            }
            if let Some(response) = failure {
                self.fail(response).await;
                return;
            }
            if off > 0 {
                if off == self.rbuf.len() {
                    self.rbuf.clear();
                } else {
                    self.rbuf.drain(..off);
                }
            }
            if close || (handled == cfg.max_pipelined && !self.rbuf.is_empty()) {
                if close {
                    self.end_tls();
                }
                if (!self.wbuf.is_empty() || self.tls.is_some()) && !self.flush().await {
                    return;
                }
                if close {
                    self.linger().await;
                    return;
                }
                // More pipelined requests may already be buffered.
                continue;
            }
            let handshaking = self.tls.as_ref().is_some_and(|t| t.is_handshaking());
            let idle = self.rbuf.is_empty() && matches!(body, BodyState::Head) && !handshaking;
            let deadline = if handshaking {
                self.accepted + cfg.tls_handshake_timeout
            } else if idle {
                if rt::shutdown_requested() {
                    return;
                }
                if self.rbuf.capacity() > cfg.read_buffer * 4 {
                    // A large body grew the buffer: an idle connection gives it back.
                    self.rbuf = Vec::with_capacity(cfg.read_buffer);
                }
                rt::time::now() + cfg.idle_timeout
            } else {
                if let BodyState::Length { total } = body {
                    // Room for the whole body, so it arrives without copies.
                    if self.rbuf.capacity() < total {
                        self.rbuf.reserve(total - self.rbuf.len());
                    }
                }
                let started = request_started.unwrap_or_else(rt::time::now);
                match body {
                    BodyState::Head => started + cfg.header_timeout,
                    _ => started + cfg.header_timeout + cfg.body_timeout,
                }
            };
            match self.exchange(deadline, idle).await {
                ReadEvent::Data => {}
                ReadEvent::WriteFailed => return,
                ReadEvent::Timeout => {
                    add(&stats.timeouts, 1);
                    if !idle {
                        // A request was under way: tell the client why.
                        self.fail(Response::error(Status::REQUEST_TIMEOUT, "request timeout"))
                            .await;
                    }
                    return;
                }
                ReadEvent::Error => {
                    // A TLS alert, if one is due, goes out best effort.
                    if self.tls.is_some() {
                        self.flush().await;
                    }
                    return;
                }
                ReadEvent::Eof | ReadEvent::Shutdown => return,
            }
        }
    }

    /// Sends the pending responses and receives more bytes at the same
    /// time: both operations go to the kernel in one submission, so a
    /// keep-alive request costs one loop turn, not two. The receive is
    /// bounded by `read_deadline` and, for an idle connection, by the
    /// worker's shutdown; the send by the write timeout.
    async fn exchange(&mut self, read_deadline: Instant, idle: bool) -> ReadEvent {
        let cfg = &self.shared.config;
        let mut rbuf = std::mem::take(&mut self.rbuf);
        if rbuf.capacity() - rbuf.len() < 512 {
            rbuf.reserve(cfg.read_buffer);
        }
        let wbuf = self.take_output();
        let mut write_done = wbuf.is_empty();
        // The loop turn's clock: deadlines need no fresher time than that.
        let write_deadline = rt::time::now() + cfg.write_timeout;
        self.timer.reset(if write_done {
            read_deadline
        } else {
            write_deadline.min(read_deadline)
        });
        let mut write = pin!(self.stream.write_all(wbuf));
        // Over TLS the ciphertext is received apart and decrypted into
        // `rbuf` below.
        let tls = self.tls.is_some();
        let (into, mut plain) = if tls {
            let mut c = std::mem::take(&mut self.cipher_in);
            c.clear();
            c.reserve(cfg.read_buffer);
            (c, Some(rbuf))
        } else {
            (rbuf, None)
        };
        // The connection's multishot receive stays armed: no submission here.
        let mut read = pin!(self.stream.recv(into));
        let mut got: Option<(std::io::Result<usize>, Vec<u8>)> = None;
        let shutdown = &mut self.shutdown;
        let timer = &mut self.timer;
        let wslot = if tls {
            &mut self.cipher_out
        } else {
            &mut self.wbuf
        };
        let stats = &*self.shared.stats;
        let outcome = std::future::poll_fn(|cx| {
            if !write_done {
                if let Poll::Ready((res, buf)) = write.as_mut().poll(cx) {
                    if res.is_err() {
                        return Poll::Ready(Some(ReadEvent::WriteFailed));
                    }
                    *wslot = recycle(buf);
                    write_done = true;
                    timer.reset(read_deadline);
                }
            }
            if got.is_none() {
                if let Poll::Ready(r) = read.as_mut().poll(cx) {
                    got = Some(r);
                }
            }
            if write_done && got.is_some() {
                // The read buffer is handed back below.
                return Poll::Ready(None);
            }
            if Pin::new(&mut *timer).poll(cx).is_ready() {
                if !write_done && Instant::now() >= write_deadline {
                    add(&stats.timeouts, 1);
                    return Poll::Ready(Some(ReadEvent::WriteFailed));
                }
                if got.is_none() && Instant::now() >= read_deadline {
                    return Poll::Ready(Some(ReadEvent::Timeout));
                }
                // Fired for the other deadline: re-arm for what remains.
                timer.reset(if write_done {
                    read_deadline
                } else {
                    write_deadline
                });
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if idle && write_done && got.is_none() && Pin::new(&mut *shutdown).poll(cx).is_ready() {
                return Poll::Ready(Some(ReadEvent::Shutdown));
            }
            Poll::Pending
        })
        .await;
        if let Some(event) = outcome {
            // Ops still in flight are dropped: their buffers stay parked
            // until their completions; the connection ends.
            return event;
        }
        let (res, buf) = got.expect("read finished");
        let Some(mut rbuf) = plain.take() else {
            self.rbuf = buf;
            return match res {
                Ok(0) => ReadEvent::Eof,
                Ok(_) => ReadEvent::Data,
                Err(_) => ReadEvent::Error,
            };
        };
        self.cipher_in = buf;
        let event = match res {
            Ok(0) => ReadEvent::Eof,
            Err(_) => ReadEvent::Error,
            Ok(_) => {
                let tls = self.tls.as_mut().expect("tls connection");
                let before = rbuf.len();
                match tls.receive(&self.cipher_in, &mut rbuf) {
                    // The alert, if one is due, goes out best effort.
                    Err(_) => {
                        add(&self.shared.stats.parse_errors, 1);
                        ReadEvent::Error
                    }
                    Ok(()) if tls.peer_closed() && rbuf.len() == before => ReadEvent::Eof,
                    Ok(()) => ReadEvent::Data,
                }
            }
        };
        self.rbuf = rbuf;
        event
    }

    /// What goes to the socket next: the responses, or over TLS their
    /// records with whatever the session itself has to say (handshake
    /// flights, alerts, `close_notify`; the plaintext buffer stays here).
    fn take_output(&mut self) -> Vec<u8> {
        let plain = std::mem::take(&mut self.wbuf);
        let Some(tls) = self.tls.as_mut() else {
            return plain;
        };
        if !plain.is_empty() {
            // Into rustls' own buffer: cannot fail.
            let _ = tls.send(&plain);
        }
        self.wbuf = recycle(plain);
        let mut out = std::mem::take(&mut self.cipher_out);
        out.clear();
        tls.take_output(&mut out);
        out
    }

    /// Sends the write buffer within the write timeout; false if the
    /// connection must be dropped.
    async fn flush(&mut self) -> bool {
        let buf = self.take_output();
        if buf.is_empty() {
            return true;
        }
        self.timer
            .reset(Instant::now() + self.shared.config.write_timeout);
        match race(&mut self.timer, self.stream.write_all(buf)).await {
            Some((Ok(()), buf)) => {
                if self.tls.is_some() {
                    self.cipher_out = recycle(buf);
                } else {
                    self.wbuf = recycle(buf);
                }
                true
            }
            Some((Err(_), _)) => false,
            None => {
                add(&self.shared.stats.timeouts, 1);
                false
            }
        }
    }

    /// Answers with an error and closes the connection.
    async fn fail(&mut self, mut response: Response) {
        self.shared.router.finish(&mut response);
        let now = rt::time::now();
        let date = *self.shared.date.borrow_mut().get(now);
        let before = self.wbuf.len();
        let framing = Framing {
            close: true,
            ..Framing::default()
        };
        encode(&response, &date, framing, &mut self.wbuf);
        add(
            &self.shared.stats.bytes_out,
            (self.wbuf.len() - before) as u64,
        );
        add(&self.shared.stats.responses[class(response.status)], 1);
        self.end_tls();
        if self.flush().await {
            self.linger().await;
        }
    }

    /// Queues `close_notify` after the last response, so both leave in one
    /// send: a graceful end the client can tell from a truncation.
    fn end_tls(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            // The responses first: rustls sends nothing queued after it.
            if !self.wbuf.is_empty() {
                let _ = tls.send(&self.wbuf);
                self.wbuf.clear();
            }
            tls.close();
        }
    }

    /// Half-closes and drains briefly before closing, so that unread request
    /// bytes do not turn the close into a reset that destroys the response
    /// before the client reads it.
    async fn linger(&mut self) {
        if self.stream.shutdown(std::net::Shutdown::Write).is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut drained = 0usize;
        while drained < 256 * 1024 {
            let mut buf = std::mem::take(&mut self.rbuf);
            buf.clear();
            self.timer.reset(deadline);
            let r = race(&mut self.timer, self.stream.recv(buf)).await;
            match r {
                Some((Ok(n), buf)) if n > 0 => {
                    drained += n;
                    self.rbuf = buf;
                }
                _ => return,
            }
        }
    }
}

/// An emptied write buffer, kept for the next responses unless a large
/// response grew it (an idle connection should not hold that memory).
fn recycle(mut buf: Vec<u8>) -> Vec<u8> {
    buf.clear();
    if buf.capacity() > 64 * 1024 {
        buf = Vec::new();
    }
    buf
}

fn class(status: Status) -> usize {
    (usize::from(status.as_u16() / 100)).clamp(1, 5) - 1
}
