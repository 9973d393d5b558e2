//! Offered-rate curves.
//!
//! Every pattern is a rate λ(t) (requests per second). Its integral Λ(t)
//! counts the requests expected by time t, so the k-th send time solves
//! Λ(t_k) = u_k: u_k = k + ½ for evenly spaced arrivals, or the partial
//! sums of unit exponentials for Poisson arrivals (time rescaling). Steady,
//! ramp, step, spike and burst are piecewise linear, so Λ is piecewise
//! quadratic and is inverted exactly; the sine is inverted by Newton's
//! method inside a bracket that bisection keeps honest.

use std::f64::consts::TAU;

/// A rate that is linear between breakpoints. Equal times at consecutive
/// points make a jump (steps, spikes, square edges).
#[derive(Clone, Debug)]
pub struct Piecewise {
    pts: Vec<(f64, f64)>,
    /// Λ at each point.
    cum: Vec<f64>,
}

impl Piecewise {
    pub fn new(pts: Vec<(f64, f64)>) -> Piecewise {
        let mut cum = Vec::with_capacity(pts.len());
        let mut acc = 0.0;
        for i in 0..pts.len() {
            if i > 0 {
                let (t0, r0) = pts[i - 1];
                let (t1, r1) = pts[i];
                acc += (t1 - t0) * (r0 + r1) / 2.0;
            }
            cum.push(acc);
        }
        Piecewise { pts, cum }
    }

    fn end(&self) -> f64 {
        self.pts.last().map_or(0.0, |p| p.0)
    }

    pub fn total(&self) -> f64 {
        self.cum.last().copied().unwrap_or(0.0)
    }

    /// Index of the segment [i, i+1] holding t (the last one whose start ≤ t).
    fn segment_at(&self, t: f64) -> usize {
        let i = self.pts.partition_point(|p| p.0 <= t);
        i.saturating_sub(1).min(self.pts.len().saturating_sub(2))
    }

    pub fn rate(&self, t: f64) -> f64 {
        if self.pts.len() < 2 {
            return 0.0;
        }
        let i = self.segment_at(t);
        let (t0, r0) = self.pts[i];
        let (t1, r1) = self.pts[i + 1];
        if t1 <= t0 {
            return r1;
        }
        r0 + (r1 - r0) * ((t - t0) / (t1 - t0)).clamp(0.0, 1.0)
    }

    pub fn integral(&self, t: f64) -> f64 {
        if self.pts.len() < 2 {
            return 0.0;
        }
        let t = t.clamp(0.0, self.end());
        let i = self.segment_at(t);
        let (t0, r0) = self.pts[i];
        let (t1, r1) = self.pts[i + 1];
        let x = t - t0;
        let slope = if t1 > t0 { (r1 - r0) / (t1 - t0) } else { 0.0 };
        self.cum[i] + r0 * x + slope * x * x / 2.0
    }

    /// The t with Λ(t) = u (u within 0..=total).
    pub fn invert(&self, u: f64) -> f64 {
        if self.pts.len() < 2 {
            return 0.0;
        }
        // First segment whose end reaches u; zero-area segments are passed over.
        let j = self
            .cum
            .partition_point(|&c| c < u)
            .clamp(1, self.pts.len() - 1);
        let i = j - 1;
        let (t0, r0) = self.pts[i];
        let (t1, r1) = self.pts[j];
        let du = (u - self.cum[i]).max(0.0);
        if t1 <= t0 {
            return t0;
        }
        let b = (r1 - r0) / (t1 - t0);
        // a·x + b·x²/2 = du, written to stay stable when a or b is near 0.
        let disc = (r0 * r0 + 2.0 * b * du).max(0.0);
        let denom = r0 + disc.sqrt();
        let x = if denom > 0.0 { 2.0 * du / denom } else { 0.0 };
        (t0 + x).min(t1)
    }
}

