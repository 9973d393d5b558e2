//! Connection settings: a `postgres://` URL parser and a builder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{Error, Result};
use tidepool_engine::tls::Roots;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A host name or IP address.
    Tcp(String),
    /// A directory holding the server's `.s.PGSQL.<port>` socket (libpq semantics).
    Unix(PathBuf),
}

/// Connection settings.
///
/// ```
/// use tidepool_drivers::pg::Config;
/// let c: Config = "postgres://app:secret@db.internal:5433/shop?application_name=api".parse().unwrap();
/// assert_eq!(c.get_port(), 5433);
/// let c = Config::new().user("app").unix_dir("/run/postgresql").dbname("shop");
/// assert!(matches!(c.get_host(), tidepool_drivers::pg::Host::Unix(_)));
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) host: Host,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: Option<String>,
    pub(crate) dbname: Option<String>,
    pub(crate) application_name: Option<String>,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) query_timeout: Option<Duration>,
    pub(crate) cancel_drain_timeout: Duration,
    pub(crate) statement_cache_size: usize,
    pub(crate) options: Vec<(String, String)>,
    pub(crate) sslmode: SslMode,
    pub(crate) sslrootcert: Option<Roots>,
}

/// Connect (TCP, TLS, authentication) limit unless configured: finite, so
/// a server that accepts and then says nothing cannot hang a caller.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-query limit unless configured (a stopped or wedged server fails the
/// query instead of holding its caller forever).
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the connection is encrypted and how much of the server's
/// certificate is checked: libpq's `sslmode`. Connections over a Unix
/// socket are never encrypted (as libpq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never.
    Disable,
    /// Encrypted when the server supports it, certificate not checked
    /// (libpq's default).
    Prefer,
    /// Encrypted or no connection; the certificate is checked against
    /// `sslrootcert` only if one is given (as libpq: then like `VerifyCa`).
    Require,
    /// Encrypted, the certificate chain checked against `sslrootcert`.
    VerifyCa,
    /// Encrypted, the chain and the host name checked.
    VerifyFull,
}

impl std::str::FromStr for SslMode {
    type Err = Error;
    fn from_str(v: &str) -> Result<SslMode> {
        Ok(match v {
            "disable" => SslMode::Disable,
            // `allow` tries plaintext first; encrypting when offered is
            // the closest safe reading.
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(Error::Config(format!(
                    "bad sslmode {v:?} (disable, allow, prefer, require, verify-ca, verify-full)"
                )))
            }
        })
    }
}

impl Default for Config {
    fn default() -> Config {
        Config::new()
    }
}

impl Config {
    /// localhost:5432, user from `$PGUSER`/`$USER`, no password, cache of
    /// 256 statements, [`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_QUERY_TIMEOUT`],
    /// `sslmode=prefer`.
    pub fn new() -> Config {
        let user = std::env::var("PGUSER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "postgres".to_string());
        Config {
            host: Host::Tcp("localhost".into()),
            port: 5432,
            user,
            password: None,
            dbname: None,
            application_name: None,
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            query_timeout: Some(DEFAULT_QUERY_TIMEOUT),
            cancel_drain_timeout: Duration::from_secs(2),
            statement_cache_size: 256,
            options: Vec::new(),
            sslmode: SslMode::Prefer,
            sslrootcert: None,
        }
    }

    /// Parses a `postgres://` or `postgresql://` URL.
    pub fn from_url(url: &str) -> Result<Config> {
        parse_url(url)
    }

    pub fn host(mut self, host: &str) -> Config {
        self.host = if host.starts_with('/') {
            Host::Unix(PathBuf::from(host))
        } else {
            Host::Tcp(host.to_string())
        };
        self
    }
    pub fn unix_dir(mut self, dir: impl AsRef<Path>) -> Config {
        self.host = Host::Unix(dir.as_ref().to_path_buf());
        self
    }
    pub fn port(mut self, port: u16) -> Config {
        self.port = port;
        self
    }
    pub fn user(mut self, user: &str) -> Config {
        self.user = user.to_string();
        self
    }
    pub fn password(mut self, password: &str) -> Config {
        self.password = Some(password.to_string());
        self
    }
    pub fn dbname(mut self, dbname: &str) -> Config {
        self.dbname = Some(dbname.to_string());
        self
    }
    pub fn application_name(mut self, name: &str) -> Config {
        self.application_name = Some(name.to_string());
        self
    }
    /// Bounds TCP/unix connect, TLS and authentication (default
    /// [`DEFAULT_CONNECT_TIMEOUT`]; `Duration::ZERO`: no limit, as the
    /// URL's `connect_timeout=0`).
    pub fn connect_timeout(mut self, t: Duration) -> Config {
        self.connect_timeout = (!t.is_zero()).then_some(t);
        self
    }
    /// Per-query timeout; on expiry the query is cancelled server-side
    /// (default [`DEFAULT_QUERY_TIMEOUT`]; `Duration::ZERO`: no limit, as
    /// the URL's `query_timeout=0`).
    pub fn query_timeout(mut self, t: Duration) -> Config {
        self.query_timeout = (!t.is_zero()).then_some(t);
        self
    }
    /// How long to wait, after a cancel, for the server to finish the query
    /// before the connection is declared broken.
    pub fn cancel_drain_timeout(mut self, t: Duration) -> Config {
        self.cancel_drain_timeout = t;
        self
    }
    /// Capacity of the prepared statement LRU; 0 disables caching.
    pub fn statement_cache_size(mut self, n: usize) -> Config {
        self.statement_cache_size = n;
        self
    }
    /// Adds a run-time parameter sent in the startup packet (e.g. `search_path`).
    pub fn param(mut self, name: &str, value: &str) -> Config {
        self.options.push((name.to_string(), value.to_string()));
        self
    }

    /// Encryption and certificate checks (default `Prefer`, as libpq).
    pub fn sslmode(mut self, mode: SslMode) -> Config {
        self.sslmode = mode;
        self
    }

    /// The roots the server's certificate is checked against: a PEM file,
    /// or [`Roots::System`] (libpq's `sslrootcert=system`).
    pub fn sslrootcert(mut self, roots: Roots) -> Config {
        self.sslrootcert = Some(roots);
        self
    }

    /// The rustls client configuration for `verify` (`sslrootcert`'s
    /// roots when checking).
    pub(crate) fn tls_config(
        &self,
        verify: tidepool_engine::tls::Verify,
    ) -> Result<std::sync::Arc<tidepool_engine::tls::rustls::ClientConfig>> {
        tidepool_engine::tls::client_config(self.sslrootcert.as_ref(), verify, &[]).map_err(|e| {
            Error::Tls {
                message: format!("TLS configuration: {e}"),
                fatal: true,
            }
        })
    }

    pub fn get_sslmode(&self) -> SslMode {
        self.sslmode
    }

    pub fn get_host(&self) -> &Host {
        &self.host
    }
    pub fn get_port(&self) -> u16 {
        self.port
    }
    pub fn get_user(&self) -> &str {
        &self.user
    }
    pub fn get_password(&self) -> Option<&str> {
        self.password.as_deref()
    }
    pub fn get_dbname(&self) -> Option<&str> {
        self.dbname.as_deref()
    }
    pub fn get_application_name(&self) -> Option<&str> {
        self.application_name.as_deref()
    }
    pub fn get_connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }
    pub fn get_query_timeout(&self) -> Option<Duration> {
        self.query_timeout
    }
    pub fn get_statement_cache_size(&self) -> usize {
        self.statement_cache_size
    }

