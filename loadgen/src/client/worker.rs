//! One generator thread: a pinned event loop that owns a share of the
//! connections and of the schedule, over its own io_uring (`ring.rs`, on
//! the engine's event ring) or, where io_uring is unavailable,
//! edge-triggered epoll (`epoll.rs`).
//!
//! The loop is the whole client, as an event loop is in wrk: a connection
//! is a slot in a table whose phase says what it waits for, and there is
//! no task, waker or timer per request. Each turn:
//! - handles what the kernel reported since the last wait (completions, or
//!   readiness): a response is parsed where its bytes landed and a
//!   connection with room takes its next request at once;
//! - dispatches the arrivals that came due, looks the connections over when
//!   their earliest deadline passes, (re)connects;
//! - sends every request of the turn and waits, in one `io_uring_enter` or
//!   one `epoll_wait`.
//!
//! Everything but moving bytes is written once, here: the connection state
//! machine, the dispatch, the deadlines and the bookkeeping. A backend
//! ([`Io`]) starts connects and sends, stops what it does for a closing
//! connection, and reports what happened through the handlers below. The
//! worker is generic over it, so the ring's loop is compiled as before,
//! with no dynamic dispatch or allocation per request.
//!
//! A request that finds no free connection waits in the queue, and that wait
//! counts in its corrected latency because latency is measured from the
//! intended time. Timestamps are the turn's clock, read once after the wait:
//! a response is stamped when it was reaped, a request when its turn began
//! (it leaves at the end of that turn). Every second the thread hands its
//! interval (histograms and counters) to the collector.

mod epoll;
mod ring;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tidepool_engine::rt::{Backend, IoChoice};

use crate::client::exchange::{Exchange, InFlight};
use crate::client::http::{render_fixed_into, RequestTemplate, Target};
use crate::plan::config::Plan;
use crate::plan::schedule::{Arrivals, Phase, What};
use crate::report::stats::{record, Interval};
use crate::util::Rng;

use epoll::Epoll;
use ring::Ring;

/// What every worker shares (read-only).
pub struct Shared {
    pub target: Target,
    pub plan: Plan,
    pub templates: Vec<RequestTemplate>,
    pub pipeline: usize,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub late_after: Duration,
    pub max_queue: usize,
    /// How long after the schedule ends requests may still finish.
    pub drain: Duration,
    /// Dispatch on a grid of this step (zero: at each intended time).
    pub quantum: Duration,
    /// The I/O backend asked for, the environment already applied: `Auto`
    /// tries io_uring and falls back to epoll where it is unavailable.
    pub io: IoChoice,
}

/// Messages from the workers to the collector.
pub enum Msg {
    Interval(usize, Box<Interval>),
    /// The worker's kernel thread id (for its CPU time).
    Started(usize, i32),
    /// The backend the worker runs on, once it is set up.
    Io(usize, IoUsed),
    Done(usize),
    Fatal(usize, String),
    /// From the sampler thread, once a second.
    Tick(Box<crate::client::sampler::Tick>),
}

/// The backend a generator thread runs on, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IoUsed {
    pub backend: Backend,
    /// The engine's labels (`tidepool_io_backend{reason}`): `probe_ok`
    /// (io_uring set up under `auto`), `required`, `requested`, or why
    /// io_uring is unavailable: `seccomp_or_sysctl`, `not_in_kernel`,
    /// `setup_flags`, `memlock`.
    pub reason: &'static str,
}

impl fmt::Display for IoUsed {
    /// `io_uring` when it simply worked; otherwise the backend and why.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.backend, self.reason) {
            (Backend::IoUring, "probe_ok") => f.write_str("io_uring"),
            (b, reason) => write!(f, "{b} ({reason})"),
        }
    }
}

/// The engine's classification, so the generator and the server name a
/// cause alike.
use tidepool_engine::rt::backend::unavailable;

struct Pending {
    intended: Instant,
    class: u32,
    what: What,
}

/// After a failed connect, the pause before the next try, so a dead target
/// is not hammered with connects.
const CONNECT_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait: an interrupt is noticed within it.
const MAX_WAIT: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not connected: (re)connect at this time.
    Down(Instant),
    /// A connect is in flight; it is given up at this deadline.
    Connecting(Instant),
    Open,
    /// Being torn down: waits for the kernel to let go of its operations
    /// before the socket is closed and the slot reused (on the ring; on
    /// epoll nothing is left with the kernel, and this lasts no time).
    Closing(After),
    Finished,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    Reconnect(Instant),
    Finish,
}

