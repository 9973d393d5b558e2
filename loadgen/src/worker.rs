//! One generator thread: a pinned io_uring worker that owns a share of the
//! connections and of the schedule.
//!
//! A dispatcher task turns intended send times into queued requests; each
//! connection task takes requests while it has room (pipeline depth) and
//! reads responses. A request that finds no free connection waits in the
//! queue, and that wait counts in its corrected latency because latency is
//! measured from the intended time. Every second the thread hands its
//! interval (histograms and counters) to the collector.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tidepool_engine::rt;
use tidepool_engine::rt::net::TcpStream;

use crate::config::Plan;
use crate::http::{parse_response, render_fixed, Parsed, RequestTemplate, Target};
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

struct InFlight {
    intended: Instant,
    sent: Instant,
    class: u32,
    head: bool,
}

struct State {
    shared: Arc<Shared>,
    thread: usize,
    start: Instant,
    /// The schedule's end: no new requests after it.
    end: Instant,
    /// Past it, whatever is still queued or in flight is given up.
    hard_stop: Instant,
    closed_loop: bool,
    queue: RefCell<VecDeque<Pending>>,
    /// Connections waiting for work, oldest first, so load spreads over them.
    idle: RefCell<VecDeque<usize>>,
    wakers: RefCell<Vec<Option<Waker>>>,
    dispatch_done: Cell<bool>,
    iv: RefCell<Interval>,
    /// When the current interval ends.
    next_roll: Cell<Instant>,
    open: Cell<u64>,
    mix_rng: RefCell<Rng>,
    scratch: RefCell<Vec<f64>>,
    tx: Sender<Msg>,
}

