//! The fleet mode: many instances sharing one budget through leases
//! ([`crate::fleet::Lease`], the same state machine the instances run),
//! with the coordinator table modelled exactly (renews serialised, expiry
//! on the database's clock) and each instance's pool as connections that
//! follow demand up to the cap, closing with a lag when the cap falls.
//!
//! Time advances in fixed steps; demand, crashes, a coordinator outage
//! and a rolling deploy come from a [`FleetScenario`]. The result says
//! whether the budget was ever exceeded, how fair the shares were, how
//! fast a share followed load, and what the leases cost in renews.

use std::time::{Duration, Instant};

use super::rng::Rng;
use crate::fleet::{jain, FleetConfig, Lease, Member};

/// Demand of one instance over time, in connections it would keep busy.
pub type DemandFn = Box<dyn Fn(usize, f64) -> usize>;

/// What happens to the fleet.
#[allow(missing_debug_implementations)]
pub struct FleetScenario {
    pub name: String,
    pub instances: usize,
    pub budget: usize,
    pub ttl: Duration,
    pub safe_capacity: usize,
    pub duration: f64,
    /// Demand of instance `i` (by its index among all instances ever
    /// started, in start order) at time `t` seconds.
    pub demand: DemandFn,
    /// Instances killed (-9) at these times, by index.
    pub crashes: Vec<(f64, usize)>,
    /// Renews fail for everyone during these windows (seconds).
    pub outages: Vec<(f64, f64)>,
    /// From `t`, start `n` new instances over `over` seconds, stopping one
    /// old instance gracefully after each new one starts.
    pub rolling: Option<(f64, usize, f64)>,
    /// Phases of equal demand in which fairness is measured (start, end).
    pub fair_phases: Vec<(f64, f64)>,
    /// Times at which demand moves; the follow time is measured after each.
    pub shifts: Vec<f64>,
}

/// Step of the simulation.
const DT: f64 = 0.05;
/// Steps for an over-cap connection to come back and close (a request's
/// hold time and a loop turn, rounded up).
const RELEASE_LAG_STEPS: u32 = 2;

struct Sim {
    lease: Lease,
    index: usize,
    alive: bool,
    /// Connections open or opening.
    held: usize,
    /// Steps the held connections above the cap have been over it.
    over_for: u32,
    peak_demand: usize,
    next_renew: f64,
}

/// A row of the modelled table.
#[derive(Clone)]
struct Row {
    instance: String,
    granted: usize,
    demand: usize,
    expires: f64,
}

/// What a run measured.
#[derive(Default)]
pub struct FleetResult {
    pub name: String,
    pub budget: usize,
    /// Largest sum of connections held, outside coordinator outages.
    pub max_held: usize,
    /// Largest sum of valid rows' grants.
    pub max_granted: usize,
    /// Largest sum of connections held during outages, and the bound the
    /// safe capacity promises there (instances × safe capacity, or B).
    pub max_held_in_outage: usize,
    pub outage_bound: usize,
    /// Jain's index of held leases two TTLs into each equal-demand phase,
    /// and its minimum over the rest of the phase.
    pub jain_after_2ttl: Vec<f64>,
    pub jain_min_after: Vec<f64>,
    /// After each demand shift: seconds until every instance held at least
    /// 90% of its fair share (None: never within the next shift).
    pub follow_s: Vec<Option<f64>>,
    /// After each crash: seconds until the dead row stopped counting.
    pub reclaim_s: Vec<f64>,
    /// Renews per live instance per second.
    pub renews_per_instance_s: f64,
    /// The most renews (one short transaction each) in any one second:
    /// what the coordinator's database sees when many instances start.
    pub peak_renews_per_s: u64,
    /// Seconds from the start until every instance held at least its floor
    /// (None: not within the run).
    pub all_floored_s: Option<f64>,
    /// Per step: t, held, granted, live instances (for a chart).
    pub series: Vec<(f64, usize, usize, usize)>,
}

impl std::fmt::Debug for FleetResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetResult")
            .field("budget", &self.budget)
            .field("max_held", &self.max_held)
            .field("max_granted", &self.max_granted)
            .field("max_held_in_outage", &self.max_held_in_outage)
            .field("outage_bound", &self.outage_bound)
            .field("jain_after_2ttl", &self.jain_after_2ttl)
            .field("jain_min_after", &self.jain_min_after)
            .field("follow_s", &self.follow_s)
            .field("reclaim_s", &self.reclaim_s)
            .field("renews_per_instance_s", &self.renews_per_instance_s)
            .field("peak_renews_per_s", &self.peak_renews_per_s)
            .field("all_floored_s", &self.all_floored_s)
            .finish()
    }
}

