//! The lease's I/O: one PostgreSQL connection of the instance's own
//! (`<application_name>-lease`, outside the budget), a renew every third of
//! the TTL in one short transaction under the fleet's advisory lock, and
//! the caps applied to the instance's pools in between. Runs as a task on
//! a worker's ring.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidepool_engine::rt;

use crate::pg::{Client, Config};
use crate::pool::{Manager, Pool};
use tidepool_supervisor::fleet::{fair_shares_with_headroom, FleetConfig, Lease, Member};

/// The table every fleet's rows live in; created on first use.
pub const TABLE: &str = "tidepool_fleet_lease";

const CREATE: &str = "CREATE TABLE IF NOT EXISTS tidepool_fleet_lease (
    fleet text NOT NULL,
    instance text NOT NULL,
    granted int4 NOT NULL,
    demand int4 NOT NULL,
    expires timestamptz NOT NULL,
    PRIMARY KEY (fleet, instance))";

/// Serialises every renew of one fleet (the two-key form, so the key
/// cannot collide with an application's single-key advisory locks).
const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('tidepool.fleet'), hashtext($1))";
/// The fleet's rows, read after the lock (in its own statement, so its
/// snapshot sees every renew committed before the lock was granted), with
/// how long ago each expired by the database's clock (0: valid).
const READ: &str = "SELECT instance, granted, demand,
        extract(epoch FROM greatest(now() - expires, interval '0'))::float8
    FROM tidepool_fleet_lease WHERE fleet = $1";
/// This instance's row; and, when the lease says so ($6), rows of others
/// expired for more than a TTL, deleted on the way: a renew is three
/// statements (lock, read, write) besides BEGIN and COMMIT.
const WRITE: &str = "WITH reaped AS (
        DELETE FROM tidepool_fleet_lease
        WHERE $6 AND fleet = $1 AND instance <> $2
          AND expires < now() - make_interval(secs => $5))
    INSERT INTO tidepool_fleet_lease (fleet, instance, granted, demand, expires)
    VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
    ON CONFLICT (fleet, instance) DO UPDATE
    SET granted = EXCLUDED.granted, demand = EXCLUDED.demand, expires = EXCLUDED.expires";
const RELEASE: &str = "DELETE FROM tidepool_fleet_lease WHERE fleet = $1 AND instance = $2";

/// A pool whose connections count against the fleet's budget.
pub trait Leased: Send + Sync {
    fn name(&self) -> &str;
    /// Connections busy plus callers waiting, now.
    fn demand(&self) -> usize;
    /// The most connections busy plus callers waiting since the last call
    /// (at least the current demand).
    fn take_peak_demand(&self) -> usize;
    /// Callers the acquire queue turned away so far, and the mean hold
    /// time: callers shed for want of a connection are demand too.
    fn shed_and_hold(&self) -> (u64, Duration);
    /// Connections open or opening, now.
    fn held(&self) -> usize;
    fn set_ceiling(&self, ceiling: Option<usize>);
}

impl<M: Manager> Leased for Pool<M> {
    fn name(&self) -> &str {
        Pool::name(self)
    }

    fn demand(&self) -> usize {
        let t = self.stats().total;
        t.open - t.idle.min(t.open) + t.waiting
    }

    fn take_peak_demand(&self) -> usize {
        Pool::take_peak_demand(self).max(Leased::demand(self))
    }

    fn shed_and_hold(&self) -> (u64, Duration) {
        let t = self.stats().total;
        (t.sheds.iter().flatten().sum(), t.hold.mean())
    }

    fn held(&self) -> usize {
        let t = self.stats().total;
        t.open + t.opening
    }

    fn set_ceiling(&self, ceiling: Option<usize>) {
        Pool::set_ceiling(self, ceiling);
    }
}

