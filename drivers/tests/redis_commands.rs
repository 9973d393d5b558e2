//! Command families against a real redis-server.

use std::collections::HashMap;
use std::time::Duration;

use tidepool_drivers::redis::{
    cmd, Config, Connection, Error, ScanOptions, Script, ServerErrorKind, SetOptions, Value,
};
use tidepool_engine::rt;
use tidepool_testkit::RedisServer;

fn config() -> Config {
    Config::from_url(&RedisServer::shared().url()).unwrap()
}

fn run<F: std::future::Future<Output = Result<(), Error>>>(f: impl FnOnce(Connection) -> F) {
    rt::block_on(async {
        let conn = Connection::connect(&config()).await.expect("connect");
        f(conn).await.expect("test body");
    })
}

#[test]
fn strings() {
    run(|c| async move {
        let k = "str:a";
        c.del(&[k, "str:n", "str:gd"]).await?;
        assert_eq!(c.get::<Option<String>>(k).await?, None);
        c.set(k, "hello").await?;
        assert_eq!(c.get::<String>(k).await?, "hello");
        assert_eq!(c.append(k, " world").await?, 11);
        assert_eq!(c.get::<Vec<u8>>(k).await?, b"hello world");
        assert!(
            c.set_with::<bool>(k, "x", SetOptions::new().ex(100).xx())
                .await?
        );
        assert!(!c.set_with::<bool>(k, "y", SetOptions::new().nx()).await?);
        let old: Option<String> = c
            .set_with(k, "z", SetOptions::new().px(50_000).get())
            .await?;
        assert_eq!(old.as_deref(), Some("x"));
        let ttl = c.pttl(k).await?;
        assert!(ttl > 40_000 && ttl <= 50_000, "{ttl}");
        assert_eq!(c.incr("str:n").await?, 1);
        assert_eq!(c.incr_by("str:n", 10).await?, 11);
        assert_eq!(c.decr("str:n").await?, 10);
        assert_eq!(c.decr_by("str:n", 3).await?, 7);
        c.mset(&[("str:m1", "1"), ("str:m2", "2")]).await?;
        let got: Vec<Option<i64>> = c.mget(&["str:m1", "str:missing", "str:m2"]).await?;
        assert_eq!(got, vec![Some(1), None, Some(2)]);
        c.set("str:gd", 5).await?;
        assert_eq!(c.getdel::<Option<i64>>("str:gd").await?, Some(5));
        assert_eq!(c.getdel::<Option<i64>>("str:gd").await?, None);
        // Type errors come back as typed server errors.
        c.lpush("str:list", &["a"]).await?;
        let e = c.incr("str:list").await.unwrap_err();
        assert_eq!(e.server_kind(), Some(&ServerErrorKind::WrongType));
        assert!(!e.is_broken());
        c.del(&["str:list"]).await?;
        Ok(())
    })
}

#[test]
fn keys_and_scan() {
    run(|c| async move {
        for i in 0..50 {
            c.set(format!("scan:{i}"), i).await?;
        }
        assert_eq!(c.exists(&["scan:1", "scan:2", "scan:none"]).await?, 2);
        assert!(c.expire("scan:1", 100).await?);
        assert!(!c.expire("scan:none", 100).await?);
        let ttl = c.ttl("scan:1").await?;
        assert!((99..=100).contains(&ttl));
        assert!(c.pexpire("scan:2", 100_000).await?);
        assert_eq!(c.ttl("scan:3").await?, -1);
        assert_eq!(c.ttl("scan:none").await?, -2);
        assert_eq!(c.pttl("scan:none").await?, -2);
        let mut keys: Vec<String> = c
            .scan_all(&ScanOptions::new().pattern("scan:*").count(7))
            .await?;
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 50);
        let (_, batch): (u64, Vec<String>) = c
            .scan(0, &ScanOptions::new().pattern("scan:4*").kind("string"))
            .await?;
        assert!(batch.iter().all(|k| k.starts_with("scan:4")));
        let keys: Vec<String> = (0..50).map(|i| format!("scan:{i}")).collect();
        assert_eq!(c.del(&keys).await?, 50);
        Ok(())
    })
}

