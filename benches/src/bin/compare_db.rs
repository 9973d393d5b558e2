//! Side-by-side database comparison: Tidepool's example (`GET /db`,
//! `GET /redis`) against axum + tokio-postgres + deadpool-postgres and
//! redis-rs (multiplexed), on the same ephemeral PostgreSQL and Redis, pool
//! size 8, 64 connections. The app servers are pinned to one CPU; wrk and
//! the databases share the other. Run through `benches/compare-db.sh`.
//!
//! usage: compare_db [--duration SECS] [--repeat N] [--server-cpu N] [--client-cpu N]

use tidepool_benches::{measure, median, pin_pid, print_table, start_pinned, Opts};
use tidepool_testkit::{PgServer, PgUser, RedisServer};

fn main() {
    let o = Opts::from_args();
    let pg = PgServer::start().expect("PostgreSQL for the comparison");
    let redis = RedisServer::start().expect("redis-server for the comparison");
    for pid in [pg.pid(), redis.pid()].into_iter().flatten() {
        pin_pid(pid, o.client_cpu);
    }
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
    let mut rows = Vec::new();
    for (label, path) in [
        ("GET /db, pool 8, 64 connections", "/db"),
        ("GET /redis, 64 connections", "/redis"),
    ] {
        let mut pair = Vec::new();
        for (program, args, port) in [
            (
                "target/release/examples/hello",
                tidepool("127.0.0.1:18082"),
                18082,
            ),
            ("target/release/peer_axum", axum("127.0.0.1:18083"), 18083),
        ] {
            let addr = format!("127.0.0.1:{port}");
            let url = format!("http://{addr}{path}");
            let runs: Vec<_> = (0..o.repeat)
                .map(|_| {
                    let server = start_pinned(program, &args, o.server_cpu, &addr);
                    measure(&server, o.client_cpu, &url, 64, false, o.duration)
                })
                .collect();
            let m = median(&runs);
            eprintln!(
                "{program:32} {label:36} {:>10.0} req/s  p99 {:>8.0} us  {:>6.2} us CPU/req",
                m.rps, m.p99_us, m.cpu_us_per_req
            );
            pair.push(m);
        }
        rows.push((label.to_string(), pair[0].clone(), pair[1].clone()));
    }
    print_table("axum", &rows);
    o.footer();
}
