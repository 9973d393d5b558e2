//! The HTTP server: one SO_REUSEPORT listener and one accept loop per
//! worker, connection tasks, limits, graceful shutdown.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::date::DateCache;
use super::parse::Limits;
use super::route_stats::RouteStats;
use super::router::Router;
use super::serve::{serve, Shared};
use super::stats::{add, HttpStats, WorkerStats};
use crate::rt::net::TcpListener;
use crate::rt::{self, time};
use crate::workers::{Runtime, RuntimeConfig, ShutdownHandle, WorkerInfo};

/// Limits and timeouts of the HTTP server. Every default is finite.
///
/// It reads from a configuration file (TOML, as `tidepool::config` loads
/// it) with durations written with units: `header_timeout = "5s"`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Request-line, head-size and header-count limits (414 / 431; see
    /// [`Limits`] for their defaults).
    pub limits: Limits,
    /// Largest request body (413 beyond it; default 1 MiB).
    pub max_body: u64,
    /// Requests handled from one read before their responses are sent
    /// (default 128).
    pub max_pipelined: usize,
    /// Open connections per worker; more are closed at once (default 16,384).
    pub max_connections: usize,
    /// From a request's first byte until its head is complete (slowloris;
    /// default 10 s).
    #[serde(with = "crate::config::duration")]
    pub header_timeout: Duration,
    /// Extra time for the body once the head is in (default 30 s).
    #[serde(with = "crate::config::duration")]
    pub body_timeout: Duration,
    /// A keep-alive connection with no request in progress (default 60 s).
    #[serde(with = "crate::config::duration")]
    pub idle_timeout: Duration,
    /// Sending responses to a client that does not read (default 30 s).
    #[serde(with = "crate::config::duration")]
    pub write_timeout: Duration,
    /// One async handler's run; past it the request is answered 503 and
    /// the handler's future dropped (default 30 s).
    #[serde(with = "crate::config::duration")]
    pub handler_timeout: Duration,
    /// How long shutdown waits for requests in flight (default 10 s).
    #[serde(with = "crate::config::duration")]
    pub shutdown_grace: Duration,
    /// Initial read buffer per connection (default 4 KiB).
    pub read_buffer: usize,
    /// listen(2) backlog (default 4096).
    pub backlog: i32,
    /// Serve HTTPS with this configuration (see [`crate::tls::server_config`]:
    /// certificates by SNI, ALPN `http/1.1`); `None`, the default, serves
    /// cleartext.
    #[serde(skip)]
    pub tls: Option<Arc<crate::tls::rustls::ServerConfig>>,
    /// From accept until the TLS handshake is done (default 10 s).
    #[serde(with = "crate::config::duration")]
    pub tls_handshake_timeout: Duration,
    /// Count every request by route, method and status, with a duration
    /// histogram (`WorkerStats::routes`; `/metrics` shows it as
    /// `tidepool_http_request_duration_seconds`). Default on.
    pub route_metrics: bool,
    /// Log every request through `tracing` (target `tidepool::access`, level
    /// info: method, path, status, microseconds). Default off.
    pub access_log: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            limits: Limits::default(),
            max_body: 1 << 20,
            max_pipelined: 128,
            max_connections: 16_384,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            handler_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            read_buffer: 4096,
            backlog: 4096,
            tls: None,
            tls_handshake_timeout: Duration::from_secs(10),
            route_metrics: true,
            access_log: false,
        }
    }
}

/// Builds and starts a server.
pub struct Server {
    addr: SocketAddr,
    http: HttpConfig,
    runtime: RuntimeConfig,
}

impl Server {
    pub fn bind(addr: SocketAddr) -> Server {
        Server {
            addr,
            http: HttpConfig::default(),
            runtime: RuntimeConfig::default(),
        }
    }

    /// Worker threads; 0 (the default) means one per allowed CPU.
    pub fn workers(mut self, n: usize) -> Server {
        self.runtime.workers = n;
        self
    }

    /// How long a saturated worker may hold a wait to gather completions
    /// ([`CoreConfig::coalesce_window`](crate::rt::CoreConfig)); zero turns it off.
    pub fn coalesce_window(mut self, window: std::time::Duration) -> Server {
        self.runtime.core.coalesce_window = window;
        self
    }

    /// The I/O backend ([`IoChoice`](crate::rt::IoChoice)): `Auto`, the
    /// default, follows `TIDEPOOL_IO` and otherwise uses io_uring where the
    /// kernel allows it and epoll where not.
    pub fn io(mut self, choice: crate::rt::IoChoice) -> Server {
        self.runtime.core.io = choice;
        self
    }

    pub fn pin_workers(mut self, pin: bool) -> Server {
        self.runtime.pin = pin;
        self
    }

