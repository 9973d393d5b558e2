//! Shared by the pool tests: bounded waits and the kill-and-restart drill.

#![allow(dead_code)]

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tidepool_drivers::pool::{LocalPool, Manager};
use tidepool_engine::rt::{self, time};

/// Waits until `f` holds, failing the test after `limit`.
pub async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "condition not reached in {limit:?}"
        );
        time::sleep(Duration::from_millis(20)).await;
    }
}

/// `tasks` callers running `op` through `local` in a loop while the server
/// is killed (`kill`) and restarted (`restart`). Asserts that no request
/// hangs past its timeouts, that requests fail while the server is down and
/// succeed again after the restart, and that the pool's books end clean.
pub async fn survive_restart<M, F, Fut>(
    local: &LocalPool<M>,
    tasks: usize,
    op: F,
    kill: impl FnOnce(),
    restart: impl FnOnce(),
) where
    M: Manager,
    F: Fn(LocalPool<M>) -> Fut + Clone + 'static,
    Fut: Future<Output = Result<(), String>>,
{
    let ok = Rc::new(Cell::new(0u32));
    let failed = Rc::new(Cell::new(0u32));
    let stop = Rc::new(Cell::new(false));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (local, ok, failed, stop, op) = (
            local.clone(),
            ok.clone(),
            failed.clone(),
            stop.clone(),
            op.clone(),
        );
        handles.push(rt::spawn(async move {
            while !stop.get() {
                let started = Instant::now();
                let r = op(local.clone()).await;
                assert!(
                    started.elapsed() < Duration::from_secs(3),
                    "request hung {:?}",
                    started.elapsed()
                );
                match r {
                    Ok(()) => ok.set(ok.get() + 1),
                    Err(_) => {
                        failed.set(failed.get() + 1);
                        time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    wait_until(Duration::from_secs(10), || ok.get() > 50).await;
    kill();
    let before = failed.get();
    wait_until(Duration::from_secs(10), || failed.get() > before + 5).await;
    restart();
    let ok_before = ok.get();
    wait_until(Duration::from_secs(20), || ok.get() > ok_before + 50).await;
    stop.set(true);
    for h in handles {
        h.await.unwrap();
    }
    // A reconnect started for the last waiters may still be finishing.
    wait_until(Duration::from_secs(5), || local.stats().opening == 0).await;
    let s = local.stats();
    assert_eq!((s.in_use, s.opening, s.waiting), (0, 0, 0), "{s:?}");
    local.assert_invariants();
}
