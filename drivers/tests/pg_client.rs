//! The client against a real server: authentication, errors, pipelining,
//! timeouts, the statement cache, transactions, COPY and LISTEN/NOTIFY.

use std::time::{Duration, Instant};

use tidepool_drivers::pg::{Client, Config, Error, TxStatus};
use tidepool_engine::rt::{block_on, time};
use tidepool_testkit::{PgServer, PgUser};

fn cfg(user: PgUser) -> Config {
    PgServer::shared().url(user).parse().unwrap()
}

fn unix_cfg(user: PgUser) -> Config {
    let pg = PgServer::shared();
    Config::new()
        .unix_dir(pg.socket_dir())
        .port(pg.port())
        .user(user.name())
        .password(user.password())
        .dbname("tidepool")
}

async fn connect() -> Client {
    Client::connect(&cfg(PgUser::Trust)).await.unwrap()
}

#[test]
fn every_auth_method_over_tcp_and_unix() {
    block_on(async {
        for user in PgUser::ALL {
            for (how, cfg) in [("tcp", cfg(user)), ("unix", unix_cfg(user))] {
                let mut c = Client::connect(&cfg)
                    .await
                    .unwrap_or_else(|e| panic!("{} over {how}: {e}", user.name()));
                let row = c.query_one("select current_user::text", &[]).await.unwrap();
                assert_eq!(row.get::<&str>(0), user.name(), "{how}");
                assert!(c.backend_pid().is_some());
                assert!(c.parameter("server_version").is_some());
                c.close().await.unwrap();
            }
        }
        // A unix-socket URL.
        let pg = PgServer::shared();
        let url = format!(
            "postgres://tp_scram:scram_pw@/tidepool?host={}&port={}&application_name=tp-test",
            pg.socket_dir().display(),
            pg.port()
        );
        let mut c = Client::connect_url(&url).await.unwrap();
        let row = c
            .query_one("select current_setting('application_name')", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<String>(0), "tp-test");
    });
}

#[test]
fn wrong_password_is_one_clear_auth_error() {
    block_on(async {
        for user in [PgUser::Password, PgUser::Md5, PgUser::Scram] {
            for cfg in [cfg(user), unix_cfg(user)] {
                let started = Instant::now();
                let e = Client::connect(&cfg.password("wrong")).await.unwrap_err();
                assert!(matches!(e, Error::Auth { .. }), "{}: {e:?}", user.name());
                assert_eq!(e.code(), Some("28P01"));
                assert!(!e.is_transient());
                assert!(
                    e.to_string().contains("password authentication failed"),
                    "{e}"
                );
                // No retry loop behind it.
                assert!(started.elapsed() < Duration::from_secs(2));
            }
        }
        let e = Client::connect(&Config::new().port(1).host("127.0.0.1").user("x"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Io(_)) && e.is_transient(), "{e:?}");
        let e = Client::connect(&cfg(PgUser::Trust).dbname("no_such_db"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("3D000"));
        assert!(!e.is_transient());
        let e = Client::connect(&cfg(PgUser::Scram).user("no_such_user"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Auth { .. }), "{e:?}");
    });
}

#[test]
fn sql_error_leaves_connection_usable() {
    block_on(async {
        let mut c = connect().await;
        let e = c.query("selec 1", &[]).await.unwrap_err();
        assert_eq!(e.code(), Some("42601"));
        let db = e.as_db().unwrap();
        assert_eq!(db.severity, "ERROR");
        assert_eq!(db.position, Some(1));
        assert!(!e.is_broken() && !c.is_broken());
        let e = c.query("select 1 / $1::int4", &[&0i32]).await.unwrap_err();
        assert_eq!(e.code(), Some("22012"));
        let e = c
            .simple_query("select 1; select nope; select 3")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("42703"));
        assert_eq!(
            c.query_one("select 1::int4", &[])
                .await
                .unwrap()
                .get::<i32>(0),
            1
        );
        let res = c
            .simple_query("select 1 as a, null::text as b; select 'x'")
            .await
            .unwrap();
        assert_eq!(res.len(), 2);
        assert_eq!(res[0].rows[0].get::<i32>("a"), 1);
        assert_eq!(res[0].rows[0].get::<Option<&str>>("b"), None);
        assert_eq!(res[1].rows[0].get::<&str>(0), "x");
        // Row count helpers.
        assert!(matches!(
            c.query_one("select 1 where false", &[]).await,
            Err(Error::Usage(_))
        ));
        assert!(c
            .query_opt("select 1 where false", &[])
            .await
            .unwrap()
            .is_none());
        assert!(c
            .query_opt("select generate_series(1, 2)", &[])
            .await
            .is_err());
        // Wrong parameter count is caught before anything is sent.
        assert!(matches!(
            c.query("select $1::int4", &[]).await,
            Err(Error::Usage(_))
        ));
        assert!(!c.is_broken());
        assert!(c.is_idle());
    });
}

