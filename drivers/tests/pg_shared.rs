//! The shared (pipelined) connection against a real server: many callers
//! on one socket, errors kept to their caller, statement preparation once,
//! session state refused, time-outs and dropped callers, closing.

use std::time::Duration;

use tidepool_drivers::pg::{Client, Config, Error, SharedClient};
use tidepool_engine::rt::{block_on, spawn, time};
use tidepool_testkit::{PgServer, PgUser};

fn cfg() -> Config {
    PgServer::shared().url(PgUser::Scram).parse().unwrap()
}

async fn shared() -> SharedClient {
    SharedClient::connect(&cfg()).await.unwrap()
}

#[test]
fn many_callers_share_one_socket_in_few_sends() {
    block_on(async {
        let db = shared().await;
        let before = db.stats();
        let tasks: Vec<_> = (0..200i32)
            .map(|i| {
                let db = db.clone();
                spawn(async move {
                    db.query_one("select $1::int4 * 2", &[&i])
                        .await
                        .map(|r| r.get::<i32>(0))
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().unwrap(), 2 * i as i32);
        }
        let after = db.stats();
        assert_eq!(db.statements(), 200);
        // The 200 callers ran in the same loop turns: their statements
        // went out together (one Parse, then the executes), not 200 sends.
        let writes = after.writes - before.writes;
        assert!(writes <= 6, "{writes} sends for 200 statements");
        assert_eq!(db.in_flight(), 0);
        assert!(!db.is_broken());
    });
}

#[test]
fn an_error_reaches_only_its_caller() {
    block_on(async {
        let db = shared().await;
        let (a, b, c) = (db.clone(), db.clone(), db.clone());
        let ok1 = spawn(async move { a.query_one("select 1::int4", &[]).await });
        let bad = spawn(async move { b.query("select 1 / 0", &[]).await });
        let ok2 = spawn(async move { c.query_one("select 2::int4", &[]).await });
        assert_eq!(ok1.await.unwrap().unwrap().get::<i32>(0), 1);
        let e = bad.await.unwrap().unwrap_err();
        assert_eq!(e.code(), Some("22012"), "{e:?}");
        assert_eq!(ok2.await.unwrap().unwrap().get::<i32>(0), 2);
        assert!(!db.is_broken());
        let row = db
            .query_one("select 'still fine'::text", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<&str>(0), "still fine");
    });
}

#[test]
fn concurrent_first_use_prepares_once() {
    block_on(async {
        let db = shared().await;
        let sql = "select $1::int8 + 1000";
        let tasks: Vec<_> = (0..50i64)
            .map(|i| {
                let db = db.clone();
                spawn(async move { db.query_one(sql, &[&i]).await.unwrap().get::<i64>(0) })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), i as i64 + 1000);
        }
        let rows = db
            .query(
                "select statement from pg_prepared_statements where statement = $1",
                &[&sql],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "one server-side statement for 50 callers");
    });
}

#[test]
fn query_many_is_one_pipeline() {
    block_on(async {
        let db = shared().await;
        let ids: Vec<i32> = (1..=100).collect();
        let params: Vec<[&dyn tidepool_drivers::pg::ToSql; 1]> =
            ids.iter().map(|i| [i as _]).collect();
        let sets: Vec<&[&dyn tidepool_drivers::pg::ToSql]> =
            params.iter().map(|p| &p[..]).collect();
        let before = db.stats().writes;
        let results = db.query_many("select $1::int4 + 1", &sets).await.unwrap();
        assert_eq!(results.len(), 100);
        for (i, r) in results.into_iter().enumerate() {
            assert_eq!(r.unwrap().rows[0].get::<i32>(0), i as i32 + 2);
        }
        assert!(db.stats().writes - before <= 3);
    });
}

#[test]
fn a_transaction_breaks_the_shared_connection() {
    block_on(async {
        let db = shared().await;
        let other = db.clone();
        // BEGIN itself succeeds on the server; the connection is then
        // failed rather than left inside a transaction other callers share.
        let _ = db.execute("begin", &[]).await;
        let e = other.query("select 1", &[]).await.unwrap_err();
        assert!(e.is_broken() || matches!(e, Error::Closed), "{e:?}");
        assert!(db.is_broken());
        // A fresh connection is unaffected.
        let db = shared().await;
        assert_eq!(
            db.query_one("select 3::int4", &[])
                .await
                .unwrap()
                .get::<i32>(0),
            3
        );
    });
}

/// Two callers in one turn: A's BEGIN and B's INSERT leave in one send, so
/// the server runs B's INSERT inside A's transaction. B must not hear
/// `Ok` for a row that closing the connection rolls back; with C's ROLLBACK
/// in the same batch too. Either way the row is not there afterwards.
#[test]
fn a_transaction_never_acknowledges_another_callers_write() {
    block_on(async {
        let admin = shared().await;
        admin
            .execute(
                "create table if not exists shared_tx_leak (k text primary key)",
                &[],
            )
            .await
            .unwrap();
        for (case, rollback) in [("pair", false), ("triple", true)] {
            let db = shared().await;
            let (a, b, c) = (db.clone(), db.clone(), db.clone());
            let begin = spawn(async move { a.execute("begin", &[]).await });
            let insert = spawn(async move {
                b.execute("insert into shared_tx_leak values ($1)", &[&case])
                    .await
            });
            let end = rollback.then(|| spawn(async move { c.execute("rollback", &[]).await }));
            let begin = begin.await.unwrap();
            let insert = insert.await.unwrap();
            assert!(
                matches!(&begin, Err(Error::Usage(m)) if m.contains("transaction")),
                "{case}: BEGIN answered {begin:?}"
            );
            assert!(
                matches!(insert, Err(Error::Closed)),
                "{case}: the INSERT inside another caller's transaction answered {insert:?}"
            );
            if let Some(end) = end {
                let end = end.await.unwrap();
                assert!(matches!(end, Err(Error::Closed)), "{case}: {end:?}");
            }
            assert!(db.is_broken());
            let n = admin
                .query_one(
                    "select count(*)::int8 from shared_tx_leak where k = $1",
                    &[&case],
                )
                .await
                .unwrap()
                .get::<i64>(0);
            assert_eq!(n, 0, "{case}: a rolled-back row was acknowledged");
        }
    });
}

#[test]
fn timed_out_and_dropped_callers_leave_replies_matched() {
    block_on(async {
        // The time-out is longer than what the next caller waits behind the
        // late statement (a shared connection answers in order).
        let db = SharedClient::connect(&cfg().query_timeout(Duration::from_millis(250)))
            .await
            .unwrap();
        let e = db
            .query("select pg_sleep(0.3), 'late'::text", &[])
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Timeout), "{e:?}");
        let row = db.query_one("select 'mine'::text", &[]).await.unwrap();
        assert_eq!(row.get::<&str>(0), "mine");

        // A caller that gives up on its own: its future is dropped.
        let db = shared().await;
        let gone = time::timeout(
            Duration::from_millis(20),
            db.query("select pg_sleep(0.1), 'dropped'::text", &[]),
        )
        .await;
        assert!(gone.is_err());
        let row = db.query_one("select 'also mine'::text", &[]).await.unwrap();
        assert_eq!(row.get::<&str>(0), "also mine");
        assert!(!db.is_broken());
        assert_eq!(db.in_flight(), 0);
    });
}

