//! The per-worker executor: a slab of local tasks, a ready queue, and the
//! loop that alternates between polling tasks and entering the ring once.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

use super::backend::{self, Backend, IoChoice, Selection};
use super::epoll::Poller;
use super::remote::{Remote, RemoteMsg};
use super::time::Timers;
use super::uring::coalesce::{self, Coalesce};
use super::uring::driver::{self as uring_driver, Driver, Wait, RECV_BUFFER_SIZE};

/// Tasks polled per loop turn before the ring is entered again, so a flood
/// of ready tasks cannot starve I/O completions and timers.
const POLL_BUDGET: usize = 512;

/// Configuration of one worker's runtime core.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// Submission queue entries (the completion queue gets four times as many).
    pub ring_entries: u32,
    /// How long a saturated worker's wait may be held to gather completions
    /// that trickle in, so they share one loop turn (and one database
    /// write). Only a worker whose thread would use 98% of a CPU without
    /// it, with 16 or more active connections, holds, and only while
    /// holding does not lower its throughput (see `rt::coalesce`); below
    /// saturation no wait is held, so latency is never traded for CPU the
    /// worker does not need. Zero turns it off; kernels before 6.12 ignore
    /// it. Default 50 µs.
    pub coalesce_window: Duration,
    /// Most completions one wait gathers. Default 32.
    pub coalesce_max: u32,
    /// Whether holding follows the saturation policy or every wait is held
    /// (for tests and for measuring what holding does). Default adaptive.
    pub coalesce_mode: CoalesceMode,
    /// The I/O backend: `Auto` (the default) follows `TIDEPOOL_IO`, else
    /// probes and uses io_uring where it is available, epoll where not
    /// (see [`rt::backend`](super::backend)).
    pub io: IoChoice,
    /// Provided 4 KiB receive buffers per io_uring worker, shared by its
    /// connections' multishot receives (rounded up to a power of two);
    /// 0 makes every receive one-shot into the connection's own buffer.
    /// Default 512 (2 MiB per worker).
    pub recv_buffers: u16,
}

/// When waits are held (see [`CoreConfig::coalesce_window`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CoalesceMode {
    /// Only while the worker is saturated and holding keeps its throughput.
    #[default]
    Adaptive,
    /// Every wait that is not after an idle spell.
    Always,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            ring_entries: 1024,
            coalesce_window: Duration::from_micros(50),
            coalesce_max: 32,
            coalesce_mode: CoalesceMode::Adaptive,
            io: IoChoice::Auto,
            recv_buffers: 512,
        }
    }
}

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

struct Task {
    fut: RefCell<Option<LocalFuture>>,
    waker: Waker,
    queued: Cell<bool>,
}

/// The worker's I/O backend. One per worker, so the size difference costs
/// nothing, and boxing the ring would add a pointer hop to every operation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Reactor {
    Uring(RefCell<Driver>),
    Epoll(RefCell<Poller>),
}

/// Everything a worker thread owns: its reactor, timers, tasks.
pub(crate) struct Core {
    pub(crate) reactor: Reactor,
    pub(crate) selection: Selection,
    pub(crate) timers: RefCell<Timers>,
    tasks: RefCell<Slab<Rc<Task>>>,
    ready: RefCell<VecDeque<usize>>,
    pub(crate) coalesce: RefCell<Coalesce>,
    pub(crate) remote: Arc<Remote>,
    id: usize,
    now: Cell<Instant>,
    main_woken: Cell<bool>,
    shutdown: Cell<bool>,
    shutdown_waiters: RefCell<Slab<Waker>>,
}

static NEXT_CORE_ID: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// Owns the core of the worker this thread runs (set by `block_on`).
    static CURRENT: RefCell<Option<Rc<Core>>> = const { RefCell::new(None) };
    /// The same core as a plain pointer (null when there is none), which is
    /// what `with_core` reads: a `Cell` of a pointer has no destructor, so
    /// reading it is one thread-local load, where `CURRENT` costs a check of
    /// its destructor's registration and a borrow, six times per request.
    static CORE: Cell<*const Core> = const { Cell::new(std::ptr::null()) };
}

