//! Characterises the fleet budget in the simulator: 50 instances sharing
//! 200 connections through leases (the same `Lease` the instances run),
//! through equal demand, a moving hot group, five crashes, a 30 s
//! coordinator outage and a rolling deploy of the whole fleet; for TTLs of
//! 3 s and 10 s and several seeds. Prints one table (see docs/fleet.md),
//! with the most renews in any second (all 50 start in the same instant)
//! and when every instance first held its floor.
//!
//! ```text
//! cargo run --release -p tidepool-supervisor --example fleet [-- --csv FILE]
//! ```
//!
//! `--csv` writes the first run's per-step series (t, held, granted, live
//! instances): generated output, not committed.

use std::io::Write;
use std::time::Duration;

use tidepool_supervisor::sim::fleet::{run_fleet, standard};

fn main() {
    let mut csv = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--csv" => csv = Some(args.next().expect("--csv needs a file")),
            other => {
                eprintln!("unknown argument {other}; usage: fleet [--csv FILE]");
                std::process::exit(2);
            }
        }
    }
    println!(
        "| TTL | seed | max held / B | max granted / B | in outage (bound) | Jain after 2 TTL (min after) | follow s (3 shifts) | crash reclaim s (max) | renews /inst/s | peak renews/s | all floored s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ok = true;
    let mut first = true;
    for ttl in [3, 10] {
        for seed in 1..=3 {
            let sc = standard(50, 200, Duration::from_secs(ttl));
            let r = run_fleet(&sc, seed);
            ok &= r.within_budget();
            let jain: Vec<String> = r
                .jain_after_2ttl
                .iter()
                .zip(&r.jain_min_after)
                .map(|(a, m)| format!("{a:.3} ({m:.3})"))
                .collect();
            let follow: Vec<String> = r
                .follow_s
                .iter()
                .map(|f| f.map_or("never".into(), |s| format!("{s:.1}")))
                .collect();
            let reclaim = r.reclaim_s.iter().copied().fold(0.0, f64::max);
            println!(
                "| {ttl} s | {seed} | {}/{} | {}/{} | {} ({}) | {} | {} | {reclaim:.1} | {:.2} | {} | {} |",
                r.max_held,
                r.budget,
                r.max_granted,
                r.budget,
                r.max_held_in_outage,
                r.outage_bound,
                jain.join(", "),
                follow.join(", "),
                r.renews_per_instance_s,
                r.peak_renews_per_s,
                r.all_floored_s
                    .map_or("never".into(), |s| format!("{s:.2}"))
            );
            if first {
                if let Some(path) = &csv {
                    let mut f = std::fs::File::create(path).expect("create the CSV");
                    writeln!(f, "t,held,granted,live").unwrap();
                    for (t, h, g, l) in &r.series {
                        writeln!(f, "{t:.2},{h},{g},{l}").unwrap();
                    }
                }
                first = false;
            }
        }
    }
    if !ok {
        eprintln!("the budget was exceeded in at least one run");
        std::process::exit(1);
    }
}
