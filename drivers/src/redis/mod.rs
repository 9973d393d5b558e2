//! Redis client that runs on a Tidepool worker's io_uring.
//!
//! Layers, bottom up:
//!
//! - sans-I/O: [`Cmd`]/[`ToArg`] encode commands (binary-safe RESP arrays
//!   of bulk strings) straight into an output buffer; [`Decoder`] decodes
//!   RESP2 and RESP3 replies incrementally into [`Value`]s, refusing any
//!   reply over a size cap without buffering it; [`FromValue`] converts
//!   replies into Rust types; [`Config`] parses `redis://` URLs;
//! - [`Connection`]: one socket shared by every task of a worker, with
//!   automatic pipelining, typed commands, explicit [`Pipeline`]s and
//!   [`Transaction`]s, and [`Script`]s run by SHA1;
//! - [`PubSub`]: a subscriber connection that reconnects and re-subscribes
//!   by itself (at-most-once delivery).
//!
//! ```no_run
//! use tidepool_drivers::redis::{Connection, SetOptions};
//!
//! tidepool_engine::rt::block_on(async {
//!     let conn = Connection::open("redis://127.0.0.1:6379/0").await?;
//!     conn.set_with::<bool>("greeting", "hello", SetOptions::new().ex(60)).await?;
//!     let v: Option<String> = conn.get("greeting").await?;
//!     assert_eq!(v.as_deref(), Some("hello"));
//!     Ok::<_, tidepool_drivers::redis::Error>(())
//! })
//! .unwrap();
//! ```

mod commands;
mod config;
mod conn;
mod decode;
mod encode;
mod error;
mod handshake;
mod link;
mod mux;
mod pipeline;
mod pubsub;
mod remote;
mod script;
mod value;

pub use commands::{Condition, Expiry, ScanOptions, SetOptions};
pub use config::{
    Config, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_REPLY,
    DEFAULT_RESPONSE_TIMEOUT,
};
pub use conn::Connection;
pub use decode::{encode_value, Decoder};
pub use encode::{cmd, write_array_header, write_bulk, Cmd, IntoCommand, ToArg};
pub use error::{Error, Result, ServerError, ServerErrorKind};
pub use mux::ConnStats;
pub use pipeline::{Pipeline, Transaction};
pub use pubsub::{Message, PubSub};
pub use remote::Exported;
pub use script::Script;
pub use value::{FromValue, Value};

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn shareable_types() {
        // Configs, scripts and commands are built once and handed to every
        // worker; errors cross threads in pools and error reports.
        send_sync::<Config>();
        send_sync::<Script>();
        send_sync::<Cmd>();
        send_sync::<Error>();
        send_sync::<Value>();
        send_sync::<Message>();
    }
}
