//! A fleet-wide connection budget held in PostgreSQL itself: instances
//! that name the same fleet share `budget` backend connections through
//! leases recorded in a small table (see docs/fleet.md for the design and
//! its failure analysis).
//!
//! - `share`: max-min fair shares by demand, with floors (pure).
//! - `lease`: one instance's lease as a sans-IO state machine.
//! - `coordinator`: its I/O: the renew transaction on a connection of its
//!   own, and the caps applied to the instance's pools.

pub mod coordinator;
pub mod lease;
pub mod share;

pub use coordinator::{Coordinator, FleetState, Leased};
pub use lease::{FleetConfig, Lease, Member, Renewal};
pub use share::{fair_shares, jain};
