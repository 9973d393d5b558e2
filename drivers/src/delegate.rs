//! Running an operation on the worker that owns a connection, for a caller
//! on another worker, and waiting for the answer there.
//!
//! One ring drives one socket, so a worker that has no connection of its
//! own hands its encoded request to the owner through the owner's inbox;
//! the owner queues it with its own callers' requests and posts the answer
//! back, which wakes the caller's task through the caller's inbox. The
//! drivers' remote handles (`pg::remote`, `redis::remote`) are built on it.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use tidepool_engine::rt::WorkerHandle;

static NEXT_EXPORT: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Connections this worker exported, weakly: the owner's pool decides
    /// when they close.
    static EXPORTED: RefCell<HashMap<u64, Weak<dyn Any>>> = RefCell::new(HashMap::new());
}

/// Registers `handle` (a connection's handle on this worker) for requests
/// from other workers, once: `id` keeps its number, so exporting the same
/// connection again adds nothing. Returns the number to reach it by.
pub(crate) fn export<H: Any>(handle: &Rc<H>, id: &Cell<Option<u64>>) -> u64 {
    if let Some(id) = id.get() {
        return id;
    }
    let new = NEXT_EXPORT.fetch_add(1, Ordering::Relaxed);
    let any: Rc<dyn Any> = handle.clone();
    EXPORTED.with(|m| {
        let mut m = m.borrow_mut();
        // Forget the dead ones while here, so the map stays small.
        m.retain(|_, w| w.strong_count() > 0);
        m.insert(new, Rc::downgrade(&any));
    });
    id.set(Some(new));
    new
}

/// How many handles other workers hold to one exported connection. The
/// owner's pool reads it: a connection whose callers are elsewhere is
/// neither idle (so not reaped) nor spare (so not closed to lend its
/// capacity), though no caller of the owner's has it checked out.
#[derive(Clone, Default)]
pub(crate) struct Importers(Arc<AtomicUsize>);

impl Importers {
    /// One more handle elsewhere, until the lease is dropped. Taken on
    /// the owner when it exports, so the count is never behind the handles
    /// on their way to the importer.
    pub(crate) fn lease(&self) -> Lease {
        self.0.fetch_add(1, Ordering::Relaxed);
        Lease(self.0.clone())
    }

    pub(crate) fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

/// One handle elsewhere (see [`Importers`]).
pub(crate) struct Lease(Arc<AtomicUsize>);

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The handle exported as `id` on this worker, if it is still alive.
pub(crate) fn exported<H: Any>(id: u64) -> Option<Rc<H>> {
    EXPORTED
        .with(|m| m.borrow().get(&id).and_then(Weak::upgrade))
        .and_then(|h| h.downcast::<H>().ok())
}

/// Requests delegated and not yet answered, counted down when dropped
/// (however the wait ends, a dropped caller included).
pub(crate) struct Counted<'a>(&'a Cell<usize>);

impl<'a> Counted<'a> {
    pub(crate) fn new(c: &'a Cell<usize>) -> Counted<'a> {
        c.set(c.get() + 1);
        Counted(c)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

struct Slot<T> {
    state: Mutex<(Option<T>, Option<Waker>)>,
}

impl<T> Slot<T> {
    fn put(&self, v: T) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 = Some(v);
        if let Some(w) = st.1.take() {
            w.wake();
        }
    }
}

/// The owner's end of a call. Dropped unanswered (the owner's worker is
/// gone and its inbox dropped the request, or it shut down with the work
/// in progress), it answers with the call's fallback, so no caller waits
/// forever.
pub(crate) struct Answer<T: Send + 'static> {
    slot: Option<Arc<Slot<T>>>,
    fallback: fn() -> T,
}

impl<T: Send + 'static> Answer<T> {
    pub(crate) fn send(mut self, v: T) {
        if let Some(slot) = self.slot.take() {
            slot.put(v);
        }
    }
}

impl<T: Send + 'static> Drop for Answer<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.put((self.fallback)());
        }
    }
}

/// Posts `work` to `owner` and waits for what it answers; `fallback` is
/// the answer when the owner drops the work unanswered.
pub(crate) async fn call<T: Send + 'static>(
    owner: &WorkerHandle,
    fallback: fn() -> T,
    work: impl FnOnce(Answer<T>) + Send + 'static,
) -> T {
    let slot = Arc::new(Slot {
        state: Mutex::new((None, None)),
    });
    let answer = Answer {
        slot: Some(slot.clone()),
        fallback,
    };
    owner.post(move || work(answer));
    poll_fn(|cx| {
        let mut st = slot.state.lock().unwrap_or_else(|e| e.into_inner());
        match st.0.take() {
            Some(v) => Poll::Ready(v),
            None => {
                match &st.1 {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => st.1 = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    })
    .await
}
