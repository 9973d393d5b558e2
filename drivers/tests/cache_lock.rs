//! The cross-process lock against a real redis-server: two processes (this
//! test binary re-run as a child) compute once in total, a holder killed
//! with SIGKILL blocks others only until its lease ends, a holder whose
//! lease ran out cannot release its successor's lock, and both wait-timeout
//! policies.

mod cache_common;

use std::cell::Cell;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_common::{config, on_workers, pool, prefix, wait_until, wait_until_blocking, Report};
use tidepool_drivers::cache::{Cache, CacheConfig, CacheError, OnTimeout};
use tidepool_drivers::redis::Connection;
use tidepool_engine::rt::{self, time};
use tidepool_testkit::RedisServer;

/// Set in a child: `<mode> <redis url> <key prefix>`.
const CHILD_ENV: &str = "TIDEPOOL_CACHE_LOCK_CHILD";

fn child_args() -> Option<(String, String, String)> {
    let v = std::env::var(CHILD_ENV).ok()?;
    let mut it = v.splitn(3, ' ').map(str::to_string);
    Some((it.next()?, it.next()?, it.next()?))
}

/// This binary again, running only `test`, in child `mode`.
fn spawn_child(test: &str, mode: &str, url: &str, prefix: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--test-threads=1", "--nocapture"])
        .env(CHILD_ENV, format!("{mode} {url} {prefix}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn report(by: String) -> Report {
    Report {
        day: "2024-02-29".into(),
        rows: 10_000,
        by,
    }
}

/// What each process of the two-process test does: meet the other at a
/// Redis-side rendezvous, then 2 workers x 50 callers on one cold key.
/// Every computation bumps a Redis-side counter.
fn two_process_callers(url: &str, pre: &str) -> Report {
    let ready = format!("{pre}ready");
    rt::block_on(async {
        let c = Connection::open(url).await.unwrap();
        c.incr(&ready).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.get::<i64>(&ready).await.unwrap() < 2 {
            assert!(Instant::now() < deadline, "the other process never came");
            time::sleep(Duration::from_millis(2)).await;
        }
    });
    let p = pool(url, 2);
    let cache = Cache::new("two", config(pre)).unwrap();
    let (url, pre) = (url.to_string(), pre.to_string());
    let out = on_workers(2, move |i| {
        let (p, cache, url, pre) = (p.clone(), cache.clone(), url.clone(), pre.clone());
        async move {
            let local = cache.local(p.local(i));
            let tasks: Vec<_> = (0..50)
                .map(|_| {
                    let (local, url, pre) = (local.clone(), url.clone(), pre.clone());
                    rt::spawn(async move {
                        local
                            .get_or_compute("k", Duration::from_secs(30), || async move {
                                let c = Connection::open(&url).await.unwrap();
                                c.incr(format!("{pre}computes")).await.unwrap();
                                time::sleep(Duration::from_millis(300)).await;
                                Ok::<_, String>(report(format!("pid {}", std::process::id())))
                            })
                            .await
                            .unwrap()
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        }
    });
    let all: Vec<Report> = out.into_iter().flatten().collect();
    assert!(all.iter().all(|r| *r == all[0]));
    all[0].clone()
}

#[test]
fn two_processes_compute_once_in_total() {
    if let Some((mode, url, pre)) = child_args() {
        if mode == "two" {
            let r = two_process_callers(&url, &pre);
            println!("CACHE_VALUE {}", serde_json::to_string(&r).unwrap());
        }
        return;
    }
    let server = RedisServer::shared();
    let pre = prefix("two");
    let child = spawn_child(
        "two_processes_compute_once_in_total",
        "two",
        &server.url(),
        &pre,
    );
    let mine = two_process_callers(&server.url(), &pre);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed:\n{stdout}");
    let theirs: Report = stdout
        .lines()
        // The harness's "test ... " has no newline before it.
        .find_map(|l| l.split_once("CACHE_VALUE ").map(|(_, j)| j))
        .map(|j| serde_json::from_str(j).unwrap())
        .unwrap_or_else(|| panic!("no value from the child:\n{stdout}"));
    assert_eq!(mine, theirs, "both processes got the same value");
    let computes = server.cli(&["GET", &format!("{pre}computes")]);
    assert_eq!(
        computes.trim(),
        "1",
        "one computation across both processes"
    );
}

#[test]
fn a_killed_holders_lock_expires_with_its_lease() {
    let lease = Duration::from_millis(1500);
    let cfg = |pre: &str| CacheConfig {
        lease,
        wait_timeout: Duration::from_secs(10),
        // Success below then proves the lock was taken, not given up on.
        on_timeout: OnTimeout::Fail,
        ..config(pre)
    };
    if let Some((mode, url, pre)) = child_args() {
        if mode == "hold" {
            let p = pool(&url, 1);
            let cache = Cache::new("holder", cfg(&pre)).unwrap();
            rt::block_on(async {
                let local = cache.local(p.local(0));
                let _ = local
                    .get_or_compute("k", Duration::from_secs(30), || async {
                        let c = Connection::open(&url).await.unwrap();
                        c.set(format!("{pre}holding"), "1").await.unwrap();
                        std::future::pending::<Result<Report, String>>().await
                    })
                    .await;
            });
            unreachable!("the holder computes until it is killed");
        }
        return;
    }
    let server = RedisServer::shared();
    let pre = prefix("killed");
    let mut child = spawn_child(
        "a_killed_holders_lock_expires_with_its_lease",
        "hold",
        &server.url(),
        &pre,
    );
    wait_until_blocking("the child holds the lock", Duration::from_secs(20), || {
        server.cli(&["EXISTS", &format!("{pre}holding")]).trim() == "1"
    });
    let lock = format!("lock:{pre}k");
    // Taken before the server measures, so `seen + pttl` is no later than
    // the real expiry.
    let seen = Instant::now();
    let pttl: u64 = server.cli(&["PTTL", &lock]).trim().parse().unwrap();
    assert!(pttl > 0 && pttl <= lease.as_millis() as u64, "{pttl}");
    child.kill().unwrap(); // SIGKILL: no destructor releases anything
    child.wait().unwrap();
    assert_eq!(server.cli(&["EXISTS", &lock]).trim(), "1", "still held");

    let p = pool(&server.url(), 1);
    let cache = Cache::new("survivor", cfg(&pre)).unwrap();
    let computes = Rc::new(Cell::new(0));
    let v = rt::block_on(async {
        let local = cache.local(p.local(0));
        let computes = computes.clone();
        local
            .get_or_compute("k", Duration::from_secs(30), || async move {
                computes.set(computes.get() + 1);
                Ok::<_, String>(report("survivor".into()))
            })
            .await
            .unwrap()
    });
    assert_eq!(v.by, "survivor");
    assert_eq!(computes.get(), 1);
    assert!(
        seen.elapsed() >= Duration::from_millis(pttl),
        "computed only once the dead holder's lease ran out ({:?} < {pttl} ms)",
        seen.elapsed()
    );
    let s = cache.stats();
    assert_eq!((s.lock_timeouts, s.lock_wait.total), (0, 1), "{s:?}");
}

/// Two `Cache` declarations share nothing in process, so they behave like
/// two processes. A computes for longer than its lease; B takes the lock
/// after it; A's release must leave B's lock alone.
#[test]
fn a_holder_past_its_lease_cannot_release_its_successors_lock() {
    let server = RedisServer::shared();
    let pre = prefix("nonholder");
    let cfg = CacheConfig {
        lease: Duration::from_millis(300),
        wait_timeout: Duration::from_secs(10),
        on_timeout: OnTimeout::Fail,
        ..config(&pre)
    };
    let a = Cache::new("a", cfg.clone()).unwrap();
    let b = Cache::new("b", cfg).unwrap();
    let p = pool(&server.url(), 1);
    let lock = format!("lock:{pre}k");
    rt::block_on(async {
        let shard = p.local(0);
        let (la, lb) = (a.local(shard.clone()), b.local(shard));
        let ttl = Duration::from_secs(30);
        let (a_computing, a_go) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(false)));
        let (b_computing, b_go) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(false)));
        let ta = {
            let (computing, go) = (a_computing.clone(), a_go.clone());
            rt::spawn(async move {
                la.get_or_compute("k", ttl, || async move {
                    computing.set(true);
                    wait_until("A released", Duration::from_secs(10), || go.get()).await;
                    Ok::<_, String>(report("A".into()))
                })
                .await
            })
        };
        wait_until("A computing", Duration::from_secs(5), || a_computing.get()).await;
        let tb = {
            let (computing, go) = (b_computing.clone(), b_go.clone());
            rt::spawn(async move {
                lb.get_or_compute("k", ttl, || async move {
                    computing.set(true);
                    wait_until("B released", Duration::from_secs(10), || go.get()).await;
                    Ok::<_, String>(report("B".into()))
                })
                .await
            })
        };
        // B gets the lock only when A's lease has run out.
        wait_until("B computing", Duration::from_secs(5), || b_computing.get()).await;
        a_go.set(true);
        assert_eq!(ta.await.unwrap().unwrap().by, "A");
        assert_eq!(
            server.cli(&["EXISTS", &lock]).trim(),
            "1",
            "A's release left B's lock in place"
        );
        b_go.set(true);
        assert_eq!(tb.await.unwrap().unwrap().by, "B");
        assert_eq!(
            server.cli(&["EXISTS", &lock]).trim(),
            "0",
            "B released its own"
        );
    });
    assert_eq!(b.stats().lock_wait.total, 1);
}

fn foreign_lock(server: &RedisServer, pre: &str) -> String {
    let lock = format!("lock:{pre}k");
    server.cli(&["SET", &lock, "someone-else", "PX", "10000"]);
    lock
}

#[test]
fn wait_timeout_fail_gives_every_waiter_the_error() {
    let server = RedisServer::shared();
    let pre = prefix("timeout-fail");
    let lock = foreign_lock(server, &pre);
    let p = pool(&server.url(), 1);
    let wait = Duration::from_millis(300);
    let cache = Cache::new(
        "timeout-fail",
        CacheConfig {
            wait_timeout: wait,
            on_timeout: OnTimeout::Fail,
            ..config(&pre)
        },
    )
    .unwrap();
    let computes = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    rt::block_on(async {
        let local = cache.local(p.local(0));
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (local, computes) = (local.clone(), computes.clone());
                rt::spawn(async move {
                    local
                        .get_or_compute("k", Duration::from_secs(30), || async move {
                            computes.fetch_add(1, SeqCst);
                            Ok::<_, String>(report("never".into()))
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            match t.await.unwrap() {
                Err(CacheError::LockTimeout { waited }) => assert!(waited >= wait),
                other => panic!("{other:?}"),
            }
        }
    });
    let elapsed = started.elapsed();
    assert!(
        elapsed >= wait && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(computes.load(SeqCst), 0);
    let s = cache.stats();
    assert_eq!(
        (s.lock_timeouts, s.computes),
        (1, 0),
        "one process-level wait"
    );
    assert_eq!(server.cli(&["GET", &lock]).trim(), "someone-else");
}

#[test]
fn wait_timeout_compute_computes_once_and_leaves_the_foreign_lock() {
    let server = RedisServer::shared();
    let pre = prefix("timeout-compute");
    let lock = foreign_lock(server, &pre);
    let p = pool(&server.url(), 1);
    let wait = Duration::from_millis(300);
    let cache = Cache::new(
        "timeout-compute",
        CacheConfig {
            wait_timeout: wait,
            on_timeout: OnTimeout::Compute,
            ..config(&pre)
        },
    )
    .unwrap();
    let computes = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    rt::block_on(async {
        let local = cache.local(p.local(0));
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (local, computes) = (local.clone(), computes.clone());
                rt::spawn(async move {
                    local
                        .get_or_compute("k", Duration::from_secs(30), || async move {
                            computes.fetch_add(1, SeqCst);
                            Ok::<_, String>(report("anyway".into()))
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().by, "anyway");
        }
        // Stored: the next call is a hit.
        let v = local
            .get_or_compute("k", Duration::from_secs(30), || async {
                Ok::<_, String>(report("must not run".into()))
            })
            .await
            .unwrap();
        assert_eq!(v.by, "anyway");
    });
    assert!(started.elapsed() >= wait);
    assert_eq!(computes.load(SeqCst), 1);
    let s = cache.stats();
    assert_eq!((s.lock_timeouts, s.computes, s.hits), (1, 1, 1), "{s:?}");
    assert_eq!(server.cli(&["GET", &lock]).trim(), "someone-else");
}
