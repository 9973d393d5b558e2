//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test crate uses a different subset

use std::path::Path;
use std::process::{Command, Output};

/// True if `pid` names a process that has not exited (zombies count as
/// exited: they hold nothing).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(state(&stat), Some("Z" | "X")),
        Err(_) => false,
    }
}

/// Pids of the live processes in process group `pgid`.
pub fn live_group_members(pgid: u32) -> Vec<u32> {
    live_processes(|_, pgrp| pgrp == pgid)
}

/// Pids of the live direct children of `parent`.
pub fn live_children(parent: u32) -> Vec<u32> {
    live_processes(|ppid, _| ppid == parent)
}

/// Live processes whose (ppid, pgrp) satisfy `keep`.
fn live_processes(keep: impl Fn(u32, u32) -> bool) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ppid = fields[1].parse().unwrap_or(0);
        let pgrp = fields[2].parse().unwrap_or(0);
        if keep(ppid, pgrp) && !matches!(fields[0], "Z" | "X") {
            pids.push(pid);
        }
    }
    pids
}

fn state(stat: &str) -> Option<&str> {
    stat[stat.rfind(')')? + 1..].split_whitespace().next()
}

pub fn tcp_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

pub fn gone(dir: &Path) -> bool {
    !dir.exists()
}

/// Runs psql over TCP as `user` with `password` (or none), returning the
/// raw output.
pub fn psql_tcp(port: u16, user: &str, password: Option<&str>, sql: &str) -> Output {
    psql_at("127.0.0.1", port, user, password, sql)
}

pub fn psql_at(host: &str, port: u16, user: &str, password: Option<&str>, sql: &str) -> Output {
    let mut cmd = Command::new("psql");
    cmd.args(["-At", "-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-h", host])
        .args([
            "-p",
            &port.to_string(),
            "-U",
            user,
            "-d",
            "tidepool",
            "-c",
            sql,
        ])
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE")
        .env("PGCONNECT_TIMEOUT", "5");
    if let Some(pw) = password {
        cmd.env("PGPASSWORD", pw);
    }
    cmd.output().expect("run psql")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
