//! The runtime: one single-threaded executor per worker whose reactor is
//! the worker's io_uring, or epoll where io_uring is unavailable.
//!
//! - `backend`: which backend a worker runs on, and why (probe, `TIDEPOOL_IO`);
//! - `uring/`: the only code that touches a ring (operations in flight,
//!   provided buffers, multishot, held waits, and `events`, the same ring
//!   for a loop that takes completions as events);
//! - `epoll/`: the readiness backend with the same contract;
//! - `executor`: local tasks and the loop (poll ready tasks, then one
//!   `io_uring_enter` or `epoll_wait`);
//! - `time`: per-worker timers waited on through that wait's timeout;
//! - `net`: TCP and unix sockets over either backend;
//! - `remote`: how other threads post work to a worker.

pub mod backend;
mod epoll;
mod executor;
pub mod net;
pub(crate) mod remote;
pub mod time;
mod uring;

pub use backend::{Backend, IoChoice, Selection};
pub use executor::{
    block_on, block_on_with, current_worker, request_shutdown, shutdown_requested, shutdown_signal,
    spawn, yield_now, CoalesceMode, CoreConfig, JoinError, JoinHandle, ShutdownSignal,
    WorkerHandle,
};
pub use uring::driver::RingMode;
pub use uring::events;

/// The backend this worker runs on.
pub fn io_backend() -> Backend {
    executor::with_core(|core| core.backend())
}

/// The backend this worker runs on and why.
pub fn io_selection() -> Selection {
    executor::with_core(|core| core.selection)
}

/// How this worker's ring was set up; `None` on epoll.
pub fn ring_mode() -> Option<RingMode> {
    executor::with_core(|core| core.uring().map(|d| d.borrow().mode()))
}

/// Operations the kernel owns right now on this worker (diagnostics and
/// tests); on epoll, where the kernel owns nothing, the sockets registered.
pub fn ops_in_flight() -> usize {
    executor::with_core(|core| match core.uring() {
        Some(d) => d.borrow().in_flight(),
        None => core.poller().map_or(0, |p| p.borrow().registered()),
    })
}

/// Live tasks on this worker.
pub fn task_count() -> usize {
    executor::with_core(|core| core.task_count())
}

/// Provided receive buffers the kernel can still fill on this worker
/// (diagnostics and tests); `None` without provided-buffer rings.
pub fn recv_buffers_free() -> Option<usize> {
    executor::with_core(|core| {
        core.uring()
            .and_then(|d| d.borrow().bufring.as_ref().map(|b| b.free()))
    })
}

/// Items in this worker's timer heap, live and stale (diagnostics and
/// tests: bounded by a small multiple of the live timers).
pub fn timer_heap_len() -> usize {
    executor::with_core(|core| core.timers.borrow().heap_len())
}

/// Waits this worker held to gather completions (diagnostics and tests).
pub fn held_waits() -> u64 {
    executor::with_core(|core| core.coalesce.borrow().held_total)
}
