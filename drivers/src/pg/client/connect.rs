//! Opening a session: the server's addresses in order, the SSLRequest and
//! TLS handshake, authentication; and the cancel request, sent to where
//! the session runs over a connection of its own.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tidepool_engine::rt::net::TcpStream;
use tidepool_engine::rt::time;
use tidepool_engine::tls::{self, Session};

use super::{Client, Drive, Stats, READ_CHUNK};
use crate::pg::config::{Config, Host, SslMode};
use crate::pg::error::{Error, Result};
use crate::pg::proto::Protocol;
use crate::pg::startup::BackendKey;
use crate::pg::stmt_cache::StmtCache;

/// Where a cancel request must go: the server the session runs on.
#[derive(Debug, Clone)]
pub(super) enum Target {
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
pub(super) async fn send_cancel(target: &Target, key: BackendKey) -> io::Result<()> {
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

impl Client {
    /// A token to cancel this session's running statement from elsewhere.
    pub fn cancel_token(&self) -> Option<CancelToken> {
        self.proto.backend_key().map(|key| CancelToken {
            target: self.target.clone(),
            key,
        })
    }

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
}
