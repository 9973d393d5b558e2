//! One PostgreSQL connection shared by many tasks of a worker, with
//! automatic pipelining.
//!
//! Every caller's Bind/Execute/Sync is appended to the connection's output
//! as it is issued; one driver task sends whatever accumulated in a single
//! write and hands each reply to its caller in order. Queries issued by the
//! handlers that run in one turn of the worker loop therefore leave in one
//! send, and the server answers them from one read: a backend serves a
//! pipelined batch for a fraction of the CPU it spends waking up once per
//! query (see docs/results.md).
//!
//! Each statement keeps its own Sync, so one caller's error never touches
//! another's statement. What a shared connection cannot offer is session
//! state: transactions, `SET`, temporary tables, COPY and LISTEN need an
//! exclusive [`Client`]. A statement that leaves the session inside a
//! transaction block breaks the connection: the protocol state fails it and
//! every statement queued behind it (they ran inside that transaction,
//! which closing the session rolls back) before any of them is answered,
//! and the pool replaces the connection. No caller is told a write
//! succeeded that the rollback then undoes. A query that times out returns
//! [`Error::Timeout`] to its caller; no CancelRequest is sent (it would
//! cancel whichever caller's statement happens to be running), and its reply
//! is read and discarded when it comes, so later replies stay matched.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use tidepool_engine::rt::{self, time};

use super::client::{one_row, opt_row, AsQuery, Client, QueryResult, Stats};
use super::config::Config;
use super::error::{Error, Result};
use super::proto::{ReqId, Response};
use super::remote::{self, Exported, Remote};
use super::row::Row;
use super::stmt_cache::Statement;
use super::types::ToSql;

enum Reply {
    Waiting(Option<Waker>),
    Ready(Result<Response>),
}

struct State {
    client: Client,
    /// Replies somebody waits for; a reply whose id is absent (a dropped
    /// caller, a Close of an evicted statement) is discarded on arrival.
    replies: HashMap<ReqId, Reply>,
    /// Statements being prepared, with the callers waiting for them.
    preparing: HashMap<String, Vec<Waker>>,
    driver: Option<Waker>,
    closed: bool,
    statements: u64,
}

struct Inner {
    st: RefCell<State>,
    query_timeout: Option<Duration>,
    /// Set when the connection dies, for the workers it was exported to.
    broken: Arc<AtomicBool>,
    /// Its number among this worker's exported connections, once exported.
    export_id: std::cell::Cell<Option<u64>>,
    /// Handles to it held by other workers.
    importers: crate::delegate::Importers,
}

impl State {
    /// Queues Bind/Execute/Sync of `st` and registers a caller for its reply.
    fn queue_execute(&mut self, st: &Statement, params: &[&dyn ToSql]) -> Result<ReqId> {
        let id = self.client.proto.execute(st, params)?;
        self.statements += 1;
        self.replies.insert(id, Reply::Waiting(None));
        Ok(id)
    }

    /// New output is queued: the driver task sends it.
    fn wake_driver(&mut self) {
        if let Some(w) = self.driver.take() {
            w.wake();
        }
    }
}

/// Closes the connection when the last [`SharedClient`] clone goes.
pub(crate) struct Handle {
    inner: Rc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Importers stop at once: their requests would find no handle here
        // (the driver may take a while yet to flush and say Terminate).
        self.inner.broken.store(true, Ordering::Relaxed);
        let mut st = self.inner.st.borrow_mut();
        st.closed = true;
        st.wake_driver();
    }
}

/// A PostgreSQL connection shared by the tasks of one worker; cloning is
/// cheap (`Rc`) and every clone talks over the same socket. See the module
/// documentation for what sharing allows.
#[derive(Clone)]
pub struct SharedClient {
    conn: Conn,
}

/// This worker's connection, or one on another worker that statements are
/// delegated to (see `remote.rs`).
#[derive(Clone)]
enum Conn {
    Local(Rc<Handle>),
    Remote(Rc<Remote>),
}

