//! `get_or_compute` inside one process, against a real redis-server: hits,
//! single-flight over tasks and workers, a cancelled leader, and compute
//! errors (plain and negatively cached).

mod cache_common;

use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cache_common::{command_calls, config, on_workers, pool, prefix, wait_until, Report};
use tidepool_drivers::cache::{Cache, CacheConfig, CacheError, ComputeError, LocalCache};
use tidepool_engine::rt::{self, time};
use tidepool_testkit::RedisServer;

fn report(by: &str) -> Report {
    Report {
        day: "2024-02-29".into(),
        rows: 10_000,
        by: by.into(),
    }
}

#[test]
fn hits_skip_compute_and_values_round_trip() {
    let server = RedisServer::shared();
    let p = pool(&server.url(), 1);
    let pre = prefix("hits");
    let cache = Cache::new("hits", config(&pre)).unwrap();
    let key = format!("{pre}day");
    rt::block_on(async {
        let local = cache.local(p.local(0));
        let ttl = Duration::from_secs(30);
        let v: Report = local
            .get_or_compute("day", ttl, || async { Ok::<_, String>(report("first")) })
            .await
            .unwrap();
        assert_eq!(v, report("first"));
        let v: Report = local
            .get_or_compute("day", ttl, || async {
                Ok::<_, String>(report("must not run"))
            })
            .await
            .unwrap();
        assert_eq!(v, report("first"), "the second call is a hit");

        // Stored as a header line plus JSON, with the TTL as its expiry.
        let raw = server.cli(&["GET", &key]);
        let (head, body) = raw.split_once('\n').unwrap();
        assert!(head.starts_with("TPC1 v "), "{raw}");
        let stored: Report = serde_json::from_str(body.trim_end()).unwrap();
        assert_eq!(stored, report("first"));
        let pttl: i64 = server.cli(&["PTTL", &key]).trim().parse().unwrap();
        assert!((1..=30_000).contains(&pttl), "{pttl}");

        // Something this code did not write, or a value of another type,
        // is a miss that gets overwritten.
        server.cli(&["SET", &key, "not a cache entry"]);
        let v: Report = local
            .get_or_compute("day", ttl, || async { Ok::<_, String>(report("second")) })
            .await
            .unwrap();
        assert_eq!(v, report("second"));
        let n: u32 = local
            .get_or_compute("day", ttl, || async { Ok::<_, String>(7) })
            .await
            .unwrap();
        assert_eq!(n, 7);

        local.invalidate("day").await.unwrap();
        assert_eq!(server.cli(&["EXISTS", &key]).trim(), "0");
    });
    let s = cache.stats();
    assert_eq!((s.hits, s.misses, s.computes), (1, 3, 3), "{s:?}");
    assert_eq!(s.lock_wait.total, 0, "nobody waited");
    assert_eq!(cache.in_flight(), 0);
}