/// Runs `f` with this thread's core, if it runs one. The borrow is only
/// lent to `f`, which cannot keep it.
#[inline]
fn with_current<R>(f: impl FnOnce(Option<&Core>) -> R) -> R {
    let core = CORE.get();
    // SAFETY: `CORE` is non-null only from `block_on` storing it to that
    // `block_on`'s `Reset` clearing it, and points into the `Rc<Core>` that
    // `CURRENT` (and `block_on` itself) hold all that time. `f` runs now,
    // within that span (`block_on` cannot return while code on its own
    // thread runs), and cannot keep the borrow. Only shared references are
    // made: `Core` keeps its mutable state in cells.
    f((!core.is_null()).then(|| unsafe { &*core }))
}

/// Runs `f` with this thread's core; panics off a worker thread.
#[inline]
pub(crate) fn with_core<R>(f: impl FnOnce(&Core) -> R) -> R {
    with_current(|core| {
        f(core.expect("tidepool: not on a worker thread (use rt::block_on or a Runtime)"))
    })
}

/// Like `with_core`, but `None` off a worker thread or after its teardown.
#[inline]
pub(crate) fn try_with_core<R>(f: impl FnOnce(&Core) -> R) -> Option<R> {
    with_current(|core| core.map(f))
}

/// Wakes a task: in place when woken on its own worker, through the worker's
/// remote channel when woken from another thread.
struct TaskWaker {
    task: usize,
    core: usize,
    remote: Arc<Remote>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let local = try_with_core(|core| {
            if core.id == self.core {
                core.schedule(self.task);
                true
            } else {
                false
            }
        });
        if local != Some(true) {
            self.remote.send(RemoteMsg::Wake(self.task));
        }
    }
}

const MAIN_TASK: usize = usize::MAX;

impl Core {
    fn new(config: &CoreConfig) -> std::io::Result<(Rc<Core>, super::remote::Inbox)> {
        let (reactor, selection) = new_reactor(config)?;
        let (remote, inbox) = Remote::new()?;
        let core = Rc::new(Core {
            reactor,
            selection,
            timers: RefCell::new(Timers::default()),
            tasks: RefCell::new(Slab::with_capacity(64)),
            ready: RefCell::new(VecDeque::with_capacity(64)),
            coalesce: RefCell::new(Coalesce::new(
                config.coalesce_window,
                config.coalesce_max,
                config.coalesce_mode == CoalesceMode::Always,
            )),
            remote: Arc::new(remote),
            id: NEXT_CORE_ID.fetch_add(1, Ordering::Relaxed),
            now: Cell::new(Instant::now()),
            main_woken: Cell::new(true),
            shutdown: Cell::new(false),
            shutdown_waiters: RefCell::new(Slab::new()),
        });
        Ok((core, inbox))
    }

    /// This core's process-unique id.
    pub(crate) fn id(&self) -> usize {
        self.id
    }

    /// The backend this worker runs on.
    pub(crate) fn backend(&self) -> Backend {
        match self.reactor {
            Reactor::Uring(_) => Backend::IoUring,
            Reactor::Epoll(_) => Backend::Epoll,
        }
    }

    /// The ring; only io_uring code paths ask for it.
    pub(crate) fn driver(&self) -> &RefCell<Driver> {
        match &self.reactor {
            Reactor::Uring(d) => d,
            Reactor::Epoll(_) => unreachable!("tidepool: io_uring operation on an epoll worker"),
        }
    }

    /// The ring, when this worker has one.
    pub(crate) fn uring(&self) -> Option<&RefCell<Driver>> {
        match &self.reactor {
            Reactor::Uring(d) => Some(d),
            Reactor::Epoll(_) => None,
        }
    }

    /// The epoll instance, when this worker runs on readiness.
    pub(crate) fn poller(&self) -> Option<&RefCell<Poller>> {
        match &self.reactor {
            Reactor::Uring(_) => None,
            Reactor::Epoll(p) => Some(p),
        }
    }

    pub(crate) fn schedule(&self, task: usize) {
        if task == MAIN_TASK {
            self.main_woken.set(true);
            return;
        }
        let tasks = self.tasks.borrow();
        if let Some(t) = tasks.get(task) {
            if !t.queued.replace(true) {
                self.ready.borrow_mut().push_back(task);
            }
        }
    }

    /// The time at the start of this loop turn: cheap, and the same for
    /// every task polled in the turn.
    pub(crate) fn now(&self) -> Instant {
        self.now.get()
    }

