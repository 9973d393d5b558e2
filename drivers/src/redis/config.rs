//! Connection configuration: `redis://` URLs and a builder.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::error::{Error, Result};
use tidepool_engine::tls::{self, Roots};

/// TLS for a `rediss://` connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    /// What the server's certificate is checked against (default: the
    /// system's roots).
    pub roots: Roots,
    /// Check the certificate (chain and host name). Off only when asked
    /// for ([`Config::tls_insecure`]).
    pub verify: bool,
}

/// Default cap on one reply's size on the wire.
pub const DEFAULT_MAX_REPLY: usize = 64 * 1024 * 1024;
/// Connect (TCP, TLS, AUTH/HELLO) limit unless configured.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Each command's wait for its reply unless configured: a stopped server
/// fails requests instead of holding them forever.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on commands in flight on one multiplexed connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// How to reach and set up a Redis server.
///
/// ```
/// use tidepool_drivers::redis::Config;
/// let c: Config = "redis://app:s3cret@127.0.0.1:6380/2".parse().unwrap();
/// assert_eq!((c.host(), c.port(), c.db()), ("127.0.0.1", 6380, 2));
/// let c = Config::new("localhost", 6379).client_name("api").resp3(false).max_in_flight(64);
/// assert!(!c.resp3_enabled());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    host: String,
    port: u16,
    unix_path: Option<String>,
    db: i64,
    username: Option<String>,
    password: Option<String>,
    client_name: Option<String>,
    resp3: bool,
    max_reply: usize,
    max_in_flight: usize,
    connect_timeout: Option<Duration>,
    response_timeout: Option<Duration>,
    tls: Option<Tls>,
}

impl Config {
    /// Defaults for `host:port`: db 0, no auth, RESP3 when the server has
    /// it, [`DEFAULT_MAX_REPLY`], [`DEFAULT_MAX_IN_FLIGHT`],
    /// [`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_RESPONSE_TIMEOUT`].
    pub fn new(host: impl Into<String>, port: u16) -> Config {
        Config {
            host: host.into(),
            port,
            unix_path: None,
            db: 0,
            username: None,
            password: None,
            client_name: None,
            resp3: true,
            max_reply: DEFAULT_MAX_REPLY,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            tls: None,
            response_timeout: Some(DEFAULT_RESPONSE_TIMEOUT),
        }
    }

    /// Defaults for a unix-domain socket at `path`.
    pub fn unix(path: impl Into<String>) -> Config {
        let mut c = Config::new("", 0);
        c.unix_path = Some(path.into());
        c
    }

