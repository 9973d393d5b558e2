//! PostgreSQL client.
//!
//! Layered like quinn: [`proto::Protocol`] is a sans-IO core (bytes in,
//! responses out, no sockets), tested on its own; the async [`Client`] drives
//! it over a runtime socket on the current Tidepool worker.

pub mod client;
pub mod config;
pub mod error;
pub mod proto;
pub mod row;
pub mod startup;
pub mod stmt_cache;
pub mod types;

pub use client::{
    AsQuery, CancelToken, Client, CopyIn, CopyOut, Pipeline, QueryResult, Stats, Transaction,
};
pub use config::{Config, Host};
pub use error::{DbError, Error, Result};
pub use proto::{Notification, SimpleQueryResult, TxStatus};
pub use row::{Column, Row, RowIndex};
pub use stmt_cache::Statement;
pub use types::{
    Date, FromSql, Interval, Json, Numeric, Time, Timestamp, TimestampTz, ToSql, Type, Uuid,
};