struct Conn {
    state: State,
    socket: Option<Socket>,
    /// Operations the kernel holds for this connection (connect, receive,
    /// send); always 0 on epoll, where a syscall leaves nothing behind.
    ops: u8,
    /// A write of `out` is under way: on the ring the ring holds `out`
    /// until the send completes (and `out` is empty meanwhile); on epoll the bytes wait for the end of
    /// the turn or for room in the socket. No request is added meanwhile.
    sending: bool,
    ex: Exchange,
    /// Requests being written.
    out: Vec<u8>,
    written: usize,
    rng: Rng,
    connected_before: bool,
    /// Listed among the connections waiting for work (open loop).
    waiting: bool,
}

/// What a receive brought, for [`Worker::got`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Got {
    /// Bytes, fed to the exchange already (or none: nothing to do but
    /// take more requests if there is room).
    Data,
    /// Nothing that changes the connection.
    Nothing,
    /// The server closed its side.
    Eof,
    /// The bytes did not fit the requests in flight.
    Broken,
    /// The receive failed.
    Failed,
}

/// How a worker's connections reach the kernel: the io_uring ring or
/// epoll. The worker calls these statically (it is generic over its
/// backend); a backend reports back through [`Worker::connected`],
/// [`Worker::got`], [`Worker::sent`] and [`Worker::send_failed`].
trait Io: Sized {
    /// A new TCP socket for connection `i`, in place for this backend.
    fn socket(&mut self, i: usize, domain: Domain) -> io::Result<Socket>;
    /// Starts connecting connection `i`, whose socket is in place and whose
    /// state is `Connecting`.
    fn start_connect(w: &mut Worker<Self>, i: usize, now: Instant);
    /// Connection `i` just opened.
    fn opened(w: &mut Worker<Self>, i: usize);
    /// Writes connection `i`'s `out` from `written` on, setting `sending`
    /// until the bytes are all out ([`Worker::sent`]) or the write failed.
    fn send(w: &mut Worker<Self>, i: usize);
    /// Connection `i` is closing: stops what the kernel still does for it.
    fn cancel(w: &mut Worker<Self>, i: usize);
    /// Connection `i`'s socket is about to be closed.
    fn detach(&mut self, i: usize);
    /// Handles what the kernel reported during the last wait.
    fn reap(w: &mut Worker<Self>, now: Instant);
    /// The turn's last work before its wait is planned.
    fn flush(w: &mut Worker<Self>, now: Instant);
    /// Submits what is queued and waits until the kernel reports something
    /// or `deadline`. `busy` connections have a request out.
    fn wait(w: &mut Worker<Self>, now: Instant, deadline: Instant, busy: usize) -> io::Result<()>;
    /// The loop ended; `clean` when no operation can be in flight.
    fn finish(w: &mut Worker<Self>, clean: bool);
}

/// A TCP socket to `domain`, without Nagle: requests are small and each
/// must leave at once.
fn tcp_socket(domain: Domain, ty: Type) -> io::Result<Socket> {
    let s = Socket::new(domain, ty.cloexec(), Some(Protocol::TCP))?;
    s.set_tcp_nodelay(true)?;
    Ok(s)
}

/// The thread's interval bookkeeping: rolls to a new interval at each second.
struct Book {
    iv: Interval,
    next_roll: Instant,
    start: Instant,
    thread: usize,
    open: u64,
    tx: Sender<Msg>,
}

impl Book {
    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs()
    }

    /// Hands every finished interval before `sec` to the collector.
    fn roll(&mut self, sec: u64) {
        while self.iv.second < sec {
            let (classes, next) = (self.iv.classes.len(), self.iv.second + 1);
            let mut done = std::mem::replace(&mut self.iv, Interval::new(next, classes));
            done.open_connections = self.open;
            let _ = self.tx.send(Msg::Interval(self.thread, Box::new(done)));
        }
    }

    /// The interval `now` falls in.
    fn at(&mut self, now: Instant) -> &mut Interval {
        // Most calls fall in the current second: one comparison.
        if now >= self.next_roll {
            let sec = self.second(now);
            self.roll(sec);
            self.next_roll = self.start + Duration::from_secs(sec + 1);
        }
        &mut self.iv
    }
}

