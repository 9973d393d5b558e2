//! Request classes, path templates and the drifting mix.
//!
//! The mix picks a class for each arrival from weights that may drift over
//! time, independently of the total rate: the schedule says *when*, the mix
//! says *what*.

use crate::util::Rng;

/// A piece of a path template.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    Lit(String),
    /// A uniform integer in lo..=hi, written in decimal.
    Rand(u64, u64),
}

/// A path such as `/db?id={rand:1..10000}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    pub parts: Vec<Part>,
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("path {s:?}: '{{' without a closing '}}'"))?
                + open;
            let inner = &rest[open + 1..close];
            let spec = inner.strip_prefix("rand:").ok_or_else(|| {
                format!(
                    "path {s:?}: unknown placeholder {{{inner}}} (only {{rand:LO..HI}} is known)"
                )
            })?;
            let (lo, hi) = spec
                .split_once("..")
                .ok_or_else(|| format!("path {s:?}: {{rand:{spec}}} needs LO..HI"))?;
            let lo: u64 = lo
                .trim()
                .parse()
                .map_err(|_| format!("path {s:?}: bad LO {lo:?} in {{rand:{spec}}}"))?;
            let hi: u64 = hi
                .trim()
                .trim_start_matches('=')
                .parse()
                .map_err(|_| format!("path {s:?}: bad HI {hi:?} in {{rand:{spec}}}"))?;
            if lo > hi {
                return Err(format!("path {s:?}: {{rand:{spec}}} has LO > HI"));
            }
            parts.push(Part::Rand(lo, hi));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        if !s.starts_with('/') {
            return Err(format!("path {s:?} must start with '/'"));
        }
        Ok(Template { parts })
    }

    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    pub fn render_into(&self, out: &mut Vec<u8>, rng: &mut Rng) {
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.extend_from_slice(s.as_bytes()),
                Part::Rand(lo, hi) => push_u64(out, rng.range(*lo, *hi)),
            }
        }
    }
}

pub fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// One kind of request.
#[derive(Clone, Debug)]
pub struct Class {
    pub name: String,
    pub method: String,
    pub path: Template,
    pub body: Option<String>,
    pub headers: Vec<(String, String)>,
    /// Weight at the start of the run.
    pub weight: f64,
}

/// How a drift moves between weight sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftShape {
    Linear,
    Sigmoid,
}

/// From `start` for `duration`, the weights move from wherever they are to `to`.
#[derive(Clone, Debug)]
pub struct Drift {
    pub start: f64,
    pub duration: f64,
    pub to: Vec<f64>,
    pub shape: DriftShape,
}

/// The class weights as a function of time.
#[derive(Clone, Debug)]
pub struct Mix {
    pub initial: Vec<f64>,
    pub drifts: Vec<Drift>,
}

/// Steepness of the logistic used for sigmoid drifts (rescaled to hit 0 and 1 exactly).
const SIGMOID_K: f64 = 10.0;

fn progress(shape: DriftShape, x: f64) -> f64 {
    let x = x.clamp(0.0, 1.0);
    match shape {
        DriftShape::Linear => x,
        DriftShape::Sigmoid => {
            let s = |v: f64| 1.0 / (1.0 + (-SIGMOID_K * (v - 0.5)).exp());
            (s(x) - s(0.0)) / (s(1.0) - s(0.0))
        }
    }
}