/// The shape of one rate phase; times are seconds from the phase's start.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    Steady {
        rate: f64,
    },
    Ramp {
        from: f64,
        to: f64,
    },
    /// `steps` equal stairs from `from` to `to`; the phase is cut into steps + 1 levels.
    Step {
        from: f64,
        to: f64,
        steps: u32,
    },
    Spike {
        base: f64,
        peak: f64,
        at: f64,
        width: f64,
    },
    /// base + amplitude·sin(2π·(t/period + phase)); `phase` is a fraction of a period.
    Sine {
        base: f64,
        amplitude: f64,
        period: f64,
        phase: f64,
    },
    /// Square wave: each period rises from low to high over `rise`, holds
    /// high until duty·period, falls over `rise`, and holds low.
    Burst {
        low: f64,
        high: f64,
        period: f64,
        duty: f64,
        rise: f64,
    },
}

/// One rate phase, ready to evaluate.
#[derive(Clone, Debug)]
pub struct RatePhase {
    pub shape: Shape,
    pub duration: f64,
    curve: Curve,
}

#[derive(Clone, Debug)]
enum Curve {
    /// Over the whole phase.
    Linear(Piecewise),
    /// One period, repeated.
    Periodic {
        one: Piecewise,
        period: f64,
    },
    Sine,
}

fn check_rate(name: &str, v: f64) -> Result<(), String> {
    if !v.is_finite() || v < 0.0 {
        return Err(format!(
            "{name} = {v}: a rate must be a finite number >= 0 requests/s"
        ));
    }
    Ok(())
}

fn check_time(name: &str, v: f64) -> Result<(), String> {
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("{name} = {v}s: must be a duration > 0"));
    }
    Ok(())
}

impl RatePhase {
    /// Validates the shape and precomputes its curve.
    pub fn new(shape: Shape, duration: f64) -> Result<RatePhase, String> {
        check_time("duration", duration)?;
        let d = duration;
        let curve = match &shape {
            Shape::Steady { rate } => {
                check_rate("rate", *rate)?;
                Curve::Linear(Piecewise::new(vec![(0.0, *rate), (d, *rate)]))
            }
            Shape::Ramp { from, to } => {
                check_rate("from", *from)?;
                check_rate("to", *to)?;
                Curve::Linear(Piecewise::new(vec![(0.0, *from), (d, *to)]))
            }
            Shape::Step { from, to, steps } => {
                check_rate("from", *from)?;
                check_rate("to", *to)?;
                if *steps == 0 {
                    return Err("steps must be at least 1".into());
                }
                let n = *steps as usize;
                let width = d / (n + 1) as f64;
                let mut pts = Vec::with_capacity(2 * (n + 1));
                for j in 0..=n {
                    let r = from + (to - from) * j as f64 / n as f64;
                    pts.push((width * j as f64, r));
                    pts.push((if j == n { d } else { width * (j + 1) as f64 }, r));
                }
                Curve::Linear(Piecewise::new(pts))
            }
            Shape::Spike {
                base,
                peak,
                at,
                width,
            } => {
                check_rate("base", *base)?;
                check_rate("peak", *peak)?;
                check_time("width", *width)?;
                if !at.is_finite() || *at < 0.0 || at + width > d + 1e-9 {
                    return Err(format!(
                        "spike at {at}s lasting {width}s does not fit in the phase's {d}s"
                    ));
                }
                let end = (at + width).min(d);
                Curve::Linear(Piecewise::new(vec![
                    (0.0, *base),
                    (*at, *base),
                    (*at, *peak),
                    (end, *peak),
                    (end, *base),
                    (d, *base),
                ]))
            }
            Shape::Sine {
                base,
                amplitude,
                period,
                phase,
            } => {
                check_rate("base", *base)?;
                check_time("period", *period)?;
                if !amplitude.is_finite() || *amplitude < 0.0 {
                    return Err(format!("amplitude = {amplitude}: must be >= 0"));
                }
                if amplitude > base {
                    return Err(format!(
                        "sine with base {base} and amplitude {amplitude} would need a negative rate; \
                         amplitude must not exceed base"
                    ));
                }
                if !phase.is_finite() {
                    return Err("phase must be a finite fraction of a period".into());
                }
                Curve::Sine
            }
            Shape::Burst {
                low,
                high,
                period,
                duty,
                rise,
            } => {
                check_rate("low", *low)?;
                check_rate("high", *high)?;
                check_time("period", *period)?;
                if !(0.0..=1.0).contains(duty) {
                    return Err(format!("duty = {duty}: must be within 0..1"));
                }
                if !rise.is_finite() || *rise < 0.0 {
                    return Err(format!("rise = {rise}s: must be >= 0"));
                }
                let on = duty * period;
                if *rise > on + 1e-12 || *rise > period - on + 1e-12 {
                    return Err(format!(
                        "rise {rise}s does not fit: with period {period}s and duty {duty} the high part \
                         lasts {on}s and the low part {}s; rise must fit in both",
                        period - on
                    ));
                }
                let p = *period;
                let pts = vec![
                    (0.0, *low),
                    (*rise, *high),
                    (on, *high),
                    ((on + rise).min(p), *low),
                    (p, *low),
                ];
                Curve::Periodic {
                    one: Piecewise::new(pts),
                    period: p,
                }
            }
        };
        Ok(RatePhase {
            shape,
            duration,
            curve,
        })
    }

