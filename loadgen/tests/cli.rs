//! The command line without a server: bad settings, dry runs, `compare`,
//! and the report of a synthetic run.

use std::collections::BTreeMap;

use tidepool_loadgen::cli::{main as cli_main, parse_run_args};
use tidepool_loadgen::client::run::{ClassSecond, PoolSecond, Second};
use tidepool_loadgen::report::compare::compare;
use tidepool_loadgen::report::html::{chart_titles, check_balanced, render, svgs};
use tidepool_loadgen::report::stats::Latency;
use tidepool_loadgen::report::summary::{EdgeSummary, PoolSummary, Samples, Summary};

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn plan_error(v: &[&str]) -> String {
    parse_run_args(&args(v))
        .and_then(|a| a.plan(None).map(|_| ()))
        .unwrap_err()
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tidepool-loadgen-cli-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn impossible_settings_are_refused_with_a_reason() {
    assert!(plan_error(&["--rate", "-100"]).contains("rate"));
    assert!(plan_error(&["--burst", "10:100:1s:1.5"]).contains("duty"));
    assert!(plan_error(&["--sine", "10:20:5s"]).contains("amplitude"));
    assert!(plan_error(&["--ramp", "1"]).contains("--ramp"));
    assert!(plan_error(&["--rate", "10", "--burst", "1:2:1s:0.5"]).contains("one of"));
    assert!(plan_error(&[]).contains("no load"));
    let e = parse_run_args(&args(&["--duration", "-3s"])).unwrap_err();
    assert!(e.contains("--duration"), "{e}");
    let e = parse_run_args(&args(&["--frobnicate"])).unwrap_err();
    assert!(e.contains("frobnicate"), "{e}");

    // Unknown class in a mix, through a pattern file.
    let d = tmp("badmix");
    let f = d.join("p.toml");
    std::fs::write(
        &f,
        "[[class]]\nname='a'\npath='/a'\n[[phase]]\nkind='steady'\nrate=5\nduration='1s'\n\
         [[drift]]\nstart='0s'\nduration='1s'\nto={b=1}\n",
    )
    .unwrap();
    let e = plan_error(&["--pattern", f.to_str().unwrap()]);
    assert!(
        e.contains("unknown class \"b\"") && e.contains("p.toml"),
        "{e}"
    );
    std::fs::write(&f, "[[phase]]\nkind = 'steady'\nrate = 'fast'\n").unwrap();
    let e = plan_error(&["--pattern", f.to_str().unwrap()]);
    assert!(e.contains("p.toml"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();

    // Settings that only fail against a target: exit code 2, before any traffic.
    let code = cli_main(&args(&[
        "run",
        "--target",
        "http://127.0.0.1:9",
        "--rate",
        "10",
        "--threshold",
        "p99 fast",
    ]));
    assert_eq!(code, 2);
    let code = cli_main(&args(&[
        "run",
        "--target",
        "http://127.0.0.1:9",
        "--rate",
        "10",
        "--connections",
        "0",
    ]));
    assert_eq!(code, 2);
    let code = cli_main(&args(&["run", "--target", "ftp://x", "--rate", "10"]));
    assert_eq!(code, 2);
    let code = cli_main(&args(&[
        "run",
        "--rate",
        "10",
        "--threads",
        "4",
        "--connections",
        "2",
        "--target",
        "http://127.0.0.1:9",
    ]));
    assert_eq!(code, 2);
}

#[test]
fn dry_run_needs_no_target() {
    assert_eq!(
        cli_main(&args(&[
            "run",
            "--ramp",
            "10:100",
            "--duration",
            "3s",
            "--dry-run"
        ])),
        0
    );
    assert_eq!(
        cli_main(&args(&["demo", "--dry-run", "--duration", "20s"])),
        0
    );
    // A demo whose example server does not exist fails at once, clearly.
    assert_ne!(
        cli_main(&args(&[
            "demo",
            "--duration",
            "5s",
            "--app",
            "/nonexistent/hello"
        ])),
        0
    );
}

fn summary(throughput: f64, p99: f64) -> Summary {
    let n = 30;
    let mut s = Summary {
        tool: "tidepool-loadgen".into(),
        duration_s: n as f64,
        throughput_rps: throughput,
        completed: (throughput * n as f64) as u64,
        samples: Samples {
            throughput: (0..n).map(|i| throughput + (i % 5) as f64).collect(),
            p50_ms: (0..n).map(|i| 1.0 + (i % 3) as f64 * 0.01).collect(),
            p99_ms: (0..n).map(|i| p99 + (i % 4) as f64 * 0.1).collect(),
            p999_ms: (0..n).map(|i| p99 * 2.0 + (i % 4) as f64 * 0.1).collect(),
            errors: vec![0.0; n],
            goodput: (0..n).map(|i| throughput + (i % 5) as f64).collect(),
        },
        ..Default::default()
    };
    s.latency.p99_ms = p99;
    s
}

#[test]
fn compare_marks_what_changed_and_what_did_not() {
    let a = summary(1000.0, 10.0);
    let b = summary(1200.0, 10.0);
    let t = compare(&a, &b, "A.json", "B.json");
    let line = |name: &str| t.lines().find(|l| l.starts_with(name)).unwrap().to_string();
    let tp = line("throughput (req/s)");
    assert!(tp.contains("+19.") && !tp.contains(" ~ "), "{t}");
    assert!(line("p99 (ms)").contains(" ~ "), "{t}");
    assert!(line("p50 (ms)").contains(" ~ "), "{t}");
    assert!(line("run p99 (ms)").contains("no test"), "{t}");

    // Through the command line, from files.
    let d = tmp("compare");
    let (pa, pb) = (d.join("a.json"), d.join("b.json"));
    std::fs::write(&pa, serde_json::to_string(&a).unwrap()).unwrap();
    std::fs::write(&pb, serde_json::to_string(&b).unwrap()).unwrap();
    assert_eq!(
        cli_main(&args(&[
            "compare",
            pa.to_str().unwrap(),
            pb.to_str().unwrap()
        ])),
        0
    );
    std::fs::write(&pb, "{\"not\": \"a summary\"}").unwrap();
    assert_eq!(
        cli_main(&args(&[
            "compare",
            pa.to_str().unwrap(),
            pb.to_str().unwrap()
        ])),
        2
    );
    std::fs::remove_dir_all(&d).unwrap();
}

fn synthetic_seconds() -> Vec<Second> {
    (0..40u64)
        .map(|t| {
            let high = (10..20).contains(&t) || (30..40).contains(&t);
            let rate = if high { 2000 } else { 500 };
            let p99 = if (10..13).contains(&t) {
                80.0
            } else {
                4.0 + (t % 3) as f64
            };
            let mut classes = BTreeMap::new();
            for (i, c) in ["db", "redis <&>"].iter().enumerate() {
                classes.insert(
                    c.to_string(),
                    ClassSecond {
                        offered: rate / 2,
                        completed: rate / 2,
                        errors: 0,
                        latency: Latency {
                            count: rate / 2,
                            p50_ms: 1.0 + i as f64,
                            p99_ms: p99 + i as f64,
                            ..Default::default()
                        },
                        service_p50_ms: 1.0,
                        service_p99_ms: 3.0,
                        good: rate / 2,
                        unavailable: 0,
                    },
                );
            }
            let open = if high { 12.0 } else { 4.0 };
            let mut pools = BTreeMap::new();
            pools.insert(
                "pg".to_string(),
                PoolSecond {
                    max_open: Some(if t < 5 { 8.0 } else { 16.0 }),
                    open: Some(open),
                    in_use: Some(open / 2.0),
                    waiting: Some(0.0),
                    acquire_wait_p99_ms: Some(if high { 3.0 } else { 0.5 }),
                    grow: (t == 10 || t == 30).then_some(1.0),
                    shrink: (t == 22).then_some(1.0),
                    shed: None,
                },
            );
            Second {
                t,
                expected_rps: Some(rate as f64),
                offered: rate,
                sent: rate,
                completed: rate,
                connections: 64,
                lag_p99_ms: 0.2,
                worker_cpu: 0.3,
                latency: Latency {
                    count: rate,
                    p50_ms: 1.0,
                    p99_ms: p99,
                    ..Default::default()
                },
                classes,
                pools,
                ..Default::default()
            }
        })
        .collect()
}

#[test]
fn report_is_well_formed_and_holds_every_chart() {
    let seconds = synthetic_seconds();
    let mut s = summary(1000.0, 20.0);
    s.target = "http://127.0.0.1:8080".into();
    s.slo_ms = 50.0;
    s.duration_s = 40.0;
    s.generator.lag_bound_ms = 5.0;
    s.pools.insert(
        "pg".into(),
        PoolSummary {
            connection_seconds: 320.0,
            max_overshoot_pct: Some(0.0),
            ..Default::default()
        },
    );
    s.edges = [10.0, 20.0, 30.0]
        .iter()
        .map(|&t| EdgeSummary {
            t,
            from_rps: 500.0,
            to_rps: 2000.0,
            direction: "up".into(),
            latency_settle_s: Some(3.0),
            pools: BTreeMap::new(),
        })
        .collect();
    let html = render(&s, &seconds);
    check_balanced(&html).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.contains("<script") && !html.contains("http-equiv") && !html.contains("<link"));
    let charts = svgs(&html);
    assert_eq!(
        charts.len(),
        5,
        "rate, latency, pool pg, acquire wait, generator"
    );
    assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
    let titles = chart_titles(&html);
    for t in [
        "Offered vs achieved rate",
        "Latency per class, p50 (dashed) and p99, from the intended send time",
        "Pool pg: size and supervisor decisions (▲ grow, ▼ shrink)",
        "Pool acquire-wait p99",
    ] {
        assert!(titles.contains_key(t), "missing {t}: {titles:?}");
    }
    // Decision markers: two grows and one shrink.
    assert_eq!(html.matches("class=\"grow\"").count(), 2);
    assert_eq!(html.matches("class=\"shrink\"").count(), 1);
    // Class names are escaped.
    assert!(html.contains("redis &lt;&amp;&gt;") && !html.contains("redis <&>"));
    // Summary figures.
    for f in [
        "p99.9",
        "seconds over the SLO",
        "connection-seconds",
        "overshoot",
        "Settling after each rate edge",
        "errors",
    ] {
        assert!(html.contains(f), "missing {f}");
    }
    // The checker does catch a broken document.
    assert!(check_balanced("<html><svg><g></svg></html>").is_err());

    let d = tmp("report");
    std::fs::write(d.join("summary.json"), serde_json::to_string(&s).unwrap()).unwrap();
    let lines: Vec<String> = seconds
        .iter()
        .map(|x| serde_json::to_string(x).unwrap())
        .collect();
    std::fs::write(d.join("series.jsonl"), lines.join("\n")).unwrap();
    assert_eq!(cli_main(&args(&["report", d.to_str().unwrap()])), 0);
    let again = std::fs::read_to_string(d.join("report.html")).unwrap();
    assert_eq!(
        again, html,
        "re-rendering from the files gives the same report"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
#[ignore = "writes a sample report to $LOADGEN_SAMPLE_REPORT for eyeballing"]
fn sample_report() {
    let seconds = synthetic_seconds();
    let mut s = summary(1000.0, 20.0);
    s.duration_s = 40.0;
    s.slo_ms = 50.0;
    s.pools.insert("pg".into(), PoolSummary::default());
    let path =
        std::env::var("LOADGEN_SAMPLE_REPORT").unwrap_or_else(|_| "/tmp/sample-report.html".into());
    std::fs::write(path, render(&s, &seconds)).unwrap();
}