enum Take {
    Req(Pending),
    /// Nothing yet: the connection waits for the dispatcher.
    Wait,
    /// No more requests for anyone.
    NoMore,
}

/// Where requests come from: the mix directly (closed loop) or the queue
/// the dispatcher fills from the schedule.
struct Work {
    closed_loop: bool,
    start: Instant,
    /// The schedule's end: no new requests after it.
    end: Instant,
    /// Past it, whatever is still queued or in flight is given up.
    hard_stop: Instant,
    queue: VecDeque<Pending>,
    dispatch_done: bool,
    mix_rng: Rng,
    scratch: Vec<f64>,
}

impl Work {
    fn take(&mut self, shared: &Shared, now: Instant, book: &mut Book) -> Take {
        if crate::signal::interrupted() || now >= self.hard_stop {
            // Whatever is still queued is counted as dropped at the end.
            return Take::NoMore;
        }
        if self.closed_loop {
            if now >= self.end {
                return Take::NoMore;
            }
            let t = now.duration_since(self.start).as_secs_f64();
            let class = shared
                .plan
                .mix
                .pick(t, &mut self.mix_rng, &mut self.scratch) as u32;
            let iv = book.at(now);
            iv.counters.offered += 1;
            iv.class(class as usize).offered += 1;
            return Take::Req(Pending {
                intended: now,
                class,
                what: What::Mix,
            });
        }
        while let Some(p) = self.queue.pop_front() {
            if now.saturating_duration_since(p.intended) > shared.timeout {
                // It waited a whole timeout for a connection: give it up.
                book.at(now).counters.dropped += 1;
                continue;
            }
            return Take::Req(p);
        }
        if self.dispatch_done {
            Take::NoMore
        } else {
            Take::Wait
        }
    }

    /// Whether a connection that is down should stay down.
    fn over_for_connections(&self, now: Instant) -> bool {
        now >= self.hard_stop
            || crate::signal::interrupted()
            || (self.closed_loop && now >= self.end)
            || (!self.closed_loop && self.dispatch_done && self.queue.is_empty())
    }
}

struct Worker<B> {
    shared: Arc<Shared>,
    io: B,
    /// The target, which every connect points the kernel at.
    addr: SockAddr,
    conns: Vec<Conn>,
    /// Open-loop connections waiting for work, oldest first, so load
    /// spreads over them.
    waiting: VecDeque<usize>,
    work: Work,
    book: Book,
    arrivals: Option<Arrivals>,
    next_arrival: Option<(f64, What)>,
    /// When the next arrival is due (open loop).
    next_dispatch: Option<Instant>,
    dispatch_rng: Rng,
    dispatch_scratch: Vec<f64>,
    /// The first requests of a closed loop wait for the common start.
    started: bool,
    /// The earliest deadline of any connection (request or connect
    /// timeout, reconnect time, the end of the run): the connections are
    /// looked over when it passes, not per request.
    next_sweep: Instant,
}

/// Where a worker sits in the run.
struct Seat {
    thread: usize,
    threads: usize,
    connections: usize,
    start: Instant,
}

/// Runs one worker to the end of the run (blocking the calling thread).
pub fn run_worker(
    shared: Arc<Shared>,
    thread: usize,
    threads: usize,
    connections: usize,
    cpu: Option<usize>,
    start: Instant,
    tx: Sender<Msg>,
) {
    if let Some(cpu) = cpu {
        if let Err(e) = tidepool_engine::workers::pin_current_thread(cpu) {
            let _ = tx.send(Msg::Fatal(thread, format!("cannot pin to CPU {cpu}: {e}")));
            return;
        }
    }
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let _ = tx.send(Msg::Started(thread, tid));
    let seat = Seat {
        thread,
        threads,
        connections,
        start,
    };
    let _ = match run_chosen(shared, &seat, &tx) {
        Ok(()) => tx.send(Msg::Done(thread)),
        Err(e) => tx.send(Msg::Fatal(thread, e.to_string())),
    };
}

