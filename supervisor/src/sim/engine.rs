//! The event loop.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use super::hist::{quantile, Hist};
use super::load::Scenario;
use super::rng::Rng;
use super::{DecisionRecord, Policy, SecondRow, SimConfig, SimResult, Summary};
use crate::{Action, Controller, Signals};

const SECOND: u64 = 1_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Error,
    Timeout,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    ConnReady,
    QueryDone {
        arrival: u64,
        acquired: u64,
        outcome: Outcome,
    },
    Release {
        arrival: u64,
    },
}

#[derive(Debug)]
struct Event {
    t: u64,
    seq: u64,
    kind: Kind,
}

// Reversed so that BinaryHeap (a max-heap) pops the earliest event; `seq`
// keeps same-time events in scheduling order, which makes runs reproducible.
impl Ord for Event {
    fn cmp(&self, o: &Self) -> Ordering {
        (o.t, o.seq).cmp(&(self.t, self.seq))
    }
}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl Eq for Event {}

#[derive(Clone, Copy, Debug)]
struct Job {
    arrival: u64,
    acquired: u64,
}

/// Accumulators reset every supervisor tick.
#[derive(Default)]
struct TickAcc {
    waits: Vec<u64>,
    queries: Vec<u64>,
    completed: u64,
    errors: u64,
    timeouts: u64,
}

/// Accumulators reset every simulated second.
#[derive(Default)]
struct SecondAcc {
    offered: u64,
    completed: u64,
    failed: u64,
    waits: Vec<u64>,
    queries: Vec<u64>,
    latencies: Vec<u64>,
}

struct Sim<'a> {
    sc: &'a Scenario,
    cfg: &'a SimConfig,
    // Durations as nanoseconds once, not per event: the loop runs millions of
    // times and tests run it unoptimised.
    connect_ns: u64,
    acquire_timeout_ns: u64,
    think_ns: f64,
    service_ns: f64,
    statement_timeout_ns: Option<u64>,
    rng: Rng,
    now: u64,
    heap: BinaryHeap<Event>,
    seq: u64,

    max_open: usize,
    open: usize,
    idle: usize,
    in_use: usize,
    creating: usize,
    waiters: VecDeque<u64>,

    db_busy: usize,
    db_in: usize,
    db_queue: VecDeque<Job>,

    open_area: u128,
    area_t: u64,
    tick: TickAcc,
    second: SecondAcc,
    latency: Hist,
    waits: Hist,
    requests: u64,
    completed: u64,
    failed: u64,
}

impl<'a> Sim<'a> {
    fn push(&mut self, t: u64, kind: Kind) {
        self.seq += 1;
        self.heap.push(Event {
            t,
            seq: self.seq,
            kind,
        });
    }

    fn set_open(&mut self, open: usize) {
        self.open_area += self.open as u128 * (self.now - self.area_t) as u128;
        self.area_t = self.now;
        self.open = open;
    }

    fn arrival(&mut self) {
        self.requests += 1;
        self.second.offered += 1;
        if self.idle > 0 {
            self.idle -= 1;
            self.in_use += 1;
            self.record_wait(0);
            self.submit(Job {
                arrival: self.now,
                acquired: self.now,
            });
        } else {
            self.waiters.push_back(self.now);
            self.maybe_create();
        }
    }

    fn maybe_create(&mut self) {
        while self.waiters.len() > self.creating && self.open + self.creating < self.max_open {
            self.creating += 1;
            let t = self.now + self.connect_ns;
            self.push(t, Kind::ConnReady);
        }
    }

    fn conn_ready(&mut self) {
        self.creating -= 1;
        if self.open >= self.max_open {
            // The pool shrank while this connection was being opened.
            return;
        }
        self.set_open(self.open + 1);
        self.hand_out();
    }

    /// A connection just became free: give it to the oldest live waiter, or
    /// park it idle.
    fn hand_out(&mut self) {
        self.expire_waiters();
        if let Some(arrival) = self.waiters.pop_front() {
            self.in_use += 1;
            self.record_wait(self.now - arrival);
            self.submit(Job {
                arrival,
                acquired: self.now,
            });
        } else {
            self.idle += 1;
        }
    }

    fn expire_waiters(&mut self) {
        let timeout = self.acquire_timeout_ns;
        while let Some(&arrival) = self.waiters.front() {
            if arrival + timeout > self.now {
                break;
            }
            self.waiters.pop_front();
            self.record_wait(timeout);
            self.fail(timeout);
        }
    }

    fn release(&mut self) {
        self.in_use -= 1;
        if self.open > self.max_open {
            self.set_open(self.open - 1);
        } else {
            self.hand_out();
        }
    }

