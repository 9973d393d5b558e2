//! Ephemeral redis-server instances.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::lookup::RedisBinaries;
use crate::process::Supervised;
use crate::{free_port, log_since, log_tail, TestkitError, HOST};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const PORT_ATTEMPTS: usize = 3;

/// How a [`RedisServer`] authenticates clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisOptions {
    /// `requirepass`: the default user's password.
    pub password: Option<String>,
    /// An extra ACL user `(name, password)` with access to everything.
    pub acl_user: Option<(String, String)>,
    /// Also serve TLS on a second port ([`RedisServer::tls_url`]), with a
    /// certificate for `127.0.0.1` from a throwaway CA
    /// ([`RedisServer::ca_file`]). Clients need no certificate.
    pub tls: bool,
}

/// A private, non-persistent redis-server on 127.0.0.1. Dropping it kills it
/// and deletes its directory.
pub struct RedisServer {
    proc: Supervised,
    bins: &'static RedisBinaries,
    opts: RedisOptions,
    port: u16,
    conf: PathBuf,
    log: PathBuf,
    /// With `tls`: the TLS port and the CA's certificate.
    tls: Option<(u16, PathBuf)>,
}

impl RedisServer {
    /// A server without authentication.
    pub fn start() -> Result<RedisServer, TestkitError> {
        RedisServer::start_with(RedisOptions::default())
    }