/// Sets up the backend `shared.io` asks for and runs the worker on it.
fn run_chosen(shared: Arc<Shared>, seat: &Seat, tx: &Sender<Msg>) -> io::Result<()> {
    let epoll = |reason| IoUsed {
        backend: Backend::Epoll,
        reason,
    };
    if shared.io == IoChoice::Epoll {
        let io = Epoll::new(seat.connections)?;
        return drive(io, epoll("requested"), shared, seat, tx);
    }
    let closed_loop = shared.plan.schedule.is_none();
    match Ring::new(seat.connections, closed_loop) {
        Ok(ring) => {
            let reason = if shared.io == IoChoice::IoUring {
                "required"
            } else {
                "probe_ok"
            };
            let used = IoUsed {
                backend: Backend::IoUring,
                reason,
            };
            drive(ring, used, shared, seat, tx)
        }
        Err(e) => match (shared.io, unavailable(&e.cause)) {
            (IoChoice::Auto, Some(reason)) => {
                let io = Epoll::new(seat.connections)?;
                drive(io, epoll(reason), shared, seat, tx)
            }
            (_, Some(reason)) => Err(io::Error::new(
                e.cause.kind(),
                format!(
                    "{e}; io_uring is unavailable here ({reason}): --io epoll \
                     (or {}=epoll) runs the generator on epoll",
                    tidepool_engine::rt::backend::IO_ENV
                ),
            )),
            (_, None) => Err(io::Error::new(e.cause.kind(), e.to_string())),
        },
    }
}

fn drive<B: Io>(
    io: B,
    used: IoUsed,
    shared: Arc<Shared>,
    seat: &Seat,
    tx: &Sender<Msg>,
) -> io::Result<()> {
    let _ = tx.send(Msg::Io(seat.thread, used));
    Worker::new(shared, seat, tx.clone(), io).run()
}

impl<B: Io> Worker<B> {
    fn new(shared: Arc<Shared>, seat: &Seat, tx: Sender<Msg>, io: B) -> Worker<B> {
        let (thread, start) = (seat.thread, seat.start);
        let plan = &shared.plan;
        let end = start + Duration::from_secs_f64(plan.duration());
        let conns = (0..seat.connections)
            .map(|id| Conn {
                state: State::Down(start.min(Instant::now())),
                socket: None,
                ops: 0,
                sending: false,
                ex: Exchange::with_depth(shared.pipeline),
                out: Vec::with_capacity(1024),
                written: 0,
                rng: Rng::new(
                    Rng::derive(plan.seed, ((thread as u64) << 32) | id as u64).next_u64(),
                ),
                connected_before: false,
                waiting: false,
            })
            .collect();
        let mut arrivals = plan
            .schedule
            .as_ref()
            .map(|s| Arrivals::new(s.clone(), thread, seat.threads, plan.poisson, plan.seed));
        let next_arrival = arrivals.as_mut().and_then(Iterator::next);
        let work = Work {
            closed_loop: plan.schedule.is_none(),
            start,
            end,
            hard_stop: end + shared.drain,
            queue: VecDeque::with_capacity(1024),
            dispatch_done: next_arrival.is_none(),
            mix_rng: Rng::derive(plan.seed, 0x313C_0000 + thread as u64),
            scratch: Vec::new(),
        };
        let book = Book {
            iv: Interval::new(0, plan.classes.len()),
            next_roll: start + Duration::from_secs(1),
            start,
            thread,
            open: 0,
            tx,
        };
        let dispatch_rng = Rng::derive(plan.seed, 0xD15C_0000 + thread as u64);
        let addr = SockAddr::from(shared.target.addr);
        Worker {
            shared,
            io,
            addr,
            conns,
            waiting: VecDeque::with_capacity(seat.connections),
            work,
            book,
            arrivals,
            next_arrival,
            next_dispatch: None,
            dispatch_rng,
            dispatch_scratch: Vec::new(),
            started: false,
            next_sweep: Instant::now(),
        }
    }

    fn run(mut self) -> io::Result<()> {
        let res = self.turns();
        B::finish(&mut self, res.is_ok());
        res?;
        self.last_interval();
        Ok(())
    }