    fn record_wait(&mut self, w: u64) {
        self.tick.waits.push(w);
        self.second.waits.push(w);
        self.waits.record(w);
    }

    fn fail(&mut self, latency: u64) {
        self.failed += 1;
        self.second.failed += 1;
        self.second.latencies.push(latency);
        self.latency.record(latency);
    }

    fn submit(&mut self, job: Job) {
        self.db_in += 1;
        if self.db_busy < self.cfg.db.servers {
            self.start_query(job);
        } else {
            self.db_queue.push_back(job);
        }
    }

    fn start_query(&mut self, job: Job) {
        self.db_busy += 1;
        let db = &self.cfg.db;
        let past_knee = self.db_in.saturating_sub(db.servers) as f64;
        let mut service = self.rng.erlang2(self.service_ns) * (1.0 + db.contention * past_knee);
        let mut outcome = Outcome::Ok;
        if let Some(f) = self.sc.fault_at(self.now) {
            service *= f.slow_factor;
            if self.rng.chance(f.error_rate) {
                outcome = Outcome::Error;
            }
        }
        let mut end = self.now + service as u64;
        if let Some(limit) = self.statement_timeout_ns {
            // The statement clock starts when the query is sent, so time
            // queued inside the database counts against it.
            let deadline = job.acquired + limit;
            if end > deadline {
                end = deadline.max(self.now);
                outcome = Outcome::Timeout;
            }
        }
        self.push(
            end,
            Kind::QueryDone {
                arrival: job.arrival,
                acquired: job.acquired,
                outcome,
            },
        );
    }

    fn query_done(&mut self, arrival: u64, acquired: u64, outcome: Outcome) {
        self.db_busy -= 1;
        self.db_in -= 1;
        if let Some(next) = self.db_queue.pop_front() {
            self.start_query(next);
        }
        let q = self.now - acquired;
        self.tick.queries.push(q);
        self.second.queries.push(q);
        match outcome {
            Outcome::Ok => {
                self.tick.completed += 1;
                let think = self.rng.erlang2(self.think_ns) as u64;
                self.push(self.now + think, Kind::Release { arrival });
            }
            Outcome::Error | Outcome::Timeout => {
                if outcome == Outcome::Error {
                    self.tick.errors += 1;
                } else {
                    self.tick.timeouts += 1;
                }
                self.fail(self.now - arrival);
                self.release();
            }
        }
    }

    fn request_done(&mut self, arrival: u64) {
        let l = self.now - arrival;
        self.completed += 1;
        self.second.completed += 1;
        self.second.latencies.push(l);
        self.latency.record(l);
        self.release();
    }

    fn resize(&mut self, to: usize) {
        self.max_open = to;
        while self.open > self.max_open && self.idle > 0 {
            self.idle -= 1;
            self.set_open(self.open - 1);
        }
        self.maybe_create();
    }

    fn signals(&mut self, tick: Duration) -> Signals {
        let t = std::mem::take(&mut self.tick);
        let mut waits = t.waits;
        let mut queries = t.queries;
        let s = Signals {
            max_open: self.max_open,
            open: self.open,
            in_use: self.in_use,
            idle: self.idle,
            waiting: self.waiters.len(),
            acquire_wait_p99: Duration::from_nanos(quantile(&mut waits, 0.99)),
            query_p99: Duration::from_nanos(quantile(&mut queries, 0.99)),
            completed: t.completed,
            errors: t.errors,
            timeouts: t.timeouts,
            tick,
            ceiling: None,
        };
        // Keep the allocations for the next tick.
        waits.clear();
        queries.clear();
        self.tick.waits = waits;
        self.tick.queries = queries;
        s
    }

    fn second_row(&mut self, t: u64) -> SecondRow {
        let s = &mut self.second;
        let ms = |v: u64| v as f64 / 1e6;
        let row = SecondRow {
            t,
            offered: s.offered,
            completed: s.completed,
            failed: s.failed,
            max_open: self.max_open,
            open: self.open,
            in_use: self.in_use,
            waiting: self.waiters.len(),
            acquire_wait_p99_ms: ms(quantile(&mut s.waits, 0.99)),
            query_p99_ms: ms(quantile(&mut s.queries, 0.99)),
            latency_p99_ms: ms(quantile(&mut s.latencies, 0.99)),
        };
        s.offered = 0;
        s.completed = 0;
        s.failed = 0;
        s.waits.clear();
        s.queries.clear();
        s.latencies.clear();
        row
    }
}

