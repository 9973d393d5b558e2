//! Pub/sub delivery, and re-subscription after a server restart.

use std::time::Duration;

use tidepool_drivers::redis::{Config, Connection, Error, PubSub};
use tidepool_engine::rt;
use tidepool_testkit::RedisServer;

fn config(server: &RedisServer) -> Config {
    Config::new(server.host(), server.port())
}

async fn next(ps: &PubSub) -> tidepool_drivers::redis::Message {
    rt::time::timeout(Duration::from_secs(5), ps.next())
        .await
        .expect("no message within 5 s")
        .expect("message")
}

#[test]
fn delivery_patterns_and_unsubscribe() {
    let server = RedisServer::shared();
    rt::block_on(async {
        let ps = PubSub::connect(&config(server)).await.unwrap();
        let publisher = Connection::connect(&config(server)).await.unwrap();
        ps.subscribe(&["ps:a", "ps:b"]).await.unwrap();
        ps.psubscribe(&["ps:p.*"]).await.unwrap();
        let n: i64 = publisher
            .cmd_as(["PUBLISH", "ps:a", "hello"])
            .await
            .unwrap();
        assert_eq!(n, 1);
        let m = next(&ps).await;
        assert_eq!(
            (
                m.channel.as_slice(),
                m.payload_str().unwrap(),
                m.pattern.clone()
            ),
            (&b"ps:a"[..], "hello", None)
        );
        // Binary payloads survive.
        let payload: Vec<u8> = b"\r\n\0\xff*1\r\n".to_vec();
        publisher
            .cmd(["PUBLISH".as_bytes(), b"ps:b", &payload])
            .await
            .unwrap();
        assert_eq!(next(&ps).await.payload, payload);
        publisher.cmd(["PUBLISH", "ps:p.x", "pat"]).await.unwrap();
        let m = next(&ps).await;
        assert_eq!(m.pattern.as_deref(), Some(&b"ps:p.*"[..]));
        assert_eq!(m.channel_str(), "ps:p.x");
        // next() is cancel-safe: a timed-out wait loses nothing.
        assert!(rt::time::timeout(Duration::from_millis(20), ps.next())
            .await
            .is_err());
        publisher
            .cmd(["PUBLISH", "ps:a", "after-timeout"])
            .await
            .unwrap();
        assert_eq!(next(&ps).await.payload, b"after-timeout");
        ps.unsubscribe(&["ps:a"]).await.unwrap();
        assert_eq!(ps.channels(), vec![b"ps:b".to_vec()]);
        let n: i64 = publisher
            .cmd_as(["PUBLISH", "ps:a", "nobody"])
            .await
            .unwrap();
        assert_eq!(n, 0);
        ps.punsubscribe(&[] as &[&str]).await.unwrap();
        ps.unsubscribe(&[] as &[&str]).await.unwrap();
        assert!(ps.channels().is_empty() && ps.patterns().is_empty());
        // Many messages in a burst arrive in order.
        ps.subscribe(&["ps:burst"]).await.unwrap();
        let mut p = publisher.pipeline();
        for i in 0..500 {
            p.add(["PUBLISH".to_string(), "ps:burst".to_string(), i.to_string()]);
        }
        p.query().await.unwrap();
        for i in 0..500 {
            assert_eq!(next(&ps).await.payload_str().unwrap(), i.to_string());
        }
        assert!(ps.try_next().is_none());
        assert_eq!(ps.reconnects(), 0);
    });
}

#[test]
fn resp2_subscriber() {
    let server = RedisServer::shared();
    rt::block_on(async {
        let ps = PubSub::connect(&config(server).resp3(false)).await.unwrap();
        let publisher = Connection::connect(&config(server)).await.unwrap();
        ps.subscribe(&["ps2:a"]).await.unwrap();
        publisher.cmd(["PUBLISH", "ps2:a", "x"]).await.unwrap();
        assert_eq!(next(&ps).await.payload, b"x");
    });
}

