//! Memory cost of idle keep-alive connections: starts the example server
//! (one worker), opens N connections that each complete one request and
//! then stay idle, and prints the server's RSS growth per connection.
//!
//! usage: idle_memory [--connections N] [--server PATH]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use tidepool_benches::wait_for_port;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let n: usize = arg("--connections").map_or(10_000, |v| v.parse().expect("N"));
    let server = arg("--server").unwrap_or_else(|| "target/release/examples/hello".into());
    let addr = "127.0.0.1:18090";
    let mut child = Command::new(&server)
        .args(["--listen", addr, "--workers", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start server");
    wait_for_port(addr, Duration::from_secs(10));
    // One connection first, so lazily grown structures are in the baseline.
    let mut conns = Vec::with_capacity(n);
    let request = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = [0u8; 512];
    let mut open = |conns: &mut Vec<TcpStream>| {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(request).unwrap();
        let k = s.read(&mut buf).unwrap();
        assert!(buf[..k].starts_with(b"HTTP/1.1 200"));
        conns.push(s);
    };
    open(&mut conns);
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib(child.id());
    for _ in 1..n {
        open(&mut conns);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(child.id());
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / (n - 1) as f64;
    println!(
        "{n} idle keep-alive connections: server RSS {before} KiB -> {after} KiB, {:.0} bytes ({:.2} KiB) per connection",
        per,
        per / 1024.0
    );
    drop(conns);
    let _ = child.kill();
    let _ = child.wait();
}