impl std::fmt::Debug for SharedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedClient")
            .field("broken", &self.is_broken())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl SharedClient {
    /// Connects and authenticates, then starts the connection's driver task
    /// on the current worker.
    pub async fn connect(cfg: &Config) -> Result<SharedClient> {
        let mut client = Client::connect(cfg).await?;
        client.proto.require_idle_sessions();
        let inner = Rc::new(Inner {
            st: RefCell::new(State {
                client,
                replies: HashMap::new(),
                preparing: HashMap::new(),
                driver: None,
                closed: false,
                statements: 0,
            }),
            query_timeout: cfg.query_timeout,
            broken: Arc::new(AtomicBool::new(false)),
            export_id: std::cell::Cell::new(None),
            importers: Default::default(),
        });
        rt::spawn(drive(inner.clone()));
        Ok(SharedClient::from_handle(Rc::new(Handle { inner })))
    }

    pub(crate) fn from_handle(handle: Rc<Handle>) -> SharedClient {
        SharedClient {
            conn: Conn::Local(handle),
        }
    }

    /// A handle other workers can use this connection through
    /// ([`SharedClient::import`]); `None` for a handle that is itself
    /// imported (a connection is delegated to only by its owner).
    pub fn export(&self) -> Option<Exported> {
        match &self.conn {
            Conn::Local(h) => Some(remote::export(
                h,
                &h.inner.export_id,
                h.inner.broken.clone(),
                h.inner.importers.lease(),
                h.inner.query_timeout,
            )),
            Conn::Remote(_) => None,
        }
    }

    /// This worker's handle to a connection another worker exported: its
    /// statements run on that connection, sent there by the owner's
    /// worker. Session-less by nature, like every shared connection.
    pub fn import(exported: Exported) -> SharedClient {
        SharedClient {
            conn: Conn::Remote(Rc::new(Remote::import(exported))),
        }
    }

    /// Whether statements are delegated to another worker's connection.
    pub fn is_remote(&self) -> bool {
        matches!(self.conn, Conn::Remote(_))
    }

    fn inner(&self) -> &Inner {
        match &self.conn {
            Conn::Local(h) => &h.inner,
            Conn::Remote(_) => unreachable!("a local operation on an imported connection"),
        }
    }

    /// Sends this connection's statement latencies to `sink` (a pool's).
    pub(crate) fn set_latency_sink(&self, sink: Arc<crate::pool::AtomicHistogram>) {
        if let Conn::Local(_) = &self.conn {
            self.inner().st.borrow_mut().client.latency = Some(sink);
        }
    }

    /// Whether the connection failed; a broken connection never recovers.
    pub fn is_broken(&self) -> bool {
        match &self.conn {
            Conn::Local(_) => self.inner().st.borrow().client.is_broken(),
            Conn::Remote(r) => r.is_broken(),
        }
    }

    /// Whether the connection is usable, looking at its socket when no
    /// statement is in flight: a server that went away while it sat idle
    /// (restarted, a failover, a terminated backend) left an end of stream
    /// the driver task may not have run to see yet, and a statement sent
    /// now would fail. Found here, the connection is failed before anyone
    /// uses it. One non-blocking syscall; none while replies are owed (the
    /// driver sees the end with them), none for an imported handle.
    pub fn poll_idle(&self) -> bool {
        let Conn::Local(_) = &self.conn else {
            return !self.is_broken();
        };
        let mut st = self.inner().st.borrow_mut();
        if st.client.is_broken() {
            return false;
        }
        if st.client.proto.in_flight() > 0 || st.client.peer_still_there() {
            return true;
        }
        // The driver ends on its next poll and tells importers.
        st.wake_driver();
        false
    }

    /// Whether other workers hold handles to this connection (always false
    /// for an imported one).
    pub(crate) fn used_elsewhere(&self) -> bool {
        match &self.conn {
            Conn::Local(h) => h.inner.importers.any(),
            Conn::Remote(_) => false,
        }
    }

    /// Statements sent whose replies have not arrived (for an imported
    /// connection: this worker's delegated requests not yet answered).
    pub fn in_flight(&self) -> usize {
        match &self.conn {
            Conn::Local(_) => self.inner().st.borrow().client.proto.in_flight(),
            Conn::Remote(r) => r.in_flight(),
        }
    }

    /// Socket counters of the connection (zero for an imported one: the
    /// socket is the owner's).
    pub fn stats(&self) -> Stats {
        match &self.conn {
            Conn::Local(_) => self.inner().st.borrow().client.stats(),
            Conn::Remote(_) => Stats::default(),
        }
    }

    /// Statements executed (prepares excluded) since the connection opened
    /// (on the owner's worker, delegated ones included).
    pub fn statements(&self) -> u64 {
        match &self.conn {
            Conn::Local(_) => self.inner().st.borrow().statements,
            Conn::Remote(_) => 0,
        }
    }

    /// The server's process id for this session.
    pub fn backend_pid(&self) -> Option<i32> {
        match &self.conn {
            Conn::Local(_) => self.inner().st.borrow().client.backend_pid(),
            Conn::Remote(_) => None,
        }
    }

    /// Runs a statement with binary parameters; returns all rows.
    pub async fn query<Q: AsQuery + ?Sized>(
        &self,
        q: &Q,
        params: &[&dyn ToSql],
    ) -> Result<Vec<Row>> {
        Ok(self.run(q.sql(), params).await?.rows)
    }

    /// Like [`SharedClient::query`], also returning the command tag.
    pub async fn query_result<Q: AsQuery + ?Sized>(
        &self,
        q: &Q,
        params: &[&dyn ToSql],
    ) -> Result<QueryResult> {
        self.run(q.sql(), params).await
    }

    /// Exactly one row, else `Error::Usage`.
    pub async fn query_one<Q: AsQuery + ?Sized>(
        &self,
        q: &Q,
        params: &[&dyn ToSql],
    ) -> Result<Row> {
        one_row(self.query(q, params).await?)
    }

    /// Zero or one row, else `Error::Usage`.
    pub async fn query_opt<Q: AsQuery + ?Sized>(
        &self,
        q: &Q,
        params: &[&dyn ToSql],
    ) -> Result<Option<Row>> {
        opt_row(self.query(q, params).await?)
    }

    /// Runs a statement; returns the number of rows it affected.
    pub async fn execute<Q: AsQuery + ?Sized>(&self, q: &Q, params: &[&dyn ToSql]) -> Result<u64> {
        Ok(self.run(q.sql(), params).await?.rows_affected())
    }

    /// Runs the same statement once per parameter set, all in one pipeline:
    /// one round trip for the lot. Each run has its own result.
    pub async fn query_many(
        &self,
        sql: &str,
        param_sets: &[&[&dyn ToSql]],
    ) -> Result<Vec<Result<QueryResult>>> {
        if let Conn::Remote(r) = &self.conn {
            return r.run_many(sql, param_sets).await;
        }
        let st = self.statement(sql).await?;
        let mut waits = Vec::with_capacity(param_sets.len());
        {
            let mut s = self.inner().st.borrow_mut();
            for params in param_sets {
                let id = s.queue_execute(&st, params)?;
                waits.push(ReplyFuture::new(self.inner(), id));
            }
            s.wake_driver();
        }
        let mut out = Vec::with_capacity(waits.len());
        for w in waits {
            out.push(self.with_timeout(w).await.and_then(rows));
        }
        Ok(out)
    }

    async fn with_timeout(&self, w: ReplyFuture<'_>) -> Result<Response> {
        match self.inner().query_timeout {
            Some(t) => match time::timeout(t, w).await {
                Ok(r) => r,
                Err(_) => {
                    self.inner().st.borrow_mut().client.stats.timed_out += 1;
                    Err(Error::Timeout)
                }
            },
            None => w.await,
        }
    }

    async fn run(&self, sql: &str, params: &[&dyn ToSql]) -> Result<QueryResult> {
        if let Conn::Remote(r) = &self.conn {
            let mut all = r.run_many(sql, &[params]).await?;
            return all.pop().unwrap_or(Err(Error::Closed));
        }
        let mut retried = false;
        loop {
            let st = self.statement(sql).await?;
            let id = {
                let mut s = self.inner().st.borrow_mut();
                let id = s.queue_execute(&st, params)?;

                s.wake_driver();
                id
            };
            match self
                .with_timeout(ReplyFuture::new(self.inner(), id))
                .await
                .and_then(rows)
            {
                Err(e)
                    if !retried && self.inner().st.borrow_mut().client.stale_statement(&e, &st) =>
                {
                    retried = true
                }
                r => return r,
            }
        }
    }

    /// Runs Bind/Execute/Sync messages another worker encoded for `st`
    /// (prepared here), in one pipeline; each has its own result.
    pub(crate) async fn run_encoded(
        &self,
        st: &Statement,
        msgs: Vec<BytesMut>,
    ) -> Vec<Result<QueryResult>> {
        let mut waits = Vec::with_capacity(msgs.len());
        let mut out = Vec::with_capacity(msgs.len());
        {
            let mut s = self.inner().st.borrow_mut();
            for msg in &msgs {
                match s.client.proto.execute_encoded(st, msg) {
                    Ok(id) => {
                        s.statements += 1;
                        s.replies.insert(id, Reply::Waiting(None));
                        waits.push(Some(ReplyFuture::new(self.inner(), id)));
                    }
                    Err(e) => {
                        waits.push(None);
                        out.push(Some(Err(e)));
                    }
                }
            }
            s.wake_driver();
        }
        let mut errors = out.into_iter();
        let mut results = Vec::with_capacity(waits.len());
        for w in waits {
            results.push(match w {
                Some(w) => self.with_timeout(w).await.and_then(rows),
                None => errors.next().flatten().unwrap_or(Err(Error::Closed)),
            });
        }
        results
    }

    /// The cached statement for `sql`; on a miss one caller prepares it and
    /// the others wait for that rather than preparing it again.
    pub(crate) async fn statement(&self, sql: &str) -> Result<Statement> {
        loop {
            let id = {
                let mut s = self.inner().st.borrow_mut();
                if let Some(st) = s.client.cache.get(sql) {
                    return Ok(st);
                }
                if !s.preparing.contains_key(sql) {
                    s.client.begin()?;
                    let (name, id) = s.client.queue_prepare(sql)?;
                    s.preparing.insert(sql.to_string(), Vec::new());
                    s.replies.insert(id, Reply::Waiting(None));
                    s.wake_driver();
                    Some((name, id))
                } else {
                    None
                }
            };
            let Some((name, id)) = id else {
                self.prepared_elsewhere(sql).await;
                continue;
            };
            let guard = Preparing {
                inner: self.inner(),
                sql,
            };
            let r = self.with_timeout(ReplyFuture::new(self.inner(), id)).await;
            let mut s = self.inner().st.borrow_mut();
            let st = match r? {
                Response::Prepared { params, columns } => {
                    s.client
                        .cache_insert(Statement::new(name, sql.to_string(), params, columns))
                }
                _ => return Err(Error::protocol("unexpected reply to Parse")),
            };
            drop(s);
            drop(guard);
            return Ok(st);
        }
    }

    /// Waits until nobody is preparing `sql` any more.
    async fn prepared_elsewhere(&self, sql: &str) {
        poll_fn(|cx| {
            let mut s = self.inner().st.borrow_mut();
            match s.preparing.get_mut(sql) {
                Some(waiters) => {
                    if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                        waiters.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
                None => Poll::Ready(()),
            }
        })
        .await
    }
}

fn rows(r: Response) -> Result<QueryResult> {
    match r {
        Response::Rows { rows, tag } => Ok(QueryResult { rows, tag }),
        _ => Err(Error::protocol("unexpected reply to Execute")),
    }
}

/// Ends a preparation, also when its caller is dropped mid-way: the callers
/// waiting for it look again (and one of them prepares if it failed).
struct Preparing<'a> {
    inner: &'a Inner,
    sql: &'a str,
}

