//! One instance's lease on a share of the fleet's budget, as a sans-IO
//! state machine: the coordinator task reads the fleet's rows under the
//! fleet's lock, asks [`Lease::plan`] what to record, writes it, and
//! reports back with [`Lease::committed`] or [`Lease::failed`]; the pools
//! follow [`Lease::cap`].
//!
//! The invariant it keeps: what this instance's pools may open is never
//! more than what its row records while the row is valid, so the recorded
//! grants (which add up to at most the budget) bound the real connections.
//! - Growing: the row is written first, the cap raised after the commit.
//! - Shrinking: the cap is lowered first; the row only once a later renew
//!   sees the pools closed down to it (or records what is still open).
//! - Expiry: the row expires at the database's `now() + ttl` after the
//!   renew; locally the lease is trusted until the renew was *sent* plus
//!   the TTL less a margin, which is earlier whatever the clocks say (only
//!   their rates must roughly agree). Past it, the pools fall to the safe
//!   capacity (never above the last cap); before any lease, to nothing.

use std::time::{Duration, Instant};

use super::share::fair_shares_with_headroom;

/// A fleet's settings, the same in every instance of it.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// The fleet's name: instances with the same name share one budget.
    pub name: String,
    /// Backend connections the fleet's instances may hold together.
    pub budget: usize,
    /// How long a lease lasts without renewal (default 10 s); renewed
    /// every third of it.
    pub ttl: Duration,
    /// What an instance may keep when it cannot renew (default 1). The
    /// budget holds through a coordinator outage when `budget` is at least
    /// `instances × safe_capacity`.
    pub safe_capacity: usize,
    /// What every live instance is entitled to (default 1).
    pub floor: usize,
    /// Headroom above an instance's demand (its peak of busy plus waiting
    /// connections since its last renew), in percent of it, granted from
    /// budget that no instance's demand takes (default 50): a lease that
    /// only matched the last peak would queue every burst above it until
    /// the next renew.
    pub headroom_pct: usize,
}

impl FleetConfig {
    pub fn new(name: impl Into<String>, budget: usize) -> FleetConfig {
        FleetConfig {
            name: name.into(),
            budget,
            ttl: Duration::from_secs(10),
            safe_capacity: 1,
            floor: 1,
            headroom_pct: 50,
        }
    }

    /// How often the lease is renewed.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// How much earlier than the database the instance stops trusting its
    /// lease: a tenth of the TTL, for clock rates that differ a little and
    /// the time between the renew's send and its commit.
    pub fn margin(&self) -> Duration {
        self.ttl / 10
    }
}

/// A row of the fleet's table, as read under the fleet's lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub instance: String,
    pub granted: usize,
    pub demand: usize,
    /// How long ago the row expired, by the database's clock; `None` while
    /// it is valid.
    pub expired_for: Option<Duration>,
}

impl Member {
    /// A valid row.
    pub fn live(instance: impl Into<String>, granted: usize, demand: usize) -> Member {
        Member {
            instance: instance.into(),
            granted,
            demand,
            expired_for: None,
        }
    }
}

/// What one renew writes and applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewal {
    /// This instance's grant, as its row records it.
    pub record: usize,
    /// The pools' cap: applied at once when lower than the current one,
    /// after the commit when higher.
    pub cap: usize,
    /// This instance's fair share at the time (for logs).
    pub target: usize,
    /// Whether rows expired for more than a TTL may be deleted: only once
    /// this instance has renewed for a whole TTL without failing, so that
    /// after an outage every live instance had its chance to renew first.
    pub reap: bool,
    /// Live instances, this one included.
    pub live: usize,
}

/// The lease's state.
#[derive(Debug)]
pub struct Lease {
    cfg: FleetConfig,
    instance: String,
    recorded: usize,
    cap: usize,
    valid_until: Option<Instant>,
    /// When the current run of successful renews began.
    up_since: Option<Instant>,
    instances: usize,
    renewals: u64,
    failures: u64,
}

impl Lease {
    pub fn new(cfg: FleetConfig, instance: impl Into<String>) -> Lease {
        Lease {
            cfg,
            instance: instance.into(),
            recorded: 0,
            cap: 0,
            valid_until: None,
            up_since: None,
            instances: 0,
            renewals: 0,
            failures: 0,
        }
    }