/// 200 callers on a cold key, spread over two worker threads sharing one
/// `Cache`: one computation, and only one lock attempt reaches Redis (the
/// second worker waits in process, not on Redis).
#[test]
fn cold_key_computes_once_for_200_callers_on_two_workers() {
    let server = RedisServer::start().unwrap();
    let p = pool(&server.url(), 2);
    let cache = Cache::new("cold", config(&prefix("cold"))).unwrap();
    let computes = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(2));
    server.cli(&["CONFIG", "RESETSTAT"]);
    let started = Instant::now();
    let results = {
        let (cache, computes) = (cache.clone(), computes.clone());
        on_workers(2, move |i| {
            let (p, cache, computes, barrier) =
                (p.clone(), cache.clone(), computes.clone(), barrier.clone());
            async move {
                let shard = p.local(i);
                // Connected before the start line, so both workers' callers
                // miss together.
                drop(shard.get().await.unwrap());
                let local = cache.local(shard);
                barrier.wait();
                let tasks: Vec<_> = (0..100)
                    .map(|_| {
                        let (local, computes) = (local.clone(), computes.clone());
                        rt::spawn(async move {
                            local
                                .get_or_compute("k", Duration::from_secs(30), || async move {
                                    computes.fetch_add(1, SeqCst);
                                    // The slow query.
                                    time::sleep(Duration::from_millis(200)).await;
                                    Ok::<_, String>(report(&format!("worker {i}")))
                                })
                                .await
                        })
                    })
                    .collect();
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.unwrap().unwrap());
                }
                out
            }
        })
    };
    let elapsed = started.elapsed();
    assert_eq!(computes.load(SeqCst), 1, "computed once");
    let all: Vec<Report> = results.into_iter().flatten().collect();
    assert_eq!(all.len(), 200);
    assert!(
        all.iter().all(|r| *r == all[0]),
        "everyone got the same value"
    );
    let s = cache.stats();
    assert_eq!(s.computes, 1);
    assert_eq!(s.hits + s.misses, 200, "{s:?}");
    assert_eq!(
        s.lock_wait.total,
        s.misses - 1,
        "every miss but the leader waited"
    );
    assert_eq!(s.waiting, 0);
    let info = server.cli(&["INFO", "commandstats"]);
    assert_eq!(
        command_calls(&info, "set"),
        2,
        "one SET NX for the lock and one SET of the value:\n{info}"
    );
    // One per caller, the leader's re-check under the lock, and the one
    // inside the release script: nobody polled.
    assert!(command_calls(&info, "get") <= 202, "{info}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

/// Runs `fut` until it finishes or `cancel` is set, then drops it: what a
/// client disconnect or an outer timeout does to a request's future.
async fn cancellable<F: std::future::Future>(cancel: &AtomicBool, fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    loop {
        if let Ok(v) = time::timeout(Duration::from_millis(2), fut.as_mut()).await {
            return Some(v);
        }
        if cancel.load(SeqCst) {
            return None;
        }
    }
}

/// The leader's future is dropped while it computes, with waiters on its
/// own worker and on another: one waiter takes over, everyone gets its
/// value, and the dropped leader's Redis lock is released (the 30 s lease
/// is far longer than the test takes).
#[test]
fn a_cancelled_leader_hands_over_to_a_waiter() {
    let server = RedisServer::shared();
    let p = pool(&server.url(), 2);
    let pre = prefix("cancel");
    let cache = Cache::new(
        "cancel",
        CacheConfig {
            lease: Duration::from_secs(30),
            wait_timeout: Duration::from_secs(20),
            on_timeout: tidepool_drivers::cache::OnTimeout::Fail,
            ..config(&pre)
        },
    )
    .unwrap();
    let leader_computing = Arc::new(AtomicBool::new(false));
    let cancel = Arc::new(AtomicBool::new(false));
    let takeovers = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let results = {
        let (cache, cancel, takeovers) = (cache.clone(), cancel.clone(), takeovers.clone());
        on_workers(2, move |i| {
            let (p, cache, leader_computing, cancel, takeovers) = (
                p.clone(),
                cache.clone(),
                leader_computing.clone(),
                cancel.clone(),
                takeovers.clone(),
            );
            async move {
                let local = cache.local(p.local(i));
                let ttl = Duration::from_secs(30);
                let leader = if i == 0 {
                    let (local, flag, cancel) =
                        (local.clone(), leader_computing.clone(), cancel.clone());
                    Some(rt::spawn(async move {
                        let call = local.get_or_compute("k", ttl, || async move {
                            flag.store(true, SeqCst);
                            std::future::pending::<Result<Report, String>>().await
                        });
                        cancellable(&cancel, call).await
                    }))
                } else {
                    None
                };
                let flag = leader_computing.clone();
                wait_until("leader computing", Duration::from_secs(5), || {
                    flag.load(SeqCst)
                })
                .await;
                let waiters: Vec<_> = (0..5)
                    .map(|_| {
                        let (local, takeovers) = (local.clone(), takeovers.clone());
                        rt::spawn(async move {
                            let call = local.get_or_compute("k", ttl, || async move {
                                takeovers.fetch_add(1, SeqCst);
                                Ok::<_, String>(report(&format!("takeover on {i}")))
                            });
                            // Bounded, so a waiter left hanging fails the
                            // test instead of stalling it.
                            time::timeout(Duration::from_secs(10), call).await
                        })
                    })
                    .collect();
                if i == 0 {
                    // All ten waiters (both workers) are parked on the
                    // leader before it is dropped.
                    let c = cache.clone();
                    wait_until("10 waiters", Duration::from_secs(5), || {
                        c.stats().waiting == 10
                    })
                    .await;
                    cancel.store(true, SeqCst);
                }
                let mut out = Vec::new();
                for w in waiters {
                    out.push(w.await.unwrap());
                }
                let leader = match leader {
                    Some(l) => Some(l.await.unwrap()),
                    None => None,
                };
                (out, leader)
            }
        })
    };
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no lease or wait timeout was sat out: {:?}",
        started.elapsed()
    );
    let mut values = Vec::new();
    for (out, leader) in results {
        if let Some(l) = leader {
            assert!(l.is_none(), "the leader was cancelled");
        }
        for r in out {
            values.push(r.expect("the waiter was not left hanging").unwrap());
        }
    }
    assert_eq!(values.len(), 10);
    assert!(values.iter().all(|v| *v == values[0]));
    assert!(values[0].by.starts_with("takeover"));
    assert_eq!(takeovers.load(SeqCst), 1, "exactly one waiter took over");
    let s = cache.stats();
    assert_eq!(s.computes, 2, "the abandoned one and the takeover");
    assert_eq!(s.lock_wait.total, 10, "all ten waited first: {s:?}");
    assert_eq!((s.waiting, cache.in_flight()), (0, 0));
    let lock = format!("lock:{pre}k");
    assert_eq!(server.cli(&["EXISTS", &lock]).trim(), "0", "lock released");
}