impl State {
    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs()
    }

    /// Hands every finished interval before `sec` to the collector.
    fn roll(&self, sec: u64) {
        let mut iv = self.iv.borrow_mut();
        while iv.second < sec {
            let (classes, next) = (iv.classes.len(), iv.second + 1);
            let mut done = std::mem::replace(&mut *iv, Interval::new(next, classes));
            done.open_connections = self.open.get();
            let _ = self.tx.send(Msg::Interval(self.thread, Box::new(done)));
        }
    }

    fn with_iv<R>(&self, now: Instant, f: impl FnOnce(&mut Interval) -> R) -> R {
        // Most calls fall in the current second: one comparison, no arithmetic.
        if now >= self.next_roll.get() {
            let sec = self.second(now);
            self.roll(sec);
            self.next_roll
                .set(self.start + Duration::from_secs(sec + 1));
        }
        f(&mut self.iv.borrow_mut())
    }

    fn wake_idle(&self) {
        let mut idle = self.idle.borrow_mut();
        let mut wakers = self.wakers.borrow_mut();
        while let Some(id) = idle.pop_front() {
            if let Some(w) = wakers[id].take() {
                w.wake();
                return;
            }
        }
    }

    fn wake_all(&self) {
        self.idle.borrow_mut().clear();
        for w in self.wakers.borrow_mut().iter_mut() {
            if let Some(w) = w.take() {
                w.wake();
            }
        }
    }

    fn forget_waker(&self, id: usize) {
        self.wakers.borrow_mut()[id] = None;
    }

    /// The next request if one can go now: Ok(Some), Ok(None) when there
    /// will be no more, Err(()) when the connection has to wait.
    fn take_ready(&self, now: Instant) -> Result<Option<Pending>, ()> {
        if crate::signal::interrupted() || now >= self.hard_stop {
            // Whatever is still queued is counted as dropped at the end.
            return Ok(None);
        }
        if self.closed_loop {
            if now >= self.end {
                return Ok(None);
            }
            let t = now.duration_since(self.start).as_secs_f64();
            let class = self.shared.plan.mix.pick(
                t,
                &mut self.mix_rng.borrow_mut(),
                &mut self.scratch.borrow_mut(),
            ) as u32;
            self.with_iv(now, |iv| {
                iv.counters.offered += 1;
                iv.class(class as usize).offered += 1;
            });
            return Ok(Some(Pending {
                intended: now,
                class,
                what: What::Mix,
            }));
        }
        let mut q = self.queue.borrow_mut();
        while let Some(p) = q.pop_front() {
            if now.saturating_duration_since(p.intended) > self.shared.timeout {
                // It waited a whole timeout for a connection: give it up.
                self.with_iv(now, |iv| iv.counters.dropped += 1);
                continue;
            }
            return Ok(Some(p));
        }
        if self.dispatch_done.get() {
            return Ok(None);
        }
        Err(())
    }

    /// Like [`take_ready`](Self::take_ready), registering the connection as
    /// idle when it has to wait.
    fn poll_take(&self, id: usize, cx: &mut Context<'_>, now: Instant) -> Poll<Option<Pending>> {
        match self.take_ready(now) {
            Ok(p) => {
                self.wakers.borrow_mut()[id] = None;
                Poll::Ready(p)
            }
            Err(()) => {
                let mut wakers = self.wakers.borrow_mut();
                let fresh = wakers[id].is_none();
                match &wakers[id] {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => wakers[id] = Some(cx.waker().clone()),
                }
                if fresh {
                    self.idle.borrow_mut().push_back(id);
                }
                Poll::Pending
            }
        }
    }

    fn try_take(&self, now: Instant) -> Option<Pending> {
        self.take_ready(now).ok().flatten()
    }
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
    let plan = &shared.plan;
    let duration = Duration::from_secs_f64(plan.duration());
    let end = start + duration;
    let state = Rc::new(State {
        shared: shared.clone(),
        thread,
        start,
        end,
        hard_stop: end + shared.drain,
        closed_loop: plan.schedule.is_none(),
        queue: RefCell::new(VecDeque::with_capacity(1024)),
        idle: RefCell::new(VecDeque::with_capacity(connections)),
        wakers: RefCell::new(vec![None; connections]),
        dispatch_done: Cell::new(plan.schedule.is_none()),
        iv: RefCell::new(Interval::new(0, plan.classes.len())),
        next_roll: Cell::new(start + Duration::from_secs(1)),
        open: Cell::new(0),
        mix_rng: RefCell::new(Rng::derive(plan.seed, 0x313C_0000 + thread as u64)),
        scratch: RefCell::new(Vec::new()),
        tx: tx.clone(),
    });
    let arrivals = plan
        .schedule
        .as_ref()
        .map(|s| Arrivals::new(s.clone(), thread, threads, plan.poisson, plan.seed));
    let config = rt::CoreConfig {
        ring_entries: (connections as u32 * 4)
            .next_power_of_two()
            .clamp(256, 4096),
        // A held wait reads responses up to a window late: fine when the
        // aim is capacity (closed loop), not when latencies are the result.
        coalesce_window: if plan.schedule.is_none() {
            rt::CoreConfig::default().coalesce_window
        } else {
            Duration::ZERO
        },
        ..rt::CoreConfig::default()
    };
    let st = state.clone();
    let res = rt::block_on_with(&config, async move {
        let mut conns = Vec::with_capacity(connections);
        for id in 0..connections {
            let seed =
                Rng::derive(st.shared.plan.seed, ((thread as u64) << 32) | id as u64).next_u64();
            conns.push(rt::spawn(connection(st.clone(), id, seed)));
        }
        let dispatcher = arrivals.map(|a| rt::spawn(dispatch(st.clone(), a)));
        let _ticker = rt::spawn(ticker(st.clone()));
        if let Some(d) = dispatcher {
            d.await;
        }
        for c in conns {
            c.await;
        }
        let now = Instant::now();
        let left = st.queue.borrow_mut().drain(..).count() as u64;
        // The last interval is the one holding the end of the schedule (or
        // later, when requests drained past it).
        let last = if crate::signal::interrupted() {
            st.second(now)
        } else {
            st.second(now.max(st.end - Duration::from_nanos(1)))
        };
        st.roll(last);
        let mut iv = st.iv.borrow_mut();
        iv.counters.dropped += left;
        iv.open_connections = st.open.get();
        let iv = std::mem::replace(&mut *iv, Interval::new(last + 1, 0));
        let _ = st.tx.send(Msg::Interval(st.thread, Box::new(iv)));
    });
    match res {
        Ok(()) => {
            let _ = tx.send(Msg::Done(thread));
        }
        Err(e) => {
            let _ = tx.send(Msg::Fatal(thread, e.to_string()));
        }
    }
}

/// Rolls the interval at every second boundary, so quiet seconds are reported too.
async fn ticker(st: Rc<State>) {
    let mut sec = 1u64;
    loop {
        rt::time::sleep_until(st.start + Duration::from_secs(sec)).await;
        st.roll(st.second(Instant::now()));
        sec += 1;
    }
}

