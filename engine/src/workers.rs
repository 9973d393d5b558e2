//! N worker threads, one per CPU, each pinned and running its own runtime
//! core; plus process-wide shutdown on SIGINT/SIGTERM.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use crate::rt::{self, CoreConfig, WorkerHandle};

/// What a worker knows about itself when its main future is built.
#[derive(Clone, Debug)]
pub struct WorkerInfo {
    /// 0-based index among the runtime's workers.
    pub index: usize,
    /// Number of workers in the runtime.
    pub count: usize,
    /// CPU the worker is pinned to, if pinning is on.
    pub cpu: Option<usize>,
}

thread_local! {
    static CURRENT_INFO: std::cell::Cell<Option<(usize, usize)>> = const { std::cell::Cell::new(None) };
}

/// The (index, count) of the runtime worker this thread is, if it is one:
/// per-worker state (a pool's shard) checks it was declared for the
/// runtime it runs in.
pub fn current_worker_index() -> Option<(usize, usize)> {
    CURRENT_INFO.with(|c| c.get())
}

/// How many workers and how they run.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Worker count; 0 means [`default_workers`]: one per CPU this process
    /// may run on, within its cgroup's CPU quota.
    pub workers: usize,
    /// Pin each worker to one CPU (round-robin over the allowed set).
    pub pin: bool,
    pub core: CoreConfig,
    /// Thread name prefix.
    pub name: String,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            workers: 0,
            pin: true,
            core: CoreConfig::default(),
            name: "tidepool-worker".into(),
        }
    }
}

/// The CPUs this process may run on (its affinity mask).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..thread::available_parallelism().map_or(1, |n| n.get())).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Workers to run when none is asked for: one per CPU this process may run
/// on, capped by its cgroup's CPU set and CPU quota (see [`crate::cgroup`]),
/// so a container limited to 2 CPUs on a 16-CPU host runs 2.
pub fn default_workers() -> usize {
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let limits = crate::cgroup::limits(&proc_cgroup, std::path::Path::new("/sys/fs/cgroup"));
    crate::cgroup::workers_for(allowed_cpus().len(), limits)
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: as above; the set is fully initialised before the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The text a panic carried, when it was a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// A running set of workers.
pub struct Runtime {
    workers: Vec<WorkerHandle>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Runtime {
    /// Starts the workers; each builds its main future with `make` on its own
    /// thread (so the future need not be `Send`) and runs it to completion.
    /// Fails if any worker cannot set up its ring.
    pub fn start<F, Fut>(config: RuntimeConfig, make: F) -> io::Result<Runtime>
    where
        F: Fn(WorkerInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let cpus = allowed_cpus();
        let count = if config.workers == 0 {
            default_workers()
        } else {
            config.workers
        };
        let make = Arc::new(make);
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let cpu = config.pin.then(|| cpus[index % cpus.len()]);
            let info = WorkerInfo { index, count, cpu };
            let make = make.clone();
            let core = config.core.clone();
            let ready_tx = ready_tx.clone();
            let t = thread::Builder::new()
                .name(format!("{}-{index}", config.name))
                .spawn(move || {
                    if let Some(cpu) = info.cpu {
                        // Best effort: a restricted cgroup may refuse.
                        let _ = pin_current_thread(cpu);
                    }
                    CURRENT_INFO.with(|c| c.set(Some((info.index, info.count))));
                    let started = ready_tx.clone();
                    let cpu = info.cpu;
                    let res = rt::block_on_with(&core, async move {
                        // Building the worker (its router, pools, state) is
                        // part of starting: a panic there fails the start
                        // rather than leaving a worker that serves nothing.
                        let built =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| make(info)));
                        match built {
                            Ok(fut) => {
                                let _ = started.send((index, Ok(rt::current_worker())));
                                tracing::debug!(
                                    worker = index,
                                    cpu = ?cpu,
                                    backend = %rt::io_backend(),
                                    "worker started"
                                );
                                fut.await;
                                tracing::debug!(worker = index, "worker stopped");
                            }
                            Err(panic) => {
                                let why = io::Error::other(format!(
                                    "tidepool: building worker {index} panicked: {}",
                                    panic_message(&*panic)
                                ));
                                let _ = started.send((index, Err(why)));
                            }
                        }
                    });
                    if let Err(e) = res {
                        let _ = ready_tx.send((index, Err(e)));
                    }
                })?;
            threads.push(t);
        }
        drop(ready_tx);
        let mut workers: Vec<Option<WorkerHandle>> = vec![None; count];
        let mut first_err = None;
        for _ in 0..count {
            match ready_rx.recv() {
                Ok((i, Ok(h))) => workers[i] = Some(h),
                Ok((_, Err(e))) => first_err = first_err.or(Some(e)),
                Err(_) => break,
            }
        }
        let rt = Runtime {
            workers: workers.into_iter().flatten().collect(),
            threads,
        };
        if let Some(e) = first_err {
            rt.shutdown();
            rt.join();
            return Err(e);
        }
        Ok(rt)
    }

    pub fn workers(&self) -> &[WorkerHandle] {
        &self.workers
    }

    /// Asks every worker to shut down.
    pub fn shutdown(&self) {
        for w in &self.workers {
            w.shutdown();
        }
    }

    /// A cloneable handle that can shut the runtime down from anywhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            workers: self.workers.clone(),
        }
    }

    /// Waits for every worker thread to finish.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Triggers shutdown of every worker of a runtime.
#[derive(Clone)]
pub struct ShutdownHandle {
    workers: Vec<WorkerHandle>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        for w in &self.workers {
            w.shutdown();
        }
    }
}

static SIGNALS_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Blocks SIGINT and SIGTERM in the calling thread (and so in every thread it
/// starts afterwards) and starts a thread that waits for them and calls
/// `on_signal`. Call it before starting workers.
pub fn on_termination_signal(on_signal: impl Fn() + Send + 'static) -> io::Result<()> {
    if SIGNALS_INSTALLED.swap(true, Ordering::SeqCst) {
        return Err(io::Error::other("signal handling is already installed"));
    }
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        set
    };
    thread::Builder::new()
        .name("tidepool-signals".into())
        .spawn(move || loop {
            let mut sig = 0;
            // SAFETY: `set` is initialised and `sig` is a live c_int.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                on_signal();
            }
        })?;
    Ok(())
}
