//! Authentication errors and connection failures, on private servers.

use std::time::Duration;

use tidepool_drivers::redis::{Config, Connection, Error, ServerErrorKind};
use tidepool_engine::rt;
use tidepool_testkit::{RedisOptions, RedisServer};

fn base(server: &RedisServer) -> Config {
    Config::new(server.host(), server.port())
}

#[test]
fn authentication_errors_are_clear() {
    let server = RedisServer::start_with(RedisOptions {
        password: Some("s3cret pass".into()),
        acl_user: Some(("app".into(), "app-pw".into())),
        tls: false,
    })
    .unwrap();
    rt::block_on(async {
        // The URL from the harness (percent-encoded password) works.
        let c = Connection::open(&server.url()).await.unwrap();
        c.ping().await.unwrap();
        let c = Connection::connect(&base(&server).username("app").password("app-pw"))
            .await
            .unwrap();
        let who: String = c.cmd_as(["ACL", "WHOAMI"]).await.unwrap();
        assert_eq!(who, "app");

        let e = Connection::connect(&base(&server).password("wrong"))
            .await
            .unwrap_err();
        assert_eq!(e.server_kind(), Some(&ServerErrorKind::WrongPass), "{e}");
        assert!(e.to_string().contains("WRONGPASS"), "{e}");
        assert!(!e.is_transient());

        let e = Connection::connect(&base(&server).username("nobody").password("x"))
            .await
            .unwrap_err();
        assert_eq!(e.server_kind(), Some(&ServerErrorKind::WrongPass), "{e}");

        let e = Connection::connect(&base(&server)).await.unwrap_err();
        assert_eq!(e.server_kind(), Some(&ServerErrorKind::NoAuth), "{e}");
        assert!(e.to_string().to_lowercase().contains("auth"), "{e}");

        // The RESP2 path authenticates the same way.
        let c = Connection::connect(&base(&server).password("s3cret pass").resp3(false))
            .await
            .unwrap();
        assert!(!c.is_resp3());
        c.ping().await.unwrap();
    });
}

#[test]
fn refused_connection_is_transient_io() {
    let port = tidepool_testkit::free_port();
    rt::block_on(async {
        let e = Connection::connect(&Config::new("127.0.0.1", port))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Io(_)), "{e:?}");
        assert!(e.is_transient() && e.is_broken());
        let e = Connection::open("redis://127.0.0.1:1/x").await.unwrap_err();
        assert!(matches!(e, Error::Config(_)));
    });
}

#[test]
fn server_restart_mid_pipeline_fails_every_pending_command_once() {
    let server = RedisServer::start().unwrap();
    rt::block_on(async {
        let c = Connection::connect(&base(&server).max_in_flight(600))
            .await
            .unwrap();
        c.ping().await.unwrap();
        // A blocking pop keeps everything behind it pending on the server.
        let blocker = {
            let c = c.clone();
            rt::spawn(async move { c.cmd(["BLPOP", "restart:never", "0"]).await })
        };
        let tasks: Vec<_> = (0..1000)
            .map(|i| {
                let c = c.clone();
                rt::spawn(async move { c.set(format!("restart:{i}"), i).await })
            })
            .collect();
        let explicit = {
            let c = c.clone();
            rt::spawn(async move {
                let mut p = c.pipeline();
                for i in 0..100 {
                    p.add(["SET".to_string(), format!("restart:p{i}"), "x".to_string()]);
                }
                p.query().await
            })
        };
        // Let everything be written (600 in flight, the rest waiting for
        // room under the cap).
        rt::time::sleep(Duration::from_millis(100)).await;
        assert!(c.stats().waiting > 0, "{:?}", c.stats());
        std::thread::scope(|s| {
            s.spawn(|| server.restart());
        });
        let all = async {
            let mut io = 0;
            let mut closed = 0;
            assert!(blocker.await.unwrap().unwrap_err().is_broken());
            for t in tasks {
                match t.await.unwrap().unwrap_err() {
                    Error::Io(_) => io += 1,
                    Error::Closed => closed += 1,
                    e => panic!("unexpected error {e:?}"),
                }
            }
            assert!(explicit.await.unwrap().unwrap_err().is_broken());
            (io, closed)
        };
        let (io, closed) = rt::time::timeout(Duration::from_secs(10), all)
            .await
            .expect("a pending command hung after the server went away");
        // Sent commands get the I/O error, never-sent ones Closed.
        assert_eq!(io + closed, 1000);
        assert!(io > 0 && closed > 0, "io {io} closed {closed}");
        assert!(c.is_broken());
        assert!(matches!(c.broken_reason(), Some(Error::Io(_))));
        assert!(matches!(
            c.get::<Option<String>>("x").await,
            Err(Error::Closed)
        ));
        // Nothing was re-sent to the new server.
        let fresh = Connection::connect(&base(&server)).await.unwrap();
        let n: i64 = fresh.cmd_as(["DBSIZE"]).await.unwrap();
        assert_eq!(n, 0);
        fresh.ping().await.unwrap();
    });
}

#[test]
fn killed_server_breaks_idle_connection() {
    let server = RedisServer::start().unwrap();
    rt::block_on(async {
        let c = Connection::connect(&base(&server)).await.unwrap();
        c.set("k", "v").await.unwrap();
        server.kill9();
        for _ in 0..200 {
            if c.is_broken() {
                break;
            }
            rt::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            c.is_broken(),
            "EOF on an idle connection must mark it broken"
        );
        let e = c.get::<Option<String>>("k").await.unwrap_err();
        assert!(e.is_broken() && e.is_transient());
    });
}

#[test]
fn connect_timeout() {
    // A listener that never answers: the handshake times out.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    rt::block_on(async {
        let cfg = Config::new("127.0.0.1", port).connect_timeout(Duration::from_millis(100));
        let e = Connection::connect(&cfg).await.unwrap_err();
        assert!(matches!(e, Error::Timeout), "{e:?}");
        assert!(e.is_transient());
    });
    drop(listener);
}