    /// The socket file for a unix host.
    pub fn unix_socket_path(&self) -> Option<PathBuf> {
        match &self.host {
            Host::Unix(dir) => Some(dir.join(format!(".s.PGSQL.{}", self.port))),
            Host::Tcp(_) => None,
        }
    }

    /// Parameters of the StartupMessage.
    pub(crate) fn startup_params(&self) -> Vec<(&str, &str)> {
        let mut p = vec![("user", self.user.as_str())];
        if let Some(db) = &self.dbname {
            p.push(("database", db.as_str()));
        }
        if let Some(app) = &self.application_name {
            p.push(("application_name", app.as_str()));
        }
        // Text results and error messages are decoded as UTF-8.
        p.push(("client_encoding", "UTF8"));
        for (k, v) in &self.options {
            p.push((k.as_str(), v.as_str()));
        }
        p
    }
}

impl std::str::FromStr for Config {
    type Err = Error;
    fn from_str(s: &str) -> Result<Config> {
        parse_url(s)
    }
}

fn percent_decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::Config(format!("bad percent-encoding in {s:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::Config(format!("{s:?} is not UTF-8")))
}

fn parse_url(url: &str) -> Result<Config> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| Error::Config("URL must start with postgres:// or postgresql://".into()))?;
    let mut cfg = Config::new();

    let (rest, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    // The password may contain '@' only percent-encoded, but be lenient and split on the last one.
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    if let Some(ui) = userinfo {
        let (u, p) = match ui.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (ui, None),
        };
        if !u.is_empty() {
            cfg.user = percent_decode(u)?;
        }
        if let Some(p) = p {
            cfg.password = Some(percent_decode(p)?);
        }
    }
    if !hostport.is_empty() {
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let end = h
                .find(']')
                .ok_or_else(|| Error::Config("unterminated [ in host".into()))?;
            let port = h[end + 1..].strip_prefix(':');
            (h[..end].to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (percent_decode(h)?, Some(p)),
                None => (percent_decode(hostport)?, None),
            }
        };
        if !host.is_empty() {
            cfg = cfg.host(&host);
        }
        if let Some(p) = port.filter(|p| !p.is_empty()) {
            cfg.port = p
                .parse()
                .map_err(|_| Error::Config(format!("bad port {p:?}")))?;
        }
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        cfg.dbname = Some(percent_decode(db)?);
    }
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k)?;
            let v = percent_decode(v)?;
            let secs = |v: &str| -> Result<Duration> {
                v.parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| Error::Config(format!("bad {k} {v:?}")))
            };
            match k.as_str() {
                "host" => cfg = cfg.host(&v),
                "port" => {
                    cfg.port = v
                        .parse()
                        .map_err(|_| Error::Config(format!("bad port {v:?}")))?
                }
                "user" => cfg.user = v,
                "password" => cfg.password = Some(v),
                "dbname" => cfg.dbname = Some(v),
                "application_name" => cfg.application_name = Some(v),
                // libpq: seconds; 0 means wait forever.
                "connect_timeout" => {
                    let d = secs(&v)?;
                    cfg.connect_timeout = (!d.is_zero()).then_some(d);
                }
                // Driver extension, in milliseconds like statement_timeout.
                "query_timeout" => {
                    let ms: u64 = v
                        .parse()
                        .map_err(|_| Error::Config(format!("bad query_timeout {v:?}")))?;
                    cfg.query_timeout = (ms > 0).then(|| Duration::from_millis(ms));
                }
                "statement_cache_size" => {
                    cfg.statement_cache_size = v
                        .parse()
                        .map_err(|_| Error::Config(format!("bad statement_cache_size {v:?}")))?
                }
                "sslmode" => cfg.sslmode = v.parse()?,
                "sslrootcert" => {
                    cfg.sslrootcert = Some(if v == "system" {
                        Roots::System
                    } else {
                        Roots::PemFile(PathBuf::from(v))
                    })
                }
                _ => cfg.options.push((k, v)),
            }
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_url() {
        let c: Config = "postgres://bob:p%40ss@db.example:6543/my%20db?application_name=svc&connect_timeout=3&search_path=x"
            .parse()
            .unwrap();
        assert_eq!(c.user, "bob");
        assert_eq!(c.password.as_deref(), Some("p@ss"));
        assert_eq!(c.host, Host::Tcp("db.example".into()));
        assert_eq!(c.port, 6543);
        assert_eq!(c.dbname.as_deref(), Some("my db"));
        assert_eq!(c.application_name.as_deref(), Some("svc"));
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.options, vec![("search_path".into(), "x".into())]);
    }

    #[test]
    fn unix_socket_urls() {
        let c = Config::from_url("postgres://u@/db?host=/tmp/pg&port=5999").unwrap();
        assert_eq!(c.host, Host::Unix("/tmp/pg".into()));
        assert_eq!(
            c.unix_socket_path().unwrap(),
            PathBuf::from("/tmp/pg/.s.PGSQL.5999")
        );
        let c = Config::from_url("postgresql://u@%2Fvar%2Frun:5433/db").unwrap();
        assert_eq!(c.host, Host::Unix("/var/run".into()));
        assert_eq!(c.port, 5433);
    }

    #[test]
    fn ipv6_and_defaults() {
        let c = Config::from_url("postgres://[::1]:7000").unwrap();
        assert_eq!(c.host, Host::Tcp("::1".into()));
        assert_eq!(c.port, 7000);
        assert_eq!(c.dbname, None);
        let c = Config::from_url("postgres://").unwrap();
        assert_eq!(c.port, 5432);
    }

    #[test]
    fn timeouts_are_finite_unless_switched_off() {
        let c = Config::from_url("postgres://h/db").unwrap();
        assert_eq!(c.connect_timeout, Some(DEFAULT_CONNECT_TIMEOUT));
        assert_eq!(c.query_timeout, Some(DEFAULT_QUERY_TIMEOUT));
        let c = Config::from_url("postgres://h/db?connect_timeout=0&query_timeout=0").unwrap();
        assert_eq!((c.connect_timeout, c.query_timeout), (None, None));
        let c = Config::new()
            .connect_timeout(Duration::ZERO)
            .query_timeout(Duration::from_millis(5));
        assert_eq!(
            (c.connect_timeout, c.query_timeout),
            (None, Some(Duration::from_millis(5)))
        );
    }

    #[test]
    fn ssl_parameters() {
        let c = Config::from_url("postgres://h/db").unwrap();
        assert_eq!(c.sslmode, SslMode::Prefer, "libpq's default");
        let c = Config::from_url("postgres://h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem")
            .unwrap();
        assert_eq!(c.sslmode, SslMode::VerifyFull);
        assert_eq!(c.sslrootcert, Some(Roots::PemFile("/etc/ca.pem".into())));
        let c = Config::from_url("postgres://h/db?sslmode=require&sslrootcert=system").unwrap();
        assert_eq!(
            (c.sslmode, c.sslrootcert),
            (SslMode::Require, Some(Roots::System))
        );
    }

    #[test]
    fn bad_urls() {
        assert!(Config::from_url("mysql://x").is_err());
        assert!(Config::from_url("postgres://h:notaport/db").is_err());
        assert!(Config::from_url("postgres://h/db?sslmode=verify").is_err());
        assert!(Config::from_url("postgres://h/db%zz").is_err());
    }

    #[test]
    fn builder() {
        let c = Config::new()
            .host("/run/pg")
            .port(1)
            .user("a")
            .password("b")
            .statement_cache_size(3);
        assert_eq!(
            c.unix_socket_path().unwrap(),
            PathBuf::from("/run/pg/.s.PGSQL.1")
        );
        assert_eq!(c.get_password(), Some("b"));
        assert!(c.startup_params().contains(&("client_encoding", "UTF8")));
    }
}
