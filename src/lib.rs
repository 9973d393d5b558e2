//! Tidepool: re-exports of the engine (and, later, drivers) for applications.
pub use tidepool_engine as engine;
