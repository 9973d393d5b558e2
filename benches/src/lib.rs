//! Helpers shared by the side-by-side comparison binaries: process CPU
//! accounting, wrk output parsing, medians.

use std::time::{Duration, Instant};

/// Options shared by the comparison binaries.
pub struct Opts {
    pub duration: u64,
    pub repeat: usize,
    pub server_cpu: usize,
    pub client_cpu: usize,
    /// `--io BACKEND`: Tidepool's example runs on this I/O backend
    /// (`io_uring` or `epoll`; default: what it probes).
    pub io: Option<String>,
    /// `--loads 25,50`: the loads (percent of capacity) a fixed-rate
    /// runner offers; empty for its own.
    pub loads: Vec<f64>,
}

impl Opts {
    pub fn from_args() -> Opts {
        let mut o = Opts {
            duration: 10,
            repeat: 3,
            server_cpu: 1,
            client_cpu: 0,
            io: None,
            loads: Vec::new(),
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        for pair in args.chunks(2) {
            let v = pair.get(1).map(String::as_str).unwrap_or("");
            let n = || {
                v.parse()
                    .unwrap_or_else(|_| panic!("{} needs a number", pair[0]))
            };
            match pair[0].as_str() {
                "--duration" => o.duration = n() as u64,
                "--repeat" => o.repeat = n(),
                "--server-cpu" => o.server_cpu = n(),
                "--client-cpu" => o.client_cpu = n(),
                "--io" => o.io = Some(v.to_string()),
                "--loads" => {
                    o.loads = v
                        .split(',')
                        .map(|p| {
                            p.parse::<f64>().expect("--loads takes percents: 25,50,80") / 100.0
                        })
                        .collect()
                }
                other => panic!("unknown argument {other}"),
            }
        }
        o
    }

    /// Arguments that put Tidepool's example on the chosen backend.
    pub fn io_args(&self) -> Vec<String> {
        match &self.io {
            Some(b) => vec!["--io".into(), b.clone()],
            None => Vec::new(),
        }
    }

    pub fn footer(&self) {
        println!(
            "\n(median of {} runs x {} s each; server pinned to CPU {}, wrk -t1 pinned to CPU {})",
            self.repeat, self.duration, self.server_cpu, self.client_cpu
        );
    }
}

/// The open-loop generator's binary (`cargo build --release -p tidepool-loadgen`).
pub const LOADGEN: &str = "target/release/tidepool-loadgen";

/// Runs the generator, pinned to `cpu`, against `addr` for `secs` seconds
/// of GET `path` over `connections`; `rate` None is closed loop. Returns
/// its summary (`summary.json`).
pub fn loadgen(
    cpu: usize,
    addr: &str,
    path: &str,
    connections: usize,
    rate: Option<f64>,
    secs: u64,
) -> serde_json::Value {
    let out = std::env::temp_dir().join(format!("tidepool-loadgen-{}", std::process::id()));
    let rate = rate.map_or("max".to_string(), |r| format!("{r:.0}"));
    let status = std::process::Command::new(LOADGEN)
        .args(["run", "--target", &format!("http://{addr}")])
        .args(["--rate", &rate, "--duration", &format!("{secs}s")])
        .args(["--path", path, "--connections", &connections.to_string()])
        .args(["--cpus", &cpu.to_string(), "--no-metrics", "--quiet"])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {LOADGEN}: {e}"));
    assert!(status.success(), "{LOADGEN} failed: {status}");
    let text = std::fs::read_to_string(out.join("summary.json")).expect("summary.json");
    // Only the summary is read; the run's report is not left behind.
    let _ = std::fs::remove_dir_all(&out);
    serde_json::from_str(&text).expect("summary is JSON")
}

/// The number at `path` in a generator summary.
pub fn summary_num(v: &serde_json::Value, path: &[&str]) -> f64 {
    let mut v = v;
    for p in path {
        v = &v[p];
    }
    v.as_f64()
        .unwrap_or_else(|| panic!("summary has no number at {path:?}"))
}

/// An ephemeral PostgreSQL and redis-server for a database comparison,
/// pinned to the client's CPU so the app server keeps its own.
pub fn databases(o: &Opts) -> (tidepool_testkit::PgServer, tidepool_testkit::RedisServer) {
    let pg = tidepool_testkit::PgServer::start().expect("PostgreSQL for the comparison");
    let redis = tidepool_testkit::RedisServer::start().expect("redis-server for the comparison");
    for pid in [pg.pid(), redis.pid()].into_iter().flatten() {
        pin_pid(pid, o.client_cpu);
    }
    (pg, redis)
}

/// Sets TCP_NODELAY on a socket the floor responders just accepted
/// (best effort: a floor that cannot set it still answers).
pub fn set_nodelay(fd: i32) {
    let one: libc::c_int = 1;
    // SAFETY: passes a live c_int of the size given; `fd` is the caller's
    // open socket (setsockopt touches nothing else).
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// The floor responders' canned answer (`floor_uring`, `floor_epoll`).
pub const FLOOR_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: floor\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nDate: Wed, 02 Dec 2026 00:00:00 GMT\r\n\r\nHello, World!";

/// Counts request ends (`\r\n\r\n`) in `data`, carrying a partial match
/// across reads: all the parsing the floor responders do. The search is
/// memchr's SIMD `memmem`: a byte loop here cost the floor more user time
/// than Tidepool's whole parser.
pub fn count_ends(data: &[u8], matched: &mut usize) -> usize {
    const END: &[u8] = b"\r\n\r\n";
    let mut n = 0;
    let mut i = 0;
    // A match begun at the end of the last read: at most three more bytes.
    while *matched > 0 {
        let Some(&b) = data.get(i) else {
            return 0;
        };
        if b != END[*matched] {
            *matched = 0;
            break;
        }
        i += 1;
        *matched += 1;
        if *matched == END.len() {
            *matched = 0;
            n = 1;
        }
    }
    let rest = &data[i..];
    let mut tail = 0;
    for at in memchr::memmem::find_iter(rest, END) {
        n += 1;
        tail = at + END.len();
    }
    // A match begun at the end of this read, if any.
    let tail = &rest[tail..];
    *matched = (1..END.len())
        .rev()
        .find(|&k| tail.ends_with(&END[..k]))
        .unwrap_or(0);
    n
}

/// One measured run.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub rps: f64,
    pub p99_us: f64,
    pub cpu_us_per_req: f64,
    /// The kernel's part of `cpu_us_per_req` (stime); the rest is the
    /// server's own code (utime).
    pub kernel_us_per_req: f64,
    /// Server CPU time / wall time (1.0 = one core busy).
    pub cpu_share: f64,
}

impl Measured {
    /// The server's own code's part of `cpu_us_per_req` (utime).
    pub fn user_us_per_req(&self) -> f64 {
        self.cpu_us_per_req - self.kernel_us_per_req
    }
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let (user, kernel) = cpu_ticks_split(pid);
    user + kernel
}

/// (utime, stime) of a process, in clock ticks: its own code's CPU time
/// and the kernel's on its behalf.
pub fn cpu_ticks_split(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The command name may contain spaces: fields count from after ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')' the fields start at #3 (state); utime is #14, stime #15.
    (f[11].parse().unwrap(), f[12].parse().unwrap())
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

/// A server under test, started as a child process.
pub struct Server {
    pub child: std::process::Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `program args` pinned to `cpu` and waits until `addr` accepts.
pub fn start_pinned(program: &str, args: &[String], cpu: usize, addr: &str) -> Server {
    let child = std::process::Command::new("taskset")
        .arg("-c")
        .arg(cpu.to_string())
        .arg(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    wait_for_port(addr, Duration::from_secs(30));
    Server { child }
}

/// Pins an already running process (and the children it forks later) to `cpu`.
pub fn pin_pid(pid: u32, cpu: usize) {
    let _ = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status();
}

/// wrk's script for the pipelined scenario (16 requests per write); also
/// what `benches/icount-server.sh --pipeline` runs.
const PIPELINE_LUA: &str = include_str!("../pipeline.lua");

/// Runs `wrk -t1` pinned to `cpu`; (req/s, p99 us, requests).
pub fn run_wrk(cpu: usize, url: &str, conns: usize, pipelined: bool, secs: u64) -> (f64, f64, u64) {
    let mut cmd = std::process::Command::new("taskset");
    cmd.arg("-c")
        .arg(cpu.to_string())
        .arg("wrk")
        .args(["-t1", "--latency"])
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"));
    let script = pipelined.then(|| {
        let script =
            std::env::temp_dir().join(format!("tidepool-pipeline-{}.lua", std::process::id()));
        std::fs::write(&script, PIPELINE_LUA).expect("write lua");
        cmd.arg("-s").arg(&script);
        script
    });
    cmd.arg(url);
    let out = cmd.output().expect("wrk (apt-get install wrk)");
    if let Some(script) = script {
        let _ = std::fs::remove_file(script);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // taskset runs whether or not wrk exists: say which one is missing.
    parse_wrk(&text).unwrap_or_else(|| {
        panic!(
            "unexpected wrk output ({}; is wrk installed? apt-get install -y wrk):\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// One measured wrk run against `server` (after a 1 s warm-up).
pub fn measure(
    server: &Server,
    cpu: usize,
    url: &str,
    conns: usize,
    pipelined: bool,
    secs: u64,
) -> Measured {
    let pid = server.child.id();
    run_wrk(cpu, url, conns, pipelined, 1);
    let (u0, k0) = cpu_ticks_split(pid);
    let started = Instant::now();
    let (rps, p99_us, requests) = run_wrk(cpu, url, conns, pipelined, secs);
    let (u1, k1) = cpu_ticks_split(pid);
    let us = |ticks: u64| ticks as f64 * 1e6 / clock_ticks() as f64;
    let cpu_us = us(u1 - u0 + k1 - k0);
    Measured {
        rps,
        p99_us,
        cpu_us_per_req: cpu_us / requests.max(1) as f64,
        kernel_us_per_req: us(k1 - k0) / requests.max(1) as f64,
        cpu_share: cpu_us / started.elapsed().as_micros() as f64,
    }
}

/// One scenario's outcome: each contestant's median run, and the
/// (req/s, CPU per request) ratios of every round's pair.
pub struct Row {
    pub label: String,
    pub tidepool: Measured,
    pub peer: Measured,
    pub paired: Vec<(f64, f64)>,
    /// Per round: (kernel, user) CPU per request, Tidepool's over the peer's.
    pub split: Vec<(f64, f64)>,
}

/// Per-round ratios and their median: "0.98 1.02 1.01 (1.01x)".
fn per_round(v: Vec<f64>) -> String {
    let list: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
    format!("{} ({:.2}x)", list.join(" "), median_of(v))
}

fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Prints a comparison table: one row per scenario, Tidepool vs the peer,
/// then the per-round ratios, whose medians say more than the ratio of
/// medians when the machine's speed drifts.
pub fn print_table(peer: &str, rows: &[Row]) {
    println!(
        "\n| scenario | tidepool req/s | {peer} req/s | ratio | tidepool p99 | {peer} p99 | tidepool CPU us/req | {peer} CPU us/req | CPU ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let (t, h) = (&r.tidepool, &r.peer);
        println!(
            "| {} | {:.0} | {:.0} | {:.2}x | {:.0} us | {:.0} us | {:.2} | {:.2} | {:.2}x |",
            r.label,
            t.rps,
            h.rps,
            t.rps / h.rps,
            t.p99_us,
            h.p99_us,
            t.cpu_us_per_req,
            h.cpu_us_per_req,
            t.cpu_us_per_req / h.cpu_us_per_req
        );
    }
    println!("\n| scenario | req/s ratio per round (median) | CPU ratio per round (median) |");
    println!("|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} |",
            r.label,
            per_round(r.paired.iter().map(|p| p.0).collect()),
            per_round(r.paired.iter().map(|p| p.1).collect())
        );
    }
    // Where the CPU goes: the kernel's work (syscalls, TCP, the ring) and
    // the server's own code, each as a ratio per round.
    println!("\n| scenario | tidepool kernel / user us/req | {peer} kernel / user us/req | kernel ratio per round (median) | user ratio per round (median) |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.2} / {:.2} | {:.2} / {:.2} | {} | {} |",
            r.label,
            r.tidepool.kernel_us_per_req,
            r.tidepool.user_us_per_req(),
            r.peer.kernel_us_per_req,
            r.peer.user_us_per_req(),
            per_round(r.split.iter().map(|p| p.0).collect()),
            per_round(r.split.iter().map(|p| p.1).collect())
        );
    }
}

/// A server program and its arguments, listening on `addr`.
pub struct Contestant {
    pub program: &'static str,
    pub args: Vec<String>,
    pub addr: String,
}

/// Measures both contestants on `path` in alternating rounds (A B A B ...),
/// so a machine whose speed drifts during the run (a shared VM does) weighs
/// on both alike; prints and returns each one's median run.
pub fn compare_pair(
    o: &Opts,
    label: &str,
    pair: &[Contestant; 2],
    path: &str,
    conns: usize,
    pipelined: bool,
) -> Row {
    let mut runs: [Vec<Measured>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..o.repeat {
        for (c, out) in pair.iter().zip(runs.iter_mut()) {
            let server = start_pinned(c.program, &c.args, o.server_cpu, &c.addr);
            let url = format!("http://{}{path}", c.addr);
            out.push(measure(
                &server,
                o.client_cpu,
                &url,
                conns,
                pipelined,
                o.duration,
            ));
        }
    }
    let paired = runs[0]
        .iter()
        .zip(&runs[1])
        .map(|(a, b)| (a.rps / b.rps, a.cpu_us_per_req / b.cpu_us_per_req))
        .collect();
    let split = runs[0]
        .iter()
        .zip(&runs[1])
        .map(|(a, b)| {
            (
                a.kernel_us_per_req / b.kernel_us_per_req,
                a.user_us_per_req() / b.user_us_per_req(),
            )
        })
        .collect();
    let medians = [median(&runs[0]), median(&runs[1])];
    for (c, m) in pair.iter().zip(&medians) {
        eprintln!(
            "{:32} {label:42} {:>10.0} req/s  p99 {:>8.0} us  {:>6.2} us CPU/req",
            c.program, m.rps, m.p99_us, m.cpu_us_per_req
        );
    }
    let [tidepool, peer] = medians;
    Row {
        label: label.to_string(),
        tidepool,
        peer,
        paired,
        split,
    }
}

/// The run with the median req/s.
pub fn median(runs: &[Measured]) -> Measured {
    let mut v = runs.to_vec();
    v.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    v[v.len() / 2].clone()
}

/// The hyper peers' handler: `GET /plaintext` as Tidepool's example
/// answers it, 404 otherwise.
pub async fn hyper_plaintext(
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    use bytes::Bytes;
    use http_body_util::Full;
    let resp = match req.uri().path() {
        "/plaintext" => hyper::Response::builder()
            .header("content-type", "text/plain")
            .header("server", "hyper")
            .body(Full::new(Bytes::from_static(b"Hello, World!"))),
        _ => hyper::Response::builder()
            .status(404)
            .body(Full::new(Bytes::new())),
    };
    Ok(resp.expect("static response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ends_are_counted_across_reads() {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut m = 0;
        assert_eq!(count_ends(&req.repeat(3), &mut m), 3);
        let (a, b) = req.split_at(req.len() - 2);
        assert_eq!(count_ends(a, &mut m), 0);
        assert_eq!(count_ends(b, &mut m), 1);
        assert_eq!(count_ends(b"\r\n\r\r\n\r\n", &mut m), 1);
    }

    /// Byte by byte, the obvious way: what `count_ends` must agree with.
    fn count_ends_bytewise(data: &[u8], matched: &mut usize) -> usize {
        const END: &[u8] = b"\r\n\r\n";
        let mut n = 0;
        for &b in data {
            if b == END[*matched] {
                *matched += 1;
                if *matched == END.len() {
                    n += 1;
                    *matched = 0;
                }
            } else {
                *matched = usize::from(b == END[0]);
            }
        }
        n
    }

    #[test]
    fn request_ends_agree_with_a_byte_loop_at_every_split() {
        // Streams of CR, LF and 'x' in every split into reads of 1..=7 bytes.
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2_000 {
            let len = (next() % 64) as usize;
            let data: Vec<u8> = (0..len)
                .map(|_| [b'\r', b'\n', b'x'][(next() % 3) as usize])
                .collect();
            let (mut a, mut b) = (0, 0);
            let (mut na, mut nb) = (0, 0);
            let mut at = 0;
            while at < data.len() {
                let step = (1 + next() % 7) as usize;
                let read = &data[at..(at + step).min(data.len())];
                na += count_ends(read, &mut a);
                nb += count_ends_bytewise(read, &mut b);
                assert_eq!((na, a), (nb, b), "{data:?} at {at}");
                at += step;
            }
        }
    }

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