    /// λ(t), t in 0..duration.
    pub fn rate(&self, t: f64) -> f64 {
        match &self.curve {
            Curve::Linear(p) => p.rate(t),
            Curve::Periodic { one, period } => one.rate(t.rem_euclid(*period)),
            Curve::Sine => {
                let Shape::Sine {
                    base,
                    amplitude,
                    period,
                    phase,
                } = self.shape
                else {
                    unreachable!()
                };
                (base + amplitude * (TAU * (t / period + phase)).sin()).max(0.0)
            }
        }
    }

    /// Λ(t) = ∫₀ᵗ λ, t clamped to the phase.
    pub fn integral(&self, t: f64) -> f64 {
        let t = t.clamp(0.0, self.duration);
        match &self.curve {
            Curve::Linear(p) => p.integral(t),
            Curve::Periodic { one, period } => {
                let k = (t / period).floor();
                k * one.total() + one.integral(t - k * period)
            }
            Curve::Sine => {
                let Shape::Sine {
                    base,
                    amplitude,
                    period,
                    phase,
                } = self.shape
                else {
                    unreachable!()
                };
                base * t
                    - amplitude * period / TAU
                        * ((TAU * (t / period + phase)).cos() - (TAU * phase).cos())
            }
        }
    }

    pub fn total(&self) -> f64 {
        self.integral(self.duration)
    }

    /// The t in 0..=duration with Λ(t) = u.
    pub fn invert(&self, u: f64) -> f64 {
        match &self.curve {
            Curve::Linear(p) => p.invert(u),
            Curve::Periodic { one, period } => {
                let per = one.total();
                if per <= 0.0 {
                    return self.duration;
                }
                let mut k = (u / per).floor();
                let mut rem = u - k * per;
                // A u exactly on a period boundary belongs to the previous
                // period's end, which is the same instant.
                if rem <= 0.0 && k > 0.0 {
                    k -= 1.0;
                    rem = per;
                }
                (k * period + one.invert(rem)).min(self.duration)
            }
            Curve::Sine => self.invert_monotone(u),
        }
    }

