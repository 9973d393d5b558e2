//! Redis over TLS (`rediss://`) against redis-server's TLS port: commands,
//! large values and pipelines through the multiplexed connection, pub/sub,
//! a pool, and certificate checks that name their cause.

use std::sync::OnceLock;
use std::time::Duration;

use tidepool_drivers::pool::redis::RedisManager;
use tidepool_drivers::pool::{Pool, PoolConfig};
use tidepool_drivers::redis::{Config, Connection, Error, PubSub};
use tidepool_engine::rt;
use tidepool_testkit::{RedisOptions, RedisServer};

fn server() -> &'static RedisServer {
    static S: OnceLock<RedisServer> = OnceLock::new();
    S.get_or_init(|| {
        RedisServer::start_with(RedisOptions {
            tls: true,
            ..RedisOptions::default()
        })
        .expect("redis-server with TLS")
    })
}

fn config() -> Config {
    let s = server();
    Config::from_url(&s.tls_url().unwrap())
        .unwrap()
        .tls_ca(s.ca_file().unwrap())
}

#[test]
fn commands_pipelines_and_large_values_over_tls() {
    rt::block_on(async {
        let c = Connection::connect(&config()).await.unwrap();
        c.set("tls:k", "v").await.unwrap();
        assert_eq!(c.get::<String>("tls:k").await.unwrap(), "v");
        // Larger than a TLS record, both ways.
        let big = vec![7u8; 300_000];
        c.set("tls:big", big.as_slice()).await.unwrap();
        assert_eq!(c.get::<Vec<u8>>("tls:big").await.unwrap(), big);
        // Many callers at once share the connection's writes and reads.
        let calls: Vec<_> = (0..200)
            .map(|i| {
                let c = c.clone();
                rt::spawn(async move { c.cmd_as::<i64>(["INCRBY", "tls:n", &i.to_string()]).await })
            })
            .collect();
        for t in calls {
            t.await.unwrap().unwrap();
        }
        let n: i64 = c.get("tls:n").await.unwrap();
        assert_eq!(n, (0..200).sum::<i64>());
        c.del(&["tls:k", "tls:big", "tls:n"]).await.unwrap();
    });
}

#[test]
fn pubsub_and_a_pool_over_tls() {
    rt::block_on(async {
        let ps = PubSub::connect(&config()).await.unwrap();
        ps.subscribe(&["tls:ch"]).await.unwrap();
        let publisher = Connection::connect(&config()).await.unwrap();
        let n: i64 = publisher.cmd_as(["PUBLISH", "tls:ch", "hi"]).await.unwrap();
        assert_eq!(n, 1);
        let m = rt::time::timeout(Duration::from_secs(5), ps.next())
            .await
            .expect("a message within 5 s")
            .unwrap();
        assert_eq!(m.payload_str().unwrap(), "hi");
        let pool = Pool::new(
            "rediss",
            PoolConfig {
                max_open: 2,
                ..PoolConfig::default()
            },
            RedisManager::new(config(), 64),
            1,
        )
        .unwrap();
        let local = pool.local(0);
        let c = local.get().await.unwrap();
        let pong: String = c.cmd_as(["PING"]).await.unwrap();
        assert_eq!(pong, "PONG");
    });
}

#[test]
fn certificates_are_checked_unless_explicitly_not() {
    let s = server();
    rt::block_on(async {
        // rediss:// alone trusts the system's roots, which did not sign it.
        let e = Connection::connect(&Config::from_url(&s.tls_url().unwrap()).unwrap())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("UnknownIssuer"), "{e}");
        assert!(
            matches!(e, Error::Tls { fatal: true, .. }) && !e.is_transient(),
            "{e:?}"
        );
        // The right CA, the wrong name (the certificate is for 127.0.0.1).
        let url = s.tls_url().unwrap().replace("127.0.0.1", "localhost");
        let e = Connection::connect(&Config::from_url(&url).unwrap().tls_ca(s.ca_file().unwrap()))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("NotValidForName"), "{e}");
        // Only when asked: encrypted, unchecked.
        let c = Connection::connect(&Config::from_url(&url).unwrap().tls_insecure())
            .await
            .unwrap();
        let pong: String = c.cmd_as(["PING"]).await.unwrap();
        assert_eq!(pong, "PONG");
        // TLS to the cleartext port: the server waits for the rest of a
        // "command"; the connect timeout names the handshake.
        let plain = Config::new(s.host(), s.port()).tls_ca(s.ca_file().unwrap());
        let e = Connection::connect(&plain.connect_timeout(Duration::from_millis(300)))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("TLS handshake timed out"), "{e}");
    });
}