#[test]
fn hashes() {
    run(|c| async move {
        let k = "hash:h";
        c.del(&[k]).await?;
        assert_eq!(c.hset(k, "a", 1).await?, 1);
        assert_eq!(c.hset_multiple(k, &[("b", "2"), ("c", "3")]).await?, 2);
        assert_eq!(c.hget::<Option<i64>>(k, "b").await?, Some(2));
        assert_eq!(c.hget::<Option<i64>>(k, "zz").await?, None);
        assert_eq!(c.hincr_by(k, "a", 5).await?, 6);
        let all: Vec<(String, i64)> = c.hgetall(k).await?;
        let m: HashMap<String, i64> = all.into_iter().collect();
        assert_eq!(
            m,
            HashMap::from([("a".into(), 6), ("b".into(), 2), ("c".into(), 3)])
        );
        assert_eq!(c.hdel(k, &["a", "b", "nope"]).await?, 2);
        // The RESP3 map form converts straight into a HashMap too.
        let m: HashMap<String, String> = c.cmd_as(["HGETALL", k]).await?;
        assert_eq!(m.len(), 1);
        Ok(())
    })
}

#[test]
fn lists() {
    run(|c| async move {
        let k = "list:l";
        c.del(&[k]).await?;
        assert_eq!(c.rpush(k, &["b", "c"]).await?, 2);
        assert_eq!(c.lpush(k, &["a"]).await?, 3);
        assert_eq!(c.llen(k).await?, 3);
        assert_eq!(c.lrange::<String>(k, 0, -1).await?, vec!["a", "b", "c"]);
        assert_eq!(c.lpop::<Option<String>>(k).await?.as_deref(), Some("a"));
        assert_eq!(c.rpop::<Option<String>>(k).await?.as_deref(), Some("c"));
        assert_eq!(c.rpop::<Option<String>>(k).await?.as_deref(), Some("b"));
        assert_eq!(c.rpop::<Option<String>>(k).await?, None);
        Ok(())
    })
}

#[test]
fn sets() {
    run(|c| async move {
        let k = "set:s";
        c.del(&[k]).await?;
        assert_eq!(c.sadd(k, &["x", "y", "z", "x"]).await?, 3);
        assert_eq!(c.scard(k).await?, 3);
        assert!(c.sismember(k, "y").await?);
        assert!(!c.sismember(k, "w").await?);
        assert_eq!(c.srem(k, &["y", "w"]).await?, 1);
        let mut m: Vec<String> = c.smembers(k).await?;
        m.sort();
        assert_eq!(m, vec!["x", "z"]);
        Ok(())
    })
}

#[test]
fn sorted_sets() {
    run(|c| async move {
        let k = "zset:z";
        c.del(&[k]).await?;
        assert_eq!(c.zadd(k, &[(1.0, "a"), (2.5, "b"), (-3.0, "c")]).await?, 3);
        assert_eq!(c.zcard(k).await?, 3);
        assert_eq!(c.zrange::<String>(k, 0, -1).await?, vec!["c", "a", "b"]);
        let ws: Vec<(String, f64)> = c.zrange_withscores(k, 0, 1).await?;
        assert_eq!(ws, vec![("c".to_string(), -3.0), ("a".to_string(), 1.0)]);
        assert_eq!(c.zscore(k, "b").await?, Some(2.5));
        assert_eq!(c.zscore(k, "nope").await?, None);
        assert_eq!(c.zincr_by(k, 0.5, "b").await?, 3.0);
        assert_eq!(c.zrem(k, &["a", "nope"]).await?, 1);
        assert_eq!(c.zcard(k).await?, 2);
        Ok(())
    })
}

#[test]
fn binary_values_round_trip() {
    run(|c| async move {
        let key: &[u8] = b"bin:\r\n\0key";
        let value: Vec<u8> = (0..=255u8)
            .chain(b"\r\n$3\r\n*1\r\n\0".iter().copied())
            .collect();
        c.set(key, &value).await?;
        assert_eq!(c.get::<Vec<u8>>(key).await?, value);
        c.hset("bin:h", b"\0f\r\n".as_slice(), b"\r\n\0".as_slice())
            .await?;
        assert_eq!(
            c.hget::<Vec<u8>>("bin:h", b"\0f\r\n".as_slice()).await?,
            b"\r\n\0"
        );
        c.del(&[key, b"bin:h".as_slice()]).await?;
        Ok(())
    })
}