async fn dispatch(st: Rc<State>, arrivals: Arrivals) {
    let shared = st.shared.clone();
    let plan = &shared.plan;
    let mut rng = Rng::derive(plan.seed, 0xD15C_0000 + st.thread as u64);
    let mut scratch = Vec::new();
    let mut sleep = rt::time::sleep_until(st.start);
    'arrivals: for (t, what) in arrivals {
        let intended = st.start + Duration::from_secs_f64(t);
        let mut now = Instant::now();
        while intended > now {
            // With a quantum, arrivals due within one grid step leave
            // together: fewer wake-ups of the generator and the server, at
            // the price of up to one step of lateness (which the corrected
            // latency includes).
            let wake = if shared.quantum.is_zero() {
                intended
            } else {
                let q = shared.quantum.as_nanos();
                let since = intended.duration_since(st.start).as_nanos();
                let up = since.div_ceil(q) * q;
                st.start + Duration::from_nanos(up.min(u128::from(u64::MAX)) as u64)
            };
            // Long gaps are slept in slices so an interrupt is noticed.
            sleep.reset(wake.min(now + Duration::from_millis(200)));
            (&mut sleep).await;
            now = Instant::now();
            if crate::signal::interrupted() {
                break 'arrivals;
            }
        }
        if crate::signal::interrupted() {
            break;
        }
        let class = match what {
            What::Mix => plan.mix.pick(t, &mut rng, &mut scratch),
            What::Trace { phase, entry } => {
                match &plan.schedule.as_ref().expect("scheduled").phases[phase] {
                    Phase::Trace(tr) => tr.entries[entry].class,
                    Phase::Rate(_) => unreachable!("trace arrival in a rate phase"),
                }
            }
        };
        let lag_us = now.saturating_duration_since(intended).as_micros() as u64;
        let full = st.queue.borrow().len() >= shared.max_queue;
        st.with_iv(now, |iv| {
            record(&mut iv.lag, lag_us);
            iv.counters.offered += 1;
            iv.class(class).offered += 1;
            if full {
                iv.counters.dropped += 1;
            }
        });
        if full {
            continue;
        }
        st.queue.borrow_mut().push_back(Pending {
            intended,
            class: class as u32,
            what,
        });
        st.wake_idle();
    }
    st.dispatch_done.set(true);
    st.wake_all();
}

enum Outcome {
    /// No more work for this connection.
    Finished,
    /// The connection failed or was closed: make a new one.
    Broken,
}

async fn connection(st: Rc<State>, id: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut first = true;
    loop {
        let now = Instant::now();
        if now >= st.hard_stop
            || (st.dispatch_done.get() && st.queue.borrow().is_empty() && !st.closed_loop)
            || (st.closed_loop && now >= st.end)
        {
            return;
        }
        let budget = st.shared.connect_timeout.min(st.hard_stop - now);
        let stream =
            match rt::time::timeout(budget, TcpStream::connect(st.shared.target.addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(_)) | Err(_) => {
                    st.with_iv(Instant::now(), |iv| iv.counters.connect_errors += 1);
                    // Back off a little so a dead target is not hammered with connects.
                    let wake = (Instant::now() + Duration::from_millis(50)).min(st.hard_stop);
                    rt::time::sleep_until(wake).await;
                    continue;
                }
            };
        if !first {
            st.with_iv(Instant::now(), |iv| iv.counters.reconnects += 1);
        }
        first = false;
        st.open.set(st.open.get() + 1);
        if st.closed_loop && Instant::now() < st.start {
            // Connected during the head start: the clock starts for everyone at once.
            rt::time::sleep_until(st.start).await;
        }
        let outcome = serve(&st, &stream, id, &mut rng).await;
        st.open.set(st.open.get() - 1);
        st.forget_waker(id);
        if let Outcome::Finished = outcome {
            return;
        }
    }
}

enum Ev {
    Read(io::Result<usize>, Vec<u8>),
    Wrote(io::Result<usize>, Vec<u8>),
    Take(Pending, Instant),
    NoMore,
    Timeout,
    Stop,
}

/// An empty slot typed like the future `make` would return (it is never called).
fn none_like<F>(_make: impl FnOnce() -> F) -> Option<F> {
    None
}

/// Fails every request in flight (they will get no response on this connection).
fn fail_all(st: &State, inflight: &mut VecDeque<InFlight>, timeout: bool) {
    let now = Instant::now();
    st.with_iv(now, |iv| {
        for f in inflight.drain(..) {
            iv.class(f.class as usize).failed += 1;
            if timeout {
                iv.counters.timeouts += 1;
            } else {
                iv.counters.io_errors += 1;
            }
        }
    });
}

