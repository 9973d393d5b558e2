mod common;

use std::io::{Read, Write};
use std::process::Command;

use common::{alive, gone, tcp_open};
use tidepool_testkit::{RedisOptions, RedisServer};

/// Sends one inline command without authenticating; returns the first
/// reply line.
fn raw(port: u16, command: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(format!("{command}\r\n").as_bytes())
        .unwrap();
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// redis-cli as an ACL user; stdout followed by stderr (where it reports
/// failed authentication).
fn cli_as(port: u16, user: &str, pass: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--no-auth-warning",
        ])
        .args(["--user", user, "--pass", pass])
        .args(args)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text
}

#[test]
fn shared_server_without_auth() {
    let redis = RedisServer::shared();
    assert!(std::ptr::eq(redis, RedisServer::shared()));
    assert_eq!(redis.host(), "127.0.0.1");
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}/0", redis.port()));
    assert_eq!(raw(redis.port(), "PING"), "+PONG");
    assert_eq!(redis.cli(&["SET", "shared-key", "v"]), "OK\n");
    assert_eq!(redis.cli(&["GET", "shared-key"]), "v\n");
    assert!(redis.cli(&["SET", "only-a-key"]).starts_with("ERR"));
    assert_eq!(redis.cli(&["CONFIG", "GET", "save"]), "save\n\n");
}

#[test]
fn password_is_required() {
    let redis = RedisServer::start_with(RedisOptions {
        password: Some("s3cret pw".into()),
        acl_user: None,
        tls: false,
    })
    .unwrap();
    assert_eq!(
        redis.url(),
        format!("redis://:s3cret%20pw@127.0.0.1:{}/0", redis.port())
    );
    assert!(raw(redis.port(), "PING").starts_with("-NOAUTH"));
    assert_eq!(redis.cli(&["PING"]), "PONG\n");
    assert!(cli_as(redis.port(), "default", "wrong", &["PING"]).contains("WRONGPASS"));
    assert_eq!(
        cli_as(redis.port(), "default", "s3cret pw", &["PING"]),
        "PONG\n"
    );
}

#[test]
fn acl_user_has_full_access() {
    let redis = RedisServer::start_with(RedisOptions {
        password: Some("defaultpw".into()),
        acl_user: Some(("app".into(), "app-pw".into())),
        tls: false,
    })
    .unwrap();
    let port = redis.port();
    assert_eq!(cli_as(port, "app", "app-pw", &["SET", "k", "1"]), "OK\n");
    assert_eq!(cli_as(port, "app", "app-pw", &["INCR", "k"]), "2\n");
    assert_eq!(
        cli_as(port, "app", "app-pw", &["PUBLISH", "ch", "m"]),
        "0\n"
    );
    assert!(cli_as(port, "app", "nope", &["PING"]).contains("WRONGPASS"));
    assert_eq!(redis.cli(&["ACL", "WHOAMI"]), "default\n");
    assert_eq!(redis.cli(&["GET", "k"]), "2\n");
}

#[test]
fn acl_user_without_default_password() {
    let redis = RedisServer::start_with(RedisOptions {
        password: None,
        acl_user: Some(("solo".into(), "solo-pw".into())),
        tls: false,
    })
    .unwrap();
    assert_eq!(raw(redis.port(), "PING"), "+PONG");
    assert_eq!(
        cli_as(redis.port(), "solo", "solo-pw", &["ACL", "WHOAMI"]),
        "solo\n"
    );
}

#[test]
fn stop_kill9_and_restart_on_the_same_port() {
    let redis = RedisServer::start_with(RedisOptions {
        password: Some("pw".into()),
        acl_user: None,
        tls: false,
    })
    .unwrap();
    let port = redis.port();
    let pid = redis.pid().unwrap();

    redis.stop();
    assert_eq!(redis.pid(), None);
    assert!(!alive(pid));
    assert!(!tcp_open(port));
    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(redis.cli(&["SET", "k", "v"]), "OK\n");

    let pid = redis.pid().unwrap();
    redis.kill9();
    assert_eq!(redis.pid(), None);
    assert!(!alive(pid));
    assert!(!tcp_open(port));
    redis.kill9(); // idempotent

    redis.restart();
    assert_eq!(redis.port(), port);
    assert_ne!(redis.pid(), Some(pid));
    assert_eq!(redis.cli(&["PING"]), "PONG\n");
    // Nothing persists across restarts.
    assert_eq!(redis.cli(&["EXISTS", "k"]), "0\n");
}

#[test]
fn drop_kills_the_process_and_removes_the_directory() {
    let redis = RedisServer::start().unwrap();
    let pid = redis.pid().unwrap();
    let port = redis.port();
    let dir = redis.dir().to_path_buf();
    assert!(dir.join("redis.conf").is_file());
    assert!(tcp_open(port));
    drop(redis);
    assert!(!alive(pid));
    assert!(gone(&dir));
}
