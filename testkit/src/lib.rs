//! Ephemeral, real PostgreSQL and redis-server instances for Tidepool's
//! integration tests.
//!
//! Each server lives in its own temp directory on a free port of 127.0.0.1
//! and in its own process group. Dropping a server shuts it down and removes
//! the directory; whatever is still running when the test binary exits
//! (the `shared()` servers, or servers leaked by panicking tests) is killed
//! and removed by an exit hook.
//!
//! The binaries come from the system: `scripts/ensure-deps.sh` installs
//! them. When they are missing, [`TestkitError`] says what to install.
//!
//! ```no_run
//! use tidepool_testkit::{PgServer, PgUser, RedisServer};
//!
//! let pg = PgServer::shared();
//! pg.exec("CREATE TABLE IF NOT EXISTS t (x int)");
//! let url = pg.url(PgUser::Scram);
//! # let _ = url;
//! let redis = RedisServer::start().unwrap();
//! assert_eq!(redis.cli(&["PING"]), "PONG\n");
//! ```

mod error;
pub mod lookup;
mod pg;
mod process;
mod redis;
pub mod seccomp;
pub mod sockets;
mod sys;
pub mod tls;

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::sync::Mutex;

pub use error::TestkitError;
pub use pg::{PgServer, PgUser};
pub use redis::{RedisOptions, RedisServer};

/// The address every server listens on.
pub(crate) const HOST: &str = "127.0.0.1";
/// Lines of a server log quoted in a start error.
const LOG_TAIL_LINES: usize = 40;

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Never returns the same port twice in one process, so servers started
/// concurrently do not race each other for it. (Other processes can still
/// take it; the servers retry with another port when that happens.)
///
/// # Panics
/// If no port can be bound at all.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("cannot bind a port on 127.0.0.1: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("cannot read a bound port: {e}"))
            .port();
        if handed_out.insert(port) {
            return port;
        }
    }
    panic!("no unused port on 127.0.0.1 after 1000 attempts");
}

/// The log written since byte `offset`.
pub(crate) fn log_since(log: &Path, offset: u64) -> String {
    let bytes = std::fs::read(log).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(0).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The last lines of the log written since byte `offset`.
pub(crate) fn log_tail(log: &Path, offset: u64) -> String {
    let text = log_since(log, offset);
    if text.trim().is_empty() {
        return "(empty)".to_owned();
    }
    last_lines(&text, LOG_TAIL_LINES)
}

pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