    fn turns(&mut self) -> io::Result<()> {
        loop {
            let now = Instant::now();
            B::reap(self, now);
            self.keep_time(now);
            B::flush(self, now);
            if self.conns.iter().all(|c| c.state == State::Finished) {
                return Ok(());
            }
            self.enter(now)?;
        }
    }

    fn last_interval(&mut self) {
        let now = Instant::now();
        let left = self.work.queue.len() as u64;
        // The last interval is the one holding the end of the schedule (or
        // later, when requests drained past it).
        let last = if crate::signal::interrupted() {
            self.book.second(now)
        } else {
            self.book
                .second(now.max(self.work.end - Duration::from_nanos(1)))
        };
        self.book.roll(last);
        self.book.iv.counters.dropped += left;
        self.book.iv.open_connections = self.book.open;
        let iv = std::mem::replace(&mut self.book.iv, Interval::new(last + 1, 0));
        let _ = self
            .book
            .tx
            .send(Msg::Interval(self.book.thread, Box::new(iv)));
    }

    /// A connect ended; `ok` when the connection is up.
    fn connected(&mut self, i: usize, ok: bool, now: Instant) {
        let c = &mut self.conns[i];
        if !matches!(c.state, State::Connecting(_)) {
            self.settle(i);
            return;
        }
        if !ok {
            self.book.at(now).counters.connect_errors += 1;
            let retry = (now + CONNECT_BACKOFF).min(self.work.hard_stop);
            c.state = State::Closing(After::Reconnect(retry));
            self.settle(i);
            return;
        }
        c.state = State::Open;
        self.book.open += 1;
        if c.connected_before {
            self.book.at(now).counters.reconnects += 1;
        }
        c.connected_before = true;
        B::opened(self, i);
        self.fill(i, now);
    }

    /// What a receive on connection `i` brought (its bytes already fed to
    /// the exchange).
    fn got(&mut self, i: usize, got: Got, now: Instant) {
        let c = &mut self.conns[i];
        if c.state != State::Open {
            self.settle(i);
            return;
        }
        match got {
            Got::Data => self.fill(i, now),
            Got::Nothing => {}
            Got::Eof => {
                c.ex.eof(now, self.book.at(now));
                self.close(i, now);
            }
            Got::Broken | Got::Failed => {
                c.ex.fail_all(self.book.at(now), false);
                self.close(i, now);
            }
        }
    }

    /// Connection `i`'s requests are all out: it may take more.
    fn sent(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        c.sending = false;
        c.out.clear();
        c.written = 0;
        self.fill(i, now);
    }

    /// Writing connection `i`'s requests failed: the connection is lost.
    fn send_failed(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        c.sending = false;
        c.ex.fail_all(self.book.at(now), false);
        self.close(i, now);
    }

    fn connect(&mut self, i: usize, now: Instant) {
        let domain = Domain::for_address(self.shared.target.addr);
        let socket = match self.io.socket(i, domain) {
            Ok(s) => s,
            Err(_) => {
                self.book.at(now).counters.connect_errors += 1;
                let retry = (now + CONNECT_BACKOFF).min(self.work.hard_stop);
                self.conns[i].state = State::Down(retry);
                return;
            }
        };
        let budget = self
            .shared
            .connect_timeout
            .min(self.work.hard_stop.saturating_duration_since(now));
        let c = &mut self.conns[i];
        c.socket = Some(socket);
        c.state = State::Connecting(now + budget);
        B::start_connect(self, i, now);
    }

    /// Tears connection `i` down; what was in flight was accounted for by
    /// the caller. It reconnects unless the run is over for connections.
    fn close(&mut self, i: usize, now: Instant) {
        let after = if self.work.over_for_connections(now) {
            After::Finish
        } else {
            After::Reconnect(now)
        };
        self.close_then(i, after);
    }

    fn close_then(&mut self, i: usize, after: After) {
        let c = &mut self.conns[i];
        if c.state == State::Open {
            self.book.open -= 1;
        }
        c.state = State::Closing(after);
        B::cancel(self, i);
        self.settle(i);
    }

    /// Once the kernel has let go of a closing connection: closes the
    /// socket and frees the slot.
    fn settle(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let State::Closing(after) = c.state else {
            return;
        };
        if c.ops > 0 {
            return;
        }
        if c.socket.take().is_some() {
            self.io.detach(i);
        }
        let c = &mut self.conns[i];
        c.ex.reset();
        c.out.clear();
        c.written = 0;
        c.sending = false;
        c.state = match after {
            After::Reconnect(t) => State::Down(t),
            After::Finish => State::Finished,
        };
    }

