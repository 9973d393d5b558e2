//! Pools of real PostgreSQL connections: exhaustion, resizing under load,
//! the server killed and restarted, bounded connect storms, idle reaping,
//! broken connections, and the warm-up semaphore.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tidepool_drivers::pg::Config;
use tidepool_drivers::pool::pg::{
    try_warmup_slot, wait_warmup_slot, PgManager, PgSharedManager, WarmupSlots,
};
use tidepool_drivers::pool::{
    AcquireError, CloseReason, LocalPool, Pool, PoolConfig, QueueConfig, QueueMode,
};
use tidepool_engine::rt::{self, time};
use tidepool_testkit::sockets::wait_closed_by_server;
use tidepool_testkit::{PgServer, PgUser};

mod common;
use common::{survive_restart, wait_until};

fn config(server: &PgServer, app: &str) -> Config {
    Config::from_url(&server.url(PgUser::Scram))
        .unwrap()
        .application_name(app)
}

fn pool(server: &PgServer, app: &str, cfg: PoolConfig) -> Pool<PgManager> {
    Pool::new(app, cfg, PgManager::new(config(server, app)), 1).unwrap()
}

/// Sessions the server sees for one application name.
fn sessions(server: &PgServer, app: &str) -> usize {
    server
        .psql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"
        ))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn exhaustion_times_out_with_a_clear_error() {
    let server = PgServer::shared();
    rt::block_on(async {
        let cfg = PoolConfig {
            max_open: 2,
            // Room for the first SCRAM handshakes of an unoptimized build.
            acquire_timeout: Duration::from_secs(1),
            ..PoolConfig::default()
        };
        let p = pool(server, "pool_exhaust", cfg);
        let local = p.local(0);
        let a = local.get().await.unwrap();
        let b = local.get().await.unwrap();
        let started = Instant::now();
        let err = local
            .get()
            .await
            .err()
            .expect("third acquire must time out");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        match &err {
            AcquireError::Timeout {
                pool,
                max_open,
                open,
                in_use,
                ..
            } => {
                assert_eq!(
                    (pool.as_str(), *max_open, *open, *in_use),
                    ("pool_exhaust", 2, 2, 2)
                );
            }
            other => panic!("unexpected {other}"),
        }
        assert_eq!(local.stats().acquire_timeouts, 1);
        drop((a, b));
        let mut c = local.get().await.unwrap();
        let row = c.query_one("SELECT 1::int4", &[]).await.unwrap();
        assert_eq!(row.get::<i32>(0), 1);
        drop(c);
        local.assert_invariants();
    });
}

