//! Starts the workers and the sampler, and collects their seconds into one
//! timeline: per-second records (streamed as JSONL) and run totals.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::client::http::{RequestTemplate, Target};
use crate::client::sampler::{run_sampler, PoolGauges, Scraper, Tick};
use crate::client::worker::{run_worker, IoUsed, Msg, Shared};
use crate::plan::config::Plan;
use crate::plan::schedule::Phase;
use crate::report::stats::{new_hist, ClassInterval, Counters, Interval, Latency};
use tidepool_engine::rt::backend::IO_ENV;
use tidepool_engine::rt::IoChoice;

/// How to run (everything but the pattern itself).
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub target: Target,
    pub plan: Plan,
    pub connections: usize,
    pub pipeline: usize,
    pub threads: usize,
    /// CPUs to pin the generator threads to, in order; None pins to the
    /// first allowed CPUs.
    pub cpus: Option<Vec<usize>>,
    pub pin: bool,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// A send later than this after its intended time counts as late.
    pub late_after: Duration,
    /// Past this schedule lag p99 in a second, the generator is behind.
    pub lag_bound: Duration,
    pub max_queue: usize,
    pub drain: Duration,
    /// Dispatch on a grid of this step (zero: exactly at each intended time).
    pub quantum: Duration,
    /// Path of the server's Prometheus endpoint; None turns scraping off.
    pub metrics_path: Option<String>,
    /// The generator's I/O backend (`--io`); None: `TIDEPOOL_IO`, else auto.
    pub io: Option<IoChoice>,
}

impl RunOptions {
    pub fn new(target: Target, plan: Plan) -> RunOptions {
        RunOptions {
            target,
            plan,
            connections: 64,
            pipeline: 1,
            threads: 1,
            cpus: None,
            pin: true,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            late_after: Duration::from_millis(10),
            lag_bound: Duration::from_millis(5),
            max_queue: 1_000_000,
            drain: Duration::from_secs(2),
            quantum: Duration::ZERO,
            metrics_path: Some("/metrics".into()),
            io: None,
        }
    }

    /// The backend asked for: `--io`, else `TIDEPOOL_IO` (the engine's
    /// variable, so one setting covers server and generator), else auto.
    pub fn io_choice(&self) -> Result<IoChoice, String> {
        if let Some(c) = self.io {
            return Ok(c);
        }
        match std::env::var(IO_ENV) {
            Ok(v) => v
                .parse()
                .map_err(|_| format!("{IO_ENV}={v:?} is not one of auto, io_uring, epoll")),
            Err(_) => Ok(IoChoice::Auto),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        if self.threads > self.connections {
            return Err(format!(
                "--threads {} is more than --connections {}: every thread needs a connection",
                self.threads, self.connections
            ));
        }
        if self.pipeline == 0 || self.pipeline > 1024 {
            return Err("--pipeline must be within 1..1024".into());
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be > 0".into());
        }
        if let Some(c) = &self.cpus {
            if c.is_empty() {
                return Err("--cpus is empty".into());
            }
        }
        self.io_choice()?;
        Ok(())
    }
}

/// A pool's grow, shrink and shed counters at the previous scrape.
type Counters3 = (Option<f64>, Option<f64>, Option<f64>);

/// One class in one second of the series.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ClassSecond {
    pub offered: u64,
    pub completed: u64,
    pub errors: u64,
    pub latency: Latency,
    /// Service time (from the actual send), p50 and p99.
    pub service_p50_ms: f64,
    pub service_p99_ms: f64,
    /// Successes within 200 ms of the intended send (`stats::GOOD_WITHIN_US`).
    #[serde(default)]
    pub good: u64,
    /// 503 responses (turned away: shed, pool timeout, database down).
    #[serde(default)]
    pub unavailable: u64,
}

/// One pool in one second (absent values were not exported by the server).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PoolSecond {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_open: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub open: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub in_use: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub waiting: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub acquire_wait_p99_ms: Option<f64>,
    /// Supervisor decisions since the previous scrape.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grow: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub shrink: Option<f64>,
    /// Waiters the pool's acquire queue shed since the previous scrape.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub shed: Option<f64>,
}