impl FleetResult {
    /// Whether the budget held everywhere it is promised to.
    pub fn within_budget(&self) -> bool {
        self.max_held <= self.budget
            && self.max_granted <= self.budget
            && self.max_held_in_outage <= self.outage_bound
    }
}

pub fn run_fleet(sc: &FleetScenario, seed: u64) -> FleetResult {
    let mut rng = Rng::new(seed);
    let base = Instant::now();
    let at = |t: f64| base + Duration::from_secs_f64(t);
    let ttl = sc.ttl.as_secs_f64();
    let every = ttl / 3.0;
    let cfg = FleetConfig {
        ttl: sc.ttl,
        safe_capacity: sc.safe_capacity,
        ..FleetConfig::new(sc.name.clone(), sc.budget)
    };
    let mut sims: Vec<Sim> = Vec::new();
    let start = |sims: &mut Vec<Sim>, t: f64, rng: &mut Rng| {
        let index = sims.len();
        sims.push(Sim {
            lease: Lease::new(cfg.clone(), format!("i{index:04}")),
            index,
            alive: true,
            held: 0,
            over_for: 0,
            peak_demand: 0,
            next_renew: t + rng.unit() * every / 4.0,
        });
    };
    for _ in 0..sc.instances {
        start(&mut sims, 0.0, &mut rng);
    }
    let mut table: Vec<Row> = Vec::new();
    let mut res = FleetResult {
        name: sc.name.clone(),
        budget: sc.budget,
        outage_bound: sc.budget.max(sc.instances * sc.safe_capacity),
        ..FleetResult::default()
    };
    let mut renews = 0u64;
    let mut renews_in_second: Vec<u64> = Vec::new();
    let mut instance_seconds = 0.0;
    let mut crashes = sc.crashes.clone();
    let mut dead_rows: Vec<(String, f64)> = Vec::new();
    let mut follow: Vec<(f64, Option<f64>)> = sc.shifts.iter().map(|&s| (s, None)).collect();
    let mut rolled = 0usize;
    let mut fair: Vec<(f64, f64, Option<f64>, f64)> = sc
        .fair_phases
        .iter()
        .map(|&(a, b)| (a, b, None, f64::INFINITY))
        .collect();
    let steps = (sc.duration / DT).round() as usize;
    for step in 0..=steps {
        let t = step as f64 * DT;
        let now = at(t);
        let outage = sc.outages.iter().any(|&(a, b)| t >= a && t < b);
        // Crashes: sockets die with the process; the row stays until it expires.
        crashes.retain(|&(when, i)| {
            if t >= when {
                if let Some(s) = sims.get_mut(i).filter(|s| s.alive) {
                    s.alive = false;
                    s.held = 0;
                    dead_rows.push((s.lease.instance().to_string(), when));
                }
                false
            } else {
                true
            }
        });
        // Rolling deploy: a new instance, then an old one stops gracefully.
        if let Some((from, n, over)) = sc.rolling {
            while rolled < n && t >= from + over * rolled as f64 / n as f64 {
                start(&mut sims, t, &mut rng);
                rolled += 1;
                // One of the fleet's original instances (not a new one).
                let originals = sc.instances;
                if let Some(old) = sims[..originals].iter_mut().find(|s| s.alive) {
                    old.alive = false;
                    old.held = 0;
                    old.lease.released();
                    let id = old.lease.instance().to_string();
                    table.retain(|r| r.instance != id);
                }
            }
        }
        for s in sims.iter_mut().filter(|s| s.alive) {
            let demand = (sc.demand)(s.index, t);
            s.peak_demand = s.peak_demand.max(demand);
            let cap = s.lease.cap(now);
            // Connections follow demand up to the cap; above it they close
            // once their requests come back.
            if s.held > cap {
                s.over_for += 1;
                if s.over_for >= RELEASE_LAG_STEPS {
                    s.held = cap;
                    s.over_for = 0;
                }
            } else {
                s.over_for = 0;
                s.held = demand.min(cap);
            }
            instance_seconds += DT;
        }
        if res.all_floored_s.is_none()
            && sims
                .iter()
                .filter(|s| s.alive)
                .all(|s| s.lease.cap(now) >= 1)
        {
            res.all_floored_s = Some(t);
        }
        // Renews due, in a random order (the advisory lock serialises them).
        let mut due: Vec<usize> = (0..sims.len())
            .filter(|&i| sims[i].alive && sims[i].next_renew <= t)
            .collect();
        for k in (1..due.len()).rev() {
            let j = (rng.next_u64() % (k as u64 + 1)) as usize;
            due.swap(k, j);
        }
        for i in due {
            let s = &mut sims[i];
            s.next_renew = t + every * (0.9 + 0.2 * rng.unit());
            renews += 1;
            let second = t as usize;
            if renews_in_second.len() <= second {
                renews_in_second.resize(second + 1, 0);
            }
            renews_in_second[second] += 1;
            if outage {
                s.lease.failed();
                continue;
            }
            let me = s.lease.instance().to_string();
            let rows: Vec<Member> = table
                .iter()
                .map(|r| Member {
                    instance: r.instance.clone(),
                    granted: r.granted,
                    demand: r.demand,
                    expired_for: (r.expires < t).then(|| Duration::from_secs_f64(t - r.expires)),
                })
                .collect();
            let plan = s.lease.plan(&rows, s.peak_demand, s.held, now);
            if plan.reap {
                table.retain(|r| r.instance == me || r.expires >= t - ttl);
            }
            match table.iter_mut().find(|r| r.instance == me) {
                Some(r) => {
                    r.granted = plan.record;
                    r.demand = s.peak_demand;
                    r.expires = t + ttl;
                }
                None => table.push(Row {
                    instance: me.clone(),
                    granted: plan.record,
                    demand: s.peak_demand,
                    expires: t + ttl,
                }),
            }
            s.lease.committed(&plan, now);
            s.peak_demand = (sc.demand)(s.index, t);
        }
        // Measurements.
        let held: usize = sims.iter().filter(|s| s.alive).map(|s| s.held).sum();
        // Valid grants, and what expired rows still reserve.
        let granted: usize = table
            .iter()
            .map(|r| {
                if r.expires >= t {
                    r.granted
                } else {
                    r.granted.min(sc.safe_capacity)
                }
            })
            .sum();
        let live = sims.iter().filter(|s| s.alive).count();
        if outage || sc.outages.iter().any(|&(a, b)| t >= a && t < b + ttl) {
            res.max_held_in_outage = res.max_held_in_outage.max(held);
        } else {
            res.max_held = res.max_held.max(held);
        }
        res.max_granted = res.max_granted.max(granted);
        res.series.push((t, held, granted, live));
        dead_rows.retain(|(id, when)| {
            let counted = table.iter().any(|r| &r.instance == id && r.expires >= t);
            if !counted {
                res.reclaim_s.push(t - when);
            }
            counted
        });
        let leases: Vec<(usize, usize)> = sims
            .iter()
            .filter(|s| s.alive)
            .map(|s| (s.index, s.lease.cap(now)))
            .collect();
        for (a, b, at2, min) in fair.iter_mut() {
            if t >= *a + 2.0 * ttl && t < *b {
                let xs: Vec<f64> = leases.iter().map(|&(_, c)| c as f64).collect();
                let j = jain(&xs);
                if at2.is_none() {
                    *at2 = Some(j);
                }
                *min = min.min(j);
            }
        }
        // Follow: every live instance within 90% of its fair share of the
        // current demand.
        for (k, (shift, done)) in follow.iter_mut().enumerate() {
            let until = sc.shifts.get(k + 1).copied().unwrap_or(sc.duration);
            if done.is_some() || t < *shift || t >= until {
                continue;
            }
            let demands: Vec<usize> = sims
                .iter()
                .filter(|s| s.alive)
                .map(|s| (sc.demand)(s.index, t))
                .collect();
            let shares = crate::fleet::fair_shares(sc.budget, &demands, 1);
            let ok = leases
                .iter()
                .zip(&shares)
                .all(|(&(_, c), &f)| c as f64 >= 0.9 * f as f64 - 1e-9);
            if ok {
                *done = Some(t - *shift);
            }
        }
    }
    res.jain_after_2ttl = fair.iter().filter_map(|f| f.2).collect();
    res.jain_min_after = fair.iter().map(|f| f.3).collect();
    res.follow_s = follow.into_iter().map(|f| f.1).collect();
    res.renews_per_instance_s = renews as f64 / instance_seconds.max(1e-9);
    res.peak_renews_per_s = renews_in_second.iter().copied().max().unwrap_or(0);
    res
}