    /// Safeguarded Newton on the monotone Λ: the bracket [lo, hi] always
    /// holds the root, and a Newton step that leaves it (or a flat spot
    /// where λ = 0) is replaced by bisection.
    fn invert_monotone(&self, u: f64) -> f64 {
        let (mut lo, mut hi) = (0.0, self.duration);
        let mean = self.total() / self.duration;
        let mut t = if mean > 0.0 {
            (u / mean).clamp(lo, hi)
        } else {
            hi
        };
        for _ in 0..100 {
            let f = self.integral(t) - u;
            if f.abs() < 1e-9 * u.max(1.0) {
                return t;
            }
            if f > 0.0 {
                hi = t;
            } else {
                lo = t;
            }
            let r = self.rate(t);
            let newton = t - f / r;
            t = if r > 0.0 && newton > lo && newton < hi {
                newton
            } else {
                (lo + hi) / 2.0
            };
            if hi - lo < 1e-12 {
                break;
            }
        }
        t
    }

    /// Times (from the phase's start) where the rate jumps or starts a fast
    /// change, with the rate before and after.
    pub fn edges(&self) -> Vec<Edge> {
        let mut out = Vec::new();
        match &self.shape {
            Shape::Step { from, to, steps } => {
                let width = self.duration / (*steps + 1) as f64;
                for j in 1..=*steps {
                    let r0 = from + (to - from) * (j - 1) as f64 / *steps as f64;
                    let r1 = from + (to - from) * j as f64 / *steps as f64;
                    out.push(Edge {
                        t: width * j as f64,
                        from: r0,
                        to: r1,
                    });
                }
            }
            Shape::Spike {
                base,
                peak,
                at,
                width,
            } => {
                out.push(Edge {
                    t: *at,
                    from: *base,
                    to: *peak,
                });
                if at + width < self.duration {
                    out.push(Edge {
                        t: at + width,
                        from: *peak,
                        to: *base,
                    });
                }
            }
            Shape::Burst {
                low,
                high,
                period,
                duty,
                ..
            } => {
                let mut start = 0.0;
                while start < self.duration - 1e-9 {
                    if start > 0.0 || *duty > 0.0 {
                        out.push(Edge {
                            t: start,
                            from: *low,
                            to: *high,
                        });
                    }
                    let fall = start + duty * period;
                    if fall < self.duration - 1e-9 && *duty < 1.0 {
                        out.push(Edge {
                            t: fall,
                            from: *high,
                            to: *low,
                        });
                    }
                    start += period;
                }
            }
            _ => {}
        }
        out.retain(|e| significant(e.from, e.to));
        out
    }
}

/// A change of offered rate worth measuring a settling time for.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Edge {
    pub t: f64,
    pub from: f64,
    pub to: f64,
}

