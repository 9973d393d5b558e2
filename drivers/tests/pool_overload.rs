//! The acquire queue's discipline against real PostgreSQL: a pool of two
//! connections, callers holding one for 20 ms each, far more callers than
//! it can serve. FIFO and the adaptive mode in the same run, on the same
//! load: FIFO sheds nothing and every caller waits its turn; the adaptive
//! mode sheds (never a critical caller), mostly on arrival, serves
//! critical callers first, and turns away at arrival a caller whose
//! deadline the queue cannot meet.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tidepool_drivers::pg::Config;
use tidepool_drivers::pool::pg::PgManager;
use tidepool_drivers::pool::{
    AcquireError, Class, Pool, PoolConfig, QueueConfig, QueueMode, ShedReason,
};
use tidepool_engine::rt::{self, time};
use tidepool_testkit::{PgServer, PgUser};

#[derive(Default)]
struct Outcome {
    /// Waits of the acquires that got a connection, by class.
    waits: [Vec<Duration>; 3],
    shed: [[u64; 2]; 3],
    /// Standing-queue sheds turned away on arrival (never queued), and
    /// those shed after waiting.
    standing_at_arrival: u64,
    standing_after_waiting: u64,
    other_errors: Vec<String>,
}

fn p99(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v.get((v.len() * 99 / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// The routes of `overload_by_route`, one per class.
const ROUTES: [&str; 3] = ["/checkout", "/browse", "/export"];

/// 12 callers in a loop for `run`, classes round-robin, on a pool of 2.
fn overload(server: &PgServer, app: &str, mode: QueueMode, acquire_timeout: Duration) -> Outcome {
    overload_with(server, app, mode, acquire_timeout, false)
}

/// The same, each caller naming its route (`get_for`) and the pool's
/// configuration giving each route its class.
fn overload_by_route(server: &PgServer, app: &str) -> Outcome {
    overload_with(
        server,
        app,
        QueueMode::Adaptive,
        Duration::from_secs(5),
        true,
    )
}

fn overload_with(
    server: &PgServer,
    app: &str,
    mode: QueueMode,
    acquire_timeout: Duration,
    by_route: bool,
) -> Outcome {
    let mut cfg = PoolConfig {
        max_open: 2,
        acquire_timeout,
        queue: QueueConfig {
            mode,
            ..QueueConfig::default()
        },
        ..PoolConfig::default()
    };
    if by_route {
        for c in Class::ALL {
            cfg.classes.insert(ROUTES[c as usize].to_string(), c);
        }
    }
    let url = Config::from_url(&server.url(PgUser::Md5))
        .unwrap()
        .application_name(app);
    let pool = Pool::new(app, cfg, PgManager::new(url), 1).unwrap();
    rt::block_on(async move {
        let local = pool.local(0);
        let out = Rc::new(RefCell::new(Outcome::default()));
        let until = Instant::now() + Duration::from_millis(1500);
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let (local, out) = (local.clone(), out.clone());
                let class = Class::ALL[i % 3];
                rt::spawn(async move {
                    while Instant::now() < until {
                        let t0 = Instant::now();
                        let got = if by_route {
                            local.get_for(ROUTES[class as usize]).await
                        } else {
                            local.get_as("/overload", class).await
                        };
                        match got {
                            Ok(mut c) => {
                                out.borrow_mut().waits[class as usize].push(t0.elapsed());
                                c.execute("SELECT pg_sleep(0.02)", &[]).await.unwrap();
                            }
                            Err(AcquireError::Shed { reason, waited, .. }) => {
                                {
                                    let mut o = out.borrow_mut();
                                    o.shed[class as usize][reason as usize] += 1;
                                    if reason == ShedReason::Standing {
                                        if waited.is_zero() {
                                            o.standing_at_arrival += 1;
                                        } else {
                                            o.standing_after_waiting += 1;
                                        }
                                    }
                                }
                                // A shed caller's client backs off a little.
                                time::sleep(Duration::from_millis(5)).await;
                            }
                            Err(e) => out.borrow_mut().other_errors.push(e.to_string()),
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let s = local.stats();
        assert_eq!((s.in_use, s.waiting), (0, 0), "{s:?}");
        // The pool's own counters agree with what callers saw.
        let seen = out.borrow().shed;
        assert_eq!(s.sheds, seen);
        Rc::try_unwrap(out).ok().unwrap().into_inner()
    })
}

#[test]
fn routes_take_their_class_from_the_pool_configuration() {
    let out = overload_by_route(PgServer::shared(), "overload_routes");
    assert!(out.other_errors.is_empty(), "{:?}", out.other_errors);
    let standing = |c: Class| out.shed[c as usize][ShedReason::Standing as usize];
    // The pool counts sheds by class: the configured class reached it.
    assert!(
        standing(Class::Sheddable) > 0,
        "the /export route is shed as sheddable: {:?}",
        out.shed
    );
    assert_eq!(
        standing(Class::Critical),
        0,
        "the /checkout route is critical: {:?}",
        out.shed
    );
}

#[test]
fn fifo_waits_its_turn_and_adaptive_sheds_fast_sparing_critical_callers() {
    let server = PgServer::shared();
    let mut fifo = overload(
        server,
        "overload_fifo",
        QueueMode::Fifo,
        Duration::from_secs(5),
    );
    let mut adaptive = overload(
        server,
        "overload_adaptive",
        QueueMode::Adaptive,
        Duration::from_secs(5),
    );
    assert!(fifo.other_errors.is_empty(), "{:?}", fifo.other_errors);
    assert!(
        adaptive.other_errors.is_empty(),
        "{:?}",
        adaptive.other_errors
    );
    assert_eq!(fifo.shed, [[0; 2]; 3], "FIFO sheds nothing");
    let standing = |o: &Outcome, c: Class| o.shed[c as usize][ShedReason::Standing as usize];
    assert!(
        standing(&adaptive, Class::Default) + standing(&adaptive, Class::Sheddable) > 0,
        "a standing queue was shed: {:?}",
        adaptive.shed
    );
    assert_eq!(
        standing(&adaptive, Class::Critical),
        0,
        "critical callers are never shed"
    );
    // While the queue stands, most of the shed are turned away on arrival
    // (a 503 at once) rather than after waiting out their class's limit.
    eprintln!(
        "standing sheds: {} on arrival, {} after waiting",
        adaptive.standing_at_arrival, adaptive.standing_after_waiting
    );
    assert!(
        adaptive.standing_at_arrival > adaptive.standing_after_waiting,
        "{} on arrival, {} after waiting",
        adaptive.standing_at_arrival,
        adaptive.standing_after_waiting
    );
    let fifo_p99 = p99(&mut fifo.waits[Class::Critical as usize]);
    let critical_p99 = p99(&mut adaptive.waits[Class::Critical as usize]);
    eprintln!(
        "critical callers' wait p99: FIFO {fifo_p99:?}, adaptive {critical_p99:?}; adaptive sheds {:?}",
        adaptive.shed
    );
    assert!(
        critical_p99 < fifo_p99,
        "critical callers wait less under the adaptive queue: {critical_p99:?} vs {fifo_p99:?}"
    );
}

#[test]
fn a_caller_whose_deadline_the_queue_cannot_meet_is_turned_away_at_once() {
    let server = PgServer::shared();
    // 30 ms to get a connection, behind a queue of up to ten 20 ms holds
    // over two connections: most newcomers cannot make it.
    let out = overload(
        server,
        "overload_deadline",
        QueueMode::Adaptive,
        Duration::from_millis(30),
    );
    let deadline: u64 = out
        .shed
        .iter()
        .map(|c| c[ShedReason::Deadline as usize])
        .sum();
    assert!(deadline > 0, "{:?}", out.shed);
    assert!(
        out.other_errors
            .iter()
            .all(|e| e.contains("no connection after")),
        "{:?}",
        out.other_errors
    );
}