#[test]
fn wrong_password_is_one_clear_error() {
    let server = PgServer::shared();
    rt::block_on(async {
        let cfg = Config::from_url(&server.url(PgUser::Scram))
            .unwrap()
            .password("wrong");
        let p = Pool::new("pool_badpw", PoolConfig::default(), PgManager::new(cfg), 1).unwrap();
        let local = p.local(0);
        let started = Instant::now();
        let err = local.get().await.err().unwrap();
        assert!(matches!(err, AcquireError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("password"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "not waiting out the timeout"
        );
        assert_eq!(local.stats().connects, 0);
        assert_eq!(
            local.stats().connect_failures.iter().sum::<u64>(),
            1,
            "no retry loop"
        );
    });
}

#[test]
fn resize_under_load_stays_within_the_cap() {
    let server = PgServer::shared();
    rt::block_on(async {
        let cfg = PoolConfig {
            max_open: 2,
            acquire_timeout: Duration::from_secs(10),
            // Every caller waits its turn: this is about resizing, and
            // sixteen callers on two connections is a standing queue the
            // default (adaptive) queue would shed.
            queue: QueueConfig {
                mode: QueueMode::Fifo,
                ..QueueConfig::default()
            },
            ..PoolConfig::default()
        };
        let p = pool(server, "pool_resize", cfg);
        let local = p.local(0);
        let done = Rc::new(Cell::new(0u32));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (local, done): (LocalPool<PgManager>, _) = (local.clone(), done.clone());
            tasks.push(rt::spawn(async move {
                for _ in 0..15 {
                    let mut c = local.get().await.unwrap();
                    c.execute("SELECT pg_sleep(0.005)", &[]).await.unwrap();
                    done.set(done.get() + 1);
                }
            }));
        }
        wait_until(Duration::from_secs(10), || done.get() > 40).await;
        assert!(sessions(server, "pool_resize") <= 2);
        p.set_max_open(6);
        wait_until(Duration::from_secs(10), || local.stats().open == 6).await;
        assert!(sessions(server, "pool_resize") <= 6);
        p.set_max_open(1);
        wait_until(Duration::from_secs(10), || local.stats().open <= 1).await;
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(done.get(), 16 * 15);
        let s = local.stats();
        assert!(s.open <= 1 && s.in_use == 0 && s.waiting == 0, "{s:?}");
        assert!(s.closes[CloseReason::Shrink as usize] >= 5);
        local.assert_invariants();
        wait_until(Duration::from_secs(5), || {
            sessions(server, "pool_resize") <= 1
        })
        .await;
    });
}

#[test]
fn connect_storm_is_bounded() {
    let server = PgServer::shared();
    rt::block_on(async {
        let cfg = PoolConfig {
            max_open: 30,
            max_connecting: 2,
            acquire_timeout: Duration::from_secs(20),
            ..PoolConfig::default()
        };
        let p = pool(server, "pool_storm", cfg);
        let local = p.local(0);
        let mut tasks = Vec::new();
        for _ in 0..60 {
            let local = local.clone();
            tasks.push(rt::spawn(async move {
                let mut c = local.get().await.unwrap();
                c.execute("SELECT pg_sleep(0.05)", &[]).await.unwrap();
            }));
        }
        let mut max_opening = 0;
        let mut max_seen = 0;
        while local.stats().acquires < 60 {
            max_opening = max_opening.max(local.stats().opening);
            max_seen = max_seen.max(sessions(server, "pool_storm"));
            time::sleep(Duration::from_millis(10)).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(max_opening <= 2, "connects in flight {max_opening}");
        assert!(max_seen <= 30, "server saw {max_seen} sessions");
        assert!(local.stats().open <= 30);
        local.assert_invariants();
    });
}

#[test]
fn broken_connection_is_never_handed_out_again() {
    let server = PgServer::shared();
    rt::block_on(async {
        let p = pool(server, "pool_broken", PoolConfig::default());
        let local = p.local(0);
        let mut c = local.get().await.unwrap();
        let pid = c.backend_pid().unwrap();
        server.exec(&format!("SELECT pg_terminate_backend({pid})"));
        assert!(c.query_one("SELECT 1::int4", &[]).await.is_err());
        drop(c);
        assert_eq!(local.stats().closes[CloseReason::Broken as usize], 1);
        let mut c = local.get().await.unwrap();
        assert_ne!(c.backend_pid(), Some(pid));
        c.query_one("SELECT 1::int4", &[]).await.unwrap();
        // Left inside a transaction: closed, not returned.
        c.batch_execute("BEGIN").await.unwrap();
        drop(c);
        assert_eq!(local.stats().closes[CloseReason::Broken as usize], 2);
        assert_eq!(local.stats().open, 0);
        local.assert_invariants();
    });
}

#[test]
fn idle_reaping_keeps_min_idle() {
    let server = PgServer::shared();
    rt::block_on(async {
        let cfg = PoolConfig {
            max_open: 6,
            min_idle: 2,
            idle_timeout: Duration::from_millis(100),
            reap_interval: Duration::from_millis(50),
            warmup_jitter: Duration::ZERO,
            ..PoolConfig::default()
        };
        let p = pool(server, "pool_reap", cfg);
        let local = p.local(0);
        // Warm-up opens min_idle on its own.
        wait_until(Duration::from_secs(5), || local.stats().open == 2).await;
        let held: Vec<_> = {
            let mut v = Vec::new();
            for _ in 0..5 {
                v.push(local.get().await.unwrap());
            }
            v
        };
        drop(held);
        assert_eq!(local.stats().idle, 5);
        wait_until(Duration::from_secs(5), || local.stats().open == 2).await;
        time::sleep(Duration::from_millis(300)).await;
        assert_eq!(local.stats().open, 2, "min_idle kept");
        assert_eq!(sessions(server, "pool_reap"), 2);
        local.assert_invariants();
    });
}

#[test]
fn killed_and_restarted_server_recovers_without_leaks() {
    let server = PgServer::start().expect("private server");
    rt::block_on(async {
        let cfg = PoolConfig {
            max_open: 4,
            acquire_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            check_after_idle: Some(Duration::ZERO),
            ..PoolConfig::default()
        };
        let p = pool(&server, "pool_restart", cfg);
        let local = p.local(0);
        let query = |local: LocalPool<PgManager>| async move {
            let mut c = local.get().await.map_err(|e| e.to_string())?;
            c.query_one("SELECT 1::int4", &[])
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        };
        survive_restart(&local, 8, query, || server.kill9(), || server.restart()).await;
        assert!(local.stats().open <= 4);
    });
}

#[test]
fn warmup_semaphore_admits_n_and_frees_a_crashed_holders_slot() {
    let server = PgServer::shared();
    rt::block_on(async {
        let cfg = config(server, "pool_warmup_gate");
        let slots = WarmupSlots {
            slots: 2,
            key_base: 0x7469_6465_0000,
            wait_max: Duration::from_secs(10),
        };
        let a = try_warmup_slot(&cfg, &slots)
            .await
            .unwrap()
            .expect("first process gets a slot");
        let b = try_warmup_slot(&cfg, &slots)
            .await
            .unwrap()
            .expect("second process gets a slot");
        assert_ne!(a.slot, b.slot);
        assert!(
            try_warmup_slot(&cfg, &slots).await.unwrap().is_none(),
            "third must wait"
        );
        // Sessions the waiter opens start after this (the server's clock).
        let spawned = server.psql("SELECT now()").trim().to_string();
        let waiter = rt::spawn({
            let (cfg, slots) = (cfg.clone(), slots.clone());
            async move { wait_warmup_slot(&cfg, &slots).await.map(|s| s.slot) }
        });
        // The waiter retries on one session, not a new connection per try:
        // across two of its tries (its query_start moves), the first session
        // it opened is still the one trying.
        let waiter_session = || -> Option<(String, String)> {
            let out = server.psql(&format!(
                "SELECT pid, query_start FROM pg_stat_activity \
                 WHERE application_name = 'pool_warmup_gate' AND pid <> pg_backend_pid() \
                 AND backend_start > '{spawned}' AND query LIKE '%pg_try_advisory_lock%' \
                 ORDER BY backend_start LIMIT 1"
            ));
            let line = out.lines().next()?.trim().to_string();
            let (pid, start) = line.split_once('|')?;
            Some((pid.trim().to_string(), start.trim().to_string()))
        };
        let mut first = None;
        while first.is_none() {
            first = waiter_session();
            time::sleep(Duration::from_millis(5)).await;
        }
        let (pid, start) = first.unwrap();
        loop {
            match waiter_session() {
                Some((p, s)) if s != start => {
                    assert_eq!(p, pid, "each try opened a new session");
                    break;
                }
                _ => time::sleep(Duration::from_millis(5)).await,
            }
        }
        // The first holder "crashes": its session ends, the lock goes with it.
        let holder_pid: i32 = server
            .psql(&format!(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = {} AND granted",
                (slots.key_base + i64::from(a.slot)) as u32
            ))
            .trim()
            .parse()
            .unwrap();
        server.exec(&format!("SELECT pg_terminate_backend({holder_pid})"));
        let got = waiter.await.unwrap();
        assert_eq!(got, Some(a.slot), "the freed slot goes to the waiter");
        drop(b);
    });
}

fn shared_pool(server: &PgServer, app: &str, cfg: PoolConfig) -> Pool<PgSharedManager> {
    Pool::new(app, cfg, PgSharedManager::new(config(server, app)), 1).unwrap()
}

#[test]
fn shared_pool_packs_callers_onto_few_pipelined_connections() {
    let server = PgServer::shared();
    rt::block_on(async {
        let cfg = PoolConfig {
            max_open: 3,
            max_in_flight: 16,
            acquire_timeout: Duration::from_secs(5),
            ..PoolConfig::default()
        };
        let p = shared_pool(server, "pool_pg_shared", cfg);
        let local = p.local(0);
        let tasks: Vec<_> = (0..300i32)
            .map(|i| {
                let local = local.clone();
                rt::spawn(async move {
                    let c = local.get().await.unwrap();
                    c.query_one("SELECT $1::int4 + 1", &[&i])
                        .await
                        .unwrap()
                        .get::<i32>(0)
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), i as i32 + 1);
        }
        // The burst asked for every connection the cap allows; the callers
        // may all have been served before the last one finished connecting.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while local.stats().opening > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "a connect never finished"
            );
            rt::time::sleep(Duration::from_millis(1)).await;
        }
        let s = local.stats();
        // 300 concurrent callers, 16 per connection: the cap binds.
        assert_eq!(s.open, 3, "connections are counted and capped");
        assert_eq!(sessions(server, "pool_pg_shared"), 3);
        assert!(s.acquires >= 300);
        assert_eq!(s.in_use, 0);
        local.assert_invariants();
    });
}

#[test]
fn shared_pool_recovers_from_a_killed_server() {
    let server = PgServer::start().expect("private server");
    rt::block_on(async {
        let cfg = PoolConfig {
            max_open: 2,
            max_in_flight: 8,
            acquire_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            ..PoolConfig::default()
        };
        let p = shared_pool(&server, "pool_shared_restart", cfg);
        let local = p.local(0);
        let query = |local: LocalPool<PgSharedManager>| async move {
            let c = local.get().await.map_err(|e| e.to_string())?;
            c.query_one("SELECT 1::int4", &[])
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        };
        survive_restart(&local, 8, query, || server.kill9(), || server.restart()).await;
        assert!(local.stats().open <= 2);
    });
}

/// A shared connection whose session the server ended while it sat idle
/// (`pg_terminate_backend`: a FATAL, then the end of stream) is taken out
/// at the next checkout, which comes before its driver task has had a
/// turn to read either (nothing awaits between the two): the socket shows
/// the end behind the unread FATAL. The caller gets a fresh connection.
#[test]
fn a_shared_connection_ended_while_idle_is_never_handed_out() {
    let server = PgServer::start().expect("private server");
    rt::block_on(async {
        let cfg = PoolConfig {
            max_open: 1,
            max_in_flight: 8,
            acquire_timeout: Duration::from_secs(5),
            ..PoolConfig::default()
        };
        let p = shared_pool(&server, "pool_shared_ended", cfg);
        let local = p.local(0);
        let pid = {
            let c = local.get().await.unwrap();
            c.query_one("SELECT 1::int4", &[]).await.unwrap();
            c.backend_pid().unwrap()
        };
        server.psql(&format!("SELECT pg_terminate_backend({pid})"));
        let cut = wait_closed_by_server(server.port(), Duration::from_secs(5));
        assert_eq!(cut, 1, "the pool's connection saw the server's FIN");
        let c = local.get().await.unwrap();
        assert_ne!(
            c.backend_pid(),
            Some(pid),
            "the ended session was handed out"
        );
        c.query_one("SELECT 1::int4", &[]).await.unwrap();
        drop(c);
        let s = local.stats();
        assert_eq!(s.closes[CloseReason::FailedCheck as usize], 1, "{s:?}");
        assert_eq!(s.open, 1);
        local.assert_invariants();
    });
}

/// Idle connections whose sessions the server ended (a restart or
/// `pg_terminate_backend` sends them a FATAL and closes them) are never
/// handed out: every caller afterwards gets a working connection.
#[test]
fn idle_connections_the_server_closed_are_never_handed_out() {
    let server = PgServer::shared();
    let app = "pool_pg_terminated";
    rt::block_on(async {
        let cfg = PoolConfig {
            max_open: 2,
            acquire_timeout: Duration::from_secs(5),
            ..PoolConfig::default()
        };
        let p = pool(server, app, cfg);
        let local = p.local(0);
        let (mut a, mut b) = (local.get().await.unwrap(), local.get().await.unwrap());
        a.query_one("SELECT 1::int4", &[]).await.unwrap();
        b.query_one("SELECT 1::int4", &[]).await.unwrap();
        drop((a, b));
        assert_eq!(local.stats().idle, 2);
        server.exec(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{app}'"
        ));
        // The backends have exited, so their FATAL and close are on the sockets.
        wait_until(Duration::from_secs(10), || sessions(server, app) == 0).await;
        for i in 0..4i32 {
            let mut c = local.get().await.unwrap();
            let row = c.query_one("SELECT $1::int4", &[&i]).await;
            assert_eq!(row.expect("a working connection").get::<i32>(0), i);
        }
        assert_eq!(local.stats().closes[CloseReason::FailedCheck as usize], 2);
    });
}

