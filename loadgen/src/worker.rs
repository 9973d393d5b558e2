//! One generator thread: a pinned loop over its own io_uring that owns a
//! share of the connections and of the schedule.
//!
//! The loop is the whole client, as an event loop is in wrk: a connection
//! is a slot in a table whose phase says what it waits for, and there is
//! no task, waker or timer per request. Each turn:
//! - reaps completions: a response is parsed where the kernel put it (a
//!   provided buffer of the multishot receive) and a connection with room
//!   takes its next request at once;
//! - dispatches the arrivals that came due, checks deadlines once a
//!   millisecond, (re)connects;
//! - submits every send of the turn and waits, in one `io_uring_enter`.
//!
//! A request that finds no free connection waits in the queue, and that wait
//! counts in its corrected latency because latency is measured from the
//! intended time. Timestamps are the turn's clock, read once after the wait:
//! a response is stamped when it was reaped, a request when its turn began
//! (it leaves at the end of that turn). Every second the thread hands its
//! interval (histograms and counters) to the collector.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::os::fd::AsRawFd;
use tidepool_engine::rt::bufring::{BufRing, GROUP};

use crate::config::Plan;
use crate::exchange::{Exchange, InFlight};
use crate::http::{render_fixed_into, RequestTemplate, Target};
use crate::schedule::{Arrivals, Phase, What};
use crate::stats::{record, Interval};
use crate::util::Rng;

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
}

/// Messages from the workers to the collector.
pub enum Msg {
    Interval(usize, Box<Interval>),
    /// The worker's kernel thread id (for its CPU time).
    Started(usize, i32),
    Done(usize),
    Fatal(usize, String),
    /// From the sampler thread, once a second.
    Tick(Box<crate::sampler::Tick>),
}

struct Pending {
    intended: Instant,
    class: u32,
    what: What,
}

/// What a completion's `user_data` names: connection index << 2 | operation.
const RECV: u64 = 0;
const SEND: u64 = 1;
const CONNECT: u64 = 2;
const CANCEL: u64 = 3;

fn user_data(conn: usize, op: u64) -> u64 {
    ((conn as u64) << 2) | op
}

/// Connection `i`'s registered file slot.
fn slot(i: usize) -> types::Fixed {
    types::Fixed(i as u32)
}

/// How long a held wait may gather completions (closed loop only).
const HOLD_WINDOW: Duration = Duration::from_micros(50);
/// Connections with a request out before a wait is held: with fewer, a
/// held wait would mostly sit out its window.
const HOLD_MIN_BUSY: usize = 16;
/// After a failed connect, the pause before the next try, so a dead target
/// is not hammered with connects.
const CONNECT_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait: an interrupt is noticed within it.
const MAX_WAIT: Duration = Duration::from_millis(200);
const RECV_BUFFER_SIZE: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not connected: (re)connect at this time.
    Down(Instant),
    /// A connect is in flight; it is given up at this deadline.
    Connecting(Instant),
    Open,
    /// Being torn down: waits for the kernel to let go of its operations
    /// before the socket is closed and the slot reused.
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
    /// Operations the kernel holds for this connection (connect, receive, send).
    ops: u8,
    sending: bool,
    ex: Exchange,
    /// Requests being written; the kernel reads it until the send completes.
    out: Vec<u8>,
    written: usize,
    rng: Rng,
    connected_before: bool,
    /// Listed among the connections waiting for work (open loop).
    waiting: bool,
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

struct Worker {
    shared: Arc<Shared>,
    ring: IoUring,
    /// Kept in an Option so teardown can hand it back to the kernel.
    bufs: Option<BufRing>,
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
    /// Whether waits may be held (closed loop, and the kernel has min_wait).
    hold: bool,
    /// Sends submitted with the next enter: their completions come inline.
    sends_queued: u32,
    cqes: Vec<(u64, i32, u32)>,
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
    let res =
        Worker::new(shared, thread, threads, connections, start, tx.clone()).and_then(|w| w.run());
    let _ = match res {
        Ok(()) => tx.send(Msg::Done(thread)),
        Err(e) => tx.send(Msg::Fatal(thread, e.to_string())),
    };
}

fn new_ring(entries: u32) -> io::Result<IoUring> {
    // Deferred task work runs only when this thread enters the ring, so
    // completions gather while it works instead of interrupting it.
    let mut b = IoUring::builder();
    b.setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(entries * 4);
    match b.build(entries) {
        Ok(r) => Ok(r),
        Err(_) => IoUring::builder().setup_cqsize(entries * 4).build(entries),
    }
}

