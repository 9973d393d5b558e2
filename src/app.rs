//! `App`: one builder that wires a service together. It owns the worker
//! count and hands it to the server and to every pool (so they cannot
//! disagree), reads the configuration file and the environment, declares
//! the PostgreSQL and Redis pools, starts the supervisor with each pool's
//! autoscale settings, serves `/metrics` and `/health`, runs a start-up
//! hook (schema, seeds) before listening, and drains on SIGINT/SIGTERM.
//!
//! ```no_run
//! use tidepool::app::{App, Pools};
//! use tidepool::drivers::pool::pg::PgManager;
//! use tidepool::drivers::pool::LocalPool;
//! use tidepool::{Request, Router};
//!
//! struct State {
//!     pg: LocalPool<PgManager>,
//! }
//!
//! async fn count(_: &Request<'_>, st: &State) -> Result<String, tidepool::Status> {
//!     let mut c = st.pg.get().await.map_err(|_| tidepool::Status::SERVICE_UNAVAILABLE)?;
//!     let row = c.query_one("SELECT count(*) FROM todos", &[]).await
//!         .map_err(|_| tidepool::Status::INTERNAL_SERVER_ERROR)?;
//!     Ok(row.get::<i64>(0).to_string())
//! }
//!
//! fn main() -> Result<(), tidepool::app::AppError> {
//!     App::new()
//!         .listen("127.0.0.1:8080")
//!         .config_file("app.toml") // [pools.pg] max_open = 16, ...
//!         .postgres("pg", "postgres://app@127.0.0.1/app")
//!         .on_start(async |db| {
//!             let mut c = db.postgres("pg").await?;
//!             c.batch_execute("CREATE TABLE IF NOT EXISTS todos (id bigserial PRIMARY KEY)").await?;
//!             Ok(())
//!         })
//!         .run(|pools: &Pools| Router::new(State { pg: pools.pg("pg") }).get("/count", count))
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

use tidepool_drivers::cache::{Cache, CacheStats, LocalCache};
use tidepool_drivers::fleet::{Coordinator, FleetConfig, FleetState, Leased};
use tidepool_drivers::pg;
use tidepool_drivers::pool::pg::{PgManager, PgSharedManager, WarmupSlots};
use tidepool_drivers::pool::redis::RedisManager;
use tidepool_drivers::pool::supervised::Probe;
use tidepool_drivers::pool::{LocalPool, Pool, PoolConfig, PoolStats};
use tidepool_drivers::redis;
use tidepool_engine::http::{HttpStats, WorkerStats};
use tidepool_engine::rt;
use tidepool_engine::workers::{default_workers, on_termination_signal};
use tidepool_engine::{HttpConfig, Method, Response, Router, Server, ServerHandle};
use tidepool_supervisor::{
    PoolAutoscale, SupervisedPool, Supervisor, SupervisorConfig, SupervisorState,
};

use crate::config::Settings;
use crate::metrics::{self, CacheWindows, Exposition, PoolWindows};

/// Why an app could not start, naming what failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError(pub String);

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AppError {}

fn err(what: impl fmt::Display) -> AppError {
    AppError(what.to_string())
}

/// A pool as declared: its kind and where it connects (a URL that did not
/// parse is reported when the app starts).
enum Target {
    Pg(Result<pg::Config, String>),
    PgShared(Result<pg::Config, String>),
    Redis(Result<redis::Config, String>),
}

type Edit<T> = Box<dyn FnOnce(&mut T)>;

struct Declared {
    name: String,
    target: Target,
    config: PoolConfig,
    autoscale: PoolAutoscale,
    warmup_slots: Option<WarmupSlots>,
    /// Applied after the settings (command-line flags, which win).
    config_edits: Vec<Edit<PoolConfig>>,
    autoscale_edits: Vec<Edit<PoolAutoscale>>,
}

/// A pool as built.
#[derive(Clone)]
enum Built {
    Pg(Pool<PgManager>),
    PgShared(Pool<PgSharedManager>),
    Redis(Pool<RedisManager>),
}

