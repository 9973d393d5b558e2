//! Offered load over time, and database faults.

use std::time::Duration;

/// An open-loop arrival rate λ(t) in requests per second. Arrivals are
/// Poisson at that rate: clients do not slow down when the service does,
/// which is what a pool in front of real users sees.
#[derive(Clone, Debug)]
pub enum Load {
    /// A constant rate.
    Steady { rate: f64 },
    /// A sine between `low` and `high` with the given period, starting at
    /// `low` (a day compressed into `period`).
    Diurnal {
        low: f64,
        high: f64,
        period: Duration,
    },
    /// `low`, then `high` for `high_for`, repeating every `period`, starting
    /// low at t = 0 and rising at `period - high_for`.
    Square {
        low: f64,
        high: f64,
        period: Duration,
        high_for: Duration,
    },
    /// Linear from `from` to `to` over `over`, then flat.
    Drift { from: f64, to: f64, over: Duration },
}

impl Load {
    /// λ(t) at `t` seconds.
    pub fn rate(&self, t: f64) -> f64 {
        match *self {
            Load::Steady { rate } => rate,
            Load::Diurnal { low, high, period } => {
                let phase = t / period.as_secs_f64() * std::f64::consts::TAU;
                low + (high - low) * (1.0 - phase.cos()) / 2.0
            }
            Load::Square {
                low,
                high,
                period,
                high_for,
            } => {
                let p = period.as_secs_f64();
                let pos = t.rem_euclid(p);
                if pos >= p - high_for.as_secs_f64() {
                    high
                } else {
                    low
                }
            }
            Load::Drift { from, to, over } => {
                let f = (t / over.as_secs_f64()).clamp(0.0, 1.0);
                from + (to - from) * f
            }
        }
    }

    /// An upper bound of λ(t), for thinning.
    pub fn peak(&self) -> f64 {
        match *self {
            Load::Steady { rate } => rate,
            Load::Diurnal { low, high, .. } | Load::Square { low, high, .. } => low.max(high),
            Load::Drift { from, to, .. } => from.max(to),
        }
    }

    /// Rising edges of a square wave within `[0, duration)`, each with the
    /// end of its high phase, in seconds.
    pub fn high_phases(&self, duration: Duration) -> Vec<(f64, f64)> {
        let Load::Square {
            period, high_for, ..
        } = *self
        else {
            return Vec::new();
        };
        let (p, h, end) = (
            period.as_secs_f64(),
            high_for.as_secs_f64(),
            duration.as_secs_f64(),
        );
        let mut out = Vec::new();
        let mut rise = p - h;
        while rise < end {
            out.push((rise, (rise + h).min(end)));
            rise += p;
        }
        out
    }
}

/// A period when the database misbehaves: replies are `slow_factor` times
/// slower and a fraction `error_rate` of queries fail (after their slow reply,
/// as a server-side error or cancel would).
#[derive(Clone, Debug)]
pub struct Fault {
    pub start: Duration,
    pub end: Duration,
    pub error_rate: f64,
    pub slow_factor: f64,
}

/// A load pattern, the faults during it, and how long to run.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub load: Load,
    pub faults: Vec<Fault>,
    pub duration: Duration,
}

impl Scenario {
    pub fn new(name: &str, load: Load, duration: Duration) -> Self {
        Scenario {
            name: name.to_string(),
            load,
            faults: Vec::new(),
            duration,
        }
    }

    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.faults.push(fault);
        self
    }

    pub(crate) fn fault_at(&self, t_ns: u64) -> Option<&Fault> {
        let t = t_ns as u128;
        self.faults
            .iter()
            .find(|f| f.start.as_nanos() <= t && t < f.end.as_nanos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_wave_phases() {
        let l = Load::Square {
            low: 1.0,
            high: 9.0,
            period: Duration::from_secs(60),
            high_for: Duration::from_secs(20),
        };
        assert_eq!(l.rate(10.0), 1.0);
        assert_eq!(l.rate(45.0), 9.0);
        assert_eq!(l.rate(61.0), 1.0);
        assert_eq!(
            l.high_phases(Duration::from_secs(150)),
            vec![(40.0, 60.0), (100.0, 120.0)]
        );
    }

    #[test]
    fn diurnal_starts_low_peaks_mid_period() {
        let l = Load::Diurnal {
            low: 100.0,
            high: 500.0,
            period: Duration::from_secs(600),
        };
        assert!((l.rate(0.0) - 100.0).abs() < 1e-9);
        assert!((l.rate(300.0) - 500.0).abs() < 1e-9);
    }
}