#[test]
fn ten_mib_value() {
    run(|c| async move {
        let value: Vec<u8> = (0..10 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        c.set("big:v", &value).await?;
        let got: Vec<u8> = c.get("big:v").await?;
        assert!(got == value, "10 MiB value differs");
        c.del(&["big:v"]).await?;
        Ok(())
    })
}

#[test]
fn raw_commands() {
    run(|c| async move {
        c.ping().await?;
        assert_eq!(
            c.cmd(cmd("SET").arg("raw:k").arg(42)).await?,
            Value::Simple("OK".into())
        );
        let n: i64 = c.cmd_as(["STRLEN", "raw:k"]).await?;
        assert_eq!(n, 2);
        let e = c.cmd(["NOSUCHCOMMAND"]).await.unwrap_err();
        assert_eq!(e.server_kind(), Some(&ServerErrorKind::Err));
        let e = c.cmd(["subscribe", "x"]).await.unwrap_err();
        assert!(matches!(e, Error::Usage(_)));
        assert!(c.is_resp3());
        // RESP3 types arrive as such.
        let v = c.cmd(["HELLO", "3"]).await?;
        assert!(matches!(v, Value::Map(_)));
        Ok(())
    })
}

#[test]
fn resp2_connection() {
    rt::block_on(async {
        let c = Connection::connect(&config().resp3(false).client_name("resp2-test"))
            .await
            .unwrap();
        assert!(!c.is_resp3());
        c.hset_multiple("r2:h", &[("a", 1), ("b", 2)])
            .await
            .unwrap();
        let v = c.cmd(["HGETALL", "r2:h"]).await.unwrap();
        assert!(matches!(v, Value::Array(_)));
        let all: Vec<(String, i64)> = c.hgetall("r2:h").await.unwrap();
        assert_eq!(all.len(), 2);
        c.zadd("r2:z", &[(1.5, "m")]).await.unwrap();
        let ws: Vec<(String, f64)> = c.zrange_withscores("r2:z", 0, -1).await.unwrap();
        assert_eq!(ws, vec![("m".to_string(), 1.5)]);
        let name: String = c.cmd_as(["CLIENT", "GETNAME"]).await.unwrap();
        assert_eq!(name, "resp2-test");
        c.del(&["r2:h", "r2:z"]).await.unwrap();
    })
}

#[test]
fn select_database() {
    rt::block_on(async {
        let c3 = Connection::connect(&config().database(3)).await.unwrap();
        let c0 = Connection::connect(&config()).await.unwrap();
        c3.set("db:k", "three").await.unwrap();
        assert_eq!(c0.get::<Option<String>>("db:k").await.unwrap(), None);
        assert_eq!(c3.get::<String>("db:k").await.unwrap(), "three");
        c3.del(&["db:k"]).await.unwrap();
    })
}

#[test]
fn explicit_pipeline_of_1000() {
    run(|c| async move {
        let mut p = c.pipeline();
        for i in 0..1000 {
            p.add(cmd("SET").arg(format!("pipe:{i}")).arg(i));
        }
        p.add(["INCR", "pipe:999"]);
        p.add(["INCR", "pipe:notanumber:0"]);
        let before = c.stats().flushes;
        let replies = p.query().await?;
        assert_eq!(c.stats().flushes - before, 1);
        assert_eq!(replies.len(), 1002);
        assert!(replies[..1000]
            .iter()
            .all(|v| *v == Value::Simple("OK".into())));
        assert_eq!(replies[1000], Value::Int(1000));
        let mut p = c.pipeline();
        for i in 0..1000 {
            p.add(["GET".to_string(), format!("pipe:{i}")]);
        }
        let values: Vec<i64> = p.query_as().await?;
        assert_eq!(values[..999], (0..999).collect::<Vec<i64>>());
        assert_eq!(values[999], 1000);
        let (a, b): (i64, Option<String>) = c
            .pipeline()
            .cmd(["INCR", "pipe:0"])
            .cmd(["GET", "pipe:nope"])
            .query_as()
            .await?;
        assert_eq!((a, b), (1, None));
        let keys: Vec<String> = (0..1000).map(|i| format!("pipe:{i}")).collect();
        c.del(&keys).await?;
        assert!(c.pipeline().query().await?.is_empty());
        Ok(())
    })
}

#[test]
fn thousand_tasks_auto_pipeline_on_one_connection() {
    rt::block_on(async {
        let c = Connection::connect(&config()).await.unwrap();
        c.del(&["auto:counter"]).await.unwrap();
        let before = c.stats();
        let handles: Vec<_> = (0..1000)
            .map(|i| {
                let c = c.clone();
                rt::spawn(async move {
                    let n = c.incr("auto:counter").await.unwrap();
                    c.set(format!("auto:{i}"), n).await.unwrap();
                    n
                })
            })
            .collect();
        let mut seen = Vec::new();
        for h in handles {
            seen.push(h.await.unwrap());
        }
        seen.sort();
        assert_eq!(seen, (1..=1000).collect::<Vec<i64>>());
        let s = c.stats();
        let flushes = s.flushes - before.flushes;
        assert_eq!(s.commands - before.commands, 2000);
        // 2,000 commands from 1,000 tasks went out in a handful of sends.
        assert!(flushes <= 10, "{flushes} flushes for 2000 commands");
        let keys: Vec<String> = (0..1000).map(|i| format!("auto:{i}")).collect();
        c.del(&keys).await.unwrap();
        c.del(&["auto:counter"]).await.unwrap();
    })
}

#[test]
fn in_flight_cap_makes_tasks_wait_in_order() {
    rt::block_on(async {
        let c = Connection::connect(&config().max_in_flight(8))
            .await
            .unwrap();
        let handles: Vec<_> = (0..200)
            .map(|i| {
                let c = c.clone();
                rt::spawn(async move {
                    c.cmd_as::<i64>(["ECHO".to_string(), i.to_string()])
                        .await
                        .unwrap()
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.unwrap(), i as i64);
        }
        let s = c.stats();
        assert!(s.waited >= 150, "{s:?}");
        assert_eq!((s.waiting, s.in_flight), (0, 0));
    })
}

#[test]
fn reply_size_cap() {
    rt::block_on(async {
        let big = Connection::connect(&config()).await.unwrap();
        big.set("cap:big", vec![b'x'; 100_000]).await.unwrap();
        big.set("cap:small", "ok").await.unwrap();
        let c = Connection::connect(&config().max_reply(10_000))
            .await
            .unwrap();
        let (a, b, d) = (c.clone(), c.clone(), c.clone());
        // The oversized reply fails only its own command; commands around
        // it on the same connection are unaffected.
        let h1 = rt::spawn(async move { a.get::<String>("cap:small").await });
        let h2 = rt::spawn(async move { b.get::<Vec<u8>>("cap:big").await });
        let h3 = rt::spawn(async move { d.get::<String>("cap:small").await });
        assert_eq!(h1.await.unwrap().unwrap(), "ok");
        let e = h2.await.unwrap().unwrap_err();
        assert!(matches!(e, Error::TooLarge { limit: 10_000 }), "{e:?}");
        assert!(!e.is_broken());
        assert_eq!(h3.await.unwrap().unwrap(), "ok");
        assert!(!c.is_broken());
        let mut p = c.pipeline();
        for _ in 0..200 {
            p.add(["GET", "cap:small"]);
        }
        // 200 small replies add up to under the cap per reply: fine.
        assert_eq!(p.query().await.unwrap().len(), 200);
        let e = c.cmd(["LRANGE", "cap:nothing", "0", "-1"]).await.unwrap();
        assert_eq!(e, Value::Array(vec![]));
        big.del(&["cap:big", "cap:small"]).await.unwrap();
    })
}

#[test]
fn scripts_reload_after_noscript() {
    run(|c| async move {
        let s = Script::new("return {KEYS[1], ARGV[1], redis.call('INCRBY', KEYS[1], ARGV[1])}");
        let sha = c.script_load(s.code()).await?;

        assert_eq!(sha, s.hash());
        c.del(&["script:k"]).await?;
        let (k, a, n): (String, i64, i64) = c.run_script(&s, &[&"script:k"], &[&5]).await?;
        assert_eq!((k.as_str(), a, n), ("script:k", 5, 5));
        c.cmd(["SCRIPT", "FLUSH"]).await?;
        let e = c
            .evalsha::<Value>(s.hash(), &[&"script:k"], &[&1])
            .await
            .unwrap_err();
        assert_eq!(e.server_kind(), Some(&ServerErrorKind::NoScript));
        // NOSCRIPT: the script is sent once more and then cached again.
        let (_, _, n): (String, i64, i64) = c.run_script(&s, &[&"script:k"], &[&2]).await?;
        assert_eq!(n, 7);
        let exists: Vec<bool> = c.cmd_as(["SCRIPT", "EXISTS", s.hash()]).await?;
        assert_eq!(exists, vec![true]);
        let v: i64 = c.eval("return #ARGV", &[], &[&"a", &"b"]).await?;
        assert_eq!(v, 2);
        let e = c
            .eval::<Value>("return redis.error_reply('MYERR custom')", &[], &[])
            .await
            .unwrap_err();
        assert_eq!(
            e.server_kind(),
            Some(&ServerErrorKind::Other("MYERR".into()))
        );
        c.del(&["script:k"]).await?;
        Ok(())
    })
}

#[test]
fn transactions() {
    run(|c| async move {
        c.del(&["tx:a"]).await?;
        let r = c
            .transaction()
            .cmd(["SET", "tx:a", "1"])
            .cmd(["INCR", "tx:a"])
            .cmd(["LPUSH", "tx:a", "x"])
            .exec()
            .await?
            .expect("not watched");
        assert_eq!(r[0], Value::Simple("OK".into()));
        assert_eq!(r[1], Value::Int(2));
        assert!(matches!(&r[2], Value::Error(e) if *e.kind() == ServerErrorKind::WrongType));
        // A command rejected at queue time aborts the whole block.
        let e = c
            .transaction()
            .cmd(["SET", "tx:a"])
            .cmd(["INCR", "tx:a"])
            .exec()
            .await
            .unwrap_err();
        assert_eq!(e.server_kind(), Some(&ServerErrorKind::ExecAbort));
        assert!(e.to_string().contains("wrong number of arguments"), "{e}");
        let v: Option<(String, i64)> = c
            .transaction()
            .cmd(["SET", "tx:a", "5"])
            .cmd(["INCR", "tx:a"])
            .exec_as()
            .await?;
        assert_eq!(v, Some(("OK".into(), 6)));
        // WATCH is refused on a shared handle.
        let other = c.clone();
        assert!(matches!(c.watch(&["tx:a"]).await, Err(Error::Usage(_))));
        drop(other);
        c.del(&["tx:a"]).await?;
        Ok(())
    })
}

#[test]
fn watch_conflict_aborts_exec() {
    rt::block_on(async {
        let cfg = config();
        let c = Connection::connect(&cfg).await.unwrap();
        let other = Connection::connect(&cfg).await.unwrap();
        c.set("watch:k", 1).await.unwrap();
        c.watch(&["watch:k"]).await.unwrap();
        let v: i64 = c.get("watch:k").await.unwrap();
        other.set("watch:k", 100).await.unwrap();
        let r = c
            .transaction()
            .cmd(cmd("SET").arg("watch:k").arg(v + 1))
            .exec()
            .await
            .unwrap();
        assert_eq!(r, None, "EXEC must abort after a watched key changed");
        assert_eq!(c.get::<i64>("watch:k").await.unwrap(), 100);
        // Without interference it goes through.
        c.watch(&["watch:k"]).await.unwrap();
        let r = c
            .transaction()
            .cmd(["INCR", "watch:k"])
            .exec()
            .await
            .unwrap();
        assert_eq!(r, Some(vec![Value::Int(101)]));
        c.watch(&["watch:k"]).await.unwrap();
        c.unwatch().await.unwrap();
        other.set("watch:k", 0).await.unwrap();
        assert!(c
            .transaction()
            .cmd(["INCR", "watch:k"])
            .exec()
            .await
            .unwrap()
            .is_some());
        c.del(&["watch:k"]).await.unwrap();
    })
}

#[test]
fn dropped_and_timed_out_commands_keep_replies_matched() {
    rt::block_on(async {
        let c = Connection::connect(&config()).await.unwrap();
        c.set("drop:k", "v").await.unwrap();
        // A blocking pop holds the connection; its caller gives up (the
        // future is dropped), and the reply that comes later is discarded.
        let r = rt::time::timeout(
            Duration::from_millis(50),
            c.cmd(["BLPOP", "drop:nothing", "0.3"]),
        )
        .await;
        assert!(r.is_err());
        assert!(!c.is_broken());
        // Queued behind the pop: answered after it, with its own reply.
        assert_eq!(c.get::<String>("drop:k").await.unwrap(), "v");
        // A future dropped right after it was sent.
        {
            let f = c.get::<String>("drop:k");
            let r = rt::time::timeout(Duration::from_millis(0), f).await;
            assert!(r.is_err());
        }
        for _ in 0..10 {
            assert_eq!(c.get::<String>("drop:k").await.unwrap(), "v");
        }
        assert_eq!(c.stats().discarded, 2);
        c.del(&["drop:k"]).await.unwrap();

        // The configured response timeout maps to Error::Timeout and does
        // not break the connection.
        let t = Connection::connect(&config().response_timeout(Duration::from_millis(50)))
            .await
            .unwrap();
        let e = t.cmd(["BLPOP", "drop:nothing", "0.3"]).await.unwrap_err();
        assert!(matches!(e, Error::Timeout), "{e:?}");
        assert!(!e.is_broken() && e.is_transient());
        assert!(!t.is_broken());
    })
}

#[test]
fn connection_closes_when_last_handle_drops() {
    rt::block_on(async {
        let tasks_before = rt::task_count();
        let c = Connection::connect(&config()).await.unwrap();
        c.ping().await.unwrap();
        assert_eq!(rt::task_count(), tasks_before + 2);
        drop(c);
        for _ in 0..100 {
            if rt::task_count() == tasks_before {
                break;
            }
            rt::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            rt::task_count(),
            tasks_before,
            "reader and writer tasks must end"
        );
    })
}

/// A worker without a connection sends its commands through another
/// worker's: single commands, a pipeline and a transaction keep their
/// replies in order; a server error reaches its caller; once the owner's
/// worker has ended, requests fail with `Closed` instead of waiting.
#[test]
fn commands_are_delegated_to_a_connection_on_another_worker() {
    use std::sync::mpsc;
    use tidepool_drivers::redis::Exported;
    let (tx, rx) = mpsc::channel::<(Exported, rt::WorkerHandle)>();
    let owner = std::thread::spawn(move || {
        rt::block_on(async move {
            let conn = Connection::connect(&config()).await.unwrap();
            tx.send((conn.export().unwrap(), rt::current_worker()))
                .unwrap();
            rt::shutdown_signal().await;
            conn.stats().commands
        })
    });
    let (exported, owner_worker) = rx.recv().unwrap();
    rt::block_on(async move {
        let c = Connection::import(exported);
        assert!(c.is_remote() && !c.is_broken());
        c.set("delegated:k", "v").await.unwrap();
        assert_eq!(c.get::<String>("delegated:k").await.unwrap(), "v");
        let (a, b) = (c.clone(), c.clone());
        let one = rt::spawn(async move { a.incr("delegated:n").await });
        let two = rt::spawn(async move { b.incr("delegated:n").await });
        let mut got = [one.await.unwrap().unwrap(), two.await.unwrap().unwrap()];
        got.sort();
        assert_eq!(got[1], got[0] + 1, "two increments, one after the other");
        let replies = c
            .pipeline()
            .cmd(cmd("SET").arg("delegated:p").arg("1"))
            .cmd(cmd("GET").arg("delegated:p"))
            .query()
            .await
            .unwrap();
        assert_eq!(replies[1], Value::Bulk(b"1".to_vec()));
        let multi = c
            .transaction()
            .cmd(cmd("INCR").arg("delegated:p"))
            .cmd(cmd("INCR").arg("delegated:p"))
            .exec()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(multi, vec![Value::Int(2), Value::Int(3)]);
        let e = c.cmd(["NOSUCHCOMMAND"]).await.unwrap_err();
        assert!(matches!(e, Error::Server(_)), "{e:?}");
        assert_eq!(
            c.del(&["delegated:k", "delegated:n", "delegated:p"])
                .await
                .unwrap(),
            3
        );
        owner_worker.shutdown();
        let commands = owner.join().unwrap();
        assert!(
            commands >= 8,
            "the owner ran the delegated commands: {commands}"
        );
        let e = c.get::<Option<String>>("delegated:k").await.unwrap_err();
        assert!(matches!(e, Error::Closed), "{e:?}");
        assert!(c.is_broken());
    });
}