impl Built {
    fn stats(&self) -> PoolStats {
        match self {
            Built::Pg(p) => p.stats(),
            Built::PgShared(p) => p.stats(),
            Built::Redis(p) => p.stats(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Built::Pg(_) => "postgres",
            Built::PgShared(_) => "postgres_shared",
            Built::Redis(_) => "redis",
        }
    }
}

type StartHook = Box<dyn FnOnce(&Startup) -> Pin<Box<dyn Future<Output = HookResult> + '_>>>;

/// What the start-up hook returns: any error stops the start.
pub type HookResult = Result<(), Box<dyn std::error::Error>>;

/// The app's own settings, from the `[app]` table of the configuration
/// (or `TIDEPOOL_APP__LISTEN` and the like); what the builder was told
/// explicitly wins over them.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppSettings {
    /// The address to serve on. Default `127.0.0.1:8080`.
    pub listen: String,
    /// Worker threads; 0, the default, is one per CPU the process may use.
    pub workers: usize,
    /// Pin workers to CPUs. Default true.
    pub pin_workers: bool,
}

impl Default for AppSettings {
    fn default() -> Self {
        AppSettings {
            listen: "127.0.0.1:8080".into(),
            workers: 0,
            pin_workers: true,
        }
    }
}

/// A service being put together; [`App::run`] starts it.
pub struct App {
    listen: Option<String>,
    workers: Option<usize>,
    pin: Option<bool>,
    config_file: Option<PathBuf>,
    settings: Option<Settings>,
    http: HttpConfig,
    pools: Vec<Declared>,
    on_start: Option<StartHook>,
    metrics_path: Option<&'static str>,
    health_path: Option<&'static str>,
    supervisor: SupervisorConfig,
    caches: Vec<(Cache, String)>,
    server: Vec<Box<dyn FnOnce(Server) -> Server>>,
    /// Pools the settings may name though not declared (see `optional_pools`).
    optional: Vec<String>,
    fleet: Option<FleetConfig>,
}

impl Default for App {
    fn default() -> Self {
        App::new()
    }
}

impl App {
    /// Listens on 127.0.0.1:8080 with one worker per CPU this process may
    /// use (its cgroup's quota and CPU set), `/metrics` and `/health`
    /// served, settings from `TIDEPOOL_*` variables.
    pub fn new() -> App {
        App {
            listen: None,
            workers: None,
            pin: None,
            config_file: None,
            settings: None,
            http: HttpConfig::default(),
            pools: Vec::new(),
            on_start: None,
            metrics_path: Some("/metrics"),
            health_path: Some("/health"),
            supervisor: SupervisorConfig::default(),
            caches: Vec::new(),
            server: Vec::new(),
            optional: Vec::new(),
            fleet: None,
        }
    }

    /// The address to serve on (`"0.0.0.0:8080"`; port 0 picks one).
    pub fn listen(mut self, addr: impl Into<String>) -> App {
        self.listen = Some(addr.into());
        self
    }

    /// Worker threads (default: one per CPU the process may run on).
    pub fn workers(mut self, n: usize) -> App {
        self.workers = Some(n);
        self
    }

    /// Whether workers are pinned to CPUs (default yes).
    pub fn pin_workers(mut self, pin: bool) -> App {
        self.pin = Some(pin);
        self
    }

    /// Settings from this TOML file (and then the environment): `[http]`,
    /// `[pools.<name>]`, `[pools.<name>.autoscale]`; see [`crate::config`].
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> App {
        self.config_file = Some(path.into());
        self
    }

    /// Settings already read (instead of [`config_file`](Self::config_file)).
    pub fn settings(mut self, settings: Settings) -> App {
        self.settings = Some(settings);
        self
    }

    /// The HTTP limits and timeouts to start from (the settings' `[http]`
    /// keys are applied over them).
    pub fn http(mut self, config: HttpConfig) -> App {
        self.http = config;
        self
    }

    fn declare(mut self, name: &str, target: Target) -> App {
        self.pools.push(Declared {
            name: name.to_string(),
            target,
            config: PoolConfig::default(),
            autoscale: PoolAutoscale::default(),
            warmup_slots: None,
            config_edits: Vec::new(),
            autoscale_edits: Vec::new(),
        });
        self
    }

    /// A PostgreSQL pool of exclusive connections (transactions, session
    /// state), at `url` (`postgres://user:pass@host:port/db?sslmode=…`).
    pub fn postgres(self, name: &str, url: &str) -> App {
        let c = pg::Config::from_url(url).map_err(|e| e.to_string());
        self.declare(name, Target::Pg(c))
    }