/// One line of series.jsonl.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Second {
    /// Seconds since the start of the schedule: this record covers [t, t+1).
    pub t: u64,
    /// The schedule's rate over this second (absent in closed-loop runs).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expected_rps: Option<f64>,
    pub offered: u64,
    pub sent: u64,
    pub completed: u64,
    pub errors: u64,
    /// Successes within 200 ms of their intended send, all classes.
    #[serde(default)]
    pub good: u64,
    pub late: u64,
    pub dropped: u64,
    pub timeouts: u64,
    pub io_errors: u64,
    pub connect_errors: u64,
    pub reconnects: u64,
    pub unfinished: u64,
    pub connections: u64,
    /// How late the schedule fired, p99 (the generator's own lag).
    pub lag_p99_ms: f64,
    /// Process CPU in cores, and the busiest generator thread (0..1).
    pub cpu: f64,
    pub worker_cpu: f64,
    /// The generator was behind its schedule in this second.
    pub overloaded: bool,
    /// Latency from the intended send time, all classes.
    pub latency: Latency,
    /// Latency from the actual send, all classes.
    pub service: Latency,
    pub classes: BTreeMap<String, ClassSecond>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub pools: BTreeMap<String, PoolSecond>,
}

/// What the whole run added up to.
pub struct Totals {
    pub classes: Vec<ClassInterval>,
    pub counters: Counters,
    pub lag: Histogram<u64>,
    pub fatal: Vec<String>,
}

pub struct Collected {
    pub seconds: Vec<Second>,
    pub totals: Totals,
    pub class_names: Vec<String>,
    pub wall: Duration,
    /// The backend of each generator thread that got as far as setting
    /// one up, in thread order.
    pub io: Vec<IoUsed>,
}

impl Collected {
    pub fn all(&self) -> ClassInterval {
        let mut a = ClassInterval::default();
        for c in &self.totals.classes {
            a.merge(c);
        }
        a
    }
}

/// Expected arrivals in [s, s+1) from the schedule.
pub fn expected_in_second(plan: &Plan, s: u64) -> Option<f64> {
    let sched = plan.schedule.as_ref()?;
    let (a, b) = (s as f64, s as f64 + 1.0);
    let mut v = sched.integral(b) - sched.integral(a);
    for (i, p) in sched.phases.iter().enumerate() {
        if let Phase::Trace(tr) = p {
            let st = sched.phase_start(i);
            // Entries are sorted by offset.
            let lo = tr.entries.partition_point(|e| st + e.offset < a);
            let hi = tr.entries.partition_point(|e| st + e.offset < b);
            v += (hi - lo) as f64;
        }
    }
    Some(v)
}

struct Progress {
    enabled: bool,
    duration: f64,
}

impl Progress {
    fn show(&self, s: &Second) {
        if !self.enabled {
            return;
        }
        let lag = if s.overloaded {
            "  GENERATOR BEHIND"
        } else {
            ""
        };
        if (s.t as f64) >= self.duration {
            // Past the schedule only stragglers finish.
            eprint!("\r\x1b[2K[drain] done {:>7}", s.completed);
            let _ = std::io::stderr().flush();
            return;
        }
        eprint!(
            "\r\x1b[2K[{:>4}/{:.0}s] offered {:>7}/s  done {:>7}/s  p99 {:>9}  err {:<5} conns {:<4} cpu {:>3.0}%{lag}",
            s.t + 1,
            self.duration,
            s.offered,
            s.completed,
            format!("{:.2}ms", s.latency.p99_ms),
            s.errors,
            s.connections,
            s.worker_cpu * 100.0
        );
        let _ = std::io::stderr().flush();
    }

    fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}

