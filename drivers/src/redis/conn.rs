//! The multiplexed, auto-pipelined connection on a Tidepool worker.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tidepool_engine::rt::{self, net::TcpStream, time};

use super::link::Link;

use super::config::Config;
use super::decode::Decoder;
use super::encode::{Enc, IntoCommand};
use super::error::{Error, Result};
use super::handshake::{Handshake, Progress};
use super::mux::{ConnStats, Mux, Reply};
use super::remote::{self, Exported, Remote};
use super::value::{FromValue, Value};

/// Resolves the configured host. IP literals need no lookup; a host name
/// goes through the system resolver, which blocks this worker for the
/// duration of the lookup, so prefer addresses in latency-sensitive setups.
fn resolve(cfg: &Config) -> Result<Vec<SocketAddr>> {
    let host = cfg.host();
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, cfg.port())]);
    }
    let addrs: Vec<SocketAddr> = (host, cfg.port()).to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(Error::Config(format!("{host} resolves to no address")));
    }
    Ok(addrs)
}

fn closed_by_peer() -> Error {
    Error::from(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the server closed the connection",
    ))
}

/// Reads until the decoder yields one reply.
pub(crate) async fn read_reply(stream: &Link, dec: &mut Decoder) -> Result<Value> {
    loop {
        if let Some(r) = dec.decode()? {
            return r;
        }
        let (res, buf) = stream.read(dec.read_buf()).await;
        dec.filled(buf);
        match res {
            Ok(0) => return Err(closed_by_peer()),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Connects and runs the handshake; returns the stream, a decoder holding
/// whatever was read past the handshake, and whether RESP3 is on.
pub(crate) async fn dial(cfg: &Config) -> Result<(Link, Decoder, bool)> {
    let in_tls = std::cell::Cell::new(false);
    let fut = async {
        let mut last = None;
        let mut stream = None;
        if let Some(path) = cfg.unix_path() {
            stream = Some(TcpStream::connect_unix(path).await?);
        }
        let addrs = if stream.is_some() {
            Vec::new()
        } else {
            resolve(cfg)?
        };
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = match stream {
            Some(s) => s,
            None => return Err(last.map(Error::from).unwrap_or(Error::Closed)),
        };
        // `rediss://`: the handshake counts in the connect timeout.
        in_tls.set(true);
        let stream = Link::open(stream, cfg).await?;
        in_tls.set(false);
        let mut dec = Decoder::new(cfg.max_reply_bytes());
        let mut hs = Handshake::new(cfg);
        let mut out = Vec::with_capacity(256);
        hs.start(&mut out);
        loop {
            if !out.is_empty() {
                let (r, mut b) = stream.write_all(out).await;
                r?;
                b.clear();
                out = b;
            }
            let v = read_reply(&stream, &mut dec).await?;
            if let Progress::Done { resp3 } = hs.on_reply(v, &mut out)? {
                return Ok((stream, dec, resp3));
            }
        }
    };
    match cfg.connect_timeout_value() {
        Some(d) => time::timeout(d, fut).await.map_err(|_| {
            if in_tls.get() {
                // A cleartext port reads a ClientHello as the start of a
                // command and waits for the rest.
                Error::Tls {
                    message: "TLS handshake timed out (is the port serving TLS?)".into(),
                    fatal: false,
                }
            } else {
                Error::Timeout
            }
        })?,
        None => fut.await,
    }
}

pub(crate) struct Shared {
    pub(crate) mux: RefCell<Mux>,
    pub(crate) cfg: Config,
    pub(crate) resp3: bool,
    /// Set once the connection is broken or closed, for the workers it was
    /// exported to: they stop delegating to it without a failed request.
    pub(crate) dead: Arc<AtomicBool>,
    /// The socket, for a look at it while the connection sits idle.
    link: Rc<Link>,
}

/// Closes the connection when the last [`Connection`] clone goes.
pub(crate) struct Handle {
    shared: Rc<Shared>,
    /// Its number among this worker's exported connections, once exported.
    export_id: std::cell::Cell<Option<u64>>,
    /// Handles to it held by other workers.
    pub(crate) importers: crate::delegate::Importers,
}

impl Handle {
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.dead.store(true, Ordering::Relaxed);
        self.shared.mux.borrow_mut().close();
    }
}

/// A multiplexed connection to Redis, shared by the tasks of one worker.
///
/// Cloning is cheap (`Rc`); every clone talks over the same socket. Each
/// command is appended to a shared output buffer and takes a slot in a FIFO
/// of pending replies; one writer task sends everything queued in a single
/// send, and one reader task completes the slots in order. Commands issued
/// by many tasks in the same turn of the worker loop therefore go out
/// together (automatic pipelining).
///
/// At most [`Config::max_in_flight`] commands are in flight; later ones
/// wait in FIFO order (see [`ConnStats::waited`] and
/// [`ConnStats::wait_time`]).
///
/// If the connection breaks (I/O or protocol error, server restart), every
/// pending command fails at once with that error, nothing is re-sent, and
/// the connection reports [`is_broken`](Connection::is_broken); later
/// commands fail with [`Error::Closed`]. Open a new connection to go on.
///
/// A command future dropped before its reply arrives (a timeout, a
/// `select`) does not cancel the command on the server; its reply is read
/// and discarded so replies stay matched.
///
/// Not for this connection: `SUBSCRIBE` and friends (use
/// [`PubSub`](super::PubSub)), `MONITOR`; blocking commands (`BLPOP`, ...)
/// work but hold up every command queued behind them.
#[derive(Clone)]
pub struct Connection {
    conn: Conn,
}

/// This worker's connection, or one on another worker that requests are
/// delegated to (see `remote.rs`).
#[derive(Clone)]
enum Conn {
    Local(Rc<Handle>),
    Remote(Rc<Remote>),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("host", &self.config().host())
            .field("port", &self.config().port())
            .field("unix_path", &self.config().unix_path())
            .field("resp3", &self.is_resp3())
            .field("remote", &self.is_remote())
            .field("broken", &self.is_broken())
            .finish()
    }
}

impl Connection {
    /// Connects, authenticates, selects the database, and starts the
    /// connection's reader and writer tasks on the current worker.
    pub async fn connect(cfg: &Config) -> Result<Connection> {
        let (stream, dec, resp3) = dial(cfg).await?;
        let stream = Rc::new(stream);
        let shared = Rc::new(Shared {
            mux: RefCell::new(Mux::new(cfg.max_in_flight_commands())),
            cfg: cfg.clone(),
            resp3,
            dead: Arc::new(AtomicBool::new(false)),
            link: stream.clone(),
        });
        rt::spawn(reader(shared.clone(), stream.clone(), dec));
        rt::spawn(writer(shared.clone(), stream));
        Ok(Connection::from_handle(Rc::new(Handle {
            shared,
            export_id: std::cell::Cell::new(None),
            importers: Default::default(),
        })))
    }

    pub(crate) fn from_handle(handle: Rc<Handle>) -> Connection {
        Connection {
            conn: Conn::Local(handle),
        }
    }

    /// A handle other workers can use this connection through
    /// ([`Connection::import`]); `None` for an imported handle.
    pub fn export(&self) -> Option<Exported> {
        match &self.conn {
            Conn::Local(h) => Some(remote::export(h, &h.export_id)),
            Conn::Remote(_) => None,
        }
    }

    /// Whether other workers hold handles to this connection (always false
    /// for an imported one).
    pub(crate) fn used_elsewhere(&self) -> bool {
        match &self.conn {
            Conn::Local(h) => h.importers.any(),
            Conn::Remote(_) => false,
        }
    }

    /// This worker's handle to a connection another worker exported: its
    /// requests run on that connection, sent there by the owner's worker.
    pub fn import(exported: Exported) -> Connection {
        Connection {
            conn: Conn::Remote(Rc::new(Remote::import(exported))),
        }
    }

    /// Whether requests are delegated to another worker's connection.
    pub fn is_remote(&self) -> bool {
        matches!(self.conn, Conn::Remote(_))
    }

    /// [`connect`](Connection::connect) with a `redis://` URL.
    pub async fn open(url: &str) -> Result<Connection> {
        Connection::connect(&Config::from_url(url)?).await
    }

    fn shared(&self) -> &Shared {
        match &self.conn {
            Conn::Local(h) => &h.shared,
            Conn::Remote(_) => unreachable!("a local operation on an imported connection"),
        }
    }

    /// Whether the connection failed or was closed; a broken connection
    /// never recovers.
    pub fn is_broken(&self) -> bool {
        match &self.conn {
            Conn::Local(_) => self.shared().mux.borrow().is_broken(),
            Conn::Remote(r) => r.is_broken(),
        }
    }

    /// Whether the connection is usable, looking at its socket when
    /// nothing is owed on it: a server that went away while it sat idle
    /// (killed, restarted, a failover) left an end of stream the reader
    /// task may not have run to see yet, and a command written now would
    /// fail. Found here, the connection is failed before anyone uses it.
    /// One non-blocking syscall; none while replies are owed (the reader
    /// sees the end with them), none for an imported handle.
    pub fn poll_idle(&self) -> bool {
        let Conn::Local(_) = &self.conn else {
            return !self.is_broken();
        };
        let shared = self.shared();
        let mut mux = shared.mux.borrow_mut();
        if mux.is_broken() {
            return false;
        }
        if mux.pending() > 0 {
            return true;
        }
        let Some(e) = shared.link.closed_now() else {
            return true;
        };
        mux.fail(if e.kind() == io::ErrorKind::UnexpectedEof {
            closed_by_peer()
        } else {
            Error::from(e)
        });
        shared.dead.store(true, Ordering::Relaxed);
        false
    }

    /// The error that broke the connection, if one did.
    pub fn broken_reason(&self) -> Option<Error> {
        match &self.conn {
            Conn::Local(_) => self.shared().mux.borrow().broken_reason().cloned(),
            Conn::Remote(r) => r.is_broken().then_some(Error::Closed),
        }
    }

    /// Whether the server agreed to RESP3.
    pub fn is_resp3(&self) -> bool {
        match &self.conn {
            Conn::Local(_) => self.shared().resp3,
            Conn::Remote(r) => r.resp3,
        }
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &Config {
        match &self.conn {
            Conn::Local(_) => &self.shared().cfg,
            Conn::Remote(r) => &r.cfg,
        }
    }

    /// Counters: commands, flushes, waits for the in-flight cap, ... (zero
    /// for an imported connection: they are the owner's).
    pub fn stats(&self) -> ConnStats {
        match &self.conn {
            Conn::Local(_) => self.shared().mux.borrow().stats(),
            Conn::Remote(_) => ConnStats::default(),
        }
    }

    /// Requests whose replies are still owed (in flight or waiting; for an
    /// imported connection, this worker's delegated requests).
    pub fn pending(&self) -> usize {
        match &self.conn {
            Conn::Local(_) => self.shared().mux.borrow().pending(),
            Conn::Remote(r) => r.pending(),
        }
    }

    /// Whether this handle is the only one (no clones exist).
    pub fn is_exclusive(&self) -> bool {
        match &self.conn {
            Conn::Local(h) => Rc::strong_count(h) == 1,
            Conn::Remote(r) => Rc::strong_count(r) == 1,
        }
    }

    /// Sends a request of `commands` commands and waits for all its
    /// replies.
    pub(crate) async fn request(
        &self,
        commands: usize,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Reply> {
        if let Conn::Remote(r) = &self.conn {
            return r.request(commands, encode).await;
        }
        let shared = self.shared();
        let key = shared
            .mux
            .borrow_mut()
            .submit(commands, time::now(), encode)?;
        let fut = ReplyFuture {
            shared,
            key: Some(key),
        };
        match shared.cfg.response_timeout_value() {
            Some(d) => time::timeout(d, fut).await.map_err(|_| Error::Timeout)?,
            None => fut.await,
        }
    }

    /// One command of `argc` arguments, encoded by `f` straight into the
    /// output buffer.
    pub(crate) async fn call<T: FromValue>(
        &self,
        argc: usize,
        f: impl FnOnce(&mut Enc<'_>),
    ) -> Result<T> {
        let reply = self
            .request(1, |out| {
                let mut e = Enc::new(out, argc);
                f(&mut e);
            })
            .await?;
        match reply {
            // Even into `Value`: a typed command's error reply is an `Err`.
            Reply::One(v) => T::from_value(v.into_result()?),
            Reply::Many(_) => Err(Error::protocol("several replies to one command")),
        }
    }

    /// Sends any command and returns its raw reply; an error reply becomes
    /// `Err(Error::Server)`.
    ///
    /// ```no_run
    /// # async fn f(c: &tidepool_drivers::redis::Connection) -> tidepool_drivers::redis::Result<()> {
    /// use tidepool_drivers::redis::cmd;
    /// let v = c.cmd(["OBJECT", "ENCODING", "key"]).await?;
    /// let n: i64 = c.cmd_as(cmd("STRLEN").arg("key")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn cmd(&self, command: impl IntoCommand) -> Result<Value> {
        self.cmd_as(command).await
    }

    /// [`cmd`](Connection::cmd), converting the reply.
    pub async fn cmd_as<T: FromValue>(&self, command: impl IntoCommand) -> Result<T> {
        let mut probe = [0u8; 16];
        if let Some(name) = command_name(&command, &mut probe) {
            if is_subscriber_command(name) {
                return Err(Error::Usage(
                    "pub/sub and MONITOR need their own connection: use redis::PubSub".into(),
                ));
            }
        }
        match self.request(1, |out| command.encode_into(out)).await? {
            Reply::One(v) => T::from_value(v.into_result()?),
            Reply::Many(_) => Err(Error::protocol("several replies to one command")),
        }
    }
}

/// The command name, upper-cased, when it is short enough to matter.
fn command_name<'a>(command: &impl IntoCommand, buf: &'a mut [u8; 16]) -> Option<&'a [u8]> {
    let mut first = Vec::new();
    command.write_name(&mut first);
    let nl = first.iter().position(|&b| b == b'\n')?;
    let name = first.get(nl + 1..first.len().checked_sub(2)?)?;
    if name.len() > buf.len() {
        return None;
    }
    let out = &mut buf[..name.len()];
    out.copy_from_slice(name);
    out.make_ascii_uppercase();
    Some(out)
}

fn is_subscriber_command(name: &[u8]) -> bool {
    matches!(
        name,
        b"SUBSCRIBE"
            | b"PSUBSCRIBE"
            | b"SSUBSCRIBE"
            | b"UNSUBSCRIBE"
            | b"PUNSUBSCRIBE"
            | b"SUNSUBSCRIBE"
            | b"MONITOR"
    )
}

/// Waits for a request's slot; dropping it abandons the slot.
struct ReplyFuture<'a> {
    shared: &'a Shared,
    key: Option<usize>,
}

