//! Once a second, on its own thread and its own connection: the generator's
//! CPU time and a scrape of the server's Prometheus `/metrics`, so pool
//! sizes and supervisor decisions land on the same timeline as the load.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::client::http::{parse_response, Parsed};
use crate::client::worker::Msg;

/// The pool gauges of one scrape, by pool name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolGauges {
    pub max_open: Option<f64>,
    pub open: Option<f64>,
    pub in_use: Option<f64>,
    pub waiting: Option<f64>,
    pub acquire_wait_p99: Option<f64>,
    pub grow_total: Option<f64>,
    pub shrink_total: Option<f64>,
    /// Waiters the acquire queue shed, every class and reason.
    pub shed_total: Option<f64>,
}

/// What the sampler saw at the end of one second.
#[derive(Clone, Debug, Default)]
pub struct Tick {
    pub second: u64,
    /// CPU time of the whole process in this second, in cores.
    pub cpu: f64,
    /// The busiest generator thread's CPU in this second (0..1).
    pub worker_cpu_max: f64,
    /// None when the scrape failed or scraping is off.
    pub pools: Option<BTreeMap<String, PoolGauges>>,
}

/// One sample line of the text format: name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses Prometheus text exposition (comments and malformed lines are skipped).
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(s) = parse_line(line) {
            out.push(s);
        }
    }
    out
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if rest.starts_with('{') {
        rest = &rest[1..];
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].trim().to_string();
            rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
            let mut val = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => val.push('\n'),
                        other => val.push(other),
                    },
                    '"' => break i,
                    c => val.push(c),
                }
            };
            labels.push((key, val));
            rest = &rest[end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Picks the pool and supervisor series out of a scrape.
pub fn pool_gauges(samples: &[Sample]) -> BTreeMap<String, PoolGauges> {
    let mut pools: BTreeMap<String, PoolGauges> = BTreeMap::new();
    for s in samples {
        let Some(pool) = s.label("pool") else {
            continue;
        };
        let v = s.value.is_finite().then_some(s.value);
        let field: Option<fn(&mut PoolGauges) -> &mut Option<f64>> = match s.name.as_str() {
            "tidepool_pool_max_open" => Some(|g| &mut g.max_open),
            "tidepool_pool_open" => Some(|g| &mut g.open),
            "tidepool_pool_in_use" => Some(|g| &mut g.in_use),
            "tidepool_pool_waiting" => Some(|g| &mut g.waiting),
            "tidepool_pool_acquire_wait_seconds" if s.label("quantile") == Some("0.99") => {
                Some(|g| &mut g.acquire_wait_p99)
            }
            "tidepool_supervisor_decisions_total" => match s.label("direction") {
                Some("grow") => Some(|g| &mut g.grow_total),
                Some("shrink") => Some(|g| &mut g.shrink_total),
                _ => None,
            },
            // One series per class and reason: they add up below.
            "tidepool_pool_shed_total" => Some(|g| &mut g.shed_total),
            _ => None,
        };
        if let Some(f) = field {
            // Several workers may export one pool: their values add up.
            let slot = f(pools.entry(pool.to_string()).or_default());
            *slot = match (*slot, v) {
                (Some(a), Some(b)) if !is_quantile(&s.name) => Some(a + b),
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => b.or(a),
            };
        }
    }
    pools
}

fn is_quantile(name: &str) -> bool {
    name.ends_with("_seconds")
}

/// A keep-alive scraper over std sockets (it runs off the generator's rings).
pub struct Scraper {
    addr: SocketAddr,
    request: Vec<u8>,
    conn: Option<TcpStream>,
    timeout: Duration,
}

impl Scraper {
    pub fn new(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> Scraper {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/plain\r\n\r\n")
            .into_bytes();
        Scraper {
            addr,
            request,
            conn: None,
            timeout,
        }
    }

    /// One scrape's body, or None (the connection is dropped on any trouble).
    pub fn scrape(&mut self) -> Option<String> {
        for attempt in 0..2 {
            let fresh = self.conn.is_none();
            if fresh {
                let c = TcpStream::connect_timeout(&self.addr, self.timeout).ok()?;
                c.set_read_timeout(Some(self.timeout)).ok()?;
                c.set_write_timeout(Some(self.timeout)).ok()?;
                let _ = c.set_nodelay(true);
                self.conn = Some(c);
            }
            match self.exchange() {
                Some(body) => return Some(body),
                None => {
                    self.conn = None;
                    // A kept-alive connection the server closed: one retry on a new one.
                    if fresh || attempt == 1 {
                        return None;
                    }
                }
            }
        }
        None
    }

    fn exchange(&mut self) -> Option<String> {
        let c = self.conn.as_mut()?;
        c.write_all(&self.request).ok()?;
        let mut buf = Vec::with_capacity(16 * 1024);
        let mut chunk = [0u8; 16 * 1024];
        let deadline = Instant::now() + self.timeout;
        loop {
            match parse_response(&buf, false) {
                Parsed::Done { status, len, close } => {
                    if close {
                        self.conn = None;
                    }
                    if status != 200 {
                        return None;
                    }
                    let head_end = find(&buf, b"\r\n\r\n")? + 4;
                    let body = &buf[head_end..len];
                    let chunked = String::from_utf8_lossy(&buf[..head_end])
                        .to_ascii_lowercase()
                        .contains("transfer-encoding: chunked");
                    let body = if chunked {
                        dechunk(body)?
                    } else {
                        body.to_vec()
                    };
                    return String::from_utf8(body).ok();
                }
                Parsed::Invalid(_) => return None,
                Parsed::Partial | Parsed::UntilClose { .. } => {}
            }
            if Instant::now() > deadline {
                return None;
            }
            let n = c.read(&mut chunk).ok()?;
            if n == 0 {
                if let Parsed::UntilClose { status: 200 } = parse_response(&buf, false) {
                    self.conn = None;
                    let head_end = find(&buf, b"\r\n\r\n")? + 4;
                    return String::from_utf8(buf[head_end..].to_vec()).ok();
                }
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = find(body, b"\r\n")?;
        let size_txt = std::str::from_utf8(&body[..nl]).ok()?;
        let size = usize::from_str_radix(size_txt.split(';').next()?.trim(), 16).ok()?;
        body = &body[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// utime + stime of /proc/self/stat (or a task's stat), in clock ticks.
pub fn cpu_ticks(path: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces; fields are counted after its ')'.
    let after = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Runs the once-a-second sampling until `stop` is set; each tick goes to `tx`.
pub fn run_sampler(
    start: Instant,
    mut scraper: Option<Scraper>,
    worker_tids: Arc<Mutex<Vec<i32>>>,
    stop: Arc<AtomicBool>,
    tx: Sender<Msg>,
) {
    let hz = clock_ticks_per_sec();
    let mut last_proc = cpu_ticks("/proc/self/stat").unwrap_or(0);
    let mut last_task: BTreeMap<i32, u64> = BTreeMap::new();
    let mut sec = 0u64;
    while !stop.load(Ordering::Acquire) {
        let boundary = start + Duration::from_secs(sec + 1);
        let now = Instant::now();
        if boundary > now {
            // Wakes at most a short slice late to notice `stop` promptly.
            std::thread::sleep((boundary - now).min(Duration::from_millis(100)));
            continue;
        }
        let proc_now = cpu_ticks("/proc/self/stat").unwrap_or(last_proc);
        let cpu = (proc_now.saturating_sub(last_proc)) as f64 / hz;
        last_proc = proc_now;
        let mut worker_cpu_max: f64 = 0.0;
        for tid in worker_tids.lock().map(|t| t.clone()).unwrap_or_default() {
            if let Some(t) = cpu_ticks(&format!("/proc/self/task/{tid}/stat")) {
                // A thread seen for the first time started within this second.
                let prev = last_task.insert(tid, t).unwrap_or(0);
                worker_cpu_max = worker_cpu_max.max(t.saturating_sub(prev) as f64 / hz);
            }
        }
        let pools = scraper
            .as_mut()
            .and_then(|s| s.scrape())
            .map(|body| pool_gauges(&parse_prometheus(&body)));
        let _ = tx.send(Msg::Tick(Box::new(Tick {
            second: sec,
            cpu,
            worker_cpu_max: worker_cpu_max.min(1.0),
            pools,
        })));
        sec += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP tidepool_pool_open Open connections.
# TYPE tidepool_pool_open gauge
tidepool_pool_open{pool="pg"} 5
tidepool_pool_max_open{pool="pg"} 8
tidepool_pool_in_use{pool="pg"} 3
tidepool_pool_waiting{pool="pg"} 0
tidepool_pool_acquire_wait_seconds{pool="pg",quantile="0.5"} 0.0001
tidepool_pool_acquire_wait_seconds{pool="pg",quantile="0.99"} 0.0042
tidepool_supervisor_decisions_total{pool="pg",direction="grow"} 3
tidepool_supervisor_decisions_total{pool="pg",direction="shrink"} 1
tidepool_pool_shed_total{pool="pg",class="default",reason="standing_queue"} 4
tidepool_pool_shed_total{pool="pg",class="sheddable",reason="deadline"} 3
tidepool_pool_open{pool="re\"dis"} 2 1700000000000
tidepool_http_requests_total 123
garbage line here
"#;

    #[test]
    fn parses_the_exposition() {
        let s = parse_prometheus(TEXT);
        assert_eq!(s.len(), 12);
        assert_eq!(s[10].label("pool"), Some("re\"dis"));
        assert_eq!(s[10].value, 2.0);
        let pools = pool_gauges(&s);
        let pg = &pools["pg"];
        assert_eq!(pg.open, Some(5.0));
        assert_eq!(pg.max_open, Some(8.0));
        assert_eq!(pg.acquire_wait_p99, Some(0.0042));
        assert_eq!(pg.grow_total, Some(3.0));
        assert_eq!(pg.shrink_total, Some(1.0));
        assert_eq!(pg.shed_total, Some(7.0), "classes and reasons add up");
        // Missing series stay absent.
        assert_eq!(pools["re\"dis"].max_open, None);
    }

    #[test]
    fn reads_own_cpu_time() {
        assert!(cpu_ticks("/proc/self/stat").is_some());
        assert!(clock_ticks_per_sec() > 0.0);
    }

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
    }
}
