//! PoolAutoscale for Tidepool's connection pools.
//!
//! - [`Controller`]: a sans-IO state machine. The supervisor thread samples a
//!   pool every tick into [`Signals`], calls [`Controller::step`] with the
//!   time, and applies the returned [`Decision`] by resizing the pool's
//!   `max_open`. Nothing here reads a clock, sleeps or knows what a pool is.
//! - [`sim`]: a deterministic discrete-event model of a database and a pool
//!   in front of it, used to characterise the controller (see the
//!   `characterize` example and `docs/autoscale.md`).
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

mod config;
mod controller;
pub mod fleet;
mod signals;
pub mod sim;

pub use config::{ConfigError, PoolAutoscale, Pressure, Target};
pub use controller::{Action, Controller, ControllerState, Decision, Direction, Reason, Tuning};
pub use signals::Signals;

mod runner;
pub use runner::{
    direction_label, LoggedDecision, PoolView, SupervisedPool, Supervisor, SupervisorConfig,
    SupervisorState,
};
