//! Drives one connection's state machine (`conn.rs`) on the worker's ring:
//! sends and receives, TLS records, deadlines, and the handlers (routing,
//! middleware, panics, the handler timeout), with the server's counters.
//!
//! The input buffer is lent to the kernel for each receive; request heads
//! and bodies borrow it, so parsing copies nothing.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::conn::{header_slots, recycle, Conn, Incoming, Io, Next};
use super::date::DateCache;
use super::response::Response;
use super::route_stats::RouteStats;
use super::router::{Dispatch, Handler, Params, Request, Router};
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

/// How a receive (with the send beside it) ended.
enum ReadEvent {
    Data,
    /// The responses could not be sent (error or write timeout).
    WriteFailed,
    Eof,
    Timeout,
    Shutdown,
    Error,
}

struct Driver<'s, S> {
    conn: Conn<'s>,
    stream: TcpStream,
    shared: &'s Shared<S>,
    /// HTTPS: the session, and its ciphertext buffers (in, out). The state
    /// machine's buffers stay plaintext, so parsing and encoding do not
    /// change.
    tls: Option<Box<Session>>,
    cipher_in: Vec<u8>,
    cipher_out: Vec<u8>,
    accepted: Instant,
    timer: Sleep,
    /// Registered once per connection, not once per read.
    shutdown: ShutdownSignal,
    /// Whether this connection's last request went to an async handler.
    async_last: bool,
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
    let mut driver = Driver {
        conn: Conn::new(&shared.config),
        stream,
        shared,
        tls,
        cipher_in: Vec::new(),
        cipher_out: Vec::new(),
        accepted: rt::time::now(),
        timer: sleep_until(Instant::now() + shared.config.idle_timeout),
        shutdown: shutdown_signal(),
        async_last: false,
    };
    // Declared after `driver`, so dropped before it: the count is down
    // before the socket closes (on epoll the close is immediate, and a
    // client that saw it may read the count at once).
    let _guard = OpenGuard { shared };
    driver.run().await;
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

/// Counts a response in the route's histogram and the access log.
fn record<S>(
    shared: &Shared<S>,
    incoming: &Incoming<'_>,
    route: usize,
    status: Status,
    now: Instant,
) {
    if shared.routes.is_none() && !shared.config.access_log {
        return;
    }
    // Most requests are answered in the loop turn that read them, whose
    // clock they share: no subtraction (about 40 instructions) for those.
    let took = if now == incoming.started {
        Duration::ZERO
    } else {
        now.saturating_duration_since(incoming.started)
    };
    if let Some(routes) = &shared.routes {
        routes.record(route.min(routes.unmatched()), status.as_u16(), took);
    }
    if shared.config.access_log {
        let head = &incoming.head;
        tracing::info!(
            target: "tidepool::access",
            method = head.method,
            path = head.path(),
            status = status.as_u16(),
            micros = took.as_micros() as u64,
            "request"
        );
    }
}

/// What `Driver::answer_ready` did with the front of the buffer.
enum Ready {
    /// Answered a request (or there was no whole one yet to look at): look again.
    Next,
    /// Nothing more can be answered before more input arrives.
    Stop,
    /// The request's handler is async; it is still at the front.
    Async,
}

/// The handler's outcome made into the response that goes out: a panic
/// becomes a 500, the after-middleware runs (a panic there is a 500 too),
/// then the error renderer, and the route's numbers are recorded. `handled`
/// is the request and its route when a handler ran (not for a 404 or 405).
/// Returns the response and whether a panic must close the connection.
#[inline(always)]
fn conclude<S: 'static>(
    shared: &Shared<S>,
    incoming: &Incoming<'_>,
    handled: Option<(&Request<'_>, usize)>,
    outcome: Result<Response, ()>,
) -> (Response, bool) {
    let router = &shared.router;
    let mut panicked = outcome.is_err();
    let mut response = outcome.unwrap_or_else(|()| internal_error());
    if let Some((req, _)) = handled.filter(|_| router.has_after()) {
        let after = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            router.run_after(req, &mut response)
        }));
        if after.is_err() {
            panicked = true;
            response = internal_error();
        }
    }
    router.finish(&mut response);
    let route = handled.map_or(usize::MAX, |(_, route)| route);
    record(shared, incoming, route, response.status, rt::time::now());
    (response, panicked)
}

