//! Tidepool on epoll against Tidepool on io_uring, the same example binary
//! with `--io epoll` and `--io io_uring`: plaintext (64 and 256 keep-alive
//! connections, 256 pipelined x16), then `GET /db` and `GET /redis` on an
//! ephemeral PostgreSQL and Redis; then the bare epoll responder against
//! the bare io_uring one (the floor of the first ratio). Alternating rounds;
//! the ratios are epoll / io_uring (req/s, and server CPU per request),
//! paired per round.
//! The app server is pinned to one CPU; wrk and the databases share the
//! other. Run through `benches/compare-io.sh`.
//!
//! usage: compare_io [--duration SECS] [--repeat N] [--server-cpu N] [--client-cpu N]

use tidepool_benches::{compare_pair, databases, print_table, Contestant, Opts};
use tidepool_testkit::PgUser;

fn main() {
    let o = Opts::from_args();
    let (pg, redis) = databases(&o);
    let (pg_url, redis_url) = (pg.url(PgUser::Md5), redis.url());
    let hello = |addr: &str, io: &str| -> Vec<String> {
        [
            "--listen",
            addr,
            "--workers",
            "1",
            "--io",
            io,
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
    let pair = [
        Contestant {
            program: "target/release/examples/hello",
            args: hello("127.0.0.1:18084", "epoll"),
            addr: "127.0.0.1:18084".into(),
        },
        Contestant {
            program: "target/release/examples/hello",
            args: hello("127.0.0.1:18085", "io_uring"),
            addr: "127.0.0.1:18085".into(),
        },
    ];
    let mut rows = Vec::new();
    for (label, path, conns, pipelined) in [
        ("plaintext, 64 connections", "/plaintext", 64, false),
        ("plaintext, 256 connections", "/plaintext", 256, false),
        (
            "plaintext pipelined x16, 256 connections",
            "/plaintext",
            256,
            true,
        ),
        ("GET /db, pool 8, 64 connections", "/db", 64, false),
        ("GET /redis, 64 connections", "/redis", 64, false),
    ] {
        rows.push(compare_pair(&o, label, &pair, path, conns, pipelined));
    }
    println!("\n(\"tidepool\" is the epoll backend, the peer the io_uring backend)");
    print_table("io_uring", &rows);
    // The same question for bare responders: what epoll costs any server
    // against io_uring, below which the backend's ratio cannot go.
    let floors = [
        Contestant {
            program: "target/release/floor_epoll",
            args: vec!["127.0.0.1:18086".into()],
            addr: "127.0.0.1:18086".into(),
        },
        Contestant {
            program: "target/release/floor_uring",
            args: vec!["127.0.0.1:18087".into()],
            addr: "127.0.0.1:18087".into(),
        },
    ];
    let rows: Vec<_> = [
        ("plaintext, 64 connections", 64, false),
        ("plaintext, 256 connections", 256, false),
        ("plaintext pipelined x16, 256 connections", 256, true),
    ]
    .iter()
    .map(|&(label, conns, pipelined)| {
        compare_pair(&o, label, &floors, "/plaintext", conns, pipelined)
    })
    .collect();
    println!("\n(bare responders: \"tidepool\" is floor_epoll, the peer floor_uring)");
    print_table("floor_uring", &rows);
    o.footer();
}