/// Runs `scenario` under `policy` and returns the per-second series, the
/// decisions and the summary. Deterministic for a given `cfg.seed`.
pub fn run(scenario: &Scenario, cfg: &SimConfig, policy: &Policy) -> SimResult {
    match policy {
        Policy::Static(n) => run_with(scenario, cfg, &policy.label(), *n, |_, _| {
            Verdict::hold("static")
        }),
        Policy::Adaptive {
            cfg: a,
            start,
            tuning,
        } => {
            let mut c = Controller::with_tuning(a.clone(), *start, tuning.clone());
            let start = c.max_open();
            let mut r = run_with(scenario, cfg, &policy.label(), start, |now, s| {
                let d = c.step(now, s);
                match d.action {
                    Action::Resize { to, .. } => Verdict::resize(to, d.reason.to_string()),
                    Action::Hold => Verdict::hold(d.reason.kind()),
                }
            });
            r.controller = Some(c.state());
            r
        }
    }
}

/// What a resizing policy says after one tick, for [`run_with`].
#[derive(Clone, Debug)]
pub struct Verdict {
    /// The new `max_open`, if it changes.
    pub resize_to: Option<usize>,
    /// Why (logged with the resize), or the kind of hold (counted).
    pub reason: String,
}

impl Verdict {
    pub fn hold(kind: &str) -> Self {
        Verdict {
            resize_to: None,
            reason: kind.to_string(),
        }
    }

    pub fn resize(to: usize, reason: String) -> Self {
        Verdict {
            resize_to: Some(to),
            reason,
        }
    }
}

/// Runs `scenario` with a pool that starts at `start` connections (all open)
/// and is resized by `policy` every tick: the hook for trying controllers
/// other than the built-in one against the same model.
pub fn run_with<F>(
    scenario: &Scenario,
    cfg: &SimConfig,
    label: &str,
    start: usize,
    mut policy: F,
) -> SimResult
where
    F: FnMut(Instant, &Signals) -> Verdict,
{
    let mut sim = Sim {
        sc: scenario,
        cfg,
        connect_ns: cfg.pool.connect_time.as_nanos() as u64,
        acquire_timeout_ns: cfg.pool.acquire_timeout.as_nanos() as u64,
        think_ns: cfg.pool.think_time.as_nanos() as f64,
        service_ns: cfg.db.base_service.as_nanos() as f64,
        statement_timeout_ns: cfg.db.statement_timeout.map(|d| d.as_nanos() as u64),
        rng: Rng::new(cfg.seed),
        now: 0,
        heap: BinaryHeap::new(),
        seq: 0,
        max_open: start,
        open: start,
        idle: start,
        in_use: 0,
        creating: 0,
        waiters: VecDeque::new(),
        db_busy: 0,
        db_in: 0,
        db_queue: VecDeque::new(),
        open_area: 0,
        area_t: 0,
        tick: TickAcc::default(),
        second: SecondAcc::default(),
        latency: Hist::default(),
        waits: Hist::default(),
        requests: 0,
        completed: 0,
        failed: 0,
    };
    // The controller needs Instants; any base works because it only ever
    // subtracts them.
    let base = Instant::now();
    let end = scenario.duration.as_nanos() as u64;
    let tick = cfg.tick.as_nanos() as u64;
    assert!(tick > 0, "SimConfig::tick must be positive");

    let peak = scenario.load.peak();
    let mut arrivals = Rng::new(cfg.seed ^ 0xA5A5_5A5A_DEAD_BEEF);
    let mut next_arrival = next_arrival_after(0, scenario, peak, &mut arrivals, end);
    let mut next_tick = tick;
    let mut next_second = SECOND;

    let mut series = Vec::with_capacity((end / SECOND) as usize);
    let mut decisions = Vec::new();
    let mut holds: Vec<(String, u64)> = Vec::new();

    loop {
        let next_ev = sim.heap.peek().map_or(u64::MAX, |e| e.t);
        let t = next_ev.min(next_arrival).min(next_tick).min(next_second);
        if t > end {
            break;
        }
        sim.now = t;
        if next_ev == t {
            let ev = sim.heap.pop().expect("peeked");
            match ev.kind {
                Kind::ConnReady => sim.conn_ready(),
                Kind::QueryDone {
                    arrival,
                    acquired,
                    outcome,
                } => sim.query_done(arrival, acquired, outcome),
                Kind::Release { arrival } => sim.request_done(arrival),
            }
        } else if next_arrival == t {
            sim.arrival();
            next_arrival = next_arrival_after(t, scenario, peak, &mut arrivals, end);
        } else if next_tick == t {
            sim.expire_waiters();
            let s = sim.signals(cfg.tick);
            let v = policy(base + Duration::from_nanos(t), &s);
            match v.resize_to {
                Some(to) if to != sim.max_open => {
                    decisions.push(DecisionRecord {
                        t: t as f64 / 1e9,
                        from: sim.max_open,
                        to,
                        reason: v.reason,
                    });
                    sim.resize(to);
                }
                _ => match holds.iter_mut().find(|(n, _)| *n == v.reason) {
                    Some((_, c)) => *c += 1,
                    None => holds.push((v.reason, 1)),
                },
            }
            next_tick += tick;
        } else {
            sim.expire_waiters();
            let row = sim.second_row(t / SECOND - 1);
            series.push(row);
            next_second += SECOND;
        }
    }
    sim.now = end;
    sim.set_open(sim.open);

    let summary = summarize(scenario, cfg, &sim, &series, &decisions);
    SimResult {
        scenario: scenario.name.clone(),
        policy: label.to_string(),
        series,
        decisions,
        summary,
        controller: None,
        hold_reasons: holds,
    }
}

