//! The HTML report: one self-contained file, charts drawn as inline SVG by
//! hand (no scripts, no external styles), readable offline and in a diff.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::client::run::Second;
use crate::report::summary::Summary;

const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];

pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// One line of a chart; NaN values break it.
pub struct Line {
    pub label: String,
    pub color: String,
    pub dash: bool,
    /// Drawn as steps (a gauge that holds its value between samples).
    pub step: bool,
    pub points: Vec<(f64, f64)>,
}

/// A point event such as a supervisor decision.
pub struct Mark {
    pub x: f64,
    pub y: f64,
    pub up: bool,
    pub title: String,
}

pub struct Chart {
    pub title: String,
    pub y_label: String,
    pub lines: Vec<Line>,
    pub marks: Vec<Mark>,
    /// Vertical guides (rate edges).
    pub guides: Vec<f64>,
    /// A horizontal reference (the SLO).
    pub reference: Option<(f64, String)>,
    pub log_y: bool,
    pub x_max: f64,
}

const W: f64 = 960.0;
const H: f64 = 280.0;
const ML: f64 = 70.0;
const MR: f64 = 20.0;
const MT: f64 = 44.0;
const MB: f64 = 40.0;

fn nice_step(range: f64, target: f64) -> f64 {
    if range.is_nan() || range <= 0.0 {
        return 1.0;
    }
    let raw = range / target;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim_num(v / 1e6))
    } else if a >= 1e3 {
        format!("{}k", trim_num(v / 1e3))
    } else {
        trim_num(v)
    }
}