#[test]
fn resubscribes_after_restart() {
    let server = RedisServer::start().unwrap();
    rt::block_on(async {
        let ps = PubSub::connect(&config(&server)).await.unwrap();
        ps.subscribe(&["rs:chan"]).await.unwrap();
        ps.psubscribe(&["rs:pat:*"]).await.unwrap();
        let publisher = Connection::connect(&config(&server)).await.unwrap();
        publisher
            .cmd(["PUBLISH", "rs:chan", "before"])
            .await
            .unwrap();
        assert_eq!(next(&ps).await.payload, b"before");

        std::thread::scope(|s| {
            s.spawn(|| server.restart());
        });
        // Wait for the subscriber to come back with both subscriptions.
        let publisher = Connection::connect(&config(&server)).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let chans: Vec<(String, i64)> = publisher
                .cmd_as::<Vec<tidepool_drivers::redis::Value>>(["PUBSUB", "NUMSUB", "rs:chan"])
                .await
                .map(|v| {
                    v.chunks(2)
                        .map(|c| {
                            (
                                String::from_utf8(c[0].as_bytes().unwrap().to_vec()).unwrap(),
                                match &c[1] {
                                    tidepool_drivers::redis::Value::Int(n) => *n,
                                    _ => 0,
                                },
                            )
                        })
                        .collect()
                })
                .unwrap();
            let pats: i64 = publisher.cmd_as(["PUBSUB", "NUMPAT"]).await.unwrap();
            if chans[0].1 == 1 && pats == 1 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no re-subscription");
            rt::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(ps.reconnects(), 1);
        assert!(ps.is_connected());
        assert!(ps.last_error().is_some());
        publisher
            .cmd(["PUBLISH", "rs:chan", "after"])
            .await
            .unwrap();
        publisher
            .cmd(["PUBLISH", "rs:pat:1", "pattern-after"])
            .await
            .unwrap();
        assert_eq!(next(&ps).await.payload, b"after");
        assert_eq!(next(&ps).await.payload, b"pattern-after");
        // Subscribing again after the reconnect works as usual.
        ps.subscribe(&["rs:late"]).await.unwrap();
        publisher.cmd(["PUBLISH", "rs:late", "late"]).await.unwrap();
        assert_eq!(next(&ps).await.payload, b"late");
    });
}

#[test]
fn gives_up_after_configured_attempts() {
    let server = RedisServer::start().unwrap();
    rt::block_on(async {
        let ps = PubSub::connect(&config(&server)).await.unwrap();
        ps.set_max_reconnect_attempts(Some(2));
        ps.subscribe(&["gu:c"]).await.unwrap();
        server.stop();
        let r = rt::time::timeout(Duration::from_secs(10), ps.next())
            .await
            .expect("next() must not hang");
        let e = r.unwrap_err();
        assert!(e.is_transient(), "{e:?}");
        assert!(matches!(ps.subscribe(&["gu:d"]).await, Err(Error::Io(_))));
    });
}

#[test]
fn refused_subscription_reports_noperm() {
    let server = RedisServer::shared();
    let ok = server.cli(&[
        "ACL",
        "SETUSER",
        "ps-limited",
        "on",
        ">pw",
        "~*",
        "resetchannels",
        "&ps:allowed",
        "+@all",
        "-set",
    ]);
    assert_eq!(ok.trim(), "OK");
    rt::block_on(async {
        let cfg = config(server).username("ps-limited").password("pw");
        let ps = PubSub::connect(&cfg).await.unwrap();
        let e = ps.subscribe(&["ps:forbidden"]).await.unwrap_err();
        assert_eq!(
            e.server_kind(),
            Some(&tidepool_drivers::redis::ServerErrorKind::NoPerm),
            "{e}"
        );
        assert!(ps.channels().is_empty());
        ps.subscribe(&["ps:allowed"]).await.unwrap();
        let publisher = Connection::connect(&config(server)).await.unwrap();
        publisher
            .cmd(["PUBLISH", "ps:allowed", "yes"])
            .await
            .unwrap();
        assert_eq!(next(&ps).await.payload, b"yes");
        // The same user's command permissions on a normal connection.
        let c = Connection::connect(&cfg).await.unwrap();
        let e = c.set("ps:acl", "x").await.unwrap_err();
        assert_eq!(
            e.server_kind(),
            Some(&tidepool_drivers::redis::ServerErrorKind::NoPerm)
        );
        assert!(!c.is_broken());
        c.ping().await.unwrap();
    });
}
