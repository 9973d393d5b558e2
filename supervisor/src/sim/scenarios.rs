//! The characterisation patterns, sized for [`SimConfig::default`]: a
//! database with a knee near 2000 queries/s and requests holding a
//! connection ~8 ms, so 1000 requests/s needs ~8 busy connections and a
//! static pool of 16 (HikariCP's 2 x cores) is "sized for peak".
//!
//! [`SimConfig::default`]: super::SimConfig

use std::time::Duration;

use super::{Fault, Load, Scenario};

const MIN: u64 = 60;

/// 800 requests/s for 20 minutes.
pub fn steady() -> Scenario {
    Scenario::new(
        "steady",
        Load::Steady { rate: 800.0 },
        Duration::from_secs(20 * MIN),
    )
}

/// A day compressed into an hour: a sine from 150 to 1000 requests/s and back.
pub fn diurnal() -> Scenario {
    Scenario::new(
        "diurnal",
        Load::Diurnal {
            low: 150.0,
            high: 1000.0,
            period: Duration::from_secs(60 * MIN),
        },
        Duration::from_secs(60 * MIN),
    )
}

/// 200 requests/s with a 3-minute step to 1000 every 10 minutes, for 40
/// minutes.
pub fn burst() -> Scenario {
    Scenario::new(
        "burst",
        Load::Square {
            low: 200.0,
            high: 1000.0,
            period: Duration::from_secs(10 * MIN),
            high_for: Duration::from_secs(3 * MIN),
        },
        Duration::from_secs(40 * MIN),
    )
}

/// A slow climb from 300 to 2600 requests/s over an hour: past the
/// database's knee (~2000/s) in the last quarter, where only fewer
/// connections help.
pub fn drift() -> Scenario {
    Scenario::new(
        "drift",
        Load::Drift {
            from: 300.0,
            to: 2600.0,
            over: Duration::from_secs(60 * MIN),
        },
        Duration::from_secs(60 * MIN),
    )
}

/// 600 requests/s for 30 minutes; from minute 10 to 20 the database answers
/// 4x slower and fails 15% of queries.
pub fn degraded() -> Scenario {
    Scenario::new(
        "degraded",
        Load::Steady { rate: 600.0 },
        Duration::from_secs(30 * MIN),
    )
    .with_fault(Fault {
        start: Duration::from_secs(10 * MIN),
        end: Duration::from_secs(20 * MIN),
        error_rate: 0.15,
        slow_factor: 4.0,
    })
}

/// Every pattern, in the order the characterisation reports them.
pub fn all() -> Vec<Scenario> {
    vec![steady(), diurnal(), burst(), drift(), degraded()]
}
