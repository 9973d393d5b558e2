//! Prometheus text exposition of the engine's counters, the pools' gauges
//! and histograms, and the supervisor's state.
//!
//! Quantiles are taken over a sliding window (the last `WINDOW` of
//! scrapes), not since start, so a scrape shows the pool as it is now.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tidepool_drivers::cache::CacheStats;
use tidepool_drivers::pool::{CloseReason, Histogram, PoolStats};
use tidepool_engine::http::route_stats::{sum_samples, BUCKETS};
use tidepool_engine::http::{HttpStats, RouteStats, WorkerStats};
use tidepool_supervisor::{Action, SupervisorState};

/// How far back quantiles look.
pub const WINDOW: Duration = Duration::from_secs(10);

/// A Prometheus text document being written. Samples may be added in any
/// order (pool by pool, say): each family's are kept together under one
/// `# HELP` and `# TYPE`, in the order families first appear, as the text
/// format requires. A summary's `_sum` and `_count` (a histogram's
/// `_bucket` too) go under their family.
#[derive(Default)]
pub struct Exposition {
    families: Vec<Family>,
    index: HashMap<&'static str, usize>,
}

struct Family {
    name: &'static str,
    kind: &'static str,
    help: String,
    lines: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Declares a family before its samples: a histogram's, whose samples
    /// are all `_bucket`, `_sum` and `_count`.
    pub fn declare(&mut self, name: &'static str, kind: &'static str, help: &str) {
        self.family(name, kind, help);
    }

    /// The family a sample named `name` belongs to, declared as `kind` if new.
    fn family(&mut self, name: &'static str, kind: &'static str, help: &str) -> &mut Family {
        if let Some(&i) = self.index.get(name) {
            return &mut self.families[i];
        }
        for suffix in ["_sum", "_count", "_bucket"] {
            let Some(base) = name.strip_suffix(suffix) else {
                continue;
            };
            if let Some(&i) = self.index.get(base) {
                let f = &self.families[i];
                let grouped = matches!(f.kind, "summary" | "histogram")
                    && (suffix != "_bucket" || f.kind == "histogram");
                if grouped {
                    return &mut self.families[i];
                }
            }
        }
        self.index.insert(name, self.families.len());
        self.families.push(Family {
            name,
            kind,
            help: help.to_string(),
            lines: String::new(),
        });
        self.families.last_mut().expect("just pushed")
    }

    /// One sample; `labels` are (name, value) pairs.
    pub fn sample(
        &mut self,
        name: &'static str,
        kind: &'static str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let out = &mut self.family(name, kind, help).lines;
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{k}=\"{}\"", escape(v));
            }
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }

    pub fn finish(self) -> String {
        let mut out = String::new();
        for f in self.families {
            let _ = writeln!(
                out,
                "# HELP {} {}\n# TYPE {} {}",
                f.name,
                escape_help(&f.help),
                f.name,
                f.kind
            );
            out.push_str(&f.lines);
        }
        out
    }
}

/// HELP text escapes backslash and newline (not quotes).
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Which I/O backend the workers run on and why
/// (`tidepool_io_backend{backend="epoll",reason="seccomp_or_sysctl"} 1`).
pub fn io_backend(e: &mut Exposition) {
    for sel in tidepool_engine::rt::backend::selections() {
        e.sample(
            "tidepool_io_backend",
            "gauge",
            "The I/O backend the workers run on (1), with the reason it was chosen.",
            &[("backend", sel.backend.as_str()), ("reason", sel.reason)],
            1.0,
        );
    }
}