impl Mix {
    pub fn new(initial: Vec<f64>, mut drifts: Vec<Drift>) -> Result<Mix, String> {
        if initial.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return Err("class weights must be finite and >= 0".into());
        }
        if initial.iter().sum::<f64>() <= 0.0 {
            return Err("at least one class needs a weight > 0".into());
        }
        drifts.sort_by(|a, b| a.start.total_cmp(&b.start));
        for d in &drifts {
            if !d.start.is_finite() || d.start < 0.0 {
                return Err(format!("drift start {}s must be >= 0", d.start));
            }
            if !d.duration.is_finite() || d.duration < 0.0 {
                return Err(format!("drift duration {}s must be >= 0", d.duration));
            }
            if d.to.iter().any(|w| !w.is_finite() || *w < 0.0) || d.to.iter().sum::<f64>() <= 0.0 {
                return Err(format!(
                    "drift at {}s: target weights must be >= 0 with at least one > 0",
                    d.start
                ));
            }
        }
        for w in drifts.windows(2) {
            if w[1].start < w[0].start + w[0].duration - 1e-9 {
                return Err(format!(
                    "drifts overlap: one starts at {}s before the one from {}s ends",
                    w[1].start, w[0].start
                ));
            }
        }
        Ok(Mix { initial, drifts })
    }

    /// Weights at time t (not normalised).
    pub fn weights_at(&self, t: f64, out: &mut Vec<f64>) {
        out.clear();
        out.extend_from_slice(&self.initial);
        for d in &self.drifts {
            if t < d.start {
                break;
            }
            let f = if d.duration > 0.0 {
                progress(d.shape, (t - d.start) / d.duration)
            } else {
                1.0
            };
            // Normalise both ends so a drift between sets of different
            // totals moves shares, not just magnitudes.
            let sa: f64 = out.iter().sum();
            let sb: f64 = d.to.iter().sum();
            for (w, target) in out.iter_mut().zip(&d.to) {
                *w = (1.0 - f) * (*w / sa) + f * (target / sb);
            }
        }
    }

    /// Normalised weights at time t.
    pub fn shares_at(&self, t: f64) -> Vec<f64> {
        let mut w = Vec::new();
        self.weights_at(t, &mut w);
        let s: f64 = w.iter().sum();
        w.iter().map(|x| x / s).collect()
    }

    /// Picks a class for an arrival at time t; `scratch` avoids an allocation.
    pub fn pick(&self, t: f64, rng: &mut Rng, scratch: &mut Vec<f64>) -> usize {
        if self.drifts.is_empty() && self.initial.len() == 1 {
            return 0;
        }
        self.weights_at(t, scratch);
        let total: f64 = scratch.iter().sum();
        let mut x = rng.f64() * total;
        for (i, w) in scratch.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        // Rounding left x just past the last positive weight.
        scratch.iter().rposition(|w| *w > 0.0).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_render() {
        let t = Template::parse("/db?id={rand:1..10000}").unwrap();
        assert_eq!(
            t.parts,
            vec![Part::Lit("/db?id=".into()), Part::Rand(1, 10000)]
        );
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let mut out = Vec::new();
            t.render_into(&mut out, &mut rng);
            let s = String::from_utf8(out).unwrap();
            let id: u64 = s.strip_prefix("/db?id=").unwrap().parse().unwrap();
            assert!((1..=10000).contains(&id));
        }
        assert!(Template::parse("/cache/{rand:1..100}").is_ok());
        assert!(Template::parse("/x/{rand:5..1}").is_err());
        assert!(Template::parse("/x/{uuid}").is_err());
        assert!(Template::parse("/x/{rand:1..3").is_err());
        assert!(Template::parse("x").is_err());
    }

    #[test]
    fn drift_moves_weights_linearly_and_along_a_sigmoid() {
        let lin = Mix::new(
            vec![3.0, 1.0],
            vec![Drift {
                start: 10.0,
                duration: 10.0,
                to: vec![1.0, 3.0],
                shape: DriftShape::Linear,
            }],
        )
        .unwrap();
        assert_eq!(lin.shares_at(0.0), vec![0.75, 0.25]);
        assert_eq!(lin.shares_at(9.99), vec![0.75, 0.25]);
        let mid = lin.shares_at(15.0);
        assert!((mid[0] - 0.5).abs() < 1e-9, "{mid:?}");
        let q = lin.shares_at(12.5);
        assert!((q[0] - 0.625).abs() < 1e-9, "{q:?}");
        assert_eq!(lin.shares_at(25.0), vec![0.25, 0.75]);

        let sig = Mix::new(
            vec![3.0, 1.0],
            vec![Drift {
                start: 10.0,
                duration: 10.0,
                to: vec![1.0, 3.0],
                shape: DriftShape::Sigmoid,
            }],
        )
        .unwrap();
        let s = |t| sig.shares_at(t)[0];
        assert!((s(15.0) - 0.5).abs() < 1e-9);
        // Slow at the ends, fast in the middle.
        assert!(s(12.0) > 0.7, "{}", s(12.0));
        assert!(s(18.0) < 0.3);
        assert!((s(20.0) - 0.25).abs() < 1e-9);
        // Monotone.
        let mut prev = 1.0;
        for i in 0..=100 {
            let v = s(10.0 + i as f64 / 10.0);
            assert!(v <= prev + 1e-12);
            prev = v;
        }
    }

    #[test]
    fn picks_follow_the_weights() {
        let m = Mix::new(vec![1.0, 0.0, 3.0], vec![]).unwrap();
        let mut rng = Rng::new(3);
        let mut scratch = Vec::new();
        let mut counts = [0u32; 3];
        for _ in 0..40_000 {
            counts[m.pick(0.0, &mut rng, &mut scratch)] += 1;
        }
        assert_eq!(counts[1], 0);
        let share = counts[2] as f64 / 40_000.0;
        assert!((share - 0.75).abs() < 0.01, "{share}");
    }

    #[test]
    fn bad_mixes_are_refused() {
        assert!(Mix::new(vec![0.0, 0.0], vec![]).is_err());
        assert!(Mix::new(vec![-1.0, 2.0], vec![]).is_err());
        let d = |start, duration| Drift {
            start,
            duration,
            to: vec![1.0, 1.0],
            shape: DriftShape::Linear,
        };
        assert!(Mix::new(vec![1.0, 1.0], vec![d(0.0, 10.0), d(5.0, 1.0)]).is_err());
    }
}
