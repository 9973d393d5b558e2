//! The pool's PostgreSQL connection kind, with the cluster-wide warm-up
//! semaphore (N session advisory locks).

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidepool_engine::rt::time;

use super::backoff::random_unit;
use super::{AtomicHistogram, Manager, PoolError};
use crate::pg::{Client, Config, Error, Exported, SharedClient, TxStatus};

impl PoolError for Error {
    fn is_transient(&self) -> bool {
        Error::is_transient(self)
    }
}

/// At most `slots` processes of a cluster warm up at once: each holds one
/// of `slots` session advisory locks (`key_base .. key_base + slots`) on a
/// dedicated connection while it opens its connections. A crashed process
/// frees its slot because its session ends.
#[derive(Clone, Debug)]
pub struct WarmupSlots {
    pub slots: u32,
    pub key_base: i64,
    /// Give up waiting for a slot after this long (and warm up anyway,
    /// rather than never).
    pub wait_max: Duration,
}

/// PostgreSQL connections for a [`Pool`](super::Pool).
pub struct PgManager {
    config: Config,
    warmup: Option<WarmupSlots>,
}

impl PgManager {
    pub fn new(config: Config) -> PgManager {
        PgManager {
            config,
            warmup: None,
        }
    }

    /// Gates warm-up on one of N cluster-wide slots.
    pub fn with_warmup_slots(mut self, slots: WarmupSlots) -> PgManager {
        self.warmup = Some(slots);
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// Holds a warm-up slot: the session that holds the advisory lock.
pub struct WarmupSlot {
    pub slot: u32,
    _session: Client,
}

/// Tries every slot once; the lock lives as long as the returned session.
pub async fn try_warmup_slot(
    config: &Config,
    slots: &WarmupSlots,
) -> Result<Option<WarmupSlot>, Error> {
    let mut session = Some(Client::connect(config).await?);
    try_slots(&mut session, slots).await
}

/// Tries every slot once on `session`; on success the session moves into
/// the slot (its lock lives as long as it does), otherwise it stays for
/// the next try.
async fn try_slots(
    session: &mut Option<Client>,
    slots: &WarmupSlots,
) -> Result<Option<WarmupSlot>, Error> {
    let Some(s) = session.as_mut() else {
        return Ok(None);
    };
    for slot in 0..slots.slots {
        let key = slots.key_base + i64::from(slot);
        let row = s
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await?;
        if row.try_get::<bool>(0)? {
            return Ok(session.take().map(|session| WarmupSlot {
                slot,
                _session: session,
            }));
        }
    }
    Ok(None)
}

/// Waits (rescanning all slots, with jittered pauses) for a slot, up to
/// `wait_max`, on one session: waiting costs the database one connection,
/// not one per try (a new one only after the last one failed).
pub async fn wait_warmup_slot(config: &Config, slots: &WarmupSlots) -> Option<WarmupSlot> {
    let deadline = Instant::now() + slots.wait_max;
    let mut session: Option<Client> = None;
    loop {
        if session.as_ref().is_none_or(|s| s.is_broken()) {
            session = match Client::connect(config).await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("tidepool: warm-up slot: {e}");
                    None
                }
            };
        }
        match try_slots(&mut session, slots).await {
            Ok(Some(s)) => return Some(s),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("tidepool: warm-up slot: {e}");
                session = None;
            }
        }
        let pause = Duration::from_millis(50).mul_f64(1.0 + 3.0 * random_unit());
        if Instant::now() + pause >= deadline {
            tracing::warn!(
                "tidepool: no warm-up slot free after {:?}; warming up anyway",
                slots.wait_max
            );
            return None;
        }
        time::sleep(pause).await;
    }
}

/// The warm-up gate both connection kinds use: one of the slots, if configured.
/// One gate per process for pools naming the same slots of one cluster.
fn warmup_key(config: &Config, slots: &WarmupSlots) -> Option<String> {
    Some(format!(
        "{:?}:{}/{:?}#{}+{}",
        config.get_host(),
        config.get_port(),
        config.dbname,
        slots.key_base,
        slots.slots
    ))
}