#[test]
fn hundred_pipelined_queries_in_one_round_trip() {
    block_on(async {
        let mut c = connect().await;
        let sql = "select $1::int4 * 2";
        c.prepare(sql).await.unwrap();
        let vals: Vec<i32> = (0..100).collect();
        let before = c.stats();
        let mut p = c.pipeline();
        for v in &vals {
            p.query(sql, &[v]);
        }
        let results = p.run().await.unwrap();
        let after = c.stats();
        assert_eq!(after.writes - before.writes, 1, "one write for 100 queries");
        assert_eq!(results.len(), 100);
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.as_ref().unwrap().rows[0].get::<i32>(0), 2 * i as i32);
        }

        // Uncached statements cost one more round trip; an error stays local.
        let zero = 0i32;
        let before = c.stats();
        let mut p = c.pipeline();
        p.query("select 'a'::text", &[]);
        p.query("select 1 / $1::int4", &[&zero]);
        p.query("select 'c'::text", &[]);
        p.query("select nonsense", &[]);
        p.query("select $1::int4", &[&"not an int"]);
        p.query("select $1::int4", &[&1.5f64]);
        let r = p.run().await.unwrap();
        assert_eq!(c.stats().writes - before.writes, 2);
        assert_eq!(r[0].as_ref().unwrap().rows[0].get::<&str>(0), "a");
        assert_eq!(r[1].as_ref().unwrap_err().code(), Some("22012"));
        assert_eq!(r[2].as_ref().unwrap().rows[0].get::<&str>(0), "c");
        assert_eq!(r[3].as_ref().unwrap_err().code(), Some("42703"));
        // Strings go as text to non-text parameters: the server parses them.
        assert_eq!(r[4].as_ref().unwrap_err().code(), Some("22P02"));
        assert!(matches!(r[5], Err(Error::TypeMismatch { .. })));
        assert!(!c.is_broken());
    });
}

#[test]
fn timeout_cancels_and_connection_survives() {
    block_on(async {
        let mut c = connect().await;
        c.set_query_timeout(Some(Duration::from_millis(100)));
        let started = Instant::now();
        let e = c.query("select pg_sleep(5)", &[]).await.unwrap_err();
        assert!(matches!(e, Error::Timeout), "{e:?}");
        assert!(e.is_transient() && !e.is_broken());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(!c.is_broken());
        c.set_query_timeout(None);
        let row = c.query_one("select 1::int4", &[]).await.unwrap();
        assert_eq!(row.get::<i32>(0), 1);
        // The simple protocol too.
        c.set_query_timeout(Some(Duration::from_millis(100)));
        let e = c.simple_query("select pg_sleep(5)").await.unwrap_err();
        assert!(matches!(e, Error::Timeout));
        assert_eq!(
            c.simple_query("select 2").await.unwrap()[0].rows[0].get::<&str>(0),
            "2"
        );
    });
}

#[test]
fn timeout_without_drain_marks_connection_broken() {
    block_on(async {
        // No time to cancel and drain: the connection cannot be trusted after.
        // (Zero, not "very short": a cancel that makes it within a short
        // budget drains the reply and rightly keeps the connection.)
        let cfg = cfg(PgUser::Trust)
            .query_timeout(Duration::from_millis(50))
            .cancel_drain_timeout(Duration::ZERO);
        let mut c = Client::connect(&cfg).await.unwrap();
        let e = c.query("select pg_sleep(1)", &[]).await.unwrap_err();
        assert!(matches!(e, Error::Timeout), "{e:?}");
        assert!(c.is_broken());
        assert!(matches!(c.query("select 1", &[]).await, Err(Error::Closed)));
    });
}

#[test]
fn abandoned_query_does_not_desync_the_stream() {
    block_on(async {
        let mut c = connect().await;
        // The caller gives up (its future is dropped mid-read).
        let r = time::timeout(
            Duration::from_millis(50),
            c.query("select pg_sleep(0.3), 'late'::text", &[]),
        )
        .await;
        assert!(r.is_err());
        assert!(!c.is_idle());
        let row = c.query_one("select 'next'::text", &[]).await.unwrap();
        assert_eq!(row.get::<&str>(0), "next");
        // The cancel token works from the side, too.
        let tok = c.cancel_token().unwrap();
        let (r, _) = futures_join(c.query("select pg_sleep(5)", &[]), async {
            time::sleep(Duration::from_millis(100)).await;
            tok.cancel().await
        })
        .await;
        assert_eq!(r.unwrap_err().code(), Some("57014"));
        c.reset().await.unwrap();
        assert!(c.is_idle());
    });
}

