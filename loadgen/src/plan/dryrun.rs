//! `--dry-run`: the rate and mix of every second, drawn exactly as the
//! generator would draw them (same seeds, same per-thread split), without
//! sending anything.

use std::io::Write;

use crate::client::run::expected_in_second;
use crate::plan::config::Plan;
use crate::plan::schedule::{Arrivals, Phase, What};
use crate::util::Rng;

/// Arrivals per second and per class: `counts[second][class]`.
pub fn tally(plan: &Plan, threads: usize) -> Vec<Vec<u64>> {
    let secs = plan.duration().ceil().max(1.0) as usize;
    let mut counts = vec![vec![0u64; plan.classes.len()]; secs];
    let Some(sched) = &plan.schedule else {
        return counts;
    };
    for th in 0..threads.max(1) {
        // The dispatcher's own streams, so the mix matches a real run.
        let mut rng = Rng::derive(plan.seed, 0xD15C_0000 + th as u64);
        let mut scratch = Vec::new();
        for (t, what) in Arrivals::new(sched.clone(), th, threads.max(1), plan.poisson, plan.seed) {
            let class = match what {
                What::Mix => plan.mix.pick(t, &mut rng, &mut scratch),
                What::Trace { phase, entry } => match &sched.phases[phase] {
                    Phase::Trace(tr) => tr.entries[entry].class,
                    Phase::Rate(_) => unreachable!("trace arrival in a rate phase"),
                },
            };
            let s = (t as usize).min(secs - 1);
            counts[s][class] += 1;
        }
    }
    counts
}

pub fn print(plan: &Plan, threads: usize, out: &mut dyn Write) -> std::io::Result<()> {
    let names: Vec<&str> = plan.classes.iter().map(|c| c.name.as_str()).collect();
    if plan.schedule.is_none() {
        writeln!(
            out,
            "closed loop (--rate max) for {:.0}s: requests go as fast as the connections allow; mix:",
            plan.duration()
        )?;
        for (n, s) in names.iter().zip(plan.mix.shares_at(0.0)) {
            writeln!(out, "  {n}: {:.1}%", s * 100.0)?;
        }
        return Ok(());
    }
    let counts = tally(plan, threads);
    write!(out, "{:>6} {:>10} {:>8}", "second", "rate/s", "sent")?;
    for n in &names {
        write!(out, " {:>12}", truncate(n, 12))?;
    }
    writeln!(out)?;
    let mut total = 0u64;
    for (s, row) in counts.iter().enumerate() {
        let sum: u64 = row.iter().sum();
        total += sum;
        write!(
            out,
            "{:>6} {:>10.1} {:>8}",
            s,
            expected_in_second(plan, s as u64).unwrap_or(0.0),
            sum
        )?;
        for c in row {
            let pct = if sum > 0 {
                *c as f64 * 100.0 / sum as f64
            } else {
                0.0
            };
            write!(out, " {:>6} {:>4.0}%", c, pct)?;
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "total {total} requests over {:.1}s ({} arrivals)",
        plan.duration(),
        if plan.poisson { "poisson" } else { "uniform" }
    )?;
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::config::parse_pattern;

    #[test]
    fn dry_run_shows_the_drift_without_changing_the_rate() {
        let plan = parse_pattern(
            r#"
            [[class]]
            name = "redis"
            path = "/redis"
            weight = 9
            [[class]]
            name = "db"
            path = "/db"
            weight = 1
            [[phase]]
            kind = "steady"
            rate = 2000
            duration = 10
            [[drift]]
            start = 2
            duration = 6
            to = { redis = 1, db = 9 }
            "#,
            None,
            None,
        )
        .unwrap();
        let c = tally(&plan, 2);
        for row in &c {
            assert_eq!(row.iter().sum::<u64>(), 2000);
        }
        for (s, row) in c.iter().enumerate() {
            let got = row[1] as f64 / 2000.0;
            // The drift's mean share of "db" over this second.
            let want = (0..100)
                .map(|i| plan.mix.shares_at(s as f64 + (i as f64 + 0.5) / 100.0)[1])
                .sum::<f64>()
                / 100.0;
            assert!((got - want).abs() < 0.04, "second {s}: {got} vs {want}");
        }
        assert!(c[0][1] < 300 && c[9][1] > 1700, "{:?} {:?}", c[0], c[9]);
        let mut text = Vec::new();
        print(&plan, 2, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("redis") && text.contains("total 20000 requests"),
            "{text}"
        );
    }
}
