//! A run's timeline: rate phases and trace replays one after another, and
//! the per-thread stream of intended send times drawn from it.

use std::sync::Arc;

use crate::plan::pattern::{significant, Edge, RatePhase};
use crate::util::Rng;

/// One request of a replayed trace.
#[derive(Clone, Debug)]
pub struct TraceEntry {
    /// Seconds from the phase's start, already divided by the speed factor.
    pub offset: f64,
    pub class: usize,
    pub method: String,
    pub path: String,
    pub body: Option<String>,
}

#[derive(Clone, Debug)]
pub struct TracePhase {
    pub entries: Vec<TraceEntry>,
    pub duration: f64,
}

#[derive(Clone, Debug)]
pub enum Phase {
    Rate(RatePhase),
    Trace(TracePhase),
}

impl Phase {
    pub fn duration(&self) -> f64 {
        match self {
            Phase::Rate(p) => p.duration,
            Phase::Trace(p) => p.duration,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Phase::Trace(_) => "trace",
            Phase::Rate(p) => match p.shape {
                crate::plan::pattern::Shape::Steady { .. } => "steady",
                crate::plan::pattern::Shape::Ramp { .. } => "ramp",
                crate::plan::pattern::Shape::Step { .. } => "step",
                crate::plan::pattern::Shape::Spike { .. } => "spike",
                crate::plan::pattern::Shape::Sine { .. } => "sine",
                crate::plan::pattern::Shape::Burst { .. } => "burst",
            },
        }
    }
}

/// Phases laid end to end.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub phases: Vec<Phase>,
    starts: Vec<f64>,
    /// Λ at each phase's start; trace phases add nothing to Λ (their
    /// arrivals are listed, not drawn).
    cum: Vec<f64>,
    pub duration: f64,
}

impl Schedule {
    pub fn new(phases: Vec<Phase>) -> Result<Schedule, String> {
        if phases.is_empty() {
            return Err("the pattern has no phases".into());
        }
        let mut starts = Vec::with_capacity(phases.len());
        let mut cum = Vec::with_capacity(phases.len() + 1);
        let (mut t, mut c) = (0.0, 0.0);
        for p in &phases {
            starts.push(t);
            cum.push(c);
            t += p.duration();
            if let Phase::Rate(r) = p {
                c += r.total();
            }
        }
        cum.push(c);
        Ok(Schedule {
            phases,
            starts,
            cum,
            duration: t,
        })
    }

    pub fn phase_start(&self, i: usize) -> f64 {
        self.starts[i]
    }

    /// The phase index holding time t (the last phase for t past the end).
    pub fn phase_at(&self, t: f64) -> usize {
        self.starts
            .partition_point(|&s| s <= t)
            .saturating_sub(1)
            .min(self.phases.len() - 1)
    }

    /// Offered rate at time t; traces count as their mean rate over the second around t.
    pub fn rate(&self, t: f64) -> f64 {
        if t < 0.0 || t >= self.duration {
            return 0.0;
        }
        let i = self.phase_at(t);
        let local = t - self.starts[i];
        match &self.phases[i] {
            Phase::Rate(p) => p.rate(local),
            Phase::Trace(tr) => {
                let lo = tr.entries.partition_point(|e| e.offset < local - 0.5);
                let hi = tr.entries.partition_point(|e| e.offset < local + 0.5);
                (hi - lo) as f64
            }
        }
    }

    /// Λ(t) over the rate phases.
    pub fn integral(&self, t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        let i = self.phase_at(t);
        match &self.phases[i] {
            Phase::Rate(p) => self.cum[i] + p.integral(t - self.starts[i]),
            Phase::Trace(_) => self.cum[i],
        }
    }

    /// The expected number of rate-drawn arrivals in the whole run.
    pub fn total(&self) -> f64 {
        *self.cum.last().unwrap_or(&0.0)
    }

