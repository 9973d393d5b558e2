//! The example where containers run it: under a seccomp filter that
//! answers io_uring's syscalls with EPERM (Docker's default profile since
//! 25, Kubernetes' RuntimeDefault), it runs on epoll and says why; when
//! io_uring is required there, it refuses to start with a clear message.

mod support;

use std::process::Command;

use support::{example_path, App};
use tidepool_testkit::seccomp::deny_io_uring;
use tidepool_testkit::{PgServer, PgUser, RedisServer};

#[test]
fn under_a_seccomp_io_uring_block_the_example_serves_on_epoll() {
    let pg = PgServer::shared();
    let redis = RedisServer::shared();
    let app = App::start_with(
        &[
            "--workers",
            "2",
            "--pg",
            &pg.url(PgUser::Md5),
            "--redis",
            &redis.url(),
        ],
        |cmd| {
            deny_io_uring(cmd.env_remove("TIDEPOOL_IO"));
        },
    );
    assert_eq!(app.get("/plaintext"), (200, "Hello, World!".into()));
    let (status, body) = app.get("/db");
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.get("/redis"), (200, "Hello, World!".into()));
    assert_eq!(
        app.metric(r#"tidepool_io_backend{backend="epoll",reason="seccomp_or_sysctl"}"#),
        Some(1.0)
    );
    assert_eq!(
        app.metric(r#"tidepool_io_backend{backend="io_uring",reason="probe_ok"}"#),
        None,
        "only the backend in use is exported"
    );
    assert!(app.stop().success(), "SIGTERM exits cleanly");
}

#[test]
fn requiring_io_uring_under_the_block_fails_with_the_cause() {
    let port = tidepool_testkit::free_port();
    let mut cmd = Command::new(example_path());
    cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--workers", "1"])
        .env("TIDEPOOL_IO", "io_uring");
    let out = deny_io_uring(&mut cmd).output().expect("run the example");
    assert!(!out.status.success(), "started without io_uring");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("EPERM") && err.contains("seccomp"),
        "the message names the cause: {err}"
    );
}

#[test]
fn an_unknown_backend_name_is_refused() {
    let port = tidepool_testkit::free_port();
    let out = Command::new(example_path())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--workers", "1"])
        .env("TIDEPOOL_IO", "kqueue")
        .output()
        .expect("run the example");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TIDEPOOL_IO"), "{err}");
}