    fn spawn_boxed(&self, fut: LocalFuture) {
        let mut tasks = self.tasks.borrow_mut();
        let entry = tasks.vacant_entry();
        let id = entry.key();
        let waker = Waker::from(Arc::new(TaskWaker {
            task: id,
            core: self.id,
            remote: self.remote.clone(),
        }));
        entry.insert(Rc::new(Task {
            fut: RefCell::new(Some(fut)),
            waker,
            queued: Cell::new(true),
        }));
        self.ready.borrow_mut().push_back(id);
    }

    fn poll_task(&self, id: usize) {
        let task = match self.tasks.borrow().get(id) {
            Some(t) => t.clone(),
            None => return,
        };
        task.queued.set(false);
        let done = {
            let mut slot = task.fut.borrow_mut();
            let Some(fut) = slot.as_mut() else { return };
            let mut cx = Context::from_waker(&task.waker);
            // A panicking task is dropped; the worker and its other tasks go on.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                fut.as_mut().poll(&mut cx)
            })) {
                Ok(p) => p.is_ready(),
                Err(_) => true,
            }
        };
        if done {
            // Dropped outside the tasks borrow: a future's destructor may spawn or wake.
            let removed = self.tasks.borrow_mut().remove(id);
            drop(removed.fut.borrow_mut().take());
        }
    }

    pub(crate) fn trigger_shutdown(&self) {
        if !self.shutdown.replace(true) {
            let waiters: Vec<Waker> = self.shutdown_waiters.borrow_mut().drain().collect();
            for w in waiters {
                w.wake();
            }
        }
    }

    /// Number of live tasks (the main future not counted).
    pub(crate) fn task_count(&self) -> usize {
        self.tasks.borrow().len()
    }

    fn run<F: Future>(self: &Rc<Core>, mut inbox: super::remote::Inbox, fut: F) -> F::Output {
        let main_waker = Waker::from(Arc::new(TaskWaker {
            task: MAIN_TASK,
            core: self.id,
            remote: self.remote.clone(),
        }));
        let mut fut = std::pin::pin!(fut);
        inbox.arm(self);
        let mut epoch = Epoch {
            start: Instant::now(),
            cpu: thread_cpu_time(),
        };
        loop {
            self.now.set(Instant::now());
            if self.main_woken.replace(false) {
                let mut cx = Context::from_waker(&main_waker);
                if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                    return out;
                }
            }
            let mut budget = POLL_BUDGET;
            while budget > 0 {
                let next = self.ready.borrow_mut().pop_front();
                let Some(id) = next else { break };
                self.poll_task(id);
                budget -= 1;
            }
            inbox.drain(self);
            let now = Instant::now();
            self.timers.borrow_mut().fire(now);
            let idle = self.ready.borrow().is_empty() && !self.main_woken.get();
            match &self.reactor {
                Reactor::Uring(driver) => {
                    self.turn_uring(&mut driver.borrow_mut(), now, idle, &mut epoch)
                }
                Reactor::Epoll(poller) => {
                    // Busy: only look for edges; idle: sleep until one or
                    // the next timer.
                    let timeout = if idle {
                        self.timers
                            .borrow()
                            .next_deadline()
                            .map(|d| d.saturating_duration_since(now))
                    } else {
                        Some(Duration::ZERO)
                    };
                    let woken = poller
                        .borrow_mut()
                        .wait(timeout)
                        .unwrap_or_else(|e| panic!("tidepool: epoll_wait failed: {e}"));
                    let mut woken = woken;
                    for w in woken.drain(..) {
                        w.wake();
                    }
                    poller.borrow_mut().recycle(woken);
                }
            }
        }
    }

    /// One io_uring turn: submit, and wait (held when saturated) if idle.
    fn turn_uring(&self, driver: &mut Driver, now: Instant, idle: bool, epoch: &mut Epoch) {
        if !idle {
            enter(driver, None);
            driver.reap();
            return;
        }
        let mut coalesce = self.coalesce.borrow_mut();
        let elapsed = now.duration_since(epoch.start);
        if elapsed >= coalesce::EPOCH {
            let cpu = thread_cpu_time();
            let (sources, completions) = driver.take_epoch();
            coalesce.epoch_ended(sources, completions, elapsed, cpu.saturating_sub(epoch.cpu));
            *epoch = Epoch { start: now, cpu };
        }
        let (want, window) = coalesce.next();
        // What goes out with this wait mostly completes inline (sends):
        // those completions are ours, not arrivals, so a held wait asks
        // for that many more and does not count them as gathered.
        let queued = driver.queued();
        let wait = Wait {
            timeout: self
                .timers
                .borrow()
                .next_deadline()
                .map(|d| d.saturating_duration_since(now)),
            want: if window.is_some() {
                want + queued as u32
            } else {
                want
            },
            window,
        };
        enter(driver, Some(wait));
        let reaped = driver.reap().saturating_sub(queued);
        // From `now`: what ran since is a few field reads, not worth a clock read.
        coalesce.observe(now.elapsed(), reaped);
    }
}