    /// As [`postgres`](Self::postgres), from a configuration built in code.
    pub fn postgres_config(self, name: &str, config: pg::Config) -> App {
        self.declare(name, Target::Pg(Ok(config)))
    }

    /// A PostgreSQL pool whose connections many callers share, their
    /// statements pipelined (point queries; no transactions).
    pub fn postgres_shared(self, name: &str, url: &str) -> App {
        let c = pg::Config::from_url(url).map_err(|e| e.to_string());
        self.declare(name, Target::PgShared(c))
    }

    /// As [`postgres_shared`](Self::postgres_shared), from a configuration
    /// built in code.
    pub fn postgres_shared_config(self, name: &str, config: pg::Config) -> App {
        self.declare(name, Target::PgShared(Ok(config)))
    }

    /// A Redis pool (`redis://` or `rediss://`).
    pub fn redis(self, name: &str, url: &str) -> App {
        let c = redis::Config::from_url(url).map_err(|e| e.to_string());
        self.declare(name, Target::Redis(c))
    }

    /// As [`redis`](Self::redis), from a configuration built in code (a
    /// CA file for `rediss://`, a client name).
    pub fn redis_config(self, name: &str, config: redis::Config) -> App {
        self.declare(name, Target::Redis(Ok(config)))
    }

    /// Pools this app declares only sometimes (when a flag gives their
    /// database): settings naming them are accepted, and checked, when
    /// they are not declared.
    pub fn optional_pools(mut self, names: &[&str]) -> App {
        self.optional.extend(names.iter().map(|n| n.to_string()));
        self
    }

    /// Changes pool `name`'s configuration after the settings were applied
    /// (command-line flags, which win over the file and the environment).
    pub fn override_pool(mut self, name: &str, f: impl FnOnce(&mut PoolConfig) + 'static) -> App {
        self.declared(name).config_edits.push(Box::new(f));
        self
    }

    /// Changes pool `name`'s autoscaling after the settings were applied.
    pub fn override_autoscale(
        mut self,
        name: &str,
        f: impl FnOnce(&mut PoolAutoscale) + 'static,
    ) -> App {
        self.declared(name).autoscale_edits.push(Box::new(f));
        self
    }

    /// PostgreSQL pool `name` warms up holding one of a cluster's warm-up
    /// slots (an advisory lock), so that a fleet does not open all its
    /// connections at once. Panics if no pool of that name was declared.
    pub fn warmup_slots(mut self, name: &str, slots: WarmupSlots) -> App {
        self.declared(name).warmup_slots = Some(slots);
        self
    }

    /// A cache over Redis pool `redis` (declared before): reported in
    /// `/metrics`, and each worker's handle comes from [`Pools::cache`].
    pub fn cache(mut self, cache: Cache, redis: &str) -> App {
        self.caches.push((cache, redis.to_string()));
        self
    }

    /// Serves HTTPS with this configuration (see `tidepool::engine::tls`).
    pub fn tls(mut self, config: Arc<tidepool_engine::tls::rustls::ServerConfig>) -> App {
        self.http.tls = Some(config);
        self
    }

    /// Adjusts the server before it starts (its I/O backend, held waits).
    pub fn server(mut self, f: impl FnOnce(Server) -> Server + 'static) -> App {
        self.server.push(Box::new(f));
        self
    }