    /// Lets connection `i` take requests while it has room, and sends them.
    fn fill(&mut self, i: usize, now: Instant) {
        let Worker {
            shared,
            conns,
            work,
            book,
            waiting,
            started,
            ..
        } = self;
        let c = &mut conns[i];
        if c.state != State::Open || c.sending || (work.closed_loop && !*started) {
            return;
        }
        let depth = shared.pipeline;
        let (mut sent, mut late) = (0u64, 0u64);
        let mut no_more = false;
        while c.ex.has_room(depth) {
            let p = match work.take(shared, now, book) {
                Take::Req(p) => p,
                Take::Wait => {
                    if !c.waiting {
                        c.waiting = true;
                        waiting.push_back(i);
                    }
                    break;
                }
                Take::NoMore => {
                    no_more = true;
                    break;
                }
            };
            let head = match p.what {
                What::Mix => {
                    let t = &shared.templates[p.class as usize];
                    t.render_into(&mut c.out, &mut c.rng);
                    t.is_head
                }
                What::Trace { phase, entry } => {
                    let Some(Phase::Trace(tr)) =
                        shared.plan.schedule.as_ref().map(|s| &s.phases[phase])
                    else {
                        unreachable!("trace arrival outside a trace phase")
                    };
                    let e = &tr.entries[entry];
                    render_fixed_into(
                        &mut c.out,
                        &shared.target.host_header,
                        &e.method,
                        &e.path,
                        &[],
                        e.body.as_deref(),
                    );
                    e.method == "HEAD"
                }
            };
            if now.saturating_duration_since(p.intended) > shared.late_after {
                late += 1;
            }
            sent += 1;
            c.ex.inflight.push_back(InFlight {
                intended: p.intended,
                // The turn's clock can be a little behind a dispatch made
                // in the same turn.
                sent: now.max(p.intended),
                class: p.class,
                head,
            });
        }
        if sent > 0 {
            let counters = &mut book.at(now).counters;
            counters.sent += sent;
            counters.late += late;
            B::send(self, i);
        } else if no_more && self.conns[i].ex.inflight.is_empty() {
            self.close_then(i, After::Finish);
        }
    }

    /// Time-driven work: intervals, arrivals, deadlines, connects.
    fn keep_time(&mut self, now: Instant) {
        self.book.at(now);
        if !self.work.closed_loop {
            self.dispatch(now);
        }
        if !self.started && now >= self.work.start {
            // Connected during the head start: the clock starts for
            // everyone at once.
            self.started = true;
            for i in 0..self.conns.len() {
                self.fill(i, now);
            }
        }
        if now >= self.next_sweep {
            self.sweep(now);
        }
    }

    fn sweep(&mut self, now: Instant) {
        let over = self.work.over_for_connections(now);
        for i in 0..self.conns.len() {
            match self.conns[i].state {
                State::Open if now >= self.work.hard_stop => {
                    let n = self.conns[i].ex.inflight.len() as u64;
                    self.book.at(now).counters.unfinished += n;
                    self.conns[i].ex.reset();
                    self.close_then(i, After::Finish);
                }
                State::Open => {
                    let c = &mut self.conns[i];
                    let due = c.ex.inflight.front().map(|f| f.sent + self.shared.timeout);
                    if due.is_some_and(|d| now >= d) {
                        c.ex.fail_all(self.book.at(now), true);
                        self.close(i, now);
                    } else if c.ex.inflight.is_empty() && !c.waiting {
                        // Idle with nothing listed: the run may have ended for it.
                        self.fill(i, now);
                    }
                }
                State::Connecting(deadline) if now >= deadline => {
                    self.book.at(now).counters.connect_errors += 1;
                    let after = if over {
                        After::Finish
                    } else {
                        After::Reconnect(now + CONNECT_BACKOFF)
                    };
                    self.close_then(i, after);
                }
                State::Down(_) if over => self.conns[i].state = State::Finished,
                State::Down(at) if now >= at => self.connect(i, now),
                _ => {}
            }
        }
    }

