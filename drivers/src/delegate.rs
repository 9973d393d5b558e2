//! Running an operation on the worker that owns a connection, for a caller
//! on another worker, and waiting for the answer there.
//!
//! One ring drives one socket, so a worker that has no connection of its
//! own hands its encoded request to the owner through the owner's inbox;
//! the owner queues it with its own callers' requests and posts the answer
//! back, which wakes the caller's task through the caller's inbox. The
//! drivers' remote handles (`pg::remote`, `redis::remote`) are built on it.

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use tidepool_engine::rt::WorkerHandle;

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
