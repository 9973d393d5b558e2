//! `soak`: a composite pattern (the demo's, without its overload) for many minutes against the
//! example app while PostgreSQL and Redis are killed (-9) and restarted
//! every two minutes; passes when the server's memory and descriptors
//! stay flat, no request hangs, errors happen only while a database is
//! down or coming back (or, in the cold start, as 503s while the pools
//! grow from their floor), and the pools end with nothing in use or waiting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cli::{parse_run_args, read_series, run_with};
use crate::client::run::Second;
use crate::client::sampler::{parse_prometheus, pool_gauges, Sample, Scraper};
use crate::stack::{app_path, split_extras, Sizing, Stack};

/// The soak's traffic: the demo's composite pattern without its overload
/// phase, so that every error belongs to an injected fault.
pub const SOAK_PATTERN: &str = include_str!("../patterns/soak.toml");

const USAGE: &str = "usage: tidepool-loadgen soak [--minutes N] [--period SECS] [--grace SECS] [--out DIR] [--app PATH]
                             [--app-workers N] [--app-io io_uring|epoll] [run options]
Starts an ephemeral PostgreSQL and redis-server and the example app, runs the composite pattern
(patterns/soak.toml) stretched to --minutes (default 10), and every --period seconds (default 120) kills -9 and
restarts PostgreSQL, and half a period later Redis. A fault's window runs from the kill until --grace
seconds (default 10) after the database is back. Passes (exit 0) when:
  - no request timed out or was left unfinished (nothing hangs);
  - every second with errors lies in a fault window, or in the first --grace seconds (a cold start:
    the pools at their floor, the caches empty) with only 503s, the overload answer;
  - the server's RSS, and its descriptors not held by connections, are within 10% between minute 2
    (or a fifth of the run, if shorter) and the end;
  - every pool ends with in_use = waiting = 0.
The app runs --app-workers workers (default 1) on --app-io (default its own choice), pinned to one CPU:
with 8 or more, most workers reach the databases through connections other workers own.
Writes the loadgen report (--out, default soak-out), soak.txt with this verdict, and probes.csv (the
server's RSS and descriptors once a second).";

/// One fault: what, and the window (seconds since the load started) in
/// which errors are expected.
#[derive(Clone, Debug)]
struct Fault {
    what: &'static str,
    start: f64,
    end: f64,
}

/// The server as seen once a second.
#[derive(Clone, Copy, Debug, Default)]
struct Probe {
    t: f64,
    rss_kib: u64,
    fds: u64,
    /// Descriptors that connections explain: HTTP clients, and pool
    /// connections open or opening.
    conn_fds: u64,
}

struct SoakArgs {
    minutes: f64,
    period: f64,
    grace: f64,
}

fn split_soak_args(args: &[String]) -> Result<(Vec<String>, SoakArgs), String> {
    let mut soak = SoakArgs {
        minutes: 10.0,
        period: 120.0,
        grace: 10.0,
    };
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let slot = match flag {
            "--minutes" => &mut soak.minutes,
            "--period" => &mut soak.period,
            "--grace" => &mut soak.grace,
            _ => {
                rest.push(a.clone());
                continue;
            }
        };
        let v = match inline {
            Some(v) => v,
            None => it.next().ok_or(format!("{flag} needs a value"))?.clone(),
        };
        *slot = v
            .parse::<f64>()
            .ok()
            .filter(|x| *x > 0.0 && x.is_finite())
            .ok_or(format!("{flag}: not a positive number: {v:?}"))?;
    }
    Ok((rest, soak))
}

