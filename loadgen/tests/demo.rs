//! The README's main job in a short mode: `demo` starts PostgreSQL, Redis
//! and the example app, drives the composite pattern three times (adaptive,
//! static for the average, static for the peak), writes each run's report
//! and the comparison, and cleans up.

use std::path::PathBuf;

fn example_binary() -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/examples/hello
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("hello");
    assert!(
        p.exists(),
        "{} missing: scripts/test.sh builds it (or `cargo build --example hello`)",
        p.display()
    );
    p
}

#[test]
fn demo_short_mode_writes_a_report() {
    let out = std::env::temp_dir().join(format!("tidepool-demo-test-{}", std::process::id()));
    let args: Vec<String> = [
        "--duration",
        "8",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
        "--app",
        example_binary().to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let code = tidepool_loadgen::demo::cmd_demo(&args).expect("demo runs");
    assert_eq!(code, 0);
    // The comparison page over the three runs.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    tidepool_loadgen::report::html::check_balanced(&html).unwrap();
    assert!(
        html.matches("<svg").count() >= 3,
        "charts in the comparison"
    );
    for run in ["adaptive", "static-average", "static-peak"] {
        assert!(html.contains(&format!("{run}/report.html")), "links {run}");
        // Each run's own report and series.
        let own = std::fs::read_to_string(out.join(run).join("report.html")).unwrap();
        assert!(own.matches("<svg").count() >= 3, "charts in {run}'s report");
        let series = std::fs::read_to_string(out.join(run).join("series.jsonl")).unwrap();
        assert!(series.lines().count() >= 6, "{run}'s series");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let runs = summary["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 3);
    let pools = &runs[0]["summary"]["pools"];
    assert!(
        pools.get("pg").is_some() && pools.get("redis").is_some(),
        "the adaptive run's pools are on its timeline: {pools:.400}"
    );
    // The static runs were sized from what the adaptive run held.
    let sizing = runs[2]["sizing"].as_str().unwrap();
    assert!(sizing.starts_with("static (pg "), "{sizing}");
    let table = std::fs::read_to_string(out.join("comparison.txt")).unwrap();
    assert!(
        table.contains("goodput") && table.contains("connection-seconds"),
        "{table}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
