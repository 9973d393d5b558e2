//! Pub/sub on a dedicated connection, with automatic reconnection.

use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use tidepool_engine::rt::{self, time};

use super::link::Link;

use super::config::Config;
use super::conn::dial;
use super::decode::Decoder;
use super::encode::{write_array_header, write_bulk};
use super::error::{Error, Result, ServerError};
use super::value::Value;

/// Messages buffered before the connection stops reading (the server then
/// buffers, up to its `client-output-buffer-limit pubsub`).
const MAX_BUFFERED: usize = 64 * 1024;
const BACKOFF_START: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The channel it was published to.
    pub channel: Vec<u8>,
    /// The pattern that matched, for `PSUBSCRIBE` deliveries.
    pub pattern: Option<Vec<u8>>,
    /// The payload, binary-safe.
    pub payload: Vec<u8>,
}

impl Message {
    /// The payload as UTF-8.
    pub fn payload_str(&self) -> Result<&str> {
        std::str::from_utf8(&self.payload)
            .map_err(|_| Error::Type("payload is not valid UTF-8".into()))
    }

    /// The channel as UTF-8 (lossy).
    pub fn channel_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.channel)
    }
}

#[derive(Default)]
struct State {
    /// Subscriptions the user asked for: restored after a reconnect.
    channels: BTreeSet<Vec<u8>>,
    patterns: BTreeSet<Vec<u8>>,
    /// Subscriptions the server confirmed on the current connection.
    active_channels: BTreeSet<Vec<u8>>,
    active_patterns: BTreeSet<Vec<u8>>,
    out: Vec<u8>,
    connected: bool,
    messages: VecDeque<Message>,
    message_waker: Option<Waker>,
    change_wakers: Vec<Waker>,
    task_waker: Option<Waker>,
    server_errors: Vec<ServerError>,
    server_error_count: u64,
    reconnects: u64,
    dropped_too_large: u64,
    fatal: Option<Error>,
    last_error: Option<Error>,
    closed: bool,
    max_attempts: Option<u32>,
}

impl State {
    fn wake_changes(&mut self) {
        for w in self.change_wakers.drain(..) {
            w.wake();
        }
    }

    fn wake_task(&mut self) {
        if let Some(w) = self.task_waker.take() {
            w.wake();
        }
    }
}

/// A subscriber connection.
///
/// Owns its own connection (a subscribed connection cannot run ordinary
/// commands). A background task on the current worker reads messages into
/// a queue, so [`next`](PubSub::next) is cancel-safe (it can sit in a
/// timeout or a select without losing messages).
///
/// **Reconnection, at-most-once delivery.** When the connection is lost
/// (server restart, network error) the task reconnects with backoff
/// (20 ms doubling to 1 s) and re-subscribes every channel and pattern.
/// Messages published while it was disconnected are **lost**: Redis pub/sub
/// keeps nothing for absent subscribers. Use streams or lists when every
/// message matters. [`reconnects`](PubSub::reconnects) counts the
/// reconnections, so a consumer can tell that a gap may have happened.
///
/// Dropping the `PubSub` closes the connection.
pub struct PubSub {
    shared: Rc<RefCell<State>>,
}

impl PubSub {
    /// Connects (failing now if the server cannot be reached or refuses
    /// the credentials) and starts the reader task.
    pub async fn connect(cfg: &Config) -> Result<PubSub> {
        let (stream, dec, _) = dial(cfg).await?;
        let shared = Rc::new(RefCell::new(State {
            connected: true,
            ..State::default()
        }));
        rt::spawn(run(shared.clone(), cfg.clone(), stream, dec));
        Ok(PubSub { shared })
    }

    /// [`connect`](PubSub::connect) with a `redis://` URL.
    pub async fn open(url: &str) -> Result<PubSub> {
        PubSub::connect(&Config::from_url(url)?).await
    }

    /// How many attempts a reconnection makes before giving up (`None`,
    /// the default: forever). Once it gives up, `next` and the
    /// subscription calls return the last connection error.
    pub fn set_max_reconnect_attempts(&self, n: Option<u32>) {
        self.shared.borrow_mut().max_attempts = n;
    }

