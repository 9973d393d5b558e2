//! A fleet-wide connection budget held in PostgreSQL itself: instances
//! that name the same fleet share `budget` backend connections through
//! leases recorded in a small table (see docs/fleet.md for the design and
//! its failure analysis).
//!
//! The control logic (fair shares, one instance's lease as a sans-IO state
//! machine) is `tidepool_supervisor::fleet`; this module is its I/O:
//! `coordinator`, the renew transaction on a connection of its own, and
//! the caps applied to the instance's pools.

pub mod coordinator;

pub use coordinator::{Coordinator, FleetState, Leased};
pub use tidepool_supervisor::fleet::{fair_shares, jain, FleetConfig, Lease, Member, Renewal};