/// The characterisation's scenario: 50 instances, budget 200, TTL 3 s,
/// ten minutes of equal demand, a hot group, crashes, a coordinator
/// outage and a rolling deploy.
pub fn standard(instances: usize, budget: usize, ttl: Duration) -> FleetScenario {
    let hot = instances / 5;
    FleetScenario {
        name: "standard".into(),
        instances,
        budget,
        ttl,
        safe_capacity: 1,
        duration: 600.0,
        demand: Box::new(move |i, t| {
            let old = i % instances;
            match t {
                // Equal demand above the budget: equal shares.
                t if t < 60.0 => 6,
                // A hot group moves in: a fifth of the instances want a lot.
                t if t < 180.0 => {
                    if old < hot {
                        20
                    } else {
                        2
                    }
                }
                // The heat moves to another group.
                t if t < 280.0 => {
                    if (hot..2 * hot).contains(&old) {
                        20
                    } else {
                        2
                    }
                }
                // Equal again, through the rolling deploy and after.
                _ => 6,
            }
        }),
        crashes: (0..5).map(|k| (120.0 + k as f64, 3 * hot + k)).collect(),
        outages: vec![(200.0, 230.0)],
        rolling: Some((320.0, instances, 120.0)),
        fair_phases: vec![(0.0, 60.0), (460.0, 600.0)],
        shifts: vec![60.0, 180.0, 280.0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_fleet_stays_within_budget_shares_fairly_and_follows_load() {
        let mut sc = standard(20, 60, Duration::from_secs(2));
        sc.duration = 400.0;
        sc.rolling = Some((300.0, 20, 40.0));
        sc.fair_phases = vec![(0.0, 60.0), (350.0, 400.0)];
        let r = run_fleet(&sc, 7);
        assert!(r.within_budget(), "{r:?}");
        assert!(r.max_held >= 50, "the budget was used: {}", r.max_held);
        for j in r.jain_after_2ttl.iter().chain(&r.jain_min_after) {
            assert!(*j >= 0.9, "fairness {j}: {:?}", r.jain_after_2ttl);
        }
        for f in &r.follow_s {
            let f = f.expect("the shares followed the load");
            assert!(f <= 4.0 * 2.0, "followed after {f} s");
        }
        assert_eq!(r.reclaim_s.len(), 5);
        assert!(
            r.reclaim_s.iter().all(|s| *s <= 2.0 + 1.0),
            "{:?}",
            r.reclaim_s
        );
        assert!(r.renews_per_instance_s < 1.0 / (2.0 / 3.0) * 1.2);
    }

    #[test]
    fn a_hundred_instances_starting_at_once_renew_at_most_once_each_per_second() {
        // 100 instances started in the same step (a deploy of a new fleet,
        // or every pod restarted), budget 200, TTL 10 s, steady demand.
        let sc = FleetScenario {
            name: "herd".into(),
            instances: 100,
            budget: 200,
            ttl: Duration::from_secs(10),
            safe_capacity: 1,
            duration: 60.0,
            demand: Box::new(|_, _| 3),
            crashes: Vec::new(),
            outages: Vec::new(),
            rolling: None,
            fair_phases: vec![(0.0, 60.0)],
            shifts: Vec::new(),
        };
        let r = run_fleet(&sc, 11);
        assert!(r.within_budget(), "{r:?}");
        // The first renews are spread over a quarter of the renew period,
        // then each instance renews once a period: no second sees more
        // than one renew per instance, and the steady rate is about one
        // every 3.3 s (the bound: at most one query per instance
        // per second).
        assert!(r.peak_renews_per_s <= 100, "{r:?}");
        assert!(r.renews_per_instance_s <= 0.35, "{r:?}");
        // Their demand (300) exceeds the budget: the first to renew take
        // their demand before the others' rows exist, and give back at
        // their next renews (ceilings at once, rows a renew later), so the
        // last instance holds its floor after two or three renew periods
        // (8 s here), never later.
        let floored = r.all_floored_s.expect("every instance got its floor");
        assert!(floored <= 3.0 * 10.0 / 3.0, "{r:?}");
        assert!(r.jain_after_2ttl.iter().all(|j| *j >= 0.9), "{r:?}");
    }
}
