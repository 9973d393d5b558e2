//! In-process single-flight: at most one computation of a key at a time in
//! this process.
//!
//! Two levels. Each worker keeps a map of the keys it is computing, touched
//! only by that worker, so no lock: the first caller on a worker to miss is
//! the worker's local leader, and later callers there wait on it. The local
//! leader then goes to the process-wide registry, a mutex-guarded map that
//! only misses touch: the first worker there leads for the whole process,
//! and the other workers' local leaders wait on it across threads.
//!
//! A leader dropped before it finishes (its request was cancelled, a
//! timeout fired) abandons the flight: its waiters wake, see the
//! abandonment, and start over, so one of them becomes the new leader
//! instead of all of them waiting forever.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use slab::Slab;

use super::CacheError;

/// What a flight hands its waiters: the encoded value, or the error every
/// waiter gets.
pub(crate) type Outcome = Result<Arc<[u8]>, CacheError>;

enum Slot {
    Pending(Slab<Waker>),
    Done(Outcome),
    Abandoned,
}

impl Slot {
    fn pending() -> Slot {
        Slot::Pending(Slab::new())
    }

    /// Ends the flight and returns the wakers, to be woken once no borrow
    /// or lock is held (a waker may run code that touches the flight).
    fn end(&mut self, to: Slot) -> Vec<Waker> {
        match std::mem::replace(self, to) {
            Slot::Pending(w) => w.into_iter().map(|(_, w)| w).collect(),
            _ => Vec::new(),
        }
    }

    /// `Ready(None)` when the leader abandoned the flight.
    fn poll(&mut self, key: &mut Option<usize>, cx: &Context<'_>) -> Poll<Option<Outcome>> {
        match self {
            Slot::Done(o) => Poll::Ready(Some(o.clone())),
            Slot::Abandoned => Poll::Ready(None),
            Slot::Pending(w) => {
                match *key {
                    Some(k) if w.contains(k) => {
                        if !w[k].will_wake(cx.waker()) {
                            w[k] = cx.waker().clone();
                        }
                    }
                    _ => *key = Some(w.insert(cx.waker().clone())),
                }
                Poll::Pending
            }
        }
    }

    fn forget(&mut self, key: usize) {
        if let Slot::Pending(w) = self {
            if w.contains(key) {
                w.remove(key);
            }
        }
    }
}

fn wake_all(wakers: Vec<Waker>) {
    for w in wakers {
        w.wake();
    }
}

/// Either lead a flight or wait on someone else's.
pub(crate) enum Join<L, W> {
    Lead(L),
    Wait(W),
}

// ---- one worker ----

type LocalSlot = Rc<RefCell<Slot>>;

/// A worker's in-flight keys.
#[derive(Default)]
pub(crate) struct LocalFlights {
    map: RefCell<HashMap<String, LocalSlot>>,
}

impl LocalFlights {
    pub(crate) fn join(self: &Rc<Self>, key: &str) -> Join<LocalLead, LocalWait> {
        if let Some(slot) = self.map.borrow().get(key) {
            return Join::Wait(LocalWait {
                slot: slot.clone(),
                key: None,
            });
        }
        Join::Lead(self.insert(key))
    }

    /// Leads only if nobody on this worker is computing the key.
    pub(crate) fn try_lead(self: &Rc<Self>, key: &str) -> Option<LocalLead> {
        if self.map.borrow().contains_key(key) {
            return None;
        }
        Some(self.insert(key))
    }

    fn insert(self: &Rc<Self>, key: &str) -> LocalLead {
        let slot = Rc::new(RefCell::new(Slot::pending()));
        self.map.borrow_mut().insert(key.to_owned(), slot.clone());
        LocalLead {
            flights: self.clone(),
            key: key.to_owned(),
            slot,
            ended: false,
        }
    }
}

/// The worker's leader for one key; dropping it unfinished abandons it.
pub(crate) struct LocalLead {
    flights: Rc<LocalFlights>,
    key: String,
    slot: LocalSlot,
    ended: bool,
}

impl LocalLead {
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.end(Slot::Done(outcome));
    }

    fn end(&mut self, to: Slot) {
        self.ended = true;
        {
            let mut map = self.flights.map.borrow_mut();
            if map
                .get(&self.key)
                .is_some_and(|s| Rc::ptr_eq(s, &self.slot))
            {
                map.remove(&self.key);
            }
        }
        let wakers = self.slot.borrow_mut().end(to);
        wake_all(wakers);
    }
}

impl Drop for LocalLead {
    fn drop(&mut self) {
        if !self.ended {
            self.end(Slot::Abandoned);
        }
    }
}

/// Waits on a worker's leader: `Some(outcome)`, or `None` if it abandoned.
pub(crate) struct LocalWait {
    slot: LocalSlot,
    key: Option<usize>,
}