/// What `/metrics` and the application see of the lease.
#[derive(Debug, Default)]
pub struct FleetState {
    pub budget: AtomicUsize,
    /// This instance's grant as its row records it.
    pub lease: AtomicUsize,
    /// What its pools may hold now (the lease, or the safe capacity once
    /// it expired).
    pub cap: AtomicUsize,
    /// Live instances at the last renew.
    pub instances: AtomicUsize,
    pub renewals: AtomicU64,
    pub renew_failures: AtomicU64,
    /// Asks the task to hand the lease back and stop.
    stop: AtomicBool,
    /// The task has stopped (the lease handed back, or given up).
    stopped: AtomicBool,
}

impl FleetState {
    /// Asks the coordinator to hand its lease back and stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

/// One instance's side of a fleet.
pub struct Coordinator {
    lease: Lease,
    pg: Config,
    pools: Vec<Arc<dyn Leased>>,
    state: Arc<FleetState>,
    peak_demand: usize,
    /// Each pool's peak demand since the last renew, and as of the last
    /// renew (what the split over the pools follows).
    pool_peaks: Vec<usize>,
    split_demands: Vec<usize>,
    /// Each pool's shed count at the last look, and when that was.
    sheds_seen: Vec<u64>,
    looked: Instant,
    /// The cap last split over the pools, and each pool's ceiling.
    applied: Option<usize>,
    ceilings: Vec<usize>,
    rng: u64,
}

impl Coordinator {
    /// `pg` is the database the pools use; the lease connection gets its
    /// own `application_name` (`<name>-lease`). The pools' ceilings are set
    /// to 0 at once: nothing is opened before the first lease.
    pub fn new(cfg: FleetConfig, pg: &Config, pools: Vec<Arc<dyn Leased>>) -> Coordinator {
        let app = pg.get_application_name().unwrap_or("tidepool").to_string();
        let pg = pg.clone().application_name(&format!("{app}-lease"));
        let instance = instance_id();
        let rng = seed(&instance);
        let state = Arc::new(FleetState::default());
        state.budget.store(cfg.budget, Ordering::Relaxed);
        for p in &pools {
            p.set_ceiling(Some(0));
        }
        let n = pools.len();
        let sheds_seen = pools.iter().map(|p| p.shed_and_hold().0).collect();
        Coordinator {
            lease: Lease::new(cfg, instance),
            pg,
            pools,
            state,
            peak_demand: 0,
            pool_peaks: vec![0; n],
            split_demands: vec![0; n],
            sheds_seen,
            looked: Instant::now(),
            applied: Some(0),
            ceilings: vec![0; n],
            rng,
        }
    }

    pub fn state(&self) -> Arc<FleetState> {
        self.state.clone()
    }

    pub fn instance(&self) -> &str {
        self.lease.instance()
    }

    /// Renews until asked to stop, then hands the lease back. Runs on a
    /// worker (the lease connection lives on its ring).
    pub async fn run(mut self) {
        let mut client = None;
        let every = self.lease.config().renew_every();
        // A fleet starting at once does not renew in step.
        let mut next_renew = Instant::now() + self.jitter(every / 4);
        loop {
            if self.state.stop.load(Ordering::Acquire) {
                break;
            }
            let now = Instant::now();
            let peaks = self.look(now);
            for (kept, p) in self.pool_peaks.iter_mut().zip(&peaks) {
                *kept = (*kept).max(*p);
            }
            self.peak_demand = self.peak_demand.max(peaks.iter().sum());
            if now >= next_renew {
                self.renew(&mut client).await;
                self.peak_demand = self.demand();
                // The split over the pools follows their peak demand over
                // the period, at renews.
                self.split_demands = std::mem::take(&mut self.pool_peaks);
                self.pool_peaks = self.pools.iter().map(|p| p.demand()).collect();
                self.applied = None;
                next_renew = Instant::now() + every.mul_f64(0.9) + self.jitter(every / 5);
            }
            self.apply(self.lease.cap(Instant::now()));
            let wake = next_renew.min(Instant::now() + Duration::from_millis(100));
            rt::time::sleep_until(wake).await;
        }
        self.release(client).await;
        self.state.stopped.store(true, Ordering::Release);
    }

    fn demand(&self) -> usize {
        self.pools.iter().map(|p| p.demand()).sum()
    }

