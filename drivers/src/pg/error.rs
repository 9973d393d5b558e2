//! Errors of the PostgreSQL driver.

use std::fmt;
use std::io;

use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::ErrorFields;

/// An error or notice reported by the server (ErrorResponse / NoticeResponse).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbError {
    /// `ERROR`, `FATAL`, `PANIC` (or `WARNING`, `NOTICE`, ... for notices), localized.
    pub severity: String,
    /// The non-localized severity (PostgreSQL 9.6+), when sent.
    pub severity_nonlocalized: Option<String>,
    /// The SQLSTATE code, e.g. `23505`.
    pub code: String,
    /// The primary message.
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// 1-based character position in the query text.
    pub position: Option<u32>,
    pub internal_position: Option<u32>,
    pub internal_query: Option<String>,
    pub where_: Option<String>,
    pub schema: Option<String>,
    pub table: Option<String>,
    pub column: Option<String>,
    pub datatype: Option<String>,
    pub constraint: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub routine: Option<String>,
}

impl DbError {
    /// Builds a `DbError` from the fields of an ErrorResponse or NoticeResponse.
    pub fn parse(mut fields: ErrorFields<'_>) -> io::Result<DbError> {
        let mut e = DbError::default();
        while let Some(f) = fields.next()? {
            // Servers may send non-UTF-8 text when client_encoding is not UTF8
            // (e.g. during startup, before it is applied): never fail on that.
            let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
            match f.type_() {
                b'S' => e.severity = v,
                b'V' => e.severity_nonlocalized = Some(v),
                b'C' => e.code = v,
                b'M' => e.message = v,
                b'D' => e.detail = Some(v),
                b'H' => e.hint = Some(v),
                b'P' => e.position = v.parse().ok(),
                b'p' => e.internal_position = v.parse().ok(),
                b'q' => e.internal_query = Some(v),
                b'W' => e.where_ = Some(v),
                b's' => e.schema = Some(v),
                b't' => e.table = Some(v),
                b'c' => e.column = Some(v),
                b'd' => e.datatype = Some(v),
                b'n' => e.constraint = Some(v),
                b'F' => e.file = Some(v),
                b'L' => e.line = v.parse().ok(),
                b'R' => e.routine = Some(v),
                // Unknown field types must be ignored per the protocol spec.
                _ => {}
            }
        }
        Ok(e)
    }

