//! The byte stream under a Redis connection: the socket, and for
//! `rediss://` the TLS session on it. Reads and writes keep the socket's
//! shape (owned buffers in, the same buffers back) so the reader, the
//! writer and pub/sub do not care which it is.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::Shutdown;

use tidepool_engine::rt::net::TcpStream;
use tidepool_engine::tls::{self, Session};

use super::config::Config;
use super::error::{Error, Result};

pub(crate) struct Link {
    stream: TcpStream,
    tls: Option<RefCell<Session>>,
    /// Ciphertext buffers kept between reads and writes.
    cipher_in: Cell<Vec<u8>>,
    cipher_out: Cell<Vec<u8>>,
}

/// How much ciphertext one read takes.
const CIPHER_CHUNK: usize = 16 * 1024;

impl Link {
    /// `stream`, encrypted when `cfg` says so (the handshake runs here).
    pub(crate) async fn open(stream: TcpStream, cfg: &Config) -> Result<Link> {
        let tls = match cfg.tls_config()? {
            None => None,
            Some(config) => {
                let name = tls::rustls::pki_types::ServerName::try_from(cfg.host().to_string())
                    .map_err(|e| {
                        Error::Config(format!("host {:?} as a TLS name: {e}", cfg.host()))
                    })?;
                let mut session = Session::client(config, name)?;
                let early = tls::handshake(&stream, &mut session).await?;
                if !early.is_empty() {
                    return Err(Error::Protocol("the server spoke first".into()));
                }
                Some(RefCell::new(session))
            }
        };
        Ok(Link {
            stream,
            tls,
            cipher_in: Cell::new(Vec::new()),
            cipher_out: Cell::new(Vec::new()),
        })
    }

    /// One read into `buf`'s spare room (appending); 0 means the peer is
    /// done. Over TLS, a read that brought only handshake records appends
    /// nothing but is not 0.
    pub(crate) async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        self.receive(buf, false).await
    }

    /// [`read`](Self::read) through the socket's armed (multishot) receive.
    pub(crate) async fn recv(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        self.receive(buf, true).await
    }

    async fn receive(&self, mut buf: Vec<u8>, armed: bool) -> (io::Result<usize>, Vec<u8>) {
        let Some(tls) = &self.tls else {
            return if armed {
                self.stream.recv(buf).await
            } else {
                self.stream.read(buf).await
            };
        };
        let mut cipher = self.cipher_in.take();
        cipher.clear();
        cipher.reserve(CIPHER_CHUNK);
        let (r, cipher) = if armed {
            self.stream.recv(cipher).await
        } else {
            self.stream.read(cipher).await
        };
        let out = match r {
            Ok(0) => Ok(0),
            Err(e) => Err(e),
            Ok(n) => {
                let mut s = tls.borrow_mut();
                let before = buf.len();
                match s.receive(&cipher, &mut buf) {
                    Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                    // close_notify: what came with it is delivered, then EOF.
                    Ok(()) if s.peer_closed() && buf.len() == before => Ok(0),
                    Ok(()) => Ok(n),
                }
            }
        };
        self.cipher_in.set(cipher);
        (out, buf)
    }

    /// Sends all of `buf` (encrypted over TLS); gives the buffer back.
    pub(crate) async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let Some(tls) = &self.tls else {
            return self.stream.write_all(buf).await;
        };
        let mut out = self.cipher_out.take();
        out.clear();
        {
            let mut s = tls.borrow_mut();
            if let Err(e) = s.send(&buf) {
                return (Err(e), buf);
            }
            s.take_output(&mut out);
        }
        let (r, mut out) = self.stream.write_all(out).await;
        out.clear();
        self.cipher_out.set(out);
        (r, buf)
    }

    /// Whether the server closed the socket or it failed, as far as the
    /// socket already knows (see `TcpStream::closed_now`); over TLS too,
    /// since the socket's end is seen behind records not yet read.
    pub(crate) fn closed_now(&self) -> Option<io::Error> {
        self.stream.closed_now()
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.stream.shutdown(how)
    }
}