    fn declared(&mut self, name: &str) -> &mut Declared {
        self.pools
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("pool `{name}` is not declared (declare it first)"))
    }

    /// The configuration pool `name` starts from (the settings' keys are
    /// applied over it). Panics if no pool of that name was declared.
    pub fn pool_config(mut self, name: &str, config: PoolConfig) -> App {
        self.declared(name).config = config;
        self
    }

    /// The autoscaling pool `name` starts from (the settings' keys are
    /// applied over it). Panics if no pool of that name was declared.
    pub fn autoscale(mut self, name: &str, autoscale: PoolAutoscale) -> App {
        self.declared(name).autoscale = autoscale;
        self
    }

    /// Runs once before the server listens, on a runtime of its own, with
    /// fresh connections to the declared databases: create the schema,
    /// seed data. An error stops the start.
    pub fn on_start<F>(mut self, f: F) -> App
    where
        F: AsyncFnOnce(&Startup) -> HookResult + 'static,
    {
        self.on_start = Some(Box::new(move |s: &Startup| Box::pin(f(s))));
        self
    }

    /// Where the Prometheus exposition is served (`None`: not at all).
    pub fn metrics_path(mut self, path: Option<&'static str>) -> App {
        self.metrics_path = path;
        self
    }

    /// Where `ok` is served for health checks (`None`: not at all).
    pub fn health_path(mut self, path: Option<&'static str>) -> App {
        self.health_path = path;
        self
    }

    /// Shares a budget of PostgreSQL connections with every instance that
    /// names the same fleet (see `tidepool_drivers::fleet` and
    /// docs/fleet.md): this instance's PostgreSQL pools together hold no
    /// more than its lease, which follows its demand. The lease is kept in
    /// the first PostgreSQL pool's database, on a connection of its own.
    pub fn fleet(mut self, config: FleetConfig) -> App {
        self.fleet = Some(config);
        self
    }

    /// The supervisor's sampling and restart settings.
    pub fn supervisor(mut self, config: SupervisorConfig) -> App {
        self.supervisor = config;
        self
    }

    /// Starts the service and serves until SIGINT or SIGTERM, then lets
    /// requests in flight finish (`HttpConfig::shutdown_grace`) and stops.
    /// `routes` runs on each worker and builds its router from the
    /// worker's shards of the pools.
    pub fn run<S, F>(self, routes: F) -> Result<(), AppError>
    where
        S: 'static,
        F: Fn(&Pools) -> Router<S> + Send + Sync + 'static,
    {
        // Before any thread starts: they inherit the blocked signals.
        let (tx, rx) = std::sync::mpsc::channel();
        on_termination_signal(move || {
            let _ = tx.send(());
        })
        .map_err(|e| err(format!("cannot install signal handling: {e}")))?;
        let running = self.start(routes)?;
        let io: Vec<String> = rt::backend::selections()
            .iter()
            .map(|s| format!("{} ({})", s.backend, s.reason))
            .collect();
        tracing::info!(
            addr = %running.local_addr(),
            workers = running.workers,
            io = %io.join(", "),
            "listening"
        );
        let _ = rx.recv();
        tracing::info!("shutting down");
        running.shutdown();
        Ok(())
    }

    /// Starts the service and returns at once (for tests and embedders,
    /// which stop it with [`Running::shutdown`]); no signal handling.
    pub fn start<S, F>(self, routes: F) -> Result<Running, AppError>
    where
        S: 'static,
        F: Fn(&Pools) -> Router<S> + Send + Sync + 'static,
    {
        let settings = match (self.settings, &self.config_file) {
            (Some(s), _) => s,
            (None, file) => Settings::load(file.as_deref()).map_err(err)?,
        };
        let mut names: Vec<&str> = self.pools.iter().map(|p| p.name.as_str()).collect();
        names.extend(self.optional.iter().map(String::as_str));
        settings.check(&["app"], &names).map_err(err)?;
        let own = settings
            .section("app", AppSettings::default())
            .map_err(err)?;
        let listen_text = self.listen.unwrap_or(own.listen);
        let workers = match self.workers.unwrap_or(own.workers) {
            0 => default_workers(),
            n => n,
        };
        let pin = self.pin.unwrap_or(own.pin_workers);
        for name in &self.optional {
            settings.pool(name, PoolConfig::default()).map_err(err)?;
            settings
                .autoscale(name, PoolAutoscale::default())
                .map_err(err)?;
        }
        let listen: SocketAddr = listen_text
            .parse()
            .map_err(|e| err(format!("listen address {listen_text:?}: {e}")))?;
        let http = settings.http(self.http).map_err(err)?;
        let mut startup = Startup::default();
        for p in &self.pools {
            let bad = |e: &String| err(format!("pool `{}`: {e}", p.name));
            match &p.target {
                Target::Pg(c) | Target::PgShared(c) => {
                    startup
                        .pg
                        .push((p.name.clone(), c.as_ref().map_err(bad)?.clone()));
                }
                Target::Redis(c) => {
                    startup
                        .redis
                        .push((p.name.clone(), c.as_ref().map_err(bad)?.clone()));
                }
            }
        }
        if let Some(hook) = self.on_start {
            rt::block_on(hook(&startup)).map_err(|e| err(format!("start-up hook: {e}")))?;
        }
        let mut built = Vec::new();
        let mut supervised: Vec<(Box<dyn SupervisedPool>, PoolAutoscale, usize)> = Vec::new();
        for p in self.pools {
            let mut config = settings.pool(&p.name, p.config).map_err(err)?;
            for edit in p.config_edits {
                edit(&mut config);
            }
            let mut autoscale = settings.autoscale(&p.name, p.autoscale).map_err(err)?;
            for edit in p.autoscale_edits {
                edit(&mut autoscale);
            }
            let pool = build(&p.name, p.target, p.warmup_slots, config, workers)?;
            let (probe, min_idle): (Box<dyn SupervisedPool>, usize) = match &pool {
                Built::Pg(x) => (Box::new(Probe::new(x.clone())), x.config().min_idle),
                Built::PgShared(x) => (Box::new(Probe::new(x.clone())), x.config().min_idle),
                Built::Redis(x) => (Box::new(Probe::new(x.clone())), x.config().min_idle),
            };
            supervised.push((probe, autoscale, min_idle));
            built.push((p.name, pool));
        }
        // Before the supervisor and the workers: the pools' ceilings are 0
        // until the first lease, so nothing is opened outside the budget.
        let fleet = match self.fleet {
            None => None,
            Some(cfg) => {
                let mut leased: Vec<Arc<dyn Leased>> = Vec::new();
                let mut db = None;
                for (_, p) in &built {
                    match p {
                        Built::Pg(x) => {
                            db.get_or_insert_with(|| x.manager().config().clone());
                            leased.push(Arc::new(x.clone()));
                        }
                        Built::PgShared(x) => {
                            db.get_or_insert_with(|| x.manager().config().clone());
                            leased.push(Arc::new(x.clone()));
                        }
                        Built::Redis(_) => {}
                    }
                }
                let db = db.ok_or_else(|| {
                    err(format!(
                        "fleet `{}`: no PostgreSQL pool to budget",
                        cfg.name
                    ))
                })?;
                let name = cfg.name.clone();
                let c = Coordinator::new(cfg, &db, leased);
                Some((name, c.state(), Mutex::new(Some(c))))
            }
        };
        let supervisor = Supervisor::start(self.supervisor, supervised).map_err(err)?;
        for (cache, redis) in &self.caches {
            match built.iter().find(|(n, _)| n == redis) {
                Some((_, Built::Redis(_))) => {}
                _ => {
                    return Err(err(format!(
                        "cache `{}`: no Redis pool `{redis}`",
                        cache.name()
                    )))
                }
            }
        }
        let shared = Arc::new(Shared {
            pools: built,
            caches: self.caches,
            windows: PoolWindows::default(),
            cache_windows: CacheWindows::default(),
            http_stats: OnceLock::new(),
            supervisor: supervisor.state(),
            fleet: fleet.as_ref().map(|(n, st, _)| (n.clone(), st.clone())),
        });
        let coordinator = fleet.map(|(_, _, c)| c);
        let for_workers = shared.clone();
        let (metrics_path, health_path) = (self.metrics_path, self.health_path);
        let mut server = Server::bind(listen)
            .workers(workers)
            .pin_workers(pin)
            .http_config(http);
        for f in self.server {
            server = f(server);
        }
        let server = server
            .serve(move |info| {
                if info.index == 0 {
                    // The lease connection lives on the first worker's ring.
                    if let Some(c) = coordinator.as_ref().and_then(|c| c.lock().unwrap().take()) {
                        drop(rt::spawn(c.run()));
                    }
                }
                let pools = Pools {
                    index: info.index,
                    shared: for_workers.clone(),
                };
                let mut router = routes(&pools);
                if let Some(path) = health_path {
                    router = router.route_sync(Method::Get, path, |_, _| "ok");
                }
                if let Some(path) = metrics_path {
                    let shared = for_workers.clone();
                    router = router.route_sync(Method::Get, path, move |_, _| shared.exposition());
                }
                router
            })
            .map_err(|e| err(format!("cannot serve on {listen}: {e}")))?;
        let _ = shared.http_stats.set(server.worker_stats());
        Ok(Running {
            server,
            supervisor,
            shared,
            workers,
        })
    }
}