/// Cache `name` with negative caching for `negative_ttl`, its key prefix.
fn negative_cache(name: &str, negative_ttl: Duration) -> (Cache, String) {
    let pre = prefix(name);
    let cache = Cache::new(
        name,
        CacheConfig {
            negative_ttl: Some(negative_ttl),
            ..config(&pre)
        },
    )
    .unwrap();
    (cache, pre)
}

/// Asserts that key "k" is computed again (nothing of a failed
/// computation was cached): the value `by` computes is what comes back.
async fn computes_again(local: &LocalCache, by: &str) {
    let v: Report = local
        .get_or_compute("k", Duration::from_secs(30), || async {
            Ok::<_, String>(report(by))
        })
        .await
        .unwrap();
    assert_eq!(v.by, by, "the failure was not cached");
}

/// `n` callers of key "k" at once, whose one computation fails with
/// `fail()` after 50 ms: what each caller got, and how many computations
/// ran.
async fn fail_together<E: Into<ComputeError> + 'static>(
    local: &LocalCache,
    n: usize,
    fail: fn() -> E,
) -> (Vec<Result<Report, CacheError>>, usize) {
    let computes = Rc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (local, computes) = (local.clone(), computes.clone());
            rt::spawn(async move {
                local
                    .get_or_compute("k", Duration::from_secs(30), || async move {
                        computes.fetch_add(1, SeqCst);
                        time::sleep(Duration::from_millis(50)).await;
                        Err::<Report, _>(fail())
                    })
                    .await
            })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    (got, computes.load(SeqCst))
}

#[test]
fn compute_errors_reach_every_waiter_and_are_not_cached() {
    let server = RedisServer::shared();
    let p = pool(&server.url(), 1);
    let pre = prefix("errors");
    let cache = Cache::new("errors", config(&pre)).unwrap();
    rt::block_on(async {
        let local = cache.local(p.local(0));
        let (got, computes) = fail_together(&local, 20, || "database is down").await;
        for r in got {
            match r {
                Err(CacheError::Compute(m)) => assert_eq!(m, "database is down"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(computes, 1);
        assert_eq!(server.cli(&["EXISTS", &format!("{pre}k")]).trim(), "0");
        computes_again(&local, "retry").await;
    });
    assert_eq!(cache.stats().computes, 2);
}

/// A computation that got no connection (a pool shed it under overload)
/// says nothing about the value: every caller waiting on it hears it as
/// `Unavailable` (a 503, not a 500), and it is not stored even with
/// negative caching on.
#[test]
fn a_computation_without_capacity_is_unavailable_and_never_negatively_cached() {
    let server = RedisServer::shared();
    let p = pool(&server.url(), 1);
    let (cache, pre) = negative_cache("unavailable", Duration::from_secs(30));
    rt::block_on(async {
        let local = cache.local(p.local(0));
        let (got, computes) = fail_together(&local, 5, || {
            ComputeError::unavailable("pool pg: overloaded, default request shed")
        })
        .await;
        for r in got {
            match r {
                Err(CacheError::Unavailable(m)) => {
                    assert_eq!(m, "pool pg: overloaded, default request shed")
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(computes, 1, "one computation for all five");
        assert_eq!(server.cli(&["EXISTS", &format!("{pre}k")]).trim(), "0");
        computes_again(&local, "later").await;
    });
    assert_eq!(cache.stats().computes, 2);
}

#[test]
fn negative_caching_serves_the_error_for_its_own_ttl() {
    let server = RedisServer::shared();
    let p = pool(&server.url(), 1);
    let (cache, pre) = negative_cache("negative", Duration::from_millis(300));
    let key = format!("{pre}k");
    rt::block_on(async {
        let local = cache.local(p.local(0));
        let ttl = Duration::from_secs(30);
        let fail = || async { Err::<Report, _>("no such day") };
        let r = local.get_or_compute("k", ttl, fail).await;
        assert!(matches!(r, Err(CacheError::Compute(ref m)) if m == "no such day"));
        let pttl: i64 = server.cli(&["PTTL", &key]).trim().parse().unwrap();
        assert!((1..=300).contains(&pttl), "the error's own TTL: {pttl}");
        let r = local
            .get_or_compute("k", ttl, || async {
                Ok::<_, String>(report("must not run"))
            })
            .await;
        assert!(
            matches!(r, Err(CacheError::Compute(ref m)) if m == "no such day"),
            "{r:?}"
        );
        assert_eq!(cache.stats().computes, 1, "served from the negative entry");
        wait_until("negative entry expired", Duration::from_secs(3), || {
            server.cli(&["EXISTS", &key]).trim() == "0"
        })
        .await;
        let v = local
            .get_or_compute("k", ttl, || async { Ok::<_, String>(report("later")) })
            .await
            .unwrap();
        assert_eq!(v.by, "later");
    });
    let s = cache.stats();
    assert_eq!((s.hits, s.misses, s.computes), (1, 2, 2), "{s:?}");
}