/// Polls two futures on this task until both finish.
async fn futures_join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            if let std::task::Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let std::task::Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() {
            std::task::Poll::Ready((ra.take().unwrap(), rb.take().unwrap()))
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

#[test]
fn statement_cache_reprepares_after_schema_change() {
    block_on(async {
        let mut c = connect().await;
        c.batch_execute(
            "drop table if exists reprep; create table reprep(a int); insert into reprep values (1)",
        )
        .await
        .unwrap();
        let sql = "select * from reprep";
        assert_eq!(c.query_one(sql, &[]).await.unwrap().get::<i32>(0), 1);
        let st = c.prepare(sql).await.unwrap();
        assert_eq!(st.columns()[0].type_().name().as_deref(), Some("int4"));
        c.batch_execute("alter table reprep alter column a type text")
            .await
            .unwrap();
        // The cached plan's result type changed: dropped, re-prepared, retried once.
        let row = c.query_one(sql, &[]).await.unwrap();
        assert_eq!(row.get::<&str>(0), "1");
        // A held Statement keeps working after the server forgot it.
        c.batch_execute("DEALLOCATE ALL").await.unwrap();
        let row = c.query_one(&st, &[]).await.unwrap();
        assert_eq!(row.get::<String>("a"), "1");
        // Inside a transaction the retry would hit an aborted block: the error surfaces.
        c.batch_execute("alter table reprep alter column a type int8 using a::int8")
            .await
            .unwrap();
        let mut tx = c.transaction().await.unwrap();
        let e = tx.query(sql, &[]).await.unwrap_err();
        assert_eq!(e.code(), Some("0A000"));
        tx.rollback().await.unwrap();
        assert_eq!(c.query_one(sql, &[]).await.unwrap().get::<i64>(0), 1);
    });
}

#[test]
fn statement_cache_is_bounded() {
    block_on(async {
        let mut c = Client::connect(&cfg(PgUser::Trust).statement_cache_size(2))
            .await
            .unwrap();
        for i in 0..5 {
            let row = c
                .query_one(&format!("select {i}::int4"), &[])
                .await
                .unwrap();
            assert_eq!(row.get::<i32>(0), i);
        }
        assert_eq!(c.cached_statements(), 2);
        let row = c
            .query_one("select count(*) from pg_prepared_statements", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<i64>(0), 2, "evicted statements are closed");
        // Caching off: every statement is closed after use.
        let mut c = Client::connect(&cfg(PgUser::Trust).statement_cache_size(0))
            .await
            .unwrap();
        for _ in 0..3 {
            c.query("select 1", &[]).await.unwrap();
        }
        let row = c
            .query_one("select count(*) from pg_prepared_statements", &[])
            .await
            .unwrap();
        assert!(row.get::<i64>(0) <= 1);
    });
}

#[test]
fn transactions_and_savepoints() {
    block_on(async {
        let mut c = connect().await;
        c.batch_execute("drop table if exists txt; create table txt(a int)")
            .await
            .unwrap();
        let ins = "insert into txt values ($1)";
        let mut tx = c.transaction().await.unwrap();
        assert_eq!(tx.execute(ins, &[&1i32]).await.unwrap(), 1);
        assert_eq!(tx.tx_status(), TxStatus::InTransaction);
        tx.commit().await.unwrap();

        let mut tx = c.transaction().await.unwrap();
        tx.execute(ins, &[&2i32]).await.unwrap();
        tx.rollback().await.unwrap();

        {
            let mut tx = c.transaction().await.unwrap();
            tx.execute(ins, &[&3i32]).await.unwrap();
            // Dropped uncommitted.
        }
        assert!(c.in_transaction());
        assert!(!c.is_idle());
        let n: i64 = c
            .query_one("select count(*) from txt", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1);
        assert!(!c.in_transaction());

        let mut tx = c.transaction().await.unwrap();
        tx.execute(ins, &[&4i32]).await.unwrap();
        {
            let mut sp = tx.savepoint("sp one").await.unwrap();
            sp.execute(ins, &[&5i32]).await.unwrap();
            sp.rollback().await.unwrap();
        }
        {
            let mut sp = tx.savepoint("sp2").await.unwrap();
            sp.execute(ins, &[&6i32]).await.unwrap();
            sp.commit().await.unwrap();
        }
        {
            let mut sp = tx.savepoint("sp3").await.unwrap();
            sp.execute(ins, &[&7i32]).await.unwrap();
            // Dropped: rolled back to the savepoint only.
        }
        tx.commit().await.unwrap();
        let rows = c.query("select a from txt order by a", &[]).await.unwrap();
        let got: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(got, vec![1, 4, 6]);

        // A failed transaction: commit reports it.
        let mut tx = c.transaction().await.unwrap();
        assert!(tx.query("select 1 / 0", &[]).await.is_err());
        assert_eq!(tx.tx_status(), TxStatus::Failed);
        assert_eq!(
            tx.query("select 1", &[]).await.unwrap_err().code(),
            Some("25P02")
        );
        assert!(tx.commit().await.is_err());
        assert_eq!(c.tx_status(), TxStatus::Idle);
    });
}

#[test]
fn copy_in_and_out_stream() {
    block_on(async {
        let mut c = connect().await;
        c.batch_execute("drop table if exists cp; create table cp(a int, b text)")
            .await
            .unwrap();
        let mut w = c.copy_in("copy cp from stdin").await.unwrap();
        for i in 0..20_000 {
            w.write(format!("{i}\tvalue {i}\n").as_bytes())
                .await
                .unwrap();
        }
        assert_eq!(w.finish().await.unwrap(), 20_000);

        let mut r = c
            .copy_out("copy (select a, b from cp order by a) to stdout")
            .await
            .unwrap();
        let mut lines = 0;
        let mut biggest = 0;
        while let Some(chunk) = r.next().await.unwrap() {
            biggest = biggest.max(chunk.len());
            lines += chunk.iter().filter(|&&b| b == b'\n').count();
        }
        assert_eq!(lines, 20_000);
        assert!(biggest < 1024);

        // Bad data: the error surfaces and the connection stays usable.
        let mut w = c.copy_in("copy cp from stdin").await.unwrap();
        w.write(b"not-a-number\tx\n").await.unwrap();
        let e = w.finish().await.unwrap_err();
        assert_eq!(e.code(), Some("22P02"));
        // Abort, and a dropped writer.
        let mut w = c.copy_in("copy cp from stdin").await.unwrap();
        w.write(b"1\tx\n").await.unwrap();
        w.abort("changed my mind").await.unwrap();
        {
            let mut w = c.copy_in("copy cp from stdin").await.unwrap();
            w.write(b"2\ty\n").await.unwrap();
        }
        let n: i64 = c
            .query_one("select count(*) from cp", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 20_000);
        // A COPY through the wrong door is refused without breaking anything.
        assert!(c.simple_query("copy cp from stdin").await.is_err());
        assert!(c.copy_in("select 1").await.is_err());
        let mut r = c.copy_out("copy (select 1) to stdout").await.unwrap();
        assert_eq!(r.read_all().await.unwrap(), b"1\n");
        assert!(c.is_idle());
    });
}

#[test]
fn listen_notify() {
    block_on(async {
        let mut c = connect().await;
        c.batch_execute("LISTEN tp_chan").await.unwrap();
        let mut other = connect().await;
        other
            .execute("select pg_notify('tp_chan', $1)", &[&"hello"])
            .await
            .unwrap();
        let n = c
            .wait_for_notification(Some(Duration::from_secs(5)))
            .await
            .unwrap()
            .expect("a notification");
        assert_eq!(
            (n.channel.as_str(), n.payload.as_str()),
            ("tp_chan", "hello")
        );
        assert_eq!(Some(n.process_id), other.backend_pid());
        let none = c
            .wait_for_notification(Some(Duration::from_millis(100)))
            .await
            .unwrap();
        assert!(none.is_none());
        // Notices are collected, never errors.
        c.batch_execute("do $$ begin raise notice 'note %', 1; end $$")
            .await
            .unwrap();
        assert!(c.take_notices().iter().any(|n| n.message == "note 1"));
        // Notifications also arrive alongside queries.
        other
            .batch_execute("notify tp_chan, 'second'")
            .await
            .unwrap();
        time::sleep(Duration::from_millis(50)).await;
        c.query("select 1", &[]).await.unwrap();
        let got = c.take_notifications();
        assert!(got.iter().any(|n| n.payload == "second"), "{got:?}");
    });
}

#[test]
fn many_clients_on_one_worker() {
    block_on(async {
        let mut handles = Vec::new();
        for i in 0..8i32 {
            handles.push(tidepool_engine::rt::spawn(async move {
                let mut c = Client::connect(&cfg(PgUser::Scram)).await.unwrap();
                let mut sum = 0i64;
                for j in 0..20i32 {
                    let row = c
                        .query_one("select $1::int4 + $2::int4", &[&i, &j])
                        .await
                        .unwrap();
                    sum += i64::from(row.get::<i32>(0));
                }
                sum
            }));
        }
        let mut total = 0;
        for h in handles {
            total += h.await.unwrap();
        }
        let want: i64 = (0..8).map(|i| (0..20).map(|j| i + j).sum::<i64>()).sum();
        assert_eq!(total, want);
    });
}