impl Worker {
    fn new(
        shared: Arc<Shared>,
        thread: usize,
        threads: usize,
        connections: usize,
        start: Instant,
        tx: Sender<Msg>,
    ) -> io::Result<Worker> {
        let plan = &shared.plan;
        let end = start + Duration::from_secs_f64(plan.duration());
        let entries = (connections as u32 * 4)
            .next_power_of_two()
            .clamp(256, 4096);
        let ring = new_ring(entries)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot set up io_uring: {e}")))?;
        let count = (connections * 2).next_power_of_two().clamp(64, 4096) as u16;
        let bufs = BufRing::register(&ring, count, RECV_BUFFER_SIZE).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("io_uring provided-buffer rings are unavailable (Linux 6.0 or later is needed): {e}"),
            )
        })?;
        // Each connection's socket sits in a registered slot (its index), so
        // operations on it skip the file-table lookup.
        ring.submitter()
            .register_files_sparse(connections as u32)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot register io_uring file slots (Linux 6.0 or later is needed): {e}"
                    ),
                )
            })?;
        let hold = plan.schedule.is_none() && ring.params().is_feature_min_timeout();
        let conns = (0..connections)
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
            .map(|s| Arrivals::new(s.clone(), thread, threads, plan.poisson, plan.seed));
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
        Ok(Worker {
            shared,
            ring,
            bufs: Some(bufs),
            addr,
            conns,
            waiting: VecDeque::with_capacity(connections),
            work,
            book,
            arrivals,
            next_arrival,
            next_dispatch: None,
            dispatch_rng,
            dispatch_scratch: Vec::new(),
            started: false,
            next_sweep: Instant::now(),
            hold,
            sends_queued: 0,
            cqes: Vec::with_capacity(entries as usize * 4),
        })
    }

    fn run(mut self) -> io::Result<()> {
        let res = self.turns();
        if res.is_err() {
            // Operations may still be in flight: the kernel could yet write
            // into the receive buffers, so they are never freed.
            std::mem::forget(self.bufs.take());
            return res;
        }
        if let Some(b) = self.bufs.take() {
            b.release(&self.ring);
        }
        self.last_interval();
        Ok(())
    }

    fn turns(&mut self) -> io::Result<()> {
        loop {
            let now = Instant::now();
            self.reap(now);
            self.keep_time(now);
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

    /// Queues `sqe`, submitting what is queued first when the ring is full.
    ///
    /// # Safety
    /// Whatever `sqe` points the kernel at must stay valid until its
    /// completion arrives.
    unsafe fn push(&mut self, sqe: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller keeps what `sqe` points at alive.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn reap(&mut self, now: Instant) {
        self.cqes.clear();
        self.cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for k in 0..self.cqes.len() {
            let (ud, res, flags) = self.cqes[k];
            let i = (ud >> 2) as usize;
            match ud & 3 {
                RECV => self.on_recv(i, res, flags, now),
                SEND => self.on_send(i, res, now),
                CONNECT => self.on_connect(i, res, now),
                _ => {}
            }
        }
    }

    fn on_recv(&mut self, i: usize, res: i32, flags: u32, now: Instant) {
        let more = cqueue::more(flags);
        let c = &mut self.conns[i];
        if !more {
            c.ops -= 1;
        }
        let mut broken = false;
        if let Some(bid) = cqueue::buffer_select(flags) {
            let bufs = self.bufs.as_mut().expect("buffers live until teardown");
            // SAFETY: this completion handed `bid` over just now; the guard
            // gives it back once, when it drops.
            let data = unsafe { bufs.take(bid, res.max(0) as usize) };
            if res > 0 && c.state == State::Open {
                broken = c.ex.feed(&data, now, self.book.at(now)).is_err();
            }
        }
        if c.state != State::Open {
            self.settle(i);
            return;
        }
        if broken {
            c.ex.fail_all(self.book.at(now), false);
            self.close(i, now);
        } else if res > 0 {
            if !more {
                self.arm_recv(i);
            }
            self.fill(i, now);
        } else if res == 0 {
            c.ex.eof(now, self.book.at(now));
            self.close(i, now);
        } else if res == -libc::ENOBUFS {
            // Every buffer was taken at once; they are all back by now.
            self.arm_recv(i);
        } else {
            c.ex.fail_all(self.book.at(now), false);
            self.close(i, now);
        }
    }

    fn on_send(&mut self, i: usize, res: i32, now: Instant) {
        let c = &mut self.conns[i];
        c.ops -= 1;
        c.sending = false;
        if c.state != State::Open {
            self.settle(i);
            return;
        }
        if res <= 0 {
            c.ex.fail_all(self.book.at(now), false);
            self.close(i, now);
            return;
        }
        c.written += res as usize;
        if c.written < c.out.len() {
            self.send(i);
            return;
        }
        c.out.clear();
        c.written = 0;
        self.fill(i, now);
    }

    fn on_connect(&mut self, i: usize, res: i32, now: Instant) {
        let c = &mut self.conns[i];
        c.ops -= 1;
        if !matches!(c.state, State::Connecting(_)) {
            self.settle(i);
            return;
        }
        if res < 0 {
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
        self.arm_recv(i);
        self.fill(i, now);
    }

    fn arm_recv(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let sqe = opcode::RecvMulti::new(slot(i), GROUP)
            .build()
            .user_data(user_data(i, RECV));
        c.ops += 1;
        // SAFETY: the receive writes only into provided buffers, which live
        // until teardown, after every operation completed.
        if unsafe { self.push(&sqe) }.is_err() {
            self.conns[i].ops -= 1;
        }
    }

    fn send(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let rest = &c.out[c.written..];
        let sqe = opcode::Send::new(slot(i), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(i, SEND));
        c.ops += 1;
        c.sending = true;
        self.sends_queued += 1;
        // SAFETY: `out` is neither touched nor freed while `sending` is set
        // (until this send's completion), and the connection table is never
        // resized, so the bytes stay where they are.
        if unsafe { self.push(&sqe) }.is_err() {
            self.conns[i].ops -= 1;
            self.conns[i].sending = false;
        }
    }

    fn connect(&mut self, i: usize, now: Instant) {
        let socket = Socket::new(
            Domain::for_address(self.shared.target.addr),
            Type::STREAM.cloexec(),
            Some(Protocol::TCP),
        )
        .and_then(|s| s.set_tcp_nodelay(true).map(|()| s))
        .and_then(|s| {
            self.ring
                .submitter()
                .register_files_update(i as u32, &[s.as_raw_fd()])
                .map(|_| s)
        });
        let socket = match socket {
            Ok(s) => s,
            Err(_) => {
                self.book.at(now).counters.connect_errors += 1;
                let retry = (now + CONNECT_BACKOFF).min(self.work.hard_stop);
                self.conns[i].state = State::Down(retry);
                return;
            }
        };
        let sqe = opcode::Connect::new(slot(i), self.addr.as_ptr().cast(), self.addr.len())
            .build()
            .user_data(user_data(i, CONNECT));
        let budget = self
            .shared
            .connect_timeout
            .min(self.work.hard_stop.saturating_duration_since(now));
        let c = &mut self.conns[i];
        c.socket = Some(socket);
        c.state = State::Connecting(now + budget);
        c.ops += 1;
        // SAFETY: `addr` belongs to the worker and outlives every operation
        // (teardown waits for all of them).
        if unsafe { self.push(&sqe) }.is_err() {
            self.conns[i].ops -= 1;
            self.conns[i].state = State::Closing(After::Reconnect(now + CONNECT_BACKOFF));
            self.settle(i);
        }
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
        if c.ops > 0 {
            let sqe = opcode::AsyncCancel2::new(types::CancelBuilder::fd(slot(i)).all())
                .build()
                .user_data(user_data(i, CANCEL));
            // SAFETY: a cancel points the kernel at nothing of ours.
            let _ = unsafe { self.push(&sqe) };
        }
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
            // The slot holds the socket open too: empty it so it closes now.
            let _ = self.ring.submitter().register_files_update(i as u32, &[-1]);
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
            self.send(i);
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

    /// Submits the turn's operations and waits for completions or the next
    /// deadline, in one `io_uring_enter`.
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
        let wait = deadline.saturating_duration_since(now);
        let ts = types::Timespec::from(wait);
        let mut args = types::SubmitArgs::new().timespec(&ts);
        let mut want = 1;
        if self.hold && busy >= HOLD_MIN_BUSY {
            // A held wait gathers up to `want` arrivals for at most the
            // window; the sends going out now complete inline, so they are
            // not counted as arrivals.
            want = (busy / 2).min(32) + self.sends_queued as usize;
            args = args.min_wait_usec(HOLD_WINDOW.as_micros() as u32);
        }
        self.sends_queued = 0;
        match self.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
