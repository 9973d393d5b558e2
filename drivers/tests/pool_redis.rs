//! A multiplexed pool of real Redis connections: many callers share few
//! connections, in-flight slots bound them, and a restart is survived.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tidepool_drivers::pool::redis::RedisManager;
use tidepool_drivers::pool::{Pool, PoolConfig};
use tidepool_drivers::redis::Config;
use tidepool_engine::rt::{self, time};
use tidepool_testkit::RedisServer;

fn pool(server: &RedisServer, name: &str, cfg: PoolConfig) -> Pool<RedisManager> {
    let rc = Config::from_url(&server.url()).unwrap();
    let m = RedisManager::new(rc, cfg.max_in_flight);
    Pool::new(name, cfg, m, 1).unwrap()
}

async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "condition not reached in {limit:?}"
        );
        time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn many_callers_share_few_connections() {
    let server = RedisServer::shared();
    rt::block_on(async {
        let cfg = PoolConfig {
            max_open: 2,
            max_in_flight: 8,
            acquire_timeout: Duration::from_secs(5),
            ..PoolConfig::default()
        };
        let p = pool(server, "redis_mux", cfg);
        let local = p.local(0);
        let mut tasks = Vec::new();
        for i in 0..200 {
            let local = local.clone();
            tasks.push(rt::spawn(async move {
                let c = local.get().await.unwrap();
                c.incr("pool_mux_counter").await.unwrap();
                c.set(format!("pool_mux_{i}"), i.to_string()).await.unwrap();
            }));
        }
        for t in tasks {
            t.await;
        }
        let c = local.get().await.unwrap();
        let n: i64 = c.get("pool_mux_counter").await.unwrap();
        assert!(n >= 200);
        drop(c);
        let s = local.stats();
        assert!(
            s.open <= 2,
            "connections are counted and capped: {}",
            s.open
        );
        assert_eq!(s.in_use, 0);
        assert!(s.acquires >= 201);
        local.assert_invariants();
    });
}

#[test]
fn restart_is_survived() {
    let server = RedisServer::start().unwrap();
    rt::block_on(async {
        let cfg = PoolConfig {
            max_open: 2,
            max_in_flight: 4,
            acquire_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            ..PoolConfig::default()
        };
        let p = pool(&server, "redis_restart", cfg);
        let local = p.local(0);
        let ok = Rc::new(Cell::new(0u32));
        let failed = Rc::new(Cell::new(0u32));
        let stop = Rc::new(Cell::new(false));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (local, ok, failed, stop) =
                (local.clone(), ok.clone(), failed.clone(), stop.clone());
            tasks.push(rt::spawn(async move {
                while !stop.get() {
                    let started = Instant::now();
                    let r = async {
                        let c = local.get().await.map_err(|e| e.to_string())?;
                        c.incr("restart_counter").await.map_err(|e| e.to_string())
                    }
                    .await;
                    assert!(started.elapsed() < Duration::from_secs(3), "hung");
                    match r {
                        Ok(_) => ok.set(ok.get() + 1),
                        Err(_) => {
                            failed.set(failed.get() + 1);
                            time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }));
        }
        wait_until(Duration::from_secs(10), || ok.get() > 100).await;
        server.kill9();
        let f = failed.get();
        wait_until(Duration::from_secs(10), || failed.get() > f + 5).await;
        server.restart();
        let o = ok.get();
        wait_until(Duration::from_secs(20), || ok.get() > o + 100).await;
        stop.set(true);
        for t in tasks {
            t.await;
        }
        // A reconnect started for the last waiters may still be finishing.
        wait_until(Duration::from_secs(5), || local.stats().opening == 0).await;
        let s = local.stats();
        assert_eq!((s.in_use, s.opening, s.waiting), (0, 0, 0), "{s:?}");
        assert!(s.open <= 2);
        local.assert_invariants();
    });
}
