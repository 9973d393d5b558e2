//! What delegating statements between workers costs: the example with 2
//! workers on one CPU serving `GET /db` and `GET /redis`, with one shared
//! PostgreSQL connection and one Redis connection for the process (one
//! worker owns each and the other delegates to it) against two of each
//! (every worker has its own). Alternating rounds, paired ratios
//! (delegating / own connections). Run through
//! `benches/compare-delegation.sh`.
//!
//! usage: compare_delegation [--duration SECS] [--repeat N] [--server-cpu N] [--client-cpu N]

use tidepool_benches::{compare_pair, databases, print_table, Contestant, Opts};
use tidepool_testkit::PgUser;

fn main() {
    let o = Opts::from_args();
    let (pg, redis) = databases(&o);
    let (pg_url, redis_url) = (pg.url(PgUser::Md5), redis.url());
    let hello = |addr: &str, connections: &str| -> Vec<String> {
        let mut v: Vec<String> = [
            "--listen",
            addr,
            "--workers",
            "2",
            "--pg",
            &pg_url,
            "--pg-shared-max-open",
            connections,
            "--redis",
            &redis_url,
            "--redis-max-open",
            connections,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(o.io_args());
        v
    };
    let pair = [
        Contestant {
            program: "target/release/examples/hello",
            args: hello("127.0.0.1:18088", "1"),
            addr: "127.0.0.1:18088".into(),
        },
        Contestant {
            program: "target/release/examples/hello",
            args: hello("127.0.0.1:18089", "2"),
            addr: "127.0.0.1:18089".into(),
        },
    ];
    let rows: Vec<_> = [
        ("GET /db, 2 workers, 64 connections", "/db"),
        ("GET /redis, 2 workers, 64 connections", "/redis"),
    ]
    .iter()
    .map(|&(label, path)| compare_pair(&o, label, &pair, path, 64, false))
    .collect();
    println!(
        "\n(\"tidepool\": 1 connection for 2 workers, one delegating; the peer: 2 connections)"
    );
    print_table("own connections", &rows);
    o.footer();
}