/// Poisson arrivals at a varying rate by thinning (Lewis & Shedler): draw at
/// the peak rate and keep each candidate with probability λ(t)/peak.
fn next_arrival_after(t: u64, sc: &Scenario, peak: f64, rng: &mut Rng, end: u64) -> u64 {
    if peak <= 0.0 {
        return u64::MAX;
    }
    let mut t = t as f64;
    loop {
        t += rng.exp(1e9 / peak);
        if t > end as f64 {
            return u64::MAX;
        }
        if rng.unit() * peak <= sc.load.rate(t / 1e9) {
            return t as u64;
        }
    }
}

fn summarize(
    sc: &Scenario,
    cfg: &SimConfig,
    sim: &Sim<'_>,
    series: &[SecondRow],
    decisions: &[DecisionRecord],
) -> Summary {
    let ms = |v: u64| v as f64 / 1e6;
    let slo_ms = cfg.slo.as_secs_f64() * 1e3;
    let target_ms = cfg.wait_target.as_secs_f64() * 1e3;
    let n = series.len().max(1) as f64;

    let mut settles = Vec::new();
    let mut overshoot: Option<f64> = None;
    for (rise, fall) in sc.load.high_phases(sc.duration) {
        let (a, b) = (
            rise.floor() as usize,
            (fall.ceil() as usize).min(series.len()),
        );
        if a >= b {
            continue;
        }
        let phase = &series[a..b];
        let need = 10.min(phase.len());
        // Settled at the first second that is under target and starts ten
        // seconds of which at least eight are: the per-second p99 of a pool
        // near its equilibrium crosses the target now and then, and one such
        // second later on does not mean the burst was not absorbed.
        let enough = (need * 4).div_ceil(5);
        let settled = (0..=phase.len() - need).find(|&i| {
            let ok = |r: &SecondRow| r.acquire_wait_p99_ms <= target_ms;
            ok(&phase[i]) && phase[i..i + need].iter().filter(|r| ok(r)).count() >= enough
        });
        settles.push(settled.map_or(phase.len() as f64, |i| i as f64));
        let peak = phase.iter().map(|r| r.max_open).max().unwrap_or(0) as f64;
        let last = phase.last().map_or(0, |r| r.max_open).max(1) as f64;
        let o = (peak - last) / last;
        overshoot = Some(overshoot.map_or(o, |x: f64| x.max(o)));
    }
    let mut direction_changes = 0;
    for w in decisions.windows(2) {
        if (w[0].to > w[0].from) != (w[1].to > w[1].from) {
            direction_changes += 1;
        }
    }
    Summary {
        requests: sim.requests,
        completed: sim.completed,
        failed: sim.failed,
        latency_p50_ms: ms(sim.latency.quantile(0.5)),
        latency_p99_ms: ms(sim.latency.quantile(0.99)),
        latency_p999_ms: ms(sim.latency.quantile(0.999)),
        acquire_wait_p99_ms: ms(sim.waits.quantile(0.99)),
        seconds_over_slo: series.iter().filter(|r| r.latency_p99_ms > slo_ms).count() as u64,
        settling_max_s: settles.iter().copied().reduce(f64::max),
        settling_mean_s: if settles.is_empty() {
            None
        } else {
            Some(settles.iter().sum::<f64>() / settles.len() as f64)
        },
        overshoot,
        connection_seconds: sim.open_area as f64 / 1e9,
        mean_max_open: series.iter().map(|r| r.max_open as f64).sum::<f64>() / n,
        peak_max_open: series.iter().map(|r| r.max_open).max().unwrap_or(0),
        changes: decisions.len(),
        direction_changes,
    }
}
