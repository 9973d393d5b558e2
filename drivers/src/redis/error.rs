//! Error types of the Redis driver.

use std::fmt;
use std::io;
use std::sync::Arc;

/// The kind of an error reply, parsed from the first word of the server's
/// message (`WRONGTYPE Operation against a key ...` gives [`WrongType`]).
///
/// [`WrongType`]: ServerErrorKind::WrongType
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerErrorKind {
    /// Generic `ERR`.
    Err,
    /// `WRONGTYPE`: the key holds a value of another type.
    WrongType,
    /// `NOSCRIPT`: EVALSHA of a script the server has not cached.
    NoScript,
    /// `MOVED slot host:port` (cluster redirection).
    Moved { slot: u16, addr: String },
    /// `ASK slot host:port` (cluster redirection during resharding).
    Ask { slot: u16, addr: String },
    /// `LOADING`: the server is loading its dataset.
    Loading,
    /// `BUSY`: a script or function is running.
    Busy,
    /// `NOAUTH`: authentication required.
    NoAuth,
    /// `WRONGPASS`: wrong password or unknown/disabled ACL user.
    WrongPass,
    /// `NOPERM`: the ACL user may not run this command or touch this key.
    NoPerm,
    /// `EXECABORT`: the transaction was discarded because a queued command
    /// was rejected.
    ExecAbort,
    /// `NOPROTO`: the requested protocol version is not supported.
    NoProto,
    /// `READONLY`: write against a read-only replica.
    ReadOnly,
    /// `TRYAGAIN` (cluster, multi-key command during resharding).
    TryAgain,
    /// `MASTERDOWN`: the replica lost its link to the primary.
    MasterDown,
    /// Any other prefix, verbatim (`BUSYGROUP`, `NOGROUP`, ...).
    Other(String),
}

/// An error reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    kind: ServerErrorKind,
    message: String,
}

impl ServerError {
    /// Parses a full error line such as `WRONGTYPE Operation against ...`.
    pub fn parse(line: &str) -> ServerError {
        let (code, rest) = match line.find(' ') {
            Some(i) => (&line[..i], line[i + 1..].trim_start()),
            None => (line, ""),
        };
        let kind = match code {
            "ERR" => ServerErrorKind::Err,
            "WRONGTYPE" => ServerErrorKind::WrongType,
            "NOSCRIPT" => ServerErrorKind::NoScript,
            "LOADING" => ServerErrorKind::Loading,
            "BUSY" => ServerErrorKind::Busy,
            "NOAUTH" => ServerErrorKind::NoAuth,
            "WRONGPASS" => ServerErrorKind::WrongPass,
            "NOPERM" => ServerErrorKind::NoPerm,
            "EXECABORT" => ServerErrorKind::ExecAbort,
            "NOPROTO" => ServerErrorKind::NoProto,
            "READONLY" => ServerErrorKind::ReadOnly,
            "TRYAGAIN" => ServerErrorKind::TryAgain,
            "MASTERDOWN" => ServerErrorKind::MasterDown,
            "MOVED" | "ASK" => match parse_redirect(rest) {
                Some((slot, addr)) if code == "MOVED" => ServerErrorKind::Moved { slot, addr },
                Some((slot, addr)) => ServerErrorKind::Ask { slot, addr },
                None => ServerErrorKind::Other(code.to_owned()),
            },
            other => ServerErrorKind::Other(other.to_owned()),
        };
        ServerError {
            kind,
            message: line.to_owned(),
        }
    }

    /// The parsed kind.
    pub fn kind(&self) -> &ServerErrorKind {
        &self.kind
    }

    /// The whole line as the server sent it, code included.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The first word of the message (`ERR`, `WRONGTYPE`, ...).
    pub fn code(&self) -> &str {
        self.message.split(' ').next().unwrap_or("")
    }

    /// Whether the server rejected the command as unknown, which is how
    /// servers older than 6.0 answer `HELLO`.
    pub fn is_unknown_command(&self) -> bool {
        self.kind == ServerErrorKind::Err && self.message.contains("unknown command")
    }
}

