//! A multiplexed pool of real Redis connections: many callers share few
//! connections, in-flight slots bound them, and a restart is survived.

use std::time::Duration;

use tidepool_drivers::pool::redis::RedisManager;
use tidepool_drivers::pool::{LocalPool, Pool, PoolConfig};
use tidepool_drivers::redis::Config;
use tidepool_engine::rt;
use tidepool_testkit::RedisServer;

mod common;
use common::survive_restart;

fn pool(server: &RedisServer, name: &str, cfg: PoolConfig) -> Pool<RedisManager> {
    let rc = Config::from_url(&server.url()).unwrap();
    let m = RedisManager::new(rc, cfg.max_in_flight);
    Pool::new(name, cfg, m, 1).unwrap()
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
            t.await.unwrap();
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
        let incr = |local: LocalPool<RedisManager>| async move {
            let c = local.get().await.map_err(|e| e.to_string())?;
            c.incr("restart_counter").await.map_err(|e| e.to_string())?;
            Ok(())
        };
        survive_restart(&local, 10, incr, || server.kill9(), || server.restart()).await;
        assert!(local.stats().open <= 2);
    });
}
