//! Pass/fail thresholds such as `p99<50ms`, `db:p99.9<=200ms`,
//! `error_rate<1%` or `rps>=900`, checked against a summary.
//!
//! Grammar: `[CLASS:]METRIC OP VALUE[UNIT]` with OP one of < <= > >=.
//! Latency metrics (p50 p90 p99 p99.9 p999 max mean, and the same with a
//! `service_` prefix for latency from the actual send) take ms, s or us
//! (ms by default); `error_rate` takes a fraction or a percentage; `errors`,
//! `dropped`, `late`, `timeouts`, `slo_seconds` are counts; `rps` is
//! completed requests per second; `lag_p99` is the generator's schedule lag.

use crate::report::summary::{Summary, ThresholdResult};
use crate::util::parse_seconds;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    pub expr: String,
    class: Option<String>,
    metric: String,
    op: Op,
    /// In the metric's own unit (ms, fraction, count, req/s).
    value: f64,
}

const LATENCY: [&str; 7] = ["p50", "p90", "p99", "p99.9", "p999", "max", "mean"];
const COUNTS: [&str; 5] = ["errors", "dropped", "late", "timeouts", "slo_seconds"];

impl Threshold {
    pub fn parse(expr: &str) -> Result<Threshold, String> {
        let bad = |why: &str| {
            format!(
                "threshold {expr:?}: {why} (expected [CLASS:]METRIC OP VALUE, e.g. 'p99<50ms', 'error_rate<1%', 'db:p99.9<=200ms')"
            )
        };
        let s: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
        let pos = s
            .find(['<', '>'])
            .ok_or_else(|| bad("no comparison (<, <=, >, >=)"))?;
        let (lhs, rest) = s.split_at(pos);
        let (op, rhs) = if let Some(r) = rest.strip_prefix("<=") {
            (Op::Le, r)
        } else if let Some(r) = rest.strip_prefix(">=") {
            (Op::Ge, r)
        } else if let Some(r) = rest.strip_prefix('<') {
            (Op::Lt, r)
        } else {
            (Op::Gt, &rest[1..])
        };
        let (class, metric) = match lhs.rsplit_once(':') {
            Some((c, m)) if !c.is_empty() => (Some(c.to_string()), m.to_string()),
            _ => (None, lhs.to_string()),
        };
        if rhs.is_empty() {
            return Err(bad("no value"));
        }
        let base = metric.strip_prefix("service_").unwrap_or(&metric);
        let value = if LATENCY.contains(&base) || metric == "lag_p99" {
            let with_unit = if rhs.chars().last().is_some_and(|c| c.is_ascii_digit()) {
                format!("{rhs}ms")
            } else {
                rhs.to_string()
            };
            parse_seconds(&with_unit).map_err(|e| bad(&e))? * 1e3
        } else if metric == "error_rate" {
            match rhs.strip_suffix('%') {
                Some(p) => p.parse::<f64>().map_err(|_| bad("bad percentage"))? / 100.0,
                None => rhs.parse::<f64>().map_err(|_| bad("bad fraction"))?,
            }
        } else if COUNTS.contains(&metric.as_str()) || metric == "rps" {
            rhs.parse::<f64>().map_err(|_| bad("bad number"))?
        } else {
            return Err(bad(&format!("unknown metric {metric:?}")));
        };
        if !value.is_finite() {
            return Err(bad("value is not finite"));
        }
        if class.is_some()
            && !(LATENCY.contains(&base)
                || ["errors", "error_rate", "rps"].contains(&metric.as_str()))
        {
            return Err(bad(&format!("{metric} has no per-class value")));
        }
        Ok(Threshold {
            expr: expr.to_string(),
            class,
            metric,
            op,
            value,
        })
    }

    /// The measured value, or an error when the summary lacks it (unknown class).
    pub fn measure(&self, s: &Summary) -> Result<f64, String> {
        let (lat, svc, completed, errors, offered) = match &self.class {
            Some(c) => {
                let cs = s.classes.get(c).ok_or_else(|| {
                    format!(
                        "threshold {:?}: class {c:?} sent nothing in this run (classes: {})",
                        self.expr,
                        s.classes.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                })?;
                (
                    &cs.latency,
                    &cs.service,
                    cs.completed,
                    cs.errors,
                    cs.offered,
                )
            }
            None => (&s.latency, &s.service, s.completed, s.errors, s.offered),
        };
        let (l, base) = match self.metric.strip_prefix("service_") {
            Some(b) => (svc, b),
            None => (lat, self.metric.as_str()),
        };
        Ok(match base {
            "p50" => l.p50_ms,
            "p90" => l.p90_ms,
            "p99" => l.p99_ms,
            "p99.9" | "p999" => l.p999_ms,
            "max" => l.max_ms,
            "mean" => l.mean_ms,
            "lag_p99" => s.generator.lag_p99_ms,
            "errors" => errors as f64,
            "error_rate" => match &self.class {
                None => s.error_rate,
                Some(_) if offered == 0 => 0.0,
                Some(_) => errors as f64 / offered.max(completed) as f64,
            },
            "rps" => completed as f64 / s.duration_s.max(1e-9),
            "dropped" => s.dropped as f64,
            "late" => s.late as f64,
            "timeouts" => s.timeouts as f64,
            "slo_seconds" => s.seconds_over_slo as f64,
            other => return Err(format!("unknown metric {other:?}")),
        })
    }

    pub fn check(&self, s: &Summary) -> Result<ThresholdResult, String> {
        let v = self.measure(s)?;
        let ok = match self.op {
            Op::Lt => v < self.value,
            Op::Le => v <= self.value,
            Op::Gt => v > self.value,
            Op::Ge => v >= self.value,
        };
        Ok(ThresholdResult {
            expr: self.expr.clone(),
            value: v,
            ok,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::summary::ClassSummary;

    fn summary() -> Summary {
        let mut s = Summary {
            duration_s: 10.0,
            completed: 9900,
            offered: 10_000,
            errors: 100,
            error_rate: 0.01,
            ..Default::default()
        };
        s.latency.p99_ms = 42.0;
        s.latency.p999_ms = 120.0;
        let mut db = ClassSummary {
            completed: 1000,
            offered: 1000,
            ..Default::default()
        };
        db.latency.p99_ms = 80.0;
        s.classes.insert("db".into(), db);
        s
    }

    #[test]
    fn thresholds_parse_and_check() {
        let s = summary();
        let check = |e: &str| Threshold::parse(e).unwrap().check(&s).unwrap().ok;
        assert!(check("p99<50ms"));
        assert!(!check("p99 < 40ms"));
        assert!(check("p99<0.05s"));
        assert!(check("p99<=42"));
        assert!(!check("p99.9<100ms"));
        assert!(check("error_rate<=1%"));
        assert!(!check("error_rate<0.005"));
        assert!(check("rps>=990"));
        assert!(!check("db:p99<50ms"));
        assert!(check("errors<101"));
    }

    #[test]
    fn bad_thresholds_are_refused_clearly() {
        for bad in [
            "p99",
            "p99<",
            "p98<5ms",
            "p99<fast",
            "error_rate<lots",
            "db:dropped<1",
            "<5",
        ] {
            let e = Threshold::parse(bad).unwrap_err();
            assert!(e.contains("threshold"), "{bad}: {e}");
        }
        let t = Threshold::parse("nope:p99<5ms").unwrap();
        assert!(t.check(&summary()).unwrap_err().contains("nope"));
    }
}