fn build(
    name: &str,
    target: Target,
    slots: Option<WarmupSlots>,
    config: PoolConfig,
    workers: usize,
) -> Result<Built, AppError> {
    let bad = |e: &dyn fmt::Display| err(format!("pool `{name}`: {e}"));
    Ok(match target {
        Target::Pg(c) => {
            let mut m = PgManager::new(c.map_err(|e| bad(&e))?);
            if let Some(s) = slots {
                m = m.with_warmup_slots(s);
            }
            Built::Pg(Pool::new(name, config, m, workers).map_err(|e| bad(&e))?)
        }
        Target::PgShared(c) => {
            let mut m = PgSharedManager::new(c.map_err(|e| bad(&e))?);
            if let Some(s) = slots {
                m = m.with_warmup_slots(s);
            }
            Built::PgShared(Pool::new(name, config, m, workers).map_err(|e| bad(&e))?)
        }
        Target::Redis(c) => {
            let m = RedisManager::new(c.map_err(|e| bad(&e))?, config.max_in_flight);
            Built::Redis(Pool::new(name, config, m, workers).map_err(|e| bad(&e))?)
        }
    })
}

/// What every worker shares: the pools, and what `/metrics` reports.
struct Shared {
    pools: Vec<(String, Built)>,
    /// Each cache, with the Redis pool it uses.
    caches: Vec<(Cache, String)>,
    windows: PoolWindows,
    cache_windows: CacheWindows,
    http_stats: OnceLock<Vec<Arc<WorkerStats>>>,
    supervisor: Arc<SupervisorState>,
    /// The fleet's name and this instance's lease, with `App::fleet`.
    fleet: Option<(String, Arc<FleetState>)>,
}

