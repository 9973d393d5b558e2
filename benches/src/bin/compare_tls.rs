//! What TLS costs, and how Tidepool's TLS compares with hyper behind
//! tokio-rustls (same rustls, same certificate, same cipher suites):
//! - HTTPS keep-alive `/plaintext`: Tidepool vs hyper + tokio-rustls;
//! - a new TLS connection per request (`Connection: close`): the same pair;
//! - Tidepool's HTTPS vs its own HTTP;
//! - `/db` with PostgreSQL encrypted (`sslmode=require`) vs cleartext, on
//!   one ephemeral PostgreSQL with `ssl = on`: closed loop (wrk), then open
//!   loop at 25% and 50% of the cleartext side's closed-loop rate
//!   (`tidepool-loadgen`), where both sides do the same work per second
//!   and the CPU per request compares what TLS costs, not how well each
//!   side batches at saturation.
//!
//! Rounds alternate; ratios are per round, first contestant over second.
//! The servers are pinned to one CPU, wrk and PostgreSQL to the other.
//! Run through `benches/compare-tls.sh`.
//!
//! usage: compare_tls [--duration SECS] [--repeat N] [--server-cpu N] [--client-cpu N]
//! (`ONLY=TEXT` in the environment: only the scenarios whose label has TEXT)

use std::time::Instant;

use tidepool_benches::{
    clock_ticks, cpu_ticks, loadgen, median, parse_wrk, pin_pid, start_pinned, summary_num,
    Measured, Opts, Server,
};
use tidepool_testkit::tls::TestCa;
use tidepool_testkit::{PgServer, PgUser};

/// One contestant: program, arguments, URL.
struct Side {
    name: &'static str,
    program: &'static str,
    args: Vec<String>,
    url: String,
}