#[test]
fn dropping_the_last_handle_ends_the_session() {
    block_on(async {
        let mut watcher = Client::connect(&cfg()).await.unwrap();
        let db = shared().await;
        let pid = db.backend_pid().unwrap();
        let alive = "select count(*)::int8 from pg_stat_activity where pid = $1";
        assert_eq!(
            watcher
                .query_one(alive, &[&pid])
                .await
                .unwrap()
                .get::<i64>(0),
            1
        );
        let clone = db.clone();
        drop(db);
        // A clone keeps it open.
        assert_eq!(
            clone
                .query_one("select 1::int4", &[])
                .await
                .unwrap()
                .get::<i32>(0),
            1
        );
        drop(clone);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let n: i64 = watcher.query_one(alive, &[&pid]).await.unwrap().get(0);
            if n == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "backend {pid} still there"
            );
            time::sleep(Duration::from_millis(10)).await;
        }
    });
}

#[test]
fn a_killed_backend_fails_every_pending_caller() {
    block_on(async {
        let mut admin = Client::connect(
            &PgServer::shared()
                .url(PgUser::Super)
                .parse::<Config>()
                .unwrap(),
        )
        .await
        .unwrap();
        let db = shared().await;
        let pid = db.backend_pid().unwrap();
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let db = db.clone();
                spawn(async move { db.query("select pg_sleep(5)", &[]).await })
            })
            .collect();
        // Once the statements reached the server, end the backend.
        let active =
            "select count(*)::int8 from pg_stat_activity where pid = $1 and state = 'active'";
        while admin
            .query_one(active, &[&pid])
            .await
            .unwrap()
            .get::<i64>(0)
            == 0
        {
            time::sleep(Duration::from_millis(5)).await;
        }
        admin
            .query("select pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        // An error, not the statement's result 5 s later: every caller hears
        // of the ended session instead of waiting on it.
        for t in tasks {
            assert!(t.await.unwrap().is_err());
        }
        assert!(db.is_broken());
        assert!(matches!(
            db.query("select 1", &[]).await,
            Err(Error::Closed)
        ));
    });
}

