//! The demo's comparison: the same traffic against the same app with its
//! pools run three ways, side by side (a table to print, and an HTML page
//! over the three runs' reports).
//!
//! Each figure has one value per run. Where a run also has one value per
//! second (goodput, errors, p99 overall and per class), the per-second
//! values of the adaptive run and of a static one are compared with the
//! Mann-Whitney U test of `compare`: `*` marks p < 0.05, `~` a difference
//! the seconds do not support. Seconds of one run are not independent, so
//! the marks are optimistic (see `compare`).

use std::fmt::Write;

use serde::Serialize;

use crate::client::run::Second;
use crate::report::compare::{mann_whitney, median_ci};
use crate::report::html::{esc, Chart, Line, STYLE};
use crate::report::summary::Summary;

/// One run of the demo.
pub struct Run {
    /// `adaptive`, `static-average`, `static-peak`.
    pub name: String,
    /// How its pools were sized, in words.
    pub sizing: String,
    pub summary: Summary,
    pub seconds: Vec<Second>,
}

/// The issue's three claims, checked on this run's numbers.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Verdict {
    /// Adaptive connection-seconds (all pools) over static-peak's; the
    /// target is ≤ 0.7.
    pub connection_seconds_vs_peak: Option<f64>,
    /// Adaptive p99 (median of the per-second p99s, all classes) over
    /// static-peak's; the target is ≤ 1.2.
    pub p99_vs_peak: Option<f64>,
    /// Errors: adaptive, and static-average (the target: fewer).
    pub errors_adaptive: Option<u64>,
    pub errors_average: Option<u64>,
    /// Goodput (successes within 200 ms per second): adaptive and the best
    /// static run.
    pub goodput_adaptive: Option<f64>,
    pub goodput_best_static: Option<f64>,
}

impl Verdict {
    pub fn of(runs: &[Run]) -> Verdict {
        let find = |n: &str| runs.iter().find(|r| r.name == n).map(|r| &r.summary);
        let (a, avg, peak) = (
            find("adaptive"),
            find("static-average"),
            find("static-peak"),
        );
        let ratio = |x: f64, y: f64| (y > 0.0).then(|| x / y);
        Verdict {
            connection_seconds_vs_peak: a
                .zip(peak)
                .and_then(|(a, p)| ratio(connection_seconds(a), connection_seconds(p))),
            p99_vs_peak: a.zip(peak).and_then(|(a, p)| {
                ratio(
                    median_ci(&a.samples.p99_ms)?.0,
                    median_ci(&p.samples.p99_ms)?.0,
                )
            }),
            errors_adaptive: a.map(|s| s.errors),
            errors_average: avg.map(|s| s.errors),
            goodput_adaptive: a.map(|s| s.goodput_rps),
            goodput_best_static: runs
                .iter()
                .filter(|r| r.name != "adaptive")
                .map(|r| r.summary.goodput_rps)
                .reduce(f64::max),
        }
    }

    /// One line per claim, with whether it held.
    pub fn lines(&self) -> Vec<(bool, String)> {
        let mut v = Vec::new();
        if let Some(r) = self.connection_seconds_vs_peak {
            v.push((
                r <= 0.7,
                format!("adaptive pools held {r:.2}x the connection-seconds of static pools sized for the peak (target ≤ 0.7x)"),
            ));
        }
        if let Some(r) = self.p99_vs_peak {
            v.push((
                r <= 1.2,
                format!(
                    "at {r:.2}x their p99 (median of per-second p99s, every class; target ≤ 1.2x)"
                ),
            ));
        }
        if let (Some(a), Some(s)) = (self.errors_adaptive, self.errors_average) {
            v.push((
                a < s,
                format!("with {a} errors against {s} for static pools sized for the average (target: fewer)"),
            ));
        }
        if let (Some(a), Some(s)) = (self.goodput_adaptive, self.goodput_best_static) {
            v.push((
                a >= s,
                format!("goodput (successes within 200 ms) {a:.0} req/s against the best static run's {s:.0}"),
            ));
        }
        v
    }
}

/// Connections held over the run, every pool.
pub fn connection_seconds(s: &Summary) -> f64 {
    s.pools.values().map(|p| p.connection_seconds).sum()
}

/// Reads one figure off a summary: its value, and its per-second values
/// where it has them.
type Figure<'a> = &'a dyn Fn(&Summary) -> (f64, Option<Vec<f64>>);

/// A figure of each run, with per-second values where there are some.
struct Row {
    name: String,
    values: Vec<f64>,
    seconds: Vec<Option<Vec<f64>>>,
    /// Printed with this many decimals.
    decimals: usize,
}