/// wrk -t1 pinned to `cpu`, with extra arguments; (req/s, p99 us, requests).
fn wrk(cpu: usize, url: &str, conns: usize, secs: u64, extra: &[&str]) -> (f64, f64, u64) {
    let out = std::process::Command::new("taskset")
        .arg("-c")
        .arg(cpu.to_string())
        .arg("wrk")
        .args(["-t1", "--latency"])
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .args(extra)
        .arg(url)
        .output()
        .expect("wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).unwrap_or_else(|| panic!("unexpected wrk output:\n{text}"))
}

fn measure(server: &Server, o: &Opts, url: &str, conns: usize, extra: &[&str]) -> Measured {
    let pid = server.child.id();
    wrk(o.client_cpu, url, conns, 1, extra);
    let t0 = cpu_ticks(pid);
    let started = Instant::now();
    let (rps, p99_us, requests) = wrk(o.client_cpu, url, conns, o.duration, extra);
    let cpu_us = (cpu_ticks(pid) - t0) as f64 * 1e6 / clock_ticks() as f64;
    Measured {
        rps,
        p99_us,
        cpu_us_per_req: cpu_us / requests.max(1) as f64,
        cpu_share: cpu_us / started.elapsed().as_micros() as f64,
        ..Measured::default()
    }
}

fn main() {
    let o = Opts::from_args();
    let pg = PgServer::start_tls_optional().expect("PostgreSQL with ssl");
    if let Some(pid) = pg.pid() {
        pin_pid(pid, o.client_cpu);
    }
    let dir = std::env::temp_dir().join(format!("tidepool-compare-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = TestCa::new().unwrap().issue(&["127.0.0.1"]).unwrap();
    let (crt, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&crt, cert.cert_pem).unwrap();
    std::fs::write(&key, cert.key_pem).unwrap();
    let (crt, key) = (crt.display().to_string(), key.display().to_string());
    let pg_url = |mode: &str| format!("{}?sslmode={mode}", pg.url(PgUser::Md5));
    let hello = |port: u16, extra: &[&str]| -> Vec<String> {
        let port = port.to_string();
        let mut a: Vec<String> = [
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--workers",
            "1",
            "--pg-shared-max-open",
            "8",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(o.io_args());
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let tls = ["--tls-cert", crt.as_str(), "--tls-key", key.as_str()];
    let tidepool_https = || Side {
        name: "tidepool https",
        program: "target/release/examples/hello",
        args: hello(18095, &tls),
        url: "https://127.0.0.1:18095/plaintext".into(),
    };
    let hyper_https = || Side {
        name: "hyper+tokio-rustls",
        program: "target/release/peer_hyper_tls",
        args: vec!["127.0.0.1:18096".into(), crt.clone(), key.clone()],
        url: "https://127.0.0.1:18096/plaintext".into(),
    };
    let db = |mode: &str, port: u16| Side {
        name: if mode == "disable" {
            "sslmode=disable"
        } else {
            "sslmode=require"
        },
        program: "target/release/examples/hello",
        args: hello(port, &["--pg", &pg_url(mode)]),
        url: format!("http://127.0.0.1:{port}/db"),
    };
    let close: &[&str] = &["-H", "Connection: close"];
    let scenarios: Vec<(&str, [Side; 2], usize, &[&str])> = vec![
        (
            "HTTPS keep-alive /plaintext",
            [tidepool_https(), hyper_https()],
            64,
            &[],
        ),
        (
            "HTTPS, a new connection per request",
            [tidepool_https(), hyper_https()],
            16,
            close,
        ),
        (
            "tidepool: HTTPS vs HTTP /plaintext",
            [
                tidepool_https(),
                Side {
                    name: "tidepool http",
                    program: "target/release/examples/hello",
                    args: hello(18097, &[]),
                    url: "http://127.0.0.1:18097/plaintext".into(),
                },
            ],
            64,
            &[],
        ),
        (
            "/db: PostgreSQL over TLS vs cleartext",
            [db("require", 18098), db("disable", 18099)],
            64,
            &[],
        ),
    ];
    let mut db_rps = 0.0;
    println!("\n| scenario | A | B | A req/s | B req/s | req/s A/B per round (median) | A CPU us/req | B CPU us/req | CPU A/B per round (median) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    // `ONLY=TEXT` runs the scenarios whose label contains TEXT (and the
    // fixed-rate /db runs only when "/db" is among them).
    let only = std::env::var("ONLY").unwrap_or_default();
    for (label, pair, conns, extra) in scenarios.iter().filter(|s| s.0.contains(&only)) {
        let mut runs: [Vec<Measured>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..o.repeat {
            for (side, out) in pair.iter().zip(runs.iter_mut()) {
                let addr = side
                    .args
                    .iter()
                    .find(|a| a.starts_with("127.0.0.1:"))
                    .unwrap();
                let server = start_pinned(side.program, &side.args, o.server_cpu, addr);
                out.push(measure(&server, &o, &side.url, *conns, extra));
            }
        }
        let ratios = |f: &dyn Fn(&Measured) -> f64| {
            let mut v: Vec<f64> = runs[0]
                .iter()
                .zip(&runs[1])
                .map(|(a, b)| f(a) / f(b))
                .collect();
            v.sort_by(f64::total_cmp);
            let list: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
            format!("{} ({:.2}x)", list.join(" "), v[v.len() / 2])
        };
        let (a, b) = (median(&runs[0]), median(&runs[1]));
        if label.starts_with("/db") {
            db_rps = b.rps;
        }
        println!(
            "| {label} | {} | {} | {:.0} | {:.0} | {} | {:.2} | {:.2} | {} |",
            pair[0].name,
            pair[1].name,
            a.rps,
            b.rps,
            ratios(&|m| m.rps),
            a.cpu_us_per_req,
            b.cpu_us_per_req,
            ratios(&|m| m.cpu_us_per_req)
        );
    }
    if db_rps > 0.0 {
        fixed_rate_db(&o, [db("require", 18098), db("disable", 18099)], db_rps);
    }
    let _ = std::fs::remove_dir_all(&dir);
    o.footer();
}

/// What one open-loop run measured: server CPU per request, p50 and p99
/// latency (ms), errors.
#[derive(Clone, Copy)]
struct Open {
    cpu_us: f64,
    p50: f64,
    p99: f64,
    errors: f64,
}

/// `/db`, TLS against cleartext, open loop at fixed fractions of the
/// cleartext closed-loop rate `capacity`; rounds alternate the two sides.
fn fixed_rate_db(o: &Opts, pair: [Side; 2], capacity: f64) {
    println!("\n/db at fixed offered rates (tidepool-loadgen, 64 connections, open loop):\n");
    println!("| load | rate | {} CPU us/req | {} CPU us/req | CPU ratio per round (median) | p50 ms (A / B) | p99 ms (A / B) | errors (A / B) |", pair[0].name, pair[1].name);
    println!("|---|---|---|---|---|---|---|---|");
    for load in [0.25, 0.5] {
        let rate = (capacity * load).round();
        let mut runs: [Vec<Open>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..o.repeat {
            for (side, out) in pair.iter().zip(runs.iter_mut()) {
                let addr = side
                    .url
                    .trim_start_matches("http://")
                    .trim_end_matches("/db");
                let server = start_pinned(side.program, &side.args, o.server_cpu, addr);
                let pid = server.child.id();
                loadgen(o.client_cpu, addr, "/db", 64, Some(rate), 1);
                let t0 = cpu_ticks(pid);
                let s = loadgen(o.client_cpu, addr, "/db", 64, Some(rate), o.duration);
                let cpu_us = (cpu_ticks(pid) - t0) as f64 * 1e6 / clock_ticks() as f64;
                out.push(Open {
                    cpu_us: cpu_us / summary_num(&s, &["completed"]).max(1.0),
                    p50: summary_num(&s, &["latency", "p50_ms"]),
                    p99: summary_num(&s, &["latency", "p99_ms"]),
                    errors: summary_num(&s, &["errors"]),
                });
            }
        }
        let mid = |side: usize, f: fn(&Open) -> f64| {
            let mut v: Vec<f64> = runs[side].iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let mut ratios: Vec<f64> = runs[0]
            .iter()
            .zip(&runs[1])
            .map(|(a, b)| a.cpu_us / b.cpu_us)
            .collect();
        ratios.sort_by(f64::total_cmp);
        let list: Vec<String> = ratios.iter().map(|x| format!("{x:.2}")).collect();
        println!(
            "| {:.0}% | {rate:.0}/s | {:.2} | {:.2} | {} ({:.2}x) | {:.2} / {:.2} | {:.2} / {:.2} | {:.0} / {:.0} |",
            load * 100.0,
            mid(0, |r| r.cpu_us),
            mid(1, |r| r.cpu_us),
            list.join(" "),
            ratios[ratios.len() / 2],
            mid(0, |r| r.p50),
            mid(1, |r| r.p50),
            mid(0, |r| r.p99),
            mid(1, |r| r.p99),
            mid(0, |r| r.errors),
            mid(1, |r| r.errors),
        );
    }
}
