//! The cross-process computation lock: `SET lock:{key} token NX PX lease`,
//! released only through a script that checks the token, so a holder whose
//! lease ran out can never delete the lock a later holder took.

use std::sync::LazyLock;
use std::time::Duration;

use tidepool_engine::rt;

use super::{rand, CacheError};
use crate::pool::redis::RedisManager;
use crate::pool::LocalPool;
use crate::redis::{Script, SetOptions};

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end",
    )
});

/// A held lock. Dropping it unreleased (the holder's future was cancelled)
/// releases it from a spawned task, so waiters in other processes need not
/// sit out the rest of the lease.
pub(crate) struct Lock {
    pool: LocalPool<RedisManager>,
    key: String,
    token: String,
    held: bool,
}

/// One attempt, with a fresh token.
pub(crate) async fn try_acquire(
    pool: &LocalPool<RedisManager>,
    key: &str,
    lease: Duration,
) -> Result<Option<Lock>, CacheError> {
    let token = rand::token();
    let c = pool.get().await.map_err(CacheError::Pool)?;
    let opts = SetOptions::new().nx().px(lease.as_millis().max(1) as u64);
    let won: bool = c.set_with(key, &token, opts).await?;
    Ok(won.then(|| Lock {
        pool: pool.clone(),
        key: key.to_owned(),
        token,
        held: true,
    }))
}

/// Deletes `key` if it still holds `token`; true if it did.
async fn release(
    pool: &LocalPool<RedisManager>,
    key: &str,
    token: &str,
) -> Result<bool, CacheError> {
    let c = pool.get().await.map_err(CacheError::Pool)?;
    let n: i64 = c.run_script(&RELEASE, &[&key], &[&token]).await?;
    Ok(n == 1)
}

impl Lock {
    /// Releases the lock; false when it had expired (and perhaps been taken
    /// by someone else, whose lock stays).
    pub(crate) async fn release(mut self) -> Result<bool, CacheError> {
        let r = release(&self.pool, &self.key, &self.token).await;
        // Only now: if this future is dropped mid-release, `Drop` tries
        // again, and a second token-checked release is harmless.
        self.held = false;
        r
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.held {
            let pool = self.pool.clone();
            let key = std::mem::take(&mut self.key);
            let token = std::mem::take(&mut self.token);
            rt::spawn(async move {
                // A failure leaves the lock to its lease.
                let _ = release(&pool, &key, &token).await;
            });
        }
    }
}
