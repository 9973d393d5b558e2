//! The sans-IO protocol core: bytes in, responses out.
//!
//! Requests are encoded into an output buffer the moment they are queued and
//! each ends with Sync (or is a simple Query), so the server answers every one
//! with exactly one ReadyForQuery. Replies are matched to requests purely by
//! order: the front of the queue consumes backend messages until its
//! ReadyForQuery. Any number of requests may be outstanding (pipelining).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{Message, RowDescriptionBody};
use postgres_protocol::message::frontend;

use super::config::Config;
use super::error::{DbError, Error, Result};
use super::row::{Column, Row};
use super::startup::{BackendKey, Progress, Startup};
use super::stmt_cache::Statement;
use super::types::{ToSql, Type, WrongType, FORMAT_BINARY, FORMAT_TEXT};

/// Identifies a queued request; responses come back with it, in queue order.
pub type ReqId = u64;

/// Transaction state reported by the last ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    /// Inside a transaction block that hit an error: only ROLLBACK will work.
    Failed,
}

/// An asynchronous notification from LISTEN/NOTIFY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub process_id: i32,
    pub channel: String,
    pub payload: String,
}

/// The result of one statement of a simple (text protocol) query.
#[derive(Debug, Clone)]
pub struct SimpleQueryResult {
    /// Rows, with text-format values; empty for statements returning none.
    pub rows: Vec<Row>,
    pub columns: Arc<[Column]>,
    /// The command tag, e.g. `INSERT 0 3`.
    pub tag: String,
}

impl SimpleQueryResult {
    pub fn rows_affected(&self) -> u64 {
        rows_affected(&self.tag)
    }
}

/// A completed request.
#[derive(Debug)]
pub enum Response {
    Prepared {
        params: Vec<Type>,
        columns: Vec<Column>,
    },
    Rows {
        rows: Vec<Row>,
        tag: String,
    },
    Simple(Vec<SimpleQueryResult>),
    Closed,
    Copy {
        tag: String,
    },
}