impl Future for ReplyFuture<'_> {
    type Output = Result<Reply>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Reply>> {
        let key = self.key.expect("polled after completion");
        let r = self.shared.mux.borrow_mut().poll_slot(key, cx);
        if r.is_ready() {
            self.key = None;
        }
        r
    }
}

impl Drop for ReplyFuture<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.shared.mux.borrow_mut().cancel(key);
        }
    }
}

async fn reader(shared: Rc<Shared>, stream: Rc<Link>, mut dec: Decoder) {
    let err = 'conn: loop {
        loop {
            match dec.decode() {
                Ok(Some(r)) => {
                    let res = shared.mux.borrow_mut().on_reply(r, time::now());
                    if let Err(e) = res {
                        break 'conn e;
                    }
                }
                Ok(None) => break,
                Err(e) => break 'conn e,
            }
        }
        // The multishot receive stays armed for the connection's life.
        let (res, buf) = stream.recv(dec.read_buf()).await;
        dec.filled(buf);
        match res {
            Ok(0) => break closed_by_peer(),
            Ok(_) => {}
            Err(e) => break Error::from(e),
        }
    };
    // After a close this is the writer's shutdown coming back, and the
    // connection is already unusable; `fail` only matters otherwise.
    shared.mux.borrow_mut().fail(err);
    shared.dead.store(true, Ordering::Relaxed);
    let _ = stream.shutdown(Shutdown::Both);
}

async fn writer(shared: Rc<Shared>, stream: Rc<Link>) {
    let mut spare = Vec::with_capacity(16 * 1024);
    loop {
        let more =
            std::future::poll_fn(|cx| shared.mux.borrow_mut().poll_output(&mut spare, cx)).await;
        if !more {
            break;
        }
        let (res, mut buf) = stream.write_all(std::mem::take(&mut spare)).await;
        if let Err(e) = res {
            shared.mux.borrow_mut().fail(e.into());
            shared.dead.store(true, Ordering::Relaxed);
            break;
        }
        buf.clear();
        if buf.capacity() > 1024 * 1024 {
            // One huge command should not pin its buffer for the
            // connection's lifetime.
            buf = Vec::with_capacity(16 * 1024);
        }
        spare = buf;
    }
    // Wakes the reader out of its pending read so both tasks end.
    let _ = stream.shutdown(Shutdown::Both);
}