/// The engine's counters.
pub fn http(e: &mut Exposition, s: &HttpStats) {
    e.sample(
        "tidepool_http_requests_total",
        "counter",
        "HTTP requests handled.",
        &[],
        s.requests as f64,
    );
    for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
        e.sample(
            "tidepool_http_responses_total",
            "counter",
            "HTTP responses by status class.",
            &[("class", class)],
            s.responses[i] as f64,
        );
    }
    e.sample(
        "tidepool_http_connections_open",
        "gauge",
        "Open HTTP connections.",
        &[],
        s.connections_open as f64,
    );
    e.sample(
        "tidepool_http_connections_accepted_total",
        "counter",
        "Accepted HTTP connections.",
        &[],
        s.connections_accepted as f64,
    );
    e.sample(
        "tidepool_http_connections_rejected_total",
        "counter",
        "Connections closed at once over the per-worker cap.",
        &[],
        s.connections_rejected as f64,
    );
    e.sample(
        "tidepool_http_parse_errors_total",
        "counter",
        "Malformed requests answered 4xx/5xx and closed.",
        &[],
        s.parse_errors as f64,
    );
    e.sample(
        "tidepool_http_timeouts_total",
        "counter",
        "Connections closed by a header, body, idle or write timeout.",
        &[],
        s.timeouts as f64,
    );
    e.sample(
        "tidepool_http_bytes_in_total",
        "counter",
        "Request bytes parsed.",
        &[],
        s.bytes_in as f64,
    );
    e.sample(
        "tidepool_http_bytes_out_total",
        "counter",
        "Response bytes written.",
        &[],
        s.bytes_out as f64,
    );
}

/// When, acquire-wait, hold.
type Snapshot = (Instant, Histogram, Histogram);

/// Recent snapshots of each pool's histograms, for windowed quantiles.
#[derive(Default)]
pub struct PoolWindows {
    history: Mutex<HashMap<String, Vec<Snapshot>>>,
}

impl PoolWindows {
    /// (acquire-wait, hold) histograms over the last `WINDOW`.
    fn windowed(&self, s: &PoolStats) -> (Histogram, Histogram) {
        let now = Instant::now();
        let mut h = self.history.lock().unwrap();
        let ring = h.entry(s.name.clone()).or_default();
        ring.push((now, s.total.acquire_wait.clone(), s.total.hold.clone()));
        while ring.len() > 1 && now.duration_since(ring[1].0) >= WINDOW {
            ring.remove(0);
        }
        let (_, aw0, h0) = &ring[0];
        if ring.len() == 1 {
            // First scrape: everything so far.
            return (s.total.acquire_wait.clone(), s.total.hold.clone());
        }
        (s.total.acquire_wait.since(aw0), s.total.hold.since(h0))
    }
}

