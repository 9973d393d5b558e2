//! Server failures, on a private server so other tests are not disturbed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidepool_drivers::pg::{Client, Config, Error};
use tidepool_engine::rt::block_on;
use tidepool_testkit::{PgServer, PgUser};

fn cfg(pg: &PgServer) -> Config {
    pg.url(PgUser::Scram).parse::<Config>().unwrap()
}

#[test]
fn kill9_mid_query_then_restart() {
    let pg = Arc::new(PgServer::start().expect("private server"));
    block_on(async {
        let mut c = Client::connect(&cfg(&pg)).await.unwrap();
        let mut idle = Client::connect(&cfg(&pg)).await.unwrap();
        assert_eq!(
            c.query_one("select 1::int4", &[])
                .await
                .unwrap()
                .get::<i32>(0),
            1
        );
        let killer = {
            let pg = pg.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                pg.kill9();
            })
        };
        let started = Instant::now();
        let e = c.query("select pg_sleep(10)", &[]).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "error, not a hang"
        );
        assert!(e.is_broken(), "{e:?}");
        assert!(e.is_transient(), "{e:?}");
        assert!(c.is_broken());
        assert!(matches!(c.query("select 1", &[]).await, Err(Error::Closed)));
        killer.join().unwrap();
        // The idle connection notices on its next use.
        assert!(idle.query("select 1", &[]).await.unwrap_err().is_broken());

        // While the server is down: refused, transient.
        let e = Client::connect(&cfg(&pg)).await.unwrap_err();
        assert!(e.is_transient(), "{e:?}");

        pg.restart();
        let mut c = Client::connect(&cfg(&pg)).await.unwrap();
        assert_eq!(
            c.query_one("select 2::int4", &[])
                .await
                .unwrap()
                .get::<i32>(0),
            2
        );

        // A fast shutdown ends sessions with FATAL 57P01: broken but transient.
        let stopper = {
            let pg = pg.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                pg.stop();
            })
        };
        let e = c.query("select pg_sleep(10)", &[]).await.unwrap_err();
        assert!(e.is_broken() && e.is_transient(), "{e:?}");
        stopper.join().unwrap();
        pg.restart();
        let mut c = Client::connect(&cfg(&pg)).await.unwrap();
        c.query("select 1", &[]).await.unwrap();
        // A session terminated by an administrator.
        let pid = c.backend_pid().unwrap();
        let mut admin = Client::connect(&pg.url(PgUser::Super).parse().unwrap())
            .await
            .unwrap();
        admin
            .query("select pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        let e = c.query("select 1", &[]).await.unwrap_err();
        assert!(e.is_broken(), "{e:?}");
    });
}