/// The number in a command tag (`UPDATE 3`, `INSERT 0 5`, `SELECT 2`), 0 when none.
pub fn rows_affected(tag: &str) -> u64 {
    tag.rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

enum Kind {
    Prepare {
        params: Vec<Type>,
        columns: Vec<Column>,
    },
    Execute {
        columns: Arc<[Column]>,
        rows: Vec<Row>,
        tag: String,
    },
    Simple {
        results: Vec<SimpleQueryResult>,
        columns: Option<Arc<[Column]>>,
        rows: Vec<Row>,
    },
    Close,
    CopyIn {
        ready: bool,
        tag: String,
    },
    CopyOut {
        tag: String,
    },
}

struct Pending {
    id: ReqId,
    kind: Kind,
    error: Option<Error>,
}

/// At most this many notices are kept for [`Protocol::take_notices`].
const MAX_NOTICES: usize = 64;

/// Longest backend message accepted before the connection is ready
/// (authentication, parameters, notices, errors are all small).
pub(crate) const MAX_STARTUP_MESSAGE: usize = 1 << 20;
/// Longest backend message accepted afterwards: PostgreSQL's own bound on
/// one allocation (a value, a row) is 1 GiB.
pub(crate) const MAX_MESSAGE: usize = 1 << 30;

/// One connection's protocol state, with no I/O.
pub struct Protocol {
    startup: Option<Box<Startup>>,
    out: BytesMut,
    inbuf: BytesMut,
    pending: VecDeque<Pending>,
    done: VecDeque<(ReqId, Result<Response>)>,
    next_id: ReqId,
    tx: TxStatus,
    params: HashMap<String, String>,
    key: Option<BackendKey>,
    notifications: VecDeque<Notification>,
    notices: VecDeque<DbError>,
    copy_chunks: VecDeque<(ReqId, Bytes)>,
    dead: bool,
    fatal: Option<Error>,
    /// Shared between callers: every request must leave the session idle
    /// (see [`Protocol::require_idle_sessions`]).
    idle_only: bool,
    /// How the session authenticated (`trust`, `md5`, `scram-sha-256`,
    /// `scram-sha-256-plus`, ...), once started.
    pub(crate) auth_method: &'static str,
}

fn columns_from(body: &RowDescriptionBody, text_only: bool) -> Result<Vec<Column>> {
    let mut fields = body.fields();
    let mut cols = Vec::new();
    while let Some(f) = fields.next().map_err(|e| Error::protocol(e.to_string()))? {
        let ty = Type(f.type_oid());
        cols.push(Column {
            name: f.name().to_string(),
            type_: ty,
            // Binary where the driver has a codec, text for everything else.
            format: if !text_only && ty.is_binary_supported() {
                FORMAT_BINARY
            } else {
                FORMAT_TEXT
            },
            table_oid: f.table_oid(),
            column_id: f.column_id(),
        });
    }
    Ok(cols)
}

fn unexpected(what: &str) -> Error {
    Error::protocol(format!("unexpected {what} message"))
}

impl Protocol {
    /// Starts a connection: the StartupMessage is ready in [`Protocol::output`].
    pub fn connect(cfg: &Config) -> Result<Protocol> {
        let mut out = BytesMut::with_capacity(1024);
        let startup = Startup::new(cfg, &mut out)?;
        Ok(Protocol {
            startup: Some(Box::new(startup)),
            out,
            inbuf: BytesMut::with_capacity(8192),
            pending: VecDeque::new(),
            done: VecDeque::new(),
            next_id: 0,
            tx: TxStatus::Idle,
            params: HashMap::new(),
            key: None,
            notifications: VecDeque::new(),
            notices: VecDeque::new(),
            copy_chunks: VecDeque::new(),
            dead: false,
            fatal: None,
            idle_only: false,
            auth_method: "none",
        })
    }

    /// Over TLS: the server certificate's `tls-server-end-point` hash, for
    /// SCRAM channel binding. Set before the first bytes from the server.
    pub fn set_channel_binding(&mut self, hash: Vec<u8>) {
        if let Some(s) = self.startup.as_mut() {
            s.channel_binding = Some(hash);
        }
    }

    /// For a connection shared between callers: a request after which the
    /// session is not idle (it opened a transaction, or failed inside one)
    /// fails, and so does every request queued behind it, before any of
    /// them is answered; the connection is dead from then on. The requests
    /// behind it ran inside another caller's transaction, which closing
    /// the session rolls back, so none of them may be acknowledged.
    pub fn require_idle_sessions(&mut self) {
        self.idle_only = true;
    }

    /// True once authentication finished and the first ReadyForQuery arrived.
    pub fn is_ready(&self) -> bool {
        self.startup.is_none() && !self.dead
    }

    /// True after a fatal error: every later request fails with `Error::Closed`.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// The fatal error that no pending request could carry (e.g. during startup).
    pub fn take_fatal(&mut self) -> Option<Error> {
        self.fatal.take()
    }

    /// Bytes waiting to be written to the socket.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Moves the pending output into `dst` (appending) and clears it.
    pub fn take_output(&mut self, dst: &mut Vec<u8>) {
        dst.extend_from_slice(&self.out);
        self.out.clear();
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Number of requests queued whose ReadyForQuery has not arrived yet.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    pub fn tx_status(&self) -> TxStatus {
        self.tx
    }

    /// A server run-time parameter (`server_version`, `TimeZone`, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    pub fn backend_key(&self) -> Option<BackendKey> {
        self.key
    }

    pub fn take_notifications(&mut self) -> impl Iterator<Item = Notification> + '_ {
        self.notifications.drain(..)
    }

    pub fn pop_notification(&mut self) -> Option<Notification> {
        self.notifications.pop_front()
    }

    pub fn has_notification(&self) -> bool {
        !self.notifications.is_empty()
    }

    pub fn take_notices(&mut self) -> impl Iterator<Item = DbError> + '_ {
        self.notices.drain(..)
    }

    /// The next completed request, in the order they were queued.
    pub fn poll_response(&mut self) -> Option<(ReqId, Result<Response>)> {
        self.done.pop_front()
    }

    pub fn has_response(&self) -> bool {
        !self.done.is_empty()
    }

    /// Marks the connection dead (socket error, EOF, timeout without recovery):
    /// the oldest pending request gets `err`, the others `Error::Closed`.
    pub fn fail(&mut self, err: Error) {
        if self.dead {
            return;
        }
        self.dead = true;
        self.startup = None;
        let mut err = Some(err);
        for p in self.pending.drain(..) {
            self.done
                .push_back((p.id, Err(err.take().unwrap_or(Error::Closed))));
        }
        if let Some(e) = err {
            self.fatal = Some(e);
        }
        self.out.clear();
        self.copy_chunks.clear();
    }

    fn push(&mut self, kind: Kind) -> Result<ReqId> {
        self.next_id += 1;
        let id = self.next_id;
        self.pending.push_back(Pending {
            id,
            kind,
            error: None,
        });
        Ok(id)
    }

    fn usable(&self) -> Result<()> {
        if self.dead {
            Err(Error::Closed)
        } else if self.startup.is_some() {
            Err(Error::Usage("connection is still starting up".into()))
        } else {
            Ok(())
        }
    }

    /// Parse + Describe + Sync: prepares `sql` as statement `name`.
    /// `types` may pin parameter types (0 = let the server infer).
    pub fn prepare(&mut self, name: &str, sql: &str, types: &[Type]) -> Result<ReqId> {
        self.usable()?;
        let start = self.out.len();
        let r = frontend::parse(name, sql, types.iter().map(|t| t.0), &mut self.out)
            .and_then(|_| frontend::describe(b'S', name, &mut self.out));
        if let Err(e) = r {
            self.out.truncate(start);
            return Err(Error::Usage(format!("cannot send query: {e}")));
        }
        frontend::sync(&mut self.out);
        self.push(Kind::Prepare {
            params: Vec::new(),
            columns: Vec::new(),
        })
    }

    /// Bind + Execute + Sync of a prepared statement with binary parameters.
    /// Nothing is queued when a parameter fails to encode.
    pub fn execute(&mut self, stmt: &Statement, params: &[&dyn ToSql]) -> Result<ReqId> {
        self.usable()?;
        encode_execute(stmt, params, &mut self.out)?;
        self.push(Kind::Execute {
            columns: stmt.columns_arc().clone(),
            rows: Vec::new(),
            tag: String::new(),
        })
    }

    /// Queues a Bind/Execute/Sync that [`encode_execute`] made for `stmt`
    /// elsewhere (another worker delegating a statement to this
    /// connection, where `stmt` was prepared).
    pub(crate) fn execute_encoded(&mut self, stmt: &Statement, msg: &[u8]) -> Result<ReqId> {
        self.usable()?;
        self.out.extend_from_slice(msg);
        self.push(Kind::Execute {
            columns: stmt.columns_arc().clone(),
            rows: Vec::new(),
            tag: String::new(),
        })
    }
}

