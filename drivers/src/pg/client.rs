//! The async client: drives a [`Protocol`] over a socket on the current
//! Tidepool worker's io_uring.
//!
//! Socket operations in flight are kept inside the client, not in the
//! caller's future: io_uring reads own their buffer, and dropping one in
//! flight could lose bytes already received. Because they live here, a caller
//! that gives up on a query (drops its future) leaves the stream intact; the
//! next call resumes the same read or write and skips the abandoned replies.

use std::future::{poll_fn, Future};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::frontend;
use tidepool_engine::rt::net::TcpStream;
use tidepool_engine::rt::time::{self, Sleep};

use super::config::{Config, Host, SslMode};
use super::error::{DbError, Error, Result};
use super::proto::{
    rows_affected, Notification, Protocol, ReqId, Response, SimpleQueryResult, TxStatus,
};
use super::row::Row;
use super::startup::BackendKey;
use super::stmt_cache::{Statement, StmtCache};
use super::types::ToSql;
use crate::pool::AtomicHistogram;
use tidepool_engine::tls::{self, Session};

type IoFuture = Pin<Box<dyn Future<Output = (io::Result<usize>, Vec<u8>)>>>;

/// Bytes requested per socket read.
const READ_CHUNK: usize = 64 * 1024;
/// COPY FROM STDIN data is flushed once this much is buffered.
const COPY_FLUSH: usize = 64 * 1024;

/// Where a cancel request must go: the server the session runs on.
#[derive(Debug, Clone)]
enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// The SSLRequest, then the TLS handshake, on a freshly opened stream.
/// `None`: the server declined and `sslmode` allows cleartext.
async fn negotiate_tls(stream: &TcpStream, cfg: &Config, host: &str) -> Result<Option<Session>> {
    let mut msg = BytesMut::new();
    frontend::ssl_request(&mut msg);
    let (r, _) = stream.write_all(msg.to_vec()).await;
    r?;
    let (r, answer) = stream.read(Vec::with_capacity(16)).await;
    r?;
    match answer.as_slice() {
        [b'S'] => {}
        [b'N'] if cfg.sslmode == SslMode::Prefer => return Ok(None),
        [b'N'] => {
            return Err(Error::Tls {
                message: format!(
                    "server does not support SSL, and sslmode={}",
                    sslmode_name(cfg.sslmode)
                ),
                fatal: true,
            })
        }
        // Anything after the one-byte answer was sent in the clear before
        // encryption began: someone in the middle (CVE-2021-23222).
        [b'S' | b'N', ..] => {
            return Err(Error::protocol(
                "the server sent unencrypted data after its SSL answer",
            ))
        }
        [] => return Err(Error::Io(io::ErrorKind::UnexpectedEof.into())),
        _ => return Err(Error::protocol("bad answer to SSLRequest")),
    }
    let verify = match cfg.sslmode {
        SslMode::VerifyFull => tls::Verify::Full,
        SslMode::VerifyCa => tls::Verify::Chain,
        // As libpq: `require` with a root certificate checks the chain.
        SslMode::Require if cfg.sslrootcert.is_some() => tls::Verify::Chain,
        _ => tls::Verify::Nothing,
    };
    let config = cfg.tls_config(verify)?;
    let name = tls::rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| Error::Config(format!("host {host:?} as a TLS server name: {e}")))?;
    let mut session = Session::client(config, name)?;
    let early = tls::handshake(stream, &mut session)
        .await
        .map_err(|e| match e {
            tls::HandshakeError::Io(e) => Error::Io(e),
            tls::HandshakeError::Tls(e) => e.into(),
        })?;
    if !early.is_empty() {
        return Err(Error::protocol(
            "the server spoke before the startup message",
        ));
    }
    Ok(Some(session))
}

fn sslmode_name(m: SslMode) -> &'static str {
    match m {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}

/// `tls-server-end-point` (RFC 5929): the certificate's hash with the
/// hash function of its signature, SHA-256 for MD5 and SHA-1. Recognised
/// by the signature algorithm's OID in the DER (it appears twice in every
/// certificate; SHA-384 and SHA-512 signatures are the rare others).
fn end_point_hash(cert: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    const SHA384: [&[u8]; 2] = [
        // sha384WithRSAEncryption, ecdsa-with-SHA384
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
    ];
    const SHA512: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
    ];
    let has = |oids: [&[u8]; 2]| oids.iter().any(|o| cert.windows(o.len()).any(|w| w == *o));
    if has(SHA512) {
        sha2::Sha512::digest(cert).to_vec()
    } else if has(SHA384) {
        sha2::Sha384::digest(cert).to_vec()
    } else {
        sha2::Sha256::digest(cert).to_vec()
    }
}

async fn open(target: &Target) -> io::Result<TcpStream> {
    match target {
        Target::Tcp(a) => TcpStream::connect(*a).await,
        Target::Unix(p) => TcpStream::connect_unix(p).await,
    }
}

/// Resolves the configured host. IP literals and `localhost` need no lookup;
/// other names go through the system resolver, which blocks: pools connect
/// rarely, but latency-sensitive setups should configure an address.
fn targets(cfg: &Config) -> Result<Vec<Target>> {
    match &cfg.host {
        Host::Unix(_) => Ok(vec![Target::Unix(
            cfg.unix_socket_path().expect("unix host"),
        )]),
        Host::Tcp(h) => {
            if let Ok(ip) = h.parse::<IpAddr>() {
                return Ok(vec![Target::Tcp(SocketAddr::new(ip, cfg.port))]);
            }
            if h.eq_ignore_ascii_case("localhost") {
                return Ok(vec![
                    Target::Tcp(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), cfg.port)),
                    Target::Tcp(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), cfg.port)),
                ]);
            }
            let addrs: Vec<Target> = (h.as_str(), cfg.port)
                .to_socket_addrs()
                .map_err(Error::Io)?
                .map(Target::Tcp)
                .collect();
            if addrs.is_empty() {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no address for host {h}"),
                )));
            }
            Ok(addrs)
        }
    }
}

