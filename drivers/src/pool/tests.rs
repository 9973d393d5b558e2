//! The pool's books under randomized operation sequences and ordering
//! rules, with an in-memory connection kind (the real-server tests are in
//! drivers/tests/pool_*.rs).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tidepool_engine::rt::{self, time};

use super::*;

#[derive(Debug)]
struct FakeError(bool);
impl std::fmt::Display for FakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0 {
            "refused (transient)"
        } else {
            "password authentication failed"
        })
    }
}
impl std::error::Error for FakeError {}
impl PoolError for FakeError {
    fn is_transient(&self) -> bool {
        self.0
    }
}

struct FakeConn {
    broken: bool,
}

#[derive(Default)]
struct Fake {
    made: AtomicU64,
    fail_transient: AtomicBool,
    fail_fatal: AtomicBool,
    panic: AtomicBool,
    /// How long a connect takes, in milliseconds (0: 200 µs).
    connect_ms: AtomicU64,
}

impl Manager for Fake {
    type Conn = FakeConn;
    type Error = FakeError;
    async fn connect(&self) -> Result<FakeConn, FakeError> {
        let ms = self.connect_ms.load(Ordering::Relaxed);
        time::sleep(if ms == 0 {
            Duration::from_micros(200)
        } else {
            Duration::from_millis(ms)
        })
        .await;
        if self.panic.load(Ordering::Relaxed) {
            panic!("connect panics (expected by the test)");
        }
        if self.fail_fatal.load(Ordering::Relaxed) {
            return Err(FakeError(false));
        }
        if self.fail_transient.load(Ordering::Relaxed) {
            return Err(FakeError(true));
        }
        self.made.fetch_add(1, Ordering::Relaxed);
        Ok(FakeConn { broken: false })
    }
    fn is_usable(&self, c: &FakeConn) -> bool {
        !c.broken
    }
    async fn check(&self, _: &mut FakeConn) -> Result<(), FakeError> {
        Ok(())
    }
}

fn config(max_open: usize) -> PoolConfig {
    PoolConfig {
        max_open,
        acquire_timeout: Duration::from_millis(20),
        connect_timeout: Duration::from_millis(30),
        warmup_jitter: Duration::ZERO,
        ..PoolConfig::default()
    }
}

/// One random step of the sequence: let time pass so connects and
/// posted resizes make progress.
async fn settle() {
    for _ in 0..50 {
        time::sleep(Duration::from_micros(300)).await;
    }
}

/// Waits (bounded) until the shard's numbers satisfy `f`.
async fn until<M: Manager>(local: &LocalPool<M>, f: impl Fn(&ShardSnapshot) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f(&local.stats()) {
        assert!(
            std::time::Instant::now() < deadline,
            "pool never reached the state: {:?}",
            local.stats()
        );
        time::sleep(Duration::from_micros(200)).await;
    }
}

