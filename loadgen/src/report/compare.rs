//! `compare A.json B.json`: a benchstat-style table of two runs.
//!
//! Method. A summary holds one value per second of the run for throughput,
//! p50, p99, p99.9 and errors. Each row shows the median of those seconds
//! with the half-width of a distribution-free 95 % confidence interval for
//! the median (order statistics n/2 ± 1.96·√n/2), as a percentage. The
//! two runs' seconds are compared with a two-sided Mann-Whitney U test
//! (normal approximation with tie and continuity corrections); the delta
//! is printed only when p < 0.05, and `~` otherwise, as benchstat does.
//! Seconds of one run are not independent (load and pool state carry
//! over), so p-values are optimistic; compare runs of the same pattern and
//! length. Run-level figures (the p99 of the whole run, error totals,
//! seconds over the SLO) have one value per run: their delta is shown
//! without a test.

use std::fmt::Write;

use crate::report::summary::Summary;

/// erfc by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): plenty for p-values.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let r = poly * (-z * z).exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Two-sided Mann-Whitney U p-value; None with fewer than 4 samples a side.
pub fn mann_whitney(a: &[f64], b: &[f64]) -> Option<f64> {
    let (n1, n2) = (a.len(), b.len());
    if n1 < 4 || n2 < 4 {
        return None;
    }
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|&x| (x, true))
        .chain(b.iter().map(|&x| (x, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    let mut rank_a = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        // Ranks i+1..=j+1 share their average.
        let avg = (i + j + 2) as f64 / 2.0;
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        for item in &all[i..=j] {
            if item.1 {
                rank_a += avg;
            }
        }
        i = j + 1;
    }
    let (n1f, n2f, nf) = (n1 as f64, n2 as f64, n as f64);
    let u1 = rank_a - n1f * (n1f + 1.0) / 2.0;
    let mu = n1f * n2f / 2.0;
    let var = n1f * n2f / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)));
    if var <= 0.0 {
        // Every value equal on both sides.
        return Some(1.0);
    }
    let z = ((u1 - mu).abs() - 0.5).max(0.0) / var.sqrt();
    Some(erfc(z / std::f64::consts::SQRT_2).min(1.0))
}

/// Median and the 95 % CI half-width as a fraction of the median.
pub fn median_ci(v: &[f64]) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    let half = 1.96 * (n as f64).sqrt() / 2.0;
    let lo = ((n as f64 / 2.0 - half).floor().max(1.0) as usize).min(n) - 1;
    let hi = ((n as f64 / 2.0 + half).ceil() as usize).clamp(1, n) - 1;
    let spread = (s[hi] - med).abs().max((med - s[lo]).abs());
    let rel = if med != 0.0 { spread / med.abs() } else { 0.0 };
    Some((med, rel))
}

