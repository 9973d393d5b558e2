//! The README's main job in a short mode: `demo` starts PostgreSQL, Redis
//! and the example app, drives the composite pattern, writes the report and
//! cleans up.

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
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.matches("<svg").count() >= 3, "charts in the report");
    assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let text = summary.to_string();
    assert!(
        text.contains("\"pg\""),
        "the pg pool is on the timeline: {text:.400}"
    );
    assert!(
        text.contains("\"redis\""),
        "the redis pool is on the timeline"
    );
    let series = std::fs::read_to_string(out.join("series.jsonl")).unwrap();
    assert!(series.lines().count() >= 6);
    let _ = std::fs::remove_dir_all(&out);
}