    /// Each pool's demand since the last look: its peak of busy plus
    /// waiting, plus the callers its queue turned away meanwhile, as the
    /// connections they would have kept busy (their rate times the mean
    /// hold). A pool held at its ceiling sheds its overflow on arrival: the
    /// queue alone would hide the demand that should raise the lease.
    fn look(&mut self, now: Instant) -> Vec<usize> {
        let dt = now.saturating_duration_since(self.looked).as_secs_f64();
        self.looked = now;
        let mut peaks = Vec::with_capacity(self.pools.len());
        for (p, seen) in self.pools.iter().zip(self.sheds_seen.iter_mut()) {
            let (shed, hold) = p.shed_and_hold();
            let turned = shed.saturating_sub(*seen);
            *seen = shed;
            let extra = if dt > 0.0 {
                (turned as f64 * hold.as_secs_f64() / dt).ceil() as usize
            } else {
                0
            };
            peaks.push(p.take_peak_demand() + extra);
        }
        peaks
    }

    fn jitter(&mut self, upto: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        upto.mul_f64((self.rng % 10_000) as f64 / 10_000.0)
    }

    /// Splits the instance's cap over its pools by their demand (each
    /// with a floor of one while the cap allows, the rest round-robin),
    /// when the cap changed or a renew asked for a new split. Lowered
    /// ceilings apply at once; a pool's ceiling rises only by what the
    /// others leave free counting the connections they still hold above
    /// their new ceilings, so the pools together never hold more than the
    /// cap while one shrinks and another grows.
    fn apply(&mut self, cap: usize) {
        self.state.cap.store(cap, Ordering::Relaxed);
        if self.applied == Some(cap) {
            return;
        }
        let demands = &self.split_demands;
        let held: Vec<usize> = self.pools.iter().map(|p| p.held()).collect();
        let floor = usize::from(cap >= self.pools.len());
        let headroom = self.lease.config().headroom_pct;
        let mut want = fair_shares_with_headroom(cap, demands, floor, headroom);
        // The rest round-robin over the pools with demand (all of them when
        // none has any): a ceiling on an idle pool opens nothing, and
        // would only keep a busy one from its bursts.
        let mut left = cap - want.iter().sum::<usize>();
        let busy: Vec<usize> = (0..want.len()).filter(|&i| demands[i] > 0).collect();
        let order: Vec<usize> = if busy.is_empty() {
            (0..want.len()).collect()
        } else {
            busy
        };
        let n = want.len();
        let mut i = 0;
        while left > 0 && !order.is_empty() {
            want[order[i % order.len()]] += 1;
            left -= 1;
            i += 1;
        }
        let mut ceil: Vec<usize> = want
            .iter()
            .zip(&self.ceilings)
            .map(|(w, old)| (*w).min(*old))
            .collect();
        let used: usize = ceil.iter().zip(&held).map(|(c, h)| (*c).max(*h)).sum();
        let mut free = cap.saturating_sub(used);
        for i in 0..n {
            if want[i] > ceil[i] {
                let base = ceil[i].max(held[i]);
                let extra = want[i].max(held[i]) - base;
                let take = extra.min(free);
                free -= take;
                ceil[i] = if extra == 0 {
                    want[i]
                } else {
                    (base + take).min(want[i]).max(ceil[i])
                };
            }
        }
        for (p, (c, old)) in self.pools.iter().zip(ceil.iter().zip(&self.ceilings)) {
            if c != old {
                p.set_ceiling(Some(*c));
            }
        }
        // Not fully applied while a rise waits for room: try again.
        self.applied = (ceil == want).then_some(cap);
        self.ceilings = ceil;
    }

    async fn renew(&mut self, client: &mut Option<Client>) {
        let timeout = self.lease.config().renew_every();
        let sent_at = Instant::now();
        // The client is taken out for the renew: dropped with the future if
        // it times out mid-transaction, so a half-done transaction is never
        // reused; a failure starts the next renew from a fresh connection.
        let c = client.take().filter(|c| !c.is_broken());
        match rt::time::timeout(timeout, self.try_renew(c, sent_at)).await {
            Ok(Ok(c)) => *client = Some(c),
            Ok(Err(e)) => self.failed(&e),
            Err(_) => self.failed("renew timed out"),
        }
    }

