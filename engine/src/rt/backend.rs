//! Which I/O backend a worker runs on, and why.
//!
//! `io_uring` is the fast path; `epoll` runs where io_uring is forbidden
//! or missing. The choice comes from [`CoreConfig::io`](super::CoreConfig)
//! or, when that is [`IoChoice::Auto`], from `TIDEPOOL_IO`
//! (`auto|io_uring|epoll`). `auto` probes the kernel once per process with
//! a real ring of the size the workers will use and a NOP through it, and
//! falls back to epoll only when io_uring is *unavailable* (forbidden,
//! missing, too old, or out of locked memory even when smaller); any other
//! failure is an error, as it is when io_uring is required.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::Mutex;

use io_uring::{opcode, IoUring, Probe};

use super::uring::driver::Driver;

/// The environment variable that picks the backend when the code does not.
pub const IO_ENV: &str = "TIDEPOOL_IO";

/// What the application asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IoChoice {
    /// `TIDEPOOL_IO` if set, else probe: io_uring where it works, epoll
    /// where it is unavailable.
    #[default]
    Auto,
    /// io_uring or fail to start.
    IoUring,
    /// epoll, without probing io_uring.
    Epoll,
}

impl FromStr for IoChoice {
    type Err = io::Error;
    fn from_str(s: &str) -> io::Result<IoChoice> {
        match s.trim() {
            "" | "auto" => Ok(IoChoice::Auto),
            "io_uring" | "io-uring" | "uring" => Ok(IoChoice::IoUring),
            "epoll" => Ok(IoChoice::Epoll),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{other:?} is not an I/O backend: auto, io_uring or epoll"),
            )),
        }
    }
}

/// The backend a worker runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    IoUring,
    Epoll,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::IoUring => "io_uring",
            Backend::Epoll => "epoll",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backend chosen, with the reason as a short metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Selection {
    pub backend: Backend,
    /// `probe_ok`, `required` (io_uring asked for), `requested` (epoll
    /// asked for), or why io_uring is unavailable: `seccomp_or_sysctl`
    /// (EPERM/EACCES), `not_in_kernel` (ENOSYS), `setup_flags` (EINVAL),
    /// `missing_opcode`, `memlock` (ENOMEM even for a small ring).
    pub reason: &'static str,
    /// Ring entries the workers use (io_uring only; smaller than asked
    /// when locked memory did not allow more).
    pub entries: u32,
}

/// Every distinct selection this process made, for `/metrics`
/// (`tidepool_io_backend{backend,reason} 1`). Usually one.
pub fn selections() -> Vec<Selection> {
    let chosen = CHOSEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<Selection> = chosen.iter().flat_map(|m| m.values().copied()).collect();
    v.sort_by_key(|s| (s.backend.as_str(), s.reason));
    v.dedup_by_key(|s| (s.backend, s.reason));
    v
}

/// Results of probes, by what was asked (choice after the environment,
/// ring entries): the kernel is probed once per process, and the choice
/// logged once.
static CHOSEN: Mutex<Option<HashMap<(IoChoice, u32), Selection>>> = Mutex::new(None);

/// Resolves `choice` (the environment applies to `Auto`) and, for auto,
/// probes: the backend a new worker with rings of `entries` should use.
pub(crate) fn select(choice: IoChoice, entries: u32) -> io::Result<Selection> {
    let choice = match choice {
        IoChoice::Auto => match std::env::var(IO_ENV) {
            Ok(v) => v.parse().map_err(|e: io::Error| {
                io::Error::new(e.kind(), format!("tidepool: {IO_ENV}: {e}"))
            })?,
            Err(_) => IoChoice::Auto,
        },
        c => c,
    };
    let mut chosen = CHOSEN.lock().unwrap_or_else(|e| e.into_inner());
    let map = chosen.get_or_insert_with(HashMap::new);
    if let Some(s) = map.get(&(choice, entries)) {
        return Ok(*s);
    }
    let sel = match choice {
        IoChoice::Epoll => Selection {
            backend: Backend::Epoll,
            reason: "requested",
            entries,
        },
        IoChoice::IoUring => Selection {
            backend: Backend::IoUring,
            reason: "required",
            entries,
        },
        IoChoice::Auto => probe(entries)?,
    };
    match sel.backend {
        Backend::IoUring => tracing::info!(
            backend = "io_uring",
            reason = sel.reason,
            entries = sel.entries,
            "tidepool: I/O backend io_uring ({})",
            sel.reason
        ),
        Backend::Epoll => tracing::warn!(
            backend = "epoll",
            reason = sel.reason,
            "tidepool: I/O backend epoll ({}): io_uring is unavailable or not wanted here",
            sel.reason
        ),
    }
    map.insert((choice, entries), sel);
    Ok(sel)
}

