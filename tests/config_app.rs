//! The example configured from a TOML file and the environment
//! (`hello --config FILE`, `TIDEPOOL_POOLS__…`), with flags winning, and a
//! wrong key refused at startup by name.

mod support;

use support::{example_path, App, TempFile};
use tidepool_testkit::{PgServer, PgUser, RedisServer};

#[test]
fn a_file_and_the_environment_size_the_pools_and_flags_win() {
    let pg = PgServer::shared();
    let redis = RedisServer::shared();
    let file = TempFile::new(
        r#"
[http]
max_body = 100

[pools.pg]
max_open = 5

[pools.pg-shared]
max_open = 7

[pools.pg-shared.autoscale]
enabled = true
min = 2
max = 6
window = "10s"
"#,
    );
    let app = App::start_with(
        &[
            "--workers",
            "2",
            "--config",
            file.path(),
            "--pg",
            &pg.url(PgUser::Md5),
            "--redis",
            &redis.url(),
            "--pg-shared-max-open",
            "3",
        ],
        |cmd| {
            cmd.env("TIDEPOOL_POOLS__REDIS__MAX_OPEN", "4");
        },
    );
    assert_eq!(
        app.metric("tidepool_pool_max_open{pool=\"pg\"}"),
        Some(5.0),
        "from the file"
    );
    assert_eq!(
        app.metric("tidepool_pool_max_open{pool=\"pg-shared\"}"),
        Some(3.0),
        "the flag wins over the file"
    );
    assert_eq!(
        app.metric("tidepool_pool_max_open{pool=\"redis\"}"),
        Some(4.0),
        "from the environment"
    );
    assert_eq!(
        app.metric_eventually("tidepool_supervisor_autoscale_enabled{pool=\"pg-shared\"}"),
        1.0
    );
    assert_eq!(
        app.metric_eventually("tidepool_supervisor_autoscale_enabled{pool=\"pg\"}"),
        0.0
    );
    // [http] max_body: a larger body is refused before the handler.
    assert_eq!(app.request("PUT", "/cache/k", &[b'x'; 200]).0, 413);
    assert_eq!(app.request("PUT", "/cache/k", &[b'x'; 50]).0, 204);
    assert!(app.stop().success());
}

/// Runs the example expecting it to refuse to start; returns its stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new(example_path());
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{}", tidepool_testkit::free_port()),
    ])
    .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the example");
    assert!(!out.status.success(), "it started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_wrong_key_or_value_is_a_startup_error_naming_it() {
    let file = TempFile::new("[pools.pg]\nmax_opn = 3\n");
    let err = refused(&["--config", file.path()], &[]);
    assert!(err.contains("pools.pg.max_opn"), "{err}");
    assert!(err.contains(file.path()), "names the file: {err}");
    let err = refused(&[], &[("TIDEPOOL_POOLS__PG__ACQUIRE_TIMEOUT", "5")]);
    assert!(
        err.contains("pools.pg.acquire_timeout")
            && err.contains("TIDEPOOL_POOLS__PG__ACQUIRE_TIMEOUT"),
        "{err}"
    );
    let file = TempFile::new("[pools.postgres]\nmax_open = 3\n");
    let err = refused(&["--config", file.path()], &[]);
    assert!(err.contains("unknown pool `postgres`"), "{err}");
}

/// `[http] access_log` (here from the environment) logs each request
/// through `tracing`, which the example prints to stderr.
#[test]
fn the_access_log_is_a_setting() {
    let app = App::start_with(&["--workers", "1"], |cmd| {
        cmd.env("TIDEPOOL_HTTP__ACCESS_LOG", "true")
            .stderr(std::process::Stdio::piped());
    });
    assert_eq!(app.get("/plaintext").0, 200);
    assert_eq!(app.get("/nope").0, 404);
    let (status, err) = app.stop_with_stderr();
    assert!(status.success());
    assert!(
        err.contains("request method=GET path=/plaintext status=200"),
        "{err}"
    );
    assert!(err.contains("path=/nope status=404"), "{err}");
}