/// Idle connections the server closed are found by the reaper, with no
/// checkout: the pool's count of open connections is what the server has,
/// and their capacity is free at once.
#[test]
fn the_reaper_closes_idle_connections_the_server_closed() {
    let server = PgServer::shared();
    let app = "pool_pg_reaped_dead";
    rt::block_on(async {
        let cfg = PoolConfig {
            max_open: 2,
            reap_interval: Duration::from_millis(20),
            acquire_timeout: Duration::from_secs(5),
            ..PoolConfig::default()
        };
        let p = pool(server, app, cfg);
        let local = p.local(0);
        let held = (local.get().await.unwrap(), local.get().await.unwrap());
        drop(held);
        assert_eq!(local.stats().open, 2);
        server.exec(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{app}'"
        ));
        wait_until(Duration::from_secs(10), || local.stats().open == 0).await;
        assert_eq!(local.stats().closes[CloseReason::FailedCheck as usize], 2);
    });
}

/// Statements that fail at the database and statements that time out are
/// counted per pool, once each, on exclusive and on shared connections
/// (however many callers share one); integrity violations, the
/// application's own conflicts, are not. The supervisor's signals carry
/// them as errors and timeouts.
#[test]
fn query_errors_and_timeouts_are_counted_for_the_supervisor() {
    use tidepool_drivers::pool::supervised::signals;
    let server = PgServer::shared();
    rt::block_on(async {
        let cfg = config(server, "outcomes").query_timeout(Duration::from_millis(100));
        let exclusive = Pool::new(
            "outcomes",
            PoolConfig::default(),
            PgManager::new(cfg.clone()),
            1,
        )
        .unwrap();
        let shared = Pool::new(
            "outcomes-shared",
            PoolConfig::default(),
            PgSharedManager::new(cfg),
            1,
        )
        .unwrap();
        let (ex, sh) = (exclusive.local(0), shared.local(0));
        let before = (exclusive.stats(), shared.stats());
        {
            let mut c = ex.get().await.unwrap();
            c.batch_execute("create temp table u (k int4 primary key); insert into u values (1)")
                .await
                .unwrap();
            assert!(c.query("select 1/0", &[]).await.is_err());
            assert!(c.execute("insert into u values (1)", &[]).await.is_err()); // 23505
            assert!(matches!(
                c.query("select pg_sleep(2)", &[]).await,
                Err(tidepool_drivers::pg::Error::Timeout)
            ));
        }
        for _ in 0..2 {
            let c = sh.get().await.unwrap();
            assert!(c.query("select * from no_such_table", &[]).await.is_err());
        }
        {
            let (a, b) = (sh.get().await.unwrap(), sh.get().await.unwrap());
            let (ra, rb) = (a.query("select pg_sleep(2)", &[]), b.query("select 1", &[]));
            let (ra, rb) = (ra.await, rb.await);
            assert!(
                matches!(ra, Err(tidepool_drivers::pg::Error::Timeout)),
                "{ra:?}"
            );
            // Pipelined behind the sleep on the one shared connection, it
            // times out too: each caller's timeout counts.
            assert!(
                matches!(rb, Err(tidepool_drivers::pg::Error::Timeout)),
                "{rb:?}"
            );
        }
        let (e, s) = (exclusive.stats(), shared.stats());
        assert_eq!((e.total.query_errors, e.total.query_timeouts), (1, 1));
        assert_eq!((s.total.query_errors, s.total.query_timeouts), (2, 2));
        let sig = signals(
            &e,
            Some(&before.0),
            Duration::from_secs(1),
            Duration::from_millis(5),
        );
        assert_eq!((sig.errors, sig.timeouts), (1, 1));
        let sig = signals(
            &s,
            Some(&before.1),
            Duration::from_secs(1),
            Duration::from_millis(5),
        );
        assert_eq!((sig.errors, sig.timeouts), (2, 2));
    });
}