fn rows(runs: &[Run]) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut row = |name: String, decimals: usize, f: Figure| {
        let (values, seconds) = runs.iter().map(|r| f(&r.summary)).unzip();
        rows.push(Row {
            name,
            values,
            seconds,
            decimals,
        });
    };
    row("goodput (req/s within 200 ms)".into(), 0, &|s| {
        (s.goodput_rps, Some(s.samples.goodput.clone()))
    });
    row("throughput (req/s)".into(), 0, &|s| {
        (s.throughput_rps, Some(s.samples.throughput.clone()))
    });
    row("errors".into(), 0, &|s| {
        (s.errors as f64, Some(s.samples.errors.clone()))
    });
    row("  of them 503".into(), 0, &|s| (s.unavailable as f64, None));
    row("  of them timeouts".into(), 0, &|s| {
        (s.timeouts as f64, None)
    });
    row("sheds (pool counters)".into(), 0, &|s| {
        (s.pools.values().map(|p| p.sheds).sum(), None)
    });
    row("p99 ms, per-second median".into(), 1, &|s| {
        (
            median_ci(&s.samples.p99_ms).map_or(f64::NAN, |m| m.0),
            Some(s.samples.p99_ms.clone()),
        )
    });
    row("p99 ms, whole run".into(), 1, &|s| (s.latency.p99_ms, None));
    let mut classes: Vec<&String> = runs.iter().flat_map(|r| r.summary.classes.keys()).collect();
    classes.sort();
    classes.dedup();
    for c in classes {
        row(format!("{c}: p99 ms, per-second median"), 1, &|s| {
            s.classes.get(c).map_or((f64::NAN, None), |cs| {
                (
                    median_ci(&cs.p99_samples_ms).map_or(f64::NAN, |m| m.0),
                    Some(cs.p99_samples_ms.clone()),
                )
            })
        });
        row(format!("{c}: p99 ms, whole run"), 1, &|s| {
            (
                s.classes.get(c).map_or(f64::NAN, |cs| cs.latency.p99_ms),
                None,
            )
        });
        row(format!("{c}: goodput req/s"), 0, &|s| {
            (s.classes.get(c).map_or(f64::NAN, |cs| cs.goodput_rps), None)
        });
        row(format!("{c}: errors"), 0, &|s| {
            (
                s.classes.get(c).map_or(f64::NAN, |cs| cs.errors as f64),
                None,
            )
        });
    }
    let mut pools: Vec<&String> = runs.iter().flat_map(|r| r.summary.pools.keys()).collect();
    pools.sort();
    pools.dedup();
    for p in pools {
        row(format!("pool {p}: connection-seconds"), 0, &|s| {
            (
                s.pools.get(p).map_or(f64::NAN, |x| x.connection_seconds),
                None,
            )
        });
    }
    row("connection-seconds, all pools".into(), 0, &|s| {
        (connection_seconds(s), None)
    });
    rows
}

fn fmt(v: f64, decimals: usize) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.decimals$}")
    }
}

/// The adaptive run (index 0) against run `i`: the ratio and its mark.
fn against(row: &Row, i: usize) -> String {
    let (a, b) = (row.values[0], row.values[i]);
    if a.is_nan() || b.is_nan() {
        return "–".into();
    }
    let ratio = if b == 0.0 {
        if a == 0.0 {
            "1.00x".to_string()
        } else {
            "∞".to_string()
        }
    } else {
        format!("{:.2}x", a / b)
    };
    let mark = match (&row.seconds[0], &row.seconds[i]) {
        (Some(sa), Some(sb)) => match mann_whitney(sa, sb) {
            Some(p) if p < 0.05 => " *",
            Some(_) => " ~",
            None => "",
        },
        _ => "",
    };
    format!("{ratio}{mark}")
}

