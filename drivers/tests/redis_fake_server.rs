//! Behaviour against a scripted fake server: the RESP2 fallback for servers
//! without `HELLO`, and what a misbehaving server does to a connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use tidepool_drivers::redis::{Config, Connection, Error};
use tidepool_engine::rt;

/// Reads one command (an array of bulk strings) as text arguments.
fn read_command(r: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let n: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        line.clear();
        r.read_line(&mut line).ok()?;
        let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut buf = vec![0; len + 2];
        r.read_exact(&mut buf).ok()?;
        buf.truncate(len);
        args.push(String::from_utf8(buf).ok()?);
    }
    Some(args)
}

/// A one-connection server answering each command with `answer`; returns
/// the commands it saw.
fn fake_server(
    answer: impl Fn(&[String]) -> Option<Vec<u8>> + Send + 'static,
) -> (Config, JoinHandle<Vec<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        let mut seen = Vec::new();
        while let Some(cmd) = read_command(&mut r) {
            let reply = answer(&cmd);
            seen.push(cmd);
            match reply {
                Some(bytes) => w.write_all(&bytes).unwrap(),
                None => break,
            }
        }
        seen
    });
    (Config::new("127.0.0.1", port), h)
}

#[test]
fn servers_without_hello_get_the_resp2_sequence() {
    let (cfg, h) = fake_server(|cmd| {
        Some(match cmd[0].as_str() {
            "HELLO" => b"-ERR unknown command 'HELLO'\r\n".to_vec(),
            "SELECT" if cmd[1] == "5" => b"+OK\r\n".to_vec(),
            "AUTH" | "CLIENT" => b"+OK\r\n".to_vec(),
            "GET" => b"$3\r\nbar\r\n".to_vec(),
            "QUIT" => return None,
            _ => b"-ERR unexpected\r\n".to_vec(),
        })
    });
    rt::block_on(async {
        let cfg = cfg.password("pw").client_name("legacy").database(5);
        let c = Connection::connect(&cfg).await.unwrap();
        assert!(!c.is_resp3());
        assert_eq!(c.get::<String>("foo").await.unwrap(), "bar");
        c.cmd(["QUIT"]).await.unwrap_err();
    });
    let seen = h.join().unwrap();
    let names: Vec<&str> = seen.iter().map(|c| c[0].as_str()).collect();
    // SELECT rides behind HELLO, then the RESP2 sequence redoes it.
    assert_eq!(
        names,
        ["HELLO", "SELECT", "AUTH", "CLIENT", "SELECT", "GET", "QUIT"]
    );
    assert_eq!(
        seen[0],
        ["HELLO", "3", "AUTH", "default", "pw", "SETNAME", "legacy"]
    );
    assert_eq!(seen[2], ["AUTH", "pw"]);
    assert_eq!(seen[3], ["CLIENT", "SETNAME", "legacy"]);
}

fn hello_reply() -> Vec<u8> {
    b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n".to_vec()
}

#[test]
fn garbage_from_the_server_fails_every_pending_command() {
    let (cfg, h) = fake_server(|cmd| {
        Some(match cmd[0].as_str() {
            "HELLO" => hello_reply(),
            "PING" => b"+PONG\r\n".to_vec(),
            // Answer the first GET with something that is not RESP.
            "GET" if cmd[1] == "k0" => b"?what\r\n".to_vec(),
            _ => Vec::new(),
        })
    });
    rt::block_on(async {
        let c = Connection::connect(&cfg).await.unwrap();
        assert!(c.is_resp3());
        c.ping().await.unwrap();
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let c = c.clone();
                rt::spawn(async move { c.get::<Option<String>>(format!("k{i}")).await })
            })
            .collect();
        for t in tasks {
            let e = rt::time::timeout(Duration::from_secs(5), t)
                .await
                .unwrap()
                .unwrap()
                .unwrap_err();
            assert!(matches!(e, Error::Protocol(_)), "{e:?}");
            assert!(e.is_broken());
        }
        assert!(c.is_broken());
        assert!(matches!(c.ping().await, Err(Error::Closed)));
    });
    drop(h);
}

#[test]
fn a_reply_nobody_asked_for_breaks_the_connection() {
    let (cfg, h) = fake_server(|cmd| {
        Some(match cmd[0].as_str() {
            "HELLO" => hello_reply(),
            // Two replies to one command.
            "PING" => b"+PONG\r\n+PONG\r\n".to_vec(),
            _ => Vec::new(),
        })
    });
    rt::block_on(async {
        let c = Connection::connect(&cfg).await.unwrap();
        c.ping().await.unwrap();
        for _ in 0..100 {
            if c.is_broken() {
                break;
            }
            rt::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(matches!(c.broken_reason(), Some(Error::Protocol(_))));
    });
    drop(h);
}

#[test]
fn pushes_between_replies_are_ignored() {
    let (cfg, h) = fake_server(|cmd| {
        Some(match cmd[0].as_str() {
            "HELLO" => hello_reply(),
            // An invalidation push before the reply (client-side caching).
            "GET" => b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n$1\r\nv\r\n".to_vec(),
            _ => return None,
        })
    });
    rt::block_on(async {
        let c = Connection::connect(&cfg).await.unwrap();
        assert_eq!(c.get::<String>("k").await.unwrap(), "v");
        assert_eq!(c.stats().pushes, 1);
        assert!(!c.is_broken());
    });
    drop(h);
}
