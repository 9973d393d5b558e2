//! A fleet-wide connection budget: processes of the example naming one
//! fleet share `--pg-fleet-budget` PostgreSQL connections. A sampler reads
//! `pg_stat_activity` every 50 ms for the pools' backends (their
//! application_name; the lease connections have their own) while load
//! moves between instances, one is killed and another joins: the count
//! never exceeds the budget, and the shares follow the load.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::App;
use tidepool_testkit::{PgServer, PgUser};

const BUDGET: usize = 8;
const TTL_MS: u64 = 1500;

/// One fleet at a time. Each test runs its servers (four, or two), load
/// and a database, and checks what happens within a TTL or two; the two
/// at once on a two-core machine once starved the lease renewals of both
/// fleets past their deadline ("renew timed out" from all six instances)
/// and both failed their first bound.
static ONE_FLEET: Mutex<()> = Mutex::new(());

fn start(url: &str) -> App {
    App::start(&[
        "--workers",
        "1",
        "--no-pin",
        "--pg",
        url,
        "--pg-max-open",
        "8",
        "--pg-shared-max-open",
        "2",
        "--fleet",
        "test",
        "--pg-fleet-budget",
        &BUDGET.to_string(),
        "--fleet-lease-ttl",
        &TTL_MS.to_string(),
    ])
}

fn lease(app: &App) -> f64 {
    app.metric("tidepool_fleet_lease{fleet=\"test\"}")
        .unwrap_or(0.0)
}

fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "never within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
    t0.elapsed()
}

/// Samples the pools' backends every 50 ms; keeps the maximum.
struct Sampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicUsize>,
    samples: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(url: String) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicUsize::new(0));
        let samples = Arc::new(AtomicUsize::new(0));
        let (s, m, n) = (stop.clone(), max.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            tidepool::engine::rt::block_on(async move {
                let mut c = tidepool::drivers::pg::Client::connect_url(&url)
                    .await
                    .expect("sampler connects");
                while !s.load(Ordering::Acquire) {
                    let row = c
                        .query_one(
                            "SELECT count(*)::int4 FROM pg_stat_activity \
                             WHERE application_name = 'tidepool-hello'",
                            &[],
                        )
                        .await
                        .expect("sample");
                    m.fetch_max(row.get::<i32>(0) as usize, Ordering::AcqRel);
                    n.fetch_add(1, Ordering::AcqRel);
                    tidepool::engine::rt::time::sleep(Duration::from_millis(50)).await;
                }
            })
        });
        Sampler {
            stop,
            max,
            samples,
            thread: Some(thread),
        }
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::Acquire)
    }

    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Release);
        self.thread.take().unwrap().join().unwrap();
        (self.max(), self.samples.load(Ordering::Acquire))
    }
}

/// `threads` clients requesting `/db/sleep?ms=20` from `app` until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        let _ = support::try_get(addr, "/db/sleep?ms=20");
                    }
                })
            })
            .collect();
        Load { stop, threads }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

