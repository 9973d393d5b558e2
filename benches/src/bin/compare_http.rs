//! Side-by-side plaintext comparison: Tidepool's example server vs hyper.
//!
//! Each server runs alone, pinned to one CPU, with wrk pinned to another;
//! scenarios: 64 and 256 keep-alive connections, and 256 connections
//! pipelined x16. For each it prints req/s, p99 latency and the server's CPU
//! microseconds per request (utime+stime from /proc/PID/stat over the run),
//! then the ratios. Run through `benches/compare-http.sh`, which builds both.
//!
//! usage: compare_http [--duration SECS] [--repeat N] [--server-cpu N] [--client-cpu N]

use tidepool_benches::{measure, median, print_table, start_pinned, Opts};

fn main() {
    let o = Opts::from_args();
    let scenarios: [(&str, usize, bool); 3] = [
        ("plaintext, 64 connections", 64, false),
        ("plaintext, 256 connections", 256, false),
        ("plaintext pipelined x16, 256 connections", 256, true),
    ];
    let tidepool = |addr: &str| {
        vec![
            "--listen".to_string(),
            addr.to_string(),
            "--workers".into(),
            "1".into(),
        ]
    };
    let hyper = |addr: &str| vec![addr.to_string()];
    let mut rows = Vec::new();
    for (label, conns, pipelined) in scenarios {
        let mut pair = Vec::new();
        for (program, args, port) in [
            (
                "target/release/examples/hello",
                tidepool("127.0.0.1:18080"),
                18080,
            ),
            ("target/release/peer_hyper", hyper("127.0.0.1:18081"), 18081),
        ] {
            let addr = format!("127.0.0.1:{port}");
            let url = format!("http://{addr}/plaintext");
            let runs: Vec<_> = (0..o.repeat)
                .map(|_| {
                    let server = start_pinned(program, &args, o.server_cpu, &addr);
                    measure(&server, o.client_cpu, &url, conns, pipelined, o.duration)
                })
                .collect();
            let m = median(&runs);
            eprintln!(
                "{program:32} {label:42} {:>10.0} req/s  p99 {:>8.0} us  {:>6.2} us CPU/req",
                m.rps, m.p99_us, m.cpu_us_per_req
            );
            pair.push(m);
        }
        rows.push((label.to_string(), pair[0].clone(), pair[1].clone()));
    }
    print_table("hyper", &rows);
    o.footer();
}