/// The supervisor's error guard on a real database: a pool whose callers
/// wait grows, but once its statements fail (the table's privileges
/// revoked mid-run) the same waits do not make it grow: it holds, naming
/// the error rate.
#[test]
fn a_pool_whose_queries_fail_does_not_grow() {
    use tidepool_drivers::pool::supervised::Probe;
    use tidepool_supervisor::{Action, Controller, PoolAutoscale, Reason, SupervisedPool, Target};
    let server = PgServer::shared();
    server.exec(
        "CREATE TABLE revoke_guard (k int4); INSERT INTO revoke_guard VALUES (1); \
         GRANT SELECT ON revoke_guard TO tp_md5",
    );
    let cfg = Config::from_url(&server.url(PgUser::Md5))
        .unwrap()
        .application_name("revoke_guard");
    rt::block_on(async {
        let pool = Pool::new(
            "revoke_guard",
            PoolConfig {
                max_open: 2,
                acquire_timeout: Duration::from_secs(5),
                // The pool is always short on purpose (the guard is under
                // test, not shedding): callers wait their turn.
                queue: QueueConfig {
                    mode: QueueMode::Fifo,
                    ..QueueConfig::default()
                },
                ..PoolConfig::default()
            },
            PgManager::new(cfg),
            1,
        )
        .unwrap();
        let local = pool.local(0);
        let rails = PoolAutoscale {
            enabled: true,
            min: 2,
            max: 16,
            target: Target::AcquireWaitP99(Duration::from_millis(5)),
            window: Duration::from_millis(600),
            step: 1,
            cooldown: Duration::from_millis(200),
        };
        let mut controller = Controller::new(rails, 2);
        let mut probe = Probe::new(pool.clone());
        // Eight callers, each holding a connection for 20 ms around one
        // statement (failed or not): the pool is always short.
        let stop = Rc::new(Cell::new(false));
        let failures = Rc::new(Cell::new(0u64));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (local, stop, failures) = (local.clone(), stop.clone(), failures.clone());
                rt::spawn(async move {
                    while !stop.get() {
                        let mut c = local.get().await.unwrap();
                        if c.query("SELECT k FROM revoke_guard", &[]).await.is_err() {
                            failures.set(failures.get() + 1);
                        }
                        time::sleep(Duration::from_millis(20)).await;
                        drop(c);
                    }
                })
            })
            .collect();
        let tick = Duration::from_millis(100);
        let mut step = |probe: &mut Probe<PgManager>| {
            let s = probe.signals(tick);
            let d = controller.step(Instant::now(), &s);
            if let Action::Resize { to, .. } = d.action {
                probe.set_max_open(to);
            }
            (s, d)
        };
        // Succeeding statements: the waits make it grow.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            time::sleep(tick).await;
            let (_, d) = step(&mut probe);
            if matches!(d.action, Action::Resize { from, to } if to > from) {
                break;
            }
            assert!(Instant::now() < deadline, "never grew under waits: {d}");
        }
        server.exec("REVOKE SELECT ON revoke_guard FROM tp_md5");
        // Failing statements: no growth from the first tick that counted
        // errors on, over several windows; the error guard says why.
        let mut erring = false;
        let mut guarded = 0;
        let mut ticks = 0;
        while ticks < 40 {
            time::sleep(tick).await;
            let (s, d) = step(&mut probe);
            if erring {
                ticks += 1;
                assert!(
                    !matches!(d.action, Action::Resize { from, to } if to > from),
                    "grew while statements failed: {d} ({s:?})"
                );
                guarded += usize::from(matches!(d.reason, Reason::ErrorGuard { .. }));
            }
            erring |= s.errors > 0;
            assert!(
                Instant::now() < deadline + Duration::from_secs(20),
                "no error counted"
            );
        }
        assert!(failures.get() > 0);
        assert!(guarded > 0, "the error guard never held the pool");
        stop.set(true);
        for t in tasks {
            t.await.unwrap();
        }
    });
    server.exec("DROP TABLE revoke_guard");
}