pub fn cmd_soak(args: &[String]) -> Result<i32, String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(0);
    }
    let (args, soak) = split_soak_args(args)?;
    let (args, extras) = split_extras(&args)?;
    let mut opts = parse_run_args(&args)?;
    if opts.target.is_some() {
        return Err("soak starts its own server: --target is not accepted".into());
    }
    let duration = soak.minutes * 60.0;
    opts.shorthand.duration = Some(duration);
    let out = opts.out.get_or_insert_with(|| "soak-out".into()).clone();
    let plan = opts.plan(Some(SOAK_PATTERN))?;
    let app = app_path(extras)?;
    let stack =
        Stack::start_sized(&app, &Sizing::Adaptive, &out).map_err(|e| format!("soak: {e}"))?;
    opts.target = Some(format!("http://{}", stack.addr));
    if opts.cpus.is_none() {
        opts.cpus = Some(vec![stack.gen_cpu]);
    }
    eprintln!(
        "soak: example server on http://{}; {:.0} s of the demo pattern, PostgreSQL killed every {:.0} s, Redis half a period later",
        stack.addr, duration, soak.period
    );
    let done = AtomicBool::new(false);
    let faults = Mutex::new(Vec::new());
    let probes = Mutex::new(Vec::new());
    let t0 = Instant::now();
    let code = std::thread::scope(|s| {
        s.spawn(|| inject_faults(&stack, &soak, duration, t0, &done, &faults));
        s.spawn(|| watch(&stack, t0, &done, &probes));
        let code = run_with(&opts, plan);
        done.store(true, Ordering::Release);
        code
    })?;
    let settled = pools_settle(&stack.addr, Duration::from_secs(15));
    drop(stack);
    let seconds = read_series(&out.join("series.jsonl"))?;
    let faults = faults.into_inner().unwrap_or_default();
    let probes = probes.into_inner().unwrap_or_default();
    let verdict = judge(&seconds, &faults, soak.grace, &probes, &settled, duration);
    let text = verdict.render(&faults);
    print!("{text}");
    std::fs::write(out.join("soak.txt"), &text)
        .map_err(|e| format!("writing {}: {e}", out.join("soak.txt").display()))?;
    // The curve behind the RSS and descriptor checks: a step at a load
    // peak that stays flat after it reads differently from a steady climb.
    std::fs::write(out.join("probes.csv"), probes_csv(&probes))
        .map_err(|e| format!("writing {}: {e}", out.join("probes.csv").display()))?;
    eprintln!("soak: report: {}", out.join("report.html").display());
    // The run's own thresholds (exit 1) or failure (3) first.
    Ok(if code != 0 {
        code
    } else if verdict.pass() {
        0
    } else {
        1
    })
}