/// Appends Bind/Execute/Sync of `stmt` with `params` to `out`; on an error
/// nothing is appended.
pub(crate) fn encode_execute(
    stmt: &Statement,
    params: &[&dyn ToSql],
    out: &mut BytesMut,
) -> Result<()> {
    let types = stmt.params();
    if params.len() != types.len() {
        return Err(Error::Usage(format!(
            "statement expects {} parameters but {} were given",
            types.len(),
            params.len()
        )));
    }
    let start = out.len();
    let cols = stmt.columns();
    // One format code applies to all columns when they agree.
    let all_binary = cols.iter().all(|c| c.format == FORMAT_BINARY);
    let result_formats: &mut dyn Iterator<Item = i16> = if all_binary {
        &mut (!cols.is_empty()).then_some(FORMAT_BINARY).into_iter()
    } else {
        &mut cols.iter().map(|c| c.format)
    };
    let mut bad: Option<Error> = None;
    let r = frontend::bind(
        "",
        stmt.name(),
        params.iter().zip(types).map(|(p, t)| p.format(*t)),
        params.iter().zip(types).enumerate(),
        |(i, (p, t)), buf| {
            p.to_sql(*t, buf).inspect_err(|e| {
                let column = format!("${}", i + 1);
                bad = Some(match e.downcast_ref::<WrongType>() {
                    Some(_) => Error::TypeMismatch {
                        column,
                        rust_type: p.type_name(),
                        pg_type: t.to_string(),
                    },
                    None => Error::Conversion {
                        column,
                        message: e.to_string(),
                    },
                });
            })
        },
        result_formats,
        out,
    );
    if let Err(e) = r {
        out.truncate(start);
        return Err(bad.unwrap_or_else(|| match e {
            frontend::BindError::Conversion(e) => Error::Conversion {
                column: "parameters".into(),
                message: e.to_string(),
            },
            frontend::BindError::Serialization(e) => {
                Error::Usage(format!("cannot send parameters: {e}"))
            }
        }));
    }
    frontend::execute("", 0, out).expect("empty portal name is valid");
    frontend::sync(out);
    Ok(())
}