impl Shared {
    fn exposition(&self) -> Response {
        let mut e = Exposition::new();
        if let Some(stats) = self.http_stats.get() {
            metrics::http(&mut e, &HttpStats::sum(stats.iter().map(|s| &**s)));
            metrics::routes(&mut e, stats);
        }
        metrics::io_backend(&mut e);
        let pools: Vec<PoolStats> = self.pools.iter().map(|(_, p)| p.stats()).collect();
        metrics::pools(&mut e, &self.windows, &pools);
        if !self.caches.is_empty() {
            let caches: Vec<CacheStats> = self.caches.iter().map(|(c, _)| c.stats()).collect();
            metrics::caches(&mut e, &self.cache_windows, &caches);
        }
        metrics::supervisor(&mut e, &self.supervisor);
        if let Some((name, state)) = &self.fleet {
            metrics::fleet(&mut e, name, state);
        }
        Response::bytes("text/plain; version=0.0.4", e.finish().into_bytes())
    }
}

/// One worker's view of the pools, for building its router: each call
/// returns this worker's shard.
pub struct Pools {
    index: usize,
    shared: Arc<Shared>,
}

impl Pools {
    /// The worker's index (0-based).
    pub fn worker(&self) -> usize {
        self.index
    }

    fn find(&self, name: &str, kind: &str) -> &Built {
        let found = self.shared.pools.iter().find(|(n, _)| n == name);
        match found {
            Some((_, p)) if p.kind() == kind => p,
            Some((_, p)) => panic!("pool `{name}` is a {} pool, not {kind}", p.kind()),
            None => {
                let names: Vec<&str> = self.shared.pools.iter().map(|(n, _)| n.as_str()).collect();
                panic!("no pool `{name}` (declared: {})", names.join(", "))
            }
        }
    }

    /// This worker's shard of PostgreSQL pool `name` (declared with
    /// `postgres`). Panics, failing the start, if there is none.
    pub fn pg(&self, name: &str) -> LocalPool<PgManager> {
        match self.find(name, "postgres") {
            Built::Pg(p) => p.local(self.index),
            _ => unreachable!("kind checked"),
        }
    }

    /// This worker's shard of shared PostgreSQL pool `name`.
    pub fn pg_shared(&self, name: &str) -> LocalPool<PgSharedManager> {
        match self.find(name, "postgres_shared") {
            Built::PgShared(p) => p.local(self.index),
            _ => unreachable!("kind checked"),
        }
    }

    /// This worker's shard of Redis pool `name`.
    pub fn redis(&self, name: &str) -> LocalPool<RedisManager> {
        match self.find(name, "redis") {
            Built::Redis(p) => p.local(self.index),
            _ => unreachable!("kind checked"),
        }
    }

    /// Whether a pool named `name` was declared (for pools an app declares
    /// only when configured).
    pub fn has(&self, name: &str) -> bool {
        self.shared.pools.iter().any(|(n, _)| n == name)
    }

