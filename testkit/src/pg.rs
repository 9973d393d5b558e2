//! Ephemeral PostgreSQL clusters.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::lookup::PgBinaries;
use crate::process::Supervised;
use crate::{free_port, last_lines, log_since, log_tail, sys, TestkitError, HOST};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at finding a port nobody else grabs between `free_port` and the
/// postmaster's bind.
const PORT_ATTEMPTS: usize = 3;
/// Account the servers run as when we are root, since postgres refuses to.
const UNPRIVILEGED_USER: &str = "nobody";
const NOBODY_FALLBACK_ID: u32 = 65534;
const DATABASE: &str = "tidepool";

/// The login roles every test cluster has, one per authentication method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PgUser {
    /// The bootstrap superuser `postgres`, trusted.
    Super,
    /// `tp_trust`, trusted: any (or no) password is accepted.
    Trust,
    /// `tp_password`, cleartext `password` authentication.
    Password,
    /// `tp_md5`, `md5` authentication with an md5-stored password.
    Md5,
    /// `tp_scram`, `scram-sha-256` authentication.
    Scram,
}

impl PgUser {
    pub const ALL: [PgUser; 5] = [
        PgUser::Super,
        PgUser::Trust,
        PgUser::Password,
        PgUser::Md5,
        PgUser::Scram,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PgUser::Super => "postgres",
            PgUser::Trust => "tp_trust",
            PgUser::Password => "tp_password",
            PgUser::Md5 => "tp_md5",
            PgUser::Scram => "tp_scram",
        }
    }

    pub fn password(self) -> &'static str {
        match self {
            PgUser::Super => "postgres_pw",
            PgUser::Trust => "trust_pw",
            PgUser::Password => "password_pw",
            PgUser::Md5 => "md5_pw",
            PgUser::Scram => "scram_pw",
        }
    }

    /// The pg_hba.conf method for this role.
    fn auth_method(self) -> &'static str {
        match self {
            PgUser::Super | PgUser::Trust => "trust",
            PgUser::Password => "password",
            PgUser::Md5 => "md5",
            PgUser::Scram => "scram-sha-256",
        }
    }

    /// How the password is hashed in pg_authid. The md5 role must really
    /// hold an md5 hash: given a SCRAM verifier, the server silently upgrades
    /// `md5` in pg_hba.conf to SCRAM and md5 would never be exercised.
    fn password_encryption(self) -> &'static str {
        match self {
            PgUser::Md5 => "md5",
            _ => "scram-sha-256",
        }
    }
}

/// A private PostgreSQL cluster in a temp directory, listening on
/// 127.0.0.1 and on a unix socket. Dropping it shuts it down and deletes it.
pub struct PgServer {
    proc: Supervised,
    bins: &'static PgBinaries,
    port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    run_as: Option<(u32, u32)>,
    /// With TLS on: the CA's certificate (PEM) that signed the server's.
    ca_file: Option<PathBuf>,
}

impl PgServer {
    /// Creates, starts and provisions a new cluster (roles, the `tidepool`
    /// database); takes about a second and a half.
    pub fn start() -> Result<PgServer, TestkitError> {
        Self::start_with(None)
    }

    /// [`start`](Self::start) with TLS on (`ssl = on`) and required:
    /// `pg_hba.conf` has `hostssl` lines only, so a cleartext TCP session is
    /// refused with the server's own reason (Unix-socket sessions, which
    /// psql uses, are still allowed). The server's certificate, valid for
    /// `127.0.0.1` only, is signed by a throwaway CA whose certificate is
    /// [`ca_file`](Self::ca_file).
    pub fn start_tls() -> Result<PgServer, TestkitError> {
        Self::start_with(Some(true))
    }

    /// [`start_tls`](Self::start_tls), cleartext TCP sessions still
    /// accepted (`host` lines): to compare both on one server.
    pub fn start_tls_optional() -> Result<PgServer, TestkitError> {
        Self::start_with(Some(false))
    }

