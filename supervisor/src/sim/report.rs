//! Output of simulator runs: CSV series, a markdown summary table, and SVG
//! charts written by hand (no plotting crates: a chart here is a few
//! polylines, axes and labels).

use std::fmt::Write as _;

use super::{SecondRow, SimResult, Summary};

/// The per-second series of a run as CSV, with the resizes applied during
/// each second in the last column.
pub fn series_csv(r: &SimResult) -> String {
    let mut out = String::from(
        "t,offered,completed,failed,max_open,open,in_use,waiting,\
         acquire_wait_p99_ms,query_p99_ms,latency_p99_ms,decisions\n",
    );
    let mut d = r.decisions.iter().peekable();
    for row in &r.series {
        let mut here = Vec::new();
        while let Some(x) = d.peek() {
            if x.t >= (row.t + 1) as f64 {
                break;
            }
            here.push(format!("{}->{} {}", x.from, x.to, x.reason));
            d.next();
        }
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{:.3},{:.3},{:.3},{}",
            row.t,
            row.offered,
            row.completed,
            row.failed,
            row.max_open,
            row.open,
            row.in_use,
            row.waiting,
            row.acquire_wait_p99_ms,
            row.query_p99_ms,
            row.latency_p99_ms,
            csv_field(&here.join("; "))
        );
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Header of the summary table; `reference` names the policy the
/// connection-seconds ratio is taken against.
pub fn summary_header(reference: &str) -> String {
    format!(
        "| pattern | policy | req p99 ms | req p99.9 ms | wait p99 ms | s over SLO | settling s (max) \
         | overshoot | conn-seconds | vs {reference} | failed | changes |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
}

/// One row of the summary table; `reference` is the connection-seconds of
/// the static pool sized for peak, for the ratio column.
pub fn summary_row(scenario: &str, policy: &str, s: &Summary, reference: f64) -> String {
    let opt = |v: Option<f64>, pct: bool| match v {
        Some(x) if pct => format!("{:.0}%", x * 100.0),
        Some(x) => format!("{x:.0}"),
        None => "-".to_string(),
    };
    let ratio = if reference > 0.0 {
        format!("{:.2}x", s.connection_seconds / reference)
    } else {
        "-".to_string()
    };
    format!(
        "| {scenario} | {policy} | {:.1} | {:.1} | {:.2} | {} | {} | {} | {:.0} | {ratio} | {} | {} |\n",
        s.latency_p99_ms,
        s.latency_p999_ms,
        s.acquire_wait_p99_ms,
        s.seconds_over_slo,
        opt(s.settling_max_s, false),
        opt(s.overshoot, true),
        s.connection_seconds,
        s.failed,
        s.changes,
    )
}

const W: f64 = 960.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const PANEL_H: f64 = 170.0;
const GAP: f64 = 50.0;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

struct Line {
    label: String,
    pts: Vec<(f64, f64)>,
    /// A colour of its own (gauges drawn faintly behind the main lines), or
    /// the next from the palette.
    color: Option<&'static str>,
}

struct Panel<'a> {
    title: &'a str,
    y_label: &'a str,
    log: bool,
    lines: Vec<Line>,
    hline: Option<(f64, &'a str)>,
    markers: Vec<(f64, f64, bool)>,
}

fn line(label: String, r: &SimResult, f: impl Fn(&SecondRow) -> f64) -> Line {
    let pts = r.series.iter().map(|x| (x.t as f64, f(x))).collect();
    Line {
        label,
        pts,
        color: None,
    }
}

/// One SVG with three panels sharing the time axis: offered load, pool
/// size (with a marker per resize of the first, adaptive, run), and
/// acquire-wait p99 on a log scale with the target drawn in. `runs[0]` is
/// the adaptive run; the others are drawn for comparison.
pub fn chart_svg(title: &str, runs: &[&SimResult], wait_target_ms: f64) -> String {
    let Some(first) = runs.first() else {
        return String::new();
    };
    let x_max = first.series.len().max(1) as f64;
    let offered = Panel {
        title: "offered and completed (req/s)",
        y_label: "req/s",
        log: false,
        lines: vec![
            line("offered".into(), first, |r| r.offered as f64),
            line(format!("completed {}", first.policy), first, |r| {
                r.completed as f64
            }),
        ],
        hline: None,
        markers: vec![],
    };
    let mut in_use = line(format!("in_use {}", first.policy), first, |r| {
        r.in_use as f64
    });
    in_use.color = Some("#c7c7c7");
    let mut size_lines = vec![in_use];
    size_lines.extend(
        runs.iter()
            .map(|r| line(format!("max_open {}", r.policy), r, |x| x.max_open as f64)),
    );
    let size = Panel {
        title: "pool size (markers: resizes of the first policy, \u{25b2} grow \u{25bc} shrink)",
        y_label: "connections",
        log: false,
        lines: size_lines,
        hline: None,
        markers: first
            .decisions
            .iter()
            .map(|d| (d.t, d.to as f64, d.to > d.from))
            .collect(),
    };
    let wait = Panel {
        title: "acquire-wait p99 per second (ms, log scale)",
        y_label: "ms",
        log: true,
        lines: runs
            .iter()
            .map(|r| line(r.policy.clone(), r, |x| x.acquire_wait_p99_ms))
            .collect(),
        hline: Some((wait_target_ms, "target")),
        markers: vec![],
    };

    let panels = [offered, size, wait];
    let h = 40.0 + panels.len() as f64 * (PANEL_H + GAP) + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" viewBox=\"0 0 {W} {h}\" \
         font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(out, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{}</text>",
        LEFT,
        esc(title)
    );
    for (i, p) in panels.iter().enumerate() {
        let top = 40.0 + i as f64 * (PANEL_H + GAP);
        panel(&mut out, p, top, x_max);
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, p: &Panel<'_>, top: f64, x_max: f64) {
    let plot_w = W - LEFT - RIGHT;
    let bottom = top + PANEL_H;
    // Log panels span 0.1 ms .. the next decade above the data; zeros sit on
    // the floor, which reads as "no wait".
    let floor = 0.1f64;
    let data_max = p
        .lines
        .iter()
        .flat_map(|l| l.pts.iter().map(|&(_, y)| y))
        .chain(p.hline.map(|(y, _)| y))
        .chain(p.markers.iter().map(|&(_, y, _)| y))
        .fold(0.0f64, f64::max);
    let (y_lo, y_hi) = if p.log {
        (floor.log10(), (data_max.max(floor * 10.0)).log10().ceil())
    } else {
        (0.0, nice_ceil(data_max.max(1.0)))
    };
    let sy = |y: f64| {
        let v = if p.log { y.max(floor).log10() } else { y };
        bottom - (v - y_lo) / (y_hi - y_lo) * PANEL_H
    };
    let sx = |x: f64| LEFT + x / x_max * plot_w;

    let _ = writeln!(
        out,
        "<text x=\"{LEFT}\" y=\"{}\" font-weight=\"bold\">{}</text>",
        top - 6.0,
        esc(p.title)
    );
    let _ = writeln!(
        out,
        "<rect x=\"{LEFT}\" y=\"{top}\" width=\"{plot_w}\" height=\"{PANEL_H}\" fill=\"none\" stroke=\"#888\"/>"
    );
    // y ticks
    let ticks: Vec<f64> = if p.log {
        (y_lo.round() as i32..=y_hi as i32)
            .map(|e| 10f64.powi(e))
            .collect()
    } else {
        (0..=4).map(|i| y_hi * i as f64 / 4.0).collect()
    };
    for y in ticks {
        let py = sy(y);
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_w,
            LEFT - 4.0,
            py + 4.0,
            fmt_num(y)
        );
    }
    let _ = writeln!(
        out,
        "<text transform=\"translate(14,{:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        top + PANEL_H / 2.0,
        esc(p.y_label)
    );
    // x ticks: about 8, at round minutes (or seconds for short runs)
    let step = [
        1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    ]
    .into_iter()
    .find(|s| x_max / s <= 10.0)
    .unwrap_or(14400.0);
    let mut x = 0.0;
    while x <= x_max + 0.5 {
        let px = sx(x);
        let _ = writeln!(
            out,
            "<line x1=\"{px:.1}\" y1=\"{bottom}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#888\"/>\
             <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            bottom + 4.0,
            bottom + 16.0,
            fmt_time(x)
        );
        x += step;
    }
    if let Some((y, label)) = p.hline {
        let py = sy(y);
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#000\" \
             stroke-dasharray=\"5,4\"/><text x=\"{:.1}\" y=\"{:.1}\">{} {}</text>",
            LEFT + plot_w,
            LEFT + plot_w + 6.0,
            py + 4.0,
            esc(label),
            fmt_num(y)
        );
    }
    let mut palette = COLORS.iter().cycle();
    for (i, l) in p.lines.iter().enumerate() {
        let (label, pts) = (&l.label, &l.pts);
        let color = l.color.unwrap_or_else(|| palette.next().expect("cycle"));
        let mut d = String::with_capacity(pts.len() * 12);
        for &(x, y) in thin(pts, plot_w as usize).iter() {
            let _ = write!(d, "{:.1},{:.1} ", sx(x), sy(y));
        }
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.2\" points=\"{}\"/>",
            d.trim_end()
        );
        let ly = top + 12.0 + i as f64 * 15.0;
        let lx = LEFT + plot_w + 8.0;
        let _ = writeln!(
            out,
            "<line x1=\"{lx}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"2\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            ly - 4.0,
            lx + 16.0,
            ly - 4.0,
            lx + 20.0,
            ly,
            esc(label)
        );
    }
    for &(x, y, grow) in &p.markers {
        let (px, py) = (sx(x), sy(y));
        let (pts, color) = if grow {
            (
                format!(
                    "{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
                    px - 4.0,
                    py + 4.0,
                    px + 4.0,
                    py + 4.0,
                    px,
                    py - 4.0
                ),
                "#2ca02c",
            )
        } else {
            (
                format!(
                    "{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
                    px - 4.0,
                    py - 4.0,
                    px + 4.0,
                    py - 4.0,
                    px,
                    py + 4.0
                ),
                "#ff7f0e",
            )
        };
        let _ = writeln!(
            out,
            "<polygon points=\"{pts}\" fill=\"{color}\" fill-opacity=\"0.8\"/>"
        );
    }
}

