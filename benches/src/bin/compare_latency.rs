//! Latency at fixed offered rates: open-loop plaintext from
//! `tidepool-loadgen` at 25%, 50% and 80% of this machine's capacity
//! against Tidepool's example, hyper, may-minihttp (when `peer_may` was
//! built) and a bare responder (the floor: io_uring's, or epoll's with
//! `--io epoll`). Capacity is
//! measured first: the rate the floor completes when offered more than
//! either side can do. On a machine where the generator's core is the
//! bottleneck (loopback charges the server's receive to the sender), that
//! is the generator's open-loop ceiling, and the servers run below
//! saturation at every load.
//!
//! Every server runs alone, pinned to one CPU, with the generator pinned to
//! the other; each round runs every contestant once, in a rotated order, so
//! a machine whose speed drifts weighs on all alike. Printed per rate: each
//! contestant's median p50, p99, p99.9 and server CPU per request, then
//! Tidepool's ratios to the best peer of the same round (paired), whose
//! median is the figure to read, and to each peer and the floor alone.
//! Where a figure is mostly noise (p99 at low load on this VM), the best
//! of two peers' draws in a round is biased low: three servers with one
//! distribution would put Tidepool over it in two rounds of three. The
//! per-peer columns show that. Run through `benches/compare-latency.sh`.
//!
//! usage: compare_latency [--duration SECS] [--repeat N] [--server-cpu N] [--client-cpu N]
//!                        [--io io_uring|epoll] [--loads 25,50,80]

use std::path::Path;

use tidepool_benches::{clock_ticks, cpu_ticks, start_pinned, summary_num as num, Opts};

const CONNECTIONS: usize = 64;
const LOADS: [f64; 3] = [0.25, 0.5, 0.8];

struct Contestant {
    name: &'static str,
    program: &'static str,
    args: Vec<String>,
    addr: String,
}

/// What one open-loop run measured.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    p50: f64,
    p99: f64,
    p999: f64,
    cpu_us: f64,
    lag_p99: f64,
    errors: u64,
}

fn contestants(o: &Opts) -> Vec<Contestant> {
    let mut tidepool = vec![
        "--listen".into(),
        "127.0.0.1:18090".into(),
        "--workers".into(),
        "1".into(),
    ];
    tidepool.extend(o.io_args());
    let mut v = vec![
        Contestant {
            name: "tidepool",
            program: "target/release/examples/hello",
            args: tidepool,
            addr: "127.0.0.1:18090".into(),
        },
        Contestant {
            name: "hyper",
            program: "target/release/peer_hyper",
            args: vec!["127.0.0.1:18091".into()],
            addr: "127.0.0.1:18091".into(),
        },
        Contestant {
            name: "floor",
            // On epoll, the floor (and so the capacity the rates are
            // fractions of) is the bare epoll responder: 80% of io_uring's
            // capacity is past what any epoll server here can take.
            program: if o.io.as_deref() == Some("epoll") {
                "target/release/floor_epoll"
            } else {
                "target/release/floor_uring"
            },
            args: vec!["127.0.0.1:18093".into()],
            addr: "127.0.0.1:18093".into(),
        },
    ];
    if Path::new("target/release/peer_may").exists() {
        v.insert(
            2,
            Contestant {
                name: "may-minihttp",
                program: "target/release/peer_may",
                args: vec!["127.0.0.1:18092".into()],
                addr: "127.0.0.1:18092".into(),
            },
        );
    }
    v
}

/// Runs the generator against `addr`; `rate` None is closed loop.
fn loadgen(o: &Opts, addr: &str, rate: Option<f64>, secs: u64) -> serde_json::Value {
    tidepool_benches::loadgen(o.client_cpu, addr, "/plaintext", CONNECTIONS, rate, secs)
}