    /// Parses `redis://[[user]:password@]host[:port][/db]`, or for a
    /// unix-domain socket `redis+unix://[[user]:password@]/path[?db=N]`
    /// (also `unix://`). User and password may be percent-encoded; an IPv6
    /// host goes in brackets.
    pub fn from_url(url: &str) -> Result<Config> {
        let bad = |m: &str| Error::Config(format!("{m} in redis URL"));
        if let Some(rest) = url
            .strip_prefix("redis+unix://")
            .or_else(|| url.strip_prefix("unix://"))
        {
            return Config::from_unix_url(rest);
        }
        let (rest, tls) = match url.strip_prefix("rediss://") {
            Some(rest) => (rest, true),
            None => (
                url.strip_prefix("redis://")
                    .ok_or_else(|| bad("expected the redis:// or rediss:// scheme"))?,
                false,
            ),
        };
        // Query strings are not supported; refuse rather than ignore.
        if rest.contains('?') || rest.contains('#') {
            return Err(bad("unsupported query string"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let end = h.find(']').ok_or_else(|| bad("unclosed IPv6 bracket"))?;
            let port = &h[end + 1..];
            (&h[..end], port.strip_prefix(':'))
        } else {
            match hostport.rfind(':') {
                Some(i) => (&hostport[..i], Some(&hostport[i + 1..])),
                None => (hostport, None),
            }
        };
        let host = if host.is_empty() { "127.0.0.1" } else { host };
        let port = match port {
            None | Some("") => 6379,
            Some(p) => p.parse().map_err(|_| bad("invalid port"))?,
        };
        let mut c = Config::new(host, port);
        if tls {
            c.tls = Some(Tls {
                roots: Roots::System,
                verify: true,
            });
        }
        if let Some(ui) = userinfo {
            c.set_userinfo(ui)?;
        }
        let path = path.trim_end_matches('/');
        if !path.is_empty() {
            c.db = path.parse().map_err(|_| bad("invalid database number"))?;
        }
        Ok(c)
    }

    fn from_unix_url(rest: &str) -> Result<Config> {
        let bad = |m: &str| Error::Config(format!("{m} in redis URL"));
        let (rest, query) = match rest.find('?') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (userinfo, path) = match rest.find('/') {
            Some(i) => ((i > 0).then(|| rest[..i].trim_end_matches('@')), &rest[i..]),
            None => return Err(bad("expected an absolute socket path")),
        };
        let path = percent_decode(path).ok_or_else(|| bad("bad percent-encoding"))?;
        let mut c = Config::unix(path);
        if let Some(ui) = userinfo {
            c.set_userinfo(ui)?;
        }
        for kv in query.into_iter().flat_map(|q| q.split('&')) {
            match kv.split_once('=') {
                Some(("db", n)) => c.db = n.parse().map_err(|_| bad("invalid database number"))?,
                _ => return Err(bad("unsupported query parameter")),
            }
        }
        Ok(c)
    }

    fn set_userinfo(&mut self, ui: &str) -> Result<()> {
        let bad = || Error::Config("bad percent-encoding in redis URL".into());
        let (user, pass) = match ui.find(':') {
            Some(i) => (&ui[..i], Some(&ui[i + 1..])),
            // `redis://secret@host` is a password alone, as most clients
            // read it.
            None => ("", Some(ui)),
        };
        if !user.is_empty() {
            self.username = Some(percent_decode(user).ok_or_else(bad)?);
        }
        if let Some(p) = pass {
            self.password = Some(percent_decode(p).ok_or_else(bad)?);
        }
        Ok(())
    }

    /// Sets the host name or IP address.
    pub fn host_name(mut self, host: impl Into<String>) -> Config {
        self.host = host.into();
        self
    }

    /// Sets the port.
    pub fn port_number(mut self, port: u16) -> Config {
        self.port = port;
        self
    }

    /// Database selected after connecting.
    pub fn database(mut self, db: i64) -> Config {
        self.db = db;
        self
    }

    /// ACL user name (Redis 6+); without it the password is for `default`.
    pub fn username(mut self, user: impl Into<String>) -> Config {
        self.username = Some(user.into());
        self
    }

    /// Password.
    pub fn password(mut self, pass: impl Into<String>) -> Config {
        self.password = Some(pass.into());
        self
    }

    /// Name shown by `CLIENT LIST`.
    pub fn client_name(mut self, name: impl Into<String>) -> Config {
        self.client_name = Some(name.into());
        self
    }

    /// Whether to ask for RESP3 (`HELLO 3`); on by default, with a fallback
    /// to RESP2 for servers that lack it.
    pub fn resp3(mut self, on: bool) -> Config {
        self.resp3 = on;
        self
    }

    /// Largest reply accepted, in bytes on the wire. A bigger reply fails
    /// its command with [`Error::TooLarge`] and is skipped, not buffered.
    pub fn max_reply(mut self, bytes: usize) -> Config {
        self.max_reply = bytes;
        self
    }

    /// Most commands in flight on one multiplexed connection; further
    /// commands wait, in order, for a slot.
    pub fn max_in_flight(mut self, n: usize) -> Config {
        self.max_in_flight = n.max(1);
        self
    }

    /// Limit on connecting plus the handshakes (default
    /// [`DEFAULT_CONNECT_TIMEOUT`]; `Duration::ZERO`: no limit).
    pub fn connect_timeout(mut self, d: Duration) -> Config {
        self.connect_timeout = (!d.is_zero()).then_some(d);
        self
    }

    /// Limit on each command's wait for its reply (slot wait included).
    /// A command that times out is not cancelled on the server; its reply
    /// is discarded when it comes. Default [`DEFAULT_RESPONSE_TIMEOUT`];
    /// `Duration::ZERO`: no limit (for blocking commands that wait longer).
    pub fn response_timeout(mut self, d: Duration) -> Config {
        self.response_timeout = (!d.is_zero()).then_some(d);
        self
    }

    /// Host name or address.
    /// Encrypts the connection (as `rediss://` does), checking the
    /// server's certificate against the CA certificates in `ca_file` (PEM).
    pub fn tls_ca(mut self, ca_file: impl Into<std::path::PathBuf>) -> Config {
        self.tls = Some(Tls {
            roots: Roots::PemFile(ca_file.into()),
            verify: self.tls.as_ref().is_none_or(|t| t.verify),
        });
        self
    }

    /// Encrypts the connection without checking the server's certificate:
    /// no protection from anyone who can intercept it. Only when asked.
    pub fn tls_insecure(mut self) -> Config {
        let roots = self.tls.take().map_or(Roots::System, |t| t.roots);
        self.tls = Some(Tls {
            roots,
            verify: false,
        });
        self
    }

    /// TLS settings, when the connection is encrypted.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// The rustls client configuration for this server, if encrypted.
    pub(crate) fn tls_config(&self) -> Result<Option<std::sync::Arc<tls::rustls::ClientConfig>>> {
        let Some(t) = &self.tls else { return Ok(None) };
        let verify = if t.verify {
            tls::Verify::Full
        } else {
            tls::Verify::Nothing
        };
        tls::client_config(Some(&t.roots), verify, &[])
            .map(Some)
            .map_err(|e| Error::Tls {
                message: format!("TLS configuration: {e}"),
                fatal: true,
            })
    }

    pub fn host(&self) -> &str {
        &self.host
    }
    /// Port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Unix-domain socket path, when connecting through one.
    pub fn unix_path(&self) -> Option<&str> {
        self.unix_path.as_deref()
    }
    /// Database number.
    pub fn db(&self) -> i64 {
        self.db
    }
    /// ACL user name.
    pub fn user(&self) -> Option<&str> {
        self.username.as_deref()
    }
    /// Password.
    pub fn pass(&self) -> Option<&str> {
        self.password.as_deref()
    }
    /// Client name.
    pub fn name(&self) -> Option<&str> {
        self.client_name.as_deref()
    }
    /// Whether RESP3 is requested.
    pub fn resp3_enabled(&self) -> bool {
        self.resp3
    }
    /// Reply size cap.
    pub fn max_reply_bytes(&self) -> usize {
        self.max_reply
    }
    /// In-flight cap.
    pub fn max_in_flight_commands(&self) -> usize {
        self.max_in_flight
    }
    /// Connect timeout.
    pub fn connect_timeout_value(&self) -> Option<Duration> {
        self.connect_timeout
    }
    /// Response timeout.
    pub fn response_timeout_value(&self) -> Option<Duration> {
        self.response_timeout
    }
}

impl Default for Config {
    fn default() -> Config {
        Config::new("127.0.0.1", 6379)
    }
}

impl FromStr for Config {
    type Err = Error;
    fn from_str(s: &str) -> Result<Config> {
        Config::from_url(s)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password.
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("unix_path", &self.unix_path)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("client_name", &self.client_name)
            .field("resp3", &self.resp3)
            .field("max_reply", &self.max_reply)
            .field("max_in_flight", &self.max_in_flight)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_finite_unless_switched_off() {
        let c = Config::from_url("redis://h").unwrap();
        assert_eq!(c.connect_timeout_value(), Some(DEFAULT_CONNECT_TIMEOUT));
        assert_eq!(c.response_timeout_value(), Some(DEFAULT_RESPONSE_TIMEOUT));
        let c = c
            .response_timeout(Duration::ZERO)
            .connect_timeout(Duration::from_secs(1));
        assert_eq!(c.response_timeout_value(), None);
        assert_eq!(c.connect_timeout_value(), Some(Duration::from_secs(1)));
    }

    #[test]
    fn urls() {
        let c = Config::from_url("redis://localhost").unwrap();
        assert_eq!(
            (c.host(), c.port(), c.db(), c.user(), c.pass()),
            ("localhost", 6379, 0, None, None)
        );
        let c = Config::from_url("redis://u%40x:p%3Aw@10.0.0.1:7000/3").unwrap();
        assert_eq!(c.host(), "10.0.0.1");
        assert_eq!(c.port(), 7000);
        assert_eq!(c.db(), 3);
        assert_eq!(c.user(), Some("u@x"));
        assert_eq!(c.pass(), Some("p:w"));
        let c = Config::from_url("redis://:secret@h:1/").unwrap();
        assert_eq!((c.user(), c.pass(), c.db()), (None, Some("secret"), 0));
        let c = Config::from_url("redis://secret@h").unwrap();
        assert_eq!((c.user(), c.pass()), (None, Some("secret")));
        let c = Config::from_url("redis://[::1]:6390/1").unwrap();
        assert_eq!((c.host(), c.port(), c.db()), ("::1", 6390, 1));
        let c = Config::from_url("redis://[::1]").unwrap();
        assert_eq!((c.host(), c.port()), ("::1", 6379));
        let c = Config::from_url("redis://p@ss@h:2").unwrap();
        assert_eq!((c.pass(), c.host()), (Some("p@ss"), "h"));
        for bad in [
            "http://h",
            "redis://h:notaport",
            "redis://h/x",
            "redis://h:99999",
            "redis://[::1",
            "redis://h?protocol=3",
            "redis://:%zz@h",
        ] {
            assert!(
                matches!(Config::from_url(bad), Err(Error::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn unix_urls() {
        let c = Config::from_url("redis+unix:///run/redis/redis.sock?db=4").unwrap();
        assert_eq!(
            (c.unix_path(), c.db(), c.pass()),
            (Some("/run/redis/redis.sock"), 4, None)
        );
        let c = Config::from_url("unix://u:p%40ss@/tmp/r%20s.sock").unwrap();
        assert_eq!(c.unix_path(), Some("/tmp/r s.sock"));
        assert_eq!((c.user(), c.pass()), (Some("u"), Some("p@ss")));
        let c = Config::from_url("unix://:pw@/tmp/x.sock").unwrap();
        assert_eq!((c.user(), c.pass()), (None, Some("pw")));
        for bad in ["unix://relative.sock", "unix:///x?db=a", "unix:///x?foo=1"] {
            assert!(
                matches!(Config::from_url(bad), Err(Error::Config(_))),
                "{bad}"
            );
        }
        assert_eq!(Config::unix("/s").unix_path(), Some("/s"));
        assert_eq!(Config::new("h", 1).unix_path(), None);
    }

    #[test]
    fn builder_and_debug() {
        let c = Config::new("h", 1)
            .database(4)
            .username("u")
            .password("topsecret")
            .client_name("n")
            .resp3(false)
            .max_reply(100)
            .max_in_flight(0)
            .response_timeout(Duration::from_secs(1));
        assert_eq!(c.db(), 4);
        assert_eq!(c.name(), Some("n"));
        assert_eq!(c.max_reply_bytes(), 100);
        assert_eq!(c.max_in_flight_commands(), 1);
        assert!(!format!("{c:?}").contains("topsecret"));
        let d: Config = "redis://127.0.0.1:6379".parse().unwrap();
        assert_eq!(d, Config::default());
    }
}