/// A summary family: windowed quantiles plus cumulative `_sum` and `_count`.
fn summary(
    e: &mut Exposition,
    names: [&'static str; 3],
    help: &str,
    pool: &str,
    window: &Histogram,
    total: &Histogram,
) {
    let [name, sum, count] = names;
    for q in ["0.5", "0.99"] {
        let v = window.quantile(q.parse().unwrap()).as_secs_f64();
        e.sample(name, "summary", help, &[("pool", pool), ("quantile", q)], v);
    }
    e.sample(
        sum,
        "summary",
        help,
        &[("pool", pool)],
        total.sum_us as f64 / 1e6,
    );
    e.sample(
        count,
        "summary",
        help,
        &[("pool", pool)],
        total.total as f64,
    );
}

/// Every pool's gauges, counters and windowed quantiles.
pub fn pools(e: &mut Exposition, windows: &PoolWindows, pools: &[PoolStats]) {
    for s in pools {
        let p = s.name.as_str();
        let t = &s.total;
        let l = [("pool", p)];
        e.sample(
            "tidepool_pool_max_open",
            "gauge",
            "Pool size limit (sum over workers).",
            &l,
            s.max_open as f64,
        );
        e.sample(
            "tidepool_pool_open",
            "gauge",
            "Open connections.",
            &l,
            t.open as f64,
        );
        e.sample(
            "tidepool_pool_in_use",
            "gauge",
            "Connections (or in-flight slots) held by callers.",
            &l,
            t.in_use as f64,
        );
        e.sample(
            "tidepool_pool_idle",
            "gauge",
            "Open connections nobody uses.",
            &l,
            t.idle as f64,
        );
        e.sample(
            "tidepool_pool_waiting",
            "gauge",
            "Callers waiting for a connection.",
            &l,
            t.waiting as f64,
        );
        e.sample(
            "tidepool_pool_opening",
            "gauge",
            "Connects in flight.",
            &l,
            t.opening as f64,
        );
        e.sample(
            "tidepool_pool_down",
            "gauge",
            "Workers that found the database unreachable with no connection open (their callers fail fast while one connect probes).",
            &l,
            t.down as f64,
        );
        e.sample(
            "tidepool_pool_fast_failures_total",
            "counter",
            "Acquires answered at once with the last connect error while the database was unreachable.",
            &l,
            t.fast_failures as f64,
        );
        e.sample(
            "tidepool_pool_acquires_total",
            "counter",
            "Successful acquires.",
            &l,
            t.acquires as f64,
        );
        e.sample(
            "tidepool_pool_acquire_timeouts_total",
            "counter",
            "Acquires that timed out.",
            &l,
            t.acquire_timeouts as f64,
        );
        for class in tidepool_drivers::pool::Class::ALL {
            for reason in tidepool_drivers::pool::ShedReason::ALL {
                e.sample(
                    "tidepool_pool_shed_total",
                    "counter",
                    "Acquires turned away by the queue's discipline under overload, by request class and reason (standing_queue, deadline).",
                    &[
                        ("pool", p),
                        ("class", class.as_str()),
                        ("reason", reason.as_str()),
                    ],
                    t.sheds[class as usize][reason as usize] as f64,
                );
            }
        }
        e.sample(
            "tidepool_pool_connects_total",
            "counter",
            "Connections opened.",
            &l,
            t.connects as f64,
        );
        for (i, reason) in ["transient", "fatal", "timeout"].iter().enumerate() {
            e.sample(
                "tidepool_pool_connect_failures_total",
                "counter",
                "Failed connects by reason.",
                &[("pool", p), ("reason", reason)],
                t.connect_failures[i] as f64,
            );
        }
        for r in CloseReason::ALL {
            e.sample(
                "tidepool_pool_closes_total",
                "counter",
                "Connections closed by reason.",
                &[("pool", p), ("reason", r.as_str())],
                t.closes[r as usize] as f64,
            );
        }
        e.sample(
            "tidepool_pool_query_errors_total",
            "counter",
            "Statements or commands that failed at the database (integrity violations excepted).",
            &[("pool", p)],
            t.query_errors as f64,
        );
        e.sample(
            "tidepool_pool_query_timeouts_total",
            "counter",
            "Statements or commands that ran past the query timeout.",
            &[("pool", p)],
            t.query_timeouts as f64,
        );
        e.sample(
            "tidepool_pool_leaks_total",
            "counter",
            "Connections held past the leak threshold.",
            &l,
            t.leaks as f64,
        );
        let (aw, hold) = windows.windowed(s);
        summary(
            e,
            [
                "tidepool_pool_acquire_wait_seconds",
                "tidepool_pool_acquire_wait_seconds_sum",
                "tidepool_pool_acquire_wait_seconds_count",
            ],
            "Time to acquire a connection (window of the last 10 s).",
            p,
            &aw,
            &t.acquire_wait,
        );
        summary(
            e,
            [
                "tidepool_pool_query_seconds",
                "tidepool_pool_query_seconds_sum",
                "tidepool_pool_query_seconds_count",
            ],
            "Time a connection (or in-flight slot) is held per checkout: query or command latency (window of the last 10 s).",
            p,
            &hold,
            &t.hold,
        );
    }
}

/// The supervisor's heartbeat and decision counters.
/// A fleet's budget and this instance's lease (`App::fleet`).
pub fn fleet(e: &mut Exposition, name: &str, s: &tidepool_drivers::fleet::FleetState) {
    use std::sync::atomic::Ordering::Relaxed;
    let l = [("fleet", name)];
    e.sample(
        "tidepool_fleet_budget",
        "gauge",
        "Backend connections the fleet's instances may hold together.",
        &l,
        s.budget.load(Relaxed) as f64,
    );
    e.sample(
        "tidepool_fleet_lease",
        "gauge",
        "This instance's share of the budget, as its lease row records it.",
        &l,
        s.lease.load(Relaxed) as f64,
    );
    e.sample(
        "tidepool_fleet_cap",
        "gauge",
        "What this instance's pools may hold now (the lease, or the safe capacity once it expired).",
        &l,
        s.cap.load(Relaxed) as f64,
    );
    e.sample(
        "tidepool_fleet_instances",
        "gauge",
        "Live instances of the fleet at the last renew.",
        &l,
        s.instances.load(Relaxed) as f64,
    );
    e.sample(
        "tidepool_fleet_renewals_total",
        "counter",
        "Lease renewals that committed.",
        &l,
        s.renewals.load(Relaxed) as f64,
    );
    e.sample(
        "tidepool_fleet_renew_failures_total",
        "counter",
        "Lease renewals that failed (coordinator unreachable, refused, timed out).",
        &l,
        s.renew_failures.load(Relaxed) as f64,
    );
}

pub fn supervisor(e: &mut Exposition, s: &SupervisorState) {
    e.sample(
        "tidepool_supervisor_last_tick_timestamp_seconds",
        "gauge",
        "Unix time of the supervisor's last completed tick (its heartbeat).",
        &[],
        s.last_tick_timestamp(),
    );
    e.sample(
        "tidepool_supervisor_restarts_total",
        "counter",
        "Times the supervisor thread was restarted after a panic.",
        &[],
        s.restarts() as f64,
    );
    e.sample(
        "tidepool_supervisor_panics_total",
        "counter",
        "Panics caught in the supervisor (a pool's probe or controller, or its thread).",
        &[],
        s.panics() as f64,
    );
    for p in s.pools() {
        for (dir, n) in [("grow", p.grows), ("shrink", p.shrinks)] {
            e.sample(
                "tidepool_supervisor_decisions_total",
                "counter",
                "Pool resizes decided by the supervisor.",
                &[("pool", &p.name), ("direction", dir)],
                n as f64,
            );
        }
        if let Some(d) = p.last.as_ref().filter(|d| d.action == Action::Hold) {
            e.sample(
                "tidepool_supervisor_hold",
                "gauge",
                "1 while the supervisor holds the pool's size, labelled with why (the last tick's decision).",
                &[("pool", &p.name), ("reason", d.reason.kind())],
                1.0,
            );
        }
        e.sample(
            "tidepool_supervisor_autoscale_enabled",
            "gauge",
            "Whether the supervisor may resize this pool.",
            &[("pool", &p.name)],
            if p.enabled { 1.0 } else { 0.0 },
        );
    }
}

/// Every route's requests by method and status, with their durations, as
/// the histogram `tidepool_http_request_duration_seconds{route,method,status}`
/// (summed over workers; `HttpConfig::route_metrics`). A request no route
/// took counts under `route=""`, `method="other"`.
pub fn routes(e: &mut Exposition, workers: &[std::sync::Arc<WorkerStats>]) {
    let stats: Vec<&RouteStats> = workers
        .iter()
        .filter_map(|w| w.routes.get())
        .map(|r| &**r)
        .collect();
    let name = "tidepool_http_request_duration_seconds";
    let help = "Time from a request's first byte to its response, by route, method and status.";
    e.declare(name, "histogram", help);
    for s in sum_samples(stats) {
        let status = s.status.to_string();
        let l = [
            ("route", s.route.as_str()),
            ("method", s.method),
            ("status", status.as_str()),
        ];
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(s.buckets) {
            cumulative += n;
            let le = bound.to_string();
            let mut with_le = l.to_vec();
            with_le.push(("le", &le));
            e.sample(
                "tidepool_http_request_duration_seconds_bucket",
                "histogram",
                help,
                &with_le,
                cumulative as f64,
            );
        }
        let mut inf = l.to_vec();
        inf.push(("le", "+Inf"));
        e.sample(
            "tidepool_http_request_duration_seconds_bucket",
            "histogram",
            help,
            &inf,
            s.count as f64,
        );
        e.sample(
            "tidepool_http_request_duration_seconds_sum",
            "histogram",
            help,
            &l,
            s.sum_seconds,
        );
        e.sample(
            "tidepool_http_request_duration_seconds_count",
            "histogram",
            help,
            &l,
            s.count as f64,
        );
    }
}

/// Recent snapshots of each cache's lock-wait histogram, for windowed
/// quantiles.
#[derive(Default)]
pub struct CacheWindows {
    history: Mutex<HashMap<String, Vec<(Instant, Histogram)>>>,
}

impl CacheWindows {
    /// The lock-wait histogram over the last `WINDOW` (everything so far
    /// on the first scrape).
    fn windowed(&self, s: &CacheStats) -> Histogram {
        let now = Instant::now();
        let mut h = self.history.lock().unwrap();
        let ring = h.entry(s.name.clone()).or_default();
        ring.push((now, s.lock_wait.clone()));
        while ring.len() > 1 && now.duration_since(ring[1].0) >= WINDOW {
            ring.remove(0);
        }
        if ring.len() == 1 {
            return s.lock_wait.clone();
        }
        s.lock_wait.since(&ring[0].1)
    }
}

/// Every cache's counters, its waiting gauge, and its windowed lock-wait
/// summary, labelled `cache="<name>"`. A stampede shows as misses and
/// `tidepool_cache_lock_wait_seconds_count` climbing together while
/// `tidepool_cache_computes_total` stays flat; computes climbing with the
/// misses mean the protection is not working (leases shorter than the
/// computation, or keys that differ per request).
pub fn caches(e: &mut Exposition, windows: &CacheWindows, caches: &[CacheStats]) {
    type Field = fn(&CacheStats) -> u64;
    let counters: [(&'static str, &str, Field); 6] = [
        (
            "tidepool_cache_hits_total",
            "Calls answered from Redis (cached errors included).",
            |s| s.hits,
        ),
        (
            "tidepool_cache_misses_total",
            "Calls that found nothing usable in Redis.",
            |s| s.misses,
        ),
        (
            "tidepool_cache_computes_total",
            "Computations run by this process (early refreshes included).",
            |s| s.computes,
        ),
        (
            "tidepool_cache_early_refreshes_total",
            "Computations started early by XFetch while the value was still valid.",
            |s| s.early_refreshes,
        ),
        (
            "tidepool_cache_lock_timeouts_total",
            "Waits for another process's computation lock that reached the wait timeout.",
            |s| s.lock_timeouts,
        ),
        (
            "tidepool_cache_store_failures_total",
            "Computed results that could not be written to Redis.",
            |s| s.store_failures,
        ),
    ];
    for (name, help, field) in counters {
        for s in caches {
            e.sample(
                name,
                "counter",
                help,
                &[("cache", &s.name)],
                field(s) as f64,
            );
        }
    }
    for s in caches {
        e.sample(
            "tidepool_cache_waiting",
            "gauge",
            "Callers waiting right now for another caller's computation.",
            &[("cache", &s.name)],
            s.waiting as f64,
        );
    }
    let name = "tidepool_cache_lock_wait_seconds";
    let help = "Time callers waited for another caller's computation, in this process or \
                another (window of the last 10 s).";
    for s in caches {
        let window = windows.windowed(s);
        for q in ["0.5", "0.99"] {
            let v = window.quantile(q.parse().unwrap()).as_secs_f64();
            e.sample(
                name,
                "summary",
                help,
                &[("cache", &s.name), ("quantile", q)],
                v,
            );
        }
        let l = [("cache", s.name.as_str())];
        e.sample(
            "tidepool_cache_lock_wait_seconds_sum",
            "summary",
            help,
            &l,
            s.lock_wait.sum_us as f64 / 1e6,
        );
        e.sample(
            "tidepool_cache_lock_wait_seconds_count",
            "summary",
            help,
            &l,
            s.lock_wait.total as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_exposition_format() {
        let mut e = Exposition::new();
        let a = CacheStats {
            name: "report".into(),
            hits: 5,
            misses: 2,
            computes: 1,
            ..CacheStats::default()
        };
        let b = CacheStats {
            name: "other".into(),
            ..CacheStats::default()
        };
        caches(&mut e, &CacheWindows::default(), &[a, b]);
        let text = e.finish();
        assert!(text.contains(
            "# TYPE tidepool_cache_hits_total counter\n\
             tidepool_cache_hits_total{cache=\"report\"} 5\n\
             tidepool_cache_hits_total{cache=\"other\"} 0\n"
        ));
        assert!(text.contains("tidepool_cache_misses_total{cache=\"report\"} 2\n"));
        assert!(text.contains("tidepool_cache_computes_total{cache=\"report\"} 1\n"));
        assert!(text.contains("tidepool_cache_lock_timeouts_total{cache=\"report\"} 0\n"));
        assert!(text.contains(
            "# TYPE tidepool_cache_lock_wait_seconds summary\n\
             tidepool_cache_lock_wait_seconds{cache=\"report\",quantile=\"0.5\"} 0\n\
             tidepool_cache_lock_wait_seconds{cache=\"report\",quantile=\"0.99\"} 0\n\
             tidepool_cache_lock_wait_seconds_sum{cache=\"report\"} 0\n\
             tidepool_cache_lock_wait_seconds_count{cache=\"report\"} 0\n"
        ));
        assert_eq!(text.matches("# TYPE").count(), 8, "{text}");
    }

    #[test]
    fn exposition_format() {
        let mut e = Exposition::new();
        let s = HttpStats {
            requests: 7,
            ..HttpStats::default()
        };
        http(&mut e, &s);
        let stats = PoolStats {
            name: "pg".into(),
            max_open: 8,
            ..PoolStats::default()
        };
        pools(&mut e, &PoolWindows::default(), &[stats]);
        let text = e.finish();
        assert!(text.contains(
            "# TYPE tidepool_http_requests_total counter\ntidepool_http_requests_total 7\n"
        ));
        assert!(text.contains("tidepool_pool_max_open{pool=\"pg\"} 8\n"));
        assert!(
            text.contains("tidepool_pool_acquire_wait_seconds{pool=\"pg\",quantile=\"0.99\"} 0\n")
        );
        assert!(text.contains("tidepool_pool_query_seconds{pool=\"pg\",quantile=\"0.5\"} 0\n"));
        // Each family is declared once.
        assert_eq!(text.matches("# TYPE tidepool_pool_closes_total").count(), 1);
    }

    /// A strict reader of the Prometheus text format (0.0.4), as a scraper
    /// applies it: each family has at most one HELP and one TYPE, declared
    /// before its samples; a family's samples form one group; a sample's
    /// name is its family's (or, for a summary or histogram, the family's
    /// `_sum`/`_count`/`_bucket`); labels are well formed; no sample is
    /// repeated; a summary's quantiles carry `quantile` and every label set
    /// has its `_sum` and `_count`. Returns each family's kind.
    fn parse_strict(text: &str) -> Result<Vec<(String, String)>, String> {
        use std::collections::{BTreeSet, HashMap, HashSet};
        let mut kinds: HashMap<String, String> = HashMap::new();
        let mut helps: HashSet<String> = HashSet::new();
        let mut order: Vec<(String, String)> = Vec::new();
        let mut closed: HashSet<String> = HashSet::new();
        let mut current: Option<String> = None;
        let mut seen: HashSet<String> = HashSet::new();
        // Per summary: label sets (without quantile) seen as quantile, sum, count.
        let mut parts: HashMap<String, [BTreeSet<String>; 3]> = HashMap::new();
        let enter = |fam: &str, current: &mut Option<String>, closed: &mut HashSet<String>| {
            if current.as_deref() != Some(fam) {
                if closed.contains(fam) {
                    return Err(format!("family {fam} appears in two groups"));
                }
                if let Some(prev) = current.take() {
                    closed.insert(prev);
                }
                *current = Some(fam.to_string());
            }
            Ok(())
        };
        for (n, line) in text.lines().enumerate() {
            let at = |m: String| format!("line {}: {m}: {line:?}", n + 1);
            if let Some(rest) = line.strip_prefix("# ") {
                let mut it = rest.splitn(3, ' ');
                let (what, name) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
                enter(name, &mut current, &mut closed).map_err(at)?;
                match what {
                    "HELP" => {
                        if !helps.insert(name.to_string()) {
                            return Err(at("second HELP".into()));
                        }
                    }
                    "TYPE" => {
                        let kind = it.next().unwrap_or("");
                        if !["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind)
                        {
                            return Err(at(format!("unknown type {kind}")));
                        }
                        if kinds.insert(name.to_string(), kind.to_string()).is_some() {
                            return Err(at("second TYPE".into()));
                        }
                        order.push((name.to_string(), kind.to_string()));
                    }
                    _ => return Err(at("unknown comment".into())),
                }
                continue;
            }
            let (series, value) = line.rsplit_once(' ').ok_or_else(|| at("no value".into()))?;
            let ok_value = value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value);
            if !ok_value {
                return Err(at("bad value".into()));
            }
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (
                    n,
                    rest.strip_suffix('}')
                        .ok_or_else(|| at("unclosed labels".into()))?,
                ),
                None => (series, ""),
            };
            let mut pairs = Vec::new();
            let mut rest = labels;
            while !rest.is_empty() {
                let (k, v) = rest
                    .split_once("=\"")
                    .ok_or_else(|| at("bad label".into()))?;
                if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(at(format!("bad label name {k:?}")));
                }
                let mut end = None;
                let mut escaped = false;
                for (i, c) in v.char_indices() {
                    match (escaped, c) {
                        (true, _) => escaped = false,
                        (false, '\\') => escaped = true,
                        (false, '"') => {
                            end = Some(i);
                            break;
                        }
                        _ => {}
                    }
                }
                let end = end.ok_or_else(|| at("unterminated label value".into()))?;
                pairs.push((k.to_string(), v[..end].to_string()));
                rest = &v[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
            let family = [("_sum", 0), ("_count", 0), ("_bucket", 0)]
                .iter()
                .find_map(|(suf, _)| {
                    let base = name.strip_suffix(suf)?;
                    let kind = kinds.get(base)?;
                    let grouped = kind == "histogram" || (kind == "summary" && *suf != "_bucket");
                    grouped.then(|| base.to_string())
                })
                .unwrap_or_else(|| name.to_string());
            let kind = kinds
                .get(&family)
                .ok_or_else(|| at(format!("sample before TYPE of {family}")))?
                .clone();
            enter(&family, &mut current, &mut closed).map_err(at)?;
            if !seen.insert(series.to_string()) {
                return Err(at("repeated sample".into()));
            }
            if kind == "summary" {
                let rest: Vec<String> = pairs
                    .iter()
                    .filter(|(k, _)| k != "quantile")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let key = rest.join(",");
                let slot = if name.ends_with("_sum") && name != family {
                    1
                } else if name.ends_with("_count") && name != family {
                    2
                } else {
                    if !pairs.iter().any(|(k, _)| k == "quantile") {
                        return Err(at("summary sample without quantile".into()));
                    }
                    0
                };
                parts.entry(family.clone()).or_default()[slot].insert(key);
            }
        }
        for (fam, [q, sum, count]) in parts {
            if q != sum || q != count {
                return Err(format!(
                    "summary {fam}: label sets of quantiles, _sum and _count differ"
                ));
            }
        }
        Ok(order)
    }

    #[test]
    fn the_strict_reader_refuses_what_a_scraper_would() {
        let split = "# HELP a x\n# TYPE a gauge\na{p=\"1\"} 1\n# HELP b y\n# TYPE b gauge\nb 2\na{p=\"2\"} 3\n";
        assert!(parse_strict(split).unwrap_err().contains("two groups"));
        let untyped_sum = "# HELP s x\n# TYPE s summary\ns{quantile=\"0.5\"} 1\n# HELP s_sum x\n# TYPE s_sum untyped\ns_sum 1\n";
        assert!(parse_strict(untyped_sum).is_err());
        let twice = "# TYPE a gauge\na 1\na 2\n";
        assert!(parse_strict(twice).unwrap_err().contains("repeated"));
        let no_count = "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 1\n";
        assert!(parse_strict(no_count).unwrap_err().contains("differ"));
        let good = "# HELP s x\n# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 1\ns_count 1\n";
        assert_eq!(
            parse_strict(good).unwrap(),
            [("s".to_string(), "summary".to_string())]
        );
    }

    /// Everything an app with three pools and two caches exposes, added in
    /// the order the example adds it (pool by pool), reads as a scraper
    /// reads it, with each family once.
    use std::sync::Arc;

    #[test]
    fn a_full_exposition_parses_strictly() {
        let mut e = Exposition::new();
        http(&mut e, &HttpStats::default());
        io_backend(&mut e);
        let pool = |name: &str| PoolStats {
            name: name.into(),
            max_open: 4,
            ..PoolStats::default()
        };
        pools(
            &mut e,
            &PoolWindows::default(),
            &[pool("pg"), pool("pg-shared"), pool("redis")],
        );
        let cache = |name: &str| CacheStats {
            name: name.into(),
            ..CacheStats::default()
        };
        caches(
            &mut e,
            &CacheWindows::default(),
            &[cache("report"), cache("other")],
        );
        supervisor(&mut e, &SupervisorState::default());
        let worker = Arc::new(WorkerStats::default());
        let r = RouteStats::for_tests([("GET", "/todos/{id}".to_string())]);
        r.record_for_tests(0, 200, std::time::Duration::from_millis(3));
        r.record_for_tests(0, 404, std::time::Duration::from_millis(1));
        let _ = worker.routes.set(Arc::new(r));
        routes(&mut e, &[worker.clone(), worker]);
        let text = e.finish();
        let families = parse_strict(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));
        assert!(text.contains(
            "tidepool_http_request_duration_seconds_bucket{route=\"/todos/{id}\",method=\"GET\",status=\"200\",le=\"0.005\"} 2\n"
        ), "{text}");
        assert!(text.contains(
            "tidepool_http_request_duration_seconds_count{route=\"/todos/{id}\",method=\"GET\",status=\"404\"} 2\n"
        ), "{text}");
        let names: std::collections::HashSet<_> = families.iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), families.len(), "a family declared twice");
        let kind = |n: &str| {
            families
                .iter()
                .find(|(f, _)| f == n)
                .map(|(_, k)| k.as_str())
        };
        assert_eq!(kind("tidepool_pool_acquire_wait_seconds"), Some("summary"));
        assert_eq!(
            kind("tidepool_pool_acquire_wait_seconds_sum"),
            None,
            "part of its summary"
        );
        assert_eq!(text.matches("tidepool_pool_max_open{").count(), 3);
    }
}