impl Protocol {
    fn query_msg(&mut self, sql: &str) -> Result<()> {
        self.usable()?;
        let start = self.out.len();
        frontend::query(sql, &mut self.out).map_err(|e| {
            self.out.truncate(start);
            Error::Usage(format!("cannot send query: {e}"))
        })
    }

    /// A simple Query: one or more statements, text results, no parameters.
    pub fn simple_query(&mut self, sql: &str) -> Result<ReqId> {
        self.query_msg(sql)?;
        self.push(Kind::Simple {
            results: Vec::new(),
            columns: None,
            rows: Vec::new(),
        })
    }

    /// Close + Sync of a prepared statement.
    pub fn close_statement(&mut self, name: &str) -> Result<ReqId> {
        self.usable()?;
        frontend::close(b'S', name, &mut self.out)
            .map_err(|e| Error::Usage(format!("cannot close statement: {e}")))?;
        frontend::sync(&mut self.out);
        self.push(Kind::Close)
    }

    /// Starts `COPY ... FROM STDIN`; stream with [`Protocol::copy_data`] once
    /// [`Protocol::copy_in_ready`] says so, then [`Protocol::copy_done`].
    pub fn copy_in(&mut self, sql: &str) -> Result<ReqId> {
        self.query_msg(sql)?;
        self.push(Kind::CopyIn {
            ready: false,
            tag: String::new(),
        })
    }

    /// True when the oldest request is a COPY FROM STDIN the server accepted.
    pub fn copy_in_ready(&self, id: ReqId) -> bool {
        matches!(self.pending.front(), Some(Pending { id: i, kind: Kind::CopyIn { ready: true, .. }, error: None }) if *i == id)
    }

    pub fn copy_data(&mut self, data: &[u8]) -> Result<()> {
        self.usable()?;
        frontend::CopyData::new(data)
            .map_err(|e| Error::Usage(format!("copy data: {e}")))?
            .write(&mut self.out);
        Ok(())
    }

    pub fn copy_done(&mut self) {
        frontend::copy_done(&mut self.out);
    }

    pub fn copy_fail(&mut self, reason: &str) {
        let start = self.out.len();
        if frontend::copy_fail(reason, &mut self.out).is_err() {
            self.out.truncate(start);
            frontend::copy_fail("copy aborted", &mut self.out).expect("no NUL");
        }
    }

    /// Starts `COPY ... TO STDOUT`; data arrives via [`Protocol::take_copy_chunk`].
    pub fn copy_out(&mut self, sql: &str) -> Result<ReqId> {
        self.query_msg(sql)?;
        self.push(Kind::CopyOut { tag: String::new() })
    }

    /// The next COPY TO STDOUT chunk of request `id`; chunks of other
    /// (abandoned) requests are dropped.
    pub fn take_copy_chunk(&mut self, id: ReqId) -> Option<Bytes> {
        while let Some((cid, c)) = self.copy_chunks.pop_front() {
            if cid == id {
                return Some(c);
            }
        }
        None
    }

    pub fn has_copy_chunk(&self) -> bool {
        !self.copy_chunks.is_empty()
    }

    /// Drops every buffered COPY chunk (nobody is reading them).
    pub fn discard_copy_chunks(&mut self) {
        self.copy_chunks.clear();
    }

    /// Queues Terminate; the caller closes the socket once it is written.
    pub fn terminate(&mut self) {
        if !self.dead {
            frontend::terminate(&mut self.out);
        }
    }