#[test]
fn the_fleet_never_holds_more_than_its_budget_and_shares_follow_load() {
    let _one = ONE_FLEET.lock().unwrap_or_else(|e| e.into_inner());
    let pg = PgServer::start().unwrap();
    let url = pg.url(PgUser::Md5);
    let sampler = Sampler::start(pg.url(PgUser::Super));
    let mut apps: Vec<App> = (0..4).map(|_| start(&url)).collect();
    let ttl = Duration::from_millis(TTL_MS);
    // Everyone holds at least its floor.
    wait_for(ttl * 4, "every instance holds a lease", || {
        apps.iter().all(|a| lease(a) >= 1.0)
    });

    // Load on the first instance: it gets at least half the budget
    // within two TTLs.
    let load = Load::start(apps[0].addr, 12);
    let took = wait_for(ttl * 2, "the loaded instance holds half", || {
        lease(&apps[0]) >= (BUDGET / 2) as f64
    });
    eprintln!("instance 1 held half the budget after {took:?}");
    std::thread::sleep(ttl);
    load.stop();

    // Then on the third: the share follows.
    let load = Load::start(apps[2].addr, 12);
    let took = wait_for(ttl * 2, "the share follows the load", || {
        lease(&apps[2]) >= (BUDGET / 2) as f64
    });
    eprintln!("instance 3 held half the budget after {took:?}");

    // An idle instance dies: its share returns within TTL + 1 s.
    let mut dead = apps.remove(1);
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    let took = wait_for(
        ttl + Duration::from_secs(1),
        "the dead instance is reaped",
        || apps[0].metric("tidepool_fleet_instances{fleet=\"test\"}") == Some(3.0),
    );
    eprintln!("the killed instance's row was reclaimed after {took:?}");

    // A fifth instance joins mid-run and gets its floor.
    apps.push(start(&url));
    let took = wait_for(ttl * 4, "the newcomer holds its floor", || {
        lease(apps.last().unwrap()) >= 1.0
    });
    eprintln!("the newcomer held its floor after {took:?}");
    std::thread::sleep(ttl);
    load.stop();

    // A graceful stop hands the lease back: the others see it go at their
    // next renew, sooner than the row would expire.
    let first = apps.remove(0);
    first.stop();
    let took = wait_for(ttl * 3 / 4, "a stopped instance's row is gone", || {
        apps[0].metric("tidepool_fleet_instances{fleet=\"test\"}") == Some(3.0)
    });
    eprintln!("a stopped instance's lease was handed back after {took:?}");

    let (max, samples) = sampler.finish();
    eprintln!("{samples} samples of pg_stat_activity, at most {max} pool backends");
    assert!(samples > 50, "the sampler ran: {samples}");
    assert!(max <= BUDGET, "{max} backends, over the budget of {BUDGET}");
    assert!(max >= BUDGET / 2, "the load used the budget: {max}");
    for a in apps {
        a.stop();
    }
}

#[test]
fn without_the_coordinator_instances_fall_to_the_safe_capacity_and_recover() {
    let _one = ONE_FLEET.lock().unwrap_or_else(|e| e.into_inner());
    let pg = PgServer::start().unwrap();
    let url = pg.url(PgUser::Md5);
    let a = start(&url);
    let b = start(&url);
    let ttl = Duration::from_millis(TTL_MS);
    let cap = |app: &App| app.metric("tidepool_fleet_cap{fleet=\"test\"}");
    wait_for(ttl * 4, "both hold a lease", || {
        lease(&a) >= 1.0 && lease(&b) >= 1.0
    });
    let load = Load::start(a.addr, 8);
    wait_for(
        ttl * 2,
        "the loaded one holds more than the safe capacity",
        || cap(&a).unwrap_or(0.0) > 1.0,
    );
    // The lease table becomes unreachable for the app's user.
    pg.exec("REVOKE ALL ON tidepool_fleet_lease FROM tp_md5");
    let failures = |app: &App| {
        app.metric("tidepool_fleet_renew_failures_total{fleet=\"test\"}")
            .unwrap_or(0.0)
    };
    wait_for(ttl * 3, "renewals fail and the caps fall to 1", || {
        failures(&a) > 0.0 && cap(&a) == Some(1.0) && cap(&b) == Some(1.0)
    });
    // Served through the outage, at the safe capacity: eight callers keep
    // its one connection's queue standing, so this request says it is
    // critical (a default one may be shed, a fast 503, by design).
    assert_eq!(a.get("/db/sleep?ms=1&class=critical").0, 200);
    pg.exec("GRANT ALL ON tidepool_fleet_lease TO tp_md5");
    wait_for(ttl * 3, "the lease is back", || {
        cap(&a).unwrap_or(0.0) > 1.0
    });
    load.stop();
    a.stop();
    b.stop();
}
