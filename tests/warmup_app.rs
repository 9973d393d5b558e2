//! Startup herds: three processes of the example against one database
//! with two cluster-wide warm-up slots. Each process holds at most one
//! slot (however many workers it runs) on one lock session; the third
//! opens nothing until a holder dies (`kill -9`), then warms up.

mod support;

use std::time::{Duration, Instant};

use support::App;
use tidepool_testkit::{PgServer, PgUser};

/// Granted advisory locks of the example's slots (key base "tide").
fn slots_held(pg: &PgServer) -> usize {
    pg.psql(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 29801 AND granted",
    )
    .trim()
    .parse()
    .unwrap()
}

fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_third_process_waits_for_a_slot_and_takes_a_dead_holders() {
    let pg = PgServer::shared();
    let url = pg.url(PgUser::Md5);
    // Warm-up of 8 connections, 4 per worker in batches of 2, 30 s
    // apart: a holder keeps its slot for the length of the test.
    let start = || {
        App::start(&[
            "--workers",
            "2",
            "--pg",
            &url,
            "--pg-min-idle",
            "8",
            "--warmup-slots",
            "2",
            "--warmup-delay",
            "0",
            "--warmup-jitter",
            "0",
            "--warmup-pause",
            "30000",
        ])
    };
    let open = |app: &App| app.metric("tidepool_pool_open{pool=\"pg\"}").unwrap_or(0.0);
    let a = start();
    wait_for(
        Duration::from_secs(20),
        "the first process holds a slot",
        || slots_held(pg) == 1,
    );
    let b = start();
    wait_for(
        Duration::from_secs(20),
        "the second process holds a slot",
        || slots_held(pg) == 2,
    );
    // Two workers each, one slot each: a process never holds two.
    wait_for(
        Duration::from_secs(20),
        "both warm their first batch",
        || open(&a) >= 1.0 && open(&b) >= 1.0,
    );
    assert_eq!(slots_held(pg), 2);
    let c = start();
    // The third waits: serving, but its pool opens nothing while no slot
    // is free (checked on several scrapes).
    for _ in 0..5 {
        assert_eq!(c.get("/plaintext").0, 200);
        assert_eq!(open(&c), 0.0, "the third process warmed up without a slot");
        assert_eq!(slots_held(pg), 2);
    }
    // A holder dies: its session ends, its lock goes, the third takes it.
    let mut a = a;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    wait_for(
        Duration::from_secs(30),
        "the third process warms up",
        || open(&c) >= 1.0,
    );
    assert_eq!(slots_held(pg), 2, "b's and c's");
    drop((b, c));
}