fn trim_num(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

impl Chart {
    pub fn svg(&self) -> String {
        // Legend entries flow left to right and wrap; each extra row pushes
        // the plot down, keeping its height.
        let mut legend = Vec::with_capacity(self.lines.len());
        let (mut lx, mut row) = (ML, 0usize);
        for l in &self.lines {
            let width = 30.0 + 7.0 * l.label.chars().count() as f64;
            if lx + width > W - MR && lx > ML {
                lx = ML;
                row += 1;
            }
            legend.push((lx, 32.0 + 14.0 * row as f64));
            lx += width;
        }
        let extra = 14.0 * row as f64;
        let mt = MT + extra;
        let h = H + extra;
        let pw = W - ML - MR;
        let ph = h - mt - MB;
        let x_max = self.x_max.max(1.0);
        let values = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .chain(self.reference.iter().map(|r| r.0))
            .filter(|v| v.is_finite());
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values {
            if self.log_y && v <= 0.0 {
                continue;
            }
            lo = lo.min(v);
            hi = hi.max(v);
        }
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {W} {h}" width="{W}" height="{h}" role="img" aria-label="{t}">"#,
            t = esc(&self.title)
        );
        let _ = write!(
            out,
            r#"<text x="{ML}" y="16" class="title">{}</text>"#,
            esc(&self.title)
        );
        if !lo.is_finite() {
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" class="empty">no data</text></svg>"#,
                ML + pw / 2.0 - 30.0,
                mt + ph / 2.0
            );
            return out;
        }
        // y mapping.
        let (y0, y1, ticks): (f64, f64, Vec<f64>) = if self.log_y {
            let a = lo.max(1e-3).log10().floor();
            let b = hi.max(lo * 10.0).log10().ceil().max(a + 1.0);
            let ticks = (a as i32..=b as i32).map(|e| 10f64.powi(e)).collect();
            (a, b, ticks)
        } else {
            let lo = lo.min(0.0);
            let step = nice_step(hi - lo, 5.0);
            let top = ((hi * 1.05) / step).ceil().max(1.0) * step;
            let mut ticks = Vec::new();
            let mut t = 0.0;
            while t <= top + step * 1e-9 {
                ticks.push(t);
                t += step;
            }
            (lo, top, ticks)
        };
        let ymap = |v: f64| -> f64 {
            let v = if self.log_y { v.max(1e-9).log10() } else { v };
            let f = ((v - y0) / (y1 - y0)).clamp(-0.02, 1.02);
            mt + ph * (1.0 - f)
        };
        let xmap = |x: f64| ML + pw * (x / x_max).clamp(0.0, 1.0);
        // Grid and axes.
        for t in &ticks {
            let y = ymap(*t);
            let _ = write!(
                out,
                r#"<line x1="{ML}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="ytick">{}</text>"#,
                ML + pw,
                ML - 6.0,
                y + 4.0,
                fmt_tick(*t)
            );
        }
        let xstep = nice_step(x_max, 10.0).max(1.0);
        let mut xt = 0.0;
        while xt <= x_max + 1e-9 {
            let x = xmap(xt);
            let _ = write!(
                out,
                r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" class="axis"/><text x="{x:.1}" y="{:.1}" class="xtick">{}</text>"#,
                mt + ph,
                mt + ph + 4.0,
                mt + ph + 17.0,
                fmt_tick(xt)
            );
            xt += xstep;
        }
        let _ = write!(
            out,
            r#"<rect x="{ML}" y="{mt}" width="{pw}" height="{ph}" class="frame"/><text x="{:.1}" y="{:.1}" class="xlabel">time (s)</text><text transform="translate(14,{:.1}) rotate(-90)" class="ylabel">{}</text>"#,
            ML + pw / 2.0,
            h - 6.0,
            mt + ph / 2.0,
            esc(&self.y_label)
        );
        for g in &self.guides {
            let x = xmap(*g);
            let _ = write!(
                out,
                r#"<line x1="{x:.1}" y1="{mt}" x2="{x:.1}" y2="{:.1}" class="guide"><title>rate edge at {g:.1}s</title></line>"#,
                mt + ph
            );
        }
        if let Some((v, label)) = &self.reference {
            let y = ymap(*v);
            let _ = write!(
                out,
                r#"<line x1="{ML}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" class="ref"/><text x="{:.1}" y="{:.1}" class="reflabel">{}</text>"#,
                ML + pw,
                ML + pw - 4.0,
                y - 4.0,
                esc(label)
            );
        }
        for l in &self.lines {
            let mut d = String::new();
            let mut pen_down = false;
            let mut prev_y = 0.0;
            for &(x, y) in &l.points {
                if !y.is_finite() || (self.log_y && y <= 0.0) {
                    pen_down = false;
                    continue;
                }
                let (px, py) = (xmap(x), ymap(y));
                if pen_down {
                    if l.step {
                        let _ = write!(d, "L{px:.1},{prev_y:.1}");
                    }
                    let _ = write!(d, "L{px:.1},{py:.1}");
                } else {
                    let _ = write!(d, "M{px:.1},{py:.1}");
                    pen_down = true;
                }
                prev_y = py;
            }
            if d.is_empty() {
                continue;
            }
            let dash = if l.dash {
                r#" stroke-dasharray="6,4""#
            } else {
                ""
            };
            let _ = write!(
                out,
                r#"<path d="{d}" fill="none" stroke="{}" stroke-width="1.6"{dash}><title>{}</title></path>"#,
                l.color,
                esc(&l.label)
            );
        }
        for m in &self.marks {
            let (x, y) = (xmap(m.x), ymap(m.y));
            let (pts, class) = if m.up {
                (
                    format!(
                        "{x:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
                        y - 12.0,
                        x - 5.0,
                        y - 3.0,
                        x + 5.0,
                        y - 3.0
                    ),
                    "grow",
                )
            } else {
                (
                    format!(
                        "{x:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
                        y + 12.0,
                        x - 5.0,
                        y + 3.0,
                        x + 5.0,
                        y + 3.0
                    ),
                    "shrink",
                )
            };
            let _ = write!(
                out,
                r#"<polygon points="{pts}" class="{class}"><title>{}</title></polygon>"#,
                esc(&m.title)
            );
        }
        for (l, (lx, ly)) in self.lines.iter().zip(&legend) {
            let dash = if l.dash {
                r#" stroke-dasharray="6,4""#
            } else {
                ""
            };
            let _ = write!(
                out,
                r#"<line x1="{:.1}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{:.1}" y="{}" class="legend">{}</text>"#,
                lx,
                lx + 18.0,
                l.color,
                lx + 22.0,
                ly + 4.0,
                esc(&l.label)
            );
        }
        out.push_str("</svg>");
        out
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("not settled".into(), |s| format!("{s:.0} s"))
}

