//! Side-by-side plaintext comparison: Tidepool's example server vs hyper.
//!
//! Each server runs alone, pinned to one CPU, with wrk pinned to another;
//! scenarios: 64 and 256 keep-alive connections, and 256 connections
//! pipelined x16. For each it prints req/s, p99 latency and the server's CPU
//! microseconds per request (utime+stime from /proc/PID/stat over the run),
//! then the ratios. Run through `benches/compare-http.sh`, which builds both.
//!
//! usage: compare_http [--duration SECS] [--repeat N] [--server-cpu N] [--client-cpu N]
//!                     [--tidepool PATH] [--hyper PATH]

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tidepool_benches::{cpu_ticks, median, parse_wrk, wait_for_port, Measured};

struct Opts {
    duration: u64,
    repeat: usize,
    server_cpu: usize,
    client_cpu: usize,
    tidepool: String,
    hyper: String,
}

fn opts() -> Opts {
    let mut o = Opts {
        duration: 10,
        repeat: 3,
        server_cpu: 1,
        client_cpu: 0,
        tidepool: "target/release/examples/hello".into(),
        hyper: "target/release/peer_hyper".into(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--duration" => o.duration = v.parse().expect("--duration SECS"),
            "--repeat" => o.repeat = v.parse().expect("--repeat N"),
            "--server-cpu" => o.server_cpu = v.parse().expect("--server-cpu N"),
            "--client-cpu" => o.client_cpu = v.parse().expect("--client-cpu N"),
            "--tidepool" => o.tidepool = v,
            "--hyper" => o.hyper = v,
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    o
}

const PIPELINE_LUA: &str = r#"
init = function(args)
  local r = {}
  for i = 1, 16 do r[i] = wrk.format(nil, "/plaintext") end
  req = table.concat(r)
end
request = function() return req end
"#;

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(name: &str, path: &str, cpu: usize, port: u16) -> Server {
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(cpu.to_string()).arg(path);
    if name == "tidepool" {
        cmd.args(["--listen", &addr, "--workers", "1"]);
    } else {
        cmd.arg(&addr);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {path}: {e} (build it first: benches/compare-http.sh)"));
    wait_for_port(&addr, Duration::from_secs(10));
    Server { child }
}

fn run_wrk(o: &Opts, port: u16, conns: usize, pipelined: bool, secs: u64) -> (f64, f64, u64) {
    let url = format!("http://127.0.0.1:{port}/plaintext");
    let mut cmd = Command::new("taskset");
    cmd.arg("-c")
        .arg(o.client_cpu.to_string())
        .arg("wrk")
        .args(["-t1", "--latency"])
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"));
    let script = std::env::temp_dir().join("tidepool-pipeline.lua");
    if pipelined {
        std::fs::File::create(&script)
            .and_then(|mut f| f.write_all(PIPELINE_LUA.as_bytes()))
            .expect("write lua");
        cmd.arg("-s").arg(&script);
    }
    cmd.arg(&url);
    let out = cmd.output().expect("wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).unwrap_or_else(|| panic!("unexpected wrk output:\n{text}"))
}

fn main() {
    let o = opts();
    let scenarios: [(&str, usize, bool); 3] = [
        ("plaintext, 64 connections", 64, false),
        ("plaintext, 256 connections", 256, false),
        ("plaintext pipelined x16, 256 connections", 256, true),
    ];
    let servers = [("tidepool", o.tidepool.clone(), 18080u16), ("hyper", o.hyper.clone(), 18081u16)];
    let mut results: Vec<Vec<Measured>> = vec![Vec::new(); scenarios.len()];
    for (name, path, port) in &servers {
        for (si, (label, conns, pipelined)) in scenarios.iter().enumerate() {
            let mut runs = Vec::new();
            for _ in 0..o.repeat {
                let server = start(name, path, o.server_cpu, *port);
                let pid = server.child.id();
                // Warm-up: connections open, caches warm.
                run_wrk(&o, *port, *conns, *pipelined, 1);
                let t0 = cpu_ticks(pid);
                let started = Instant::now();
                let (rps, p99_us, requests) = run_wrk(&o, *port, *conns, *pipelined, o.duration);
                let ticks = cpu_ticks(pid) - t0;
                let elapsed = started.elapsed();
                let cpu_us = ticks as f64 * 1e6 / tidepool_benches::clock_ticks() as f64;
                runs.push(Measured {
                    rps,
                    p99_us,
                    cpu_us_per_req: cpu_us / requests.max(1) as f64,
                    cpu_share: cpu_us / elapsed.as_micros() as f64,
                });
                drop(server);
            }
            let m = median(&runs);
            eprintln!(
                "{name:9} {label:42} {:>10.0} req/s  p99 {:>8.0} us  {:>6.2} us CPU/req",
                m.rps, m.p99_us, m.cpu_us_per_req
            );
            results[si].push(m);
        }
    }
    println!(
        "\n| scenario | tidepool req/s | hyper req/s | ratio | tidepool p99 | hyper p99 | tidepool CPU us/req | hyper CPU us/req | CPU ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (si, (label, _, _)) in scenarios.iter().enumerate() {
        let (t, h) = (&results[si][0], &results[si][1]);
        println!(
            "| {label} | {:.0} | {:.0} | {:.2}x | {:.0} us | {:.0} us | {:.2} | {:.2} | {:.2}x |",
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
    println!(
        "\n(median of {} runs x {} s each; server pinned to CPU {}, wrk -t1 pinned to CPU {})",
        o.repeat, o.duration, o.server_cpu, o.client_cpu
    );
}
