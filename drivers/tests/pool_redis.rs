//! A multiplexed pool of real Redis connections: many callers share few
//! connections, in-flight slots bound them, and a restart is survived.

use std::time::Duration;

use tidepool_drivers::pool::redis::RedisManager;
use tidepool_drivers::pool::{CloseReason, LocalPool, Pool, PoolConfig};
use tidepool_drivers::redis::Config;
use tidepool_engine::rt;
use tidepool_testkit::sockets::wait_closed_by_server;
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

/// The server is killed while the pool's one connection sits idle. The
/// next checkout comes before the connection's reader task has had a turn
/// to read the end of stream (nothing awaits between the kill and it), so
/// only a look at the socket can tell: the dead connection is closed, not
/// handed out for a command that would fail on it, and the caller gets
/// the connect error instead.
#[test]
fn a_connection_the_server_closed_while_idle_is_never_handed_out() {
    let server = RedisServer::start().unwrap();
    rt::block_on(async {
        let cfg = PoolConfig {
            max_open: 1,
            max_in_flight: 4,
            acquire_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            ..PoolConfig::default()
        };
        let p = pool(&server, "redis_idle_cut", cfg);
        let local = p.local(0);
        local.get().await.unwrap().ping().await.unwrap();
        server.kill9();
        let cut = wait_closed_by_server(server.port(), Duration::from_secs(5));
        assert_eq!(cut, 1, "the pool's connection saw the server's FIN");
        match local.get().await {
            Ok(c) => panic!("a dead connection was handed out: {:?}", *c),
            Err(e) => assert!(e.to_string().contains("refused"), "{e}"),
        }
        let s = local.stats();
        assert_eq!(s.closes[CloseReason::FailedCheck as usize], 1, "{s:?}");
        local.assert_invariants();
    });
}