fn fmt_val(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn delta(a: f64, b: f64) -> String {
    if a == 0.0 {
        if b == 0.0 {
            "0.00%".into()
        } else {
            "+inf%".into()
        }
    } else {
        format!("{:+.2}%", (b - a) / a.abs() * 100.0)
    }
}

/// The table, ready to print.
pub fn compare(a: &Summary, b: &Summary, name_a: &str, name_b: &str) -> String {
    let mut out = String::new();
    let w = 22;
    let _ = writeln!(out, "{:<20} {name_a:>w$} {name_b:>w$}  delta", "",);
    let rows: [(&str, &Vec<f64>, &Vec<f64>); 5] = [
        (
            "throughput (req/s)",
            &a.samples.throughput,
            &b.samples.throughput,
        ),
        ("p50 (ms)", &a.samples.p50_ms, &b.samples.p50_ms),
        ("p99 (ms)", &a.samples.p99_ms, &b.samples.p99_ms),
        ("p99.9 (ms)", &a.samples.p999_ms, &b.samples.p999_ms),
        ("errors/s", &a.samples.errors, &b.samples.errors),
    ];
    for (name, sa, sb) in rows {
        let (Some((ma, ra)), Some((mb, rb))) = (median_ci(sa), median_ci(sb)) else {
            let _ = writeln!(out, "{name:<20} {:>w$} {:>w$}  (no samples)", "-", "-");
            continue;
        };
        let p = mann_whitney(sa, sb);
        let (d, note) = match p {
            Some(p) if p < 0.05 => (
                delta(ma, mb),
                format!("(p={p:.3} n={}+{})", sa.len(), sb.len()),
            ),
            Some(p) => (
                "~".into(),
                format!("(p={p:.3} n={}+{})", sa.len(), sb.len()),
            ),
            None => (
                "~".into(),
                format!("(too few seconds: n={}+{})", sa.len(), sb.len()),
            ),
        };
        let _ = writeln!(
            out,
            "{name:<20} {:>w$} {:>w$}  {d:<10} {note}",
            format!("{} ± {:.0}%", fmt_val(ma), ra * 100.0),
            format!("{} ± {:.0}%", fmt_val(mb), rb * 100.0),
        );
    }
    let runs: [(&str, f64, f64); 6] = [
        ("run p99 (ms)", a.latency.p99_ms, b.latency.p99_ms),
        ("run p99.9 (ms)", a.latency.p999_ms, b.latency.p999_ms),
        ("run service p99", a.service.p99_ms, b.service.p99_ms),
        ("errors (total)", a.errors as f64, b.errors as f64),
        (
            "seconds over SLO",
            a.seconds_over_slo as f64,
            b.seconds_over_slo as f64,
        ),
        ("throughput (run)", a.throughput_rps, b.throughput_rps),
    ];
    for (name, va, vb) in runs {
        let _ = writeln!(
            out,
            "{name:<20} {:>w$} {:>w$}  {:<10} (one value per run: no test)",
            fmt_val(va),
            fmt_val(vb),
            delta(va, vb)
        );
    }
    let pools: std::collections::BTreeSet<&String> = a.pools.keys().chain(b.pools.keys()).collect();
    for p in pools {
        let (pa, pb) = (a.pools.get(p), b.pools.get(p));
        let cs = |x: Option<&crate::report::summary::PoolSummary>| {
            x.map_or(0.0, |x| x.connection_seconds)
        };
        let _ = writeln!(
            out,
            "{:<20} {:>w$} {:>w$}  {:<10} (one value per run: no test)",
            format!("{p} conn-seconds"),
            fmt_val(cs(pa)),
            fmt_val(cs(pb)),
            delta(cs(pa), cs(pb))
        );
    }
    if a.generator.saturated || b.generator.saturated {
        let _ = writeln!(
            out,
            "WARNING: the generator could not keep up in {}: those numbers understate the offered load",
            match (a.generator.saturated, b.generator.saturated) {
                (true, true) => "both runs",
                (true, false) => name_a,
                _ => name_b,
            }
        );
    }
    if a.generator.io != b.generator.io && !a.generator.io.is_empty() && !b.generator.io.is_empty()
    {
        // A different generator can cap closed-loop throughput differently.
        let _ = writeln!(
            out,
            "NOTE: the generators ran on different I/O: {name_a} {}, {name_b} {}",
            a.generator.io, b.generator.io
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_is_accurate() {
        assert!((erfc(0.0) - 1.0).abs() < 1e-6);
        assert!((erfc(1.0) - 0.157_299_2).abs() < 1e-6);
        assert!((erfc(-1.0) - 1.842_700_8).abs() < 1e-6);
    }

    #[test]
    fn mann_whitney_separates_shifted_samples() {
        let a: Vec<f64> = (0..30).map(|i| 100.0 + (i % 7) as f64).collect();
        let b: Vec<f64> = (0..30).map(|i| 110.0 + (i % 7) as f64).collect();
        assert!(mann_whitney(&a, &b).unwrap() < 0.001);
        let c: Vec<f64> = (0..30).map(|i| 100.0 + ((i * 3) % 7) as f64).collect();
        assert!(mann_whitney(&a, &c).unwrap() > 0.5);
        assert_eq!(mann_whitney(&a[..3], &b), None);
        // Known value: U = 0 for 5 vs 5 fully separated, z = (12.5-0.5)/√(275/12).
        let p = mann_whitney(&[1., 2., 3., 4., 5.], &[6., 7., 8., 9., 10.]).unwrap();
        assert!((p - 0.0122).abs() < 0.001, "{p}");
    }

    #[test]
    fn median_and_spread() {
        let (m, r) = median_ci(&[10.0, 10.0, 10.0, 10.0, 10.0]).unwrap();
        assert_eq!((m, r), (10.0, 0.0));
        let (m, _) = median_ci(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(m, 2.5);
    }
}
