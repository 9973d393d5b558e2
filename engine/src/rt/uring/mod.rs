//! The io_uring backend: the only code that touches a ring.
//!
//! - `slots`: the table of operations in flight and what a completion means (sans-IO);
//! - `driver`: the ring, probing, submission batching, carrying out completions;
//! - `bufring`: the provided buffers multishot receives fill (public: the
//!   load generator drives its own ring with it);
//! - `op`: an operation as a future that owns what the kernel points into;
//! - `multishot`: accepts and receives armed once and completing many times;
//! - `coalesce`: when a saturated worker holds its wait to gather completions.

pub mod bufring;
pub(crate) mod coalesce;
pub(crate) mod driver;
pub(crate) mod multishot;
pub(crate) mod op;
pub(crate) mod slots;