    pub fn config(&self) -> &FleetConfig {
        &self.cfg
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// What to record, given the fleet's rows as read under its lock (this
    /// instance's own among them, unless it has none), this instance's
    /// demand, how many connections its pools hold now (open or opening),
    /// and the time.
    ///
    /// - What this instance holds is what its *valid* row says, not what it
    ///   recorded last: a row that expired holds nothing, and others may
    ///   have taken its share meanwhile.
    /// - An expired row still reserves what its instance may keep without
    ///   a lease (the safe capacity, at most its grant) until it has been
    ///   expired for a TTL *and* this instance has been renewing for a TTL:
    ///   after a coordinator outage every live instance holds its safe
    ///   capacity unrecorded, and must get the chance to renew before its
    ///   reservation is handed to others.
    pub fn plan(&self, rows: &[Member], demand: usize, open: usize, now: Instant) -> Renewal {
        let ttl = self.cfg.ttl;
        let settled = self.up_since.is_some_and(|u| now.duration_since(u) >= ttl);
        let mut members: Vec<(&str, usize)> = vec![(self.instance.as_str(), demand)];
        let mut others_held = 0;
        let mut held = 0;
        for m in rows {
            let mine = m.instance == self.instance;
            match m.expired_for {
                None if mine => held = m.granted,
                None => {
                    members.push((m.instance.as_str(), m.demand));
                    others_held += m.granted;
                }
                Some(_) if mine => {}
                Some(ago) if settled && ago > ttl => {}
                Some(_) => others_held += m.granted.min(self.cfg.safe_capacity),
            }
        }
        // Every instance orders the members the same way (by id), so they
        // agree on every share. What expired rows reserve is set aside.
        members.sort_unstable();
        let demands: Vec<usize> = members.iter().map(|m| m.1).collect();
        let reserved: usize = rows
            .iter()
            .filter(|m| m.instance != self.instance && m.expired_for.is_some())
            .filter(|m| !(settled && m.expired_for.is_some_and(|a| a > ttl)))
            .map(|m| m.granted.min(self.cfg.safe_capacity))
            .sum();
        let shares = fair_shares_with_headroom(
            self.cfg.budget.saturating_sub(reserved),
            &demands,
            self.cfg.floor,
            self.cfg.headroom_pct,
        );
        let me = members
            .iter()
            .position(|m| m.0 == self.instance)
            .expect("pushed above");
        let target = shares[me];
        let live = members.len();
        if target >= held {
            let free = self.cfg.budget.saturating_sub(others_held + held);
            let record = target.min(held + free);
            return Renewal {
                record,
                cap: record,
                target,
                reap: settled,
                live,
            };
        }
        // Shrinking: the record follows only once the cap is down.
        let record = if self.cap <= target {
            target.max(open).min(held)
        } else {
            held
        };
        Renewal {
            record,
            cap: target,
            target,
            reap: settled,
            live,
        }
    }

    /// The renew sent at `sent_at` committed `r`; `members` instances
    /// (this one included) were live.
    pub fn committed(&mut self, r: &Renewal, sent_at: Instant) {
        self.up_since.get_or_insert(sent_at);
        let members = r.live;
        self.recorded = r.record;
        self.cap = r.cap.min(r.record);
        self.valid_until = Some(sent_at + self.cfg.ttl - self.cfg.margin());
        self.instances = members;
        self.renewals += 1;
    }

    /// A renew failed (the coordinator unreachable, a query refused).
    pub fn failed(&mut self) {
        self.failures += 1;
        self.up_since = None;
    }

    /// The lease was handed back (graceful shutdown): nothing is held.
    pub fn released(&mut self) {
        self.recorded = 0;
        self.cap = 0;
        self.valid_until = None;
    }

    /// What the pools may hold at `now`.
    pub fn cap(&self, now: Instant) -> usize {
        match self.valid_until {
            Some(v) if now < v => self.cap,
            // Expired: the safe capacity, never more than was held.
            Some(_) => self.cfg.safe_capacity.min(self.cap),
            // Never held (or handed back): nothing, so that instances
            // starting while others hold the whole budget (a rolling
            // deploy) cannot exceed it.
            None => 0,
        }
    }

    /// Whether the lease is currently trusted.
    pub fn valid(&self, now: Instant) -> bool {
        self.valid_until.is_some_and(|v| now < v)
    }

    /// What this instance's row records.
    pub fn recorded(&self) -> usize {
        self.recorded
    }

    /// Live instances seen at the last renew.
    pub fn instances(&self) -> usize {
        self.instances
    }

    pub fn renewals(&self) -> u64 {
        self.renewals
    }

    pub fn failures(&self) -> u64 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, granted: usize, demand: usize) -> Member {
        Member::live(id, granted, demand)
    }

    fn cfg() -> FleetConfig {
        FleetConfig::new("f", 8)
    }

    #[test]
    fn a_newcomer_takes_only_what_is_free() {
        let lease = Lease::new(cfg(), "c");
        // Two instances hold 7 of 8; the newcomer's fair share is more,
        // but only 1 is free.
        let r = lease.plan(
            &[member("a", 4, 10), member("b", 3, 10)],
            10,
            0,
            Instant::now(),
        );
        assert_eq!(
            r.target, 2,
            "8 among 3: 3, 3, 2 (the remainder to the first ids)"
        );
        assert_eq!((r.record, r.cap), (1, 1));
        // Nothing free: it records 0 and waits for the others to give back.
        let r = lease.plan(
            &[member("a", 4, 10), member("b", 4, 10)],
            10,
            0,
            Instant::now(),
        );
        assert_eq!((r.record, r.cap), (0, 0));
    }

