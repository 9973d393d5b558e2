//! The TLS handshake over one of the runtime's streams, for clients that
//! connect before they speak their own protocol (PostgreSQL after its
//! SSLRequest, Redis): the one piece of I/O glue beside the sans-IO
//! session.

use std::io;

use super::{Session, TlsError};
use crate::rt::net::TcpStream;

/// Why a handshake failed.
#[derive(Debug)]
pub enum HandshakeError {
    Io(io::Error),
    Tls(TlsError),
}

/// Runs `session`'s handshake on `stream` until it ends. Returns any
/// plaintext that arrived with the last handshake flight (a server that
/// speaks first). On a TLS error, the alert is sent (best effort) first.
pub async fn handshake(
    stream: &TcpStream,
    session: &mut Session,
) -> Result<Vec<u8>, HandshakeError> {
    let (mut out, mut plain) = (Vec::new(), Vec::new());
    loop {
        session.take_output(&mut out);
        if !out.is_empty() {
            let (r, mut sent) = stream.write_all(std::mem::take(&mut out)).await;
            r.map_err(HandshakeError::Io)?;
            sent.clear();
            out = sent;
        }
        if !session.is_handshaking() {
            return Ok(plain);
        }
        let (r, data) = stream.read(Vec::with_capacity(16 * 1024)).await;
        if r.map_err(HandshakeError::Io)? == 0 {
            return Err(HandshakeError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection during the TLS handshake",
            )));
        }
        if let Err(e) = session.receive(&data, &mut plain) {
            session.take_output(&mut out);
            let _ = stream.write_all(out).await;
            return Err(HandshakeError::Tls(e));
        }
    }
}