    /// The time t with Λ(t) = u, or None when u is past the end.
    pub fn invert(&self, u: f64) -> Option<f64> {
        if u > self.total() {
            return None;
        }
        // The phase where Λ crosses u: the last rate phase with cum[i] < u
        // whose own total reaches u (flat phases are skipped).
        let mut i = self.cum.partition_point(|&c| c < u).max(1) - 1;
        i = i.min(self.phases.len() - 1);
        loop {
            if let Phase::Rate(p) = &self.phases[i] {
                if self.cum[i + 1] >= u && p.total() > 0.0 {
                    return Some(self.starts[i] + p.invert(u - self.cum[i]));
                }
            }
            i += 1;
            if i >= self.phases.len() {
                return None;
            }
        }
    }

    /// Every sudden change of offered rate, in run time: edges inside phases
    /// and jumps at phase boundaries.
    pub fn edges(&self) -> Vec<Edge> {
        let mut out = Vec::new();
        let mut prev_end: Option<f64> = None;
        for (i, p) in self.phases.iter().enumerate() {
            let start = self.starts[i];
            match p {
                Phase::Rate(r) => {
                    let inner = r.edges();
                    let starts_with_edge = inner.first().is_some_and(|e| e.t <= 1e-9);
                    if let Some(prev) = prev_end {
                        let first = r.rate(0.0);
                        if !starts_with_edge && significant(prev, first) {
                            out.push(Edge {
                                t: start,
                                from: prev,
                                to: first,
                            });
                        }
                    }
                    for e in inner {
                        if e.t <= 1e-9 && i == 0 {
                            // The run's own start is not an edge of interest.
                            continue;
                        }
                        let from = if e.t <= 1e-9 {
                            prev_end.unwrap_or(e.from)
                        } else {
                            e.from
                        };
                        if significant(from, e.to) {
                            out.push(Edge {
                                t: start + e.t,
                                from,
                                to: e.to,
                            });
                        }
                    }
                    prev_end = Some(r.rate(r.duration - 1e-9));
                }
                Phase::Trace(_) => prev_end = None,
            }
        }
        out
    }
}

/// What an arrival sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    /// A request drawn from the mix.
    Mix,
    /// Entry `entry` of trace phase `phase`.
    Trace { phase: usize, entry: usize },
}

/// The intended send times of one thread's share of the run.
///
/// Thread i of n takes the evenly spaced arrivals with k ≡ i (mod n); with
/// Poisson arrivals each thread runs its own Poisson process of rate λ/n,
/// and independent Poisson processes add up to one of rate λ.
pub struct Arrivals {
    sched: Arc<Schedule>,
    thread: usize,
    threads: usize,
    rng: Option<Rng>,
    k: u64,
    u: f64,
    next_rate: Option<f64>,
    trace_phase: usize,
    trace_entry: usize,
}

impl Arrivals {
    pub fn new(
        sched: Arc<Schedule>,
        thread: usize,
        threads: usize,
        poisson: bool,
        seed: u64,
    ) -> Arrivals {
        let rng = poisson.then(|| Rng::derive(seed, 0x5EED_0000 + thread as u64));
        let mut a = Arrivals {
            sched,
            thread,
            threads: threads.max(1),
            rng,
            k: 0,
            u: 0.0,
            next_rate: None,
            trace_phase: 0,
            trace_entry: thread,
        };
        a.advance_rate();
        a
    }

    fn advance_rate(&mut self) {
        let n = self.threads as f64;
        self.u = match &mut self.rng {
            Some(rng) => self.u + n * rng.exp1(),
            None => (self.k * self.threads as u64 + self.thread as u64) as f64 + 0.5,
        };
        self.k += 1;
        self.next_rate = self.sched.invert(self.u);
    }

    /// The next trace arrival at or after the cursor, as (time, phase, entry).
    fn peek_trace(&mut self) -> Option<(f64, usize, usize)> {
        while self.trace_phase < self.sched.phases.len() {
            if let Phase::Trace(tr) = &self.sched.phases[self.trace_phase] {
                if let Some(e) = tr.entries.get(self.trace_entry) {
                    return Some((
                        self.sched.phase_start(self.trace_phase) + e.offset,
                        self.trace_phase,
                        self.trace_entry,
                    ));
                }
            }
            self.trace_phase += 1;
            self.trace_entry = self.thread;
        }
        None
    }
}

