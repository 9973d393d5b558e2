//! Helpers shared by the side-by-side comparison binaries: process CPU
//! accounting, wrk output parsing, medians.

use std::time::{Duration, Instant};

/// One measured run.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub rps: f64,
    pub p99_us: f64,
    pub cpu_us_per_req: f64,
    /// Server CPU time / wall time (1.0 = one core busy).
    pub cpu_share: f64,
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The command name may contain spaces: fields count from after ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')' the fields start at #3 (state); utime is #14, stime #15.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Clock ticks per second (for `cpu_ticks`).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Waits until a TCP connect to `addr` succeeds.
pub fn wait_for_port(addr: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn parse_duration_us(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v,
        "ms" => v * 1e3,
        "s" => v * 1e6,
        "m" => v * 60e6,
        _ => return None,
    })
}

/// (req/s, p99 in us, total requests) from `wrk --latency` output.
pub fn parse_wrk(text: &str) -> Option<(f64, f64, u64)> {
    let mut rps = None;
    let mut p99 = None;
    let mut total = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            rps = v.trim().parse().ok();
        } else if let Some(v) = t.strip_prefix("99%") {
            p99 = parse_duration_us(v.trim());
        } else if t.contains("requests in") {
            total = t.split_whitespace().next()?.parse().ok();
        }
    }
    Some((rps?, p99?, total?))
}

/// The run with the median req/s.
pub fn median(runs: &[Measured]) -> Measured {
    let mut v = runs.to_vec();
    v.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    v[v.len() / 2].clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let out = "Running 5s test @ http://127.0.0.1:8080/plaintext\n  1 threads and 64 connections\n\
  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   488.40us  380.58us  11.24ms   96.47%\n\
  Latency Distribution\n     50%  420.00us\n     75%  500.00us\n     90%  600.00us\n     99%    1.50ms\n\
  395262 requests in 5.00s, 48.63MB read\nRequests/sec:  79052.50\nTransfer/sec:      9.73MB\n";
        let (rps, p99, total) = parse_wrk(out).unwrap();
        assert_eq!(rps, 79052.50);
        assert_eq!(p99, 1500.0);
        assert_eq!(total, 395262);
    }

    #[test]
    fn reads_own_cpu_ticks() {
        let t = cpu_ticks(std::process::id());
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(cpu_ticks(std::process::id()) >= t);
    }
}