/// A jump of at least 20 % of the larger rate.
pub fn significant(a: f64, b: f64) -> bool {
    (a - b).abs() >= 0.2 * a.max(b) && a.max(b) > 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(shape: Shape, d: f64) -> RatePhase {
        RatePhase::new(shape, d).unwrap()
    }

    fn all_shapes() -> Vec<RatePhase> {
        vec![
            phase(Shape::Steady { rate: 100.0 }, 10.0),
            phase(
                Shape::Ramp {
                    from: 0.0,
                    to: 200.0,
                },
                10.0,
            ),
            phase(
                Shape::Step {
                    from: 50.0,
                    to: 250.0,
                    steps: 4,
                },
                10.0,
            ),
            phase(
                Shape::Spike {
                    base: 10.0,
                    peak: 500.0,
                    at: 3.0,
                    width: 1.5,
                },
                10.0,
            ),
            phase(
                Shape::Sine {
                    base: 100.0,
                    amplitude: 100.0,
                    period: 4.0,
                    phase: 0.1,
                },
                10.0,
            ),
            phase(
                Shape::Burst {
                    low: 20.0,
                    high: 300.0,
                    period: 3.0,
                    duty: 0.4,
                    rise: 0.3,
                },
                10.0,
            ),
        ]
    }

    #[test]
    fn integral_matches_numeric_integration_of_rate() {
        for p in all_shapes() {
            let n = 200_000;
            let dt = p.duration / n as f64;
            let mut acc = 0.0;
            for i in 0..n {
                acc += p.rate((i as f64 + 0.5) * dt) * dt;
                if i % 20_000 == 19_999 {
                    let t = (i + 1) as f64 * dt;
                    let exact = p.integral(t);
                    assert!(
                        (acc - exact).abs() < 0.05 + 1e-3 * exact,
                        "{:?} at {t}: numeric {acc} vs closed form {exact}",
                        p.shape
                    );
                }
            }
        }
    }

    #[test]
    fn inversion_round_trips() {
        for p in all_shapes() {
            let total = p.total();
            for k in 0..500 {
                let u = total * (k as f64 + 0.5) / 500.0;
                let t = p.invert(u);
                assert!((0.0..=p.duration).contains(&t), "{:?}: t {t}", p.shape);
                let back = p.integral(t);
                assert!(
                    (back - u).abs() < 1e-6 * total.max(1.0),
                    "{:?}: Λ(Λ⁻¹({u})) = {back}",
                    p.shape
                );
            }
        }
    }

    #[test]
    fn known_totals() {
        assert_eq!(phase(Shape::Steady { rate: 100.0 }, 10.0).total(), 1000.0);
        let ramp = phase(
            Shape::Ramp {
                from: 0.0,
                to: 200.0,
            },
            10.0,
        );
        assert!((ramp.total() - 1000.0).abs() < 1e-9);
        // Square wave, no rise: five whole periods, half of each at 100.
        let sq = phase(
            Shape::Burst {
                low: 0.0,
                high: 100.0,
                period: 2.0,
                duty: 0.5,
                rise: 0.0,
            },
            10.0,
        );
        assert!((sq.total() - 500.0).abs() < 1e-9);
        // A whole number of sine periods integrates to base × duration.
        let s = phase(
            Shape::Sine {
                base: 50.0,
                amplitude: 30.0,
                period: 5.0,
                phase: 0.3,
            },
            10.0,
        );
        assert!((s.total() - 500.0).abs() < 1e-9);
    }

    #[test]
    fn impossible_shapes_are_refused() {
        let e = RatePhase::new(Shape::Steady { rate: -5.0 }, 1.0).unwrap_err();
        assert!(e.contains("rate"), "{e}");
        let e = RatePhase::new(
            Shape::Burst {
                low: 1.0,
                high: 2.0,
                period: 1.0,
                duty: 1.5,
                rise: 0.0,
            },
            1.0,
        )
        .unwrap_err();
        assert!(e.contains("duty"), "{e}");
        let e = RatePhase::new(
            Shape::Burst {
                low: 1.0,
                high: 2.0,
                period: 1.0,
                duty: 0.5,
                rise: 0.8,
            },
            1.0,
        )
        .unwrap_err();
        assert!(e.contains("rise"), "{e}");
        assert!(RatePhase::new(
            Shape::Sine {
                base: 10.0,
                amplitude: 20.0,
                period: 1.0,
                phase: 0.0
            },
            1.0
        )
        .is_err());
        assert!(RatePhase::new(Shape::Steady { rate: 1.0 }, 0.0).is_err());
        assert!(RatePhase::new(
            Shape::Spike {
                base: 1.0,
                peak: 2.0,
                at: 9.0,
                width: 2.0
            },
            10.0
        )
        .is_err());
    }

    #[test]
    fn burst_edges_alternate() {
        let p = phase(
            Shape::Burst {
                low: 100.0,
                high: 1000.0,
                period: 10.0,
                duty: 0.3,
                rise: 1.0,
            },
            30.0,
        );
        let e = p.edges();
        let times: Vec<f64> = e.iter().map(|e| e.t).collect();
        assert_eq!(times, vec![0.0, 3.0, 10.0, 13.0, 20.0, 23.0]);
        assert!(e[0].to > e[0].from && e[1].to < e[1].from);
    }
}
