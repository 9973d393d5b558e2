//! Acquire + release on the hot path: a Tidepool pool shard vs deadpool
//! (what deadpool-postgres is built on), both with an in-memory connection
//! so only the pools' own work is measured, both on one thread.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tidepool_drivers::pool::{Manager, Pool, PoolConfig, PoolError};
use tidepool_engine::rt;

#[derive(Debug)]
struct Never;
impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}
impl std::error::Error for Never {}
impl PoolError for Never {
    fn is_transient(&self) -> bool {
        false
    }
}

struct Mem;
impl Manager for Mem {
    type Conn = u64;
    type Error = Never;
    async fn connect(&self) -> Result<u64, Never> {
        Ok(0)
    }
    fn is_usable(&self, _: &u64) -> bool {
        true
    }
    async fn check(&self, _: &mut u64) -> Result<(), Never> {
        Ok(())
    }
}

struct DpMem;
impl deadpool::managed::Manager for DpMem {
    type Type = u64;
    type Error = Infallible;
    async fn create(&self) -> Result<u64, Infallible> {
        Ok(0)
    }
    async fn recycle(
        &self,
        _: &mut u64,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        Ok(())
    }
}

fn acquire_release(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool/acquire_release");
    g.bench_function("tidepool", |b| {
        b.iter_custom(|iters| {
            rt::block_on(async {
                let cfg = PoolConfig {
                    max_open: 16,
                    check_after_idle: None,
                    ..PoolConfig::default()
                };
                let pool = Pool::new("bench", cfg, Mem, 1).unwrap();
                let local = pool.local(0);
                drop(local.get().await.unwrap()); // the connection exists
                let start = Instant::now();
                for _ in 0..iters {
                    let c = local.get().await.unwrap();
                    std::hint::black_box(&*c);
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("deadpool", |b| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        b.iter_custom(|iters| {
            rt.block_on(async {
                let pool = deadpool::managed::Pool::<DpMem>::builder(DpMem)
                    .max_size(16)
                    .build()
                    .unwrap();
                drop(pool.get().await.unwrap());
                let start = Instant::now();
                for _ in 0..iters {
                    let c = pool.get().await.unwrap();
                    std::hint::black_box(&*c);
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = acquire_release
}
criterion_main!(benches);