/// Runs the load. Per-second records go to `series` as they complete.
pub fn execute(
    opts: &RunOptions,
    mut series: Option<&mut dyn Write>,
    progress: bool,
) -> Result<Collected, String> {
    opts.validate()?;
    let plan = &opts.plan;
    let templates = plan
        .classes
        .iter()
        .map(|c| RequestTemplate::new(c, &opts.target.host_header))
        .collect();
    let shared = Arc::new(Shared {
        target: opts.target.clone(),
        plan: plan.clone(),
        templates,
        pipeline: opts.pipeline,
        timeout: opts.timeout,
        connect_timeout: opts.connect_timeout,
        late_after: opts.late_after,
        max_queue: opts.max_queue,
        drain: opts.drain.min(opts.timeout),
        quantum: opts.quantum,
        io: opts.io_choice()?,
    });
    let cpus: Vec<Option<usize>> = if !opts.pin {
        vec![None; opts.threads]
    } else {
        let list = opts
            .cpus
            .clone()
            .unwrap_or_else(tidepool_engine::workers::allowed_cpus);
        (0..opts.threads)
            .map(|i| list.get(i % list.len().max(1)).copied())
            .collect()
    };
    let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
    // Connections get a head start so the first intended sends do not pay
    // for connecting (longer for thousands of connections).
    let start = Instant::now() + Duration::from_millis(250 + opts.connections as u64 / 10);
    let mut handles = Vec::new();
    for (th, &cpu) in cpus.iter().enumerate() {
        let conns =
            opts.connections / opts.threads + usize::from(th < opts.connections % opts.threads);
        let shared = shared.clone();
        let tx = tx.clone();
        let threads = opts.threads;
        handles.push(
            std::thread::Builder::new()
                .name(format!("loadgen-{th}"))
                .spawn(move || run_worker(shared, th, threads, conns, cpu, start, tx))
                .map_err(|e| format!("cannot start a generator thread: {e}"))?,
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tids = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let scraper = opts.metrics_path.as_ref().map(|p| {
            Scraper::new(
                opts.target.addr,
                &opts.target.host_header,
                p,
                Duration::from_millis(500),
            )
        });
        let (stop, tids, tx) = (stop.clone(), tids.clone(), tx.clone());
        std::thread::Builder::new()
            .name("loadgen-sampler".into())
            .spawn(move || run_sampler(start, scraper, tids, stop, tx))
            .map_err(|e| format!("cannot start the sampler thread: {e}"))?
    };
    drop(tx);

    let mut c = Collector::new(opts, progress);
    let mut done = 0;
    while done < opts.threads {
        let Ok(msg) = rx.recv() else { break };
        match msg {
            Msg::Started(_, tid) => tids.lock().expect("tids").push(tid),
            Msg::Io(th, used) => c.io[th] = Some(used),
            Msg::Interval(th, iv) => c.interval(th, *iv),
            Msg::Tick(t) => c.tick(*t),
            Msg::Done(th) => {
                done += 1;
                c.thread_done(th);
            }
            Msg::Fatal(th, e) => {
                done += 1;
                c.thread_done(th);
                c.fatal.push(format!("generator thread {th}: {e}"));
            }
        }
        c.emit_ready(&mut series, false);
    }
    stop.store(true, Ordering::Release);
    let _ = sampler.join();
    // Ticks the sampler sent before it saw `stop`.
    while let Ok(msg) = rx.try_recv() {
        if let Msg::Tick(t) = msg {
            c.tick(*t);
        }
    }
    for h in handles {
        let _ = h.join();
    }
    c.emit_ready(&mut series, true);
    c.progress.finish();
    let wall = Instant::now().saturating_duration_since(start);
    Ok(Collected {
        seconds: c.seconds,
        totals: Totals {
            classes: c.totals,
            counters: c.counters,
            lag: c.lag,
            fatal: c.fatal,
        },
        class_names: plan.classes.iter().map(|c| c.name.clone()).collect(),
        wall,
        io: c.io.into_iter().flatten().collect(),
    })
}

struct Collector<'a> {
    opts: &'a RunOptions,
    threads: usize,
    /// The last second each thread has reported (None: nothing yet).
    reported: Vec<Option<u64>>,
    finished: Vec<bool>,
    pending: BTreeMap<u64, Interval>,
    ticks: BTreeMap<u64, Tick>,
    next: u64,
    prev_decisions: BTreeMap<String, Counters3>,
    seconds: Vec<Second>,
    totals: Vec<ClassInterval>,
    counters: Counters,
    lag: Histogram<u64>,
    fatal: Vec<String>,
    progress: Progress,
    io: Vec<Option<IoUsed>>,
}

