//! Pattern files (TOML) and command-line shorthands, turned into a [`Plan`].
//!
//! ```toml
//! seed = 7
//! arrivals = "poisson"          # or "uniform" (the default)
//!
//! [[class]]
//! name = "db"
//! path = "/db?id={rand:1..10000}"
//! weight = 3
//!
//! [[phase]]
//! kind = "steady"
//! rate = 500
//! duration = "20s"
//!
//! [[phase]]
//! kind = "burst"
//! low = 500
//! high = 3000
//! period = "20s"
//! duty = 0.25
//! rise = "1s"
//! duration = "40s"
//!
//! [[drift]]                     # the mix, independent of the rate
//! start = "30s"
//! duration = "20s"
//! shape = "sigmoid"             # or "linear"
//! to = { db = 1, redis = 4 }
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::plan::mix::{Class, Drift, DriftShape, Mix, Template};
use crate::plan::pattern::{RatePhase, Shape};
use crate::plan::schedule::{Phase, Schedule, TraceEntry, TracePhase};
use crate::util::parse_seconds;

/// A duration in a pattern file: a number of seconds or a string with a unit.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Dur {
    Secs(f64),
    Text(String),
}

impl Dur {
    fn secs(&self, what: &str) -> Result<f64, String> {
        match self {
            Dur::Secs(s) => Ok(*s),
            Dur::Text(t) => parse_seconds(t).map_err(|e| format!("{what}: {e}")),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternFile {
    pub seed: Option<u64>,
    pub arrivals: Option<String>,
    pub slo: Option<Dur>,
    #[serde(default, rename = "class")]
    pub classes: Vec<ClassSpec>,
    #[serde(default, rename = "phase")]
    pub phases: Vec<PhaseSpec>,
    #[serde(default, rename = "drift")]
    pub drifts: Vec<DriftSpec>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSpec {
    pub name: String,
    #[serde(default = "get")]
    pub method: String,
    pub path: String,
    pub body: Option<String>,
    #[serde(default)]
    pub headers: HashMap<String, String>,
    #[serde(default = "one")]
    pub weight: f64,
}

fn get() -> String {
    "GET".into()
}
fn one() -> f64 {
    1.0
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum PhaseSpec {
    Steady {
        rate: f64,
        duration: Dur,
    },
    Ramp {
        from: f64,
        to: f64,
        duration: Dur,
    },
    Step {
        from: f64,
        to: f64,
        steps: Option<u32>,
        duration: Dur,
    },
    Spike {
        base: f64,
        peak: f64,
        at: Dur,
        width: Dur,
        duration: Dur,
    },
    Sine {
        base: f64,
        amplitude: f64,
        period: Dur,
        phase: Option<f64>,
        duration: Dur,
    },
    Burst {
        low: f64,
        high: f64,
        period: Dur,
        duty: f64,
        rise: Option<Dur>,
        duration: Dur,
    },
    Trace {
        file: String,
        speed: Option<f64>,
        duration: Option<Dur>,
    },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSpec {
    pub start: Dur,
    pub duration: Dur,
    #[serde(default)]
    pub shape: Option<String>,
    pub to: HashMap<String, f64>,
}

/// Everything the generator needs to know about what to send and when.
#[derive(Clone, Debug)]
pub struct Plan {
    /// None means "as fast as the connections allow" (closed loop).
    pub schedule: Option<Arc<Schedule>>,
    /// The length of a closed-loop run (the schedule's own otherwise).
    pub duration: f64,
    pub classes: Vec<Class>,
    pub mix: Mix,
    pub seed: u64,
    pub poisson: bool,
    pub slo: Option<f64>,
}

impl Plan {
    pub fn duration(&self) -> f64 {
        self.schedule.as_ref().map_or(self.duration, |s| s.duration)
    }
}

/// Parses a pattern file; `scale_to` stretches every time in it so the
/// whole pattern lasts that many seconds. Trace paths are relative to `base_dir`.
pub fn parse_pattern(
    text: &str,
    base_dir: Option<&Path>,
    scale_to: Option<f64>,
) -> Result<Plan, String> {
    let file: PatternFile = toml::from_str(text).map_err(|e| format!("pattern file: {e}"))?;
    build(file, base_dir, scale_to)
}

pub fn load_pattern(path: &Path, scale_to: Option<f64>) -> Result<Plan, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_pattern(&text, path.parent(), scale_to).map_err(|e| format!("{}: {e}", path.display()))
}

fn natural_duration(file: &PatternFile, base_dir: Option<&Path>) -> Result<f64, String> {
    let mut total = 0.0;
    for (i, p) in file.phases.iter().enumerate() {
        total += match p {
            PhaseSpec::Steady { duration, .. }
            | PhaseSpec::Ramp { duration, .. }
            | PhaseSpec::Step { duration, .. }
            | PhaseSpec::Spike { duration, .. }
            | PhaseSpec::Sine { duration, .. }
            | PhaseSpec::Burst { duration, .. } => duration.secs(&format!("phase {}", i + 1))?,
            PhaseSpec::Trace {
                file: f,
                speed,
                duration,
            } => match duration {
                Some(d) => d.secs(&format!("phase {}", i + 1))?,
                None => {
                    let (entries, _) = read_trace(f, base_dir, speed.unwrap_or(1.0), &mut |_| 0)?;
                    trace_len(&entries)
                }
            },
        };
    }
    Ok(total)
}

fn trace_len(entries: &[TraceEntry]) -> f64 {
    entries.last().map_or(0.0, |e| e.offset) + 1e-3
}

fn build(
    file: PatternFile,
    base_dir: Option<&Path>,
    scale_to: Option<f64>,
) -> Result<Plan, String> {
    let scale = match scale_to {
        Some(want) => {
            if want.is_nan() || want <= 0.0 {
                return Err(format!("duration {want}s must be > 0"));
            }
            let natural = natural_duration(&file, base_dir)?;
            if natural <= 0.0 {
                return Err("the pattern has no duration to scale".into());
            }
            want / natural
        }
        None => 1.0,
    };
    let poisson = match file.arrivals.as_deref() {
        None | Some("uniform") => false,
        Some("poisson") => true,
        Some(o) => {
            return Err(format!(
                "arrivals = {o:?}: expected \"uniform\" or \"poisson\""
            ))
        }
    };
    let mut classes = Vec::new();
    for c in &file.classes {
        classes.push(class_from_spec(c)?);
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, c) in classes.iter().enumerate() {
        if names.insert(c.name.clone(), i).is_some() {
            return Err(format!("class {:?} is defined twice", c.name));
        }
    }

    let mut phases = Vec::new();
    for (i, p) in file.phases.iter().enumerate() {
        let ctx = |e: String| format!("phase {} ({}): {e}", i + 1, phase_kind(p));
        let t = |d: &Dur, what: &str| -> Result<f64, String> {
            d.secs(what).map(|s| s * scale).map_err(ctx)
        };
        let phase = match p {
            PhaseSpec::Trace {
                file: f,
                speed,
                duration,
            } => {
                let speed = speed.unwrap_or(1.0);
                if !(speed > 0.0 && speed.is_finite()) {
                    return Err(ctx(format!("speed = {speed}: must be > 0")));
                }
                let mut class_of = |name: &str| -> usize {
                    if let Some(&i) = names.get(name) {
                        return i;
                    }
                    classes.push(Class {
                        name: name.to_string(),
                        method: "GET".into(),
                        path: Template::parse("/").expect("static path"),
                        body: None,
                        headers: Vec::new(),
                        weight: 0.0,
                    });
                    names.insert(name.to_string(), classes.len() - 1);
                    classes.len() - 1
                };
                let (entries, _) =
                    read_trace(f, base_dir, speed / scale, &mut class_of).map_err(ctx)?;
                let duration = match duration {
                    Some(d) => t(d, "duration")?,
                    None => trace_len(&entries),
                };
                if duration.is_nan() || duration <= 0.0 {
                    return Err(ctx("the trace is empty and has no duration".into()));
                }
                Phase::Trace(TracePhase { entries, duration })
            }
            spec => {
                let (shape, duration) = shape_from_spec(spec, &t)?;
                Phase::Rate(RatePhase::new(shape, duration).map_err(ctx)?)
            }
        };
        phases.push(phase);
    }
    let schedule = Schedule::new(phases)?;

    let has_rate_phase = schedule.phases.iter().any(|p| matches!(p, Phase::Rate(_)));
    if classes.iter().all(|c| c.weight <= 0.0) && has_rate_phase {
        if classes.is_empty() {
            return Err(
                "no [[class]] defined: say what to request (e.g. name = \"root\", path = \"/\")"
                    .into(),
            );
        }
        return Err("every class has weight 0: nothing to send in the rate phases".into());
    }
    let mut drifts = Vec::new();
    for (i, d) in file.drifts.iter().enumerate() {
        let ctx = |e: String| format!("drift {}: {e}", i + 1);
        let mut to = vec![0.0; classes.len()];
        for (name, w) in &d.to {
            let idx = *names.get(name).ok_or_else(|| {
                ctx(format!(
                    "unknown class {name:?} in the mix (classes: {})",
                    classes
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            to[idx] = *w;
        }
        let shape = match d.shape.as_deref() {
            None | Some("linear") => DriftShape::Linear,
            Some("sigmoid") => DriftShape::Sigmoid,
            Some(o) => {
                return Err(ctx(format!(
                    "shape = {o:?}: expected \"linear\" or \"sigmoid\""
                )))
            }
        };
        drifts.push(Drift {
            start: d.start.secs("start").map_err(ctx)? * scale,
            duration: d.duration.secs("duration").map_err(ctx)? * scale,
            to,
            shape,
        });
    }
    let initial: Vec<f64> = classes.iter().map(|c| c.weight).collect();
    let mix = if has_rate_phase {
        Mix::new(initial, drifts)?
    } else {
        // A pure trace replay draws nothing from the mix.
        Mix {
            initial,
            drifts: Vec::new(),
        }
    };
    let slo = match &file.slo {
        Some(d) => Some(d.secs("slo")?),
        None => None,
    };
    Ok(Plan {
        duration: schedule.duration,
        schedule: Some(Arc::new(schedule)),
        classes,
        mix,
        seed: file.seed.unwrap_or(1),
        poisson,
        slo,
    })
}

fn phase_kind(p: &PhaseSpec) -> &'static str {
    match p {
        PhaseSpec::Steady { .. } => "steady",
        PhaseSpec::Ramp { .. } => "ramp",
        PhaseSpec::Step { .. } => "step",
        PhaseSpec::Spike { .. } => "spike",
        PhaseSpec::Sine { .. } => "sine",
        PhaseSpec::Burst { .. } => "burst",
        PhaseSpec::Trace { .. } => "trace",
    }
}

fn shape_from_spec(
    spec: &PhaseSpec,
    t: &dyn Fn(&Dur, &str) -> Result<f64, String>,
) -> Result<(Shape, f64), String> {
    Ok(match spec {
        PhaseSpec::Steady { rate, duration } => {
            (Shape::Steady { rate: *rate }, t(duration, "duration")?)
        }
        PhaseSpec::Ramp { from, to, duration } => (
            Shape::Ramp {
                from: *from,
                to: *to,
            },
            t(duration, "duration")?,
        ),
        PhaseSpec::Step {
            from,
            to,
            steps,
            duration,
        } => (
            Shape::Step {
                from: *from,
                to: *to,
                steps: steps.unwrap_or(1),
            },
            t(duration, "duration")?,
        ),
        PhaseSpec::Spike {
            base,
            peak,
            at,
            width,
            duration,
        } => (
            Shape::Spike {
                base: *base,
                peak: *peak,
                at: t(at, "at")?,
                width: t(width, "width")?,
            },
            t(duration, "duration")?,
        ),
        PhaseSpec::Sine {
            base,
            amplitude,
            period,
            phase,
            duration,
        } => (
            Shape::Sine {
                base: *base,
                amplitude: *amplitude,
                period: t(period, "period")?,
                phase: phase.unwrap_or(0.0),
            },
            t(duration, "duration")?,
        ),
        PhaseSpec::Burst {
            low,
            high,
            period,
            duty,
            rise,
            duration,
        } => (
            Shape::Burst {
                low: *low,
                high: *high,
                period: t(period, "period")?,
                duty: *duty,
                rise: match rise {
                    Some(r) => t(r, "rise")?,
                    None => 0.0,
                },
            },
            t(duration, "duration")?,
        ),
        PhaseSpec::Trace { .. } => unreachable!("traces are built elsewhere"),
    })
}

pub fn class_from_spec(c: &ClassSpec) -> Result<Class, String> {
    let ctx = |e: String| format!("class {:?}: {e}", c.name);
    if c.name.is_empty() || c.name.contains(|ch: char| ch.is_whitespace() || ch == '"') {
        return Err(ctx(
            "name must be non-empty, without spaces or quotes".into()
        ));
    }
    if c.method.is_empty() || !c.method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ctx(format!(
            "method {:?} must be an uppercase token",
            c.method
        )));
    }
    if !c.weight.is_finite() || c.weight < 0.0 {
        return Err(ctx(format!("weight = {}: must be >= 0", c.weight)));
    }
    let mut headers: Vec<(String, String)> = c.headers.clone().into_iter().collect();
    headers.sort();
    for (k, v) in &headers {
        if k.contains([':', '\r', '\n']) || v.contains(['\r', '\n']) {
            return Err(ctx(format!("header {k:?} is not a valid header")));
        }
    }
    Ok(Class {
        name: c.name.clone(),
        method: c.method.clone(),
        path: Template::parse(&c.path).map_err(ctx)?,
        body: c.body.clone(),
        headers,
        weight: c.weight,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceLine {
    offset: Option<f64>,
    offset_ms: Option<f64>,
    #[serde(default)]
    class: Option<String>,
    #[serde(default = "get")]
    method: String,
    path: String,
    body: Option<String>,
}

/// Reads a JSONL trace: one object per line with `offset` (seconds) or
/// `offset_ms`, `path`, and optionally `method`, `body`, `class`.
fn read_trace(
    file: &str,
    base_dir: Option<&Path>,
    speed: f64,
    class_of: &mut dyn FnMut(&str) -> usize,
) -> Result<(Vec<TraceEntry>, f64), String> {
    let path = match base_dir {
        Some(d) if Path::new(file).is_relative() => d.join(file),
        _ => Path::new(file).to_path_buf(),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read trace {}: {e}", path.display()))?;
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let ctx = |e: String| format!("{} line {}: {e}", path.display(), n + 1);
        let l: TraceLine = serde_json::from_str(line).map_err(|e| ctx(e.to_string()))?;
        let offset = match (l.offset, l.offset_ms) {
            (Some(s), None) => s,
            (None, Some(ms)) => ms / 1e3,
            _ => return Err(ctx("give exactly one of offset (s) or offset_ms".into())),
        };
        if !(offset >= 0.0 && offset.is_finite()) {
            return Err(ctx(format!("offset {offset} must be >= 0")));
        }
        if !l.path.starts_with('/') {
            return Err(ctx(format!("path {:?} must start with '/'", l.path)));
        }
        let class = class_of(l.class.as_deref().unwrap_or("trace"));
        entries.push(TraceEntry {
            offset: offset / speed,
            class,
            method: l.method,
            path: l.path,
            body: l.body,
        });
    }
    entries.sort_by(|a, b| a.offset.total_cmp(&b.offset));
    let len = trace_len(&entries);
    Ok((entries, len))
}

/// Command-line shorthands for a one-phase pattern.
#[derive(Clone, Debug, Default)]
pub struct Shorthand {
    /// "max" means closed loop.
    pub rate: Option<String>,
    pub ramp: Option<String>,
    pub step: Option<String>,
    pub spike: Option<String>,
    pub sine: Option<String>,
    pub burst: Option<String>,
    pub trace: Option<String>,
    pub duration: Option<f64>,
    pub paths: Vec<String>,
    pub method: Option<String>,
    pub body: Option<String>,
}

fn nums(flag: &str, v: &str, min: usize, max: usize) -> Result<Vec<String>, String> {
    let parts: Vec<String> = v.split(':').map(|s| s.trim().to_string()).collect();
    if parts.len() < min || parts.len() > max {
        return Err(format!(
            "{flag} {v:?}: expected {min} to {max} values separated by ':'"
        ));
    }
    Ok(parts)
}

fn num(flag: &str, v: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .map_err(|_| format!("{flag}: {v:?} is not a number"))
}

fn secs(flag: &str, v: &str) -> Result<f64, String> {
    parse_seconds(v).map_err(|e| format!("{flag}: {e}"))
}

impl Shorthand {
    pub fn is_empty(&self) -> bool {
        self.rate.is_none()
            && self.ramp.is_none()
            && self.step.is_none()
            && self.spike.is_none()
            && self.sine.is_none()
            && self.burst.is_none()
            && self.trace.is_none()
    }

    /// Builds the plan; `seed`, `poisson` and `slo` come from the caller.
    pub fn plan(&self, seed: u64, poisson: bool, slo: Option<f64>) -> Result<Plan, String> {
        let given = [
            self.rate.is_some(),
            self.ramp.is_some(),
            self.step.is_some(),
            self.spike.is_some(),
            self.sine.is_some(),
            self.burst.is_some(),
            self.trace.is_some(),
        ]
        .iter()
        .filter(|&&b| b)
        .count();
        if given > 1 {
            return Err("give one of --rate, --ramp, --step, --spike, --sine, --burst, --trace (or a --pattern file for several phases)".into());
        }
        let mut classes = Vec::new();
        let paths = if self.paths.is_empty() {
            vec!["/".to_string()]
        } else {
            self.paths.clone()
        };
        for p in &paths {
            // NAME=PATH names the class; a bare path is named after itself.
            let (name, path) = match p.split_once('=') {
                Some((n, path)) if !n.contains('/') => (n.to_string(), path.to_string()),
                _ => (p.clone(), p.clone()),
            };
            classes.push(class_from_spec(&ClassSpec {
                name,
                method: self.method.clone().unwrap_or_else(get),
                path,
                body: self.body.clone(),
                headers: HashMap::new(),
                weight: 1.0,
            })?);
        }
        let mix = Mix::new(classes.iter().map(|c| c.weight).collect(), Vec::new())?;
        if let Some(t) = &self.trace {
            let (file, speed) = match t.rsplit_once(':') {
                Some((f, s)) if s.parse::<f64>().is_ok() => (f.to_string(), num("--trace", s)?),
                _ => (t.clone(), 1.0),
            };
            let text = format!(
                "[[phase]]\nkind = \"trace\"\nfile = {}\nspeed = {speed}\n",
                toml_string(&file)
            );
            let mut plan = parse_pattern(&text, None, self.duration)?;
            plan.seed = seed;
            plan.slo = slo;
            return Ok(plan);
        }
        let d = self.duration.unwrap_or(10.0);
        let shape = if let Some(r) = &self.rate {
            if r == "max" {
                if d.is_nan() || d <= 0.0 {
                    return Err("--duration must be > 0".into());
                }
                return Ok(Plan {
                    schedule: None,
                    duration: d,
                    classes,
                    mix,
                    seed,
                    poisson,
                    slo,
                });
            }
            Shape::Steady {
                rate: num("--rate", r)?,
            }
        } else if let Some(v) = &self.ramp {
            let p = nums("--ramp", v, 2, 2)?;
            Shape::Ramp {
                from: num("--ramp", &p[0])?,
                to: num("--ramp", &p[1])?,
            }
        } else if let Some(v) = &self.step {
            let p = nums("--step", v, 2, 3)?;
            Shape::Step {
                from: num("--step", &p[0])?,
                to: num("--step", &p[1])?,
                steps: match p.get(2) {
                    Some(s) => s.parse().map_err(|_| format!("--step: bad STEPS {s:?}"))?,
                    None => 1,
                },
            }
        } else if let Some(v) = &self.spike {
            let p = nums("--spike", v, 4, 4)?;
            Shape::Spike {
                base: num("--spike", &p[0])?,
                peak: num("--spike", &p[1])?,
                at: secs("--spike", &p[2])?,
                width: secs("--spike", &p[3])?,
            }
        } else if let Some(v) = &self.sine {
            let p = nums("--sine", v, 3, 4)?;
            Shape::Sine {
                base: num("--sine", &p[0])?,
                amplitude: num("--sine", &p[1])?,
                period: secs("--sine", &p[2])?,
                phase: match p.get(3) {
                    Some(s) => num("--sine", s)?,
                    None => 0.0,
                },
            }
        } else if let Some(v) = &self.burst {
            let p = nums("--burst", v, 4, 5)?;
            Shape::Burst {
                low: num("--burst", &p[0])?,
                high: num("--burst", &p[1])?,
                period: secs("--burst", &p[2])?,
                duty: num("--burst", &p[3])?,
                rise: match p.get(4) {
                    Some(s) => secs("--burst", s)?,
                    None => 0.0,
                },
            }
        } else {
            return Err(
                "no load given: use --rate N (or max), a shorthand, or --pattern FILE".into(),
            );
        };
        let phase = RatePhase::new(shape, d)?;
        let schedule = Schedule::new(vec![Phase::Rate(phase)])?;
        Ok(Plan {
            duration: schedule.duration,
            schedule: Some(Arc::new(schedule)),
            classes,
            mix,
            seed,
            poisson,
            slo,
        })
    }
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        seed = 9
        arrivals = "poisson"
        [[class]]
        name = "a"
        path = "/a/{rand:1..5}"
        weight = 2
        [[class]]
        name = "b"
        method = "POST"
        path = "/b"
        body = "{}"
        [[phase]]
        kind = "steady"
        rate = 100
        duration = "10s"
        [[phase]]
        kind = "burst"
        low = 100
        high = 400
        period = 4
        duty = 0.5
        rise = "500ms"
        duration = "8s"
        [[drift]]
        start = "2s"
        duration = "4s"
        shape = "sigmoid"
        to = { b = 1 }
    "#;

    #[test]
    fn a_good_file_builds() {
        let p = parse_pattern(GOOD, None, None).unwrap();
        assert_eq!(p.seed, 9);
        assert!(p.poisson);
        assert_eq!(p.classes.len(), 2);
        assert_eq!(p.classes[1].method, "POST");
        assert_eq!(p.duration(), 18.0);
        assert_eq!(p.mix.shares_at(7.0), vec![0.0, 1.0]);
    }

    #[test]
    fn scaling_stretches_every_time() {
        let p = parse_pattern(GOOD, None, Some(36.0)).unwrap();
        assert!((p.duration() - 36.0).abs() < 1e-9);
        // The drift now ends at 12 s instead of 6 s.
        assert!(p.mix.shares_at(8.0)[1] < 0.99);
        assert!((p.mix.shares_at(12.0)[1] - 1.0).abs() < 1e-9);
        let sched = p.schedule.unwrap();
        assert!((sched.total() - 2.0 * (1000.0 + 2000.0)).abs() < 1e-6);
    }

    fn err(text: &str) -> String {
        parse_pattern(text, None, None).unwrap_err()
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let e = err("[[phase]\nkind = ");
        assert!(e.contains("pattern file"), "{e}");
        let e = err("[[class]]\nname='a'\npath='/'\n[[phase]]\nkind='steady'\nrate=-3\nduration=1");
        assert!(e.contains("phase 1 (steady)") && e.contains("rate"), "{e}");
        let e = err("[[class]]\nname='a'\npath='/'\n[[phase]]\nkind='burst'\nlow=1\nhigh=2\nperiod=1\nduty=1.2\nduration=1");
        assert!(e.contains("duty"), "{e}");
        let e = err("[[class]]\nname='a'\npath='/'\n[[phase]]\nkind='steady'\nrate=3\nduration=1\n[[drift]]\nstart=0\nduration=1\nto={nope=1}");
        assert!(e.contains("unknown class \"nope\""), "{e}");
        let e = err("[[class]]\nname='a'\npath='/'\n[[phase]]\nkind='wobble'\nrate=3\nduration=1");
        assert!(e.contains("wobble"), "{e}");
        let e =
            err("[[class]]\nname='a'\npath='/'\n[[phase]]\nkind='steady'\nrate=3\nduration='ten'");
        assert!(e.contains("duration"), "{e}");
        let e = err(
            "[[class]]\nname='a'\npath='/'\nwieght=3\n[[phase]]\nkind='steady'\nrate=3\nduration=1",
        );
        assert!(e.contains("wieght"), "{e}");
        let e = err("[[phase]]\nkind='steady'\nrate=3\nduration=1");
        assert!(e.contains("no [[class]]"), "{e}");
        let e = err("[[class]]\nname='a'\npath='/{rand:9..1}'\n[[phase]]\nkind='steady'\nrate=3\nduration=1");
        assert!(e.contains("LO > HI"), "{e}");
    }

    #[test]
    fn shorthands_build_one_phase() {
        let s = Shorthand {
            burst: Some("100:1000:10s:0.3:1s".into()),
            duration: Some(30.0),
            paths: vec!["/plaintext".into()],
            ..Default::default()
        };
        let p = s.plan(1, false, None).unwrap();
        assert_eq!(p.duration(), 30.0);
        assert_eq!(p.classes[0].name, "/plaintext");
        let s = Shorthand {
            rate: Some("-5".into()),
            ..Default::default()
        };
        assert!(s.plan(1, false, None).unwrap_err().contains("rate"));
        let s = Shorthand {
            rate: Some("max".into()),
            duration: Some(2.0),
            ..Default::default()
        };
        assert!(s.plan(1, false, None).unwrap().schedule.is_none());
        let s = Shorthand {
            rate: Some("10".into()),
            ramp: Some("1:2".into()),
            ..Default::default()
        };
        assert!(s.plan(1, false, None).is_err());
    }

    #[test]
    fn traces_replay_with_a_speed_factor() {
        let dir =
            std::env::temp_dir().join(format!("tidepool-loadgen-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("t.jsonl"),
            "{\"offset\": 0.0, \"path\": \"/a\", \"class\": \"x\"}\n\
             {\"offset_ms\": 1000, \"path\": \"/b\", \"method\": \"POST\", \"body\": \"hi\"}\n\
             # comment\n\
             {\"offset\": 2.0, \"path\": \"/c\", \"class\": \"x\"}\n",
        )
        .unwrap();
        let text = "[[phase]]\nkind = 'trace'\nfile = 't.jsonl'\nspeed = 2\n";
        let p = parse_pattern(text, Some(&dir), None).unwrap();
        let sched = p.schedule.unwrap();
        let Phase::Trace(tr) = &sched.phases[0] else {
            panic!()
        };
        let offs: Vec<f64> = tr.entries.iter().map(|e| e.offset).collect();
        assert_eq!(offs, vec![0.0, 0.5, 1.0]);
        assert_eq!(p.classes.len(), 2);
        assert_eq!(p.classes[tr.entries[0].class].name, "x");
        assert_eq!(p.classes[tr.entries[1].class].name, "trace");
        std::fs::write(dir.join("bad.jsonl"), "{\"path\": \"/a\"}\n").unwrap();
        let e = parse_pattern(
            "[[phase]]\nkind='trace'\nfile='bad.jsonl'\n",
            Some(&dir),
            None,
        )
        .unwrap_err();
        assert!(e.contains("line 1") && e.contains("offset"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