impl Future for LocalWait {
    type Output = Option<Outcome>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Outcome>> {
        let this = self.get_mut();
        this.slot.borrow_mut().poll(&mut this.key, cx)
    }
}

impl Drop for LocalWait {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            self.slot.borrow_mut().forget(k);
        }
    }
}

// ---- the process ----

type SharedSlot = Arc<Mutex<Slot>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these locks are held; a poisoned one still
    // holds consistent data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The process's in-flight keys, shared by every worker.
#[derive(Default)]
pub(crate) struct Registry {
    map: Mutex<HashMap<String, SharedSlot>>,
}

impl Registry {
    pub(crate) fn join(self: &Arc<Self>, key: &str) -> Join<GlobalLead, GlobalWait> {
        let mut map = lock(&self.map);
        if let Some(slot) = map.get(key) {
            return Join::Wait(GlobalWait {
                slot: slot.clone(),
                key: None,
            });
        }
        Join::Lead(self.insert(&mut map, key))
    }

    /// Leads only if no worker is computing the key.
    pub(crate) fn try_lead(self: &Arc<Self>, key: &str) -> Option<GlobalLead> {
        let mut map = lock(&self.map);
        if map.contains_key(key) {
            return None;
        }
        Some(self.insert(&mut map, key))
    }

    fn insert(self: &Arc<Self>, map: &mut HashMap<String, SharedSlot>, key: &str) -> GlobalLead {
        let slot = Arc::new(Mutex::new(Slot::pending()));
        map.insert(key.to_owned(), slot.clone());
        GlobalLead {
            registry: self.clone(),
            key: key.to_owned(),
            slot,
            ended: false,
        }
    }

    /// Keys being computed right now.
    pub(crate) fn len(&self) -> usize {
        lock(&self.map).len()
    }
}

/// The process's leader for one key; dropping it unfinished abandons it.
pub(crate) struct GlobalLead {
    registry: Arc<Registry>,
    key: String,
    slot: SharedSlot,
    ended: bool,
}

impl GlobalLead {
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.end(Slot::Done(outcome));
    }

    fn end(&mut self, to: Slot) {
        self.ended = true;
        {
            let mut map = lock(&self.registry.map);
            if map
                .get(&self.key)
                .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
            {
                map.remove(&self.key);
            }
        }
        let wakers = lock(&self.slot).end(to);
        wake_all(wakers);
    }
}

impl Drop for GlobalLead {
    fn drop(&mut self) {
        if !self.ended {
            self.end(Slot::Abandoned);
        }
    }
}

/// Waits on another worker's leader, possibly from another thread.
pub(crate) struct GlobalWait {
    slot: SharedSlot,
    key: Option<usize>,
}

impl Future for GlobalWait {
    type Output = Option<Outcome>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Outcome>> {
        let this = self.get_mut();
        lock(&this.slot).poll(&mut this.key, cx)
    }
}

impl Drop for GlobalWait {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            lock(&self.slot).forget(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn poll<F: Future + Unpin>(f: &mut F, w: &Waker) -> Poll<F::Output> {
        Pin::new(f).poll(&mut Context::from_waker(w))
    }

    #[test]
    fn waiters_get_the_outcome_and_the_key_is_free_again() {
        let flights = Rc::new(LocalFlights::default());
        let Join::Lead(lead) = flights.join("k") else {
            panic!("first caller leads")
        };
        let Join::Wait(mut w) = flights.join("k") else {
            panic!("second caller waits")
        };
        assert!(flights.try_lead("k").is_none());
        let count = Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        assert!(poll(&mut w, &waker).is_pending());
        lead.finish(Ok(Arc::from(&b"v"[..])));
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        match poll(&mut w, &waker) {
            Poll::Ready(Some(Ok(v))) => assert_eq!(&*v, b"v"),
            _ => panic!("outcome expected"),
        }
        assert!(matches!(flights.join("k"), Join::Lead(_)));
    }

    #[test]
    fn dropped_leaders_abandon_and_wake_their_waiters() {
        let reg = Arc::new(Registry::default());
        let Join::Lead(lead) = reg.join("k") else {
            panic!("first caller leads")
        };
        let Join::Wait(mut w) = reg.join("k") else {
            panic!("second caller waits")
        };
        let count = Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        assert!(poll(&mut w, &waker).is_pending());
        assert!(
            poll(&mut w, &waker).is_pending(),
            "re-polling keeps one slot"
        );
        assert_eq!(reg.len(), 1);
        drop(lead);
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(matches!(poll(&mut w, &waker), Poll::Ready(None)));
        assert_eq!(reg.len(), 0);
        let Join::Lead(next) = reg.join("k") else {
            panic!("the key is free after abandonment")
        };
        // An old waiter's drop must not disturb the new flight.
        drop(w);
        assert!(reg.try_lead("k").is_none());
        next.finish(Err(CacheError::Compute("boom".into())));
        assert!(reg.try_lead("k").is_some());
    }
}
