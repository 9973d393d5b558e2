//! The async client: drives a [`Protocol`] over a socket on the current
//! Tidepool worker's io_uring.
//!
//! Socket operations in flight are kept inside the client, not in the
//! caller's future: io_uring reads own their buffer, and dropping one in
//! flight could lose bytes already received. Because they live here, a caller
//! that gives up on a query (drops its future) leaves the stream intact; the
//! next call resumes the same read or write and skips the abandoned replies.
//!
//! The client and its request/reply machinery are here; `connect` opens a
//! session (and cancels from elsewhere), `transaction`, `pipeline` and
//! `copy` are the typed handles over a borrowed client.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tidepool_engine::rt::net::TcpStream;
use tidepool_engine::rt::time::{self, Sleep};

use super::error::{DbError, Error, Result};
use super::proto::{
    rows_affected, Notification, Protocol, ReqId, Response, SimpleQueryResult, TxStatus,
};
use super::row::Row;
use super::stmt_cache::{Statement, StmtCache};
use super::types::ToSql;
use crate::pool::AtomicHistogram;
use tidepool_engine::tls::Session;

mod connect;
mod copy;
mod pipeline;
mod transaction;

pub use connect::CancelToken;
pub use copy::{CopyIn, CopyOut};
pub use pipeline::Pipeline;
pub use transaction::Transaction;

use connect::{send_cancel, Target};

type IoFuture = Pin<Box<dyn Future<Output = (io::Result<usize>, Vec<u8>)>>>;

/// Bytes requested per socket read.
const READ_CHUNK: usize = 64 * 1024;
/// COPY FROM STDIN data is flushed once this much is buffered.
const COPY_FLUSH: usize = 64 * 1024;

/// Socket counters, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Send operations issued (a pipelined batch is one when it fits the socket).
    pub writes: u64,
    /// Receive operations completed.
    pub reads: u64,
    /// Statements the server failed, integrity violations (SQLSTATE class
    /// 23, the application's own conflicts) excepted: what a pool's
    /// supervisor reads as "the database is failing".
    pub failed: u64,
    /// Statements that ran past the query timeout.
    pub timed_out: u64,
}

impl Stats {
    /// Counts a statement's outcome (see the fields).
    pub(crate) fn record<T>(&mut self, r: &Result<T>) {
        match r {
            Err(Error::Timeout) => self.timed_out += 1,
            Err(Error::Db(db)) if !db.code.starts_with("23") => self.failed += 1,
            _ => {}
        }
    }
}

/// Why [`Client::drive`] returned.
enum Drive {
    Done,
    TimedOut,
    Dead,
}

/// Anything that names a statement: SQL text or a prepared [`Statement`].
pub trait AsQuery {
    fn sql(&self) -> &str;
}

impl AsQuery for str {
    fn sql(&self) -> &str {
        self
    }
}
impl AsQuery for String {
    fn sql(&self) -> &str {
        self
    }
}
impl AsQuery for Statement {
    fn sql(&self) -> &str {
        Statement::sql(self)
    }
}
impl<T: AsQuery + ?Sized> AsQuery for &T {
    fn sql(&self) -> &str {
        (**self).sql()
    }
}

/// Rows and command tag of one statement.
#[derive(Debug)]
pub struct QueryResult {
    pub rows: Vec<Row>,
    pub tag: String,
}

impl QueryResult {
    pub fn rows_affected(&self) -> u64 {
        rows_affected(&self.tag)
    }
}

/// A connection to PostgreSQL that lives on the current worker.
///
/// Not `Send`: it belongs to the worker whose ring it uses. Methods take
/// `&mut self`, so one operation runs at a time; use [`Client::pipeline`] to
/// put many statements in one round trip.
pub struct Client {
    pub(super) proto: Protocol,
    stream: TcpStream,
    /// With `sslmode` other than `disable` and a server that accepted:
    /// the protocol's bytes go through it (plaintext in `tls_plain`).
    tls: Option<Box<Session>>,
    tls_plain: Vec<u8>,
    target: Target,
    rbuf: Option<Vec<u8>>,
    read: Option<IoFuture>,
    wbuf: Option<Vec<u8>>,
    wpos: usize,
    write: Option<IoFuture>,
    pub(super) cache: StmtCache,
    /// Statements evicted from the cache, closed with the next request.
    to_close: Vec<String>,
    /// Statements to run before the next request (rollbacks of dropped transactions).
    cleanup: Vec<String>,
    /// A COPY FROM STDIN whose writer was dropped unfinished.
    copy_in_open: bool,
    copy_out_active: bool,
    query_timeout: Option<Duration>,
    cancel_drain_timeout: Duration,
    pub(super) stats: Stats,
    /// Where statement latencies go (send to reply), when a pool asked.
    pub(crate) latency: Option<Arc<AtomicHistogram>>,
}