/// Sends a CancelRequest for `key` over a new connection to `target` and
/// waits for the server to close it (which it does once the signal is sent).
async fn send_cancel(target: &Target, key: BackendKey) -> io::Result<()> {
    let s = open(target).await?;
    let mut msg = BytesMut::with_capacity(16);
    frontend::cancel_request(key.process_id, key.secret_key, &mut msg);
    let (r, _) = s.write_all(msg.to_vec()).await;
    r?;
    let mut buf = Vec::with_capacity(64);
    loop {
        let (r, b) = s.read(buf).await;
        buf = b;
        buf.clear();
        if r? == 0 {
            return Ok(());
        }
    }
}

/// Socket counters, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Send operations issued (a pipelined batch is one when it fits the socket).
    pub writes: u64,
    /// Receive operations completed.
    pub reads: u64,
    /// Statements the server failed, integrity violations (SQLSTATE class
    /// 23, the application's own conflicts) excepted: what a pool's
    /// supervisor reads as "the database is failing".
    pub failed: u64,
    /// Statements that ran past the query timeout.
    pub timed_out: u64,
}

impl Stats {
    /// Counts a statement's outcome (see the fields).
    pub(crate) fn record<T>(&mut self, r: &Result<T>) {
        match r {
            Err(Error::Timeout) => self.timed_out += 1,
            Err(Error::Db(db)) if !db.code.starts_with("23") => self.failed += 1,
            _ => {}
        }
    }
}

/// A handle that cancels the statement currently running on a client's session.
#[derive(Debug, Clone)]
pub struct CancelToken {
    target: Target,
    key: BackendKey,
}

impl CancelToken {
    /// Asks the server to cancel whatever the session runs now (best effort,
    /// as in libpq: the statement may finish first).
    pub async fn cancel(&self) -> Result<()> {
        send_cancel(&self.target, self.key).await.map_err(Error::Io)
    }
}

/// Why [`Client::drive`] returned.
enum Drive {
    Done,
    TimedOut,
    Dead,
}

/// Anything that names a statement: SQL text or a prepared [`Statement`].
pub trait AsQuery {
    fn sql(&self) -> &str;
}

impl AsQuery for str {
    fn sql(&self) -> &str {
        self
    }
}
impl AsQuery for String {
    fn sql(&self) -> &str {
        self
    }
}
impl AsQuery for Statement {
    fn sql(&self) -> &str {
        Statement::sql(self)
    }
}
impl<T: AsQuery + ?Sized> AsQuery for &T {
    fn sql(&self) -> &str {
        (**self).sql()
    }
}

/// Rows and command tag of one statement.
#[derive(Debug)]
pub struct QueryResult {
    pub rows: Vec<Row>,
    pub tag: String,
}

impl QueryResult {
    pub fn rows_affected(&self) -> u64 {
        rows_affected(&self.tag)
    }
}

/// A connection to PostgreSQL that lives on the current worker.
///
/// Not `Send`: it belongs to the worker whose ring it uses. Methods take
/// `&mut self`, so one operation runs at a time; use [`Client::pipeline`] to
/// put many statements in one round trip.
pub struct Client {
    pub(super) proto: Protocol,
    stream: TcpStream,
    /// With `sslmode` other than `disable` and a server that accepted:
    /// the protocol's bytes go through it (plaintext in `tls_plain`).
    tls: Option<Box<Session>>,
    tls_plain: Vec<u8>,
    target: Target,
    rbuf: Option<Vec<u8>>,
    read: Option<IoFuture>,
    wbuf: Option<Vec<u8>>,
    wpos: usize,
    write: Option<IoFuture>,
    pub(super) cache: StmtCache,
    /// Statements evicted from the cache, closed with the next request.
    to_close: Vec<String>,
    /// Statements to run before the next request (rollbacks of dropped transactions).
    cleanup: Vec<String>,
    /// A COPY FROM STDIN whose writer was dropped unfinished.
    copy_in_open: bool,
    copy_out_active: bool,
    query_timeout: Option<Duration>,
    cancel_drain_timeout: Duration,
    pub(super) stats: Stats,
    /// Where statement latencies go (send to reply), when a pool asked.
    pub(crate) latency: Option<Arc<AtomicHistogram>>,
}

impl Client {
    /// Connects and authenticates (trust, cleartext, md5 or SCRAM-SHA-256).
    pub async fn connect(cfg: &Config) -> Result<Client> {
        match cfg.connect_timeout {
            Some(t) => time::timeout(t, Self::connect_inner(cfg))
                .await
                .map_err(|_| Error::Timeout)?,
            None => Self::connect_inner(cfg).await,
        }
    }

    /// Parses `url` and connects.
    pub async fn connect_url(url: &str) -> Result<Client> {
        Self::connect(&Config::from_url(url)?).await
    }

