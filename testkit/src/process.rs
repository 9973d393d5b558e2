//! Temp directories and server processes, and the process-global registry
//! that lets an `atexit` hook clean up whatever the tests left running.
//!
//! Servers handed out by `shared()` live in statics and are never dropped,
//! and a panicking test may skip a `Drop`; without the registry each test
//! binary would leave postmasters, redis-servers and temp dirs behind.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once, PoisonError};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{sys, TestkitError};

/// How long killed processes, or a group whose leader is gone, may take to
/// disappear.
const GROUP_GRACE: Duration = Duration::from_secs(2);
/// How long the exit hook gives servers to shut themselves down before it
/// resorts to SIGKILL.
const EXIT_HOOK_GRACE: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(10);

struct Entry {
    dir: PathBuf,
    /// Pid (and process group id) of the running server, if any.
    leader: Option<u32>,
    /// What the exit hook sends first: a signal that lets the server take
    /// its own children down (postgres' SIGQUIT), or SIGKILL directly.
    quit_signal: libc::c_int,
    pg_data: Option<PathBuf>,
}

static REGISTRY: Mutex<BTreeMap<u64, Entry>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static EXIT_HOOK: Once = Once::new();

fn registry() -> MutexGuard<'static, BTreeMap<u64, Entry>> {
    // A test that panicked while holding the lock must not stop cleanup.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

fn set_leader(id: u64, leader: Option<u32>) {
    if let Some(entry) = registry().get_mut(&id) {
        entry.leader = leader;
    }
}

/// A temp directory plus the (at most one) server process running in it.
pub(crate) struct Supervised {
    id: u64,
    dir: PathBuf,
    pg_data: Option<PathBuf>,
    child: Mutex<Option<Child>>,
}

impl Supervised {
    /// Creates a fresh directory `tidepool-<kind>-…` under the system temp
    /// dir and registers it for cleanup. `pg_data` names the PostgreSQL data
    /// directory inside it, whose leftover shared memory must be released
    /// too.
    pub(crate) fn new(
        kind: &str,
        quit_signal: libc::c_int,
        pg_data: Option<&str>,
    ) -> Result<Supervised, TestkitError> {
        EXIT_HOOK.call_once(|| sys::register_atexit(cleanup_at_exit));
        let dir = create_temp_dir(kind)?;
        let pg_data = pg_data.map(|sub| dir.join(sub));
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        registry().insert(
            id,
            Entry {
                dir: dir.clone(),
                leader: None,
                quit_signal,
                pg_data: pg_data.clone(),
            },
        );
        Ok(Supervised {
            id,
            dir,
            pg_data,
            child: Mutex::new(None),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts `cmd` in a process group of its own, output appended to `log`.
    pub(crate) fn spawn(&self, mut cmd: Command, log: &Path) -> Result<(), TestkitError> {
        let mut slot = self.child();
        if slot.is_some() {
            return Err(TestkitError::new(format!(
                "internal error: a server is already running in {}",
                self.dir.display()
            )));
        }
        let open_log = || {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| {
                    TestkitError::new(format!("cannot open log file {}: {e}", log.display()))
                })
        };
        let program = cmd.get_program().to_string_lossy().into_owned();
        cmd.stdin(Stdio::null())
            .stdout(open_log()?)
            .stderr(open_log()?)
            // Its own group, so that whatever stays in it can be signalled
            // as a whole (postgres' children leave it: see `kill_tree`).
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| TestkitError::new(format!("cannot start {program}: {e}")))?;
        set_leader(self.id, Some(child.id()));
        *slot = Some(child);
        Ok(())
    }

    /// Pid of the server while it is running.
    pub(crate) fn pid(&self) -> Option<u32> {
        let mut slot = self.child();
        let child = slot.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            _ => {
                self.forget_child(&mut slot);
                None
            }
        }
    }

    /// If the server has exited (and it was started), how.
    pub(crate) fn exit_status(&self) -> Option<ExitStatus> {
        let mut slot = self.child();
        let status = slot.as_mut()?.try_wait().ok()??;
        self.forget_child(&mut slot);
        Some(status)
    }

    fn forget_child(&self, slot: &mut Option<Child>) {
        if let Some(child) = slot.take() {
            set_leader(self.id, None);
            ensure_group_gone(child.id());
        }
    }

