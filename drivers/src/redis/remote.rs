//! A multiplexed Redis connection used from another worker: each request
//! is encoded here (RESP bytes) and handed to the worker that owns the
//! connection, which queues it with its own callers' commands and posts
//! the replies back (see `crate::delegate`). The owner keeps only a weak
//! reference: its pool may close the connection at any time, after which
//! delegated requests fail with `Error::Closed`.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tidepool_engine::rt::{self, time, WorkerHandle};

use super::config::Config;
use super::conn::{Connection, Handle};
use super::error::{Error, Result};
use super::mux::Reply;
use crate::delegate;

/// A connection as another worker may hold it (`Send`): made by
/// [`Connection::export`] on the owner, used through
/// [`Connection::import`] on the other worker.
pub struct Exported {
    owner: WorkerHandle,
    id: u64,
    cfg: Config,
    resp3: bool,
    dead: Arc<AtomicBool>,
    lease: delegate::Lease,
}

/// Registers `handle` for delegation, once (`id` keeps its number).
pub(crate) fn export(handle: &Rc<Handle>, id: &Cell<Option<u64>>) -> Exported {
    let shared = handle.shared();
    Exported {
        owner: rt::current_worker(),
        id: delegate::export(handle, id),
        cfg: shared.cfg.clone(),
        resp3: shared.resp3,
        dead: shared.dead.clone(),
        lease: handle.importers.lease(),
    }
}

/// Runs one delegated request on the owner's connection.
fn serve(id: u64, commands: usize, bytes: Vec<u8>, answer: delegate::Answer<Result<Reply>>) {
    let conn = delegate::exported::<Handle>(id).map(Connection::from_handle);
    match conn {
        Some(conn) if !conn.is_broken() => {
            rt::spawn(async move {
                let r = conn
                    .request(commands, |out| out.extend_from_slice(&bytes))
                    .await;
                answer.send(r);
            });
        }
        _ => answer.send(Err(Error::Closed)),
    }
}

pub(crate) struct Remote {
    owner: WorkerHandle,
    id: u64,
    pub(crate) cfg: Config,
    pub(crate) resp3: bool,
    /// The owner's connection died or was closed (set by the owner).
    dead: Arc<AtomicBool>,
    /// A delegated request failed as closed (set here).
    broken: AtomicBool,
    /// Counts this handle on the owner, until dropped.
    _lease: delegate::Lease,
    pending: Cell<usize>,
}

impl Remote {
    pub(crate) fn import(e: Exported) -> Remote {
        Remote {
            owner: e.owner,
            id: e.id,
            cfg: e.cfg,
            resp3: e.resp3,
            dead: e.dead,
            broken: AtomicBool::new(false),
            _lease: e.lease,
            pending: Cell::new(0),
        }
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed) || self.dead.load(Ordering::Relaxed)
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.get()
    }

    /// Sends a request of `commands` commands, encoded by `encode`, to the
    /// owner and waits for its replies (within the response timeout).
    pub(crate) async fn request(
        &self,
        commands: usize,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Reply> {
        if self.is_broken() {
            return Err(Error::Closed);
        }
        let mut bytes = Vec::new();
        encode(&mut bytes);
        let id = self.id;
        let _counted = delegate::Counted::new(&self.pending);
        let wait = delegate::call(
            &self.owner,
            || Err(Error::Closed),
            move |answer| serve(id, commands, bytes, answer),
        );
        let r = match self.cfg.response_timeout_value() {
            Some(d) => time::timeout(d, wait).await.unwrap_or(Err(Error::Timeout)),
            None => wait.await,
        };
        if matches!(r, Err(Error::Closed | Error::Io(_))) {
            self.broken.store(true, Ordering::Relaxed);
        }
        r
    }
}

// The reply crosses from the owner's worker to the caller's.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Result<Reply>>();
    send::<Exported>();
};