fn complete(st: &State, f: InFlight, status: u16, now: Instant) {
    st.with_iv(now, |iv| record_response(iv, f, status, now));
}

fn record_response(iv: &mut Interval, f: InFlight, status: u16, now: Instant) {
    let corrected = now.saturating_duration_since(f.intended).as_micros() as u64;
    let service = now.saturating_duration_since(f.sent).as_micros() as u64;
    let c = iv.class(f.class as usize);
    record(&mut c.corrected, corrected);
    record(&mut c.uncorrected, service);
    c.status[(status / 100).min(5) as usize] += 1;
}

async fn serve(st: &State, stream: &TcpStream, id: usize, rng: &mut Rng) -> Outcome {
    let shared = &*st.shared;
    let depth = shared.pipeline;
    let mut inflight: VecDeque<InFlight> = VecDeque::with_capacity(depth);
    // The multishot receive is armed before anything is sent and stays
    // armed: a response is picked up in the ring turn it arrives in, and
    // no receive is submitted per request.
    let mut rd = pin!(stream.recv(Vec::with_capacity(16 * 1024)));
    // A send is not awaited: it completes inline when the ring is entered,
    // long before its response, so its completion is collected without a
    // wake-up of its own (polled with a no-op waker) unless its buffer is
    // needed or it sent only part of the request.
    let mut wr = pin!(none_like(|| stream.write_from(Vec::new(), 0)));
    let mut wbuf: Option<Vec<u8>> = Some(Vec::with_capacity(1024));
    let mut wr_sent = 0usize;
    let mut wr_partial = false;
    // One timer: the oldest request's timeout (capped at the end of the run).
    let mut timer = rt::time::sleep_until(st.hard_stop);
    // A body that ends when the server closes: the status of that response.
    let mut until_close: Option<u16> = None;
    loop {
        let ev = poll_fn(|cx| {
            if let Poll::Ready((res, buf)) = rd.as_mut().poll(cx) {
                return Poll::Ready(Ev::Read(res, buf));
            }
            let want_write = inflight.len() < depth && until_close.is_none();
            if let Some(w) = wr.as_mut().as_pin_mut() {
                let done = if want_write || wr_partial {
                    w.poll(cx)
                } else {
                    w.poll(&mut Context::from_waker(Waker::noop()))
                };
                if let Poll::Ready((res, buf)) = done {
                    return Poll::Ready(Ev::Wrote(res, buf));
                }
            } else if want_write {
                let now = Instant::now();
                match st.poll_take(id, cx, now) {
                    Poll::Ready(Some(p)) => return Poll::Ready(Ev::Take(p, now)),
                    Poll::Ready(None) if inflight.is_empty() => return Poll::Ready(Ev::NoMore),
                    _ => {}
                }
            }
            // Only requests in flight can time out; an idle connection hears
            // about the end of the run from the dispatcher.
            if !inflight.is_empty() && Pin::new(&mut timer).poll(cx).is_ready() {
                return Poll::Ready(if Instant::now() >= st.hard_stop {
                    Ev::Stop
                } else {
                    Ev::Timeout
                });
            }
            Poll::Pending
        })
        .await;
        match ev {
            Ev::NoMore => return Outcome::Finished,
            Ev::Stop => {
                let n = inflight.len() as u64;
                st.with_iv(Instant::now(), |iv| iv.counters.unfinished += n);
                return Outcome::Finished;
            }
            Ev::Timeout => {
                fail_all(st, &mut inflight, true);
                return Outcome::Broken;
            }
            Ev::Wrote(res, buf) => {
                wr.set(None);
                match res {
                    Ok(n) if n > 0 => {
                        wr_sent += n;
                        if wr_sent < buf.len() {
                            wr.set(Some(stream.write_from(buf, wr_sent)));
                            wr_partial = true;
                        } else {
                            wbuf = Some(buf);
                            wr_sent = 0;
                            wr_partial = false;
                        }
                    }
                    _ => {
                        fail_all(st, &mut inflight, false);
                        return Outcome::Broken;
                    }
                }
            }
            Ev::Take(first, now) => {
                let mut out = wbuf
                    .take()
                    .expect("a take only happens with the buffer at hand");
                out.clear();
                let mut batch = Some(first);
                let was_empty = inflight.is_empty();
                let mut sent = 0u64;
                let mut late = 0u64;
                while let Some(p) = batch.take() {
                    let head = match p.what {
                        What::Mix => {
                            let t = &shared.templates[p.class as usize];
                            t.render_into(&mut out, rng);
                            t.is_head
                        }
                        What::Trace { phase, entry } => {
                            let Some(Phase::Trace(tr)) =
                                shared.plan.schedule.as_ref().map(|s| &s.phases[phase])
                            else {
                                unreachable!("trace arrival outside a trace phase")
                            };
                            let e = &tr.entries[entry];
                            out.extend_from_slice(&render_fixed(
                                &shared.target.host_header,
                                &e.method,
                                &e.path,
                                &[],
                                e.body.as_deref(),
                            ));
                            e.method == "HEAD"
                        }
                    };
                    if now.saturating_duration_since(p.intended) > shared.late_after {
                        late += 1;
                    }
                    sent += 1;
                    inflight.push_back(InFlight {
                        intended: p.intended,
                        sent: now,
                        class: p.class,
                        head,
                    });
                    if inflight.len() < depth {
                        batch = st.try_take(now);
                    }
                }
                st.with_iv(now, |iv| {
                    iv.counters.sent += sent;
                    iv.counters.late += late;
                });
                if was_empty {
                    timer.reset((now + shared.timeout).min(st.hard_stop));
                }
                wr.set(Some(stream.write_from(out, 0)));
            }
            Ev::Read(res, mut buf) => {
                let n = match res {
                    Ok(n) => n,
                    Err(_) => {
                        fail_all(st, &mut inflight, false);
                        return Outcome::Broken;
                    }
                };
                let now = Instant::now();
                if n == 0 {
                    if let (Some(status), Some(f)) = (until_close, inflight.pop_front()) {
                        complete(st, f, status, now);
                    }
                    fail_all(st, &mut inflight, false);
                    return Outcome::Broken;
                }
                if until_close.is_some() {
                    // The body runs to EOF; its bytes are not needed.
                    st.with_iv(now, |iv| iv.counters.bytes_in += n as u64);
                    buf.clear();
                    rd.set(stream.recv(buf));
                    continue;
                }
                // One borrow of the interval for the whole batch of responses.
                let (pos, broken) = st.with_iv(now, |iv| {
                    iv.counters.bytes_in += n as u64;
                    let mut pos = 0;
                    while pos < buf.len() {
                        let Some(front) = inflight.front() else {
                            // Bytes nobody asked for: the stream is out of step.
                            return (pos, true);
                        };
                        match parse_response(&buf[pos..], front.head) {
                            Parsed::Partial => break,
                            Parsed::Done { status, len, close } => {
                                pos += len;
                                let f = inflight.pop_front().expect("front exists");
                                record_response(iv, f, status, now);
                                if close {
                                    return (pos, true);
                                }
                            }
                            Parsed::UntilClose { status } => {
                                until_close = Some(status);
                                pos = buf.len();
                            }
                            Parsed::Invalid(_) => return (pos, true),
                        }
                    }
                    (pos, false)
                });
                if broken {
                    fail_all(st, &mut inflight, false);
                    return Outcome::Broken;
                }
                if pos == buf.len() {
                    buf.clear();
                } else if pos > 0 {
                    buf.drain(..pos);
                }
                if buf.capacity() - buf.len() < 4096 {
                    buf.reserve(buf.capacity().max(16 * 1024));
                }
                // Deadlines only move later here, which costs the timer
                // heap nothing.
                if let Some(f) = inflight.front() {
                    timer.reset((f.sent + shared.timeout).min(st.hard_stop));
                }
                rd.set(stream.recv(buf));
                // The request's send finished long before its response came:
                // take its buffer back now rather than on another loop turn.
                if let Some(w) = wr.as_mut().as_pin_mut() {
                    if let Poll::Ready((res, b)) = w.poll(&mut Context::from_waker(Waker::noop())) {
                        wr.set(None);
                        match res {
                            Ok(k) if wr_sent + k >= b.len() => {
                                wbuf = Some(b);
                                wr_sent = 0;
                                wr_partial = false;
                            }
                            Ok(k) if k > 0 => {
                                wr_sent += k;
                                wr.set(Some(stream.write_from(b, wr_sent)));
                                wr_partial = true;
                            }
                            _ => {
                                fail_all(st, &mut inflight, false);
                                return Outcome::Broken;
                            }
                        }
                    }
                }
            }
        }
    }
}
