//! A fleet-wide connection budget's control logic, without I/O: how the
//! budget is divided (`share`) and one instance's lease (`lease`). The
//! coordinator that keeps leases in PostgreSQL is
//! `tidepool_drivers::fleet`; the fleet simulator is `sim::fleet`. See
//! docs/fleet.md.

pub mod lease;
pub mod share;

pub use lease::{FleetConfig, Lease, Member, Renewal};
pub use share::{fair_shares, fair_shares_with_headroom, jain};
