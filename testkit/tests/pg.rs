mod common;

use common::{alive, gone, live_children, live_group_members, psql_at, psql_tcp, stdout, tcp_open};
use tidepool_testkit::{PgServer, PgUser};

const PASSWORD_USERS: [PgUser; 3] = [PgUser::Password, PgUser::Md5, PgUser::Scram];

#[test]
fn every_role_logs_in_over_tcp_with_its_password() {
    let pg = PgServer::shared();
    for user in PgUser::ALL {
        let out = psql_tcp(
            pg.port(),
            user.name(),
            Some(user.password()),
            "select current_user",
        );
        assert!(
            out.status.success(),
            "{user:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout(&out), user.name());
    }
}

#[test]
fn wrong_or_missing_password_is_rejected() {
    let pg = PgServer::shared();
    for user in PASSWORD_USERS {
        for password in [Some("not-the-password"), None] {
            let out = psql_tcp(pg.port(), user.name(), password, "select 1");
            assert!(
                !out.status.success(),
                "{user:?} logged in with {password:?}"
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("password authentication failed")
                    || err.contains("no password supplied"),
                "{user:?}: {err}"
            );
        }
    }
    // Trusted roles need no password at all.
    for user in [PgUser::Super, PgUser::Trust] {
        let out = psql_tcp(pg.port(), user.name(), None, "select 1");
        assert!(out.status.success(), "{user:?}");
    }
}

#[test]
fn roles_log_in_over_the_unix_socket() {
    let pg = PgServer::shared();
    let socket = pg.socket_dir().join(format!(".s.PGSQL.{}", pg.port()));
    assert!(socket.exists(), "{} missing", socket.display());
    let host = pg.socket_dir().to_str().unwrap();
    for user in PgUser::ALL {
        let out = psql_at(
            host,
            pg.port(),
            user.name(),
            Some(user.password()),
            "select 1",
        );
        assert!(
            out.status.success(),
            "{user:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = psql_at(
        host,
        pg.port(),
        PgUser::Md5.name(),
        Some("wrong"),
        "select 1",
    );
    assert!(!out.status.success());
}

#[test]
fn passwords_are_stored_with_the_method_under_test() {
    let pg = PgServer::shared();
    let stored = |user: PgUser| {
        pg.psql(&format!(
            "select left(rolpassword, 14) from pg_authid where rolname = '{}'",
            user.name()
        ))
    };
    assert!(stored(PgUser::Md5).starts_with("md5"));
    assert!(stored(PgUser::Scram).starts_with("SCRAM-SHA-256$"));
    let hba = pg.psql("select user_name[1] || ' ' || auth_method from pg_hba_file_rules where type = 'host' and database[1] = 'all' order by line_number");
    assert_eq!(
        hba,
        "postgres trust\ntp_trust trust\ntp_password password\ntp_md5 md5\ntp_scram scram-sha-256\n"
    );
}

#[test]
fn every_role_can_work_in_the_tidepool_database() {
    let pg = PgServer::shared();
    pg.exec("create table owned_by_super (x int); insert into owned_by_super values (7);");
    for user in PgUser::ALL {
        let table = format!("made_by_{}", user.name());
        let sql = format!(
            "create table {table} (x int); insert into {table} values (1); \
             select (select sum(x) from {table}) + (select sum(x) from owned_by_super)"
        );
        let out = psql_tcp(pg.port(), user.name(), Some(user.password()), &sql);
        assert!(
            out.status.success(),
            "{user:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout(&out), "8");
    }
}

#[test]
fn url_and_accessors() {
    let pg = PgServer::shared();
    assert_eq!(pg.host(), "127.0.0.1");
    assert_eq!(
        pg.url(PgUser::Scram),
        format!(
            "postgres://tp_scram:scram_pw@127.0.0.1:{}/tidepool",
            pg.port()
        )
    );
    assert_eq!(PgUser::Super.name(), "postgres");
    assert!(std::ptr::eq(pg, PgServer::shared()));
    assert!(pg.pid().is_some_and(alive));
}

#[test]
fn psql_returns_rows_and_panics_with_the_server_error() {
    let pg = PgServer::shared();
    assert_eq!(pg.psql("select 1; select 'a', 'b'"), "1\na|b\n");
    assert_eq!(pg.psql("select current_database()"), "tidepool\n");
    let err = std::panic::catch_unwind(|| pg.psql("select * from no_such_table"))
        .expect_err("psql should panic");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("no_such_table") && msg.contains("ERROR"),
        "{msg}"
    );
}

/// One private server through its whole life, since each start costs about
/// a second of CPU.
#[test]
fn stop_restart_kill9_keep_port_and_data_and_drop_cleans_up() {
    let pg = PgServer::start().expect("start");
    let port = pg.port();
    let dir = pg.socket_dir().to_path_buf();
    pg.exec("create table kept (x int); insert into kept values (1);");

    // Stop: nothing listens, nothing runs.
    let pid = pg.pid().expect("running");
    pg.stop();
    assert_eq!(pg.pid(), None);
    assert!(!alive(pid));
    assert!(!tcp_open(port));
    pg.stop(); // idempotent

    // Restart after stop: same port, same data.
    pg.restart();
    let pid = pg.pid().expect("running after restart");
    assert_eq!(pg.port(), port);
    assert_eq!(pg.psql("select sum(x) from kept"), "1\n");

    // Keep a backend busy so that kill9 has more than the postmaster to kill.
    let port_s = port.to_string();
    let mut session = std::process::Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-p", &port_s, "-U", "postgres"])
        .args(["-d", "tidepool", "-c", "select pg_sleep(60)"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pg.psql("select count(*) from pg_stat_activity where query like 'select pg_sleep%'")
        != "1\n"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "session never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Made durable explicitly: the cluster runs with synchronous_commit=off.
    pg.exec("set synchronous_commit = on; insert into kept values (2);");
    // Backends and auxiliary processes sit in process groups of their own,
    // so this checks that kill9 finds them anyway.
    let children = live_children(pid);
    assert!(children.len() > 3, "postmaster children: {children:?}");

    pg.kill9();
    assert_eq!(pg.pid(), None);
    assert!(live_group_members(pid).is_empty());
    assert!(children.iter().all(|&p| !alive(p)), "{children:?}");
    assert!(!tcp_open(port));
    let _ = session.wait();

    // Restart after a crash: recovery, same port, committed data intact.
    pg.restart();
    assert_eq!(pg.port(), port);
    assert_eq!(pg.psql("select sum(x) from kept"), "3\n");
    let pid = pg.pid().unwrap();

    // Restart while running stops first.
    pg.restart();
    assert_ne!(pg.pid(), Some(pid));
    assert!(!alive(pid));
    assert_eq!(pg.psql("select sum(x) from kept"), "3\n");

    let pid = pg.pid().unwrap();
    let children = live_children(pid);
    drop(pg);
    assert!(!alive(pid));
    assert!(children.iter().all(|&p| !alive(p)), "{children:?}");
    assert!(gone(&dir), "{} still exists", dir.display());
}

#[test]
fn drop_after_kill9_still_removes_everything() {
    let pg = PgServer::start().expect("start");
    let dir = pg.socket_dir().to_path_buf();
    let pid = pg.pid().unwrap();
    let children = live_children(pid);
    pg.kill9();
    drop(pg);
    assert!(!alive(pid));
    assert!(children.iter().all(|&p| !alive(p)), "{children:?}");
    assert!(gone(&dir));
}