fn parse_redirect(rest: &str) -> Option<(u16, String)> {
    let mut it = rest.split(' ');
    let slot = it.next()?.parse().ok()?;
    let addr = it.next()?.to_owned();
    Some((slot, addr))
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServerError {}

/// Everything that can go wrong talking to Redis.
///
/// Cloneable because one connection failure is handed to every command that
/// was waiting on that connection.
#[derive(Debug, Clone)]
pub enum Error {
    /// The server answered with an error reply.
    Server(ServerError),
    /// The socket failed (connect refused, reset, ...).
    Io(Arc<io::Error>),
    /// The server sent bytes that are not valid RESP, or a reply that makes
    /// no sense where it arrived.
    Protocol(String),
    /// The operation did not complete in the configured time.
    Timeout,
    /// The connection was closed or is broken; the command was not sent (or
    /// its fate is unknown and it was not re-sent).
    Closed,
    /// A reply was bigger than the configured maximum; it was read and
    /// discarded without being buffered.
    TooLarge {
        /// The configured maximum, in bytes.
        limit: usize,
    },
    /// A reply could not be converted into the requested Rust type.
    Type(String),
    /// A bad URL or configuration value.
    Config(String),
    /// The call is not allowed on this connection or in this state.
    Usage(String),
    /// TLS (`rediss://`) could not be set up or failed. `fatal`: the
    /// certificate was refused or the configuration is wrong, which a retry
    /// cannot fix.
    Tls { message: String, fatal: bool },
}

impl Error {
    /// Whether the connection that produced this error can no longer be
    /// used (a pool should drop it).
    ///
    /// A [`Timeout`](Error::Timeout) does not break a multiplexed
    /// connection: the late reply is read and discarded when it arrives.
    pub fn is_broken(&self) -> bool {
        matches!(
            self,
            Error::Io(_) | Error::Protocol(_) | Error::Closed | Error::Tls { .. }
        )
    }

    /// Whether retrying later (on a fresh connection when
    /// [`is_broken`](Error::is_broken)) may succeed: I/O failures such as a
    /// refused or reset connection, timeouts, and `LOADING`/`BUSY`-style
    /// server states.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Io(_) | Error::Timeout | Error::Closed => true,
            Error::Tls { fatal, .. } => !fatal,
            Error::Server(e) => matches!(
                e.kind,
                ServerErrorKind::Loading
                    | ServerErrorKind::Busy
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
            ),
            _ => false,
        }
    }

    /// The server error, if this is one.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            Error::Server(e) => Some(e),
            _ => None,
        }
    }

    /// The server error kind, if this is a server error.
    pub fn server_kind(&self) -> Option<&ServerErrorKind> {
        self.server_error().map(ServerError::kind)
    }

    pub(crate) fn protocol(msg: impl Into<String>) -> Error {
        Error::Protocol(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Server(e) => write!(f, "redis server error: {e}"),
            Error::Io(e) => write!(f, "redis I/O error: {e}"),
            Error::Protocol(m) => write!(f, "redis protocol error: {m}"),
            Error::Timeout => f.write_str("redis operation timed out"),
            Error::Closed => f.write_str("redis connection closed"),
            Error::TooLarge { limit } => {
                write!(f, "redis reply larger than the {limit}-byte limit")
            }
            Error::Type(m) => write!(f, "unexpected redis reply: {m}"),
            Error::Config(m) => write!(f, "invalid redis configuration: {m}"),
            Error::Usage(m) => write!(f, "redis driver misuse: {m}"),
            Error::Tls { message, .. } => write!(f, "redis {message}"),
        }
    }
}

impl From<tidepool_engine::tls::TlsError> for Error {
    fn from(e: tidepool_engine::tls::TlsError) -> Error {
        Error::Tls {
            message: e.to_string(),
            fatal: e.fatal,
        }
    }
}

impl From<tidepool_engine::tls::HandshakeError> for Error {
    fn from(e: tidepool_engine::tls::HandshakeError) -> Error {
        match e {
            tidepool_engine::tls::HandshakeError::Io(e) => e.into(),
            tidepool_engine::tls::HandshakeError::Tls(e) => e.into(),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Server(e) => Some(e),
            Error::Io(e) => Some(&**e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::TimedOut {
            return Error::Timeout;
        }
        Error::Io(Arc::new(e))
    }
}

impl From<ServerError> for Error {
    fn from(e: ServerError) -> Error {
        Error::Server(e)
    }
}

/// Result alias of the Redis driver.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kinds() {
        let k = |s| ServerError::parse(s).kind().clone();
        assert_eq!(k("ERR unknown command 'HELLO'"), ServerErrorKind::Err);
        assert_eq!(
            k("WRONGTYPE Operation against a key holding the wrong kind of value"),
            ServerErrorKind::WrongType
        );
        assert_eq!(k("NOSCRIPT No matching script."), ServerErrorKind::NoScript);
        assert_eq!(
            k("MOVED 3999 127.0.0.1:6381"),
            ServerErrorKind::Moved {
                slot: 3999,
                addr: "127.0.0.1:6381".into()
            }
        );
        assert_eq!(
            k("ASK 12 [::1]:7000"),
            ServerErrorKind::Ask {
                slot: 12,
                addr: "[::1]:7000".into()
            }
        );
        assert_eq!(k("MOVED garbage"), ServerErrorKind::Other("MOVED".into()));
        assert_eq!(k("LOADING Redis is loading"), ServerErrorKind::Loading);
        assert_eq!(k("BUSY Redis is busy"), ServerErrorKind::Busy);
        assert_eq!(
            k("BUSYGROUP Consumer Group name already exists"),
            ServerErrorKind::Other("BUSYGROUP".into())
        );
        assert_eq!(
            k("NOAUTH Authentication required."),
            ServerErrorKind::NoAuth
        );
        assert_eq!(k("WRONGPASS invalid"), ServerErrorKind::WrongPass);
        assert_eq!(k("NOPERM no"), ServerErrorKind::NoPerm);
        assert_eq!(k("EXECABORT x"), ServerErrorKind::ExecAbort);
        assert_eq!(k("WEIRD"), ServerErrorKind::Other("WEIRD".into()));
        assert_eq!(ServerError::parse("ERR x y").code(), "ERR");
        assert!(ServerError::parse("ERR unknown command 'HELLO', with args").is_unknown_command());
    }

    #[test]
    fn classification() {
        let io = Error::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(io.is_broken() && io.is_transient());
        assert!(matches!(
            Error::from(io::Error::from(io::ErrorKind::TimedOut)),
            Error::Timeout
        ));
        assert!(Error::Timeout.is_transient() && !Error::Timeout.is_broken());
        let loading = Error::Server(ServerError::parse("LOADING x"));
        assert!(loading.is_transient() && !loading.is_broken());
        let wt = Error::Server(ServerError::parse("WRONGTYPE x"));
        assert!(!wt.is_transient() && !wt.is_broken());
        assert!(Error::protocol("x").is_broken());
        assert!(!Error::TooLarge { limit: 1 }.is_broken());
    }
}