/// Sleeps until `at` after `t0`, or returns false once the load is done.
fn sleep_until(t0: Instant, at: f64, done: &AtomicBool) -> bool {
    while t0.elapsed().as_secs_f64() < at {
        if done.load(Ordering::Acquire) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    !done.load(Ordering::Acquire)
}

fn inject_faults(
    stack: &Stack,
    soak: &SoakArgs,
    duration: f64,
    t0: Instant,
    done: &AtomicBool,
    faults: &Mutex<Vec<Fault>>,
) {
    // First faults a little before the first period ends, so a 10-minute
    // run has five of each, the last one well before the end.
    let mut at = soak.period * 0.4;
    loop {
        for (what, offset) in [("postgres", 0.0), ("redis", soak.period / 2.0)] {
            let when = at + offset;
            if when + soak.grace > duration || !sleep_until(t0, when, done) {
                return;
            }
            let start = t0.elapsed().as_secs_f64();
            if what == "postgres" {
                stack.pg.kill9();
                stack.pg.restart();
            } else {
                stack.redis.kill9();
                stack.redis.restart();
                stack.seed_cache();
            }
            let back = t0.elapsed().as_secs_f64();
            eprintln!("soak: {what} killed at {start:.1} s, back at {back:.1} s");
            faults.lock().unwrap().push(Fault {
                what,
                start,
                end: back + soak.grace,
            });
        }
        at += soak.period;
    }
}

fn watch(stack: &Stack, t0: Instant, done: &AtomicBool, probes: &Mutex<Vec<Probe>>) {
    let pid = stack.app_pid();
    let addr = stack.addr.parse().expect("a socket address");
    let mut scraper = Scraper::new(addr, "soak", "/metrics", Duration::from_secs(2));
    let mut next = 1.0;
    while sleep_until(t0, next, done) {
        next += 1.0;
        let Some(rss_kib) = rss_kib(pid) else {
            return;
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        let Some(samples) = scraper.scrape().map(|b| parse_prometheus(&b)) else {
            continue;
        };
        let conn_fds = sum(&samples, "tidepool_http_connections_open")
            + sum(&samples, "tidepool_pool_open")
            + sum(&samples, "tidepool_pool_opening");
        probes.lock().unwrap().push(Probe {
            t: t0.elapsed().as_secs_f64(),
            rss_kib,
            fds,
            // The scrape's own connection is counted by the server.
            conn_fds: conn_fds as u64,
        });
    }
}

/// One line per probe: seconds since the load started, RSS, descriptors,
/// and the descriptors that connections explain.
fn probes_csv(probes: &[Probe]) -> String {
    let mut csv = String::from("t_s,rss_kib,fds,conn_fds\n");
    for p in probes {
        csv.push_str(&format!(
            "{:.1},{},{},{}\n",
            p.t, p.rss_kib, p.fds, p.conn_fds
        ));
    }
    csv
}

fn sum(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && s.value.is_finite())
        .map(|s| s.value)
        .sum()
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Each pool's (in_use, waiting) once both are zero everywhere, or the
/// last values seen when `limit` passed first.
fn pools_settle(addr: &str, limit: Duration) -> Vec<(String, f64, f64)> {
    let Ok(addr) = addr.parse() else {
        return Vec::new();
    };
    let mut scraper = Scraper::new(addr, "soak", "/metrics", Duration::from_secs(2));
    let deadline = Instant::now() + limit;
    loop {
        let pools: Vec<(String, f64, f64)> = scraper
            .scrape()
            .map(|b| {
                pool_gauges(&parse_prometheus(&b))
                    .into_iter()
                    .map(|(name, g)| {
                        (
                            name,
                            g.in_use.unwrap_or(f64::NAN),
                            g.waiting.unwrap_or(f64::NAN),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let settled = !pools.is_empty() && pools.iter().all(|(_, u, w)| *u == 0.0 && *w == 0.0);
        if settled || Instant::now() >= deadline {
            return pools;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Verdict {
    requests: u64,
    errors: u64,
    timeouts: u64,
    unfinished: u64,
    /// Seconds with errors outside every fault window, with their counts.
    stray: Vec<(u64, u64)>,
    errors_in_windows: u64,
    /// The cold start's length, and the 503s in it.
    cold: f64,
    shed_cold: u64,
    /// (at minute 2, at the end) medians.
    rss: Option<(u64, u64)>,
    fds: Option<(u64, u64)>,
    idle_fds: Option<(u64, u64)>,
    pools: Vec<(String, f64, f64)>,
    faults_expected: usize,
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

fn within(pair: Option<(u64, u64)>, tolerance: f64) -> bool {
    pair.is_some_and(|(a, b)| (b as f64 - a as f64).abs() <= tolerance * a as f64)
}

/// `cold`: the length of the cold start, in which requests turned away
/// (503) are the overload answer of pools at their floor while the
/// autoscaler grows them, and of caches still empty; any other error there
/// counts as it would anywhere.
fn judge(
    seconds: &[Second],
    faults: &[Fault],
    cold: f64,
    probes: &[Probe],
    pools: &[(String, f64, f64)],
    duration: f64,
) -> Verdict {
    let in_window = |t: u64| {
        // A second's record covers [t, t+1); the generator's clock starts
        // a moment after ours: a second of slack on both sides.
        let (lo, hi) = (t as f64, t as f64 + 1.0);
        faults
            .iter()
            .any(|f| hi >= f.start - 1.0 && lo <= f.end + 1.0)
    };
    let mut stray = Vec::new();
    let mut errors_in_windows = 0;
    let mut shed_cold = 0;
    for s in seconds.iter().filter(|s| s.errors > 0) {
        if in_window(s.t) {
            errors_in_windows += s.errors;
            continue;
        }
        let shed = if (s.t as f64) < cold {
            let turned_away: u64 = s.classes.values().map(|c| c.unavailable).sum();
            turned_away.min(s.errors)
        } else {
            0
        };
        shed_cold += shed;
        if s.errors > shed {
            stray.push((s.t, s.errors - shed));
        }
    }
    // Minute 2, or a fifth of a shorter run: after warm-up and growth.
    let early = 120.0_f64.min(duration / 5.0);
    let span = 10.0_f64.min(duration / 10.0).max(1.0);
    let window = |from: f64, to: f64, f: fn(&Probe) -> u64| {
        median(
            probes
                .iter()
                .filter(|p| p.t >= from && p.t < to)
                .map(f)
                .collect(),
        )
    };
    let last = probes.last().map_or(duration, |p| p.t + 0.5);
    let pair =
        |f: fn(&Probe) -> u64| window(early, early + span, f).zip(window(last - span, last, f));
    Verdict {
        requests: seconds.iter().map(|s| s.completed).sum(),
        errors: seconds.iter().map(|s| s.errors).sum(),
        timeouts: seconds.iter().map(|s| s.timeouts).sum(),
        unfinished: seconds.iter().map(|s| s.unfinished).sum(),
        stray,
        errors_in_windows,
        cold,
        shed_cold,
        rss: pair(|p| p.rss_kib),
        fds: pair(|p| p.fds),
        idle_fds: pair(|p| p.fds.saturating_sub(p.conn_fds)),
        pools: pools.to_vec(),
        faults_expected: faults.len(),
    }
}

impl Verdict {
    fn pools_idle(&self) -> bool {
        !self.pools.is_empty() && self.pools.iter().all(|(_, u, w)| *u == 0.0 && *w == 0.0)
    }

    fn pass(&self) -> bool {
        self.timeouts == 0
            && self.unfinished == 0
            && self.stray.is_empty()
            && within(self.rss, 0.10)
            && within(self.idle_fds, 0.10)
            && self.pools_idle()
    }

    fn render(&self, faults: &[Fault]) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let mark = |ok: bool| if ok { "ok  " } else { "FAIL" };
        let _ = writeln!(o, "\nsoak: {} faults", self.faults_expected);
        for f in faults {
            let _ = writeln!(
                o,
                "  {:<8} window {:>6.1} s .. {:>6.1} s",
                f.what, f.start, f.end
            );
        }
        let _ = writeln!(
            o,
            "  cold     start  {:>6.1} s .. {:>6.1} s: {} requests turned away (503)",
            0.0, self.cold, self.shed_cold
        );
        let _ = writeln!(
            o,
            "{} hung requests: {} timed out, {} unfinished ({} completed, {} errors, {} of them in fault windows)",
            mark(self.timeouts == 0 && self.unfinished == 0),
            self.timeouts,
            self.unfinished,
            self.requests,
            self.errors,
            self.errors_in_windows
        );
        let stray: Vec<String> = self
            .stray
            .iter()
            .take(10)
            .map(|(t, n)| format!("{n} at {t} s"))
            .collect();
        let _ = writeln!(
            o,
            "{} errors outside fault windows: {}",
            mark(self.stray.is_empty()),
            if stray.is_empty() {
                "none".to_string()
            } else {
                stray.join(", ")
            }
        );
        let show = |p: Option<(u64, u64)>| match p {
            Some((a, b)) => format!(
                "{a} -> {b} ({:+.1}%)",
                (b as f64 - a as f64) * 100.0 / (a as f64).max(1.0)
            ),
            None => "not measured".into(),
        };
        let _ = writeln!(
            o,
            "{} RSS KiB, minute 2 -> end: {}",
            mark(within(self.rss, 0.10)),
            show(self.rss)
        );
        let _ = writeln!(
            o,
            "{} descriptors not held by connections: {}  (all descriptors: {})",
            mark(within(self.idle_fds, 0.10)),
            show(self.idle_fds),
            show(self.fds)
        );
        let pools: Vec<String> = self
            .pools
            .iter()
            .map(|(n, u, w)| format!("{n}: in_use {u}, waiting {w}"))
            .collect();
        let _ = writeln!(
            o,
            "{} pools at the end: {}",
            mark(self.pools_idle()),
            if pools.is_empty() {
                "no pool metrics".into()
            } else {
                pools.join("; ")
            }
        );
        let _ = writeln!(o, "soak: {}", if self.pass() { "PASS" } else { "FAIL" });
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(t: u64, errors: u64) -> Second {
        Second {
            t,
            errors,
            completed: 100,
            ..Second::default()
        }
    }

    fn probe(t: f64, rss_kib: u64, fds: u64, conn_fds: u64) -> Probe {
        Probe {
            t,
            rss_kib,
            fds,
            conn_fds,
        }
    }

    /// `patterns/steady.toml` is the soak's traffic without its changes:
    /// the same classes, one rate throughout.
    #[test]
    fn the_steady_pattern_is_the_soaks_classes_at_one_rate() {
        let parse = |t| crate::plan::config::parse_pattern(t, None, None).unwrap();
        let steady = parse(include_str!("../patterns/steady.toml"));
        let soak = parse(SOAK_PATTERN);
        let names = |p: &crate::plan::config::Plan| -> Vec<String> {
            p.classes.iter().map(|c| c.name.clone()).collect()
        };
        assert_eq!(names(&steady), names(&soak));
        let d = steady.duration();
        let rates: Vec<f64> = [0.0, d / 3.0, d * 2.0 / 3.0, d - 1.0]
            .iter()
            .map(|&t| steady.schedule.as_ref().expect("a schedule").rate(t))
            .collect();
        assert!(rates.iter().all(|&r| r == 1000.0), "{rates:?}");
        assert_eq!(steady.mix.shares_at(1.0), steady.mix.shares_at(d - 1.0));
    }

    #[test]
    fn probes_are_written_one_line_each() {
        let csv = probes_csv(&[probe(1.0, 100, 9, 3), probe(2.5, 120, 10, 4)]);
        assert_eq!(csv, "t_s,rss_kib,fds,conn_fds\n1.0,100,9,3\n2.5,120,10,4\n");
    }

    #[test]
    fn errors_count_against_a_run_only_outside_fault_windows() {
        let faults = [Fault {
            what: "postgres",
            start: 50.2,
            end: 62.0,
        }];
        let seconds: Vec<Second> = (0..200)
            .map(|t| second(t, u64::from(t == 51 || t == 62 || t == 150)))
            .collect();
        let probes: Vec<Probe> = (1..200)
            .map(|t| probe(t as f64, 10_000, 90 + t % 7, 70 + t % 7))
            .collect();
        let pools = vec![("pg".to_string(), 0.0, 0.0)];
        let v = judge(&seconds, &faults, 10.0, &probes, &pools, 200.0);
        assert_eq!(v.stray, vec![(150, 1)]);
        assert_eq!(v.errors_in_windows, 2);
        assert!(!v.pass());
        assert!(within(v.idle_fds, 0.10), "{:?}", v.idle_fds);

        let seconds: Vec<Second> = (0..200).map(|t| second(t, u64::from(t == 51))).collect();
        let v = judge(&seconds, &faults, 10.0, &probes, &pools, 200.0);
        assert!(v.pass(), "{}", v.render(&faults));
    }

    /// A second with `errors`, `unavailable` of them 503s.
    fn turned_away(t: u64, errors: u64, unavailable: u64) -> Second {
        let mut s = second(t, errors);
        s.classes.insert(
            "report".into(),
            crate::client::run::ClassSecond {
                errors,
                unavailable,
                ..Default::default()
            },
        );
        s
    }

    #[test]
    fn a_cold_start_may_turn_requests_away_and_nothing_else() {
        let probes: Vec<Probe> = (1..200).map(|t| probe(t as f64, 10_000, 80, 60)).collect();
        let pools = vec![("pg".to_string(), 0.0, 0.0)];
        let mut seconds: Vec<Second> = (0..200).map(|t| second(t, 0)).collect();
        seconds[0] = turned_away(0, 13, 13);
        seconds[2] = turned_away(2, 7, 7);
        let v = judge(&seconds, &[], 10.0, &probes, &pools, 200.0);
        assert!(v.pass(), "{}", v.render(&[]));
        assert_eq!(v.shed_cold, 20);
        // A 500 in the cold start is an error like any other.
        seconds[3] = turned_away(3, 2, 1);
        // So is a 503 after it.
        seconds[12] = turned_away(12, 1, 1);
        let v = judge(&seconds, &[], 10.0, &probes, &pools, 200.0);
        assert_eq!(v.stray, vec![(3, 1), (12, 1)]);
        assert!(!v.pass());
    }

    #[test]
    fn growth_a_hang_or_a_busy_pool_fails_the_soak() {
        let seconds: Vec<Second> = (0..300).map(|t| second(t, 0)).collect();
        let pools = vec![("pg".to_string(), 0.0, 0.0)];
        let flat: Vec<Probe> = (1..300).map(|t| probe(t as f64, 10_000, 80, 60)).collect();
        assert!(judge(&seconds, &[], 10.0, &flat, &pools, 300.0).pass());
        // RSS growing 20% from minute 2 to the end.
        let growing: Vec<Probe> = (1..300)
            .map(|t| probe(t as f64, 10_000 + t * 10, 80, 60))
            .collect();
        assert!(!judge(&seconds, &[], 10.0, &growing, &pools, 300.0).pass());
        // A descriptor leak hidden among connections is still a leak.
        let leaking: Vec<Probe> = (1..300)
            .map(|t| probe(t as f64, 10_000, 80 + t / 10, 60))
            .collect();
        assert!(!judge(&seconds, &[], 10.0, &leaking, &pools, 300.0).pass());
        let mut hung = seconds.clone();
        hung[10].timeouts = 1;
        assert!(!judge(&hung, &[], 10.0, &flat, &pools, 300.0).pass());
        let busy = vec![("pg".to_string(), 1.0, 0.0)];
        assert!(!judge(&seconds, &[], 10.0, &flat, &busy, 300.0).pass());
    }
}