async fn gate(config: &Config, slots: Option<&WarmupSlots>) -> Option<Box<dyn Any>> {
    wait_warmup_slot(config, slots?)
        .await
        .map(|s| Box::new(s) as Box<dyn Any>)
}

impl Manager for PgManager {
    type Conn = Client;
    type Error = Error;

    async fn connect(&self) -> Result<Client, Error> {
        Client::connect(&self.config).await
    }

    fn outcomes(&self, conn: &Client) -> (u64, u64) {
        let s = conn.stats();
        (s.failed, s.timed_out)
    }

    fn record_latency(&self, conn: &mut Client, sink: &Arc<AtomicHistogram>) {
        conn.latency = Some(sink.clone());
    }

    fn is_usable(&self, conn: &Client) -> bool {
        // A connection given back inside a transaction (or a failed one)
        // would leak its state into the next caller's queries.
        !conn.is_broken() && conn.tx_status() == TxStatus::Idle
    }

    async fn check(&self, conn: &mut Client) -> Result<(), Error> {
        conn.batch_execute("").await
    }

    fn poll_idle(&self, conn: &mut Client) -> bool {
        conn.poll_idle()
    }

    async fn warmup_gate(&self) -> Option<Box<dyn Any>> {
        gate(&self.config, self.warmup.as_ref()).await
    }

    fn warmup_key(&self) -> Option<String> {
        warmup_key(&self.config, self.warmup.as_ref()?)
    }
}

/// Shared PostgreSQL connections for a multiplexed [`Pool`](super::Pool):
/// each connection carries up to the pool's `max_in_flight` callers'
/// statements at once, pipelined (see [`SharedClient`]). For statements
/// that need no session state; transactions need [`PgManager`].
pub struct PgSharedManager {
    config: Config,
    warmup: Option<WarmupSlots>,
}

impl PgSharedManager {
    pub fn new(config: Config) -> PgSharedManager {
        PgSharedManager {
            config,
            warmup: None,
        }
    }

    /// Gates warm-up on one of N cluster-wide slots.
    pub fn with_warmup_slots(mut self, slots: WarmupSlots) -> PgSharedManager {
        self.warmup = Some(slots);
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl Manager for PgSharedManager {
    type Conn = SharedClient;
    type Error = Error;
    const MULTIPLEXED: bool = true;

    fn outcomes(&self, conn: &SharedClient) -> (u64, u64) {
        let s = conn.stats();
        (s.failed, s.timed_out)
    }

    fn record_latency(&self, conn: &mut SharedClient, sink: &Arc<AtomicHistogram>) {
        conn.set_latency_sink(sink.clone());
    }

    async fn connect(&self) -> Result<SharedClient, Error> {
        SharedClient::connect(&self.config).await
    }

    fn is_usable(&self, conn: &SharedClient) -> bool {
        !conn.is_broken()
    }

    async fn check(&self, conn: &mut SharedClient) -> Result<(), Error> {
        conn.query("SELECT 1", &[]).await.map(drop)
    }

    fn poll_idle(&self, conn: &mut SharedClient) -> bool {
        conn.poll_idle()
    }

    fn share(&self, conn: &SharedClient) -> SharedClient {
        conn.clone()
    }

    fn used_elsewhere(&self, conn: &SharedClient) -> bool {
        conn.used_elsewhere()
    }

    fn export(&self, conn: &SharedClient) -> Option<Box<dyn Any + Send>> {
        conn.export().map(|e| Box::new(e) as Box<dyn Any + Send>)
    }

    fn import(&self, exported: Box<dyn Any + Send>) -> Option<SharedClient> {
        exported
            .downcast::<Exported>()
            .ok()
            .map(|e| SharedClient::import(*e))
    }

    async fn warmup_gate(&self) -> Option<Box<dyn Any>> {
        gate(&self.config, self.warmup.as_ref()).await
    }

    fn warmup_key(&self) -> Option<String> {
        warmup_key(&self.config, self.warmup.as_ref()?)
    }
}