    pub fn start_with(opts: RedisOptions) -> Result<RedisServer, TestkitError> {
        let bins = RedisBinaries::from_env()?;
        // Nothing to lose by killing: the server keeps no data on disk.
        let proc = Supervised::new("redis", libc::SIGKILL, None)?;
        let dir = proc.dir().to_path_buf();
        let mut server = RedisServer {
            bins,
            opts,
            port: 0,
            conf: dir.join("redis.conf"),
            log: dir.join("redis.log"),
            proc,
            tls: None,
        };
        if server.opts.tls {
            let ca = crate::tls::TestCa::new()?;
            let issued = ca.issue(&[HOST])?;
            let write = |name: &str, text: &str| {
                let path = dir.join(name);
                std::fs::write(&path, text)
                    .map_err(|e| TestkitError::new(format!("cannot write {}: {e}", path.display())))
            };
            write("server.crt", &issued.cert_pem)?;
            write("server.key", &issued.key_pem)?;
            server.tls = Some((0, ca.write_pem(&dir, "ca.pem")?));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            server.port = free_port();
            if let Some((port, _)) = server.tls.as_mut() {
                *port = free_port();
            }
            server.write_conf()?;
            let offset = server.launch()?;
            match server.wait_ready(offset) {
                Ok(()) => return Ok(server),
                Err(e) => {
                    server.proc.kill9();
                    let lost_port =
                        log_since(&server.log, offset).contains("Address already in use");
                    if !lost_port || attempt >= PORT_ATTEMPTS {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// One server without authentication per test binary, started on first
    /// use. Tests sharing it must not stop it and should use their own keys.
    ///
    /// # Panics
    /// With the start error's message if the server cannot be started.
    pub fn shared() -> &'static RedisServer {
        static SHARED: OnceLock<Result<RedisServer, TestkitError>> = OnceLock::new();
        match SHARED.get_or_init(RedisServer::start) {
            Ok(server) => server,
            Err(e) => panic!("{e}"),
        }
    }

    pub fn host(&self) -> &str {
        HOST
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's private directory (config and log).
    pub fn dir(&self) -> &Path {
        self.proc.dir()
    }

    pub fn options(&self) -> &RedisOptions {
        &self.opts
    }

    /// `redis://[:password@]127.0.0.1:port/0`, with the `requirepass`
    /// password if there is one.
    pub fn url(&self) -> String {
        let auth = match &self.opts.password {
            Some(pass) => format!(":{}@", percent_encode(pass)),
            None => String::new(),
        };
        format!("redis://{auth}{HOST}:{}/0", self.port)
    }

    /// `rediss://[:password@]127.0.0.1:tls_port/0` (a server started with
    /// `tls`).
    pub fn tls_url(&self) -> Option<String> {
        let (port, _) = self.tls.as_ref()?;
        let auth = match &self.opts.password {
            Some(pass) => format!(":{}@", percent_encode(pass)),
            None => String::new(),
        };
        Some(format!("rediss://{auth}{HOST}:{port}/0"))
    }

    /// The CA certificate (PEM) that signed the TLS port's certificate.
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|(_, ca)| ca.as_path())
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// Graceful shutdown (SIGTERM) and wait.
    pub fn stop(&self) {
        self.proc.stop(libc::SIGTERM, STOP_TIMEOUT);
    }

    /// SIGKILLs the server and waits until it is gone.
    pub fn kill9(&self) {
        self.proc.kill9();
    }

    /// Starts the server again on the same port (stopping it first if it is
    /// running) and waits until it answers PING. Its data does not survive.
    ///
    /// # Panics
    /// If the server does not come back, with the log's tail.
    pub fn restart(&self) {
        self.stop();
        if let Err(e) = self.launch().and_then(|offset| self.wait_ready(offset)) {
            self.proc.kill9();
            panic!("{e}");
        }
    }

    /// Runs `redis-cli -h 127.0.0.1 -p <port> [-a <password>] <args>` and
    /// returns its stdout. Error replies are part of stdout ("ERR …").
    ///
    /// # Panics
    /// If redis-cli cannot run or fails (e.g. cannot connect).
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(&self.bins.cli);
        cmd.args(["-h", HOST, "-p", &self.port.to_string()]);
        if let Some(pass) = &self.opts.password {
            cmd.args(["--no-auth-warning", "-a", pass]);
        }
        // REDISCLI_AUTH would override -a / add auth we did not ask for.
        cmd.args(args).env_remove("REDISCLI_AUTH");
        let output = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bins.cli.display()));
        if !output.status.success() {
            panic!(
                "redis-cli {args:?} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn write_conf(&self) -> Result<(), TestkitError> {
        let mut conf = String::new();
        let _ = writeln!(conf, "port {}", self.port);
        let _ = writeln!(conf, "bind {HOST}");
        let _ = writeln!(conf, "protected-mode no");
        let _ = writeln!(conf, "daemonize no");
        let _ = writeln!(conf, "save \"\"");
        let _ = writeln!(conf, "appendonly no");
        let _ = writeln!(conf, "dir {}", quote(&self.proc.dir().to_string_lossy()));
        let _ = writeln!(conf, "logfile \"\"");
        if let Some(pass) = &self.opts.password {
            let _ = writeln!(conf, "requirepass {}", quote(pass));
        }
        if let Some((port, ca)) = &self.tls {
            let dir = self.proc.dir();
            let _ = writeln!(conf, "tls-port {port}");
            let _ = writeln!(
                conf,
                "tls-cert-file {}",
                quote(&dir.join("server.crt").to_string_lossy())
            );
            let _ = writeln!(
                conf,
                "tls-key-file {}",
                quote(&dir.join("server.key").to_string_lossy())
            );
            let _ = writeln!(conf, "tls-ca-cert-file {}", quote(&ca.to_string_lossy()));
            let _ = writeln!(conf, "tls-auth-clients no");
        }
        if let Some((user, pass)) = &self.opts.acl_user {
            let _ = writeln!(
                conf,
                "user {} on {} ~* &* +@all",
                quote(user),
                quote(&format!(">{pass}"))
            );
        }
        std::fs::write(&self.conf, conf)
            .map_err(|e| TestkitError::new(format!("cannot write {}: {e}", self.conf.display())))
    }

    fn launch(&self) -> Result<u64, TestkitError> {
        let offset = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let mut cmd = Command::new(&self.bins.server);
        cmd.arg(&self.conf).current_dir(self.proc.dir());
        self.proc.spawn(cmd, &self.log)?;
        Ok(offset)
    }

    fn wait_ready(&self, log_offset: u64) -> Result<(), TestkitError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let exited = |status: std::process::ExitStatus| {
            TestkitError::new(format!(
                "redis-server on port {} exited during startup ({status}); log ({}):\n{}",
                self.port,
                self.log.display(),
                log_tail(&self.log, log_offset)
            ))
        };
        loop {
            if let Some(status) = self.proc.exit_status() {
                return Err(exited(status));
            }
            if ping(self.port) {
                // A foreign server on our port would answer too; ours must
                // still be alive for the answer to count.
                return match self.proc.exit_status() {
                    None => Ok(()),
                    Some(status) => Err(exited(status)),
                };
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::new(format!(
                    "redis-server on port {} not ready after {} s; log ({}):\n{}",
                    self.port,
                    READY_TIMEOUT.as_secs(),
                    self.log.display(),
                    log_tail(&self.log, log_offset)
                )));
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("dir", &self.proc.dir())
            .finish_non_exhaustive()
    }
}

/// True once the server is serving commands. Without credentials a
/// password-protected server answers NOAUTH, which is just as ready; LOADING
/// or a refused connection is not.
fn ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let timeout = Some(Duration::from_millis(500));
    if stream.set_read_timeout(timeout).is_err() || stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 64];
    let mut len = 0;
    while len < reply.len() && !reply[..len].contains(&b'\n') {
        match stream.read(&mut reply[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    reply[..len].starts_with(b"+PONG") || reply[..len].starts_with(b"-NOAUTH")
}

/// A redis.conf string argument.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so that
/// any password survives URL parsing.
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{percent_encode, quote};

    #[test]
    fn conf_quoting_escapes() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn url_encoding_keeps_unreserved() {
        assert_eq!(percent_encode("a-Z_0.~"), "a-Z_0.~");
        assert_eq!(percent_encode("p@ss:/w"), "p%40ss%3A%2Fw");
    }
}