/// One open-loop run at `rate` against a freshly started server.
fn run(o: &Opts, c: &Contestant, rate: f64) -> Run {
    let server = start_pinned(c.program, &c.args, o.server_cpu, &c.addr);
    let pid = server.child.id();
    // Warm-up: connections made, caches and branch predictors hot.
    loadgen(o, &c.addr, Some(rate), 1);
    let t0 = cpu_ticks(pid);
    let s = loadgen(o, &c.addr, Some(rate), o.duration);
    let ticks = cpu_ticks(pid) - t0;
    let completed = num(&s, &["completed"]).max(1.0);
    Run {
        p50: num(&s, &["latency", "p50_ms"]) * 1e3,
        p99: num(&s, &["latency", "p99_ms"]) * 1e3,
        p999: num(&s, &["latency", "p999_ms"]) * 1e3,
        cpu_us: ticks as f64 * 1e6 / clock_ticks() as f64 / completed,
        lag_p99: num(&s, &["generator", "lag_p99_ms"]) * 1e3,
        errors: num(&s, &["errors"]) as u64,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let o = Opts::from_args();
    let all = contestants(&o);
    let floor = all.iter().find(|c| c.name == "floor").expect("floor");
    let capacity = {
        let server = start_pinned(floor.program, &floor.args, o.server_cpu, &floor.addr);
        // Closed loop finds the server's rate; offering that open loop finds
        // what the generator can send on its own (it holds no waits then).
        let closed = loadgen(&o, &floor.addr, None, o.duration);
        let closed = num(&closed, &["throughput_rps"]);
        let open = loadgen(&o, &floor.addr, Some(closed), o.duration);
        drop(server);
        eprintln!("floor closed loop: {closed:.0} req/s");
        num(&open, &["throughput_rps"]).min(closed)
    };
    eprintln!("capacity (floor, open loop, {CONNECTIONS} connections): {capacity:.0} req/s");
    println!("\ncapacity: {capacity:.0} req/s (offered open loop to the floor responder, same generator)");
    let loads = if o.loads.is_empty() {
        LOADS.to_vec()
    } else {
        o.loads.clone()
    };
    for load in loads {
        let rate = (capacity * load).round();
        // runs[round][contestant]
        let mut runs: Vec<Vec<Run>> = Vec::new();
        for round in 0..o.repeat {
            let mut row = vec![Run::default(); all.len()];
            for k in 0..all.len() {
                let i = (k + round) % all.len();
                row[i] = run(&o, &all[i], rate);
                eprintln!(
                    "{:.0}% ({rate:.0} req/s) round {} {:14} p50 {:6.0} us  p99 {:6.0} us  p99.9 {:6.0} us  {:5.2} us CPU/req  lag p99 {:4.0} us{}",
                    load * 100.0,
                    round + 1,
                    all[i].name,
                    row[i].p50,
                    row[i].p99,
                    row[i].p999,
                    row[i].cpu_us,
                    row[i].lag_p99,
                    if row[i].errors > 0 { format!("  {} errors", row[i].errors) } else { String::new() }
                );
            }
            runs.push(row);
        }
        println!(
            "\n### {:.0}% of capacity: {rate:.0} req/s, {CONNECTIONS} connections, {} rounds of {} s\n",
            load * 100.0,
            o.repeat,
            o.duration
        );
        println!("| server | p50 us | p99 us | p99.9 us | CPU us/req | generator lag p99 us |");
        println!("|---|---|---|---|---|---|");
        for (i, c) in all.iter().enumerate() {
            let col = |f: fn(&Run) -> f64| median(runs.iter().map(|r| f(&r[i])).collect());
            println!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} |",
                c.name,
                col(|r| r.p50),
                col(|r| r.p99),
                col(|r| r.p999),
                col(|r| r.cpu_us),
                col(|r| r.lag_p99)
            );
        }
        let peers: Vec<usize> = (0..all.len())
            .filter(|&i| all[i].name != "tidepool" && all[i].name != "floor")
            .collect();
        let floor_i = all.iter().position(|c| c.name == "floor").expect("floor");
        let ratio = |f: fn(&Run) -> f64, against: &dyn Fn(&[Run]) -> f64| -> String {
            let per: Vec<f64> = runs.iter().map(|r| f(&r[0]) / against(r)).collect();
            let list: Vec<String> = per.iter().map(|x| format!("{x:.2}")).collect();
            format!("{} ({:.2}x)", list.join(" "), median(per))
        };
        let best = |f: fn(&Run) -> f64| {
            let peers = peers.clone();
            move |r: &[Run]| {
                peers
                    .iter()
                    .map(|&i| f(&r[i]))
                    .fold(f64::INFINITY, f64::min)
            }
        };
        let mut head = String::from("| Tidepool per round (median) | vs best peer |");
        for &i in peers.iter().chain([&floor_i]) {
            head.push_str(&format!(" vs {} |", all[i].name));
        }
        println!("\n{head}");
        println!("|---|---|{}", "---|".repeat(peers.len() + 1));
        for (label, f) in [
            ("p50", (|r: &Run| r.p50) as fn(&Run) -> f64),
            ("p99", |r: &Run| r.p99),
            ("CPU per request", |r: &Run| r.cpu_us),
        ] {
            let mut line = format!("| {label} | {} |", ratio(f, &best(f)));
            for &i in peers.iter().chain([&floor_i]) {
                line.push_str(&format!(" {} |", ratio(f, &|r: &[Run]| f(&r[i]))));
            }
            println!("{line}");
        }
    }
    println!(
        "\n(open loop, uniform arrivals; server pinned to CPU {}, generator to CPU {}; latency from each request's intended send time)",
        o.server_cpu, o.client_cpu
    );
}