    #[test]
    fn shrinking_lowers_the_cap_first_and_the_record_a_renew_later() {
        let mut lease = Lease::new(cfg(), "a");
        let t0 = Instant::now();
        let r = lease.plan(&[], 10, 0, t0);
        assert_eq!((r.record, r.cap), (8, 8));
        lease.committed(&r, t0);
        assert_eq!(lease.cap(t0), 8);
        // A second instance with demand arrives: a's share falls to 4.
        let rows = |a: usize| [member("a", a, 10), member("b", 0, 10)];
        let r = lease.plan(&rows(8), 10, 8, t0);
        assert_eq!((r.record, r.cap), (8, 4), "the record waits");
        lease.committed(&r, t0);
        assert_eq!(lease.cap(t0), 4);
        // Next renew: 6 still open (in use when the cap fell): record 6.
        let r = lease.plan(&rows(8), 10, 6, t0);
        assert_eq!((r.record, r.cap), (6, 4));
        lease.committed(&r, t0);
        let r = lease.plan(&rows(6), 10, 3, t0);
        assert_eq!((r.record, r.cap), (4, 4));
    }

    #[test]
    fn a_row_that_expired_holds_nothing() {
        // After an outage longer than the TTL, b took the budget: a's
        // stale record must not be written back.
        let mut lease = Lease::new(cfg(), "a");
        let t0 = Instant::now();
        let r = lease.plan(&[], 10, 0, t0);
        lease.committed(&r, t0);
        assert_eq!(lease.recorded(), 8);
        let r = lease.plan(&[member("b", 7, 10)], 10, 1, t0);
        assert_eq!(r.target, 4);
        assert_eq!((r.record, r.cap), (1, 1), "only what is free");
    }

    #[test]
    fn an_expired_lease_falls_to_the_safe_capacity() {
        let mut lease = Lease::new(cfg(), "a");
        let t0 = Instant::now();
        assert_eq!(lease.cap(t0), 0, "nothing before the first lease");
        let r = lease.plan(&[], 4, 0, t0);
        lease.committed(&r, t0);
        let ttl = lease.config().ttl;
        assert_eq!(lease.cap(t0 + ttl / 2), 6, "its demand and half again");
        // Trusted for less than the TTL: the database keeps the row longer.
        assert_eq!(lease.cap(t0 + ttl - ttl / 20), 1);
        lease.failed();
        assert_eq!(lease.failures(), 1);
        lease.released();
        assert_eq!(lease.cap(t0), 0);
    }

    #[test]
    fn simulated_fleets_never_record_more_than_the_budget() {
        // Instances renewing in turn with moving demands, joining and
        // dying: the recorded grants of live instances never exceed the
        // budget, and neither do the caps in force.
        let mut x = 99u64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n) as usize
        };
        let budget = 8;
        // lease, demand, connections open
        let mut leases: Vec<(Lease, usize, usize)> = Vec::new();
        let t0 = Instant::now();
        for step in 0..50_000 {
            if leases.len() < 6 && rnd(50) == 0 {
                let id = format!("i{step:05}");
                leases.push((Lease::new(FleetConfig::new("f", budget), id), 1, 0));
            }
            if !leases.is_empty() && rnd(300) == 0 {
                // A crash: its row is reclaimed after the TTL, its
                // connections gone; modelled as at once (the worst case
                // for the others).
                let i = rnd(leases.len() as u64);
                leases.remove(i);
            }
            if leases.is_empty() {
                continue;
            }
            let i = rnd(leases.len() as u64);
            {
                let (lease, demand, open) = &mut leases[i];
                *demand = rnd(12);
                let cap = lease.cap(t0);
                match rnd(3) {
                    // Callers release: the pool closes down to its cap.
                    0 => *open = (*open).min(cap),
                    // Callers arrive: the pool opens up to its cap.
                    1 => *open = (*open).max(rnd(cap as u64 + 1)),
                    _ => {}
                }
            }
            let rows: Vec<Member> = leases
                .iter()
                .map(|(l, d, _)| member(l.instance(), l.recorded(), *d))
                .collect();
            let (lease, demand, open) = &mut leases[i];
            let r = lease.plan(&rows, *demand, *open, t0);
            lease.committed(&r, t0);
            let recorded: usize = leases.iter().map(|l| l.0.recorded()).sum();
            assert!(recorded <= budget, "step {step}: {recorded}");
            for (l, _, open) in &leases {
                assert!(l.cap(t0) <= l.recorded(), "{l:?}");
                assert!(*open <= l.recorded(), "{l:?} open {open}");
            }
        }
        // And the shares follow demand: with equal demand, equal leases.
        let others = [member("b", 4, 10)];
        let mut a = Lease::new(FleetConfig::new("f", budget), "a");
        let r = a.plan(&others, 10, 0, t0);
        a.committed(&r, t0);
        assert_eq!(a.recorded(), 4);
    }
}