impl<S: 'static> Driver<'_, S> {
    async fn run(&mut self) {
        let stats = &*self.shared.stats;
        loop {
            // Every complete request in the buffer, in order.
            loop {
                // Most passes end here, the buffer empty after its last
                // request: the header slots (half a kilobyte to fill) are
                // made only when there is input to parse.
                if !self.conn.has_input() {
                    break;
                }
                // Synchronous handlers are answered off the task's state
                // (`answer_ready`), unless this connection's last request
                // went to an async handler: then this one most likely does
                // too, and is parsed once, here, rather than there and again.
                if !self.async_last {
                    match self.answer_ready() {
                        Ready::Next => continue,
                        Ready::Stop => break,
                        Ready::Async => {}
                    }
                }
                // Any request can be answered here; an async handler's
                // future borrows its request across awaits, so the head is
                // parsed into slots that live in this task.
                let mut few = header_slots();
                let mut many = None;
                let next = self.conn.next_request(rt::time::now(), &mut few, &mut many);
                let incoming = match next {
                    Next::Request(ref incoming) => incoming,
                    Next::Again => continue,
                    Next::Wait => break,
                    Next::Reject(response) => {
                        add(&stats.parse_errors, 1);
                        self.reject(response);
                        break;
                    }
                };
                add(&stats.requests, 1);
                add(&stats.bytes_in, incoming.wire_len as u64);
                let head = &incoming.head;
                let router = &self.shared.router;
                let mut params = None;
                let (handler, route) = match router.find(head.method, head.path(), &mut params) {
                    Ok(found) => found,
                    Err(response) => {
                        self.async_last = false;
                        let (response, panicked) =
                            conclude(self.shared, incoming, None, Ok(response));
                        self.queue(response, panicked);
                        continue;
                    }
                };
                self.async_last = matches!(handler, Handler::Async(_));
                let req = Request::new(head, Params::of(&params), incoming.body);
                // A sync handler runs inside `dispatch`; an async one may
                // panic building its future or polling it. Either way this
                // request gets a 500 and the responses before it on the
                // connection still go out. So do the middleware hooks. In a
                // block of its own, so the dispatch (and the future that
                // borrows the connection) is gone before the response is
                // queued.
                let outcome = {
                    let dispatched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        match router.run_before(&req) {
                            Some(r) => Dispatch::Ready(r),
                            None => router.dispatch(handler, &req),
                        }
                    }));
                    match dispatched {
                        Ok(Dispatch::Ready(r)) => Ok(r),
                        Ok(Dispatch::Pending(fut)) => bounded(
                            CatchUnwind(fut),
                            &mut self.timer,
                            self.shared.config.handler_timeout,
                        )
                        .await
                        .unwrap_or_else(|| {
                            // Dropped: its work stops at its next await.
                            add(&stats.timeouts, 1);
                            Ok(Response::error(
                                Status::SERVICE_UNAVAILABLE,
                                "handler timed out",
                            ))
                        }),
                        Err(_) => Err(()),
                    }
                };
                let (response, panicked) =
                    conclude(self.shared, incoming, Some((&req, route)), outcome);
                self.queue(response, panicked);
            }
            let handshake = self
                .tls
                .as_ref()
                .is_some_and(|t| t.is_handshaking())
                .then(|| self.accepted + self.shared.config.tls_handshake_timeout);
            match self
                .conn
                .poll_io(rt::time::now(), handshake, rt::shutdown_requested())
            {
                Io::Close { drain } => {
                    self.end_tls();
                    if self.flush().await && drain {
                        self.linger().await;
                    }
                    return;
                }
                Io::Flush => {
                    if !self.flush().await {
                        return;
                    }
                }
                Io::Receive { deadline, idle } => match self.exchange(deadline, idle).await {
                    ReadEvent::Data => {}
                    ReadEvent::WriteFailed => return,
                    ReadEvent::Timeout => {
                        add(&stats.timeouts, 1);
                        // Mid-handshake there is no one to answer.
                        if handshake.is_none() {
                            if let Some(response) = self.conn.timed_out() {
                                // A request was under way: tell the client why.
                                self.reject(response);
                                self.end_tls();
                                if self.flush().await {
                                    self.linger().await;
                                }
                            }
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
                },
            }
        }
    }

    /// Answers the request at the front of the buffer when its handler is
    /// synchronous, or when it has none (404, 405), or hands it back
    /// ([`Ready::Async`]) for `run` to answer in the task. On this path
    /// the request's header slots, head, route parameters and response
    /// live on the worker's stack, whose cache lines every connection
    /// shares and finds warm; in the task they were lines of this
    /// connection's own, evicted by the time its next request came
    /// (`benches/icount-server.sh --cache`). Not inlined, so they stay
    /// out of the task's state.
    #[inline(never)]
    fn answer_ready(&mut self) -> Ready {
        let stats = &*self.shared.stats;
        let mut few = header_slots();
        let mut many = None;
        let next = self.conn.next_request(rt::time::now(), &mut few, &mut many);
        // Borrowed where it lies: the request is over a hundred bytes.
        let incoming = match next {
            Next::Request(ref incoming) => incoming,
            Next::Again => return Ready::Next,
            Next::Wait => return Ready::Stop,
            Next::Reject(response) => {
                add(&stats.parse_errors, 1);
                self.reject(response);
                return Ready::Stop;
            }
        };
        let head = &incoming.head;
        let router = &self.shared.router;
        let mut params = None;
        let (response, panicked) = match router.find(head.method, head.path(), &mut params) {
            Ok((Handler::Async(_), _)) => {
                self.conn.hand_back();
                return Ready::Async;
            }
            Err(response) => {
                add(&stats.requests, 1);
                add(&stats.bytes_in, incoming.wire_len as u64);
                conclude(self.shared, incoming, None, Ok(response))
            }
            Ok((Handler::Sync(f), route)) => {
                add(&stats.requests, 1);
                add(&stats.bytes_in, incoming.wire_len as u64);
                let req = Request::new(head, Params::of(&params), incoming.body);
                // A panic gets this request a 500 and closes the
                // connection after it; the responses before it still go out.
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    router
                        .run_before(&req)
                        .unwrap_or_else(|| f(&req, router.state()))
                }))
                .map_err(|_| ());
                conclude(self.shared, incoming, Some((&req, route)), outcome)
            }
        };
        self.queue(response, panicked);
        Ready::Next
    }

    /// Queues the response to the request handed out last. A panic closes
    /// the connection after it; so does a shutdown that came meanwhile.
    #[inline(always)]
    fn queue(&mut self, response: Response, panicked: bool) {
        let stats = &*self.shared.stats;
        let status = response.status;
        let close = panicked || rt::shutdown_requested();
        let date = *self.shared.date.borrow_mut().get(rt::time::now());
        let n = self.conn.respond(response, &date, close);
        add(&stats.bytes_out, n as u64);
        add(&stats.responses[class(status)], 1);
    }

    /// Queues an error response through the error renderer; the state
    /// machine closes after it.
    fn reject(&mut self, mut response: Response) {
        self.shared.router.finish(&mut response);
        let date = *self.shared.date.borrow_mut().get(rt::time::now());
        let n = self.conn.reject(&response, &date);
        add(&self.shared.stats.bytes_out, n as u64);
        add(&self.shared.stats.responses[class(response.status)], 1);
    }

    /// Sends the pending responses and receives more bytes at the same
    /// time: both operations go to the kernel in one submission, so a
    /// keep-alive request costs one loop turn, not two. The receive is
    /// bounded by `read_deadline` and, for an idle connection, by the
    /// worker's shutdown; the send by the write timeout.
    async fn exchange(&mut self, read_deadline: Instant, idle: bool) -> ReadEvent {
        let cfg = &self.shared.config;
        let rbuf = self.conn.take_input();
        let wbuf = self.take_output();
        let mut write_done = wbuf.is_empty();
        // The loop turn's clock: deadlines need no fresher time than that.
        let write_deadline = rt::time::now() + cfg.write_timeout;
        self.timer.reset(if write_done {
            read_deadline
        } else {
            write_deadline.min(read_deadline)
        });
        // While the next input is awaited too, a send that goes out in full
        // does not wake this task: the input's arrival (or the timer, or a
        // shutdown) finds it done. That saves a wake-up and a poll per
        // response. Waiting on the send alone, the task has it wake it.
        let quiet = Cell::new(true);
        let mut write = pin!(self.stream.write_all_quiet(wbuf, &quiet));
        // Over TLS the ciphertext is received apart and decrypted into the
        // input buffer below.
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
        let mut sent: Option<Vec<u8>> = None;
        let shutdown = &mut self.shutdown;
        let timer = &mut self.timer;
        let stats = &*self.shared.stats;
        let outcome = std::future::poll_fn(|cx| {
            loop {
                if !write_done {
                    quiet.set(got.is_none());
                    if let Poll::Ready((res, buf)) = write.as_mut().poll(cx) {
                        if res.is_err() {
                            return Poll::Ready(Some(ReadEvent::WriteFailed));
                        }
                        sent = Some(buf);
                        write_done = true;
                        timer.reset(read_deadline);
                    }
                }
                if got.is_none() {
                    if let Poll::Ready(r) = read.as_mut().poll(cx) {
                        got = Some(r);
                        if !write_done {
                            // Now waiting on the send alone: poll it again,
                            // so that its completion wakes this task.
                            continue;
                        }
                    }
                }
                break;
            }
            if write_done && got.is_some() {
                // The input buffer is handed back below.
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
            if idle && got.is_none() && Pin::new(&mut *shutdown).poll(cx).is_ready() {
                if !write_done {
                    // Finish the send first, woken by its completion.
                    quiet.set(false);
                    match write.as_mut().poll(cx) {
                        Poll::Ready((Ok(()), buf)) => sent = Some(buf),
                        Poll::Ready((Err(_), _)) => {
                            return Poll::Ready(Some(ReadEvent::WriteFailed))
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
                return Poll::Ready(Some(ReadEvent::Shutdown));
            }
            Poll::Pending
        })
        .await;
        if let Some(buf) = sent {
            // Field by field: the dropped operations still borrow the stream.
            if tls {
                self.cipher_out = recycle(buf);
            } else {
                self.conn.put_output(buf);
            }
        }
        if let Some(event) = outcome {
            // Ops still in flight are dropped: their buffers stay parked
            // until their completions; the connection ends.
            return event;
        }
        let (res, buf) = got.expect("read finished");
        let Some(mut rbuf) = plain.take() else {
            self.conn.put_input(buf);
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
        self.conn.put_input(rbuf);
        event
    }

    /// What goes to the socket next: the responses, or over TLS their
    /// records with whatever the session itself has to say (handshake
    /// flights, alerts, `close_notify`; the plaintext buffer stays with
    /// the state machine).
    fn take_output(&mut self) -> Vec<u8> {
        let plain = self.conn.take_output();
        let Some(tls) = self.tls.as_mut() else {
            return plain;
        };
        if !plain.is_empty() {
            // Into rustls' own buffer: cannot fail.
            let _ = tls.send(&plain);
        }
        self.conn.put_output(plain);
        let mut out = std::mem::take(&mut self.cipher_out);
        out.clear();
        tls.take_output(&mut out);
        out
    }

    /// Gives back a buffer `take_output` lent to a send.
    fn put_output(&mut self, buf: Vec<u8>) {
        if self.tls.is_some() {
            self.cipher_out = recycle(buf);
        } else {
            self.conn.put_output(buf);
        }
    }

    /// Sends the output within the write timeout; false if the connection
    /// must be dropped.
    async fn flush(&mut self) -> bool {
        let buf = self.take_output();
        if buf.is_empty() {
            self.put_output(buf);
            return true;
        }
        self.timer
            .reset(Instant::now() + self.shared.config.write_timeout);
        match race(&mut self.timer, self.stream.write_all(buf)).await {
            Some((Ok(()), buf)) => {
                self.put_output(buf);
                true
            }
            Some((Err(_), _)) => false,
            None => {
                add(&self.shared.stats.timeouts, 1);
                false
            }
        }
    }

    /// Queues `close_notify` after the last response, so both leave in one
    /// send: a graceful end the client can tell from a truncation.
    fn end_tls(&mut self) {
        if self.tls.is_none() {
            return;
        }
        // The responses first: rustls sends nothing queued after it.
        let plain = self.conn.take_output();
        let tls = self.tls.as_mut().expect("checked above");
        if !plain.is_empty() {
            let _ = tls.send(&plain);
        }
        self.conn.put_output(plain);
        tls.close();
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
        let mut buf = Vec::with_capacity(4096);
        while drained < 256 * 1024 {
            buf.clear();
            self.timer.reset(deadline);
            match race(&mut self.timer, self.stream.recv(buf)).await {
                Some((Ok(n), b)) if n > 0 => {
                    drained += n;
                    buf = b;
                }
                _ => return,
            }
        }
    }
}

fn internal_error() -> Response {
    Response::error(Status::INTERNAL_SERVER_ERROR, "internal server error")
}

fn class(status: Status) -> usize {
    (usize::from(status.as_u16() / 100)).clamp(1, 5) - 1
}