    async fn connect_inner(cfg: &Config) -> Result<Client> {
        let mut last = None;
        let mut conn = None;
        for t in targets(cfg)? {
            match open(&t).await {
                Ok(s) => {
                    conn = Some((s, t));
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let (mut stream, target) = match conn {
            Some(c) => c,
            None => return Err(Error::Io(last.expect("at least one target"))),
        };
        let tls = match (&cfg.host, &target) {
            (Host::Tcp(host), Target::Tcp(_)) if cfg.sslmode != SslMode::Disable => {
                match negotiate_tls(&stream, cfg, host).await {
                    Ok(tls) => tls,
                    // As libpq: `prefer` asks for encryption, not for a
                    // working handshake; when the handshake fails it tries
                    // again in cleartext, on a new connection.
                    Err(Error::Tls { .. }) if cfg.sslmode == SslMode::Prefer => {
                        stream = open(&target).await?;
                        None
                    }
                    Err(e) => return Err(e),
                }
            }
            // Never over a Unix socket (as libpq).
            _ => None,
        };
        let mut proto = Protocol::connect(cfg)?;
        if let Some(hash) = tls
            .as_ref()
            .and_then(|t| t.peer_certificate())
            .map(end_point_hash)
        {
            proto.set_channel_binding(hash);
        }
        let mut c = Client {
            proto,
            stream,
            tls: tls.map(Box::new),
            tls_plain: Vec::new(),
            target,
            rbuf: Some(Vec::with_capacity(READ_CHUNK)),
            read: None,
            wbuf: Some(Vec::with_capacity(4096)),
            wpos: 0,
            write: None,
            cache: StmtCache::new(cfg.statement_cache_size),
            to_close: Vec::new(),
            cleanup: Vec::new(),
            copy_in_open: false,
            copy_out_active: false,
            query_timeout: cfg.query_timeout,
            cancel_drain_timeout: cfg.cancel_drain_timeout,
            stats: Stats::default(),
            latency: None,
        };
        match c.drive(|c| c.proto.is_ready(), None).await {
            Drive::Done => Ok(c),
            _ => Err(c.proto.take_fatal().unwrap_or(Error::Closed)),
        }
    }

    // ------------------------------------------------------------------ I/O

    /// Advances the socket operations once; true when something completed.
    pub(super) fn poll_io(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progressed = false;
        if self.write.is_none() && !self.proto.is_dead() {
            let buf = self.wbuf.as_mut().expect("no write in flight");
            if self.wpos >= buf.len() {
                buf.clear();
                self.wpos = 0;
                match self.tls.as_mut() {
                    None => self.proto.take_output(buf),
                    Some(tls) => {
                        let plain = &mut self.tls_plain;
                        plain.clear();
                        self.proto.take_output(plain);
                        if !plain.is_empty() {
                            // Into rustls' buffer: it cannot fail.
                            let _ = tls.send(plain);
                        }
                        // Records, and whatever TLS itself has to say.
                        tls.take_output(buf);
                    }
                }
            }
            if self.wpos < buf.len() {
                let buf = self.wbuf.take().expect("checked");
                self.write = Some(Box::pin(self.stream.write_from(buf, self.wpos)));
                self.stats.writes += 1;
            }
        }
        if let Some(w) = self.write.as_mut() {
            if let Poll::Ready((res, buf)) = w.as_mut().poll(cx) {
                self.write = None;
                self.wbuf = Some(buf);
                progressed = true;
                match res {
                    Ok(0) => self.proto.fail(Error::Io(io::ErrorKind::WriteZero.into())),
                    Ok(n) => self.wpos += n,
                    Err(e) => self.proto.fail(Error::Io(e)),
                }
            }
        }
        if self.read.is_none() && !self.proto.is_dead() {
            let mut buf = self.rbuf.take().expect("no read in flight");
            buf.clear();
            buf.reserve(READ_CHUNK);
            self.read = Some(Box::pin(self.stream.read(buf)));
        }
        if let Some(r) = self.read.as_mut() {
            if let Poll::Ready((res, buf)) = r.as_mut().poll(cx) {
                self.read = None;
                progressed = true;
                self.stats.reads += 1;
                match res {
                    Ok(0) => self.proto.fail(Error::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ))),
                    Ok(_) => self.received(&buf),
                    Err(e) => self.proto.fail(Error::Io(e)),
                }
                self.rbuf = Some(buf);
                if !self.copy_out_active {
                    self.proto.discard_copy_chunks();
                }
            }
        }
        progressed
    }

    /// Bytes from the socket: to the protocol, through TLS when it is on.
    fn received(&mut self, data: &[u8]) {
        let Some(tls) = self.tls.as_mut() else {
            self.proto.receive(data);
            return;
        };
        let plain = &mut self.tls_plain;
        plain.clear();
        let r = tls.receive(data, plain);
        if !plain.is_empty() {
            self.proto.receive(plain);
        }
        match r {
            Err(e) => self.proto.fail(e.into()),
            Ok(()) if tls.peer_closed() => self.proto.fail(Error::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the TLS session",
            ))),
            Ok(()) => {}
        }
    }

    /// Runs socket I/O until `done` holds, the connection dies, or `deadline` passes.
    async fn drive(
        &mut self,
        mut done: impl FnMut(&mut Client) -> bool,
        deadline: Option<Instant>,
    ) -> Drive {
        let mut sleep: Option<Sleep> = deadline.map(time::sleep_until);
        poll_fn(|cx| loop {
            if done(self) {
                return Poll::Ready(Drive::Done);
            }
            if self.proto.is_dead() {
                return Poll::Ready(Drive::Dead);
            }
            if !self.poll_io(cx) {
                if let Some(s) = sleep.as_mut() {
                    if Pin::new(s).poll(cx).is_ready() {
                        return Poll::Ready(Drive::TimedOut);
                    }
                }
                return Poll::Pending;
            }
        })
        .await
    }

    pub(super) fn flushed(&self) -> bool {
        self.write.is_none()
            && !self.proto.has_output()
            && !self.tls.as_ref().is_some_and(|t| t.wants_write())
            && self.wbuf.as_ref().is_some_and(|b| self.wpos >= b.len())
    }

    // ------------------------------------------------------------------ request plumbing

    fn deadline(&self) -> Option<Instant> {
        self.query_timeout.map(|t| Instant::now() + t)
    }

    /// Readies the connection for a new operation: finishes what dropped
    /// guards left behind, pipelined in front of the new request.
    pub(super) fn begin(&mut self) -> Result<()> {
        if self.proto.is_dead() {
            return Err(Error::Closed);
        }
        if self.copy_in_open {
            // Harmless if the server already left copy mode: it ignores stray
            // copy messages outside COPY.
            self.proto.copy_fail("COPY abandoned by the client");
            self.copy_in_open = false;
        }
        self.copy_out_active = false;
        self.proto.discard_copy_chunks();
        for sql in std::mem::take(&mut self.cleanup) {
            self.proto.simple_query(&sql)?;
        }
        Ok(())
    }

    pub(super) fn queue_closes(&mut self) {
        for name in std::mem::take(&mut self.to_close) {
            // Replies are skipped by `wait` like any request nobody waits for.
            let _ = self.proto.close_statement(&name);
        }
    }

    /// Discards replies of requests queued before `id`; returns `id`'s reply if it arrived.
    fn take_reply(&mut self, id: ReqId, first_err: &mut Option<Error>) -> Option<Result<Response>> {
        while let Some((rid, r)) = self.proto.poll_response() {
            if rid == id {
                // When the connection died, the real cause went to the oldest
                // request, which may have been an abandoned one.
                return Some(match (r, first_err.take()) {
                    (Err(Error::Closed), Some(e)) => Err(e),
                    (r, _) => r,
                });
            }
            if rid > id {
                return Some(Err(Error::protocol(
                    "reply for a request that was not pending",
                )));
            }
            if let Err(e) = r {
                if e.is_broken() && first_err.is_none() {
                    *first_err = Some(e);
                }
            }
        }
        None
    }

    /// Waits for the reply to request `id`. On `deadline` the running statement
    /// is cancelled and the connection drained (see [`Client::timed_out`]).
    async fn wait(&mut self, id: ReqId, deadline: Option<Instant>) -> Result<Response> {
        // The request is written by the wait's first loop turn: from here
        // to the reply is the statement's round trip (for a pipeline, the
        // first statement's; later ones count from the reply before).
        let since = time::now();
        let r = self.wait_reply(id, deadline).await;
        self.stats.record(&r);
        if let Some(h) = &self.latency {
            if !matches!(r, Err(ref e) if e.is_broken()) {
                h.record(time::now().saturating_duration_since(since));
            }
        }
        r
    }

    async fn wait_reply(&mut self, id: ReqId, deadline: Option<Instant>) -> Result<Response> {
        let mut first_err = None;
        loop {
            if let Some(r) = self.take_reply(id, &mut first_err) {
                return r;
            }
            if self.proto.is_dead() {
                return Err(first_err
                    .or_else(|| self.proto.take_fatal())
                    .unwrap_or(Error::Closed));
            }
            if let Drive::TimedOut = self.drive(|c| c.proto.has_response(), deadline).await {
                return Err(self.timed_out(id).await);
            }
        }
    }

    /// Cancels the statement running on the server (over a side connection,
    /// with the BackendKeyData) and reads until request `id` completes, so the
    /// connection stays usable. If that takes longer than the drain timeout
    /// the connection is declared broken.
    async fn timed_out(&mut self, id: ReqId) -> Error {
        let drain_deadline = Instant::now() + self.cancel_drain_timeout;
        if let Some(key) = self.proto.backend_key() {
            let _ = time::timeout_at(drain_deadline, send_cancel(&self.target, key)).await;
        }
        let mut first_err = None;
        loop {
            if self.take_reply(id, &mut first_err).is_some() || self.proto.is_dead() {
                return Error::Timeout;
            }
            if let Drive::TimedOut = self
                .drive(|c| c.proto.has_response(), Some(drain_deadline))
                .await
            {
                self.proto.fail(Error::Timeout);
                return Error::Timeout;
            }
        }
    }

    /// The cached statement for `sql`, preparing it on a miss.
    async fn statement(&mut self, sql: &str, deadline: Option<Instant>) -> Result<Statement> {
        if let Some(s) = self.cache.get(sql) {
            return Ok(s);
        }
        let (name, id) = self.queue_prepare(sql)?;
        match self.wait(id, deadline).await? {
            Response::Prepared { params, columns } => {
                Ok(self.cache_insert(Statement::new(name, sql.to_string(), params, columns)))
            }
            _ => Err(Error::protocol("unexpected reply to Parse")),
        }
    }

    /// Queues Parse + Describe for `sql` under a fresh name, making room in
    /// the cache first (evicted statements are closed in the same batch).
    pub(super) fn queue_prepare(&mut self, sql: &str) -> Result<(String, ReqId)> {
        let evicted = self.cache.make_room();
        self.to_close
            .extend(evicted.iter().map(|s| s.name().to_string()));
        let name = self.cache.next_name();
        let id = self.proto.prepare(&name, sql, &[])?;
        self.queue_closes();
        Ok((name, id))
    }

    pub(super) fn cache_insert(&mut self, st: Statement) -> Statement {
        let evicted = self.cache.insert(st.clone());
        self.to_close
            .extend(evicted.iter().map(|s| s.name().to_string()));
        st
    }

    /// After "prepared statement does not exist" (26000) or "cached plan must
    /// not change result type" (0A000) the cached statement is dropped;
    /// returns whether re-preparing and retrying is safe (no transaction
    /// block was aborted by the error).
    pub(super) fn stale(&mut self, e: &Error, sql: &str) -> bool {
        self.stale_if(e, sql, None)
    }

    /// [`Client::stale`] for a statement that other callers share: the
    /// cache entry goes only if it still is `failed`, since another caller
    /// may already have prepared its successor.
    pub(super) fn stale_statement(&mut self, e: &Error, failed: &Statement) -> bool {
        self.stale_if(e, failed.sql(), Some(failed.name()))
    }

    fn stale_if(&mut self, e: &Error, sql: &str, name: Option<&str>) -> bool {
        let Some(db) = e.as_db() else {
            return false;
        };
        let stale = db.code == "26000"
            || (db.code == "0A000"
                && db
                    .message
                    .contains("cached plan must not change result type"));
        if !stale {
            return false;
        }
        let current = self.cache.peek(sql).map(|s| s.name().to_string());
        if name.is_none() || current.as_deref() == name {
            if let Some(st) = self.cache.remove(sql) {
                if db.code == "0A000" {
                    self.to_close.push(st.name().to_string());
                }
            }
        }
        self.proto.tx_status() == TxStatus::Idle
    }

    async fn run(&mut self, sql: &str, params: &[&dyn ToSql]) -> Result<QueryResult> {
        self.begin()?;
        let deadline = self.deadline();
        let mut retried = false;
        loop {
            let st = self.statement(sql, deadline).await?;
            let id = self.proto.execute(&st, params)?;
            self.queue_closes();
            match self.wait(id, deadline).await {
                Ok(Response::Rows { rows, tag }) => return Ok(QueryResult { rows, tag }),
                Ok(_) => return Err(Error::protocol("unexpected reply to Execute")),
                Err(e) if !retried && self.stale(&e, sql) => retried = true,
                Err(e) => return Err(e),
            }
        }
    }

    // ------------------------------------------------------------------ public API

    /// Runs a statement with binary parameters; returns all rows.
    /// Statements are prepared once and cached per connection.
    pub async fn query<Q: AsQuery + ?Sized>(
        &mut self,
        q: &Q,
        params: &[&dyn ToSql],
    ) -> Result<Vec<Row>> {
        Ok(self.run(q.sql(), params).await?.rows)
    }

    /// Like [`Client::query`], also returning the command tag.
    pub async fn query_result<Q: AsQuery + ?Sized>(
        &mut self,
        q: &Q,
        params: &[&dyn ToSql],
    ) -> Result<QueryResult> {
        self.run(q.sql(), params).await
    }

    /// Exactly one row, else `Error::Usage`.
    pub async fn query_one<Q: AsQuery + ?Sized>(
        &mut self,
        q: &Q,
        params: &[&dyn ToSql],
    ) -> Result<Row> {
        one_row(self.query(q, params).await?)
    }

    /// Zero or one row, else `Error::Usage`.
    pub async fn query_opt<Q: AsQuery + ?Sized>(
        &mut self,
        q: &Q,
        params: &[&dyn ToSql],
    ) -> Result<Option<Row>> {
        opt_row(self.query(q, params).await?)
    }

    /// Runs a statement; returns the number of rows it affected.
    pub async fn execute<Q: AsQuery + ?Sized>(
        &mut self,
        q: &Q,
        params: &[&dyn ToSql],
    ) -> Result<u64> {
        Ok(self.run(q.sql(), params).await?.rows_affected())
    }

    /// Prepares (and caches) a statement, exposing its parameter and column types.
    pub async fn prepare(&mut self, sql: &str) -> Result<Statement> {
        self.begin()?;
        let deadline = self.deadline();
        self.statement(sql, deadline).await
    }

    /// Runs one or more `;`-separated statements over the simple protocol;
    /// values come back as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<SimpleQueryResult>> {
        self.begin()?;
        let deadline = self.deadline();
        let id = self.proto.simple_query(sql)?;
        self.queue_closes();
        match self.wait(id, deadline).await? {
            Response::Simple(r) => Ok(r),
            _ => Err(Error::protocol("unexpected reply to Query")),
        }
    }

    /// Runs `;`-separated statements, discarding their results.
    pub async fn batch_execute(&mut self, sql: &str) -> Result<()> {
        self.simple_query(sql).await.map(drop)
    }

    /// Starts a transaction block; see [`Transaction`].
    pub async fn transaction(&mut self) -> Result<Transaction<'_>> {
        self.transaction_with("BEGIN").await
    }

    /// Starts a transaction with a custom statement, e.g.
    /// `BEGIN ISOLATION LEVEL SERIALIZABLE`.
    pub async fn transaction_with(&mut self, begin: &str) -> Result<Transaction<'_>> {
        self.batch_execute(begin).await?;
        Ok(Transaction {
            client: self,
            savepoint: None,
            done: false,
        })
    }

    /// Collects statements to send in one write and read back in order.
    pub fn pipeline<'p>(&mut self) -> Pipeline<'_, 'p> {
        Pipeline {
            client: self,
            items: Vec::new(),
        }
    }

    /// Starts `COPY ... FROM STDIN`.
    pub async fn copy_in(&mut self, sql: &str) -> Result<CopyIn<'_>> {
        self.begin()?;
        let deadline = self.deadline();
        let id = self.proto.copy_in(sql)?;
        self.copy_in_open = true;
        self.queue_closes();
        let mut first_err = None;
        loop {
            if self.proto.copy_in_ready(id) {
                return Ok(CopyIn {
                    client: self,
                    id,
                    failed: false,
                });
            }
            if let Some(r) = self.take_reply(id, &mut first_err) {
                self.copy_in_open = false;
                r?;
                return Err(Error::Usage("not a COPY FROM STDIN statement".into()));
            }
            if self.proto.is_dead() {
                return Err(first_err
                    .or_else(|| self.proto.take_fatal())
                    .unwrap_or(Error::Closed));
            }
            let ready = |c: &mut Client| c.proto.copy_in_ready(id) || c.proto.has_response();
            if let Drive::TimedOut = self.drive(ready, deadline).await {
                self.copy_in_open = false;
                self.proto.copy_fail("timed out");
                return Err(self.timed_out(id).await);
            }
        }
    }

    /// Starts `COPY ... TO STDOUT`; read the data with [`CopyOut::next`].
    pub async fn copy_out(&mut self, sql: &str) -> Result<CopyOut<'_>> {
        self.begin()?;
        let id = self.proto.copy_out(sql)?;
        self.queue_closes();
        self.copy_out_active = true;
        Ok(CopyOut {
            deadline: self.deadline(),
            client: self,
            id,
            done: false,
        })
    }

    /// Notifications received so far (LISTEN/NOTIFY), oldest first.
    pub fn take_notifications(&mut self) -> Vec<Notification> {
        self.proto.take_notifications().collect()
    }

    /// Waits for a notification; `None` when `timeout` passes first.
    pub async fn wait_for_notification(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<Notification>> {
        if self.proto.is_dead() {
            return Err(Error::Closed);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(n) = self.proto.pop_notification() {
                return Ok(Some(n));
            }
            // Replies of abandoned requests may arrive meanwhile: skip them.
            while self.proto.poll_response().is_some() {}
            match self
                .drive(
                    |c| c.proto.has_notification() || c.proto.has_response(),
                    deadline,
                )
                .await
            {
                Drive::Done => {}
                Drive::TimedOut => return Ok(None),
                Drive::Dead => return Err(self.proto.take_fatal().unwrap_or(Error::Closed)),
            }
        }
    }

    /// Notices (warnings, `RAISE NOTICE`) received so far; they are never errors.
    pub fn take_notices(&mut self) -> Vec<DbError> {
        self.proto.take_notices().collect()
    }

    /// True once the connection failed (I/O, protocol, FATAL, unrecoverable timeout).
    pub fn is_broken(&self) -> bool {
        self.proto.is_dead()
    }

    /// Takes in, without waiting, whatever the server sent while the
    /// connection sat idle, and says whether it is still usable. After a
    /// server restart or `pg_terminate_backend`, an idle connection holds
    /// a FATAL and an end of stream that nothing has read yet; handing it
    /// out would fail its caller's first query. One non-blocking `recv`;
    /// skipped while a read is already in flight (that read sees it).
    pub fn poll_idle(&mut self) -> bool {
        if self.proto.is_dead() || self.read.is_some() {
            return !self.proto.is_dead();
        }
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.recv_now(&mut buf) {
                Ok(0) => {
                    self.proto
                        .fail(Error::Io(io::ErrorKind::UnexpectedEof.into()));
                    return false;
                }
                Ok(n) => {
                    self.received(&buf[..n]);
                    if self.proto.is_dead() {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.proto.fail(Error::Io(e));
                    return false;
                }
            }
        }
    }

    /// Transaction state as of the last completed request.
    pub fn tx_status(&self) -> TxStatus {
        self.proto.tx_status()
    }

    /// True inside a transaction block, or when a dropped [`Transaction`] still
    /// owes a ROLLBACK. Pools should [`Client::reset`] such connections.
    pub fn in_transaction(&self) -> bool {
        !self.cleanup.is_empty() || self.proto.tx_status() != TxStatus::Idle
    }

    /// Ready for reuse as is: not broken, no transaction, nothing in flight.
    pub fn is_idle(&self) -> bool {
        !self.is_broken()
            && !self.in_transaction()
            && !self.copy_in_open
            && self.proto.in_flight() == 0
    }

    /// Brings the connection back to idle for a pool: finishes abandoned
    /// requests and rolls back any open transaction.
    pub async fn reset(&mut self) -> Result<()> {
        self.begin()?;
        let deadline = self.deadline();
        if self.proto.in_flight() > 0 {
            let id = self.proto.simple_query("")?;
            self.wait(id, deadline).await?;
        }
        if self.proto.tx_status() != TxStatus::Idle {
            self.batch_execute("ROLLBACK").await?;
        }
        Ok(())
    }

    /// Sets (or clears) the timeout applied to each following operation.
    pub fn set_query_timeout(&mut self, t: Option<Duration>) {
        self.query_timeout = t;
    }

    pub fn query_timeout(&self) -> Option<Duration> {
        self.query_timeout
    }

    /// A server parameter reported at startup or later (`server_version`, `TimeZone`, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.proto.parameter(name)
    }

    /// The server process serving this session.
    pub fn backend_pid(&self) -> Option<i32> {
        self.proto.backend_key().map(|k| k.process_id)
    }

    /// How the session authenticated: `trust`, `password`, `md5`,
    /// `scram-sha-256`, or `scram-sha-256-plus` (bound to the TLS channel).
    pub fn auth_method(&self) -> &'static str {
        self.proto.auth_method
    }

    /// Whether the session is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A token to cancel this session's running statement from elsewhere.
    pub fn cancel_token(&self) -> Option<CancelToken> {
        self.proto.backend_key().map(|key| CancelToken {
            target: self.target.clone(),
            key,
        })
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Number of prepared statements cached on this connection.
    pub fn cached_statements(&self) -> usize {
        self.cache.len()
    }

    /// Forgets (and closes on the server) every cached statement.
    pub fn clear_statement_cache(&mut self) {
        let names = self.cache.clear();
        self.to_close
            .extend(names.iter().map(|s| s.name().to_string()));
    }

    /// Sends Terminate and closes the socket.
    pub async fn close(mut self) -> Result<()> {
        if self.proto.is_dead() {
            return Ok(());
        }
        self.proto.terminate();
        let deadline = Some(Instant::now() + Duration::from_secs(1));
        self.drive(|c| c.flushed(), deadline).await;
        self.shut_down();
        Ok(())
    }

    /// Ends the session after a Terminate went out (or could not).
    pub(super) fn shut_down(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.proto.fail(Error::Closed);
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("target", &self.target)
            .field("broken", &self.is_broken())
            .field("tx_status", &self.tx_status())
            .field("in_flight", &self.proto.in_flight())
            .finish()
    }
}

