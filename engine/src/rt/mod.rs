//! The runtime: one single-threaded executor per worker whose reactor is
//! the worker's io_uring.
//!
//! - `slots`: the table of operations in flight and what a completion means (sans-IO);
//! - `driver`: the ring, probing, submission batching, carrying out completions;
//! - `bufring`: the provided buffers multishot receives fill (public: the
//!   load generator drives its own ring with it);
//! - `op`: an operation as a future that owns what the kernel points into;
//! - `multishot`: accepts and receives armed once and completing many times;
//! - `executor`: local tasks and the loop (poll ready tasks, one `io_uring_enter`);
//! - `coalesce`: when a saturated worker holds its wait to gather completions;
//! - `time`: per-worker timers waited on through the enter timeout;
//! - `net`: TCP and unix sockets;
//! - `remote`: how other threads post work to a worker.

pub mod bufring;
mod coalesce;
mod driver;
mod executor;
mod multishot;
pub mod net;
mod op;
pub(crate) mod remote;
mod slots;
pub mod time;

pub use driver::RingMode;
pub use executor::{
    block_on, block_on_with, current_worker, request_shutdown, shutdown_requested, shutdown_signal,
    spawn, yield_now, CoalesceMode, CoreConfig, JoinError, JoinHandle, ShutdownSignal,
    WorkerHandle,
};

/// How this worker's ring was set up.
pub fn ring_mode() -> RingMode {
    executor::with_core(|core| core.driver.borrow().mode())
}

/// Operations the kernel owns right now on this worker (diagnostics and tests).
pub fn ops_in_flight() -> usize {
    executor::with_core(|core| core.driver.borrow().in_flight())
}

/// Live tasks on this worker.
pub fn task_count() -> usize {
    executor::with_core(|core| core.task_count())
}

/// Provided receive buffers the kernel can still fill on this worker
/// (diagnostics and tests); `None` without provided-buffer rings.
pub fn recv_buffers_free() -> Option<usize> {
    executor::with_core(|core| core.driver.borrow().bufring.as_ref().map(|b| b.free()))
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