    /// Sends `sig` to the server and waits for it to exit; SIGKILLs it and
    /// its children if that takes longer than `timeout`. No-op when not
    /// running.
    pub(crate) fn stop(&self, sig: libc::c_int, timeout: Duration) {
        let mut slot = self.child();
        let Some(child) = slot.as_mut() else {
            return;
        };
        let pid = child.id();
        if matches!(child.try_wait(), Ok(None)) {
            sys::signal_pid(pid, sig);
            if !wait_exit(child, timeout) {
                let tree = kill_tree(pid);
                let _ = child.wait();
                wait_all_dead(&tree);
            }
        }
        self.forget_child(&mut slot);
    }

    /// SIGKILLs the server, everything it forked and its process group, and
    /// waits until they are all gone. No-op when not running.
    pub(crate) fn kill9(&self) {
        let mut slot = self.child();
        let Some(child) = slot.as_mut() else {
            return;
        };
        // The leader is not reaped yet (at worst a zombie), so its pid still
        // names our process and our group, never someone else's.
        let tree = kill_tree(child.id());
        let _ = child.wait();
        wait_all_dead(&tree);
        self.forget_child(&mut slot);
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill9();
        remove_leftovers(&self.dir, self.pg_data.as_deref());
        registry().remove(&self.id);
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => sleep(POLL),
        }
    }
}

/// Waits until no live (non-zombie) process is left in group `pgid`,
/// SIGKILLing stragglers after a grace period.
///
/// Zombies are ignored on purpose: an orphaned postgres backend is
/// re-parented to PID 1, and in some containers PID 1 never reaps, so its
/// zombie would otherwise make us wait forever. A zombie holds no port, no
/// shared memory and no file, so it cannot disturb a restart.
fn ensure_group_gone(pgid: u32) {
    if wait_group_gone(pgid, GROUP_GRACE) {
        return;
    }
    // Live members keep `pgid` reserved, so it still names our group.
    sys::signal_group(pgid, libc::SIGKILL);
    wait_group_gone(pgid, GROUP_GRACE);
}

fn wait_group_gone(pgid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while group_has_live_members(pgid) {
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL);
    }
    true
}

fn group_has_live_members(pgid: u32) -> bool {
    process_table()
        .iter()
        .any(|p| p.pgrp == pgid && p.is_live())
}

/// SIGKILLs `leader`, its descendants and its process group; returns the
/// pids that were hit.
///
/// The process group alone is not enough: every postgres child calls
/// setsid(), so backends live in groups of their own. They are found through
/// their parent links instead, which is only possible while the postmaster
/// exists (its orphans are re-parented to PID 1), and stopping it first
/// keeps it from forking new ones while the tree is collected.
fn kill_tree(leader: u32) -> Vec<u32> {
    sys::signal_pid(leader, libc::SIGSTOP);
    let table = process_table();
    let mut tree = vec![leader];
    let mut next = 0;
    while next < tree.len() {
        let parent = tree[next];
        tree.extend(
            table
                .iter()
                .filter(|p| p.ppid == parent && p.is_live() && !tree.contains(&p.pid))
                .map(|p| p.pid)
                .collect::<Vec<_>>(),
        );
        next += 1;
    }
    for &pid in &tree {
        sys::signal_pid(pid, libc::SIGKILL);
    }
    sys::signal_group(leader, libc::SIGKILL);
    tree
}

/// Waits (bounded) until none of `pids` is alive; the leader must have been
/// reaped already.
fn wait_all_dead(pids: &[u32]) {
    let deadline = Instant::now() + GROUP_GRACE;
    loop {
        let table = process_table();
        let any_live = table.iter().any(|p| p.is_live() && pids.contains(&p.pid));
        if !any_live || Instant::now() >= deadline {
            return;
        }
        sleep(POLL);
    }
}

struct ProcInfo {
    pid: u32,
    ppid: u32,
    pgrp: u32,
    state: char,
}

impl ProcInfo {
    fn is_live(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

/// Every process on the machine, from /proc.
fn process_table() -> Vec<ProcInfo> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
            // The command name in parentheses may contain anything; the
            // fields after its closing parenthesis are "state ppid pgrp …".
            let rest = &stat[stat.rfind(')')? + 1..];
            let mut fields = rest.split_whitespace();
            let state = fields.next()?.chars().next()?;
            let ppid = fields.next()?.parse().ok()?;
            let pgrp = fields.next()?.parse().ok()?;
            Some(ProcInfo {
                pid,
                ppid,
                pgrp,
                state,
            })
        })
        .collect()
}