/// Exactly one row, else `Error::Usage` (`query_one`).
pub(super) fn one_row(mut rows: Vec<Row>) -> Result<Row> {
    match rows.len() {
        1 => Ok(rows.pop().expect("one row")),
        n => Err(Error::Usage(format!("query_one: expected 1 row, got {n}"))),
    }
}

/// Zero or one row, else `Error::Usage` (`query_opt`).
pub(super) fn opt_row(mut rows: Vec<Row>) -> Result<Option<Row>> {
    match rows.len() {
        0 | 1 => Ok(rows.pop()),
        n => Err(Error::Usage(format!(
            "query_opt: expected at most 1 row, got {n}"
        ))),
    }
}

fn clone_err(e: &Error) -> Error {
    match e {
        Error::Db(d) => Error::Db(d.clone()),
        Error::Usage(m) => Error::Usage(m.clone()),
        Error::TypeMismatch {
            column,
            rust_type,
            pg_type,
        } => Error::TypeMismatch {
            column: column.clone(),
            rust_type,
            pg_type: pg_type.clone(),
        },
        Error::Timeout => Error::Timeout,
        Error::Closed => Error::Closed,
        e => Error::Usage(e.to_string()),
    }
}

// ---------------------------------------------------------------------- transactions

/// A transaction block (or a savepoint inside one). Derefs to the [`Client`]
/// for queries. Dropped without [`Transaction::commit`] it is rolled back:
/// the ROLLBACK is sent in front of the client's next request (Drop cannot
/// await), and [`Client::in_transaction`] reports it meanwhile.
pub struct Transaction<'a> {
    client: &'a mut Client,
    savepoint: Option<String>,
    done: bool,
}

