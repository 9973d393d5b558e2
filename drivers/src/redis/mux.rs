//! The multiplexing core of a shared connection, without I/O.
//!
//! Commands are appended to one output buffer in the order they are
//! admitted; each admitted request (one command, or a pipeline written
//! contiguously) takes a slot at the back of a FIFO, and replies complete
//! the slot at the front. The async layer (`conn`) only moves bytes and
//! wakers in and out of this.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

use super::error::{Error, Result};
use super::value::Value;

/// What a completed request yields.
#[derive(Debug, PartialEq)]
pub(crate) enum Reply {
    One(Value),
    Many(Vec<Value>),
}

#[derive(Debug)]
enum State {
    /// Waiting for room under the in-flight cap, already encoded.
    Queued {
        bytes: Vec<u8>,
        since: Instant,
    },
    /// Queued, then its future was dropped: never sent, removed when the
    /// queue reaches it.
    Cancelled,
    /// Written to the output buffer; replies pending.
    InFlight,
    /// In flight, but nobody waits any more: its replies are read and
    /// discarded so later replies still match their commands.
    Abandoned,
    Ready(Result<Reply>),
    /// Result handed out; the slot is being removed.
    Taken,
}

#[derive(Debug)]
struct Slot {
    commands: usize,
    left: usize,
    many: Option<Vec<Value>>,
    err: Option<Error>,
    state: State,
    waker: Option<Waker>,
}

/// Counters of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Commands admitted (pipelines count each command).
    pub commands: u64,
    /// Socket sends (each flushes everything queued at that moment).
    pub flushes: u64,
    /// Bytes handed to the socket.
    pub bytes_written: u64,
    /// Replies matched to commands.
    pub replies: u64,
    /// Replies read for commands whose caller had gone (dropped or timed
    /// out) and discarded.
    pub discarded: u64,
    /// Out-of-band RESP3 pushes ignored.
    pub pushes: u64,
    /// Requests that had to wait for room under the in-flight cap.
    pub waited: u64,
    /// Total time requests spent waiting for that room.
    pub wait_time: Duration,
    /// Requests waiting right now.
    pub waiting: usize,
    /// Commands sent (or about to be) whose reply has not arrived.
    pub in_flight: usize,
}

#[derive(Debug)]
pub(crate) struct Mux {
    out: Vec<u8>,
    slots: Slab<Slot>,
    /// Slots in flight, in reply order.
    fifo: VecDeque<usize>,
    /// Slots waiting for admission, in arrival order.
    queue: VecDeque<usize>,
    in_flight: usize,
    max_in_flight: usize,
    broken: Option<Error>,
    closed: bool,
    writer: Option<Waker>,
    stats: ConnStats,
}