impl Drop for Preparing<'_> {
    fn drop(&mut self) {
        let waiters = self.inner.st.borrow_mut().preparing.remove(self.sql);
        for w in waiters.into_iter().flatten() {
            w.wake();
        }
    }
}

/// A caller's wait for reply `id`; dropping it abandons the reply.
struct ReplyFuture<'a> {
    inner: &'a Inner,
    id: ReqId,
    done: bool,
    /// When the request was queued (it is written on the driver's next
    /// turn): the start of the statement's latency.
    since: std::time::Instant,
}

impl<'a> ReplyFuture<'a> {
    fn new(inner: &'a Inner, id: ReqId) -> Self {
        ReplyFuture {
            inner,
            id,
            done: false,
            since: time::now(),
        }
    }
}

impl Future for ReplyFuture<'_> {
    type Output = Result<Response>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Response>> {
        let id = self.id;
        let mut s = self.inner.st.borrow_mut();
        match s.replies.get_mut(&id) {
            Some(Reply::Waiting(w)) => {
                match w {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *w = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Some(Reply::Ready(_)) => {
                let Some(Reply::Ready(r)) = s.replies.remove(&id) else {
                    unreachable!("checked above")
                };
                if let Some(h) = &s.client.latency {
                    if !matches!(r, Err(ref e) if e.is_broken()) {
                        h.record(time::now().saturating_duration_since(self.since));
                    }
                }
                drop(s);
                self.done = true;
                Poll::Ready(r)
            }
            None => {
                drop(s);
                self.done = true;
                Poll::Ready(Err(Error::Closed))
            }
        }
    }
}

impl Drop for ReplyFuture<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.inner.st.borrow_mut().replies.remove(&self.id);
        }
    }
}