impl<'a> Collector<'a> {
    fn new(opts: &'a RunOptions, progress: bool) -> Collector<'a> {
        Collector {
            opts,
            threads: opts.threads,
            reported: vec![None; opts.threads],
            finished: vec![false; opts.threads],
            pending: BTreeMap::new(),
            ticks: BTreeMap::new(),
            next: 0,
            prev_decisions: BTreeMap::new(),
            seconds: Vec::new(),
            totals: vec![ClassInterval::default(); opts.plan.classes.len()],
            counters: Counters::default(),
            lag: new_hist(),
            fatal: Vec::new(),
            progress: Progress {
                enabled: progress,
                duration: opts.plan.duration(),
            },
            io: vec![None; opts.threads],
        }
    }

    fn interval(&mut self, th: usize, iv: Interval) {
        let sec = iv.second;
        self.reported[th] = Some(self.reported[th].map_or(sec, |r| r.max(sec)));
        match self.pending.get_mut(&sec) {
            Some(p) => p.merge(&iv),
            None => {
                self.pending.insert(sec, iv);
            }
        }
    }

    fn tick(&mut self, t: Tick) {
        self.ticks.insert(t.second, t);
    }

    fn thread_done(&mut self, th: usize) {
        self.finished[th] = true;
    }

    /// Every thread has reported second s (or has finished).
    fn complete(&self, s: u64) -> bool {
        (0..self.threads).all(|th| self.finished[th] || self.reported[th].is_some_and(|r| r >= s))
    }

    fn emit_ready(&mut self, out: &mut Option<&mut dyn Write>, flush_all: bool) {
        loop {
            let s = self.next;
            let last = self.pending.keys().next_back().copied();
            let have_data = last.is_some_and(|l| l >= s);
            if !have_data {
                return;
            }
            // The sampler's tick for s comes just after the second ends; a
            // second whose tick is lost is not held back forever.
            let tick_ready = self.ticks.contains_key(&s)
                || self.ticks.keys().next_back().is_some_and(|&k| k > s)
                || flush_all;
            if !(flush_all || (self.complete(s) && tick_ready)) {
                return;
            }
            let iv = self
                .pending
                .remove(&s)
                .unwrap_or_else(|| Interval::new(s, self.opts.plan.classes.len()));
            let tick = self.ticks.remove(&s);
            let rec = self.record(iv, tick);
            if let Some(w) = out.as_mut() {
                if let Ok(line) = serde_json::to_string(&rec) {
                    let _ = writeln!(w, "{line}");
                }
            }
            self.progress.show(&rec);
            self.seconds.push(rec);
            self.next += 1;
        }
    }

    fn record(&mut self, iv: Interval, tick: Option<Tick>) -> Second {
        let plan = &self.opts.plan;
        let all = iv.all();
        let mut classes = BTreeMap::new();
        for (i, c) in iv.classes.iter().enumerate() {
            let Some(c) = c else { continue };
            self.totals[i].merge(c);
            let service = Latency::of(&c.uncorrected);
            classes.insert(
                plan.classes[i].name.clone(),
                ClassSecond {
                    offered: c.offered,
                    completed: c.completed(),
                    errors: c.errors(),
                    latency: Latency::of(&c.corrected),
                    service_p50_ms: service.p50_ms,
                    service_p99_ms: service.p99_ms,
                    good: c.good,
                    unavailable: c.unavailable,
                },
            );
        }
        self.counters.merge(&iv.counters);
        self.lag.add(&iv.lag).expect("same bounds");
        let lag_p99_ms = if iv.lag.is_empty() {
            0.0
        } else {
            iv.lag.value_at_quantile(0.99) as f64 / 1000.0
        };
        let (cpu, worker_cpu, pools) = match tick {
            Some(t) => (t.cpu, t.worker_cpu_max, self.pools(t.pools)),
            None => (0.0, 0.0, BTreeMap::new()),
        };
        let open_loop = plan.schedule.is_some();
        let overloaded = open_loop
            && (lag_p99_ms > self.opts.lag_bound.as_secs_f64() * 1e3 || worker_cpu >= 0.95);
        let k = &iv.counters;
        Second {
            t: iv.second,
            expected_rps: expected_in_second(plan, iv.second),
            offered: k.offered,
            sent: k.sent,
            completed: all.completed(),
            errors: all.errors() + k.dropped,
            good: all.good,
            late: k.late,
            dropped: k.dropped,
            timeouts: k.timeouts,
            io_errors: k.io_errors,
            connect_errors: k.connect_errors,
            reconnects: k.reconnects,
            unfinished: k.unfinished,
            connections: iv.open_connections,
            lag_p99_ms,
            cpu,
            worker_cpu,
            overloaded,
            latency: Latency::of(&all.corrected),
            service: Latency::of(&all.uncorrected),
            classes,
            pools,
        }
    }

    fn pools(&mut self, g: Option<BTreeMap<String, PoolGauges>>) -> BTreeMap<String, PoolSecond> {
        let mut out = BTreeMap::new();
        for (name, g) in g.unwrap_or_default() {
            let prev = self.prev_decisions.get(&name).copied();
            // A counter that moved between two scrapes marks decisions in
            // between; the first scrape is only a baseline.
            let delta = |now: Option<f64>, before: Option<f64>| match (now, before) {
                (Some(n), Some(b)) if n > b => Some(n - b),
                (Some(_), Some(_)) => None,
                _ => None,
            };
            let (grow, shrink, shed) = match prev {
                Some((pg, ps, pd)) => (
                    delta(g.grow_total, pg),
                    delta(g.shrink_total, ps),
                    delta(g.shed_total, pd),
                ),
                None => (None, None, None),
            };
            self.prev_decisions
                .insert(name.clone(), (g.grow_total, g.shrink_total, g.shed_total));
            out.insert(
                name,
                PoolSecond {
                    max_open: g.max_open,
                    open: g.open,
                    in_use: g.in_use,
                    waiting: g.waiting,
                    acquire_wait_p99_ms: g.acquire_wait_p99.map(|s| s * 1e3),
                    grow,
                    shrink,
                    shed,
                },
            );
        }
        out
    }
}