impl Mux {
    pub(crate) fn new(max_in_flight: usize) -> Mux {
        Mux {
            out: Vec::with_capacity(16 * 1024),
            slots: Slab::new(),
            fifo: VecDeque::new(),
            queue: VecDeque::new(),
            in_flight: 0,
            max_in_flight: max_in_flight.max(1),
            broken: None,
            closed: false,
            writer: None,
            stats: ConnStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> ConnStats {
        ConnStats {
            waiting: self.queue.len(),
            in_flight: self.in_flight,
            ..self.stats
        }
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken.is_some() || self.closed
    }

    /// Requests in flight or queued whose replies are still owed.
    pub(crate) fn pending(&self) -> usize {
        self.fifo.len() + self.queue.len()
    }

    fn fits(&self, commands: usize) -> bool {
        // An empty connection admits anything, so a pipeline longer than
        // the cap cannot wait forever.
        self.in_flight == 0 || self.in_flight + commands <= self.max_in_flight
    }

    /// Admits a request of `commands` commands whose encoding `encode`
    /// appends to a buffer. Returns its slot.
    pub(crate) fn submit(
        &mut self,
        commands: usize,
        now: Instant,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<usize> {
        if self.broken.is_some() || self.closed {
            return Err(Error::Closed);
        }
        debug_assert!(commands > 0);
        let mut slot = Slot {
            commands,
            left: commands,
            many: (commands > 1).then(|| Vec::with_capacity(commands)),
            err: None,
            state: State::InFlight,
            waker: None,
        };
        if self.queue.is_empty() && self.fits(commands) {
            encode(&mut self.out);
            let key = self.slots.insert(slot);
            self.fifo.push_back(key);
            self.in_flight += commands;
            self.stats.commands += commands as u64;
            self.wake_writer();
            Ok(key)
        } else {
            // The slow path pays for a private buffer so that admission
            // later is a copy, independent of the caller's borrowed args.
            let mut bytes = Vec::new();
            encode(&mut bytes);
            slot.state = State::Queued { bytes, since: now };
            let key = self.slots.insert(slot);
            self.queue.push_back(key);
            self.stats.waited += 1;
            Ok(key)
        }
    }

    fn admit(&mut self, now: Instant) {
        while let Some(&key) = self.queue.front() {
            let slot = &mut self.slots[key];
            match slot.state {
                State::Cancelled => {
                    self.queue.pop_front();
                    self.slots.remove(key);
                }
                State::Queued { .. }
                    if self.in_flight == 0
                        || self.in_flight + slot.commands <= self.max_in_flight =>
                {
                    self.queue.pop_front();
                    let State::Queued { bytes, since } =
                        std::mem::replace(&mut slot.state, State::InFlight)
                    else {
                        unreachable!()
                    };
                    self.out.extend_from_slice(&bytes);
                    self.in_flight += slot.commands;
                    self.stats.commands += slot.commands as u64;
                    self.stats.wait_time += now.saturating_duration_since(since);
                    self.fifo.push_back(key);
                    self.wake_writer();
                }
                _ => break,
            }
        }
    }

    /// Polls a request's result.
    pub(crate) fn poll_slot(&mut self, key: usize, cx: &mut Context<'_>) -> Poll<Result<Reply>> {
        let slot = &mut self.slots[key];
        match slot.state {
            State::Ready(_) => {
                let State::Ready(r) = std::mem::replace(&mut slot.state, State::Taken) else {
                    unreachable!()
                };
                self.slots.remove(key);
                Poll::Ready(r)
            }
            _ => {
                match &slot.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => slot.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    /// The waiting future went away.
    pub(crate) fn cancel(&mut self, key: usize) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        slot.waker = None;
        match slot.state {
            State::Queued { .. } => slot.state = State::Cancelled,
            State::InFlight => slot.state = State::Abandoned,
            State::Ready(_) | State::Taken => {
                self.slots.remove(key);
            }
            State::Cancelled | State::Abandoned => {}
        }
    }

    /// Feeds one decoded reply. `Err` means the stream no longer makes
    /// sense (a reply nobody asked for): the caller must fail the
    /// connection.
    pub(crate) fn on_reply(&mut self, r: Result<Value>, now: Instant) -> Result<()> {
        if let Ok(Value::Push(_)) = r {
            // Out of band (client-side caching invalidations, pub/sub
            // sent by mistake): never a command's reply.
            self.stats.pushes += 1;
            return Ok(());
        }
        let Some(&key) = self.fifo.front() else {
            return Err(Error::protocol("reply received with no command pending"));
        };
        self.in_flight -= 1;
        let slot = &mut self.slots[key];
        slot.left -= 1;
        let abandoned = matches!(slot.state, State::Abandoned);
        match (r, &mut slot.many) {
            (Ok(v), Some(acc)) => acc.push(v),
            (Err(e), Some(acc)) => {
                // Keep the position so the other replies stay aligned.
                acc.push(Value::Nil);
                slot.err.get_or_insert(e);
            }
            (r, None) => {
                if !abandoned {
                    slot.state = State::Ready(r.map(Reply::One));
                }
            }
        }
        self.stats.replies += 1;
        if slot.left == 0 {
            self.fifo.pop_front();
            if let Some(acc) = slot.many.take() {
                let r = match slot.err.take() {
                    Some(e) => Err(e),
                    None => Ok(Reply::Many(acc)),
                };
                if !abandoned {
                    slot.state = State::Ready(r);
                }
            }
            self.finish(key);
        }
        self.admit(now);
        Ok(())
    }

    fn finish(&mut self, key: usize) {
        let slot = &mut self.slots[key];
        match slot.state {
            State::Abandoned => {
                self.stats.discarded += 1;
                self.slots.remove(key);
            }
            _ => {
                if let Some(w) = slot.waker.take() {
                    w.wake();
                }
            }
        }
    }

    /// The connection failed: every request in flight gets `e`, every
    /// queued one [`Error::Closed`] (it was never sent). Nothing is re-sent.
    pub(crate) fn fail(&mut self, e: Error) {
        if self.broken.is_some() {
            return;
        }
        self.broken = Some(e.clone());
        self.out.clear();
        self.in_flight = 0;
        let inflight: Vec<usize> = self.fifo.drain(..).collect();
        for key in inflight {
            self.complete_with(key, e.clone());
        }
        let queued: Vec<usize> = self.queue.drain(..).collect();
        for key in queued {
            self.complete_with(key, Error::Closed);
        }
        self.wake_writer();
    }

    fn complete_with(&mut self, key: usize, e: Error) {
        let slot = &mut self.slots[key];
        match slot.state {
            State::Abandoned | State::Cancelled => {
                self.slots.remove(key);
            }
            _ => {
                slot.state = State::Ready(Err(e));
                if let Some(w) = slot.waker.take() {
                    w.wake();
                }
            }
        }
    }

    /// Why the connection is broken, if it is.
    pub(crate) fn broken_reason(&self) -> Option<&Error> {
        self.broken.as_ref()
    }

    /// No new requests; the writer stops once the output is flushed.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        self.wake_writer();
    }

    fn wake_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    /// For the writer: swaps the queued output into `spare` (which must be
    /// empty) when there is any; `Ready(false)` when the writer should
    /// stop.
    pub(crate) fn poll_output(&mut self, spare: &mut Vec<u8>, cx: &mut Context<'_>) -> Poll<bool> {
        if self.broken.is_some() {
            return Poll::Ready(false);
        }
        if !self.out.is_empty() {
            debug_assert!(spare.is_empty());
            std::mem::swap(&mut self.out, spare);
            self.stats.flushes += 1;
            self.stats.bytes_written += spare.len() as u64;
            return Poll::Ready(true);
        }
        if self.closed {
            return Poll::Ready(false);
        }
        self.writer = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Waker, Arc<Count>) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (Waker::from(c.clone()), c)
    }

    fn get(m: &mut Mux, key: usize) -> Poll<Result<Reply>> {
        let (w, _) = waker();
        m.poll_slot(key, &mut Context::from_waker(&w))
    }

    fn flush(m: &mut Mux) -> Vec<u8> {
        let (w, _) = waker();
        let mut spare = Vec::new();
        match m.poll_output(&mut spare, &mut Context::from_waker(&w)) {
            Poll::Ready(true) => spare,
            _ => Vec::new(),
        }
    }

    fn ready(p: Poll<Result<Reply>>) -> Reply {
        match p {
            Poll::Ready(Ok(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn int(i: i64) -> Result<Value> {
        Ok(Value::Int(i))
    }

    #[test]
    fn replies_complete_in_order_and_output_batches() {
        let now = Instant::now();
        let mut m = Mux::new(10);
        let a = m.submit(1, now, |o| o.extend_from_slice(b"A")).unwrap();
        let b = m.submit(1, now, |o| o.extend_from_slice(b"B")).unwrap();
        assert_eq!(flush(&mut m), b"AB");
        assert_eq!(flush(&mut m), b"");
        assert!(get(&mut m, a).is_pending());
        let (w, count) = waker();
        assert!(m.poll_slot(b, &mut Context::from_waker(&w)).is_pending());
        m.on_reply(int(1), now).unwrap();
        m.on_reply(int(2), now).unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(ready(get(&mut m, b)), Reply::One(Value::Int(2)));
        assert_eq!(ready(get(&mut m, a)), Reply::One(Value::Int(1)));
        assert!(m.on_reply(int(3), now).is_err());
        let s = m.stats();
        assert_eq!((s.commands, s.flushes, s.replies), (2, 1, 2));
    }

    #[test]
    fn dropped_request_reply_is_discarded() {
        let now = Instant::now();
        let mut m = Mux::new(10);
        let a = m.submit(1, now, |o| o.push(b'a')).unwrap();
        let b = m.submit(1, now, |o| o.push(b'b')).unwrap();
        m.cancel(a);
        m.on_reply(int(1), now).unwrap();
        m.on_reply(int(2), now).unwrap();
        assert_eq!(ready(get(&mut m, b)), Reply::One(Value::Int(2)));
        assert_eq!(m.stats().discarded, 1);
        assert_eq!(m.slots.len(), 0);
    }

    #[test]
    fn pipeline_slot_collects_and_too_large_fails_only_it() {
        let now = Instant::now();
        let mut m = Mux::new(10);
        let p = m.submit(3, now, |o| o.push(b'p')).unwrap();
        let q = m.submit(1, now, |o| o.push(b'q')).unwrap();
        m.on_reply(int(1), now).unwrap();
        m.on_reply(Err(Error::TooLarge { limit: 9 }), now).unwrap();
        m.on_reply(int(3), now).unwrap();
        m.on_reply(int(4), now).unwrap();
        assert!(matches!(
            get(&mut m, p),
            Poll::Ready(Err(Error::TooLarge { .. }))
        ));
        assert_eq!(ready(get(&mut m, q)), Reply::One(Value::Int(4)));
        let r = m.submit(2, now, |o| o.push(b'r')).unwrap();
        m.on_reply(int(5), now).unwrap();
        m.on_reply(Ok(Value::Nil), now).unwrap();
        assert_eq!(
            ready(get(&mut m, r)),
            Reply::Many(vec![Value::Int(5), Value::Nil])
        );
    }

    #[test]
    fn in_flight_cap_queues_fifo_and_counts_waits() {
        let t0 = Instant::now();
        let mut m = Mux::new(2);
        let a = m.submit(1, t0, |o| o.push(b'a')).unwrap();
        let b = m.submit(1, t0, |o| o.push(b'b')).unwrap();
        let c = m.submit(1, t0, |o| o.push(b'c')).unwrap();
        let d = m.submit(2, t0, |o| o.push(b'd')).unwrap();
        let e = m.submit(1, t0, |o| o.push(b'e')).unwrap();
        assert_eq!(flush(&mut m), b"ab");
        assert_eq!(m.stats().waiting, 3);
        m.cancel(c);
        let t1 = t0 + Duration::from_millis(5);
        m.on_reply(int(1), t1).unwrap();
        // c was cancelled before it was sent; d needs two slots.
        assert_eq!(flush(&mut m), b"");
        m.on_reply(int(2), t1).unwrap();
        assert_eq!(flush(&mut m), b"d");
        assert_eq!(m.stats().in_flight, 2);
        let _ = (a, b, d, e);
        m.on_reply(int(3), t1).unwrap();
        m.on_reply(int(4), t1).unwrap();
        assert_eq!(flush(&mut m), b"e");
        let s = m.stats();
        assert_eq!(s.waited, 3);
        assert_eq!(s.wait_time, Duration::from_millis(10));
        assert_eq!(s.waiting, 0);
    }

    #[test]
    fn oversized_pipeline_is_admitted_on_an_idle_connection() {
        let now = Instant::now();
        let mut m = Mux::new(2);
        let p = m.submit(5, now, |o| o.push(b'p')).unwrap();
        assert_eq!(flush(&mut m), b"p");
        for i in 0..5 {
            m.on_reply(int(i), now).unwrap();
        }
        assert!(matches!(get(&mut m, p), Poll::Ready(Ok(Reply::Many(v))) if v.len() == 5));
    }

    #[test]
    fn failure_errors_everything_at_once() {
        let now = Instant::now();
        let mut m = Mux::new(1);
        let (w, count) = waker();
        let a = m.submit(1, now, |o| o.push(b'a')).unwrap();
        let b = m.submit(1, now, |o| o.push(b'b')).unwrap();
        let c = m.submit(1, now, |o| o.push(b'c')).unwrap();
        for k in [a, b] {
            assert!(m.poll_slot(k, &mut Context::from_waker(&w)).is_pending());
        }
        m.cancel(c);
        m.fail(Error::Io(Arc::new(
            std::io::ErrorKind::ConnectionReset.into(),
        )));
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(matches!(get(&mut m, a), Poll::Ready(Err(Error::Io(_)))));
        assert!(matches!(get(&mut m, b), Poll::Ready(Err(Error::Closed))));
        assert_eq!(m.slots.len(), 0);
        assert!(matches!(m.submit(1, now, |_| {}), Err(Error::Closed)));
        assert!(m.is_broken());
        let (w, _) = waker();
        let mut spare = Vec::new();
        assert_eq!(
            m.poll_output(&mut spare, &mut Context::from_waker(&w)),
            Poll::Ready(false)
        );
    }

    #[test]
    fn pushes_are_not_replies() {
        let now = Instant::now();
        let mut m = Mux::new(4);
        m.on_reply(Ok(Value::Push(vec![])), now).unwrap();
        let a = m.submit(1, now, |o| o.push(b'a')).unwrap();
        m.on_reply(Ok(Value::Push(vec![])), now).unwrap();
        m.on_reply(int(1), now).unwrap();
        assert_eq!(ready(get(&mut m, a)), Reply::One(Value::Int(1)));
        assert_eq!(m.stats().pushes, 2);
    }
}
