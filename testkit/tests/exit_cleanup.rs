//! The exit hook: servers that are never dropped (the `shared()` ones, or
//! leaked ones) must not outlive the test binary.
//!
//! The test re-runs this very binary as a child that starts servers, leaks
//! them and exits; the parent then checks that nothing is left.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{alive, live_children, live_group_members};
use tidepool_testkit::{PgServer, RedisOptions, RedisServer};

const CHILD_ENV: &str = "TIDEPOOL_TESTKIT_EXIT_CHILD_REPORT";

#[test]
fn exit_hook_kills_servers_and_removes_directories() {
    if let Some(report) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&report));
        return;
    }
    let report = std::env::temp_dir().join(format!("tidepool-exit-report-{}", std::process::id()));
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "exit_hook_kills_servers_and_removes_directories"])
        .args(["--test-threads=1", "--nocapture"])
        .env(CHILD_ENV, &report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&report).unwrap();
    let _ = std::fs::remove_file(&report);
    let servers: Vec<(u32, Vec<u32>, PathBuf)> = text
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let pid = parts.next().unwrap().parse().unwrap();
            let children: Vec<u32> = parts
                .next()
                .unwrap()
                .split(',')
                .filter(|c| !c.is_empty())
                .map(|c| c.parse().unwrap())
                .collect();
            (pid, children, PathBuf::from(parts.next().unwrap()))
        })
        .collect();
    assert_eq!(servers.len(), 4, "{text}");
    for (pid, children, dir) in servers {
        assert!(!alive(pid), "server {pid} survived its test binary");
        for child in children {
            assert!(!alive(child), "{child}, child of server {pid}, survived");
        }
        assert!(live_group_members(pid).is_empty(), "group {pid} survived");
        assert!(!dir.exists(), "{} survived its test binary", dir.display());
    }
}

fn child(report: &Path) {
    let pg = PgServer::shared();
    // A busy session, so that the postmaster has a backend to take down.
    pg.exec("create table t (x int)");
    let redis = RedisServer::shared();
    let leaked_pg = Box::leak(Box::new(PgServer::start().unwrap()));
    let leaked_redis = Box::leak(Box::new(
        RedisServer::start_with(RedisOptions {
            password: Some("pw".into()),
            acl_user: None,
            tls: false,
        })
        .unwrap(),
    ));
    let mut file = std::fs::File::create(report).unwrap();
    for (pid, dir) in [
        (pg.pid(), pg.socket_dir()),
        (redis.pid(), redis.dir()),
        (leaked_pg.pid(), leaked_pg.socket_dir()),
        (leaked_redis.pid(), leaked_redis.dir()),
    ] {
        let pid = pid.unwrap();
        let children: Vec<String> = live_children(pid).iter().map(u32::to_string).collect();
        writeln!(file, "{pid} {} {}", children.join(","), dir.display()).unwrap();
    }
}
