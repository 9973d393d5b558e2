//! Side-by-side plaintext comparison: Tidepool's example server vs hyper,
//! then vs the floor (`floor_uring`, a bare io_uring responder).
//!
//! Each server runs alone, pinned to one CPU, with wrk pinned to another;
//! scenarios: 64 and 256 keep-alive connections, and 256 connections
//! pipelined x16. For each it prints req/s, p99 latency and the server's CPU
//! microseconds per request (utime+stime from /proc/PID/stat over the run),
//! then the ratios. Run through `benches/compare-http.sh`, which builds both.
//!
//! usage: compare_http [--duration SECS] [--repeat N] [--server-cpu N] [--client-cpu N]
//!                     [--io io_uring|epoll]

use tidepool_benches::{compare_pair, print_table, Contestant, Opts};

fn main() {
    let o = Opts::from_args();
    let scenarios: [(&str, usize, bool); 3] = [
        ("plaintext, 64 connections", 64, false),
        ("plaintext, 256 connections", 256, false),
        ("plaintext pipelined x16, 256 connections", 256, true),
    ];
    let tidepool = |addr: &str| {
        let mut v = vec![
            "--listen".to_string(),
            addr.to_string(),
            "--workers".into(),
            "1".into(),
        ];
        v.extend(o.io_args());
        v
    };
    let hyper = |addr: &str| vec![addr.to_string()];
    let pair = [
        Contestant {
            program: "target/release/examples/hello",
            args: tidepool("127.0.0.1:18080"),
            addr: "127.0.0.1:18080".into(),
        },
        Contestant {
            program: "target/release/peer_hyper",
            args: hyper("127.0.0.1:18081"),
            addr: "127.0.0.1:18081".into(),
        },
    ];
    let run = |pair: &[Contestant; 2], peer: &str| {
        let rows: Vec<_> = scenarios
            .iter()
            .map(|&(label, conns, pipelined)| {
                compare_pair(&o, label, pair, "/plaintext", conns, pipelined)
            })
            .collect();
        print_table(peer, &rows);
    };
    run(&pair, "hyper");
    // The floor: a bare io_uring responder that only counts request ends
    // and writes a canned response; what Tidepool spends beyond it is the
    // cost of being a real server.
    let [tidepool, _] = pair;
    let floor = Contestant {
        program: "target/release/floor_uring",
        args: vec!["127.0.0.1:18082".into()],
        addr: "127.0.0.1:18082".into(),
    };
    run(&[tidepool, floor], "floor");
    o.footer();
}