/// The coalescing policy's current measurement epoch.
struct Epoch {
    start: Instant,
    cpu: Duration,
}

/// Sets up the backend `config` selects. An auto-selected ring that a
/// worker cannot set up for an "unavailable" cause (locked memory running
/// out after the probe, say) makes that worker run on epoll instead.
fn new_reactor(config: &CoreConfig) -> std::io::Result<(Reactor, Selection)> {
    let sel = backend::select(config.io, config.ring_entries)?;
    if sel.backend == Backend::IoUring {
        match Driver::with_buffers(sel.entries, config.recv_buffers, RECV_BUFFER_SIZE) {
            Ok(d) => return Ok((Reactor::Uring(RefCell::new(d)), sel)),
            Err(e) => match backend::unavailable(&e) {
                Some(reason) if sel.reason == "probe_ok" => {
                    let fallback = Selection {
                        backend: Backend::Epoll,
                        reason,
                        entries: 0,
                    };
                    backend::record_fallback(fallback);
                    return Ok((Reactor::Epoll(RefCell::new(Poller::new()?)), fallback));
                }
                _ => return Err(uring_driver::ring_unavailable(e)),
            },
        }
    }
    Ok((Reactor::Epoll(RefCell::new(Poller::new()?)), sel))
}

/// CPU time this thread has used (a syscall: read once per coalescing epoch).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn enter(driver: &mut Driver, wait: Option<Wait>) {
    if let Err(e) = driver.enter(wait) {
        // Busy means the CQ is full: the caller reaps next.
        if e.raw_os_error() != Some(libc::EBUSY) {
            panic!("tidepool: io_uring_enter failed: {e}");
        }
    }
}

/// Whether shutdown was requested for this worker.
pub fn shutdown_requested() -> bool {
    with_core(|core| core.shutdown.get())
}

/// Completes once shutdown is requested for this worker.
pub fn shutdown_signal() -> ShutdownSignal {
    ShutdownSignal { key: None }
}

/// The future of [`shutdown_signal`]; it unregisters itself when dropped, so
/// a connection that waits on it once per request leaves nothing behind.
pub struct ShutdownSignal {
    key: Option<usize>,
}

impl Future for ShutdownSignal {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        with_core(|core| {
            if core.shutdown.get() {
                return Poll::Ready(());
            }
            let mut waiters = core.shutdown_waiters.borrow_mut();
            match self.key {
                Some(k) if waiters.contains(k) => {
                    if !waiters[k].will_wake(cx.waker()) {
                        waiters[k] = cx.waker().clone();
                    }
                }
                _ => self.key = Some(waiters.insert(cx.waker().clone())),
            }
            Poll::Pending
        })
    }
}

impl Drop for ShutdownSignal {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            try_with_core(|core| {
                let mut w = core.shutdown_waiters.borrow_mut();
                if w.contains(k) {
                    w.remove(k);
                }
            });
        }
    }
}

/// Requests shutdown of the current worker (what a posted shutdown does).
pub fn request_shutdown() {
    with_core(|core| core.trigger_shutdown())
}

/// A handle other threads use to reach one worker.
#[derive(Clone)]
pub struct WorkerHandle {
    remote: Arc<Remote>,
}

impl WorkerHandle {
    /// Runs `f` on the worker's thread, on its next loop turn.
    pub fn post(&self, f: impl FnOnce() + Send + 'static) {
        self.remote.send(RemoteMsg::Run(Box::new(f)));
    }

    /// Asks the worker to shut down (see [`shutdown_signal`]).
    pub fn shutdown(&self) {
        self.post(request_shutdown);
    }
}

/// The handle of the worker this code runs on.
pub fn current_worker() -> WorkerHandle {
    with_core(|core| WorkerHandle {
        remote: core.remote.clone(),
    })
}