    /// This worker's handle to cache `name` (registered with `App::cache`),
    /// on this worker's shard of its Redis pool.
    pub fn cache(&self, name: &str) -> LocalCache {
        let (cache, redis) = self
            .shared
            .caches
            .iter()
            .find(|(c, _)| c.name() == name)
            .unwrap_or_else(|| panic!("no cache `{name}`"));
        cache.local(self.redis(redis))
    }

    /// The supervisor's state (its heartbeat, decisions, and fault injection
    /// for drills).
    pub fn supervisor(&self) -> Arc<SupervisorState> {
        self.shared.supervisor.clone()
    }
}

/// What the start-up hook may use: fresh connections to the declared
/// databases (closed when dropped; not from the pools, which do not run yet).
#[derive(Default)]
pub struct Startup {
    pg: Vec<(String, pg::Config)>,
    redis: Vec<(String, redis::Config)>,
}

impl Startup {
    /// A connection to PostgreSQL pool `name`'s database.
    pub async fn postgres(&self, name: &str) -> Result<pg::Client, Box<dyn std::error::Error>> {
        let (_, c) = self
            .pg
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| format!("no PostgreSQL pool `{name}`"))?;
        Ok(pg::Client::connect(c).await?)
    }

    /// A connection to Redis pool `name`'s server.
    pub async fn redis(&self, name: &str) -> Result<redis::Connection, Box<dyn std::error::Error>> {
        let (_, c) = self
            .redis
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| format!("no Redis pool `{name}`"))?;
        Ok(redis::Connection::connect(c).await?)
    }
}

/// A started app (from [`App::start`]).
pub struct Running {
    server: ServerHandle,
    supervisor: Supervisor,
    shared: Arc<Shared>,
    workers: usize,
}

impl Running {
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The pools' numbers, as `/metrics` reports them.
    pub fn pool_stats(&self) -> Vec<PoolStats> {
        self.shared.pools.iter().map(|(_, p)| p.stats()).collect()
    }

    /// This instance's fleet lease, with `App::fleet`.
    pub fn fleet(&self) -> Option<Arc<FleetState>> {
        self.shared.fleet.as_ref().map(|(_, s)| s.clone())
    }

    /// Stops listening, lets requests in flight finish, stops the
    /// supervisor. A fleet lease is handed back first (for at most a
    /// second), so other instances may take it at once.
    pub fn shutdown(self) {
        if let Some((_, state)) = &self.shared.fleet {
            state.stop();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
            while !state.stopped() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        self.server.shutdown();
        self.supervisor.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apps_own_settings_come_from_its_table_and_the_builder_wins() {
        let s = Settings::from_toml(
            "[app]\nlisten = \"127.0.0.1:0\"\nworkers = 1\npin_workers = false\n",
            "app.toml",
        )
        .unwrap();
        let running = App::new()
            .settings(s.clone())
            .start(|_| Router::new(()).get("/x", async |_, _| "x"))
            .unwrap();
        assert_eq!(running.workers(), 1, "from [app]");
        assert_ne!(running.local_addr().port(), 0);
        running.shutdown();
        let running = App::new()
            .settings(s)
            .workers(2)
            .start(|_| Router::new(()).get("/x", async |_, _| "x"))
            .unwrap();
        assert_eq!(running.workers(), 2, "the builder wins");
        running.shutdown();
        let bad = Settings::from_toml("[app]\nlistn = \"x\"\n", "app.toml").unwrap();
        let e = App::new()
            .settings(bad)
            .start(|_| Router::new(()))
            .err()
            .expect("refused");
        assert!(e.0.contains("app.listn"), "{e}");
    }

    #[test]
    fn a_pool_the_settings_name_must_be_declared_or_optional() {
        let s = Settings::from_toml("[pools.pg]\nmax_open = 2\n", "app.toml").unwrap();
        let e = App::new()
            .settings(s.clone())
            .listen("127.0.0.1:0")
            .start(|_| Router::new(()))
            .err()
            .expect("refused");
        assert!(e.0.contains("unknown pool `pg`"), "{e}");
        let running = App::new()
            .settings(s)
            .listen("127.0.0.1:0")
            .workers(1)
            .optional_pools(&["pg"])
            .start(|_| Router::new(()))
            .unwrap();
        running.shutdown();
    }
}