/// The comparison as a fixed-width table; the first run is the adaptive one.
pub fn table(runs: &[Run]) -> String {
    let mut out = String::new();
    if runs.is_empty() {
        return out;
    }
    let s0 = &runs[0].summary;
    let _ = writeln!(
        out,
        "The same {:.0} s of traffic (seed {}), three ways:",
        s0.duration_s, s0.seed
    );
    for r in runs {
        let _ = writeln!(out, "  {:<15} {}", r.name, r.sizing);
    }
    let _ = writeln!(out);
    let w = 14;
    let _ = write!(out, "{:<38}", "");
    for r in runs {
        let _ = write!(out, " {:>w$}", r.name);
    }
    for r in &runs[1..] {
        let _ = write!(out, " {:>w$}", format!("a/{}", short(&r.name)));
    }
    let _ = writeln!(out);
    for row in rows(runs) {
        let _ = write!(out, "{:<38}", row.name);
        for v in &row.values {
            let _ = write!(out, " {:>w$}", fmt(*v, row.decimals));
        }
        for i in 1..runs.len() {
            let _ = write!(out, " {:>w$}", against(&row, i));
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "\na/x: the adaptive run over run x; * the per-second values differ (Mann-Whitney p < 0.05), ~ they do not."
    );
    for (ok, line) in Verdict::of(runs).lines() {
        let _ = writeln!(out, "{} {line}", if ok { "[ok]  " } else { "[MISS]" });
    }
    if runs.iter().any(|r| r.summary.generator.saturated) {
        let _ = writeln!(
            out,
            "WARNING: the generator could not keep up in {}: those numbers understate the offered load",
            runs.iter()
                .filter(|r| r.summary.generator.saturated)
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out
}

fn short(name: &str) -> &str {
    name.strip_prefix("static-").unwrap_or(name)
}

const RUN_COLORS: [&str; 3] = ["#2ca02c", "#d62728", "#1f77b4"];

fn overlay(
    runs: &[Run],
    title: &str,
    y_label: &str,
    log_y: bool,
    f: &dyn Fn(&Second) -> Option<f64>,
) -> Chart {
    let x_max = runs.first().map_or(1.0, |r| r.summary.duration_s.max(1.0));
    Chart {
        title: title.into(),
        y_label: y_label.into(),
        lines: runs
            .iter()
            .enumerate()
            .map(|(i, r)| Line {
                label: r.name.clone(),
                color: RUN_COLORS[i % RUN_COLORS.len()].into(),
                dash: false,
                step: false,
                points: r
                    .seconds
                    .iter()
                    .filter(|x| (x.t as f64) < r.summary.duration_s.ceil().max(1.0))
                    .map(|x| (x.t as f64 + 0.5, f(x).unwrap_or(f64::NAN)))
                    .collect(),
            })
            .collect(),
        marks: Vec::new(),
        guides: runs
            .first()
            .map(|r| r.summary.edges.iter().map(|e| e.t).collect())
            .unwrap_or_default(),
        reference: None,
        log_y,
        x_max,
    }
}

/// The comparison page: verdict, table, the three runs on shared charts,
/// and links to each run's own report (in its directory).
pub fn render(runs: &[Run]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Tidepool demo: adaptive vs static pools</title>
<style>
{STYLE}</style></head><body>
<h1>Tidepool demo: adaptive vs static pools</h1>
"#
    );
    if let Some(r) = runs.first() {
        let _ = write!(
            h,
            r#"<p class="note">The same {:.0} s of open-loop traffic (seed {}, {} connections), three times against the example app:</p><ul>"#,
            r.summary.duration_s, r.summary.seed, r.summary.connections
        );
    }
    for r in runs {
        let _ = write!(
            h,
            r#"<li><b>{}</b>: {} (<a href="{}/report.html">its report</a>)</li>"#,
            esc(&r.name),
            esc(&r.sizing),
            esc(&r.name)
        );
    }
    h.push_str("</ul>");
    for (ok, line) in Verdict::of(runs).lines() {
        let _ = write!(
            h,
            r#"<p class="{}">{}</p>"#,
            if ok { "ok" } else { "warn" },
            esc(&line)
        );
    }
    if runs.iter().any(|r| r.summary.generator.saturated) {
        h.push_str(r#"<p class="warn">The generator could not keep up in at least one run: its numbers understate the offered load.</p>"#);
    }
    h.push_str("<h2>Side by side</h2><table><tr><th>figure</th>");
    for r in runs {
        let _ = write!(h, "<th>{}</th>", esc(&r.name));
    }
    for r in runs.iter().skip(1) {
        let _ = write!(h, "<th>adaptive / {}</th>", esc(short(&r.name)));
    }
    h.push_str("</tr>");
    for row in rows(runs) {
        let _ = write!(h, "<tr><td>{}</td>", esc(row.name.trim_start()));
        for v in &row.values {
            let _ = write!(h, "<td>{}</td>", esc(&fmt(*v, row.decimals)));
        }
        for i in 1..runs.len() {
            let _ = write!(h, "<td>{}</td>", esc(&against(&row, i)));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    h.push_str(r#"<p class="note">adaptive / x: the adaptive run's figure over run x's. <b>*</b>: the two runs' per-second values differ (two-sided Mann-Whitney U, p &lt; 0.05); <b>~</b>: they do not; no mark: one value per run, no test. Goodput counts 2xx/3xx responses within 200 ms of their intended send time; a 503 is the server turning a request away (a shed, an acquire timeout). Connection-seconds integrate each pool's open connections, sampled once a second.</p>"#);
    h.push_str("<h2>Timeline</h2>");
    let charts = [
        overlay(
            runs,
            "p99 latency, every class, from the intended send time",
            "ms (log)",
            true,
            &|x| (x.latency.count > 0).then_some(x.latency.p99_ms),
        ),
        overlay(
            runs,
            "Goodput: successes within 200 ms",
            "requests/s",
            false,
            &|x| Some(x.good as f64),
        ),
        overlay(runs, "Errors", "requests/s", false, &|x| {
            Some(x.errors as f64)
        }),
        overlay(
            runs,
            "PostgreSQL pool (pg): open connections",
            "connections",
            false,
            &|x| x.pools.get("pg").and_then(|p| p.open),
        ),
        overlay(runs, "dbslow (critical) p99", "ms (log)", true, &|x| {
            x.classes
                .get("dbslow")
                .filter(|c| c.latency.count > 0)
                .map(|c| c.latency.p99_ms)
        }),
    ];
    for c in &charts {
        h.push_str(&c.svg());
        h.push('\n');
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::summary::{ClassSummary, PoolSummary};

    fn run(name: &str, goodput: &[f64], p99: &[f64], errors: u64, conn_s: f64) -> Run {
        let mut s = Summary {
            duration_s: goodput.len() as f64,
            seed: 42,
            errors,
            goodput_rps: goodput.iter().sum::<f64>() / goodput.len() as f64,
            ..Summary::default()
        };
        s.samples.goodput = goodput.to_vec();
        s.samples.p99_ms = p99.to_vec();
        s.samples.errors = vec![errors as f64 / goodput.len() as f64; goodput.len()];
        s.pools.insert(
            "pg".into(),
            PoolSummary {
                connection_seconds: conn_s,
                ..PoolSummary::default()
            },
        );
        s.classes.insert(
            "dbslow".into(),
            ClassSummary {
                p99_samples_ms: p99.to_vec(),
                ..ClassSummary::default()
            },
        );
        Run {
            name: name.into(),
            sizing: format!("{name} sizing"),
            summary: s,
            seconds: Vec::new(),
        }
    }

    #[test]
    fn the_verdict_reads_the_claims_off_the_runs() {
        let steady = [100.0; 12];
        let runs = [
            run("adaptive", &steady, &[10.0; 12], 5, 300.0),
            run("static-average", &[60.0; 12], &[900.0; 12], 800, 240.0),
            run("static-peak", &[90.0; 12], &[9.0; 12], 400, 1000.0),
        ];
        let v = Verdict::of(&runs);
        assert_eq!(v.connection_seconds_vs_peak, Some(0.3));
        assert!((v.p99_vs_peak.unwrap() - 10.0 / 9.0).abs() < 1e-9);
        assert_eq!((v.errors_adaptive, v.errors_average), (Some(5), Some(800)));
        assert!(v.lines().iter().all(|(ok, _)| *ok), "{:?}", v.lines());
        // A run that holds more than 0.7x the peak's connections misses.
        let runs = [
            run("adaptive", &steady, &[10.0; 12], 5, 800.0),
            run("static-peak", &steady, &[10.0; 12], 5, 1000.0),
        ];
        let lines = Verdict::of(&runs).lines();
        assert!(!lines[0].0 && lines[0].1.contains("0.80x"), "{lines:?}");
    }

    #[test]
    fn the_table_marks_only_differences_the_seconds_support() {
        let mut noisy = Vec::new();
        for i in 0..20 {
            noisy.push(100.0 + (i % 5) as f64);
        }
        let shifted: Vec<f64> = noisy.iter().map(|v| v * 0.5).collect();
        let same: Vec<f64> = noisy.iter().rev().copied().collect();
        let runs = [
            run("adaptive", &noisy, &noisy, 1, 100.0),
            run("static-average", &shifted, &noisy, 1, 100.0),
            run("static-peak", &same, &noisy, 1, 400.0),
        ];
        let t = table(&runs);
        let goodput = t
            .lines()
            .find(|l| l.starts_with("goodput"))
            .expect("goodput row");
        assert!(goodput.contains("2.00x *"), "{goodput}");
        assert!(goodput.contains("1.00x ~"), "{goodput}");
        let conn = t
            .lines()
            .find(|l| l.starts_with("connection-seconds, all pools"))
            .unwrap();
        assert!(conn.contains("0.25x") && !conn.contains('*'), "{conn}");
        assert!(t.contains("[ok]"), "{t}");
        let html = render(&runs);
        crate::report::html::check_balanced(&html).unwrap();
        assert!(html.contains("static-peak/report.html"));
        assert_eq!(crate::report::html::svgs(&html).len(), 5);
    }
}