fn create_temp_dir(kind: &str) -> Result<PathBuf, TestkitError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    let mut last_err = None;
    for _ in 0..64 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // Kept short: PostgreSQL's unix socket lives in here, and socket
        // paths are limited to 107 bytes.
        let name = format!(
            "tidepool-{kind}-{}-{}-{nanos:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = base.join(name);
        match fs::create_dir(&path) {
            Ok(()) => {
                // PostgreSQL insists on private socket and data directories.
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).map_err(|e| {
                    TestkitError::new(format!("cannot chmod {}: {e}", path.display()))
                })?;
                return Ok(path);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => {
                last_err = Some(e);
                break;
            }
        }
    }
    Err(TestkitError::new(format!(
        "cannot create a temp directory under {}: {}",
        base.display(),
        last_err.map_or_else(|| "unknown error".to_owned(), |e| e.to_string())
    )))
}

fn remove_leftovers(dir: &Path, pg_data: Option<&Path>) {
    if let Some(data) = pg_data {
        release_pg_shm(data);
    }
    // A server that was just killed may still have had files open; retrying
    // covers the rare case where it created one while we were deleting.
    for _ in 0..5 {
        match fs::remove_dir_all(dir) {
            Err(e) if e.kind() != ErrorKind::NotFound => sleep(POLL),
            _ => return,
        }
    }
}

/// A postmaster that was SIGKILLed never got to delete its System V
/// segment; postgres would reclaim it on the next start, but a server that is
/// dropped after kill9 has no next start. postmaster.pid only survives an
/// unclean exit, and its seventh line is "<shm key> <shm id>".
fn release_pg_shm(data_dir: &Path) {
    let Ok(pidfile) = fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return;
    };
    let Some(line) = pidfile.lines().nth(6) else {
        return;
    };
    let mut parts = line.split_whitespace();
    let key = parts.next().and_then(|k| k.parse::<i64>().ok());
    let id = parts.next().and_then(|i| i.parse::<i32>().ok());
    if let (Some(key), Some(id)) = (key, id) {
        sys::remove_unattached_shm(id, key);
    }
}

extern "C" fn cleanup_at_exit() {
    // Unwinding out of an extern "C" function aborts the process, and with
    // it any chance of cleaning up.
    let _ = std::panic::catch_unwind(cleanup_everything);
}

fn cleanup_everything() {
    // The lock is only ever held briefly; if some thread is wedged holding
    // it anyway, leaking beats hanging the test binary at exit.
    let mut guard = None;
    for _ in 0..200 {
        match REGISTRY.try_lock() {
            Ok(g) => {
                guard = Some(g);
                break;
            }
            Err(std::sync::TryLockError::Poisoned(p)) => {
                guard = Some(p.into_inner());
                break;
            }
            Err(std::sync::TryLockError::WouldBlock) => sleep(POLL),
        }
    }
    let Some(mut guard) = guard else {
        return;
    };
    let entries = std::mem::take(&mut *guard);
    drop(guard);

    // Signal everyone first so the shutdowns overlap.
    let mut running: Vec<u32> = Vec::new();
    for entry in entries.values() {
        if let Some(pid) = entry.leader {
            sys::signal_pid(pid, entry.quit_signal);
            running.push(pid);
        }
    }
    let deadline = Instant::now() + EXIT_HOOK_GRACE;
    while !running.is_empty() && Instant::now() < deadline {
        running.retain(|&pid| !sys::try_reap(pid));
        if !running.is_empty() {
            sleep(POLL);
        }
    }
    let mut hit = Vec::new();
    for &pid in &running {
        hit.extend(kill_tree(pid));
    }
    let deadline = Instant::now() + GROUP_GRACE;
    while !running.is_empty() && Instant::now() < deadline {
        running.retain(|&pid| !sys::try_reap(pid));
        if !running.is_empty() {
            sleep(POLL);
        }
    }
    wait_all_dead(&hit);
    for entry in entries.values() {
        if let Some(pid) = entry.leader {
            ensure_group_gone(pid);
        }
        remove_leftovers(&entry.dir, entry.pg_data.as_deref());
    }
}