    /// `SUBSCRIBE channel...`; returns once the server confirmed every
    /// channel.
    pub async fn subscribe(&self, channels: &[impl AsRef<[u8]>]) -> Result<()> {
        self.change(b"SUBSCRIBE", channels, false, true).await
    }

    /// `PSUBSCRIBE pattern...`; returns once confirmed.
    pub async fn psubscribe(&self, patterns: &[impl AsRef<[u8]>]) -> Result<()> {
        self.change(b"PSUBSCRIBE", patterns, true, true).await
    }

    /// `UNSUBSCRIBE channel...` (every channel when empty).
    pub async fn unsubscribe(&self, channels: &[impl AsRef<[u8]>]) -> Result<()> {
        self.change(b"UNSUBSCRIBE", channels, false, false).await
    }

    /// `PUNSUBSCRIBE pattern...` (every pattern when empty).
    pub async fn punsubscribe(&self, patterns: &[impl AsRef<[u8]>]) -> Result<()> {
        self.change(b"PUNSUBSCRIBE", patterns, true, false).await
    }

    async fn change(
        &self,
        name: &[u8],
        names: &[impl AsRef<[u8]>],
        pattern: bool,
        add: bool,
    ) -> Result<()> {
        let names: Vec<Vec<u8>> = names.iter().map(|n| n.as_ref().to_vec()).collect();
        let errors_before;
        {
            let mut st = self.shared.borrow_mut();
            if let Some(e) = &st.fatal {
                return Err(e.clone());
            }
            if st.closed {
                return Err(Error::Closed);
            }
            let wanted = if pattern {
                &mut st.patterns
            } else {
                &mut st.channels
            };
            let targets: Vec<Vec<u8>> = if names.is_empty() && !add {
                std::mem::take(wanted).into_iter().collect()
            } else {
                names.clone()
            };
            for n in &targets {
                if add {
                    wanted.insert(n.clone());
                } else {
                    wanted.remove(n);
                }
            }
            errors_before = st.server_error_count;
            // While disconnected the reconnect sends the whole set anyway.
            if st.connected && !(targets.is_empty() && add) {
                let out = &mut st.out;
                write_array_header(out, 1 + names.len());
                write_bulk(out, name);
                for n in &names {
                    write_bulk(out, n);
                }
                st.wake_task();
            }
        }
        std::future::poll_fn(|cx| {
            let mut st = self.shared.borrow_mut();
            if st.server_error_count > errors_before {
                let e = st.server_errors.last().cloned().expect("recorded error");
                if add {
                    // Refused (ACL): not re-requested after a reconnect.
                    let wanted = if pattern {
                        &mut st.patterns
                    } else {
                        &mut st.channels
                    };
                    for n in &names {
                        wanted.remove(n);
                    }
                }
                return Poll::Ready(Err(Error::Server(e)));
            }
            if let Some(e) = &st.fatal {
                return Poll::Ready(Err(e.clone()));
            }
            let (wanted, active) = if pattern {
                (&st.patterns, &st.active_patterns)
            } else {
                (&st.channels, &st.active_channels)
            };
            let done = if add {
                names.iter().all(|n| active.contains(n))
            } else if names.is_empty() {
                active.is_empty() || !st.connected
            } else {
                names
                    .iter()
                    .all(|n| !active.contains(n) || wanted.contains(n))
            };
            if done && (st.connected || !add) {
                return Poll::Ready(Ok(()));
            }
            st.change_wakers.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The next message; waits for one, across reconnections.
    pub async fn next(&self) -> Result<Message> {
        std::future::poll_fn(|cx| {
            let mut st = self.shared.borrow_mut();
            if let Some(m) = st.messages.pop_front() {
                if st.messages.len() + 1 == MAX_BUFFERED {
                    st.wake_task();
                }
                return Poll::Ready(Ok(m));
            }
            if let Some(e) = &st.fatal {
                return Poll::Ready(Err(e.clone()));
            }
            st.message_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// A message if one is already buffered.
    pub fn try_next(&self) -> Option<Message> {
        let mut st = self.shared.borrow_mut();
        let m = st.messages.pop_front();
        if m.is_some() && st.messages.len() + 1 == MAX_BUFFERED {
            st.wake_task();
        }
        m
    }

    /// Channels currently subscribed to (as requested).
    pub fn channels(&self) -> Vec<Vec<u8>> {
        self.shared.borrow().channels.iter().cloned().collect()
    }

    /// Patterns currently subscribed to (as requested).
    pub fn patterns(&self) -> Vec<Vec<u8>> {
        self.shared.borrow().patterns.iter().cloned().collect()
    }

    /// Times the connection was re-established; each one may have lost
    /// messages.
    pub fn reconnects(&self) -> u64 {
        self.shared.borrow().reconnects
    }

    /// Whether the connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.shared.borrow().connected
    }

    /// The error that last broke the connection.
    pub fn last_error(&self) -> Option<Error> {
        self.shared.borrow().last_error.clone()
    }

    /// Messages dropped for exceeding the configured reply size cap.
    pub fn dropped_too_large(&self) -> u64 {
        self.shared.borrow().dropped_too_large
    }
}

impl Drop for PubSub {
    fn drop(&mut self) {
        let mut st = self.shared.borrow_mut();
        st.closed = true;
        st.wake_task();
    }
}

impl std::fmt::Debug for PubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.borrow();
        f.debug_struct("PubSub")
            .field("channels", &st.channels.len())
            .field("patterns", &st.patterns.len())
            .field("connected", &st.connected)
            .field("reconnects", &st.reconnects)
            .finish()
    }
}

/// The connection's task: drive one connection, then reconnect, until the
/// `PubSub` is dropped or reconnection gives up.
async fn run(shared: Rc<RefCell<State>>, cfg: Config, stream: Link, dec: Decoder) {
    let mut conn = Some((stream, dec));
    let mut attempt: u32 = 0;
    loop {
        if let Some((stream, mut dec)) = conn.take() {
            attempt = 0;
            let res = drive(&shared, &stream, &mut dec).await;
            let _ = stream.shutdown(Shutdown::Both);
            let mut st = shared.borrow_mut();
            st.connected = false;
            st.active_channels.clear();
            st.active_patterns.clear();
            st.out.clear();
            if st.closed {
                return;
            }
            if let Err(e) = res {
                st.last_error = Some(e);
            }
            st.wake_changes();
        }
        let (closed, max) = {
            let st = shared.borrow();
            (st.closed, st.max_attempts)
        };
        if closed {
            return;
        }
        if max.is_some_and(|m| attempt >= m) {
            let mut st = shared.borrow_mut();
            st.fatal = Some(st.last_error.clone().unwrap_or(Error::Closed));
            st.wake_changes();
            if let Some(w) = st.message_waker.take() {
                w.wake();
            }
            return;
        }
        if attempt > 0 {
            let backoff = BACKOFF_START
                .saturating_mul(1 << (attempt - 1).min(10))
                .min(BACKOFF_MAX);
            time::sleep(backoff).await;
            if shared.borrow().closed {
                return;
            }
        }
        attempt += 1;
        match dial(&cfg).await {
            Ok((stream, dec, _)) => {
                let mut st = shared.borrow_mut();
                st.connected = true;
                st.reconnects += 1;
                st.out.clear();
                let st = &mut *st;
                for (name, set) in [
                    (&b"SUBSCRIBE"[..], &st.channels),
                    (&b"PSUBSCRIBE"[..], &st.patterns),
                ] {
                    if !set.is_empty() {
                        write_array_header(&mut st.out, 1 + set.len());
                        write_bulk(&mut st.out, name);
                        for n in set {
                            write_bulk(&mut st.out, n);
                        }
                    }
                }
                conn = Some((stream, dec));
            }
            Err(e) => shared.borrow_mut().last_error = Some(e),
        }
    }
}

type ReadFuture<'a> = Pin<Box<dyn Future<Output = (io::Result<usize>, Vec<u8>)> + 'a>>;

enum Event {
    Read(io::Result<usize>, Vec<u8>),
    Write(Vec<u8>),
    Close,
    Resume,
}

/// Reads and writes one connection until it fails or the `PubSub` goes.
async fn drive(shared: &Rc<RefCell<State>>, stream: &Link, dec: &mut Decoder) -> Result<()> {
    let mut read: Option<ReadFuture<'_>> = None;
    loop {
        if read.is_none() {
            while let Some(r) = dec.decode()? {
                handle(shared, r);
            }
        }
        let full = shared.borrow().messages.len() >= MAX_BUFFERED;
        if read.is_none() && !full {
            read = Some(Box::pin(stream.read(dec.read_buf())));
        }
        // The read stays armed while subscription commands are written, so
        // the socket is read and written independently.
        let ev = std::future::poll_fn(|cx| {
            let mut st = shared.borrow_mut();
            if st.closed {
                return Poll::Ready(Event::Close);
            }
            if !st.out.is_empty() {
                return Poll::Ready(Event::Write(std::mem::take(&mut st.out)));
            }
            match read.as_mut() {
                Some(r) => {
                    if let Poll::Ready((res, buf)) = r.as_mut().poll(cx) {
                        return Poll::Ready(Event::Read(res, buf));
                    }
                }
                None if st.messages.len() < MAX_BUFFERED => return Poll::Ready(Event::Resume),
                None => {}
            }
            st.task_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        match ev {
            Event::Close => return Ok(()),
            Event::Resume => {}
            Event::Write(out) => {
                let (res, _) = stream.write_all(out).await;
                res?;
            }
            Event::Read(res, buf) => {
                read = None;
                dec.filled(buf);
                match res {
                    Ok(0) => {
                        return Err(Error::from(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection",
                        )))
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
}

fn text(v: &Value) -> Option<&[u8]> {
    v.as_bytes()
}

/// One frame of a subscribed connection (RESP2 array or RESP3 push).
fn handle(shared: &Rc<RefCell<State>>, r: Result<Value>) {
    let mut st = shared.borrow_mut();
    let items = match r {
        Ok(Value::Push(items)) | Ok(Value::Array(items)) => items,
        Ok(Value::Error(e)) => {
            // A refused subscription (ACL NOPERM, ...): the call waiting
            // for it reports this.
            st.server_errors.push(e);
            if st.server_errors.len() > 16 {
                st.server_errors.remove(0);
            }
            st.server_error_count += 1;
            st.wake_changes();
            return;
        }
        Err(Error::TooLarge { .. }) => {
            st.dropped_too_large += 1;
            return;
        }
        _ => return,
    };
    let kind = items.first().and_then(text).map(|k| k.to_ascii_lowercase());
    let Some(kind) = kind else { return };
    let bytes = |i: usize| items.get(i).and_then(text).map(<[u8]>::to_vec);
    match kind.as_slice() {
        b"message" => {
            if let (Some(channel), Some(payload)) = (bytes(1), bytes(2)) {
                st.messages.push_back(Message {
                    channel,
                    pattern: None,
                    payload,
                });
                if let Some(w) = st.message_waker.take() {
                    w.wake();
                }
            }
        }
        b"pmessage" => {
            if let (Some(pattern), Some(channel), Some(payload)) = (bytes(1), bytes(2), bytes(3)) {
                st.messages.push_back(Message {
                    channel,
                    pattern: Some(pattern),
                    payload,
                });
                if let Some(w) = st.message_waker.take() {
                    w.wake();
                }
            }
        }
        b"subscribe" | b"psubscribe" | b"unsubscribe" | b"punsubscribe" => {
            if let Some(name) = bytes(1) {
                match kind.as_slice() {
                    b"subscribe" => st.active_channels.insert(name),
                    b"psubscribe" => st.active_patterns.insert(name),
                    b"unsubscribe" => st.active_channels.remove(&name),
                    _ => st.active_patterns.remove(&name),
                };
            }
            st.wake_changes();
        }
        _ => {}
    }
}