/// Builds the whole report.
/// The reports' style sheet (this report and the demo's comparison).
pub const STYLE: &str = r#"body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#222}
h1{font-size:22px} h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ddd;padding:4px 10px;text-align:right} th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
.warn{background:#fde2e1;border:2px solid #d62728;padding:10px 14px;font-weight:600}
.ok{background:#e5f5e5;border:1px solid #2ca02c;padding:8px 14px}
.chart{display:block;margin:14px 0;background:#fff}
.chart .title{font-size:14px;font-weight:600} .chart .legend,.chart .ytick,.chart .xtick,.chart .xlabel,.chart .ylabel,.chart .reflabel{font-size:11px;fill:#444}
.chart .ytick{text-anchor:end} .chart .xtick,.chart .xlabel,.chart .ylabel{text-anchor:middle} .chart .reflabel{text-anchor:end;fill:#d62728}
.chart .grid{stroke:#eee} .chart .axis{stroke:#999} .chart .frame{fill:none;stroke:#bbb} .chart .guide{stroke:#aaa;stroke-dasharray:2,3}
.chart .ref{stroke:#d62728;stroke-dasharray:4,3} .chart .grow{fill:#2ca02c} .chart .shrink{fill:#ff7f0e} .chart .empty{fill:#999}
.note{color:#555;font-size:13px}
"#;

pub fn render(s: &Summary, seconds: &[Second]) -> String {
    // Seconds after the schedule only hold the drain of late responses:
    // they stay in the series file but would read as a collapse on a chart.
    let seconds: Vec<Second> = seconds
        .iter()
        .filter(|x| (x.t as f64) < s.duration_s.ceil().max(1.0))
        .cloned()
        .collect();
    let seconds = &seconds[..];
    let x_max = s.duration_s.max(1.0);
    let guides: Vec<f64> = s.edges.iter().map(|e| e.t).collect();
    let mid = |t: u64| t as f64 + 0.5;
    let mut charts = Vec::new();

    // Offered vs achieved.
    let mut rate_lines = Vec::new();
    if seconds.iter().any(|x| x.expected_rps.is_some()) {
        rate_lines.push(Line {
            label: "schedule".into(),
            color: "#999999".into(),
            dash: true,
            step: false,
            points: seconds
                .iter()
                .map(|x| (mid(x.t), x.expected_rps.unwrap_or(f64::NAN)))
                .collect(),
        });
    }
    rate_lines.push(Line {
        label: "offered".into(),
        color: PALETTE[0].into(),
        dash: false,
        step: false,
        points: seconds
            .iter()
            .map(|x| (mid(x.t), x.offered as f64))
            .collect(),
    });
    rate_lines.push(Line {
        label: "achieved".into(),
        color: PALETTE[2].into(),
        dash: false,
        step: false,
        points: seconds
            .iter()
            .map(|x| (mid(x.t), x.completed as f64))
            .collect(),
    });
    if seconds.iter().any(|x| x.errors > 0) {
        rate_lines.push(Line {
            label: "errors".into(),
            color: PALETTE[1].into(),
            dash: false,
            step: false,
            points: seconds
                .iter()
                .map(|x| (mid(x.t), x.errors as f64))
                .collect(),
        });
    }
    charts.push(Chart {
        title: "Offered vs achieved rate".into(),
        y_label: "requests/s".into(),
        lines: rate_lines,
        marks: Vec::new(),
        guides: guides.clone(),
        reference: None,
        log_y: false,
        x_max,
    });

    // Latency per class.
    let class_names: Vec<String> = {
        let mut v: Vec<String> = seconds
            .iter()
            .flat_map(|x| x.classes.keys().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let mut lat_lines = Vec::new();
    for (i, c) in class_names.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let get = |x: &Second, p99: bool| {
            x.classes
                .get(c)
                .filter(|cs| cs.latency.count > 0)
                .map_or(f64::NAN, |cs| {
                    if p99 {
                        cs.latency.p99_ms
                    } else {
                        cs.latency.p50_ms
                    }
                })
        };
        lat_lines.push(Line {
            label: format!("{c} p99"),
            color: color.into(),
            dash: false,
            step: false,
            points: seconds.iter().map(|x| (mid(x.t), get(x, true))).collect(),
        });
        lat_lines.push(Line {
            label: format!("{c} p50"),
            color: color.into(),
            dash: true,
            step: false,
            points: seconds.iter().map(|x| (mid(x.t), get(x, false))).collect(),
        });
    }
    charts.push(Chart {
        title: "Latency per class, p50 (dashed) and p99, from the intended send time".into(),
        y_label: "ms (log)".into(),
        lines: lat_lines,
        marks: Vec::new(),
        guides: guides.clone(),
        reference: Some((s.slo_ms, format!("SLO {} ms", trim_num(s.slo_ms)))),
        log_y: true,
        x_max,
    });

    // Pools.
    let pool_names: Vec<String> = s.pools.keys().cloned().collect();
    let mut wait_lines = Vec::new();
    for (i, p) in pool_names.iter().enumerate() {
        let get = |x: &Second, f: &dyn Fn(&crate::client::run::PoolSecond) -> Option<f64>| {
            x.pools.get(p).and_then(f).unwrap_or(f64::NAN)
        };
        let mut marks = Vec::new();
        for x in seconds {
            let Some(ps) = x.pools.get(p) else { continue };
            let y = ps.open.or(ps.max_open).unwrap_or(0.0);
            if let Some(g) = ps.grow {
                marks.push(Mark {
                    x: mid(x.t),
                    y,
                    up: true,
                    title: format!("{p}: {g:.0} grow decision(s) before {}s", x.t + 1),
                });
            }
            if let Some(sh) = ps.shrink {
                marks.push(Mark {
                    x: mid(x.t),
                    y,
                    up: false,
                    title: format!("{p}: {sh:.0} shrink decision(s) before {}s", x.t + 1),
                });
            }
        }
        charts.push(Chart {
            title: format!("Pool {p}: size and supervisor decisions (▲ grow, ▼ shrink)"),
            y_label: "connections".into(),
            lines: vec![
                Line {
                    label: "max_open".into(),
                    color: PALETTE[3].into(),
                    dash: true,
                    step: true,
                    points: seconds
                        .iter()
                        .map(|x| (mid(x.t), get(x, &|q| q.max_open)))
                        .collect(),
                },
                Line {
                    label: "open".into(),
                    color: PALETTE[0].into(),
                    dash: false,
                    step: true,
                    points: seconds
                        .iter()
                        .map(|x| (mid(x.t), get(x, &|q| q.open)))
                        .collect(),
                },
                Line {
                    label: "in_use".into(),
                    color: PALETTE[2].into(),
                    dash: false,
                    step: false,
                    points: seconds
                        .iter()
                        .map(|x| (mid(x.t), get(x, &|q| q.in_use)))
                        .collect(),
                },
                Line {
                    label: "waiting".into(),
                    color: PALETTE[1].into(),
                    dash: false,
                    step: false,
                    points: seconds
                        .iter()
                        .map(|x| (mid(x.t), get(x, &|q| q.waiting)))
                        .collect(),
                },
            ],
            marks,
            guides: guides.clone(),
            reference: None,
            log_y: false,
            x_max,
        });
        wait_lines.push(Line {
            label: p.clone(),
            color: PALETTE[i % PALETTE.len()].into(),
            dash: false,
            step: false,
            points: seconds
                .iter()
                .map(|x| (mid(x.t), get(x, &|q| q.acquire_wait_p99_ms)))
                .collect(),
        });
    }
    if !pool_names.is_empty() {
        charts.push(Chart {
            title: "Pool acquire-wait p99".into(),
            y_label: "ms".into(),
            lines: wait_lines,
            marks: Vec::new(),
            guides: guides.clone(),
            reference: None,
            log_y: false,
            x_max,
        });
    }
    charts.push(Chart {
        title: "Generator health: schedule lag p99 and busiest thread CPU".into(),
        y_label: "ms / %".into(),
        lines: vec![
            Line {
                label: "lag p99 (ms)".into(),
                color: PALETTE[4].into(),
                dash: false,
                step: false,
                points: seconds.iter().map(|x| (mid(x.t), x.lag_p99_ms)).collect(),
            },
            Line {
                label: "thread CPU (%)".into(),
                color: PALETTE[5].into(),
                dash: true,
                step: false,
                points: seconds
                    .iter()
                    .map(|x| (mid(x.t), x.worker_cpu * 100.0))
                    .collect(),
            },
        ],
        marks: Vec::new(),
        guides,
        reference: Some((s.generator.lag_bound_ms, "lag bound".into())),
        log_y: false,
        x_max,
    });

    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tidepool-loadgen report: {target}</title>
<style>
{style}</style></head><body>
<h1>tidepool-loadgen: {target}</h1>
<p class="note">{mode} loop, {arrivals} arrivals, {conns} connections, pipeline {pipe}, {threads} thread(s), seed {seed}, {dur:.0} s schedule{io}.</p>
"#,
        style = STYLE,
        target = esc(&s.target),
        mode = esc(&s.mode),
        arrivals = esc(&s.arrivals),
        conns = s.connections,
        pipe = s.pipeline,
        threads = s.threads,
        seed = s.seed,
        dur = s.duration_s,
        io = if s.generator.io.is_empty() {
            String::new()
        } else {
            format!(", I/O {}", esc(&s.generator.io))
        },
    );
    if s.generator.saturated {
        let _ = write!(
            h,
            r#"<p class="warn">The generator could not keep up: what it measured understates the load that was asked for.<br>{}</p>"#,
            s.generator
                .messages
                .iter()
                .map(|m| esc(m))
                .collect::<Vec<_>>()
                .join("<br>")
        );
    } else {
        let _ = write!(
            h,
            r#"<p class="ok">Generator kept up: schedule lag p99 {:.2} ms (bound {:.1} ms), busiest thread at {:.0}% CPU.</p>"#,
            s.generator.lag_p99_ms,
            s.generator.lag_bound_ms,
            s.generator.worker_cpu_max * 100.0
        );
    }
    let _ = write!(
        h,
        "<h2>Summary</h2><table><tr><th>figure</th><th>value</th></tr>"
    );
    let mut row = |k: &str, v: String| {
        let _ = write!(h, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(&v));
    };
    row(
        "p99 (from intended send)",
        format!("{:.2} ms", s.latency.p99_ms),
    );
    row(
        "p99.9 (from intended send)",
        format!("{:.2} ms", s.latency.p999_ms),
    );
    row(
        "p99 service time (from actual send)",
        format!("{:.2} ms", s.service.p99_ms),
    );
    row(
        "seconds over the SLO",
        format!(
            "{} (SLO p99 ≤ {} ms)",
            s.seconds_over_slo,
            trim_num(s.slo_ms)
        ),
    );
    row("throughput", format!("{:.1} req/s", s.throughput_rps));
    row(
        "requests",
        format!(
            "{} offered, {} sent, {} completed",
            s.offered, s.sent, s.completed
        ),
    );
    row(
        "errors",
        format!(
            "{} ({:.3}%): {} timeouts, {} I/O, {} 4xx, {} 5xx, {} dropped; {} connect errors, {} reconnects",
            s.errors,
            s.error_rate * 100.0,
            s.timeouts,
            s.io_errors,
            s.status_4xx,
            s.status_5xx,
            s.dropped,
            s.connect_errors,
            s.reconnects
        ),
    );
    row("late sends", format!("{}", s.late));
    for (name, p) in &s.pools {
        row(
            &format!("pool {name}: connection-seconds"),
            format!(
                "{:.0} (mean open {:.1}, peak {:.0}, peak max_open {:.0})",
                p.connection_seconds, p.mean_open, p.peak_open, p.peak_max_open
            ),
        );
        row(
            &format!("pool {name}: overshoot"),
            p.max_overshoot_pct
                .map_or("n/a (no rising edge with pool data)".into(), |o| {
                    format!("{o:.0}%")
                }),
        );
        row(
            &format!("pool {name}: decisions"),
            format!(
                "{:.0} grow, {:.0} shrink; acquire-wait p99 max {:.2} ms",
                p.grow_decisions, p.shrink_decisions, p.acquire_wait_p99_max_ms
            ),
        );
    }
    h.push_str("</table>");

    if !s.classes.is_empty() {
        h.push_str("<h2>Classes</h2><table><tr><th>class</th><th>completed</th><th>errors</th><th>req/s</th><th>p50 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>service p99 ms</th></tr>");
        for (name, c) in &s.classes {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td></tr>",
                esc(name),
                c.completed,
                c.errors,
                c.throughput_rps,
                c.latency.p50_ms,
                c.latency.p99_ms,
                c.latency.p999_ms,
                c.service.p99_ms
            );
        }
        h.push_str("</table>");
    }

    if !s.edges.is_empty() {
        h.push_str("<h2>Settling after each rate edge</h2><table><tr><th>edge</th><th>rate</th><th>latency settled</th>");
        for p in &pool_names {
            let _ = write!(
                h,
                "<th>pool {} settled</th><th>{} open: start → peak → end</th>",
                esc(p),
                esc(p)
            );
        }
        h.push_str("</tr>");
        for e in &s.edges {
            let _ = write!(
                h,
                "<tr><td>{:.1} s ({})</td><td>{:.0} → {:.0} req/s</td><td>{}</td>",
                e.t,
                esc(&e.direction),
                e.from_rps,
                e.to_rps,
                opt_ms(e.latency_settle_s)
            );
            for p in &pool_names {
                match e.pools.get(p) {
                    Some(pe) => {
                        let _ = write!(
                            h,
                            "<td>{}</td><td>{:.0} → {:.0} → {:.0}{}</td>",
                            opt_ms(pe.settle_s),
                            pe.start_open,
                            pe.peak_open,
                            pe.final_open,
                            pe.overshoot_pct
                                .map_or(String::new(), |o| format!(" (overshoot {o:.0}%)"))
                        );
                    }
                    None => h.push_str("<td>–</td><td>–</td>"),
                }
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>Timeline</h2>");
    for c in &charts {
        h.push_str(&c.svg());
        h.push('\n');
    }
    if pool_names.is_empty() {
        h.push_str(r#"<p class="note">No pool metrics were scraped: the target exposes no tidepool_pool_* series at its metrics path (or scraping was off).</p>"#);
    }
    let _ = write!(
        h,
        r#"<h2>Method</h2><p class="note">Every request has an intended send time from the schedule (Λ(t<sub>k</sub>) = k); latency is measured from it, so waiting for a free connection and a stalled server both count (coordinated-omission correction), and separately from the actual send (service time). Percentiles per second come from that second's HdrHistograms merged over threads; run totals merge every second's histograms. Settling: latency settles at the first second that starts {SETTLED} seconds with p99 within the SLO; a pool settles when <code>open</code> stays within max(1, 10%) of its value at the end of the edge's window. Overshoot is (peak − final) / final after a rising edge. Connection-seconds integrate <code>open</code> over the run at one sample per second. Supervisor decisions are changes of <code>tidepool_supervisor_decisions_total</code> between two scrapes.</p>
</body></html>
"#,
        SETTLED = 3
    );
    h
}

/// Checks that every opened tag of the kinds we emit is closed, in order (a
/// small well-formedness check used by tests and by `run` before writing).
pub fn check_balanced(html: &str) -> Result<(), String> {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = html;
    // The only HTML void elements the report uses; SVG elements self-close.
    let void = ["meta", "br"];
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').ok_or("unterminated tag")?;
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') {
            continue;
        }
        let self_closing = tag.ends_with('/');
        if let Some(name) = tag.strip_prefix('/') {
            let name = name.trim().to_ascii_lowercase();
            match stack.pop() {
                Some(open) if open == name => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
            continue;
        }
        let name = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if self_closing || void.contains(&name.as_str()) {
            continue;
        }
        stack.push(name);
    }
    if stack.is_empty() {
        Ok(())
    } else {
        Err(format!("unclosed: {stack:?}"))
    }
}

/// Splits a report into its <svg> elements (for tests and tooling).
pub fn svgs(html: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<svg") {
        let Some(j) = rest[i..].find("</svg>") else {
            break;
        };
        out.push(&rest[i..i + j + 6]);
        rest = &rest[i + j + 6..];
    }
    out
}

/// Per-class labels that appear in the report (for tests).
pub fn chart_titles(html: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in svgs(html) {
        if let Some(i) = s.find("aria-label=\"") {
            let rest = &s[i + 12..];
            if let Some(j) = rest.find('"') {
                *m.entry(rest[..j].to_string()).or_insert(0) += 1;
            }
        }
    }
    m
}
