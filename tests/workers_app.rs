//! More workers than pool connections, the shape production machines
//! have: 8 and 16 workers on this 2-core machine, with `max_open` 1, 2 and
//! 4 for every pool. Every worker must serve every database route with no
//! error and no request waiting out an acquire timeout.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::App;
use tidepool_testkit::{PgServer, PgUser, RedisServer};

const PATHS: [&str; 4] = ["/db", "/queries?n=3", "/redis", "/cache/w"];

/// One request per path on each of `conns` connections made at once, from
/// as many threads: SO_REUSEPORT spreads the connections over the workers.
/// Returns (status, path, elapsed) of every request.
fn burst(app: &App, conns: usize) -> Vec<(u16, &'static str, Duration)> {
    let addr = app.addr;
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut out = Vec::new();
                for path in PATHS {
                    let t = Instant::now();
                    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                    out.push((read_status(&mut s), path, t.elapsed()));
                }
                out
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

/// Reads one response (Content-Length framed) and returns its status.
fn read_status(s: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed mid-head");
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    head[9..12].parse().unwrap()
}

fn check(workers: usize, max_open: usize) {
    let pg = PgServer::shared();
    let redis = RedisServer::shared();
    let n = max_open.to_string();
    let app = App::start(&[
        "--workers",
        &workers.to_string(),
        "--no-pin",
        "--pg",
        &pg.url(PgUser::Md5),
        "--pg-max-open",
        &n,
        "--pg-shared-max-open",
        &n,
        "--redis",
        &redis.url(),
        "--redis-max-open",
        &n,
    ]);
    assert_eq!(app.request("PUT", "/cache/w?ttl=60", b"v").0, 204);
    // Two bursts: the first finds cold shards, the second shards that
    // lent and borrowed capacity.
    for round in 0..2 {
        let results = burst(&app, workers * 4);
        let bad: Vec<_> = results
            .iter()
            .filter(|(status, _, t)| *status != 200 || *t > Duration::from_secs(1))
            .collect();
        assert!(
            bad.is_empty(),
            "{workers} workers, max_open {max_open}, round {round}: {} of {} requests failed \
             or took over 1 s: {:?}",
            bad.len(),
            results.len(),
            &bad[..bad.len().min(8)]
        );
    }
    assert!(app.stop().success());
}

/// One test, so the servers run one after another (each creates the
/// example's schema in the shared database at startup).
///
/// Before statements were delegated, a worker without a connection waited
/// for capacity to walk over from an idle one (~250 ms a step), and some
/// requests here took 1.1-1.6 s (8 workers with max_open 1 or 2).
#[test]
fn eight_and_sixteen_workers_serve_every_route() {
    for (workers, max_open) in [(8, 1), (8, 2), (8, 4), (16, 1), (16, 4)] {
        check(workers, max_open);
    }
}
