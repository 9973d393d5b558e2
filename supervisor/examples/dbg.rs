use std::time::Duration;
use tidepool_supervisor::sim::*;
use tidepool_supervisor::*;
fn main() {
    let mut c = SimConfig::default();
    c.pool.think_time = Duration::from_millis(36);
    let sc = Scenario::new(
        "diurnal",
        Load::Diurnal {
            low: 30.0,
            high: 200.0,
            period: Duration::from_secs(1200),
        },
        Duration::from_secs(1200),
    );
    let a = PoolAutoscale {
        enabled: true,
        min: 2,
        max: 16,
        ..Default::default()
    };
    let r = run(&sc, &c, &Policy::adaptive(a, 8));
    println!("{:?}", r.summary);
    for d in &r.decisions {
        println!("  {:.0}s {}->{} {}", d.t, d.from, d.to, d.reason);
    }
    println!("{:?}", r.hold_reasons);
    for row in r.series.iter().step_by(30) {
        println!(
            "{} off {} mo {} open {} in_use {} wait {} w99 {:.1}",
            row.t,
            row.offered,
            row.max_open,
            row.open,
            row.in_use,
            row.waiting,
            row.acquire_wait_p99_ms
        );
    }
}
