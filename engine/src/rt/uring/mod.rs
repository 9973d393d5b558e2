//! The io_uring backend: the only code that touches a ring.
//!
//! - `slots`: the table of operations in flight and what a completion means (sans-IO);
//! - `driver`: the ring, probing, submission batching, carrying out completions;
//! - `bufring`: the provided buffers multishot receives fill;
//! - `op`: an operation as a future that owns what the kernel points into;
//! - `multishot`: accepts and receives armed once and completing many times;
//! - `coalesce`: when a saturated worker holds its wait to gather completions;
//! - `events`: the same ring for a loop that takes completions as events
//!   (public: the load generator runs on it).

pub(crate) mod bufring;
pub(crate) mod coalesce;
pub(crate) mod driver;
pub mod events;
pub(crate) mod multishot;
pub(crate) mod op;
pub(crate) mod slots;