/// At most `n` points: keeps each bucket's extremes so spikes survive.
fn thin(pts: &[(f64, f64)], n: usize) -> Vec<(f64, f64)> {
    if pts.len() <= n || n < 4 {
        return pts.to_vec();
    }
    let per = pts.len().div_ceil(n / 2);
    let mut out = Vec::with_capacity(n + 2);
    for chunk in pts.chunks(per) {
        let lo = chunk
            .iter()
            .copied()
            .fold((0.0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
        let hi =
            chunk.iter().copied().fold(
                (0.0, f64::NEG_INFINITY),
                |a, b| if b.1 > a.1 { b } else { a },
            );
        if lo.0 <= hi.0 {
            out.push(lo);
            out.push(hi);
        } else {
            out.push(hi);
            out.push(lo);
        }
    }
    out
}

fn nice_ceil(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

fn fmt_time(s: f64) -> String {
    let s = s.round() as u64;
    if s >= 3600 && s % 60 == 0 {
        format!("{}h{:02}", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(nice_ceil(730.0), 800.0);
        assert_eq!(nice_ceil(21.0), 25.0);
        assert_eq!(nice_ceil(2600.0), 3000.0);
        assert_eq!(fmt_time(90.0), "1m30");
        assert_eq!(csv_field("a, b"), "\"a, b\"");
        let pts: Vec<(f64, f64)> = (0..1000).map(|i| (i as f64, (i % 7) as f64)).collect();
        let t = thin(&pts, 100);
        assert!(t.len() <= 102);
        assert!(t.iter().any(|p| p.1 == 6.0));
    }
}
