//! PostgreSQL client that runs on a Tidepool worker.
//!
//! Layered like quinn: [`proto::Protocol`] is a sans-IO core (bytes in,
//! responses out, no sockets), tested on its own; the async [`Client`] drives
//! it over a TCP or unix socket on the current worker's io_uring. No threads,
//! no blocking calls (except resolving a host name that is neither an IP
//! address nor `localhost`).
//!
//! ```no_run
//! use tidepool_drivers::pg::{Client, Config};
//!
//! # fn main() -> Result<(), tidepool_drivers::pg::Error> {
//! tidepool_engine::rt::block_on(async {
//!     let cfg: Config = "postgres://app:secret@127.0.0.1/shop".parse()?;
//!     let mut db = Client::connect(&cfg).await?;
//!     let row = db.query_one("select name from users where id = $1", &[&42i64]).await?;
//!     let name: &str = row.get("name");
//!
//!     let mut tx = db.transaction().await?;
//!     tx.execute("update users set seen = now() where id = $1", &[&42i64]).await?;
//!     tx.commit().await?;
//!
//!     // Many statements, one round trip (once their statements are cached).
//!     let ids = [1i64, 2, 3];
//!     let mut p = db.pipeline();
//!     for id in &ids {
//!         p.query("select name from users where id = $1", &[id]);
//!     }
//!     let mut names = Vec::new();
//!     for r in p.run().await? {
//!         names.push(r?.rows[0].get::<String>("name"));
//!     }
//!     # let _ = (name, names);
//!     Ok(())
//! })
//! # }
//! ```
//!
//! [`SharedClient`] is the same connection shared by many tasks of a
//! worker: their statements are pipelined automatically (one send per loop
//! turn), for point queries that need no session state.
//!
//! Values are exchanged in binary for the types in [`types`]; other types
//! (enums, inet, ...) come back as text readable as `String`, and strings
//! bound to non-text parameters are sent as text for the server to parse.

pub mod client;
pub mod config;
pub mod error;
pub mod proto;
mod remote;
pub mod row;
pub mod shared;
pub mod startup;
pub mod stmt_cache;
pub mod types;

pub use client::{
    AsQuery, CancelToken, Client, CopyIn, CopyOut, Pipeline, QueryResult, Stats, Transaction,
};
pub use config::{Config, Host, SslMode, DEFAULT_CONNECT_TIMEOUT, DEFAULT_QUERY_TIMEOUT};
pub use error::{DbError, Error, Result};
pub use proto::{Notification, SimpleQueryResult, TxStatus};
pub use remote::Exported;
pub use row::{Column, Row, RowIndex};
pub use shared::SharedClient;
pub use stmt_cache::Statement;
pub use types::{
    Date, FromSql, Interval, Json, Numeric, Time, Timestamp, TimestampTz, ToSql, Type, Uuid,
};