    /// Serves HTTPS (see [`crate::tls::server_config`]).
    pub fn tls(mut self, config: Arc<crate::tls::rustls::ServerConfig>) -> Server {
        self.http.tls = Some(config);
        self
    }

    pub fn http_config(mut self, config: HttpConfig) -> Server {
        self.http = config;
        self
    }

    pub fn runtime_config(mut self, config: RuntimeConfig) -> Server {
        self.runtime = config;
        self
    }

    /// Starts the workers. `app` runs once on each worker thread and builds
    /// that worker's router and state (pools, caches), which never leave it.
    pub fn serve<S, F>(self, app: F) -> io::Result<ServerHandle>
    where
        S: 'static,
        F: Fn(&WorkerInfo) -> Router<S> + Send + Sync + 'static,
    {
        let count = if self.runtime.workers == 0 {
            crate::workers::default_workers()
        } else {
            self.runtime.workers
        };
        // Bound here so that errors (address in use) surface to the caller
        // and port 0 resolves once, to the same port for every worker.
        let first = TcpListener::bind_socket(self.addr, self.http.backlog)?;
        let local = first
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("listener has no inet address"))?;
        let mut sockets = vec![first];
        for _ in 1..count {
            sockets.push(TcpListener::bind_socket(local, self.http.backlog)?);
        }
        let sockets: Vec<_> = sockets
            .into_iter()
            .map(|s| std::sync::Mutex::new(Some(s)))
            .collect();
        let sockets = Arc::new(sockets);
        let stats: Vec<Arc<WorkerStats>> = (0..count).map(|_| Arc::default()).collect();
        let worker_stats = stats.clone();
        let http = self.http.clone();
        let mut rtc = self.runtime.clone();
        rtc.workers = count;
        let runtime = Runtime::start(rtc, move |info| {
            let socket = sockets[info.index].lock().unwrap().take();
            let router = app(&info);
            let stats = worker_stats[info.index].clone();
            let routes = http.route_metrics.then(|| {
                let r = Arc::new(RouteStats::new(router.route_list()));
                let _ = stats.routes.set(r.clone());
                r
            });
            let shared = Rc::new(Shared {
                router,
                config: http.clone(),
                stats,
                routes,
                date: RefCell::new(DateCache::new()),
                open: Cell::new(0),
            });
            async move {
                let Some(socket) = socket else { return };
                match TcpListener::from_socket(socket) {
                    Ok(listener) => accept_loop(listener, shared).await,
                    Err(e) => tracing::error!(
                        worker = info.index,
                        "tidepool: worker {}: cannot take over its listener: {e}",
                        info.index
                    ),
                }
            }
        })?;
        Ok(ServerHandle {
            local,
            runtime,
            stats,
        })
    }
}

async fn accept_loop<S: 'static>(mut listener: TcpListener, shared: Rc<Shared<S>>) {
    let cfg = shared.config.clone();
    loop {
        let outcome = {
            let mut accept = pin!(listener.accept());
            let mut shutdown = pin!(rt::shutdown_signal());
            std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = accept.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                if shutdown.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await
        };
        match outcome {
            None => break,
            Some(Ok(stream)) => {
                if shared.open.get() >= cfg.max_connections {
                    // Closed at once: queueing would only hold the client longer.
                    add(&shared.stats.connections_rejected, 1);
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                rt::spawn(serve(stream, shared.clone()));
            }
            Some(Err(e)) => match e.raw_os_error() {
                // Out of fds: back off instead of spinning on the error.
                Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS)
                | Some(libc::ENOMEM) => {
                    time::sleep(Duration::from_millis(10)).await;
                }
                _ => {}
            },
        }
    }
    drop(listener);
    // Idle connections close on the signal; busy ones finish their request.
    let deadline = Instant::now() + cfg.shutdown_grace;
    while shared.open.get() > 0 && Instant::now() < deadline {
        time::sleep(Duration::from_millis(5)).await;
    }
}

/// A running server.
pub struct ServerHandle {
    local: SocketAddr,
    runtime: Runtime,
    stats: Vec<Arc<WorkerStats>>,
}

impl ServerHandle {
    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Counters summed over every worker.
    pub fn stats(&self) -> HttpStats {
        HttpStats::sum(self.stats.iter().map(|s| &**s))
    }

    /// Each worker's counters, readable from any thread.
    pub fn worker_stats(&self) -> Vec<Arc<WorkerStats>> {
        self.stats.clone()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.runtime.shutdown_handle()
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Stops accepting, lets requests in flight finish (within the grace
    /// period), closes idle connections and joins the workers.
    pub fn shutdown(self) {
        self.runtime.shutdown();
        self.runtime.join();
    }

    /// Waits until the workers end (after a shutdown from a handle or a signal).
    pub fn join(self) {
        self.runtime.join();
    }
}
