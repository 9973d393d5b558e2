//! The percentile spectrum, laid out the way wrk2 prints it (milliseconds,
//! five ticks per half-distance), so existing tooling that reads wrk2
//! output can read ours.

use std::fmt::Write;

use hdrhistogram::Histogram;

/// The short distribution and the detailed spectrum of `h` (microseconds).
pub fn spectrum(title: &str, h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let ms = |us: u64| us as f64 / 1000.0;
    let _ = writeln!(out, "  Latency Distribution (HdrHistogram - {title})");
    for q in [0.5, 0.75, 0.9, 0.99, 0.999, 0.9999, 0.99999, 1.0] {
        let v = if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        };
        let _ = writeln!(out, "{:>7.3}%  {:>8.2}ms", q * 100.0, ms(v));
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "  Detailed Percentile spectrum:");
    let _ = writeln!(
        out,
        "       Value   Percentile   TotalCount 1/(1-Percentile)"
    );
    let _ = writeln!(out);
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{:>12.3} {:>12.6} {:>12} {:>14.2}",
                    ms(v.value_iterated_to()),
                    q,
                    total,
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(
                    out,
                    "{:>12.3} {:>12.6} {:>12}",
                    ms(v.value_iterated_to()),
                    q,
                    total
                );
            }
        }
    }
    let (mean, sd, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / 1000.0, h.stdev() / 1000.0, ms(h.max()))
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:>12.3}, StdDeviation   = {sd:>12.3}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:>12.3}, Total count    = {:>12}]",
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        // HdrHistogram's sub-bucket count: 2·10^sigfig rounded up to a power of two.
        (2.0 * 10f64.powi(i32::from(h.sigfig())))
            .log2()
            .ceil()
            .exp2() as u64
    );
    let _ = writeln!(
        out,
        "----------------------------------------------------------"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::stats::{new_hist, record};

    #[test]
    fn has_wrk2_layout() {
        let mut h = new_hist();
        for i in 1..=1000 {
            record(&mut h, i * 10);
        }
        let s = spectrum("Recorded Latency", &h);
        assert!(s.contains("Latency Distribution (HdrHistogram - Recorded Latency)"));
        // Values are HdrHistogram's highest equivalents (3 significant digits).
        assert!(s.contains(" 50.000%      5.00ms"), "{s}");
        assert!(s.contains("100.000%     10.01ms"), "{s}");
        assert!(s.contains("Detailed Percentile spectrum:"));
        assert!(s.contains("Total count    =         1000"));
        // The spectrum ends at the maximum with every value counted.
        let last = s
            .lines()
            .rfind(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            .unwrap();
        assert!(last.contains("1.000000") && last.contains("1000"), "{last}");
    }
}