impl Client {
    // ------------------------------------------------------------------ I/O

    /// Advances the socket operations once; true when something completed.
    pub(super) fn poll_io(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progressed = false;
        if self.write.is_none() && !self.proto.is_dead() {
            let buf = self.wbuf.as_mut().expect("no write in flight");
            if self.wpos >= buf.len() {
                buf.clear();
                self.wpos = 0;
                match self.tls.as_mut() {
                    None => self.proto.take_output(buf),
                    Some(tls) => {
                        let plain = &mut self.tls_plain;
                        plain.clear();
                        self.proto.take_output(plain);
                        if !plain.is_empty() {
                            // Into rustls' buffer: it cannot fail.
                            let _ = tls.send(plain);
                        }
                        // Records, and whatever TLS itself has to say.
                        tls.take_output(buf);
                    }
                }
            }
            if self.wpos < buf.len() {
                let buf = self.wbuf.take().expect("checked");
                self.write = Some(Box::pin(self.stream.write_from(buf, self.wpos)));
                self.stats.writes += 1;
            }
        }
        if let Some(w) = self.write.as_mut() {
            if let Poll::Ready((res, buf)) = w.as_mut().poll(cx) {
                self.write = None;
                self.wbuf = Some(buf);
                progressed = true;
                match res {
                    Ok(0) => self.proto.fail(Error::Io(io::ErrorKind::WriteZero.into())),
                    Ok(n) => self.wpos += n,
                    Err(e) => self.proto.fail(Error::Io(e)),
                }
            }
        }
        if self.read.is_none() && !self.proto.is_dead() {
            let mut buf = self.rbuf.take().expect("no read in flight");
            buf.clear();
            buf.reserve(READ_CHUNK);
            self.read = Some(Box::pin(self.stream.read(buf)));
        }
        if let Some(r) = self.read.as_mut() {
            if let Poll::Ready((res, buf)) = r.as_mut().poll(cx) {
                self.read = None;
                progressed = true;
                self.stats.reads += 1;
                match res {
                    Ok(0) => self.proto.fail(Error::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ))),
                    Ok(_) => self.received(&buf),
                    Err(e) => self.proto.fail(Error::Io(e)),
                }
                self.rbuf = Some(buf);
                if !self.copy_out_active {
                    self.proto.discard_copy_chunks();
                }
            }
        }
        progressed
    }

    /// Bytes from the socket: to the protocol, through TLS when it is on.
    fn received(&mut self, data: &[u8]) {
        let Some(tls) = self.tls.as_mut() else {
            self.proto.receive(data);
            return;
        };
        let plain = &mut self.tls_plain;
        plain.clear();
        let r = tls.receive(data, plain);
        if !plain.is_empty() {
            self.proto.receive(plain);
        }
        match r {
            Err(e) => self.proto.fail(e.into()),
            Ok(()) if tls.peer_closed() => self.proto.fail(Error::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the TLS session",
            ))),
            Ok(()) => {}
        }
    }

    /// Runs socket I/O until `done` holds, the connection dies, or `deadline` passes.
    async fn drive(
        &mut self,
        mut done: impl FnMut(&mut Client) -> bool,
        deadline: Option<Instant>,
    ) -> Drive {
        let mut sleep: Option<Sleep> = deadline.map(time::sleep_until);
        poll_fn(|cx| loop {
            if done(self) {
                return Poll::Ready(Drive::Done);
            }
            if self.proto.is_dead() {
                return Poll::Ready(Drive::Dead);
            }
            if !self.poll_io(cx) {
                if let Some(s) = sleep.as_mut() {
                    if Pin::new(s).poll(cx).is_ready() {
                        return Poll::Ready(Drive::TimedOut);
                    }
                }
                return Poll::Pending;
            }
        })
        .await
    }

    pub(super) fn flushed(&self) -> bool {
        self.write.is_none()
            && !self.proto.has_output()
            && !self.tls.as_ref().is_some_and(|t| t.wants_write())
            && self.wbuf.as_ref().is_some_and(|b| self.wpos >= b.len())
    }

    // ------------------------------------------------------------------ request plumbing

    fn deadline(&self) -> Option<Instant> {
        self.query_timeout.map(|t| Instant::now() + t)
    }

    /// Readies the connection for a new operation: finishes what dropped
    /// guards left behind, pipelined in front of the new request.
    pub(super) fn begin(&mut self) -> Result<()> {
        if self.proto.is_dead() {
            return Err(Error::Closed);
        }
        if self.copy_in_open {
            // Harmless if the server already left copy mode: it ignores stray
            // copy messages outside COPY.
            self.proto.copy_fail("COPY abandoned by the client");
            self.copy_in_open = false;
        }
        self.copy_out_active = false;
        self.proto.discard_copy_chunks();
        for sql in std::mem::take(&mut self.cleanup) {
            self.proto.simple_query(&sql)?;
        }
        Ok(())
    }

    pub(super) fn queue_closes(&mut self) {
        for name in std::mem::take(&mut self.to_close) {
            // Replies are skipped by `wait` like any request nobody waits for.
            let _ = self.proto.close_statement(&name);
        }
    }

    /// Discards replies of requests queued before `id`; returns `id`'s reply if it arrived.
    fn take_reply(&mut self, id: ReqId, first_err: &mut Option<Error>) -> Option<Result<Response>> {
        while let Some((rid, r)) = self.proto.poll_response() {
            if rid == id {
                // When the connection died, the real cause went to the oldest
                // request, which may have been an abandoned one.
                return Some(match (r, first_err.take()) {
                    (Err(Error::Closed), Some(e)) => Err(e),
                    (r, _) => r,
                });
            }
            if rid > id {
                return Some(Err(Error::protocol(
                    "reply for a request that was not pending",
                )));
            }
            if let Err(e) = r {
                if e.is_broken() && first_err.is_none() {
                    *first_err = Some(e);
                }
            }
        }
        None
    }

    /// Waits for the reply to request `id`. On `deadline` the running statement
    /// is cancelled and the connection drained (see [`Client::timed_out`]).
    async fn wait(&mut self, id: ReqId, deadline: Option<Instant>) -> Result<Response> {
        // The request is written by the wait's first loop turn: from here
        // to the reply is the statement's round trip (for a pipeline, the
        // first statement's; later ones count from the reply before).
        let since = time::now();
        let r = self.wait_reply(id, deadline).await;
        self.stats.record(&r);
        if let Some(h) = &self.latency {
            if !matches!(r, Err(ref e) if e.is_broken()) {
                h.record(time::now().saturating_duration_since(since));
            }
        }
        r
    }

    async fn wait_reply(&mut self, id: ReqId, deadline: Option<Instant>) -> Result<Response> {
        let mut first_err = None;
        loop {
            if let Some(r) = self.take_reply(id, &mut first_err) {
                return r;
            }
            if self.proto.is_dead() {
                return Err(first_err
                    .or_else(|| self.proto.take_fatal())
                    .unwrap_or(Error::Closed));
            }
            if let Drive::TimedOut = self.drive(|c| c.proto.has_response(), deadline).await {
                return Err(self.timed_out(id).await);
            }
        }
    }

    /// Cancels the statement running on the server (over a side connection,
    /// with the BackendKeyData) and reads until request `id` completes, so the
    /// connection stays usable. If that takes longer than the drain timeout
    /// the connection is declared broken.
    async fn timed_out(&mut self, id: ReqId) -> Error {
        let drain_deadline = Instant::now() + self.cancel_drain_timeout;
        if let Some(key) = self.proto.backend_key() {
            let _ = time::timeout_at(drain_deadline, send_cancel(&self.target, key)).await;
        }
        let mut first_err = None;
        loop {
            if self.take_reply(id, &mut first_err).is_some() || self.proto.is_dead() {
                return Error::Timeout;
            }
            if let Drive::TimedOut = self
                .drive(|c| c.proto.has_response(), Some(drain_deadline))
                .await
            {
                self.proto.fail(Error::Timeout);
                return Error::Timeout;
            }
        }
    }

    /// The cached statement for `sql`, preparing it on a miss.
    async fn statement(&mut self, sql: &str, deadline: Option<Instant>) -> Result<Statement> {
        if let Some(s) = self.cache.get(sql) {
            return Ok(s);
        }
        let (name, id) = self.queue_prepare(sql)?;
        match self.wait(id, deadline).await? {
            Response::Prepared { params, columns } => {
                Ok(self.cache_insert(Statement::new(name, sql.to_string(), params, columns)))
            }
            _ => Err(Error::protocol("unexpected reply to Parse")),
        }
    }

    /// Queues Parse + Describe for `sql` under a fresh name, making room in
    /// the cache first (evicted statements are closed in the same batch).
    pub(super) fn queue_prepare(&mut self, sql: &str) -> Result<(String, ReqId)> {
        let evicted = self.cache.make_room();
        self.to_close
            .extend(evicted.iter().map(|s| s.name().to_string()));
        let name = self.cache.next_name();
        let id = self.proto.prepare(&name, sql, &[])?;
        self.queue_closes();
        Ok((name, id))
    }

    pub(super) fn cache_insert(&mut self, st: Statement) -> Statement {
        let evicted = self.cache.insert(st.clone());
        self.to_close
            .extend(evicted.iter().map(|s| s.name().to_string()));
        st
    }

    /// After "prepared statement does not exist" (26000) or "cached plan must
    /// not change result type" (0A000) the cached statement is dropped;
    /// returns whether re-preparing and retrying is safe (no transaction
    /// block was aborted by the error).
    pub(super) fn stale(&mut self, e: &Error, sql: &str) -> bool {
        self.stale_if(e, sql, None)
    }

    /// [`Client::stale`] for a statement that other callers share: the
    /// cache entry goes only if it still is `failed`, since another caller
    /// may already have prepared its successor.
    pub(super) fn stale_statement(&mut self, e: &Error, failed: &Statement) -> bool {
        self.stale_if(e, failed.sql(), Some(failed.name()))
    }

    fn stale_if(&mut self, e: &Error, sql: &str, name: Option<&str>) -> bool {
        let Some(db) = e.as_db() else {
            return false;
        };
        let stale = db.code == "26000"
            || (db.code == "0A000"
                && db
                    .message
                    .contains("cached plan must not change result type"));
        if !stale {
            return false;
        }
        let current = self.cache.peek(sql).map(|s| s.name().to_string());
        if name.is_none() || current.as_deref() == name {
            if let Some(st) = self.cache.remove(sql) {
                if db.code == "0A000" {
                    self.to_close.push(st.name().to_string());
                }
            }
        }
        self.proto.tx_status() == TxStatus::Idle
    }

    async fn run(&mut self, sql: &str, params: &[&dyn ToSql]) -> Result<QueryResult> {
        self.begin()?;
        let deadline = self.deadline();
        let mut retried = false;
        loop {
            let st = self.statement(sql, deadline).await?;
            let id = self.proto.execute(&st, params)?;
            self.queue_closes();
            match self.wait(id, deadline).await {
                Ok(Response::Rows { rows, tag }) => return Ok(QueryResult { rows, tag }),
                Ok(_) => return Err(Error::protocol("unexpected reply to Execute")),
                Err(e) if !retried && self.stale(&e, sql) => retried = true,
                Err(e) => return Err(e),
            }
        }
    }

    // ------------------------------------------------------------------ public API

    /// Runs a statement with binary parameters; returns all rows.
    /// Statements are prepared once and cached per connection.
    pub async fn query<Q: AsQuery + ?Sized>(
        &mut self,
        q: &Q,
        params: &[&dyn ToSql],
    ) -> Result<Vec<Row>> {
        Ok(self.run(q.sql(), params).await?.rows)
    }

    /// Like [`Client::query`], also returning the command tag.
    pub async fn query_result<Q: AsQuery + ?Sized>(
        &mut self,
        q: &Q,
        params: &[&dyn ToSql],
    ) -> Result<QueryResult> {
        self.run(q.sql(), params).await
    }

    /// Exactly one row, else `Error::Usage`.
    pub async fn query_one<Q: AsQuery + ?Sized>(
        &mut self,
        q: &Q,
        params: &[&dyn ToSql],
    ) -> Result<Row> {
        one_row(self.query(q, params).await?)
    }

    /// Zero or one row, else `Error::Usage`.
    pub async fn query_opt<Q: AsQuery + ?Sized>(
        &mut self,
        q: &Q,
        params: &[&dyn ToSql],
    ) -> Result<Option<Row>> {
        opt_row(self.query(q, params).await?)
    }

    /// Runs a statement; returns the number of rows it affected.
    pub async fn execute<Q: AsQuery + ?Sized>(
        &mut self,
        q: &Q,
        params: &[&dyn ToSql],
    ) -> Result<u64> {
        Ok(self.run(q.sql(), params).await?.rows_affected())
    }

    /// Prepares (and caches) a statement, exposing its parameter and column types.
    pub async fn prepare(&mut self, sql: &str) -> Result<Statement> {
        self.begin()?;
        let deadline = self.deadline();
        self.statement(sql, deadline).await
    }

    /// Runs one or more `;`-separated statements over the simple protocol;
    /// values come back as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<SimpleQueryResult>> {
        self.begin()?;
        let deadline = self.deadline();
        let id = self.proto.simple_query(sql)?;
        self.queue_closes();
        match self.wait(id, deadline).await? {
            Response::Simple(r) => Ok(r),
            _ => Err(Error::protocol("unexpected reply to Query")),
        }
    }

    /// Runs `;`-separated statements, discarding their results.
    pub async fn batch_execute(&mut self, sql: &str) -> Result<()> {
        self.simple_query(sql).await.map(drop)
    }

    /// Notifications received so far (LISTEN/NOTIFY), oldest first.
    pub fn take_notifications(&mut self) -> Vec<Notification> {
        self.proto.take_notifications().collect()
    }

    /// Waits for a notification; `None` when `timeout` passes first.
    pub async fn wait_for_notification(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<Notification>> {
        if self.proto.is_dead() {
            return Err(Error::Closed);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(n) = self.proto.pop_notification() {
                return Ok(Some(n));
            }
            // Replies of abandoned requests may arrive meanwhile: skip them.
            while self.proto.poll_response().is_some() {}
            match self
                .drive(
                    |c| c.proto.has_notification() || c.proto.has_response(),
                    deadline,
                )
                .await
            {
                Drive::Done => {}
                Drive::TimedOut => return Ok(None),
                Drive::Dead => return Err(self.proto.take_fatal().unwrap_or(Error::Closed)),
            }
        }
    }

    /// Notices (warnings, `RAISE NOTICE`) received so far; they are never errors.
    pub fn take_notices(&mut self) -> Vec<DbError> {
        self.proto.take_notices().collect()
    }

    /// True once the connection failed (I/O, protocol, FATAL, unrecoverable timeout).
    pub fn is_broken(&self) -> bool {
        self.proto.is_dead()
    }

    /// Takes in, without waiting, whatever the server sent while the
    /// connection sat idle, and says whether it is still usable. After a
    /// server restart or `pg_terminate_backend`, an idle connection holds
    /// a FATAL and an end of stream that nothing has read yet; handing it
    /// out would fail its caller's first query. One non-blocking `recv`;
    /// while a read is already in flight (it would take the bytes), a
    /// look at the socket's state instead, which sees the end of stream
    /// even behind the FATAL.
    pub fn poll_idle(&mut self) -> bool {
        if self.proto.is_dead() {
            return false;
        }
        if self.read.is_some() {
            return self.peer_still_there();
        }
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.recv_now(&mut buf) {
                Ok(0) => {
                    self.proto
                        .fail(Error::Io(io::ErrorKind::UnexpectedEof.into()));
                    return false;
                }
                Ok(n) => {
                    self.received(&buf[..n]);
                    if self.proto.is_dead() {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.proto.fail(Error::Io(e));
                    return false;
                }
            }
        }
    }

    /// False, with the connection failed, once the socket shows the
    /// server closed it or the connection failed (`TcpStream::closed_now`).
    pub(crate) fn peer_still_there(&mut self) -> bool {
        match self.stream.closed_now() {
            None => true,
            Some(e) => {
                self.proto.fail(Error::Io(e));
                false
            }
        }
    }

    /// Transaction state as of the last completed request.
    pub fn tx_status(&self) -> TxStatus {
        self.proto.tx_status()
    }

    /// True inside a transaction block, or when a dropped [`Transaction`] still
    /// owes a ROLLBACK. Pools should [`Client::reset`] such connections.
    pub fn in_transaction(&self) -> bool {
        !self.cleanup.is_empty() || self.proto.tx_status() != TxStatus::Idle
    }

    /// Ready for reuse as is: not broken, no transaction, nothing in flight.
    pub fn is_idle(&self) -> bool {
        !self.is_broken()
            && !self.in_transaction()
            && !self.copy_in_open
            && self.proto.in_flight() == 0
    }

    /// Brings the connection back to idle for a pool: finishes abandoned
    /// requests and rolls back any open transaction.
    pub async fn reset(&mut self) -> Result<()> {
        self.begin()?;
        let deadline = self.deadline();
        if self.proto.in_flight() > 0 {
            let id = self.proto.simple_query("")?;
            self.wait(id, deadline).await?;
        }
        if self.proto.tx_status() != TxStatus::Idle {
            self.batch_execute("ROLLBACK").await?;
        }
        Ok(())
    }

    /// Sets (or clears) the timeout applied to each following operation.
    pub fn set_query_timeout(&mut self, t: Option<Duration>) {
        self.query_timeout = t;
    }

    pub fn query_timeout(&self) -> Option<Duration> {
        self.query_timeout
    }

    /// A server parameter reported at startup or later (`server_version`, `TimeZone`, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.proto.parameter(name)
    }

    /// The server process serving this session.
    pub fn backend_pid(&self) -> Option<i32> {
        self.proto.backend_key().map(|k| k.process_id)
    }

    /// How the session authenticated: `trust`, `password`, `md5`,
    /// `scram-sha-256`, or `scram-sha-256-plus` (bound to the TLS channel).
    pub fn auth_method(&self) -> &'static str {
        self.proto.auth_method
    }

    /// Whether the session is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Number of prepared statements cached on this connection.
    pub fn cached_statements(&self) -> usize {
        self.cache.len()
    }

    /// Forgets (and closes on the server) every cached statement.
    pub fn clear_statement_cache(&mut self) {
        let names = self.cache.clear();
        self.to_close
            .extend(names.iter().map(|s| s.name().to_string()));
    }

    /// Sends Terminate and closes the socket.
    pub async fn close(mut self) -> Result<()> {
        if self.proto.is_dead() {
            return Ok(());
        }
        self.proto.terminate();
        let deadline = Some(Instant::now() + Duration::from_secs(1));
        self.drive(|c| c.flushed(), deadline).await;
        self.shut_down();
        Ok(())
    }

    /// Ends the session after a Terminate went out (or could not).
    pub(super) fn shut_down(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.proto.fail(Error::Closed);
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("target", &self.target)
            .field("broken", &self.is_broken())
            .field("tx_status", &self.tx_status())
            .field("in_flight", &self.proto.in_flight())
            .finish()
    }
}

/// Exactly one row, else `Error::Usage` (`query_one`).
pub(super) fn one_row(mut rows: Vec<Row>) -> Result<Row> {
    match rows.len() {
        1 => Ok(rows.pop().expect("one row")),
        n => Err(Error::Usage(format!("query_one: expected 1 row, got {n}"))),
    }
}

/// Zero or one row, else `Error::Usage` (`query_opt`).
pub(super) fn opt_row(mut rows: Vec<Row>) -> Result<Option<Row>> {
    match rows.len() {
        0 | 1 => Ok(rows.pop()),
        n => Err(Error::Usage(format!(
            "query_opt: expected at most 1 row, got {n}"
        ))),
    }
}

fn clone_err(e: &Error) -> Error {
    match e {
        Error::Db(d) => Error::Db(d.clone()),
        Error::Usage(m) => Error::Usage(m.clone()),
        Error::TypeMismatch {
            column,
            rust_type,
            pg_type,
        } => Error::TypeMismatch {
            column: column.clone(),
            rust_type,
            pg_type: pg_type.clone(),
        },
        Error::Timeout => Error::Timeout,
        Error::Closed => Error::Closed,
        e => Error::Usage(e.to_string()),
    }
}

// ---------------------------------------------------------------------- COPY
