//! Starts an ephemeral PostgreSQL and redis-server (the test harness's) for
//! manual benchmarking and profiling, prints their URLs, and stops them when
//! its standard input closes or it is interrupted.
//!
//! usage: dbservers [--pin-cpu N]

use std::io::Read;

use tidepool_benches::pin_pid;
use tidepool_testkit::{PgServer, PgUser, RedisServer};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cpu = args
        .iter()
        .position(|a| a == "--pin-cpu")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse::<usize>().expect("--pin-cpu N"));
    let pg = PgServer::start().expect("PostgreSQL");
    let redis = RedisServer::start().expect("redis-server");
    if let Some(cpu) = cpu {
        for pid in [pg.pid(), redis.pid()].into_iter().flatten() {
            pin_pid(pid, cpu);
        }
    }
    println!("PG={}", pg.url(PgUser::Md5));
    println!("REDIS={}", redis.url());
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}