    /// The CA certificate (PEM) a client verifying this server trusts.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.ca_file.as_deref()
    }

    /// Replaces the server's certificate with `issued` and asks the server
    /// to reload it (`pg_reload_conf()`): sessions that start once the
    /// server has read the signal get the new one. A server started with
    /// TLS only.
    pub fn use_certificate(&self, issued: &crate::tls::Issued) -> Result<(), TestkitError> {
        self.write_certificate(issued)?;
        self.try_psql("postgres", "SELECT pg_reload_conf()")?;
        Ok(())
    }

    /// `tls`: `None` cleartext only, `Some(required)`.
    fn start_with(tls: Option<bool>) -> Result<PgServer, TestkitError> {
        let bins = PgBinaries::from_env()?;
        let proc = Supervised::new("pg", libc::SIGQUIT, Some("data"))?;
        let dir = proc.dir().to_path_buf();
        let run_as = if sys::euid_is_root() {
            let ids = sys::user_ids(UNPRIVILEGED_USER)
                .unwrap_or((NOBODY_FALLBACK_ID, NOBODY_FALLBACK_ID));
            std::os::unix::fs::chown(&dir, Some(ids.0), Some(ids.1)).map_err(|e| {
                TestkitError::new(format!("cannot chown {} to nobody: {e}", dir.display()))
            })?;
            Some(ids)
        } else {
            None
        };
        let mut server = PgServer {
            bins,
            port: 0,
            data_dir: dir.join("data"),
            log: dir.join("postgres.log"),
            run_as,
            proc,
            ca_file: None,
        };
        server.initdb()?;
        server.write_hba(tls == Some(true))?;
        if tls.is_some() {
            server.enable_tls()?;
        }
        server.start_on_free_port()?;
        server.provision()?;
        Ok(server)
    }

    /// One cluster per test binary, started on first use. Tests sharing it
    /// must not stop it and should use their own tables (or schemas).
    ///
    /// # Panics
    /// With the start error's message if the cluster cannot be started.
    pub fn shared() -> &'static PgServer {
        static SHARED: OnceLock<Result<PgServer, TestkitError>> = OnceLock::new();
        // The error is kept, not retried: every test would otherwise wait
        // for its own doomed start.
        match SHARED.get_or_init(PgServer::start) {
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

    /// Directory holding the server's unix socket `.s.PGSQL.<port>`.
    pub fn socket_dir(&self) -> &Path {
        self.proc.dir()
    }

    /// Directory of the cluster's data (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `postgres://user:password@127.0.0.1:port/tidepool`
    pub fn url(&self, user: PgUser) -> String {
        format!(
            "postgres://{}:{}@{HOST}:{}/{DATABASE}",
            user.name(),
            user.password(),
            self.port
        )
    }

    /// The postmaster's pid while it is running.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// Fast shutdown (SIGINT): open sessions are cut, and the call returns
    /// once the postmaster has exited.
    pub fn stop(&self) {
        self.proc.stop(libc::SIGINT, STOP_TIMEOUT);
    }

    /// Simulates a crash: SIGKILLs the postmaster and every backend, and
    /// returns once they are all gone.
    ///
    /// The cluster runs with `synchronous_commit=off`, so, as in a real
    /// crash, commits from the last fraction of a second may be lost; a
    /// test that needs a write to survive can `SET synchronous_commit = on`
    /// for it.
    pub fn kill9(&self) {
        self.proc.kill9();
    }

    /// Starts the cluster again on the same port and data directory (after
    /// `stop`, after `kill9`, or stopping it first if it is running) and
    /// waits until it accepts connections.
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

    /// Runs `sql` with `psql -At -X -q` as the superuser in database
    /// `tidepool` and returns its stdout (unaligned, tuples only, a `\n`
    /// after each row). Statements run one after another, stopping at the
    /// first error.
    ///
    /// # Panics
    /// If psql fails, with its stderr.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(DATABASE, sql)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`psql`](Self::psql), ignoring the output.
    pub fn exec(&self, sql: &str) {
        self.psql(sql);
    }

    /// `psql` as the superuser in `database`, returning an error instead of
    /// panicking.
    pub fn try_psql(&self, database: &str, sql: &str) -> Result<String, TestkitError> {
        let mut cmd = Command::new(&self.bins.psql);
        cmd.args(["-At", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", PgUser::Super.name(), "-d", database, "-f", "-"]);
        clear_libpq_env(&mut cmd);
        // Bounds the connection attempt if the server is not up.
        cmd.env("PGCONNECT_TIMEOUT", "10");
        let output = run_with_stdin(cmd, sql)
            .map_err(|e| TestkitError::new(format!("cannot run psql: {e}")))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(TestkitError::new(format!(
                "psql failed ({}) running:\n{sql}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end()
            )))
        }
    }

    fn initdb(&self) -> Result<(), TestkitError> {
        let mut cmd = Command::new(&self.bins.initdb);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-A", "trust", "-U", PgUser::Super.name()])
            .args(["--no-sync", "-E", "UTF8", "--locale=C"]);
        self.prepare(&mut cmd);
        let output = cmd.output().map_err(|e| {
            TestkitError::new(format!("cannot run initdb{}: {e}", self.run_as_hint()))
        })?;
        if output.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Err(TestkitError::new(format!(
            "initdb failed ({}){}:\n{}",
            output.status,
            self.run_as_hint(),
            last_lines(&text, 30)
        )))
    }

    /// Writes `server.crt`/`server.key` (PostgreSQL's default names, in
    /// the data directory, owned by the server's account, key 0600) and
    /// turns `ssl` on.
    fn enable_tls(&mut self) -> Result<(), TestkitError> {
        let ca = crate::tls::TestCa::new()?;
        self.write_certificate(&ca.issue(&["127.0.0.1"])?)?;
        let io = |what: &Path, e: std::io::Error| {
            TestkitError::new(format!("cannot write {}: {e}", what.display()))
        };
        let conf = self.data_dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(|e| io(&conf, e))?;
        text.push_str("\nssl = on\n");
        std::fs::write(&conf, text).map_err(|e| io(&conf, e))?;
        self.ca_file = Some(ca.write_pem(self.proc.dir(), "ca.pem")?);
        Ok(())
    }

    fn write_certificate(&self, issued: &crate::tls::Issued) -> Result<(), TestkitError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |what: &Path, e: std::io::Error| {
            TestkitError::new(format!("cannot write {}: {e}", what.display()))
        };
        for (name, text) in [
            ("server.crt", &issued.cert_pem),
            ("server.key", &issued.key_pem),
        ] {
            let path = self.data_dir.join(name);
            std::fs::write(&path, text).map_err(|e| io(&path, e))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| io(&path, e))?;
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(|e| io(&path, e))?;
            }
        }
        Ok(())
    }

    fn write_hba(&self, ssl_only: bool) -> Result<(), TestkitError> {
        let mut hba =
            String::from("# Written by tidepool-testkit: one authentication method per role.\n");
        let host = if ssl_only { "hostssl" } else { "host" };
        for user in PgUser::ALL {
            let (name, method) = (user.name(), user.auth_method());
            let _ = writeln!(hba, "local all {name} {method}");
            let _ = writeln!(hba, "{host} all {name} 127.0.0.1/32 {method}");
        }
        hba.push_str("local replication postgres trust\n");
        hba.push_str("host replication postgres 127.0.0.1/32 trust\n");
        // Truncating initdb's file in place keeps its owner (the server's
        // account) able to read it.
        let path = self.data_dir.join("pg_hba.conf");
        std::fs::write(&path, hba)
            .map_err(|e| TestkitError::new(format!("cannot write {}: {e}", path.display())))
    }

    /// Environment and credentials shared by initdb and postgres.
    fn prepare(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        clear_libpq_env(cmd);
        // English messages: the port-conflict check reads the log.
        cmd.current_dir(self.proc.dir()).env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            // std also drops supplementary groups when leaving root.
            cmd.uid(uid).gid(gid);
        }
    }

    fn start_on_free_port(&mut self) -> Result<(), TestkitError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.port = free_port();
            let offset = self.launch()?;
            match self.wait_ready(offset) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.proc.kill9();
                    let lost_port = log_since(&self.log, offset).contains("could not bind");
                    if !lost_port || attempt >= PORT_ATTEMPTS {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Spawns the postmaster; returns the log length before it, so that
    /// errors can quote just this run's output.
    fn launch(&self) -> Result<u64, TestkitError> {
        let offset = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let mut cmd = Command::new(&self.bins.postgres);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.socket_dir());
        for setting in [
            "listen_addresses=127.0.0.1",
            // Durability is pointless for a throwaway cluster and costs
            // seconds per test run.
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "max_connections=200",
            "shared_buffers=32MB",
            // Keeps dynamic shared memory in the data directory, so a
            // killed server leaves nothing behind in /dev/shm.
            "dynamic_shared_memory_type=mmap",
            // JIT compilation makes tiny test queries slower, not faster.
            "jit=off",
            "logging_collector=off",
        ] {
            cmd.arg("-c").arg(setting);
        }
        self.prepare(&mut cmd);
        self.proc.spawn(cmd, &self.log)?;
        Ok(offset)
    }

    /// Polls until the server accepts connections on TCP and on its own
    /// socket (the socket is what proves that the listener is ours and not
    /// some other process holding the port).
    fn wait_ready(&self, log_offset: u64) -> Result<(), TestkitError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(status) = self.proc.exit_status() {
                return Err(TestkitError::new(format!(
                    "postgres on port {} exited during startup ({status}){}; log ({}):\n{}",
                    self.port,
                    self.run_as_hint(),
                    self.log.display(),
                    log_tail(&self.log, log_offset)
                )));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && self.socket_ready()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::new(format!(
                    "postgres on port {} not ready after {} s; log ({}):\n{}",
                    self.port,
                    READY_TIMEOUT.as_secs(),
                    self.log.display(),
                    log_tail(&self.log, log_offset)
                )));
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn socket_ready(&self) -> bool {
        let mut cmd = Command::new(&self.bins.pg_isready);
        cmd.arg("-q")
            .arg("-h")
            .arg(self.socket_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", PgUser::Super.name(), "-d", "postgres", "-t", "2"]);
        clear_libpq_env(&mut cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn provision(&self) -> Result<(), TestkitError> {
        let mut sql = String::new();
        let _ = writeln!(
            sql,
            "ALTER ROLE {} PASSWORD '{}';",
            PgUser::Super.name(),
            PgUser::Super.password()
        );
        let others: Vec<PgUser> = PgUser::ALL
            .into_iter()
            .filter(|u| *u != PgUser::Super)
            .collect();
        for user in &others {
            let _ = writeln!(
                sql,
                "SET password_encryption = '{}';\nCREATE ROLE {} LOGIN PASSWORD '{}';",
                user.password_encryption(),
                user.name(),
                user.password()
            );
        }
        let grantees = others
            .iter()
            .map(|u| u.name())
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            sql,
            "CREATE DATABASE {DATABASE} OWNER {};\n\
             GRANT ALL PRIVILEGES ON DATABASE {DATABASE} TO {grantees};\n\
             \\connect {DATABASE}\n\
             GRANT ALL ON SCHEMA public TO {grantees};\n\
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO {grantees};\n\
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO {grantees};\n\
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO {grantees};\n\
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TYPES TO {grantees};",
            PgUser::Super.name()
        );
        self.try_psql("postgres", &sql).map(drop)
    }

    fn run_as_hint(&self) -> String {
        match self.run_as {
            Some(_) => format!(
                " (running as `{UNPRIVILEGED_USER}`, which needs to be able to enter {})",
                self.proc.dir().display()
            ),
            None => String::new(),
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        // The directory goes with `self.proc`.
    }
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("port", &self.port)
            .field("dir", &self.proc.dir())
            .finish_non_exhaustive()
    }
}

/// libpq reads these from the environment; a developer's own settings
/// (PGPASSWORD, PGSSLMODE, PGOPTIONS, …) must not leak into the testkit's
/// connections, and PGDATA must not confuse the server tools.
fn clear_libpq_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(key);
        }
    }
}

/// Runs `cmd` feeding `input` on stdin from another thread, so that a large
/// input and a large output cannot deadlock each other.
fn run_with_stdin(mut cmd: Command, input: &str) -> std::io::Result<std::process::Output> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || {
        // psql stops reading at the first error; a broken pipe then is
        // expected and the exit status tells the story.
        let _ = stdin.write_all(input.as_bytes());
    });
    let output = child.wait_with_output();
    let _ = writer.join();
    output
}
