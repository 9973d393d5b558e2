//! TLS as a sans-IO layer over a connection's own buffers (rustls).
//!
//! A connection hands its [`Session`] the ciphertext it received and gets
//! the plaintext back; it hands it plaintext to send and takes the
//! ciphertext to write. Nothing here touches a socket and there is no
//! wrapper stream: the session lives with its connection, on the
//! connection's worker, and the ring (or epoll) moves the bytes exactly as
//! for a cleartext connection. Received ciphertext is fed to rustls from
//! the buffer it arrived in; records are decrypted in place and their
//! plaintext copied once, into the caller's buffer.
//!
//! `config.rs` builds the rustls configurations the drivers and the server
//! use: roots from a PEM file or the system's, and the three levels of
//! server verification PostgreSQL's `sslmode` names.

mod config;
mod handshake;

use std::io::{self, Read, Write};
use std::sync::Arc;

pub use config::{
    client_config, load_certs, load_key, server_config, Roots, ServerCert, TlsConfigError, Verify,
};
pub use handshake::{handshake, HandshakeError};
pub use rustls;
use rustls::pki_types::ServerName;

/// Why a TLS session failed.
#[derive(Debug, Clone)]
pub struct TlsError {
    message: String,
    /// A certificate was refused, or the peers share no protocol version,
    /// cipher or ALPN protocol: trying again cannot help.
    pub fatal: bool,
}

impl TlsError {
    pub fn new(message: impl Into<String>, fatal: bool) -> TlsError {
        TlsError {
            message: message.into(),
            fatal,
        }
    }
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TlsError {}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> TlsError {
        use rustls::Error as E;
        let fatal = matches!(
            e,
            E::InvalidCertificate(_)
                | E::NoCertificatesPresented
                | E::UnsupportedNameType
                | E::PeerIncompatible(_)
                | E::NoApplicationProtocol
                | E::AlertReceived(_)
        );
        let message = match &e {
            E::InvalidCertificate(c) => {
                format!("TLS: the peer's certificate was refused: {}", refusal(c))
            }
            other => format!("TLS: {other}"),
        };
        TlsError { message, fatal }
    }
}

/// Why a certificate was refused, in words an operator can act on, ending
/// with rustls' name for it in brackets.
fn refusal(c: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    let date = |t: &rustls::pki_types::UnixTime| {
        String::from_utf8_lossy(&crate::http::date::render(t.as_secs())).into_owned()
    };
    match c {
        C::ExpiredContext { time, not_after } => format!(
            "it expired on {} (the time here is {}) [Expired]",
            date(not_after),
            date(time)
        ),
        C::NotValidYetContext { time, not_before } => format!(
            "it is not valid before {} (the time here is {}) [NotValidYet]",
            date(not_before),
            date(time)
        ),
        C::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "it is not valid for the name {} (it names {}) [NotValidForName]",
            expected.to_str(),
            presented.join(", ")
        ),
        C::UnknownIssuer => {
            "its issuer is not among the trusted roots (the CA file, or the system's) \
             [UnknownIssuer]"
                .to_string()
        }
        other => format!("{other:?}"),
    }
}

/// One TLS connection's state: a client's or a server's.
pub struct Session {
    conn: rustls::Connection,
    peer_closed: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("handshaking", &self.conn.is_handshaking())
            .field("peer_closed", &self.peer_closed)
            .finish()
    }
}

impl Session {
    /// A client session to `name` (checked against the certificate when the
    /// configuration verifies names).
    pub fn client(
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Session, TlsError> {
        let mut conn = rustls::ClientConnection::new(config, name)?;
        // The connection bounds what it queues; rustls' own cap (64 KiB)
        // would make a larger write fail half-done.
        conn.set_buffer_limit(None);
        Ok(Session {
            conn: conn.into(),
            peer_closed: false,
        })
    }

    /// A server session (the certificate is chosen from the client's SNI).
    pub fn server(config: Arc<rustls::ServerConfig>) -> Result<Session, TlsError> {
        let mut conn = rustls::ServerConnection::new(config)?;
        conn.set_buffer_limit(None);
        Ok(Session {
            conn: conn.into(),
            peer_closed: false,
        })
    }

    /// Takes the ciphertext `data` received from the peer; appends the
    /// plaintext it carried to `plain`. On an error, the alert to send is
    /// queued (see [`Session::take_output`]) and the session is done.
    pub fn receive(&mut self, mut data: &[u8], plain: &mut Vec<u8>) -> Result<(), TlsError> {
        while !data.is_empty() {
            let n = self
                .conn
                .read_tls(&mut data)
                .map_err(|e| TlsError::new(format!("TLS: {e}"), false))?;
            let state = self.conn.process_new_packets()?;
            let ready = state.plaintext_bytes_to_read();
            if ready > 0 {
                let start = plain.len();
                plain.resize(start + ready, 0);
                self.conn
                    .reader()
                    .read_exact(&mut plain[start..])
                    .map_err(|e| TlsError::new(format!("TLS: {e}"), false))?;
            }
            if state.peer_has_closed() {
                self.peer_closed = true;
            }
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Queues `plain` to be sent encrypted (before the handshake ends, it
    /// waits for it).
    pub fn send(&mut self, plain: &[u8]) -> io::Result<()> {
        self.conn.writer().write_all(plain)
    }

    /// Appends what is ready to go to the peer (handshake messages,
    /// records, alerts) to `out`.
    pub fn take_output(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            // Writing into a Vec cannot fail.
            if self.conn.write_tls(out).is_err() {
                break;
            }
        }
    }

    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The peer sent `close_notify`: nothing more will come.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Queues `close_notify` (sent with the next [`Session::take_output`]).
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }

    /// The protocol chosen by ALPN, once the handshake has ended.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The server name the client asked for (a server session).
    pub fn server_name(&self) -> Option<&str> {
        match &self.conn {
            rustls::Connection::Server(s) => s.server_name(),
            rustls::Connection::Client(_) => None,
        }
    }

    /// The peer's own certificate (DER), once the handshake has ended.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref())
    }
}

#[cfg(test)]
mod tests;
