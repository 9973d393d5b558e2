//! A shared connection used from another worker.
//!
//! A worker with no connection of its own (more workers than `max_open`)
//! still runs its statements at once by delegating them to a worker that
//! owns a shared connection, without breaking the rule that one ring drives
//! one socket: the statement is prepared through the owner once (its
//! description is cached here), its parameters are encoded here into the
//! Bind/Execute/Sync bytes, and the owner appends those bytes to its
//! connection's next write with its own callers' statements and posts the
//! rows back. The caller's task is woken through its own worker's inbox.
//!
//! The owner keeps only a weak reference to an exported connection: the
//! pool that owns it may close it at any time, after which delegated
//! statements fail with `Error::Closed` and the importer drops its handle.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tidepool_engine::rt::{self, time, WorkerHandle};

use super::client::QueryResult;
use super::error::{Error, Result};
use super::proto::encode_execute;
use super::shared::{Handle, SharedClient};
use super::stmt_cache::Statement;
use super::types::ToSql;
use crate::delegate;

/// A shared connection as another worker may hold it (`Send`): made by
/// [`SharedClient::export`] on the owner, turned into a usable
/// [`SharedClient`] by [`SharedClient::import`] on the other worker.
pub struct Exported {
    owner: WorkerHandle,
    id: u64,
    broken: Arc<AtomicBool>,
    lease: delegate::Lease,
    query_timeout: Option<Duration>,
}

/// Registers `handle` for delegation (once: `id` keeps its number, so
/// exporting a connection again adds nothing); `broken` is set when it dies.
pub(crate) fn export(
    handle: &Rc<Handle>,
    id: &Cell<Option<u64>>,
    broken: Arc<AtomicBool>,
    lease: delegate::Lease,
    query_timeout: Option<Duration>,
) -> Exported {
    Exported {
        owner: rt::current_worker(),
        id: delegate::export(handle, id),
        broken,
        lease,
        query_timeout,
    }
}

/// What a delegated request asks of the owner.
enum Ask {
    Prepare(String),
    Execute(Statement, Vec<BytesMut>),
}

/// What the owner answers.
enum Answer {
    Prepared(Statement),
    Rows(Vec<Result<QueryResult>>),
}

/// Runs `ask` on the owner's worker (in a task there, so it queues with
/// the owner's own callers).
fn serve(id: u64, ask: Ask, reply: delegate::Answer<Result<Answer>>) {
    let Some(handle) = delegate::exported::<Handle>(id) else {
        reply.send(Err(Error::Closed));
        return;
    };
    let client = SharedClient::from_handle(handle);
    rt::spawn(async move {
        let r = match ask {
            Ask::Prepare(sql) => client.statement(&sql).await.map(Answer::Prepared),
            Ask::Execute(st, msgs) => Ok(Answer::Rows(client.run_encoded(&st, msgs).await)),
        };
        reply.send(r);
    });
}

/// The importing side: a handle to a connection on another worker.
pub(crate) struct Remote {
    owner: WorkerHandle,
    id: u64,
    broken: Arc<AtomicBool>,
    /// Counts this handle on the owner, until dropped.
    _lease: delegate::Lease,
    query_timeout: Option<Duration>,
    /// Statements described by the owner, by SQL.
    statements: RefCell<HashMap<String, Statement>>,
    in_flight: Cell<usize>,
}

impl Remote {
    pub(crate) fn import(e: Exported) -> Remote {
        Remote {
            owner: e.owner,
            id: e.id,
            broken: e.broken,
            _lease: e.lease,
            query_timeout: e.query_timeout,
            statements: RefCell::new(HashMap::new()),
            in_flight: Cell::new(0),
        }
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.get()
    }

    /// Sends `ask` to the owner and waits for its answer (within the query
    /// timeout, if one is set; a late answer is dropped when it comes).
    async fn ask(&self, ask: Ask) -> Result<Answer> {
        if self.is_broken() {
            return Err(Error::Closed);
        }
        let id = self.id;
        let _counted = delegate::Counted::new(&self.in_flight);
        let wait = delegate::call(
            &self.owner,
            || Err(Error::Closed),
            move |reply| serve(id, ask, reply),
        );
        let r = match self.query_timeout {
            Some(t) => time::timeout(t, wait).await.unwrap_or(Err(Error::Timeout)),
            None => wait.await,
        };
        if matches!(r, Err(Error::Closed)) {
            self.broken.store(true, Ordering::Relaxed);
        }
        r
    }

    async fn statement(&self, sql: &str) -> Result<Statement> {
        if let Some(st) = self.statements.borrow().get(sql) {
            return Ok(st.clone());
        }
        match self.ask(Ask::Prepare(sql.to_string())).await? {
            Answer::Prepared(st) => {
                self.statements
                    .borrow_mut()
                    .insert(sql.to_string(), st.clone());
                Ok(st)
            }
            Answer::Rows(_) => Err(Error::protocol("unexpected reply to a delegated prepare")),
        }
    }

    /// Runs `sql` once per parameter set, all in one delegated request.
    /// A statement the owner no longer has prepared (its cache evicted
    /// it) is described again and the lot retried once.
    pub(crate) async fn run_many(
        &self,
        sql: &str,
        param_sets: &[&[&dyn ToSql]],
    ) -> Result<Vec<Result<QueryResult>>> {
        let mut retried = false;
        loop {
            let st = self.statement(sql).await?;
            let mut msgs = Vec::with_capacity(param_sets.len());
            for params in param_sets {
                let mut msg = BytesMut::new();
                encode_execute(&st, params, &mut msg)?;
                msgs.push(msg);
            }
            let rows = match self.ask(Ask::Execute(st, msgs)).await? {
                Answer::Rows(rows) => rows,
                Answer::Prepared(_) => {
                    return Err(Error::protocol("unexpected reply to a delegated execute"))
                }
            };
            // Only when every run failed that way: none of them ran, so
            // running them again cannot run any twice.
            let stale = !rows.is_empty()
                && rows
                    .iter()
                    .all(|r| matches!(r, Err(e) if e.as_db().is_some_and(|d| d.code == "26000")));
            if stale && !retried {
                retried = true;
                self.statements.borrow_mut().remove(sql);
                continue;
            }
            return Ok(rows);
        }
    }
}