impl Transaction<'_> {
    /// Commits (or releases the savepoint). A transaction that had failed is
    /// rolled back by the server's COMMIT; that is reported as an error.
    pub async fn commit(mut self) -> Result<()> {
        self.done = true;
        match &self.savepoint {
            Some(sp) => {
                let sql = format!("RELEASE SAVEPOINT {sp}");
                self.client.batch_execute(&sql).await
            }
            None => {
                let r = self.client.simple_query("COMMIT").await?;
                if r.first().is_some_and(|r| r.tag == "ROLLBACK") {
                    return Err(Error::Usage(
                        "COMMIT rolled back the transaction: a statement in it had failed".into(),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Rolls back (to the savepoint, for a nested transaction).
    pub async fn rollback(mut self) -> Result<()> {
        self.done = true;
        let sql = self.rollback_sql();
        self.client.batch_execute(&sql).await
    }

    fn rollback_sql(&self) -> String {
        match &self.savepoint {
            Some(sp) => format!("ROLLBACK TO SAVEPOINT {sp}; RELEASE SAVEPOINT {sp}"),
            None => "ROLLBACK".to_string(),
        }
    }

    /// A nested transaction as a savepoint named `name`.
    pub async fn savepoint(&mut self, name: &str) -> Result<Transaction<'_>> {
        let ident = postgres_protocol::escape::escape_identifier(name);
        self.client
            .batch_execute(&format!("SAVEPOINT {ident}"))
            .await?;
        Ok(Transaction {
            client: self.client,
            savepoint: Some(ident),
            done: false,
        })
    }
}

impl Deref for Transaction<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client
    }
}

impl DerefMut for Transaction<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            let sql = self.rollback_sql();
            self.client.cleanup.push(sql);
        }
    }
}

