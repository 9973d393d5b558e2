//! The run's summary: totals, SLO seconds, settling after each rate edge,
//! pool overshoot and connection-seconds, the generator's own health, and
//! per-second samples for `compare`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::client::run::{Collected, RunOptions, Second};
use crate::client::worker::IoUsed;
use crate::plan::pattern::Edge;
use crate::report::stats::Latency;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ClassSummary {
    pub offered: u64,
    pub completed: u64,
    pub errors: u64,
    pub throughput_rps: f64,
    pub latency: Latency,
    pub service: Latency,
    /// Successes within 200 ms of their intended send, and per second.
    pub good: u64,
    pub goodput_rps: f64,
    /// 503 responses (shed, pool timeout, database down).
    pub unavailable: u64,
    /// Their latency from the intended send: fast for sheds, the acquire
    /// timeout for waits that ran out.
    pub unavailable_latency: Latency,
    /// p99 of each second with responses of this class (for `compare`).
    pub p99_samples_ms: Vec<f64>,
}

/// What happened after one sudden change of offered rate.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct EdgeSummary {
    pub t: f64,
    pub from_rps: f64,
    pub to_rps: f64,
    /// "up" or "down".
    pub direction: String,
    /// Seconds until p99 stayed within the SLO for 3 seconds (None: never, in this window).
    pub latency_settle_s: Option<f64>,
    pub pools: BTreeMap<String, PoolEdge>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PoolEdge {
    /// Seconds until `open` stayed within max(1, 10 %) of its value at the window's end.
    pub settle_s: Option<f64>,
    pub start_open: f64,
    pub peak_open: f64,
    pub final_open: f64,
    /// (peak − final) / final after a rise, in percent.
    pub overshoot_pct: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PoolSummary {
    /// ∫ open dt over the run (one sample per second).
    pub connection_seconds: f64,
    pub mean_open: f64,
    pub peak_open: f64,
    pub peak_max_open: f64,
    pub grow_decisions: f64,
    pub shrink_decisions: f64,
    pub acquire_wait_p99_max_ms: f64,
    /// Waiters the acquire queue shed (from the server's counters).
    pub sheds: f64,
    /// The largest overshoot after any rising edge.
    pub max_overshoot_pct: Option<f64>,
    pub samples: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Generator {
    /// The generator could not keep up: results understate what was asked for.
    pub saturated: bool,
    pub overloaded_seconds: u64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    pub lag_bound_ms: f64,
    pub cpu_max: f64,
    /// Mean over the seconds of the schedule: process CPU in cores, busiest thread 0..1.
    pub cpu_mean: f64,
    pub worker_cpu_max: f64,
    pub worker_cpu_mean: f64,
    pub messages: Vec<String>,
    /// The generator's I/O backend and why, e.g. `io_uring` or `epoll
    /// (seccomp_or_sysctl)`; per backend with thread counts when threads
    /// differ. Empty when no thread got as far as setting one up.
    pub io: String,
}

/// Per-second values, the raw material for significance tests in `compare`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Samples {
    pub throughput: Vec<f64>,
    pub p50_ms: Vec<f64>,
    pub p99_ms: Vec<f64>,
    pub p999_ms: Vec<f64>,
    pub errors: Vec<f64>,
    /// Successes within 200 ms per second.
    pub goodput: Vec<f64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ThresholdResult {
    pub expr: String,
    pub value: f64,
    pub ok: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Summary {
    pub tool: String,
    pub target: String,
    /// "open" (scheduled) or "closed" (as fast as the connections allow).
    pub mode: String,
    pub arrivals: String,
    pub connections: usize,
    pub pipeline: usize,
    pub threads: usize,
    pub seed: u64,
    pub duration_s: f64,
    pub wall_s: f64,
    /// Ended early by Ctrl-C.
    pub interrupted: bool,
    pub slo_ms: f64,
    pub classes_defined: Vec<String>,
    pub offered: u64,
    pub sent: u64,
    pub completed: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub late: u64,
    pub dropped: u64,
    pub timeouts: u64,
    pub io_errors: u64,
    pub connect_errors: u64,
    pub reconnects: u64,
    pub unfinished: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    /// 503 responses, all classes.
    pub unavailable: u64,
    pub throughput_rps: f64,
    /// Successes within 200 ms of their intended send, per second.
    pub goodput_rps: f64,
    /// From the intended send time (coordinated-omission corrected).
    pub latency: Latency,
    /// From the actual send.
    pub service: Latency,
    pub classes: BTreeMap<String, ClassSummary>,
    pub seconds_over_slo: u64,
    pub edges: Vec<EdgeSummary>,
    pub pools: BTreeMap<String, PoolSummary>,
    pub generator: Generator,
    pub samples: Samples,
    #[serde(default)]
    pub thresholds: Vec<ThresholdResult>,
}

/// Consecutive seconds within the SLO that count as settled.
const SETTLED_FOR: usize = 3;

/// Default SLO when none is given.
pub const DEFAULT_SLO_MS: f64 = 50.0;

pub fn summarize(c: &Collected, opts: &RunOptions) -> Summary {
    let plan = &opts.plan;
    let slo_ms = opts.plan.slo.map_or(DEFAULT_SLO_MS, |s| s * 1e3);
    let all = c.all();
    let k = &c.totals.counters;
    let interrupted = crate::signal::interrupted();
    // An interrupted run is judged on the seconds it actually ran.
    let duration = if interrupted {
        c.wall.as_secs_f64().clamp(1e-3, plan.duration())
    } else {
        plan.duration()
    };
    let mut classes = BTreeMap::new();
    for (i, name) in c.class_names.iter().enumerate() {
        let t = &c.totals.classes[i];
        if t.offered == 0 && t.completed() == 0 && t.failed == 0 {
            continue;
        }
        classes.insert(
            name.clone(),
            ClassSummary {
                offered: t.offered,
                completed: t.completed(),
                errors: t.errors(),
                throughput_rps: t.completed() as f64 / duration,
                latency: Latency::of(&t.corrected),
                service: Latency::of(&t.uncorrected),
                good: t.good,
                goodput_rps: t.good as f64 / duration,
                unavailable: t.unavailable,
                unavailable_latency: Latency::of(&t.unavailable_latency),
                p99_samples_ms: Vec::new(),
            },
        );
    }
    let seconds = &c.seconds;
    // The last record may cover only the drain after the schedule: samples
    // use whole seconds inside the schedule.
    let inside: Vec<&Second> = seconds
        .iter()
        .filter(|s| (s.t as f64) + 1.0 <= duration + 1e-9)
        .collect();
    for (name, cs) in classes.iter_mut() {
        cs.p99_samples_ms = inside
            .iter()
            .filter_map(|s| s.classes.get(name))
            .filter(|c| c.latency.count > 0)
            .map(|c| c.latency.p99_ms)
            .collect();
    }
    let seconds_over_slo = inside
        .iter()
        .filter(|s| s.latency.count > 0 && s.latency.p99_ms > slo_ms)
        .count() as u64;
    let edges: Vec<Edge> = plan
        .schedule
        .as_ref()
        .map(|s| s.edges())
        .unwrap_or_default();
    let pool_names: Vec<String> = {
        let mut v: Vec<String> = seconds
            .iter()
            .flat_map(|s| s.pools.keys().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let edge_summaries = edges
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let window_end = edges.get(i + 1).map_or(duration, |n| n.t);
            edge_summary(seconds, e, window_end, slo_ms, &pool_names)
        })
        .collect::<Vec<_>>();
    let mut pools = BTreeMap::new();
    for name in &pool_names {
        let mut p = PoolSummary::default();
        let mut open_n = 0usize;
        for s in seconds {
            let Some(ps) = s.pools.get(name) else {
                continue;
            };
            p.samples += 1;
            if let Some(o) = ps.open {
                p.connection_seconds += o;
                p.peak_open = p.peak_open.max(o);
                open_n += 1;
            }
            if let Some(m) = ps.max_open {
                p.peak_max_open = p.peak_max_open.max(m);
            }
            p.grow_decisions += ps.grow.unwrap_or(0.0);
            p.shrink_decisions += ps.shrink.unwrap_or(0.0);
            p.sheds += ps.shed.unwrap_or(0.0);
            if let Some(w) = ps.acquire_wait_p99_ms {
                p.acquire_wait_p99_max_ms = p.acquire_wait_p99_max_ms.max(w);
            }
        }
        if open_n > 0 {
            p.mean_open = p.connection_seconds / open_n as f64;
        }
        p.max_overshoot_pct = edge_summaries
            .iter()
            .filter_map(|e| e.pools.get(name).and_then(|pe| pe.overshoot_pct))
            .reduce(f64::max);
        pools.insert(name.clone(), p);
    }

    let lag_bound_ms = opts.lag_bound.as_secs_f64() * 1e3;
    let overloaded_seconds = seconds.iter().filter(|s| s.overloaded).count() as u64;
    let lag = &c.totals.lag;
    let lag_p99_ms = if lag.is_empty() {
        0.0
    } else {
        lag.value_at_quantile(0.99) as f64 / 1e3
    };
    let worker_cpu_max = seconds.iter().map(|s| s.worker_cpu).fold(0.0, f64::max);
    let mut messages = Vec::new();
    let open_loop = plan.schedule.is_some();
    if open_loop && lag_p99_ms > lag_bound_ms {
        let why = if worker_cpu_max >= 0.9 {
            "a generator thread ran out of CPU"
        } else {
            "a generator thread was kept from running on time, though not busy itself: other processes on its CPU?"
        };
        messages.push(format!(
            "schedule lag p99 {lag_p99_ms:.2}ms is over the {lag_bound_ms:.1}ms bound: requests left later than intended ({why})"
        ));
    }
    if open_loop && overloaded_seconds > 0 {
        messages.push(format!(
            "the generator was behind (lag over bound or a generator thread at >= 95% CPU) in {overloaded_seconds} of {} seconds",
            seconds.len()
        ));
    }
    for f in &c.totals.fatal {
        messages.push(f.clone());
    }
    let saturated = !c.totals.fatal.is_empty()
        || (open_loop
            && (lag_p99_ms > lag_bound_ms || overloaded_seconds * 10 > seconds.len() as u64));
    let errors = all.errors() + k.dropped;
    let attempted = k.sent + k.dropped;
    Summary {
        tool: "tidepool-loadgen".into(),
        target: format!("http://{}", opts.target.host_header),
        mode: if open_loop { "open" } else { "closed" }.into(),
        arrivals: if plan.poisson { "poisson" } else { "uniform" }.into(),
        connections: opts.connections,
        pipeline: opts.pipeline,
        threads: opts.threads,
        seed: plan.seed,
        duration_s: duration,
        wall_s: c.wall.as_secs_f64(),
        interrupted,
        slo_ms,
        classes_defined: c.class_names.clone(),
        offered: k.offered,
        sent: k.sent,
        completed: all.completed(),
        errors,
        error_rate: if attempted > 0 {
            errors as f64 / attempted as f64
        } else {
            0.0
        },
        late: k.late,
        dropped: k.dropped,
        timeouts: k.timeouts,
        io_errors: k.io_errors,
        connect_errors: k.connect_errors,
        reconnects: k.reconnects,
        unfinished: k.unfinished,
        status_4xx: all.status[4],
        status_5xx: all.status[5],
        unavailable: all.unavailable,
        throughput_rps: all.completed() as f64 / duration,
        goodput_rps: all.good as f64 / duration,
        latency: Latency::of(&all.corrected),
        service: Latency::of(&all.uncorrected),
        classes,
        seconds_over_slo,
        edges: edge_summaries,
        pools,
        generator: Generator {
            saturated,
            overloaded_seconds,
            lag_p99_ms,
            lag_max_ms: if lag.is_empty() {
                0.0
            } else {
                lag.max() as f64 / 1e3
            },
            lag_bound_ms,
            cpu_max: seconds.iter().map(|s| s.cpu).fold(0.0, f64::max),
            cpu_mean: mean(inside.iter().map(|s| s.cpu)),
            worker_cpu_max,
            worker_cpu_mean: mean(inside.iter().map(|s| s.worker_cpu)),
            messages,
            io: describe_io(&c.io),
        },
        samples: Samples {
            throughput: inside.iter().map(|s| s.completed as f64).collect(),
            p50_ms: inside
                .iter()
                .filter(|s| s.latency.count > 0)
                .map(|s| s.latency.p50_ms)
                .collect(),
            p99_ms: inside
                .iter()
                .filter(|s| s.latency.count > 0)
                .map(|s| s.latency.p99_ms)
                .collect(),
            p999_ms: inside
                .iter()
                .filter(|s| s.latency.count > 0)
                .map(|s| s.latency.p999_ms)
                .collect(),
            errors: inside.iter().map(|s| s.errors as f64).collect(),
            goodput: inside.iter().map(|s| s.good as f64).collect(),
        },
        thresholds: Vec::new(),
    }
}

/// The backends the generator threads ran on, as one line: `epoll
/// (seccomp_or_sysctl)` when they agree, else e.g. `io_uring on 3 threads,
/// epoll (memlock) on 1 thread`.
pub fn describe_io(used: &[IoUsed]) -> String {
    let mut kinds: Vec<(IoUsed, usize)> = Vec::new();
    for u in used {
        match kinds.iter_mut().find(|(k, _)| k == u) {
            Some((_, n)) => *n += 1,
            None => kinds.push((*u, 1)),
        }
    }
    if let [(only, _)] = kinds.as_slice() {
        return only.to_string();
    }
    kinds
        .iter()
        .map(|(k, n)| format!("{k} on {n} thread{}", if *n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join(", ")
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for x in v {
        sum += x;
        n += 1;
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// Settling after one edge, looking at whole seconds in [edge, window_end).
pub fn edge_summary(
    seconds: &[Second],
    e: &Edge,
    window_end: f64,
    slo_ms: f64,
    pools: &[String],
) -> EdgeSummary {
    let first = e.t.floor() as u64;
    let window: Vec<&Second> = seconds
        .iter()
        .filter(|s| s.t >= first && (s.t as f64) < window_end)
        .collect();
    // Latency: the first second that starts SETTLED_FOR seconds within the
    // SLO (fewer when the window ends first, but at least one).
    let mut latency_settle_s = None;
    for i in 0..window.len() {
        let run = &window[i..(i + SETTLED_FOR).min(window.len())];
        if run.len() < SETTLED_FOR.min(window.len()) {
            break;
        }
        if run
            .iter()
            .all(|s| s.latency.count == 0 || s.latency.p99_ms <= slo_ms)
        {
            latency_settle_s = Some((window[i].t as f64 - e.t).max(0.0));
            break;
        }
    }
    let mut pool_edges = BTreeMap::new();
    for name in pools {
        let series: Vec<(u64, f64)> = window
            .iter()
            .filter_map(|s| s.pools.get(name).and_then(|p| p.open).map(|o| (s.t, o)))
            .collect();
        if series.len() < 2 {
            continue;
        }
        let start_open = seconds
            .iter()
            .rev()
            .find(|s| s.t < first)
            .and_then(|s| s.pools.get(name).and_then(|p| p.open))
            .unwrap_or(series[0].1);
        let final_open = series.last().expect("two samples").1;
        let peak_open = series.iter().map(|x| x.1).fold(f64::MIN, f64::max);
        let band = (final_open * 0.1).max(1.0);
        let last_out = series.iter().rposition(|x| (x.1 - final_open).abs() > band);
        // The final stretch within the band must last SETTLED_FOR samples:
        // a pool still moving when the window ends has not settled.
        let settled_from = last_out.map_or(0, |i| i + 1);
        let settle_s = (series.len() - settled_from >= SETTLED_FOR.min(series.len()))
            .then(|| (series[settled_from].0 as f64 - e.t).max(0.0));
        let overshoot_pct = (e.to > e.from && final_open > 0.0)
            .then(|| ((peak_open - final_open) / final_open * 100.0).max(0.0));
        pool_edges.insert(
            name.clone(),
            PoolEdge {
                settle_s,
                start_open,
                peak_open,
                final_open,
                overshoot_pct,
            },
        );
    }
    EdgeSummary {
        t: e.t,
        from_rps: e.from,
        to_rps: e.to,
        direction: if e.to > e.from { "up" } else { "down" }.into(),
        latency_settle_s,
        pools: pool_edges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::run::PoolSecond;

    fn sec(t: u64, p99: f64, open: Option<f64>) -> Second {
        let mut s = Second {
            t,
            ..Default::default()
        };
        s.latency.count = 100;
        s.latency.p99_ms = p99;
        if let Some(o) = open {
            s.pools.insert(
                "pg".into(),
                PoolSecond {
                    open: Some(o),
                    max_open: Some(16.0),
                    ..Default::default()
                },
            );
        }
        s
    }

    #[test]
    fn settling_and_overshoot_after_a_rise() {
        // Edge at 10 s: p99 spikes for 3 s, the pool overshoots to 14 and settles at 10.
        let p99 = [5., 5., 80., 90., 60., 10., 8., 7., 6., 6.];
        let open = [4., 4., 8., 14., 13., 11., 10., 10., 10., 10.];
        let seconds: Vec<Second> = (0..10)
            .map(|i| sec(8 + i as u64, p99[i], Some(open[i])))
            .collect();
        let e = Edge {
            t: 10.0,
            from: 100.0,
            to: 1000.0,
        };
        let s = edge_summary(&seconds, &e, 18.0, 50.0, &["pg".to_string()]);
        assert_eq!(s.direction, "up");
        assert_eq!(s.latency_settle_s, Some(3.0));
        let pg = &s.pools["pg"];
        assert_eq!(pg.start_open, 4.0);
        assert_eq!(pg.peak_open, 14.0);
        assert_eq!(pg.final_open, 10.0);
        assert!((pg.overshoot_pct.unwrap() - 40.0).abs() < 1e-9);
        // 11 at t=13 is within the band (max(1, 10 %) of 10); 13 at t=12 is not.
        assert_eq!(pg.settle_s, Some(3.0));
    }

    #[test]
    fn the_io_line_names_one_backend_or_counts_threads_per_backend() {
        use tidepool_engine::rt::Backend;
        let ring = IoUsed {
            backend: Backend::IoUring,
            reason: "probe_ok",
        };
        let epoll = IoUsed {
            backend: Backend::Epoll,
            reason: "memlock",
        };
        assert_eq!(describe_io(&[]), "");
        assert_eq!(describe_io(&[epoll, epoll]), "epoll (memlock)");
        assert_eq!(
            describe_io(&[ring, epoll, ring, ring]),
            "io_uring on 3 threads, epoll (memlock) on 1 thread"
        );
    }

    #[test]
    fn never_settling_is_reported_as_such() {
        let seconds: Vec<Second> = (0..6)
            .map(|i| sec(i, 100.0, Some(i as f64 * 5.0)))
            .collect();
        let e = Edge {
            t: 0.0,
            from: 10.0,
            to: 100.0,
        };
        let s = edge_summary(&seconds, &e, 6.0, 50.0, &["pg".to_string()]);
        assert_eq!(s.latency_settle_s, None);
        assert_eq!(s.pools["pg"].settle_s, None);
    }
}