/// Runs `fut` to completion on a fresh single-worker runtime on this thread.
///
/// This is what each worker thread of a [`Runtime`](crate::Runtime) does; tests
/// and tools use it directly.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    block_on_with(&CoreConfig::default(), fut).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`block_on`], with a configuration, reporting ring setup failures.
pub fn block_on_with<F: Future>(config: &CoreConfig, fut: F) -> std::io::Result<F::Output> {
    // Checked before anything changes: replacing a running worker's core,
    // even for the length of a panic, would let its operations free buffers
    // that its ring still owns.
    assert!(
        CURRENT.with(|c| c.borrow().is_none()),
        "tidepool: block_on called on a thread that already runs a worker"
    );
    let (core, inbox) = Core::new(config)?;
    CURRENT.with(|c| *c.borrow_mut() = Some(core.clone()));
    CORE.set(Rc::as_ptr(&core));
    struct Reset(Rc<Core>);
    impl Drop for Reset {
        fn drop(&mut self) {
            // Tasks go first (their ops become orphans), then the ring waits
            // for the kernel to hand back every parked buffer.
            let tasks: Vec<Rc<Task>> = self.0.tasks.borrow_mut().drain().collect();
            for t in tasks {
                drop(t.fut.borrow_mut().take());
            }
            if let Some(driver) = self.0.uring() {
                driver.borrow_mut().drain(Duration::from_secs(1));
            }
            // The pointer goes before the owner it points into.
            CORE.set(std::ptr::null());
            CURRENT.with(|c| c.borrow_mut().take());
        }
    }
    let reset = Reset(core.clone());
    let out = core.run(inbox, fut);
    drop(reset);
    Ok(out)
}

/// A handle to a spawned task's output.
pub struct JoinHandle<T> {
    state: Rc<JoinState<T>>,
}

/// Why a task gave no output: it panicked, or it was dropped unfinished
/// (its worker shut down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    Panicked,
    Cancelled,
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JoinError::Panicked => "the task panicked",
            JoinError::Cancelled => "the task was dropped before it finished",
        })
    }
}

impl std::error::Error for JoinError {}

struct JoinState<T> {
    value: Cell<Option<Result<T, JoinError>>>,
    waker: Cell<Option<Waker>>,
}

impl<T> JoinState<T> {
    fn finish(&self, out: Result<T, JoinError>) {
        self.value.set(Some(out));
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.state.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                self.state.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }
}

/// Lives in a task's future: if the future is dropped before it finished,
/// the handle learns why instead of waiting forever ([`Spawned`] tells a
/// panic apart while it unwinds).
struct Unfinished<T>(Option<Rc<JoinState<T>>>);

impl<T> Drop for Unfinished<T> {
    fn drop(&mut self) {
        if let Some(st) = self.0.take() {
            st.finish(Err(JoinError::Cancelled));
        }
    }
}

pin_project_lite::pin_project! {
    /// A spawned future and its handle's state, in one allocation that holds
    /// the future once. (An `async move { fut.await }` wrapper holds it
    /// twice, as the captured value and as the value being awaited: for a
    /// connection that doubled 4 KB to 8 KB and copied 4 KB at its first poll.)
    struct Spawned<F: Future> {
        #[pin]
        fut: F,
        unfinished: Unfinished<F::Output>,
    }
}

/// While a task's future is polled: if the poll panics, the handle hears
/// `Panicked` as the panic unwinds (the executor drops the future later,
/// when `panicking()` no longer tells).
struct PanicNotice<'a, T>(&'a mut Unfinished<T>);

impl<T> Drop for PanicNotice<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(st) = self.0 .0.take() {
                st.finish(Err(JoinError::Panicked));
            }
        }
    }
}

impl<F: Future> Future for Spawned<F> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let notice = PanicNotice(this.unfinished);
        let out = std::task::ready!(this.fut.poll(cx));
        if let Some(st) = notice.0 .0.take() {
            st.finish(Ok(out));
        }
        Poll::Ready(())
    }
}

/// Spawns a task on the current worker. Tasks never move between threads,
/// so they need not be `Send`. Dropping the handle detaches the task; the
/// handle resolves to an error if the task panics or is dropped unfinished.
pub fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let state = Rc::new(JoinState {
        value: Cell::new(None),
        waker: Cell::new(None),
    });
    let task = Spawned {
        fut,
        unfinished: Unfinished(Some(state.clone())),
    };
    with_core(|core| core.spawn_boxed(Box::pin(task)));
    JoinHandle { state }
}

/// Yields once to let other ready tasks run.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}