    /// Feeds bytes read from the socket and processes every complete message.
    /// Errors are delivered through [`Protocol::poll_response`] (or
    /// [`Protocol::take_fatal`] when no request is waiting).
    pub fn receive(&mut self, data: &[u8]) {
        if self.dead {
            return;
        }
        self.inbuf.extend_from_slice(data);
        // The declared length is checked before anything is buffered for
        // it, and a message is parsed only once all of it is here: a 5-byte
        // header must not make the client reserve gigabytes.
        while let Some(header) = self.inbuf.get(..5) {
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let limit = if self.startup.is_some() {
                MAX_STARTUP_MESSAGE
            } else {
                MAX_MESSAGE
            };
            if !(4..=limit).contains(&len) {
                self.fail(Error::protocol(format!(
                    "server message '{}' declares {len} bytes (the limit is {limit})",
                    header[0].escape_ascii()
                )));
                return;
            }
            if self.inbuf.len() < 1 + len {
                break;
            }
            let msg = match Message::parse(&mut self.inbuf) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    self.fail(Error::protocol(format!("malformed message: {e}")));
                    return;
                }
            };
            let r = if let Some(st) = self.startup.as_mut() {
                match st.on_message(msg, &mut self.out) {
                    Ok(Progress::Ready(status)) => {
                        let st = self.startup.take().expect("checked above");
                        self.params = st.params;
                        self.key = st.key;
                        self.auth_method = st.method;
                        self.notices.extend(st.notices);
                        // Startup may have sent more than the cap keeps.
                        let excess = self.notices.len().saturating_sub(MAX_NOTICES);
                        self.notices.drain(..excess);
                        self.set_tx(status)
                    }
                    Ok(Progress::Continue) => Ok(()),
                    Err(e) => Err(e),
                }
            } else {
                self.handle(msg)
            };
            if let Err(e) = r {
                self.fail(e);
                return;
            }
            if self.dead {
                return;
            }
        }
        // Don't keep a large buffer around after a big result.
        if self.inbuf.is_empty() && self.inbuf.capacity() > 1 << 20 {
            self.inbuf = BytesMut::with_capacity(8192);
        }
    }

    fn set_tx(&mut self, status: u8) -> Result<()> {
        self.tx = match status {
            b'I' => TxStatus::Idle,
            b'T' => TxStatus::InTransaction,
            b'E' => TxStatus::Failed,
            s => return Err(Error::protocol(format!("bad ReadyForQuery status {s}"))),
        };
        Ok(())
    }

    fn handle(&mut self, msg: Message) -> Result<()> {
        match msg {
            Message::NoticeResponse(body) => {
                if let Ok(n) = DbError::parse(body.fields()) {
                    if self.notices.len() >= MAX_NOTICES {
                        self.notices.pop_front();
                    }
                    self.notices.push_back(n);
                }
                return Ok(());
            }
            Message::ParameterStatus(body) => {
                let name = body.name().map_err(Error::Io)?.to_string();
                let value = body.value().map_err(Error::Io)?.to_string();
                self.params.insert(name, value);
                return Ok(());
            }
            Message::NotificationResponse(body) => {
                self.notifications.push_back(Notification {
                    process_id: body.process_id(),
                    channel: body.channel().map_err(Error::Io)?.to_string(),
                    payload: body.message().map_err(Error::Io)?.to_string(),
                });
                return Ok(());
            }
            Message::ErrorResponse(body) => {
                let db = DbError::parse(body.fields()).map_err(Error::Io)?;
                if db.is_fatal() {
                    // The server closes the session right after a FATAL error.
                    self.fail(Error::Db(Box::new(db)));
                    return Ok(());
                }
                let p = self.pending.front_mut().ok_or_else(|| {
                    Error::protocol(format!("error with no request pending: {db}"))
                })?;
                if p.error.is_none() {
                    p.error = Some(Error::Db(Box::new(db)));
                }
                return Ok(());
            }
            Message::ReadyForQuery(body) => {
                self.set_tx(body.status())?;
                let p = self
                    .pending
                    .pop_front()
                    .ok_or_else(|| unexpected("ReadyForQuery"))?;
                let res = match p.error {
                    Some(e) => Err(e),
                    None => Ok(match p.kind {
                        Kind::Prepare { params, columns } => Response::Prepared { params, columns },
                        Kind::Execute { rows, tag, .. } => Response::Rows { rows, tag },
                        Kind::Simple { results, .. } => Response::Simple(results),
                        Kind::Close => Response::Closed,
                        Kind::CopyIn { tag, .. } | Kind::CopyOut { tag } => Response::Copy { tag },
                    }),
                };
                if self.idle_only && self.tx != TxStatus::Idle {
                    self.done.push_back((
                        p.id,
                        Err(Error::Usage(
                            "a statement opened a transaction on a shared connection; \
                             transactions need an exclusive Client (the connection is \
                             closed, and the statements queued behind this one on it fail)"
                                .into(),
                        )),
                    ));
                    self.fail(Error::Closed);
                    return Ok(());
                }
                self.done.push_back((p.id, res));
                return Ok(());
            }
            _ => {}
        }
        let p = self
            .pending
            .front_mut()
            .ok_or_else(|| unexpected("unsolicited"))?;
        let copy_fail = |out: &mut BytesMut| {
            frontend::copy_fail("COPY FROM STDIN is only supported through copy_in()", out)
                .expect("no NUL")
        };
        match (&mut p.kind, msg) {
            (Kind::Prepare { .. }, Message::ParseComplete) => {}
            (Kind::Prepare { params, .. }, Message::ParameterDescription(body)) => {
                let mut it = body.parameters();
                while let Some(oid) = it.next().map_err(Error::Io)? {
                    params.push(Type(oid));
                }
            }
            (Kind::Prepare { columns, .. }, Message::RowDescription(body)) => {
                *columns = columns_from(&body, false)?;
            }
            (Kind::Prepare { .. }, Message::NoData) => {}
            (Kind::Execute { .. }, Message::BindComplete) => {}
            (Kind::Execute { columns, rows, .. }, Message::DataRow(body)) => {
                rows.push(Row::new(columns.clone(), body)?);
            }
            (Kind::Execute { tag, .. }, Message::CommandComplete(body)) => {
                *tag = body.tag().map_err(Error::Io)?.to_string();
            }
            (Kind::Execute { .. }, Message::EmptyQueryResponse | Message::PortalSuspended) => {}
            (Kind::Simple { columns, .. }, Message::RowDescription(body)) => {
                *columns = Some(columns_from(&body, true)?.into());
            }
            (Kind::Simple { columns, rows, .. }, Message::DataRow(body)) => {
                let cols = columns.as_ref().ok_or_else(|| unexpected("DataRow"))?;
                rows.push(Row::new(cols.clone(), body)?);
            }
            (
                Kind::Simple {
                    results,
                    columns,
                    rows,
                },
                Message::CommandComplete(body),
            ) => {
                results.push(SimpleQueryResult {
                    rows: std::mem::take(rows),
                    columns: columns.take().unwrap_or_else(|| Arc::from(Vec::new())),
                    tag: body.tag().map_err(Error::Io)?.to_string(),
                });
            }
            (Kind::Simple { .. }, Message::EmptyQueryResponse) => {}
            (Kind::Close, Message::CloseComplete) => {}
            (Kind::CopyIn { ready, .. }, Message::CopyInResponse(_)) => *ready = true,
            (Kind::CopyOut { .. }, Message::CopyOutResponse(_)) => {}
            (Kind::CopyOut { .. }, Message::CopyData(body)) => {
                self.copy_chunks.push_back((p.id, body.into_bytes()))
            }
            (Kind::CopyOut { .. }, Message::CopyDone) => {}
            (Kind::CopyIn { tag, .. } | Kind::CopyOut { tag }, Message::CommandComplete(body)) => {
                *tag = body.tag().map_err(Error::Io)?.to_string();
            }
            // A COPY sent through query()/execute()/simple_query() or a non-COPY
            // statement sent through copy_in()/copy_out(): refuse it without
            // losing the connection.
            (
                Kind::Execute { .. } | Kind::Simple { .. } | Kind::CopyOut { .. },
                Message::CopyInResponse(_),
            ) => {
                copy_fail(&mut self.out);
                p.error
                    .get_or_insert(Error::Usage("COPY FROM STDIN needs copy_in()".into()));
            }
            (
                Kind::Execute { .. } | Kind::Simple { .. } | Kind::CopyIn { .. },
                Message::CopyOutResponse(_) | Message::CopyData(_) | Message::CopyDone,
            ) => {
                p.error
                    .get_or_insert(Error::Usage("COPY TO STDOUT needs copy_out()".into()));
            }
            (
                Kind::CopyIn { .. } | Kind::CopyOut { .. },
                Message::RowDescription(_) | Message::DataRow(_) | Message::EmptyQueryResponse,
            ) => {
                p.error
                    .get_or_insert(Error::Usage("statement is not a COPY".into()));
            }
            (_, _) => return Err(unexpected("out-of-order")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