impl Iterator for Arrivals {
    type Item = (f64, What);

    fn next(&mut self) -> Option<(f64, What)> {
        let trace = self.peek_trace();
        match (self.next_rate, trace) {
            (Some(r), Some((t, _, _))) if r <= t => {
                self.advance_rate();
                Some((r, What::Mix))
            }
            (Some(r), None) => {
                self.advance_rate();
                Some((r, What::Mix))
            }
            (_, Some((t, phase, entry))) => {
                self.trace_entry += self.threads;
                Some((t, What::Trace { phase, entry }))
            }
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::pattern::Shape;

    fn rate(shape: Shape, d: f64) -> Phase {
        Phase::Rate(RatePhase::new(shape, d).unwrap())
    }

    /// Counts per whole second, straight from the schedule: no clock involved.
    fn per_second(sched: &Arc<Schedule>, threads: usize, poisson: bool) -> Vec<u64> {
        let mut counts = vec![0u64; sched.duration.ceil() as usize];
        for th in 0..threads {
            for (t, _) in Arrivals::new(sched.clone(), th, threads, poisson, 42) {
                assert!(t >= 0.0 && t <= sched.duration + 1e-9, "arrival at {t}");
                let last = counts.len() - 1;
                counts[(t as usize).min(last)] += 1;
            }
        }
        counts
    }

    fn expected_per_second(sched: &Schedule) -> Vec<f64> {
        (0..sched.duration.ceil() as usize)
            .map(|s| sched.integral(s as f64 + 1.0) - sched.integral(s as f64))
            .collect()
    }

    #[test]
    fn every_shape_delivers_its_rate_each_second() {
        let shapes = vec![
            rate(Shape::Steady { rate: 1000.0 }, 5.0),
            rate(
                Shape::Ramp {
                    from: 100.0,
                    to: 2000.0,
                },
                5.0,
            ),
            rate(
                Shape::Step {
                    from: 200.0,
                    to: 1400.0,
                    steps: 4,
                },
                5.0,
            ),
            rate(
                Shape::Spike {
                    base: 100.0,
                    peak: 3000.0,
                    at: 2.0,
                    width: 1.0,
                },
                5.0,
            ),
            rate(
                Shape::Sine {
                    base: 1000.0,
                    amplitude: 800.0,
                    period: 4.0,
                    phase: 0.0,
                },
                8.0,
            ),
            rate(
                Shape::Burst {
                    low: 200.0,
                    high: 2000.0,
                    period: 2.0,
                    duty: 0.5,
                    rise: 0.0,
                },
                6.0,
            ),
        ];
        for shape in shapes {
            let kind = shape.kind();
            let sched = Arc::new(Schedule::new(vec![shape]).unwrap());
            let want = expected_per_second(&sched);
            for threads in [1, 3] {
                let got = per_second(&sched, threads, false);
                for (s, (g, w)) in got.iter().zip(&want).enumerate() {
                    // Evenly spaced arrivals land within one request per thread of Λ.
                    assert!(
                        (*g as f64 - w).abs() <= 1.0 + threads as f64,
                        "{kind}, {threads} threads, second {s}: {g} sent, {w:.1} expected"
                    );
                }
            }
        }
    }

    #[test]
    fn known_values_per_second() {
        let sched = Arc::new(
            Schedule::new(vec![
                rate(Shape::Steady { rate: 500.0 }, 2.0),
                rate(
                    Shape::Burst {
                        low: 100.0,
                        high: 900.0,
                        period: 2.0,
                        duty: 0.5,
                        rise: 0.0,
                    },
                    4.0,
                ),
            ])
            .unwrap(),
        );
        let got = per_second(&sched, 1, false);
        assert_eq!(got, vec![500, 500, 900, 100, 900, 100]);
    }

    #[test]
    fn poisson_counts_have_poisson_spread() {
        let sched =
            Arc::new(Schedule::new(vec![rate(Shape::Steady { rate: 400.0 }, 200.0)]).unwrap());
        for threads in [1, 4] {
            let poisson = per_second(&sched, threads, true);
            let uniform = per_second(&sched, threads, false);
            let stats = |v: &[u64]| {
                let n = v.len() as f64;
                let mean = v.iter().sum::<u64>() as f64 / n;
                let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
                (mean, var)
            };
            let (pm, pv) = stats(&poisson);
            let (um, uv) = stats(&uniform);
            assert!((pm - 400.0).abs() < 6.0, "poisson mean {pm}");
            // A Poisson count's variance equals its mean; evenly spaced arrivals have none.
            assert!(pv > 250.0 && pv < 600.0, "poisson variance {pv}");
            assert!((um - 400.0).abs() < 0.01, "uniform mean {um}");
            assert!(uv < 1.0, "uniform variance {uv}");
        }
    }

    #[test]
    fn inversion_crosses_phases_and_skips_silence() {
        let sched = Schedule::new(vec![
            rate(Shape::Steady { rate: 10.0 }, 1.0),
            rate(Shape::Steady { rate: 0.0 }, 5.0),
            rate(Shape::Steady { rate: 10.0 }, 1.0),
        ])
        .unwrap();
        assert!((sched.invert(5.0).unwrap() - 0.5).abs() < 1e-9);
        // The 11th request waits out the silent phase.
        assert!((sched.invert(10.5).unwrap() - 6.05).abs() < 1e-9);
        assert!(sched.invert(20.5).is_none());
        let times: Vec<f64> = Arrivals::new(Arc::new(sched), 0, 1, false, 1)
            .map(|(t, _)| t)
            .collect();
        assert_eq!(times.len(), 20);
        assert!(times.iter().all(|t| !(1.0..6.0).contains(t)));
    }

    #[test]
    fn trace_and_rate_arrivals_interleave_in_order() {
        let entries = (0..10)
            .map(|i| TraceEntry {
                offset: i as f64 * 0.1,
                class: 0,
                method: "GET".into(),
                path: format!("/t/{i}"),
                body: None,
            })
            .collect();
        let sched = Arc::new(
            Schedule::new(vec![
                rate(Shape::Steady { rate: 4.0 }, 1.0),
                Phase::Trace(TracePhase {
                    entries,
                    duration: 1.0,
                }),
                rate(Shape::Steady { rate: 4.0 }, 1.0),
            ])
            .unwrap(),
        );
        let mut all = Vec::new();
        for th in 0..2 {
            all.extend(Arrivals::new(sched.clone(), th, 2, false, 1));
        }
        let traced: Vec<_> = all
            .iter()
            .filter(|(_, w)| matches!(w, What::Trace { .. }))
            .collect();
        assert_eq!(traced.len(), 10);
        assert!(traced.iter().all(|(t, _)| (1.0..2.0).contains(t)));
        assert_eq!(all.len(), 18);
        for th in 0..2 {
            let v: Vec<f64> = Arrivals::new(sched.clone(), th, 2, false, 1)
                .map(|(t, _)| t)
                .collect();
            assert!(v.windows(2).all(|w| w[0] <= w[1]), "{v:?}");
        }
    }

    #[test]
    fn edges_include_phase_boundaries() {
        let sched = Schedule::new(vec![
            rate(Shape::Steady { rate: 100.0 }, 10.0),
            rate(
                Shape::Burst {
                    low: 100.0,
                    high: 1000.0,
                    period: 10.0,
                    duty: 0.5,
                    rise: 0.0,
                },
                20.0,
            ),
            rate(Shape::Steady { rate: 100.0 }, 10.0),
        ])
        .unwrap();
        let t: Vec<f64> = sched.edges().iter().map(|e| e.t).collect();
        assert_eq!(t, vec![10.0, 15.0, 20.0, 25.0]);
    }
}