/// Runs `body(i, local)` on one thread per worker of `pool` (`workers`
/// of them), each staying up afterwards until all are done (lending runs
/// on every worker's loop); returns each worker's result and numbers.
fn on_every_worker<M, T, F, Fut>(pool: &Pool<M>, workers: usize, body: F) -> Vec<(T, ShardSnapshot)>
where
    M: Manager + Send + Sync + 'static,
    T: Send + 'static,
    F: Fn(usize, LocalPool<M>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = T>,
{
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let body = std::sync::Arc::new(body);
    let threads: Vec<_> = (0..workers)
        .map(|i| {
            let (pool, done, body) = (pool.clone(), done.clone(), body.clone());
            std::thread::spawn(move || {
                rt::block_on(async move {
                    let local = pool.local(i);
                    let out = body(i, local.clone()).await;
                    done.fetch_add(1, Ordering::SeqCst);
                    while done.load(Ordering::SeqCst) < workers {
                        time::sleep(Duration::from_millis(1)).await;
                    }
                    (out, local.stats())
                })
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn randomized_sequences_keep_the_books_right() {
    for seed in 1..=12u64 {
        rt::block_on(async move {
            let pool = Pool::new("fake", config(4), Fake::default(), 1).unwrap();
            let local = pool.local(0);
            let mut held: Vec<Pooled<Fake>> = Vec::new();
            let mut rng = Rng(seed * 0x9E37_79B9);
            for _ in 0..300 {
                match rng.below(10) {
                    0..=3 => {
                        if let Ok(Ok(c)) =
                            time::timeout(Duration::from_millis(5), local.get()).await
                        {
                            held.push(c);
                        }
                    }
                    4..=5 if !held.is_empty() => {
                        let i = rng.below(held.len() as u64) as usize;
                        held.swap_remove(i);
                    }
                    6 if !held.is_empty() => {
                        let i = rng.below(held.len() as u64) as usize;
                        let mut c = held.swap_remove(i);
                        c.broken = true;
                    }
                    7 => pool.set_max_open(1 + rng.below(6) as usize),
                    8 => {
                        let fail = rng.below(3) == 0;
                        pool.manager().fail_transient.store(fail, Ordering::Relaxed);
                    }
                    _ => settle().await,
                }
                local.assert_invariants();
                let s = local.stats();
                assert_eq!(
                    s.target_cap,
                    pool.max_open(),
                    "shard targets sum to max_open"
                );
                assert!(s.opening <= pool.config().max_connecting);
            }
            pool.manager()
                .fail_transient
                .store(false, Ordering::Relaxed);
            drop(held);
            let target = pool.max_open();
            until(&local, |s| s.opening == 0 && s.cap == target).await;
            local.assert_invariants();
            let s = local.stats();
            assert_eq!(s.in_use, 0);
            assert_eq!(s.opening, 0, "no connect slot survives");
            assert!(
                s.open <= s.cap,
                "after everything returned, open {} <= cap {}",
                s.open,
                s.cap
            );
            // Everything made was either closed or is still open.
            let closed: u64 = s.closes.iter().sum();
            assert_eq!(
                pool.manager().made.load(Ordering::Relaxed),
                s.open as u64 + closed
            );
        });
    }
}

#[test]
fn waiters_are_served_in_fifo_order() {
    rt::block_on(async {
        let mut cfg = config(1);
        cfg.acquire_timeout = Duration::from_secs(5);
        let pool = Pool::new("fifo", cfg, Fake::default(), 1).unwrap();
        let local = pool.local(0);
        let first = local.get().await.unwrap();
        let order = Rc::new(RefCell::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (local, order) = (local.clone(), order.clone());
            tasks.push(rt::spawn(async move {
                let c = local.get().await.unwrap();
                order.borrow_mut().push(i);
                time::sleep(Duration::from_millis(1)).await;
                drop(c);
            }));
            // Each waiter is queued before the next one starts.
            rt::yield_now().await;
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.borrow(), vec![0, 1, 2, 3, 4]);
        local.assert_invariants();
    });
}

#[test]
fn cancelled_acquire_does_not_lose_the_connection() {
    rt::block_on(async {
        let pool = Pool::new("cancel", config(1), Fake::default(), 1).unwrap();
        let local = pool.local(0);
        let held = local.get().await.unwrap();
        // A waiter that gives up: its queue entry must go away.
        assert!(time::timeout(Duration::from_millis(2), local.get())
            .await
            .is_err());
        drop(held);
        local.assert_invariants();
        let again = local.get().await.unwrap();
        drop(again);
        assert_eq!(
            pool.manager().made.load(Ordering::Relaxed),
            1,
            "one connection served all"
        );
    });
}

/// An app asks for its worker's shard more than once (a route's state and
/// a cache's handle, say): every handle is the one shard, so the worker's
/// share of `max_open` is counted once and what other workers post (a
/// unit of capacity lent, a connection shared) reaches the shard whose
/// callers wait.
#[test]
fn asking_twice_for_a_workers_shard_gives_the_same_shard() {
    rt::block_on(async {
        let pool = Pool::new("twice", config(1), Fake::default(), 1).unwrap();
        let route = pool.local(0);
        let cache = pool.local(0);
        let held = route.get().await.unwrap();
        match cache.get().await {
            Ok(_) => panic!(
                "a second connection under max_open 1 ({} made)",
                pool.manager().made.load(Ordering::Relaxed)
            ),
            Err(e) => assert!(matches!(e, AcquireError::Timeout { .. }), "{e}"),
        }
        drop(held);
        drop(cache.get().await.unwrap());
        assert_eq!(pool.manager().made.load(Ordering::Relaxed), 1);
        route.assert_invariants();
    });
}

#[test]
fn timeout_error_names_the_pool_and_the_last_connect_error() {
    rt::block_on(async {
        let mut cfg = config(2);
        // Connects keep retrying for longer than a caller waits.
        cfg.connect_timeout = Duration::from_secs(1);
        let pool = Pool::new("pg-main", cfg, Fake::default(), 1).unwrap();
        let local = pool.local(0);
        // One connection open and held: the database is reachable, so a
        // caller waits for the second, whose connects fail, and times out.
        let held = local.get().await.unwrap();
        pool.manager().fail_transient.store(true, Ordering::Relaxed);
        let err = local.get().await.err().unwrap();
        assert!(matches!(err, AcquireError::Timeout { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("pool pg-main"), "{text}");
        assert!(text.contains("max_open 2"), "{text}");
        assert!(text.contains("refused"), "the last connect error: {text}");
        drop(held);
        local.assert_invariants();
    });
}

#[test]
fn an_unreachable_database_fails_callers_at_once_and_one_probe_finds_it_back() {
    rt::block_on(async {
        let mut cfg = config(2);
        cfg.acquire_timeout = Duration::from_secs(5);
        cfg.connect_timeout = Duration::from_secs(5);
        let pool = Pool::new("pg-main", cfg, Fake::default(), 1).unwrap();
        pool.manager().fail_transient.store(true, Ordering::Relaxed);
        let local = pool.local(0);
        // The first failed attempt answers the waiter: it does not wait
        // out the connect's retries (5 s) or the acquire timeout (5 s).
        let err = local.get().await.err().unwrap();
        assert!(matches!(err, AcquireError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("refused"), "{err}");
        // Callers now fail at once, naming the error, while one connect
        // probes whether the database is back.
        for _ in 0..5 {
            let err = local.get().await.err().unwrap();
            assert!(matches!(err, AcquireError::Connect { .. }), "{err}");
            let err = err.to_string();
            assert!(err.contains("refused"), "the connect error is named: {err}");
            let s = local.stats();
            assert!(s.opening <= 1, "one probe at a time: {s:?}");
        }
        let s = local.stats();
        assert_eq!(s.acquire_timeouts, 0, "nobody waited out the timeout");
        assert_eq!(s.waiting, 0);
        pool.manager()
            .fail_transient
            .store(false, Ordering::Relaxed);
        // The probe (callers asked) finds the database back by itself.
        until(&local, |s| s.open == 1 && s.opening == 0).await;
        let c = local.get().await.expect("served once the probe connected");
        drop(c);
        assert_eq!(pool.manager().made.load(Ordering::Relaxed), 1);
        local.assert_invariants();
    });
}

/// While the database is down, probes go on only while callers ask: a
/// pool nobody uses stops dialling, and the next caller starts it again.
#[test]
fn probing_stops_when_nobody_asks() {
    rt::block_on(async {
        let mut cfg = config(1);
        cfg.acquire_timeout = Duration::from_secs(5);
        cfg.connect_timeout = Duration::from_millis(50);
        let pool = Pool::new("quiet", cfg, Fake::default(), 1).unwrap();
        pool.manager().fail_transient.store(true, Ordering::Relaxed);
        let local = pool.local(0);
        assert!(local.get().await.is_err());
        // The connect that began with this caller ends with its retries;
        // one more probe follows (the caller asked); then nobody asked.
        until(&local, |s| s.down == 1 && s.probing == 0 && s.opening == 0).await;
        let tasks = local.stats().connect_failures.iter().sum::<u64>();
        assert_eq!(tasks, 2, "the first connect and one probe after it");
        // The next caller fails fast and starts a probe, which finds the
        // database back.
        pool.manager()
            .fail_transient
            .store(false, Ordering::Relaxed);
        assert!(matches!(
            local.get().await.err(),
            Some(AcquireError::Connect { .. })
        ));
        until(&local, |s| s.open == 1 && s.down == 0).await;
        assert!(local.get().await.is_ok());
        assert_eq!(
            local.stats().fast_failures,
            1,
            "the first caller was a waiter"
        );
    });
}

/// A connect task that panics must give back the capacity it reserved:
/// otherwise the shard counts a connection that never comes, forever.
#[test]
fn a_panicking_connect_frees_its_reservation() {
    rt::block_on(async {
        let pool = Pool::new("panics", config(1), Fake::default(), 1).unwrap();
        pool.manager().panic.store(true, Ordering::Relaxed);
        let local = pool.local(0);
        assert!(local.get().await.is_err());
        until(&local, |s| s.opening == 0 && s.open == 0).await;
        // The one slot is free again: the next connect is made and used.
        pool.manager().panic.store(false, Ordering::Relaxed);
        let conn = local.get().await.expect("a connect after the panic");
        drop(conn);
        assert_eq!(pool.manager().made.load(Ordering::Relaxed), 1);
    });
}

#[test]
fn fatal_connect_errors_fail_waiters_at_once() {
    rt::block_on(async {
        let mut cfg = config(2);
        cfg.acquire_timeout = Duration::from_secs(5);
        let pool = Pool::new("auth", cfg, Fake::default(), 1).unwrap();
        pool.manager().fail_fatal.store(true, Ordering::Relaxed);
        let local = pool.local(0);
        let started = std::time::Instant::now();
        let err = local.get().await.err().unwrap();
        assert!(matches!(err, AcquireError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("password authentication failed"));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no waiting out the timeout"
        );
        assert_eq!(
            local.stats().connect_failures[ConnectFailure::Fatal as usize],
            1,
            "no retry loop"
        );
    });
}

#[test]
fn shrinking_closes_idle_first_and_retires_busy_on_return() {
    rt::block_on(async {
        let pool = Pool::new("resize", config(4), Fake::default(), 1).unwrap();
        let local = pool.local(0);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(local.get().await.unwrap());
        }
        drop(held.split_off(2)); // 2 idle, 2 busy
        pool.set_max_open(1);
        until(&local, |s| s.cap == 1).await;
        let s = local.stats();
        assert_eq!(
            (s.open, s.idle, s.in_use),
            (2, 0, 2),
            "idle closed first, busy kept"
        );
        held.clear();
        let s = local.stats();
        assert_eq!(
            (s.open, s.in_use),
            (1, 0),
            "busy retired on return down to the cap"
        );
        assert_eq!(s.closes[CloseReason::Shrink as usize], 3);
        pool.set_max_open(3);
        until(&local, |s| s.cap == 3).await;
        let a = local.get().await.unwrap();
        let b = local.get().await.unwrap();
        let c = local.get().await.unwrap();
        assert_eq!(local.stats().open, 3, "growing lets callers connect");
        drop((a, b, c));
        local.assert_invariants();
    });
}

#[test]
fn reaper_closes_idle_but_keeps_min_idle() {
    rt::block_on(async {
        let mut cfg = config(4);
        cfg.min_idle = 1;
        cfg.idle_timeout = Duration::from_millis(5);
        cfg.reap_interval = Duration::from_secs(3600); // reaped by hand below
        let pool = Pool::new("reap", cfg, Fake::default(), 1).unwrap();
        let local = pool.local(0);
        let held: Vec<_> = vec![
            local.get().await.unwrap(),
            local.get().await.unwrap(),
            local.get().await.unwrap(),
        ];
        drop(held);
        assert_eq!(local.stats().idle, 3);
        time::sleep(Duration::from_millis(10)).await;
        local.reap_now();
        let s = local.stats();
        assert_eq!(s.open, 1, "min_idle kept");
        assert_eq!(s.closes[CloseReason::Idle as usize], 2);
    });
}

#[test]
fn caps_sum_to_max_open_across_shards() {
    let pool = Pool::new("split", config(7), Fake::default(), 3).unwrap();
    let caps: usize = pool.stats().shards.iter().map(|s| s.target_cap).sum();
    assert_eq!(caps, 7);
    pool.set_max_open(10);
    let caps: Vec<usize> = pool.stats().shards.iter().map(|s| s.target_cap).collect();
    assert_eq!(caps, vec![4, 3, 3]);
}

/// A multiplexed connection kind: a connection is its number.
#[derive(Default)]
struct FakeMux {
    made: AtomicU64,
    /// Connections the "server" has cut.
    broken: std::sync::Mutex<Vec<u64>>,
    /// Cut, but only a look at the socket can tell yet (the reader has
    /// not run); the look marks them broken.
    cut: std::sync::Mutex<Vec<u64>>,
    /// Looks taken.
    looks: AtomicU64,
}

impl Manager for FakeMux {
    type Conn = Rc<u64>;
    type Error = FakeError;
    const MULTIPLEXED: bool = true;
    async fn connect(&self) -> Result<Rc<u64>, FakeError> {
        Ok(Rc::new(self.made.fetch_add(1, Ordering::Relaxed)))
    }
    fn is_usable(&self, c: &Rc<u64>) -> bool {
        !self.broken.lock().unwrap().contains(c)
    }
    async fn check(&self, _: &mut Rc<u64>) -> Result<(), FakeError> {
        Ok(())
    }
    fn poll_idle(&self, c: &mut Rc<u64>) -> bool {
        self.looks.fetch_add(1, Ordering::Relaxed);
        let mut cut = self.cut.lock().unwrap();
        let Some(i) = cut.iter().position(|x| *x == **c) else {
            return true;
        };
        cut.remove(i);
        self.broken.lock().unwrap().push(**c);
        false
    }
    fn share(&self, c: &Rc<u64>) -> Rc<u64> {
        c.clone()
    }
}

/// A shared connection no caller of this worker is on is looked at before
/// it is handed out, and one the server cut since is closed instead; one
/// already in use is not looked at (its reader sees the end with the
/// replies it is owed).
#[test]
fn a_shared_connection_cut_while_idle_is_looked_at_and_never_handed_out() {
    rt::block_on(async {
        let mut cfg = config(1);
        cfg.max_in_flight = 2;
        cfg.acquire_timeout = Duration::from_secs(5);
        let pool = Pool::new("look", cfg, FakeMux::default(), 1).unwrap();
        let local = pool.local(0);
        let looks = || pool.manager().looks.load(Ordering::Relaxed);
        let first = local.get().await.unwrap();
        let before = looks();
        let second = local.get().await.unwrap();
        assert_eq!(looks(), before, "in use: no look");
        assert_eq!((**first, **second), (0, 0));
        drop((first, second));
        pool.manager().cut.lock().unwrap().push(0);
        let c = local.get().await.unwrap();
        assert_eq!(**c, 1, "a fresh connection, not the cut one");
        assert!(looks() > before, "looked at");
        let s = local.stats();
        assert_eq!(s.closes[CloseReason::FailedCheck as usize], 1, "{s:?}");
        assert_eq!(s.open, 1, "{s:?}");
        drop(c);
        local.assert_invariants();
    });
}

/// Callers go to the busiest shared connection that has room, so what a
/// loop turn issues leaves in one write; other connections take overflow.
#[test]
fn multiplexed_callers_pack_onto_the_busiest_connection_with_room() {
    rt::block_on(async {
        let mut cfg = config(2);
        cfg.max_in_flight = 3;
        cfg.acquire_timeout = Duration::from_secs(5);
        let pool = Pool::new("pack", cfg, FakeMux::default(), 1).unwrap();
        let local = pool.local(0);
        let mut on_first = Vec::new();
        for _ in 0..3 {
            on_first.push(local.get().await.unwrap());
        }
        assert!(
            on_first.iter().all(|c| ***c == 0),
            "packed onto one connection"
        );
        // The first is full: the overflow opens the second.
        let overflow = local.get().await.unwrap();
        assert_eq!(**overflow, 1);
        // Room again on the first (2 of 3) and on the second (1 of 3): the
        // busier one is taken.
        drop(on_first.pop());
        let next = local.get().await.unwrap();
        assert_eq!(**next, 0, "the busiest connection with room");
        drop((on_first, overflow, next));
        local.assert_invariants();
    });
}

/// A waiter granted a shared connection that breaks before the waiter
/// runs (another user's release finds it broken and takes it out) is not
/// handed the dead connection, nor does its worker panic: it gets a fresh
/// one.
#[test]
fn a_shared_connection_broken_between_grant_and_checkout_is_not_handed_out() {
    rt::block_on(async {
        let mut cfg = config(1);
        cfg.max_in_flight = 2;
        cfg.acquire_timeout = Duration::from_secs(5);
        let pool = Pool::new("grant", cfg, FakeMux::default(), 1).unwrap();
        let local = pool.local(0);
        let a = local.get().await.unwrap();
        let b = local.get().await.unwrap();
        assert_eq!((**a, **b), (0, 0));
        let waiter = {
            let local = local.clone();
            rt::spawn(async move { **local.get().await.unwrap() })
        };
        rt::yield_now().await; // queued: the connection is full
        assert_eq!(local.stats().waiting, 1);
        // A's release grants the waiter a place on connection 0; before the
        // waiter runs, the connection breaks and B's release takes it out.
        drop(a);
        pool.manager().broken.lock().unwrap().push(0);
        drop(b);
        assert_eq!(waiter.await.unwrap(), 1, "a fresh connection");
        let s = local.stats();
        assert_eq!(s.closes[CloseReason::Broken as usize], 1, "{s:?}");
        local.assert_invariants();
    });
}

/// A shared connection the server cut while nobody used it is closed by
/// the reaper's pass, not only at the next checkout: on a worker no
/// request reaches, the pool's count of open connections would otherwise
/// stay above what the server has.
#[test]
fn the_reaper_closes_a_shared_connection_that_broke_while_idle() {
    rt::block_on(async {
        let mut cfg = config(1);
        cfg.max_in_flight = 2;
        cfg.reap_interval = Duration::from_secs(3600); // reaped by hand below
        cfg.acquire_timeout = Duration::from_secs(5);
        let pool = Pool::new("cut", cfg, FakeMux::default(), 1).unwrap();
        let local = pool.local(0);
        drop(local.get().await.unwrap());
        assert_eq!(local.stats().open, 1);
        pool.manager().broken.lock().unwrap().push(0);
        local.reap_now();
        let s = local.stats();
        assert_eq!(s.open, 0, "{s:?}");
        assert_eq!(s.closes[CloseReason::Broken as usize], 1, "{s:?}");
        local.assert_invariants();
    });
}

/// Shared connections under random callers, server-side cuts and breaks,
/// reaper passes and resizes: no caller is handed a connection already
/// known broken, nor one cut while none of this worker's callers was on
/// it (a look at its socket would have told); the books stay right.
#[test]
fn randomized_shared_connections_never_hand_out_a_dead_one() {
    for seed in 1..=12u64 {
        rt::block_on(async move {
            let mut cfg = config(3);
            cfg.max_in_flight = 3;
            cfg.acquire_timeout = Duration::from_millis(20);
            cfg.reap_interval = Duration::from_secs(3600); // reaped below
            let pool = Pool::new("mux", cfg, FakeMux::default(), 1).unwrap();
            let local = pool.local(0);
            let held: Rc<RefCell<Vec<Pooled<FakeMux>>>> = Rc::default();
            let mut rng = Rng(seed * 0x9E37_79B9);
            let mut callers = Vec::new();
            for _ in 0..400 {
                let made = pool.manager().made.load(Ordering::Relaxed);
                match rng.below(12) {
                    0..=3 => {
                        let (local, held, pool) = (local.clone(), held.clone(), pool.clone());
                        callers.push(rt::spawn(async move {
                            let Ok(c) = local.get().await else { return };
                            let m = pool.manager();
                            let id = **c;
                            assert!(
                                !m.broken.lock().unwrap().contains(&id),
                                "handed out {id}, known broken"
                            );
                            let shared = held.borrow().iter().any(|h| ***h == id);
                            assert!(
                                shared || !m.cut.lock().unwrap().contains(&id),
                                "handed out {id}, cut while nobody here was on it"
                            );
                            held.borrow_mut().push(c);
                        }));
                    }
                    4 | 5 => {
                        let mut h = held.borrow_mut();
                        if !h.is_empty() {
                            let i = rng.below(h.len() as u64) as usize;
                            h.swap_remove(i);
                        }
                    }
                    6 if made > 0 => {
                        // The reader saw the end: known broken from now on.
                        let id = rng.below(made);
                        pool.manager().broken.lock().unwrap().push(id);
                    }
                    7 if made > 0 => {
                        // The end arrived; only a look can tell yet.
                        let id = rng.below(made);
                        pool.manager().cut.lock().unwrap().push(id);
                    }
                    8 => local.reap_now(),
                    9 => pool.set_max_open(1 + rng.below(4) as usize),
                    _ => rt::yield_now().await,
                }
                // A cut connection whose users all left is what a look is
                // for; one still in use learns of the end from its replies.
                let in_use: Vec<u64> = held.borrow().iter().map(|h| ***h).collect();
                let m = pool.manager();
                let mut cut = m.cut.lock().unwrap();
                let (used, idle) = cut.drain(..).partition(|id| in_use.contains(id));
                *cut = idle;
                drop(cut);
                // Still used: its reader fails it with the owed replies.
                m.broken.lock().unwrap().extend::<Vec<u64>>(used);
                local.assert_invariants();
            }
            held.borrow_mut().clear();
            for c in callers {
                c.await.unwrap();
                held.borrow_mut().clear();
            }
            local.assert_invariants();
            let s = local.stats();
            assert_eq!(s.in_use, 0, "{s:?}");
            let closed: u64 = s.closes.iter().sum();
            assert_eq!(
                pool.manager().made.load(Ordering::Relaxed),
                s.open as u64 + closed,
                "{s:?}"
            );
        });
    }
}

/// A shared connection is idle only between uses: one in steady use must
/// not be closed because it was opened longer ago than `idle_timeout`.
#[test]
fn a_shared_connection_in_steady_use_is_not_reaped_as_idle() {
    rt::block_on(async {
        let mut cfg = config(1);
        cfg.max_in_flight = 4;
        cfg.idle_timeout = Duration::from_millis(20);
        cfg.reap_interval = Duration::from_secs(3600); // reaped by hand below
        cfg.acquire_timeout = Duration::from_secs(5);
        let pool = Pool::new("steady", cfg, FakeMux::default(), 1).unwrap();
        let local = pool.local(0);
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(80) {
            drop(local.get().await.unwrap());
            // Free at this moment, but in use a moment ago.
            local.reap_now();
            time::sleep(Duration::from_millis(5)).await;
        }
        let s = local.stats();
        assert_eq!(s.closes[CloseReason::Idle as usize], 0, "{s:?}");
        assert_eq!(pool.manager().made.load(Ordering::Relaxed), 1);
        // Left alone past the idle timeout, it is closed.
        time::sleep(Duration::from_millis(30)).await;
        local.reap_now();
        assert_eq!(local.stats().closes[CloseReason::Idle as usize], 1);
    });
}

/// More workers than connections: max_open 2 over 4 workers leaves two
/// shards an even share of 0. Their callers borrow capacity the others are
/// not using instead of waiting out `acquire_timeout`, and the caps never
/// add up to more than max_open.
#[test]
fn shards_with_no_share_borrow_capacity_others_do_not_use() {
    const WORKERS: usize = 4;
    let mut cfg = config(2);
    cfg.acquire_timeout = Duration::from_secs(10);
    let pool = Pool::new("lend", cfg, Fake::default(), WORKERS).unwrap();
    assert_eq!(
        (0..WORKERS)
            .map(|i| pool.inner.shards[i].target_cap.load(Ordering::Relaxed))
            .collect::<Vec<_>>(),
        [1, 1, 0, 0]
    );
    let results = on_every_worker(&pool, WORKERS, |_, local| async move {
        let mut served = 0;
        for _ in 0..5 {
            if local.get().await.is_ok() {
                served += 1;
            }
            time::sleep(Duration::from_millis(2)).await;
        }
        served
    });
    for (i, (served, s)) in results.iter().enumerate() {
        assert_eq!(*served, 5, "worker {i}: {s:?}");
        assert_eq!(s.acquire_timeouts, 0, "worker {i}");
    }
    let caps: usize = results.iter().map(|(_, s)| s.cap).sum();
    assert!(caps <= 2, "caps add up to {caps}");
    let opened: u64 = results.iter().map(|(_, s)| s.connects).sum();
    let closed: u64 = results
        .iter()
        .map(|(_, s)| s.closes.iter().sum::<u64>())
        .sum();
    assert!(opened - closed <= 2, "open at once: {}", opened - closed);
}

/// Two workers on a pool of two: each opens its connection, worker 1's
/// then sits idle (long enough to be lent), and worker 0 runs `busy` on
/// its own. Returns each worker's numbers at the end.
fn one_busy_worker_beside_an_idle_one<M, F, Fut>(manager: M, busy: F) -> Vec<ShardSnapshot>
where
    M: Manager + Send + Sync + 'static,
    F: Fn(LocalPool<M>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let mut cfg = config(2);
    cfg.acquire_timeout = Duration::from_secs(10);
    // Multiplexed: four callers on a connection, then a fifth waits.
    cfg.max_in_flight = 4;
    let pool = Pool::new("two", cfg, manager, 2).unwrap();
    let opened = std::sync::Arc::new(AtomicBool::new(false));
    let results = on_every_worker(&pool, 2, move |i, local| {
        let opened = opened.clone();
        let busy = if i == 0 {
            Some(busy(local.clone()))
        } else {
            None
        };
        async move {
            drop(local.get().await.expect("a connection"));
            let Some(busy) = busy else {
                opened.store(true, Ordering::SeqCst);
                return;
            };
            while !opened.load(Ordering::SeqCst) {
                time::sleep(Duration::from_millis(1)).await;
            }
            // Past the 200 ms after which an idle connection may be lent.
            time::sleep(Duration::from_millis(300)).await;
            busy.await;
        }
    });
    results.into_iter().map(|(_, s)| s).collect()
}

/// Two callers at once on worker 0's one connection, each holding it
/// 2 ms, every 30 ms: a moment of queueing. Moving worker 1's idle
/// connection there would cost a close and a connect, more than the wait;
/// before shards averaged their demand, the first such moment did, and
/// eight workers at a steady 1,000 req/s reconnected about twice a second.
#[test]
fn a_moment_of_queueing_moves_no_connection() {
    let shards = one_busy_worker_beside_an_idle_one(Fake::default(), |local| async move {
        moments_of_queueing(&local, 20).await;
    });
    assert_nothing_moved(&shards);
}

/// `rounds` times: two callers at once for 2 ms, then 30 ms of quiet.
async fn moments_of_queueing<M: Manager>(local: &LocalPool<M>, rounds: usize) {
    for _ in 0..rounds {
        let callers: Vec<_> = (0..2)
            .map(|_| {
                let local = local.clone();
                rt::spawn(async move {
                    let c = local.get().await.expect("a connection");
                    time::sleep(Duration::from_millis(2)).await;
                    drop(c);
                })
            })
            .collect();
        for c in callers {
            c.await.expect("the caller finished");
        }
        time::sleep(Duration::from_millis(30)).await;
    }
}

/// Each worker kept the one connection it opened.
fn assert_nothing_moved(shards: &[ShardSnapshot]) {
    for (i, s) in shards.iter().enumerate() {
        assert_eq!(
            s.closes.iter().sum::<u64>(),
            0,
            "worker {i} closed one: {s:?}"
        );
        assert_eq!((s.cap, s.connects), (1, 1), "worker {i}: {s:?}");
    }
}

/// The same on a multiplexed pool, where a connection serves
/// `max_in_flight` callers (four here): three callers on worker 0 all the
/// time, two more for 2 ms every 30 ms, so that one of them waits. Three
/// times more callers than connections on average (for long enough to
/// show), fewer than the connection serves: nothing moves.
#[test]
fn a_moment_of_queueing_moves_no_shared_connection() {
    let shards = one_busy_worker_beside_an_idle_one(FakeMux::default(), |local| async move {
        let mut steady = Vec::new();
        for _ in 0..3 {
            steady.push(local.get().await.expect("a connection"));
        }
        moments_of_queueing(&local, 50).await;
        drop(steady);
    });
    assert_nothing_moved(&shards);
}

/// Three callers keep worker 0's one connection busy without a pause:
/// short for as long as that lasts, it is lent worker 1's idle connection
/// (closed there, opened here).
#[test]
fn a_worker_short_for_a_while_is_lent_an_idle_connection() {
    let shards = one_busy_worker_beside_an_idle_one(Fake::default(), |local| async move {
        let stop = Rc::new(std::cell::Cell::new(false));
        let callers: Vec<_> = (0..3)
            .map(|_| {
                let (local, stop) = (local.clone(), stop.clone());
                rt::spawn(async move {
                    while !stop.get() {
                        let c = local.get().await.expect("a connection");
                        time::sleep(Duration::from_millis(5)).await;
                        drop(c);
                    }
                })
            })
            .collect();
        until(&local, |s| s.cap == 2 && s.open == 2).await;
        stop.set(true);
        for c in callers {
            c.await.expect("the caller finished");
        }
    });
    assert_eq!(
        (shards[0].cap, shards[0].connects),
        (2, 2),
        "{:?}",
        shards[0]
    );
    assert_eq!(shards[1].cap, 0, "{:?}", shards[1]);
    assert_eq!(
        shards[1].closes[CloseReason::Shrink as usize],
        1,
        "{:?}",
        shards[1]
    );
}

/// A shard without capacity of its own whose callers wait while another
/// shard opens the pool's one connection (slowly: a TLS handshake on a
/// busy machine) is waiting for a connect, not overloaded: none of them is
/// shed for a standing queue, however long the connect takes.
#[test]
fn callers_waiting_for_another_shards_connect_are_not_shed_as_overload() {
    let mut cfg = config(1);
    cfg.acquire_timeout = Duration::from_secs(10);
    cfg.connect_timeout = Duration::from_secs(5);
    let fake = Fake::default();
    // Several of the adaptive queue's intervals (100 ms).
    fake.connect_ms.store(400, Ordering::Relaxed);
    let pool = Pool::new("slow", cfg, fake, 2).unwrap();
    let results = on_every_worker(&pool, 2, |i, local| async move {
        let callers = if i == 0 { 1 } else { 4 };
        let gets: Vec<_> = (0..callers)
            .map(|_| {
                let local = local.clone();
                rt::spawn(async move { local.get().await.map(|_c| ()).map_err(|e| e.to_string()) })
            })
            .collect();
        let mut results = Vec::new();
        for g in gets {
            results.push(g.await.expect("the caller's task finished"));
        }
        results
    });
    for (i, (results, stats)) in results.into_iter().enumerate() {
        for r in results {
            assert!(r.is_ok(), "worker {i}: {r:?} ({stats:?})");
        }
    }
}

/// More workers than connections during an outage: the shard that has the
/// capacity finds the database down; callers on the shards with none fail
/// at once too (not after waiting out the acquire timeout for capacity to
/// be lent), and keep the probe going; once the database is back, every
/// worker is served.
#[test]
fn shards_without_capacity_fail_fast_while_the_pool_is_down() {
    const WORKERS: usize = 3;
    let mut cfg = config(1);
    cfg.acquire_timeout = Duration::from_secs(10);
    cfg.connect_timeout = Duration::from_millis(200);
    let pool = Pool::new("outage", cfg, Fake::default(), WORKERS).unwrap();
    pool.manager().fail_transient.store(true, Ordering::Relaxed);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..WORKERS)
        .map(|i| {
            let (pool, done, rx, tx) = (pool.clone(), done.clone(), rx.clone(), tx.clone());
            std::thread::spawn(move || {
                rt::block_on(async move {
                    let local = pool.local(i);
                    if i == 0 {
                        // The shard with the capacity finds the outage.
                        assert!(local.get().await.is_err());
                        until(&local, |s| s.down == 1).await;
                        // Let the others ask.
                        for _ in 1..WORKERS {
                            rx.lock().unwrap().recv().unwrap();
                        }
                    }
                    let mut errors = Vec::new();
                    if i > 0 {
                        while pool.stats().shards[0].down == 0 {
                            time::sleep(Duration::from_millis(1)).await;
                        }
                        for _ in 0..3 {
                            errors.push(local.get().await.err().expect("down").to_string());
                        }
                        tx.send(()).unwrap();
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                    while done.load(Ordering::SeqCst) < WORKERS {
                        time::sleep(Duration::from_millis(1)).await;
                    }
                    // Back: the probe (kept going by the others' callers)
                    // finds it, and every worker is served.
                    if i == 0 {
                        pool.manager()
                            .fail_transient
                            .store(false, Ordering::Relaxed);
                    }
                    // Callers fail fast until the probe's next attempt
                    // (at most `PROBE_INTERVAL` on) connects.
                    let deadline = std::time::Instant::now() + Duration::from_secs(10);
                    let served = loop {
                        match local.get().await {
                            Ok(_) => break Ok(()),
                            Err(e) if std::time::Instant::now() > deadline => break Err(e),
                            Err(_) => time::sleep(Duration::from_millis(5)).await,
                        }
                    };
                    done.fetch_add(1, Ordering::SeqCst);
                    while done.load(Ordering::SeqCst) < 2 * WORKERS {
                        time::sleep(Duration::from_millis(1)).await;
                    }
                    (errors, served, local.stats())
                })
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let (errors, served, s) = t.join().unwrap();
        for e in &errors {
            assert!(
                e.contains("failing fast") && e.contains("refused"),
                "worker {i}: {e}"
            );
        }
        assert_eq!(s.acquire_timeouts, 0, "worker {i}: {s:?}");
        assert!(served.is_ok(), "worker {i} once back: {served:?} {s:?}");
    }
}

/// When one shard's connect finds the database back, the other down
/// shards dial at once: a shard whose probing had stopped (nobody asked)
/// reconnects without a caller of its own, instead of failing its next
/// callers until a probe of its own.
#[test]
fn a_shard_that_finds_the_database_back_tells_the_others() {
    // Two units per shard: one caller each never runs short, so no
    // capacity moves between them.
    let mut cfg = config(4);
    cfg.acquire_timeout = Duration::from_secs(10);
    cfg.connect_timeout = Duration::from_millis(50);
    let pool = Pool::new("back", cfg, Fake::default(), 2).unwrap();
    pool.manager().fail_transient.store(true, Ordering::Relaxed);
    let phase = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Waits (bounded: a worker that failed never arrives) for both.
    async fn meet(phase: &std::sync::atomic::AtomicUsize, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while phase.load(Ordering::SeqCst) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "the other worker failed"
            );
            time::sleep(Duration::from_millis(1)).await;
        }
    }
    let threads: Vec<_> = (0..2)
        .map(|i| {
            let (pool, phase) = (pool.clone(), phase.clone());
            std::thread::spawn(move || {
                rt::block_on(async move {
                    let local = pool.local(i);
                    assert!(local.get().await.is_err());
                    // Down, and quiet: the probe stops when nobody asks.
                    until(&local, |s| s.down == 1 && s.probing == 0 && s.opening == 0).await;
                    phase.fetch_add(1, Ordering::SeqCst);
                    meet(&phase, 2).await;
                    if i == 0 {
                        pool.manager()
                            .fail_transient
                            .store(false, Ordering::Relaxed);
                        // This caller's probe finds it back.
                        let deadline = std::time::Instant::now() + Duration::from_secs(10);
                        while local.get().await.is_err() {
                            assert!(std::time::Instant::now() < deadline);
                            time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    // Worker 1 has no caller: only the news brings it back.
                    until(&local, |s| s.down == 0 && s.open == 1).await;
                    phase.fetch_add(1, Ordering::SeqCst);
                    meet(&phase, 4).await;
                })
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// A pool declared for more workers than run (4 shards, 1 worker): the
/// running shard takes the capacity of the shards nobody started, so all
/// of `max_open` is usable from it.
#[test]
fn capacity_of_shards_never_started_is_used() {
    rt::block_on(async {
        let mut cfg = config(4);
        cfg.acquire_timeout = Duration::from_secs(10);
        let pool = Pool::new("unstarted", cfg, Fake::default(), 4).unwrap();
        let local = pool.local(0);
        assert_eq!(local.cap(), 1);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(local.get().await.expect("a connection within max_open"));
        }
        assert_eq!(local.cap(), 4);
        assert_eq!(local.stats().acquire_timeouts, 0);
        // The units came out of the other shards' starting caps: a worker
        // that starts now gets nothing on top of max_open.
        let total: u64 = (1..4)
            .map(|j| pool.inner.shards[j].target_cap.load(Ordering::Relaxed))
            .sum();
        assert_eq!(total, 0);
        drop(held);
    });
}

/// A pool declared for 1 worker under a 2-worker runtime: starting the
/// runtime fails with a message naming both counts, instead of a worker
/// panicking (or starving) after a start that looked fine.
#[test]
fn a_worker_count_mismatch_fails_the_start() {
    use tidepool_engine::workers::{Runtime, RuntimeConfig};
    let pool = Pool::new("mismatch", config(2), Fake::default(), 1).unwrap();
    let config = RuntimeConfig {
        workers: 2,
        pin: false,
        ..RuntimeConfig::default()
    };
    let started = Runtime::start(config, move |info| {
        let local = pool.local(info.index);
        async move { drop(local) }
    });
    let err = match started {
        Ok(rt) => {
            rt.join();
            panic!("the runtime started with a pool declared for another worker count");
        }
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("declared for 1 workers") && err.contains("runtime with 2"),
        "{err}"
    );
}

/// While warm-up waits out its delay, nothing tops `min_idle` up behind
/// its back: not the reaper, not a release. The schedule opens them.
#[test]
fn the_reaper_does_not_open_min_idle_before_warm_up_does() {
    rt::block_on(async {
        let mut cfg = config(4);
        cfg.min_idle = 2;
        cfg.warmup_delay = Duration::from_secs(1);
        cfg.reap_interval = Duration::from_secs(3600); // reaped by hand below
        let pool = Pool::new("warming", cfg, Fake::default(), 1).unwrap();
        let local = pool.local(0);
        local.reap_now();
        settle().await;
        assert_eq!(
            local.stats().connects,
            0,
            "the reaper opened min_idle early"
        );
        // A caller's demand is served at once, warm-up or not...
        drop(local.get().await.unwrap());
        local.reap_now();
        settle().await;
        assert_eq!(local.stats().connects, 1, "only the caller's connection");
        // ...and the schedule tops up to min_idle when it is due.
        until(&local, |s| s.open == 2).await;
        assert_eq!(local.stats().connects, 2);
    });
}

/// A manager whose warm-up takes a cluster slot named `key`: counts the
/// slots its process holds at once.
#[derive(Default)]
struct Gated {
    inner: Fake,
    holding: std::sync::Arc<AtomicU64>,
    most: std::sync::Arc<AtomicU64>,
    taken: std::sync::Arc<AtomicU64>,
}

struct Slot(std::sync::Arc<AtomicU64>);
impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Manager for Gated {
    type Conn = FakeConn;
    type Error = FakeError;
    async fn connect(&self) -> Result<FakeConn, FakeError> {
        // Slow enough that both pools warm up at the same time.
        time::sleep(Duration::from_millis(20)).await;
        self.inner.connect().await
    }
    fn is_usable(&self, c: &FakeConn) -> bool {
        !c.broken
    }
    async fn check(&self, _: &mut FakeConn) -> Result<(), FakeError> {
        Ok(())
    }
    async fn warmup_gate(&self) -> Option<Box<dyn std::any::Any>> {
        self.taken.fetch_add(1, Ordering::SeqCst);
        let now = self.holding.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        Some(Box::new(Slot(self.holding.clone())))
    }
    fn warmup_key(&self) -> Option<String> {
        Some("cluster-a#slots".into())
    }
}

/// Two pools of one process gated on the same cluster slots (say an
/// exclusive and a shared pool of one database) take one slot between
/// them, not one each, and let it go once both have warmed up.
#[test]
fn pools_naming_the_same_warm_up_slots_take_one_between_them() {
    rt::block_on(async {
        let gated = Gated::default();
        let (holding, most, taken) = (
            gated.holding.clone(),
            gated.most.clone(),
            gated.taken.clone(),
        );
        let mut cfg = config(3);
        cfg.min_idle = 3;
        cfg.warmup_batch = 1;
        let a = Pool::new("a", cfg.clone(), gated, 1).unwrap();
        let b = Pool::new(
            "b",
            cfg,
            Gated {
                holding: holding.clone(),
                most: most.clone(),
                taken: taken.clone(),
                ..Gated::default()
            },
            1,
        )
        .unwrap();
        let (a, b) = (a.local(0), b.local(0));
        until(&a, |s| s.open == 3).await;
        until(&b, |s| s.open == 3).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while holding.load(Ordering::SeqCst) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the slot is never let go"
            );
            time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(most.load(Ordering::SeqCst), 1, "slots held at once");
        assert_eq!(taken.load(Ordering::SeqCst), 1, "slots taken");
    });
}

#[test]
fn an_acquire_error_answers_503_with_retry_after() {
    use tidepool_engine::http::{IntoResponse, Status};
    let e = AcquireError::Connect {
        pool: "pg".into(),
        message: "refused".into(),
    };
    let r = e.into_response();
    assert_eq!(r.status, Status::SERVICE_UNAVAILABLE);
    assert!(r
        .headers
        .iter()
        .any(|(n, v)| *n == "Retry-After" && v == "1"));
}