    /// FATAL and PANIC errors end the session: the server closes the socket after them.
    pub fn is_fatal(&self) -> bool {
        let sev = self
            .severity_nonlocalized
            .as_deref()
            .unwrap_or(&self.severity);
        sev == "FATAL" || sev == "PANIC"
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity, self.message, self.code
        )?;
        if let Some(d) = &self.detail {
            write!(f, "\nDETAIL: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\nHINT: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DbError {}

/// Every failure the driver reports.
#[derive(Debug)]
pub enum Error {
    /// The server rejected a statement (or the session).
    Db(Box<DbError>),
    /// The socket failed or was closed by the peer.
    Io(io::Error),
    /// The server sent something the protocol does not allow at this point.
    Protocol(String),
    /// Authentication failed or the server asked for an unsupported method.
    /// `db` holds the server's error (SQLSTATE 28P01, 28000) when there was one.
    Auth {
        message: String,
        db: Option<Box<DbError>>,
    },
    /// The connect or query timeout expired.
    Timeout,
    /// A column's PostgreSQL type cannot be read as the requested Rust type,
    /// or a parameter's Rust type cannot be sent as the statement's parameter type.
    TypeMismatch {
        /// Column name, or `$N` for a parameter.
        column: String,
        rust_type: &'static str,
        pg_type: String,
    },
    /// A value could not be converted (NULL into a non-Option, out of range, malformed bytes).
    Conversion { column: String, message: String },
    /// Wrong number of parameters, or a `query_one` that got no or several rows.
    Usage(String),
    /// Invalid connection configuration (bad URL, ...).
    Config(String),
    /// The connection was closed, broken earlier, or `close()` was called.
    Closed,
    /// TLS could not be set up or failed: the server refused SSL under an
    /// `sslmode` that requires it, its certificate was refused, or a record
    /// was bad. `fatal`: a configuration or verification failure that a
    /// retry cannot fix.
    Tls { message: String, fatal: bool },
}

/// Shorthand result type of the driver.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn protocol(msg: impl Into<String>) -> Error {
        Error::Protocol(msg.into())
    }

    /// The server's error, when this is one.
    pub fn as_db(&self) -> Option<&DbError> {
        match self {
            Error::Db(e) => Some(e),
            Error::Auth { db: Some(e), .. } => Some(e),
            _ => None,
        }
    }

    /// The SQLSTATE code, when the server sent one.
    pub fn code(&self) -> Option<&str> {
        self.as_db().map(|e| e.code.as_str())
    }

    /// True when the connection that produced this error can no longer be used.
    /// SQL errors (constraint violations, syntax errors, ...) leave it usable;
    /// I/O, protocol and FATAL server errors do not.
    pub fn is_broken(&self) -> bool {
        match self {
            Error::Io(_)
            | Error::Protocol(_)
            | Error::Closed
            | Error::Auth { .. }
            | Error::Tls { .. } => true,
            Error::Db(e) => e.is_fatal(),
            Error::Timeout
            | Error::TypeMismatch { .. }
            | Error::Conversion { .. }
            | Error::Usage(_)
            | Error::Config(_) => false,
        }
    }

    /// True when retrying (on a new connection if `is_broken()`) may succeed:
    /// refused/reset connections, timeouts, a server starting up or shutting
    /// down, too many connections, serialization failures and deadlocks.
    /// Authentication failures and a missing database are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Io(e) => {
                matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::NotConnected
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        // A missing unix socket file: the server is not up
                        // (it removes the file while stopped).
                        | io::ErrorKind::NotFound
                )
            }
            Error::Timeout | Error::Closed => true,
            Error::Tls { fatal, .. } => !fatal,
            Error::Db(e) => {
                let c = e.code.as_str();
                matches!(
                    c,
                    // cannot_connect_now, too_many_connections, admin/crash shutdown,
                    // serialization_failure, deadlock_detected, query_canceled.
                    "57P03" | "53300" | "57P01" | "57P02" | "40001" | "40P01" | "57014"
                ) || c.starts_with("08")
            }
            Error::Protocol(_)
            | Error::Auth { .. }
            | Error::TypeMismatch { .. }
            | Error::Conversion { .. }
            | Error::Usage(_)
            | Error::Config(_) => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Db(e) => write!(f, "database error: {e}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Protocol(m) => write!(f, "protocol error: {m}"),
            Error::Auth { message, .. } => write!(f, "authentication failed: {message}"),
            Error::Timeout => f.write_str("timed out"),
            Error::TypeMismatch {
                column,
                rust_type,
                pg_type,
            } => write!(
                f,
                "type mismatch for {column}: Rust type {rust_type} is not compatible with PostgreSQL type {pg_type}"
            ),
            Error::Conversion { column, message } => {
                write!(f, "conversion error for {column}: {message}")
            }
            Error::Usage(m) => f.write_str(m),
            Error::Config(m) => write!(f, "invalid configuration: {m}"),
            Error::Closed => f.write_str("connection closed"),
            Error::Tls { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Db(e) => Some(&**e),
            Error::Io(e) => Some(e),
            _ => None,
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

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Error {
        Error::Db(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(code: &str, sev: &str) -> Error {
        Error::Db(Box::new(DbError {
            severity: sev.into(),
            code: code.into(),
            ..Default::default()
        }))
    }

    #[test]
    fn transient_classification() {
        assert!(db("57P03", "FATAL").is_transient());
        assert!(db("53300", "FATAL").is_transient());
        assert!(db("40001", "ERROR").is_transient());
        assert!(!db("28P01", "FATAL").is_transient());
        assert!(!db("28000", "FATAL").is_transient());
        assert!(!db("3D000", "FATAL").is_transient());
        assert!(!db("42601", "ERROR").is_transient());
        assert!(Error::Io(io::ErrorKind::ConnectionRefused.into()).is_transient());
        assert!(Error::Io(io::ErrorKind::ConnectionReset.into()).is_transient());
        assert!(!Error::Io(io::ErrorKind::PermissionDenied.into()).is_transient());
        assert!(Error::Timeout.is_transient());
        let auth = Error::Auth {
            message: "x".into(),
            db: Some(Box::new(DbError {
                code: "28P01".into(),
                ..Default::default()
            })),
        };
        assert!(!auth.is_transient());
        assert_eq!(auth.code(), Some("28P01"));
    }

    #[test]
    fn broken_classification() {
        assert!(!db("42601", "ERROR").is_broken());
        assert!(db("57P01", "FATAL").is_broken());
        assert!(Error::Io(io::ErrorKind::UnexpectedEof.into()).is_broken());
        assert!(!Error::Timeout.is_broken());
    }
}