#[test]
fn schema_changes_under_load_fail_no_caller() {
    block_on(async {
        let db = shared().await;
        let mut admin = Client::connect(&cfg()).await.unwrap();
        admin
            .batch_execute(
                "drop table if exists shared_schema; create table shared_schema(a int4); \
                 insert into shared_schema values (1)",
            )
            .await
            .unwrap();
        let sql = "select * from shared_schema";
        assert_eq!(db.query(sql, &[]).await.unwrap()[0].len(), 1);
        // Callers keep the statement busy in overlapping batches while its
        // plan's result type changes under them, twice: each failure
        // re-prepares once, and a late failure of the old statement must
        // not evict (and close) the successor other callers already use.
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let db = db.clone();
                spawn(async move {
                    for _ in 0..60 {
                        db.query(sql, &[]).await?;
                        tidepool_engine::rt::yield_now().await;
                    }
                    Ok::<_, Error>(())
                })
            })
            .collect();
        for (col, after) in [("b", 200), ("c", 500)] {
            // Once the callers are well under way.
            while db.statements() < after {
                tidepool_engine::rt::yield_now().await;
            }
            admin
                .batch_execute(&format!("alter table shared_schema add column {col} int4"))
                .await
                .unwrap();
        }
        for t in tasks {
            t.await
                .unwrap()
                .expect("no caller sees the schema change as an error");
        }
        assert_eq!(db.query(sql, &[]).await.unwrap()[0].len(), 3);
    });
}

/// A worker without a connection runs statements on another worker's
/// shared connection: point queries, a pipeline, writes; the rows and
/// errors come back to the caller. Once the owner drops the connection,
/// delegated statements fail with `Closed` (and the handle says broken)
/// instead of waiting forever, also after the owner's worker has exited.
#[test]
fn statements_are_delegated_to_a_connection_on_another_worker() {
    use std::sync::mpsc;
    use tidepool_drivers::pg::Exported;
    let (tx, rx) = mpsc::channel::<(Exported, tidepool_engine::rt::WorkerHandle)>();
    let owner = std::thread::spawn(move || {
        block_on(async move {
            let db = shared().await;
            db.execute(
                "create table if not exists delegated (k int4 primary key, v text)",
                &[],
            )
            .await
            .unwrap();
            tx.send((db.export().unwrap(), tidepool_engine::rt::current_worker()))
                .unwrap();
            tidepool_engine::rt::shutdown_signal().await;
            db.statements()
        })
    });
    let (exported, owner_worker) = rx.recv().unwrap();
    block_on(async move {
        let db = SharedClient::import(exported);
        assert!(db.is_remote() && !db.is_broken());
        db.execute("delete from delegated", &[]).await.unwrap();
        let n = db
            .execute("insert into delegated values ($1, $2)", &[&7i32, &"seven"])
            .await
            .unwrap();
        assert_eq!(n, 1);
        let row = db
            .query_one("select v from delegated where k = $1", &[&7i32])
            .await
            .unwrap();
        assert_eq!(row.get::<String>(0), "seven");
        // Several callers at once, and one pipeline of many.
        let (a, b) = (db.clone(), db.clone());
        let one = spawn(async move { a.query_one("select $1::int4 + 1", &[&1i32]).await });
        let two = spawn(async move { b.query_one("select $1::int4 + 1", &[&2i32]).await });
        assert_eq!(one.await.unwrap().unwrap().get::<i32>(0), 2);
        assert_eq!(two.await.unwrap().unwrap().get::<i32>(0), 3);
        let ids: Vec<i32> = (0..50).collect();
        let params: Vec<[&dyn tidepool_drivers::pg::ToSql; 1]> = ids
            .iter()
            .map(|i| [i as &dyn tidepool_drivers::pg::ToSql])
            .collect();
        let sets: Vec<&[&dyn tidepool_drivers::pg::ToSql]> =
            params.iter().map(|p| &p[..]).collect();
        let many = db.query_many("select $1::int4 * 2", &sets).await.unwrap();
        for (i, r) in many.into_iter().enumerate() {
            assert_eq!(r.unwrap().rows[0].get::<i32>(0), 2 * i as i32);
        }
        // A server error reaches its caller and leaves the connection usable.
        let e = db
            .query("select * from no_such_table", &[])
            .await
            .unwrap_err();
        assert_eq!(e.as_db().map(|d| d.code.as_str()), Some("42P01"), "{e:?}");
        assert_eq!(
            db.query_one("select 5::int4", &[])
                .await
                .unwrap()
                .get::<i32>(0),
            5
        );
        // The owner lets go: its worker ends, and with it the connection.
        owner_worker.shutdown();
        let ran = owner.join().unwrap();
        assert!(ran >= 55, "the owner ran the delegated statements: {ran}");
        let e = db.query_one("select 1::int4", &[]).await.unwrap_err();
        assert!(matches!(e, Error::Closed), "{e:?}");
        assert!(db.is_broken());
    });
}