    fn failed(&mut self, why: &str) {
        self.lease.failed();
        self.state
            .renew_failures
            .store(self.lease.failures(), Ordering::Relaxed);
        tracing::warn!(
            fleet = %self.lease.config().name,
            instance = %self.lease.instance(),
            error = %why,
            "fleet lease renew failed"
        );
    }

    /// The lease connection, opened (and the table created, under a lock
    /// of its own: concurrent `CREATE TABLE IF NOT EXISTS` can fail) when
    /// there is none.
    async fn connect(&self) -> Result<Client, String> {
        let mut c = Client::connect(&self.pg).await.map_err(|e| e.to_string())?;
        c.set_query_timeout(Some(self.lease.config().renew_every()));
        c.batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock(hashtext('tidepool.fleet'), 0); {CREATE}; COMMIT"
        ))
        .await
        .map_err(|e| e.to_string())?;
        Ok(c)
    }

    async fn try_renew(
        &mut self,
        client: Option<Client>,
        sent_at: Instant,
    ) -> Result<Client, String> {
        let mut client = match client {
            Some(c) => c,
            None => self.connect().await?,
        };
        self.renew_on(&mut client, sent_at).await?;
        Ok(client)
    }

    async fn renew_on(&mut self, client: &mut Client, sent_at: Instant) -> Result<(), String> {
        let err = |e: crate::pg::Error| e.to_string();
        let name = self.lease.config().name.clone();
        let ttl = self.lease.config().ttl.as_secs_f64();
        let demand = self.peak_demand;
        let open: usize = self.pools.iter().map(|p| p.held()).sum();
        let me = self.lease.instance().to_string();
        let mut tx = client.transaction().await.map_err(err)?;
        tx.query(LOCK, &[&name]).await.map_err(err)?;
        let rows = tx.query(READ, &[&name]).await.map_err(err)?;
        let rows: Vec<Member> = rows
            .iter()
            .map(|r| {
                let ago = r.get::<f64>(3);
                Member {
                    instance: r.get::<String>(0),
                    granted: r.get::<i32>(1).max(0) as usize,
                    demand: r.get::<i32>(2).max(0) as usize,
                    expired_for: (ago > 0.0).then(|| Duration::from_secs_f64(ago)),
                }
            })
            .collect();
        let plan = self.lease.plan(&rows, demand, open, Instant::now());
        // Lowering is safe at once; raising waits for the commit.
        if plan.cap < self.lease.cap(Instant::now()) {
            self.apply(plan.cap);
        }
        let (record, demand) = (plan.record as i32, demand.min(i32::MAX as usize) as i32);
        tx.execute(WRITE, &[&name, &me, &record, &demand, &ttl, &plan.reap])
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        self.lease.committed(&plan, sent_at);
        self.state.lease.store(plan.record, Ordering::Relaxed);
        self.state.instances.store(plan.live, Ordering::Relaxed);
        self.state
            .renewals
            .store(self.lease.renewals(), Ordering::Relaxed);
        Ok(())
    }

    /// Hands the lease back (graceful shutdown): others may take it at once.
    async fn release(&mut self, client: Option<Client>) {
        let name = self.lease.config().name.clone();
        let me = self.lease.instance().to_string();
        for p in &self.pools {
            p.set_ceiling(Some(0));
        }
        if let Some(mut c) = client.filter(|c| !c.is_broken()) {
            let _ =
                rt::time::timeout(Duration::from_secs(1), c.execute(RELEASE, &[&name, &me])).await;
        }
        self.lease.released();
        self.state.lease.store(0, Ordering::Relaxed);
    }
}

/// Host name, process id and start time: unique per process.
fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{host}-{}-{nanos:x}", std::process::id())
}

fn seed(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) | 1
}