/// Records that one worker fell back on its own (its ring failed for an
/// "unavailable" cause after the process-wide probe passed).
pub(crate) fn record_fallback(sel: Selection) {
    tracing::warn!(
        backend = "epoll",
        reason = sel.reason,
        "tidepool: a worker's ring could not be set up ({}); that worker runs on epoll",
        sel.reason
    );
    let mut chosen = CHOSEN.lock().unwrap_or_else(|e| e.into_inner());
    chosen
        .get_or_insert_with(HashMap::new)
        .insert((IoChoice::Epoll, u32::MAX), sel);
}

/// The metric label of an io_uring setup failure that means "unavailable
/// here" (fall back), or `None` for a failure that is a real error.
pub fn unavailable(err: &io::Error) -> Option<&'static str> {
    match err.raw_os_error()? {
        libc::EPERM | libc::EACCES => Some("seccomp_or_sysctl"),
        libc::ENOSYS => Some("not_in_kernel"),
        libc::EINVAL => Some("setup_flags"),
        libc::ENOMEM => Some("memlock"),
        _ => None,
    }
}

/// Opcodes the engine submits; a kernel without one of them cannot run it.
const NEEDED: [(u8, &str); 7] = [
    (opcode::Accept::CODE, "accept"),
    (opcode::Recv::CODE, "recv"),
    (opcode::Send::CODE, "send"),
    (opcode::Connect::CODE, "connect"),
    (opcode::Read::CODE, "read"),
    (opcode::Close::CODE, "close"),
    (opcode::AsyncCancel::CODE, "async_cancel"),
];

/// Sets up a ring the size workers will use (halving on ENOMEM down to
/// 64 entries), checks the opcodes, and runs a NOP through it.
fn probe(entries: u32) -> io::Result<Selection> {
    let mut size = entries;
    let driver = loop {
        match Driver::new(size) {
            Ok(d) => break d,
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && size > 64 => size /= 2,
            Err(e) => match unavailable(&e) {
                Some(reason) => return Ok(epoll(reason)),
                None => return Err(super::uring::driver::ring_unavailable(e)),
            },
        }
    };
    match check_ring(driver.ring()) {
        Ok(()) => Ok(Selection {
            backend: Backend::IoUring,
            reason: "probe_ok",
            entries: size,
        }),
        Err(reason) => Ok(epoll(reason)),
    }
}

fn epoll(reason: &'static str) -> Selection {
    Selection {
        backend: Backend::Epoll,
        reason,
        entries: 0,
    }
}

/// What keeps a ring that was set up from being usable, as a reason label.
fn check_ring(ring: &IoUring) -> Result<(), &'static str> {
    let mut probe = Probe::new();
    if let Err(e) = ring.submitter().register_probe(&mut probe) {
        return Err(unavailable(&e).unwrap_or("missing_opcode"));
    }
    if NEEDED.iter().any(|(code, _)| !probe.is_supported(*code)) {
        return Err("missing_opcode");
    }
    let nop = opcode::Nop::new().build().user_data(0);
    // SAFETY: a NOP points at no memory.
    if unsafe { ring.submission_shared().push(&nop) }.is_err() {
        return Err("setup_flags");
    }
    match ring.submit_and_wait(1) {
        Ok(_) => {}
        Err(e) => return Err(unavailable(&e).unwrap_or("setup_flags")),
    }
    // SAFETY: this thread is the ring's only user; the NOP's completion is
    // read and dropped here.
    let done = unsafe { ring.completion_shared() }.next();
    match done {
        Some(c) if c.result() >= 0 => Ok(()),
        _ => Err("setup_flags"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_bad_values_name_the_variable() {
        assert_eq!("auto".parse::<IoChoice>().unwrap(), IoChoice::Auto);
        assert_eq!("io_uring".parse::<IoChoice>().unwrap(), IoChoice::IoUring);
        assert_eq!(" epoll ".parse::<IoChoice>().unwrap(), IoChoice::Epoll);
        let e = "kqueue".parse::<IoChoice>().unwrap_err();
        assert!(
            e.to_string().contains("\"kqueue\" is not an I/O backend"),
            "{e}"
        );
    }

    #[test]
    fn only_unavailable_causes_fall_back() {
        let of = |n| io::Error::from_raw_os_error(n);
        assert_eq!(unavailable(&of(libc::EPERM)), Some("seccomp_or_sysctl"));
        assert_eq!(unavailable(&of(libc::EACCES)), Some("seccomp_or_sysctl"));
        assert_eq!(unavailable(&of(libc::ENOSYS)), Some("not_in_kernel"));
        assert_eq!(unavailable(&of(libc::ENOMEM)), Some("memlock"));
        assert_eq!(unavailable(&of(libc::EMFILE)), None);
        assert_eq!(unavailable(&io::Error::other("x")), None);
    }

    #[test]
    fn the_probe_passes_on_this_kernel() {
        // The machines this runs on have io_uring; under a seccomp filter
        // the example's test checks the other side.
        let sel = probe(256).unwrap();
        assert_eq!(sel.backend, Backend::IoUring, "{sel:?}");
        assert_eq!(sel.reason, "probe_ok");
    }
}