/// The supervisor's query latency is the statement's round trip (send to
/// reply), not how long a handler held the connection, for exclusive and
/// shared connections alike.
#[test]
fn query_latency_is_send_to_reply_not_hold_time() {
    use tidepool_drivers::pool::supervised::signals;
    let server = PgServer::shared();
    rt::block_on(async {
        let cfg = config(server, "latency");
        let exclusive = Pool::new(
            "latency",
            PoolConfig::default(),
            PgManager::new(cfg.clone()),
            1,
        )
        .unwrap();
        let shared = Pool::new(
            "latency-shared",
            PoolConfig::default(),
            PgSharedManager::new(cfg),
            1,
        )
        .unwrap();
        let (ex, sh) = (exclusive.local(0), shared.local(0));
        // Connect first: a handshake is not a statement.
        drop(ex.get().await.unwrap());
        drop(sh.get().await.unwrap());
        let before = (exclusive.stats(), shared.stats());
        for _ in 0..3 {
            let mut c = ex.get().await.unwrap();
            c.query("select pg_sleep(0.02)", &[]).await.unwrap();
            // The handler keeps the connection ten times longer.
            time::sleep(Duration::from_millis(200)).await;
            drop(c);
            let c = sh.get().await.unwrap();
            c.query("select pg_sleep(0.02)", &[]).await.unwrap();
            time::sleep(Duration::from_millis(200)).await;
            drop(c);
        }
        for (now, prev) in [(exclusive.stats(), &before.0), (shared.stats(), &before.1)] {
            let q = now.total.query_latency.since(&prev.total.query_latency);
            // Three statements, plus the shared connection's prepare.
            assert!(q.total >= 3, "{}: {q:?}", now.name);
            let s = signals(
                &now,
                Some(prev),
                Duration::from_secs(1),
                Duration::from_millis(5),
            );
            assert!(
                s.query_p99 >= Duration::from_millis(20)
                    && s.query_p99 < Duration::from_millis(200),
                "{}: query p99 {:?} (hold p99 {:?})",
                now.name,
                s.query_p99,
                now.total.hold.since(&prev.total.hold).quantile(0.99)
            );
        }
    });
}