/// Moves bytes for the connection: sends what callers queued, reads
/// replies and hands them out, until the connection dies or every handle
/// is gone and nothing is owed; then says Terminate.
async fn drive(inner: Rc<Inner>) {
    let closing = poll_fn(|cx| {
        let mut guard = inner.st.borrow_mut();
        let s = &mut *guard;
        loop {
            let progressed = s.client.poll_io(cx);
            while let Some((id, r)) = s.client.proto.poll_response() {
                s.client.stats.record(&r);
                if let Some(slot) = s.replies.get_mut(&id) {
                    if let Reply::Waiting(Some(w)) = std::mem::replace(slot, Reply::Ready(r)) {
                        w.wake();
                    }
                }
            }
            if s.client.proto.is_dead() {
                // Nothing more will arrive: whoever still waits hears it
                // now. Replies that arrived before the end stay as they
                // are: a caller whose statement completed learns its
                // outcome, not that the connection closed afterwards.
                for slot in s.replies.values_mut() {
                    if let Reply::Waiting(w) = slot {
                        let w = w.take();
                        *slot = Reply::Ready(Err(Error::Closed));
                        w.into_iter().for_each(Waker::wake);
                    }
                }
                return Poll::Ready(false);
            }
            if s.closed && s.replies.is_empty() && s.preparing.is_empty() {
                return Poll::Ready(true);
            }
            if !progressed {
                s.driver = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
    })
    .await;
    // Workers this connection was exported to stop delegating to it.
    inner.broken.store(true, Ordering::Relaxed);
    if closing {
        inner.st.borrow_mut().client.proto.terminate();
        let flushed = poll_fn(|cx| {
            let mut s = inner.st.borrow_mut();
            while s.client.poll_io(cx) {}
            if s.client.flushed() || s.client.proto.is_dead() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        let _ = time::timeout(Duration::from_secs(1), flushed).await;
        inner.st.borrow_mut().client.shut_down();
    }
}
