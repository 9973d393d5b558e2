//! Explicit pipelines and MULTI/EXEC transactions.

use super::conn::Connection;
use super::encode::{write_array_header, write_bulk, IntoCommand};
use super::error::{Error, Result, ServerError, ServerErrorKind};
use super::mux::Reply;
use super::value::{FromValue, Value};

/// Commands sent together and answered together.
///
/// The whole pipeline is one request on the connection: it is written
/// contiguously and its replies are collected in order. A command's error
/// reply does not fail the pipeline; it shows as [`Value::Error`] at its
/// position.
///
/// ```no_run
/// # async fn f(c: &tidepool_drivers::redis::Connection) -> tidepool_drivers::redis::Result<()> {
/// let replies = c.pipeline().cmd(["SET", "a", "1"]).cmd(["INCR", "a"]).query().await?;
/// # Ok(()) }
/// ```
#[must_use = "a pipeline does nothing until queried"]
pub struct Pipeline<'c> {
    conn: &'c Connection,
    buf: Vec<u8>,
    count: usize,
}

impl Connection {
    /// Starts a [`Pipeline`].
    pub fn pipeline(&self) -> Pipeline<'_> {
        Pipeline {
            conn: self,
            buf: Vec::new(),
            count: 0,
        }
    }

    /// Starts a [`Transaction`] (`MULTI` ... `EXEC`).
    pub fn transaction(&self) -> Transaction<'_> {
        Transaction {
            pipe: self.pipeline(),
        }
    }
}

impl<'c> Pipeline<'c> {
    /// Adds a command (builder style).
    pub fn cmd(mut self, c: impl IntoCommand) -> Pipeline<'c> {
        self.add(c);
        self
    }

    /// Adds a command in place.
    pub fn add(&mut self, c: impl IntoCommand) -> &mut Pipeline<'c> {
        c.encode_into(&mut self.buf);
        self.count += 1;
        self
    }

    /// Number of commands.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no command was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Sends the commands and returns one reply per command.
    pub async fn query(self) -> Result<Vec<Value>> {
        if self.count == 0 {
            return Ok(Vec::new());
        }
        let buf = self.buf;
        match self
            .conn
            .request(self.count, |out| out.extend_from_slice(&buf))
            .await?
        {
            Reply::Many(v) => Ok(v),
            Reply::One(v) => Ok(vec![v]),
        }
    }

    /// [`query`](Pipeline::query), converting the replies as one array
    /// (so `(i64, String)` or `Vec<Option<String>>` work).
    pub async fn query_as<T: FromValue>(self) -> Result<T> {
        T::from_value(Value::Array(self.query().await?))
    }
}

/// A `MULTI` ... `EXEC` block, written contiguously so that on a shared
/// connection no other task's command can land inside it.
///
/// Safe on a shared [`Connection`] as long as it does not depend on
/// `WATCH`; see [`Connection::watch`] for optimistic locking.
#[must_use = "a transaction does nothing until executed"]
pub struct Transaction<'c> {
    pipe: Pipeline<'c>,
}

impl<'c> Transaction<'c> {
    /// Adds a command (builder style).
    pub fn cmd(mut self, c: impl IntoCommand) -> Transaction<'c> {
        self.pipe.add(c);
        self
    }

    /// Adds a command in place.
    pub fn add(&mut self, c: impl IntoCommand) -> &mut Transaction<'c> {
        self.pipe.add(c);
        self
    }

    /// Runs the block. `Ok(None)` when a watched key changed and the server
    /// discarded the transaction; otherwise one result per command (a
    /// command failing at run time shows as [`Value::Error`]).
    pub async fn exec(self) -> Result<Option<Vec<Value>>> {
        let n = self.pipe.count;
        let body = self.pipe.buf;
        let reply = self
            .pipe
            .conn
            .request(n + 2, |out| {
                write_array_header(out, 1);
                write_bulk(out, b"MULTI");
                out.extend_from_slice(&body);
                write_array_header(out, 1);
                write_bulk(out, b"EXEC");
            })
            .await?;
        let mut replies = match reply {
            Reply::Many(v) => v,
            Reply::One(_) => return Err(Error::protocol("one reply to a transaction")),
        };
        let exec = replies.pop().unwrap_or(Value::Nil);
        // A command rejected while queueing makes EXEC fail with EXECABORT;
        // the rejection itself says what was wrong.
        let first_queue_error = replies.into_iter().find_map(|v| match v {
            Value::Error(e) => Some(e),
            _ => None,
        });
        match exec {
            Value::Nil => Ok(None),
            Value::Array(v) => Ok(Some(v)),
            Value::Error(e) => Err(Error::Server(match first_queue_error {
                Some(cause) if *e.kind() == ServerErrorKind::ExecAbort => {
                    ServerError::parse(&format!("{} ({})", e.message(), cause.message()))
                }
                // MULTI itself was refused: that explains the EXEC error.
                Some(cause) => cause,
                None => e,
            })),
            other => Err(Error::protocol(format!("unexpected EXEC reply {other:?}"))),
        }
    }

    /// [`exec`](Transaction::exec), converting the results as one array.
    pub async fn exec_as<T: FromValue>(self) -> Result<Option<T>> {
        match self.exec().await? {
            None => Ok(None),
            Some(v) => T::from_value(Value::Array(v)).map(Some),
        }
    }
}