/// Two workers, one shared connection: the worker that owns it is idle,
/// the other runs every statement through a handle to it. The connection
/// is busy, so the owner's reaper never closes it as idle (which would
/// cost a reconnect and could fail statements on their way to it).
#[test]
fn a_connection_used_only_from_another_worker_is_not_reaped_as_idle() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let server = PgServer::shared();
    let cfg = PoolConfig {
        max_open: 1,
        idle_timeout: Duration::from_millis(300),
        reap_interval: Duration::from_millis(50),
        acquire_timeout: Duration::from_secs(5),
        ..PoolConfig::default()
    };
    let app = "pool_pg_used_elsewhere";
    let p = Pool::new(app, cfg, PgSharedManager::new(config(server, app)), 2).unwrap();
    let (opened, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let owner = {
        let (p, opened, done) = (p.clone(), opened.clone(), done.clone());
        std::thread::spawn(move || {
            rt::block_on(async move {
                let local = p.local(0);
                drop(local.get().await.unwrap());
                opened.store(true, Ordering::SeqCst);
                while !done.load(Ordering::SeqCst) {
                    time::sleep(Duration::from_millis(5)).await;
                }
                local.stats()
            })
        })
    };
    while !opened.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let user = {
        let (p, done) = (p.clone(), done.clone());
        std::thread::spawn(move || {
            let r = rt::block_on(async move {
                let local = p.local(1);
                // Five idle timeouts of steady use.
                let start = Instant::now();
                let mut errors = Vec::new();
                while start.elapsed() < Duration::from_millis(1500) {
                    match local.get().await {
                        Ok(c) => {
                            if let Err(e) = c.query_one("SELECT 1::int4", &[]).await {
                                errors.push(e.to_string());
                            }
                        }
                        Err(e) => errors.push(e.to_string()),
                    }
                    time::sleep(Duration::from_millis(20)).await;
                }
                (errors, local.stats())
            });
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    let (errors, user_stats) = user.join().unwrap();
    let owner_stats = owner.join().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        user_stats.connects, 0,
        "served through the owner's connection"
    );
    assert_eq!(
        owner_stats.closes[CloseReason::Idle as usize],
        0,
        "closed as idle while in use elsewhere: {owner_stats:?}"
    );
    assert_eq!(owner_stats.connects, 1, "{owner_stats:?}");
}