    /// Turns intended send times that came due into queued requests, and
    /// hands them to waiting connections.
    fn dispatch(&mut self, now: Instant) {
        self.next_dispatch = None;
        if !self.work.dispatch_done && crate::signal::interrupted() {
            self.work.dispatch_done = true;
        }
        while !self.work.dispatch_done {
            let Some((t, what)) = self.next_arrival else {
                self.work.dispatch_done = true;
                break;
            };
            let start = self.work.start;
            let intended = start + Duration::from_secs_f64(t);
            // With a quantum, arrivals due within one grid step leave
            // together: fewer wake-ups of the generator and the server, at
            // the price of up to one step of lateness (which the corrected
            // latency includes).
            let due = if self.shared.quantum.is_zero() {
                intended
            } else {
                let q = self.shared.quantum.as_nanos();
                let since = intended.duration_since(start).as_nanos();
                let up = since.div_ceil(q) * q;
                start + Duration::from_nanos(up.min(u128::from(u64::MAX)) as u64)
            };
            if due > now {
                self.next_dispatch = Some(due);
                break;
            }
            self.next_arrival = self.arrivals.as_mut().and_then(Iterator::next);
            let plan = &self.shared.plan;
            let class = match what {
                What::Mix => plan
                    .mix
                    .pick(t, &mut self.dispatch_rng, &mut self.dispatch_scratch),
                What::Trace { phase, entry } => {
                    match &plan.schedule.as_ref().expect("scheduled").phases[phase] {
                        Phase::Trace(tr) => tr.entries[entry].class,
                        Phase::Rate(_) => unreachable!("trace arrival in a rate phase"),
                    }
                }
            };
            let lag_us = now.saturating_duration_since(intended).as_micros() as u64;
            let full = self.work.queue.len() >= self.shared.max_queue;
            let iv = self.book.at(now);
            record(&mut iv.lag, lag_us);
            iv.counters.offered += 1;
            iv.class(class).offered += 1;
            if full {
                iv.counters.dropped += 1;
                continue;
            }
            self.work.queue.push_back(Pending {
                intended,
                class: class as u32,
                what,
            });
            self.hand_out(now);
        }
        if self.work.dispatch_done {
            // Waiting connections learn there is nothing more.
            while let Some(i) = self.waiting.pop_front() {
                self.conns[i].waiting = false;
                self.fill(i, now);
            }
        }
    }

    /// Gives queued requests to connections waiting for work.
    fn hand_out(&mut self, now: Instant) {
        while !self.work.queue.is_empty() {
            let Some(i) = self.waiting.pop_front() else {
                return;
            };
            self.conns[i].waiting = false;
            self.fill(i, now);
        }
    }

    /// Plans the wait: until the earliest of a connection's deadline, the
    /// next arrival, the next second and the start; then hands it to the
    /// backend, which submits the turn's work and waits.
    fn enter(&mut self, now: Instant) -> io::Result<()> {
        let mut busy = 0;
        let mut sweep = self.work.hard_stop;
        for c in &self.conns {
            let due = match c.state {
                State::Open => c.ex.inflight.front().map(|f| {
                    busy += 1;
                    f.sent + self.shared.timeout
                }),
                State::Down(at) => Some(at),
                State::Connecting(deadline) => Some(deadline),
                _ => None,
            };
            if let Some(d) = due {
                sweep = sweep.min(d);
            }
        }
        self.next_sweep = sweep;
        let mut deadline = (now + MAX_WAIT)
            .min(self.book.next_roll)
            .min(sweep.max(now));
        if let Some(d) = self.next_dispatch {
            deadline = deadline.min(d);
        }
        if !self.started {
            deadline = deadline.min(self.work.start);
        }
        B::wait(self, now, deadline, busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_is_named_with_its_reason_unless_io_uring_simply_worked() {
        let used = |backend, reason| IoUsed { backend, reason }.to_string();
        assert_eq!(used(Backend::IoUring, "probe_ok"), "io_uring");
        assert_eq!(used(Backend::IoUring, "required"), "io_uring (required)");
        assert_eq!(
            used(Backend::Epoll, "seccomp_or_sysctl"),
            "epoll (seccomp_or_sysctl)"
        );
    }
}
