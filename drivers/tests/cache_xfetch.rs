//! Probabilistic early refresh under load, against a real redis-server:
//! with XFetch a hot key is refreshed about once per TTL and readers never
//! miss after warm-up; without it every expiry is a burst of misses.

mod cache_common;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cache_common::{config, on_workers, pool, prefix};
use tidepool_drivers::cache::{Cache, CacheConfig, CacheStats, DEFAULT_XFETCH_BETA};
use tidepool_engine::rt::{self, time};
use tidepool_testkit::RedisServer;

const TTL: Duration = Duration::from_millis(600);
const LOAD: Duration = Duration::from_secs(3);
/// δ, the compute time. XFetch starts a refresh δ·β·Exp(1) before expiry,
/// and the earliest of many readers' draws leads by about δ·ln(reads in
/// the lead), so the lead grows with the read rate: at 40 ms and the
/// 100k reads a second a fast machine makes here, it was 400 of the 600 ms
/// and computes crept past twice the expiries. At 10 ms it stays near
/// 100 ms from a few thousand reads a second to millions, as XFetch means
/// it to (δ small beside the TTL).
const COMPUTE: Duration = Duration::from_millis(10);
const READERS_PER_WORKER: usize = 6;

struct Load {
    /// Counters accumulated after warm-up only.
    after: CacheStats,
    reads: u64,
}

/// Two workers of readers hammer one key for `LOAD` after a warm-up call
/// stored it.
fn run(xfetch_beta: Option<f64>) -> Load {
    let server = RedisServer::shared();
    let p = pool(&server.url(), 2);
    let cache = Cache::new(
        "xfetch",
        CacheConfig {
            xfetch_beta,
            ..config(&prefix("xfetch"))
        },
    )
    .unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let warm = Arc::new(std::sync::Mutex::new(CacheStats::default()));
    let reads = {
        let (cache, warm) = (cache.clone(), warm.clone());
        on_workers(2, move |i| {
            let (p, cache, barrier, warm) =
                (p.clone(), cache.clone(), barrier.clone(), warm.clone());
            async move {
                let local = cache.local(p.local(i));
                let version = Rc::new(Cell::new(0u64));
                let read = {
                    let (local, version) = (local.clone(), version.clone());
                    move || {
                        let (local, version) = (local.clone(), version.clone());
                        async move {
                            local
                                .get_or_compute("hot", TTL, || async move {
                                    time::sleep(COMPUTE).await;
                                    version.set(version.get() + 1);
                                    Ok::<_, String>(version.get())
                                })
                                .await
                                .unwrap()
                        }
                    }
                };
                if i == 0 {
                    read().await;
                    *warm.lock().unwrap() = cache.stats();
                }
                barrier.wait();
                let end = Instant::now() + LOAD;
                let tasks: Vec<_> = (0..READERS_PER_WORKER)
                    .map(|_| {
                        let read = read.clone();
                        rt::spawn(async move {
                            let mut n = 0u64;
                            while Instant::now() < end {
                                read().await;
                                n += 1;
                            }
                            n
                        })
                    })
                    .collect();
                let mut n = 0;
                for t in tasks {
                    n += t.await.unwrap();
                }
                n
            }
        })
    };
    let total = cache.stats();
    let warm = warm.lock().unwrap().clone();
    Load {
        after: CacheStats {
            hits: total.hits - warm.hits,
            misses: total.misses - warm.misses,
            computes: total.computes - warm.computes,
            early_refreshes: total.early_refreshes - warm.early_refreshes,
            lock_wait: total.lock_wait.since(&warm.lock_wait),
            ..total
        },
        reads: reads.into_iter().sum(),
    }
}

fn expiries() -> u64 {
    (LOAD.as_millis() / TTL.as_millis()) as u64
}

#[test]
fn xfetch_refreshes_early_without_a_miss_storm() {
    let load = run(Some(DEFAULT_XFETCH_BETA));
    let s = &load.after;
    eprintln!("xfetch: {} reads, {s:?}", load.reads);
    assert!(load.reads > 50 * expiries(), "enough load: {}", load.reads);
    assert_eq!(s.misses, 0, "no reader ever missed after warm-up: {s:?}");
    assert_eq!(s.lock_wait.total, 0, "nor waited");
    assert_eq!(
        s.early_refreshes, s.computes,
        "every computation was an early refresh"
    );
    // About one refresh per TTL: XFetch starts a little before each expiry.
    assert!(
        s.computes >= expiries() - 1 && s.computes <= 2 * expiries() + 1,
        "{} computes for {} expiries",
        s.computes,
        expiries()
    );
}

/// The control: the same load without XFetch. Single-flight still keeps
/// computations at one per expiry, but every expiry shows up as a burst of
/// misses and waits, which is what the metrics show during a stampede.
#[test]
fn without_xfetch_each_expiry_is_a_burst_of_misses() {
    let load = run(None);
    let s = &load.after;
    eprintln!("no xfetch: {} reads, {s:?}", load.reads);
    assert!(s.misses >= expiries() - 1, "misses at the expiries: {s:?}");
    assert!(s.lock_wait.total > 0, "callers waited: {s:?}");
    assert_eq!(s.early_refreshes, 0);
    assert!(
        s.computes >= expiries() - 1 && s.computes <= expiries() + 1,
        "single-flight: one computation per expiry, got {}",
        s.computes
    );
}