// ---------------------------------------------------------------------- pipelining

/// Statements sent together: one write for all of them, replies matched in
/// order. Statements not cached yet are prepared first, also in one batch,
/// so a pipeline costs one round trip when its statements are cached and two
/// otherwise. Each statement is its own implicit transaction (it has its own
/// Sync), so one failing does not stop the others.
pub struct Pipeline<'c, 'p> {
    client: &'c mut Client,
    items: Vec<(&'p str, Vec<&'p dyn ToSql>)>,
}

impl<'p> Pipeline<'_, 'p> {
    /// Adds a statement; returns its index in the results.
    pub fn query(&mut self, sql: &'p str, params: &[&'p dyn ToSql]) -> usize {
        self.items.push((sql, params.to_vec()));
        self.items.len() - 1
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Sends everything and collects one result per statement. The outer
    /// error is for the connection (broken, timed out); SQL and parameter
    /// errors are per statement.
    pub async fn run(self) -> Result<Vec<Result<QueryResult>>> {
        let Pipeline { client, items } = self;
        client.begin()?;
        let deadline = client.deadline();

        // Round trip 1 (only if needed): prepare every statement not cached.
        let mut stmts: Vec<(&str, Result<Statement>)> = Vec::new();
        let mut preparing: Vec<(usize, String, ReqId)> = Vec::new();
        for (sql, _) in &items {
            if stmts.iter().any(|(s, _)| s == sql) {
                continue;
            }
            match client.cache.get(sql) {
                Some(st) => stmts.push((sql, Ok(st))),
                None => {
                    let name = client.cache.next_name();
                    let id = client.proto.prepare(&name, sql, &[])?;
                    preparing.push((stmts.len(), name, id));
                    stmts.push((sql, Err(Error::Closed)));
                }
            }
        }
        client.queue_closes();
        for (i, name, id) in preparing {
            stmts[i].1 = match client.wait(id, deadline).await {
                Ok(Response::Prepared { params, columns }) => Ok(client.cache_insert(
                    Statement::new(name, stmts[i].0.to_string(), params, columns),
                )),
                Ok(_) => return Err(Error::protocol("unexpected reply to Parse")),
                Err(e) if e.is_broken() || matches!(e, Error::Timeout) => return Err(e),
                Err(e) => Err(e),
            };
        }

        // Round trip 2: every Bind/Execute/Sync in one write.
        let mut slots: Vec<std::result::Result<ReqId, Error>> = Vec::with_capacity(items.len());
        for (sql, params) in &items {
            let st = &stmts.iter().find(|(s, _)| s == sql).expect("collected").1;
            slots.push(match st {
                Ok(st) => client.proto.execute(st, params),
                Err(e) => Err(clone_err(e)),
            });
        }
        client.queue_closes();
        let mut out = Vec::with_capacity(items.len());
        for slot in slots {
            out.push(match slot {
                Ok(id) => match client.wait(id, deadline).await {
                    Ok(Response::Rows { rows, tag }) => Ok(QueryResult { rows, tag }),
                    Ok(_) => return Err(Error::protocol("unexpected reply to Execute")),
                    Err(e) if e.is_broken() || matches!(e, Error::Timeout) => return Err(e),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            });
        }

        // Statements invalidated server-side (schema change, DISCARD) are
        // re-prepared and retried one by one: rare, and never inside a
        // transaction block.
        for (i, (sql, params)) in items.iter().enumerate() {
            let retry = match &out[i] {
                Err(e) => client.stale(e, sql),
                Ok(_) => false,
            };
            if retry {
                out[i] = client.run(sql, params).await;
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------- COPY

/// Streams `COPY ... FROM STDIN` data; buffered data is sent every 64 KiB,
/// so memory stays bounded whatever the total size.
pub struct CopyIn<'a> {
    client: &'a mut Client,
    id: ReqId,
    failed: bool,
}

impl CopyIn<'_> {
    /// The server aborts a COPY on bad data before we finish sending: surface it.
    fn check(&mut self) -> Result<()> {
        if self.failed {
            return Err(Error::Usage("COPY already failed".into()));
        }
        let mut first_err = None;
        if let Some(r) = self.client.take_reply(self.id, &mut first_err) {
            self.failed = true;
            self.client.copy_in_open = false;
            r?;
            return Err(Error::protocol("COPY ended before CopyDone"));
        }
        if self.client.proto.is_dead() {
            self.failed = true;
            return Err(first_err.unwrap_or(Error::Closed));
        }
        Ok(())
    }

    /// Queues data (any split: rows may span calls), sending when the buffer
    /// is full. A send stalled past the query timeout cancels the COPY.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.check()?;
        self.client.proto.copy_data(data)?;
        if self.client.proto.output().len() >= COPY_FLUSH {
            let deadline = self.client.deadline();
            let sent = |c: &mut Client| c.flushed() || c.proto.has_response();
            if let Drive::TimedOut = self.client.drive(sent, deadline).await {
                self.failed = true;
                self.client.copy_in_open = false;
                self.client.proto.copy_fail("timed out");
                return Err(self.client.timed_out(self.id).await);
            }
            self.check()?;
        }
        Ok(())
    }

    /// Ends the data; returns the number of rows copied.
    pub async fn finish(mut self) -> Result<u64> {
        self.check()?;
        self.client.proto.copy_done();
        self.client.copy_in_open = false;
        self.failed = true;
        let deadline = self.client.deadline();
        match self.client.wait(self.id, deadline).await? {
            Response::Copy { tag } => Ok(rows_affected(&tag)),
            _ => Err(Error::protocol("unexpected reply to COPY")),
        }
    }

    /// Aborts the COPY; nothing is inserted.
    pub async fn abort(mut self, reason: &str) -> Result<()> {
        if self.failed {
            return Ok(());
        }
        self.client.proto.copy_fail(reason);
        self.client.copy_in_open = false;
        self.failed = true;
        let deadline = self.client.deadline();
        match self.client.wait(self.id, deadline).await {
            Err(e) if e.code() == Some("57014") => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Ok(()),
        }
    }
}

/// Reads `COPY ... TO STDOUT` data chunk by chunk; the socket is read only
/// when the previous data was consumed, so memory stays bounded.
pub struct CopyOut<'a> {
    client: &'a mut Client,
    id: ReqId,
    deadline: Option<Instant>,
    done: bool,
}

impl CopyOut<'_> {
    /// The next chunk (usually one row in text format), `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        let mut first_err = None;
        loop {
            if let Some(c) = self.client.proto.take_copy_chunk(self.id) {
                return Ok(Some(c));
            }
            if self.done {
                return Ok(None);
            }
            if let Some(r) = self.client.take_reply(self.id, &mut first_err) {
                self.done = true;
                self.client.copy_out_active = false;
                r?;
                continue;
            }
            if self.client.proto.is_dead() {
                self.done = true;
                return Err(first_err
                    .or_else(|| self.client.proto.take_fatal())
                    .unwrap_or(Error::Closed));
            }
            let more = |c: &mut Client| c.proto.has_copy_chunk() || c.proto.has_response();
            if let Drive::TimedOut = self.client.drive(more, self.deadline).await {
                self.done = true;
                self.client.copy_out_active = false;
                return Err(self.client.timed_out(self.id).await);
            }
        }
    }

    /// Reads everything that is left into one buffer.
    pub async fn read_all(&mut self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        while let Some(c) = self.next().await? {
            v.extend_from_slice(&c);
        }
        Ok(v)
    }
}
