//! Side-by-side database comparison: Tidepool's example (`GET /db`,
//! `GET /redis`) against axum + tokio-postgres + deadpool-postgres and
//! redis-rs (multiplexed), on the same ephemeral PostgreSQL and Redis, pool
//! size 8, 64 connections. The app servers are pinned to one CPU; wrk and
//! the databases share the other. Run through `benches/compare-db.sh`.
//!
//! usage: compare_db [--duration SECS] [--repeat N] [--server-cpu N] [--client-cpu N]

use tidepool_benches::{compare_pair, databases, print_table, Contestant, Opts};
use tidepool_testkit::PgUser;

fn main() {
    let o = Opts::from_args();
    let (pg, redis) = databases(&o);
    let pg_url = pg.url(PgUser::Md5);
    let redis_url = redis.url();
    let tidepool = |addr: &str| -> Vec<String> {
        [
            "--listen",
            addr,
            "--workers",
            "1",
            "--pg",
            &pg_url,
            "--pg-max-open",
            "8",
            "--pg-shared-max-open",
            "8",
            "--redis",
            &redis_url,
            "--redis-max-open",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let axum = |addr: &str| -> Vec<String> {
        [
            addr,
            "--pg",
            &pg_url,
            "--pg-max-open",
            "8",
            "--redis",
            &redis_url,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let pair = [
        Contestant {
            program: "target/release/examples/hello",
            args: tidepool("127.0.0.1:18082"),
            addr: "127.0.0.1:18082".into(),
        },
        Contestant {
            program: "target/release/peer_axum",
            args: axum("127.0.0.1:18083"),
            addr: "127.0.0.1:18083".into(),
        },
    ];
    let mut rows = Vec::new();
    for (label, path) in [
        ("GET /db, pool 8, 64 connections", "/db"),
        ("GET /redis, 64 connections", "/redis"),
    ] {
        rows.push(compare_pair(&o, label, &pair, path, 64, false));
    }
    print_table("axum", &rows);
    o.footer();
}
