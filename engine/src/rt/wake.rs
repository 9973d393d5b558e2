//! Who an I/O completion wakes.
//!
//! A task's `Waker` is an `Arc`, and every clone and drop moves its count
//! with an atomic instruction. On a ring, a keep-alive request used to
//! clone its connection task's waker into the send's slot and again into
//! the receive's, wake one and drop the other: four atomic operations per
//! request on the task's own line. A slot now names a task of its own
//! worker by id ([`Wakee::Task`]), which registering and waking do not
//! count; any other waker (a future polled by something that is not a
//! task of this worker) is kept as a clone, as before.
//!
//! Like a waker, a task id may outlive its task: waking an id that a new
//! task took over polls that task once for nothing, which every future
//! must tolerate.

use std::task::{Context, Waker};

use super::executor::{local_task, wake_local};

/// What a completion wakes.
pub(crate) enum Wakee {
    /// A task of the worker that owns the slot.
    Task(usize),
    Other(Waker),
}

impl Wakee {
    /// Who `waker` wakes.
    #[inline]
    pub(crate) fn of(waker: &Waker) -> Wakee {
        match local_task(waker) {
            Some(id) => Wakee::Task(id),
            None => Wakee::Other(waker.clone()),
        }
    }

    /// Whether waking this wakes the task `waker` would.
    #[inline]
    pub(crate) fn will_wake(&self, waker: &Waker) -> bool {
        match self {
            Wakee::Task(id) => local_task(waker) == Some(*id),
            Wakee::Other(w) => w.will_wake(waker),
        }
    }

    /// Files the waker of `cx` in `slot`, unless the slot already names the
    /// same task.
    #[inline]
    pub(crate) fn register(slot: &mut Option<Wakee>, cx: &Context<'_>) {
        let waker = cx.waker();
        match (local_task(waker), &*slot) {
            (Some(id), Some(Wakee::Task(t))) if *t == id => {}
            (Some(id), _) => *slot = Some(Wakee::Task(id)),
            (None, Some(Wakee::Other(w))) if w.will_wake(waker) => {}
            (None, _) => *slot = Some(Wakee::Other(waker.clone())),
        }
    }

    #[inline]
    pub(crate) fn wake(self) {
        match self {
            Wakee::Task(id) => wake_local(id),
            Wakee::Other(w) => w.wake(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::future::{poll_fn, Future};
    use std::rc::Rc;
    use std::task::{Poll, Waker};

    use super::Wakee;
    use crate::rt::{self, IoChoice};

    /// Runs `test` as the main future of a worker on each backend.
    fn on_each_backend<F: Future<Output = ()>>(test: impl Fn() -> F) {
        for io in [IoChoice::IoUring, IoChoice::Epoll] {
            let config = rt::CoreConfig {
                io,
                ..Default::default()
            };
            if let Err(e) = rt::block_on_with(&config, test()) {
                // A kernel without io_uring runs the epoll half only.
                assert_eq!(io, IoChoice::IoUring, "{e}");
            }
        }
    }

    #[test]
    fn a_task_of_this_worker_is_named_by_id_and_any_other_waker_is_kept() {
        on_each_backend(|| async {
            let seen = Rc::new(RefCell::new(Vec::new()));
            let s = seen.clone();
            let task = rt::spawn(poll_fn(move |cx| {
                let mut slot = None;
                Wakee::register(&mut slot, cx);
                let first = matches!(slot, Some(Wakee::Task(_)));
                // The same task again keeps its entry.
                Wakee::register(&mut slot, cx);
                let again = matches!(slot, Some(Wakee::Task(_)));
                // A waker that is no task of this worker is kept as a clone.
                let other = Wakee::of(Waker::noop());
                let kept = matches!(other, Wakee::Other(_)) && !other.will_wake(cx.waker());
                let same = slot.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
                s.borrow_mut().extend([first, again, kept, same]);
                Poll::Ready(())
            }));
            task.await.unwrap();
            assert_eq!(*seen.borrow(), [true; 4]);
        });
    }

    #[test]
    fn waking_a_task_by_id_polls_it_again() {
        on_each_backend(|| async {
            let slot: Rc<RefCell<Option<Wakee>>> = Rc::new(RefCell::new(None));
            let polls = Rc::new(Cell::new(0));
            let (s, p) = (slot.clone(), polls.clone());
            let _task = rt::spawn(poll_fn(move |cx| {
                p.set(p.get() + 1);
                if p.get() == 1 {
                    Wakee::register(&mut s.borrow_mut(), cx);
                    return Poll::Pending;
                }
                Poll::Ready(())
            }));
            // Each yield lets every ready task run once.
            let turns = |want: usize| {
                let polls = polls.clone();
                async move {
                    for _ in 0..10 {
                        if polls.get() >= want {
                            break;
                        }
                        rt::yield_now().await;
                    }
                    polls.get()
                }
            };
            assert_eq!(turns(1).await, 1);
            assert!(matches!(*slot.borrow(), Some(Wakee::Task(_))));
            // Parked until woken.
            for _ in 0..3 {
                rt::yield_now().await;
            }
            assert_eq!(polls.get(), 1);
            let wakee = slot.borrow_mut().take().unwrap();
            wakee.wake();
            assert_eq!(turns(2).await, 2, "woken by id, polled again");
        });
    }
}
