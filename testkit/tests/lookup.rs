//! The binary lookup, against fake directory trees.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use tidepool_testkit::lookup::{find_in_path, find_pg_binaries, find_redis_binaries};

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "tidepool-lookup-test-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn exe(&self, rel: &str) -> PathBuf {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn path_var(&self, dirs: &[&str]) -> OsString {
        std::env::join_paths(dirs.iter().map(|d| self.0.join(d))).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn server_set(scratch: &Scratch, bin: &str) {
    for name in ["postgres", "initdb", "psql", "pg_isready"] {
        scratch.exe(&format!("{bin}/{name}"));
    }
}

#[test]
fn highest_complete_version_wins() {
    let s = Scratch::new("versions");
    server_set(&s, "lib/9.6/bin");
    server_set(&s, "lib/15/bin");
    // 16 lacks initdb, so it cannot host a test cluster.
    s.exe("lib/16/bin/postgres");
    std::fs::create_dir_all(s.0.join("lib/common/bin")).unwrap();
    let found = find_pg_binaries(&s.0.join("lib"), None).unwrap();
    assert_eq!(found.postgres, s.0.join("lib/15/bin/postgres"));
    assert_eq!(found.initdb, s.0.join("lib/15/bin/initdb"));
    assert_eq!(found.psql, s.0.join("lib/15/bin/psql"));
}

#[test]
fn falls_back_to_path() {
    let s = Scratch::new("path");
    server_set(&s, "usr/bin");
    let path = s.path_var(&["empty", "usr/bin"]);
    let found = find_pg_binaries(&s.0.join("no-such-lib"), Some(&path)).unwrap();
    assert_eq!(found.postgres, s.0.join("usr/bin/postgres"));
    assert_eq!(found.pg_isready, s.0.join("usr/bin/pg_isready"));
}

#[test]
fn clients_may_come_from_path() {
    let s = Scratch::new("clients");
    s.exe("lib/15/bin/postgres");
    s.exe("lib/15/bin/initdb");
    s.exe("bin/psql");
    s.exe("bin/pg_isready");
    let path = s.path_var(&["bin"]);
    let found = find_pg_binaries(&s.0.join("lib"), Some(&path)).unwrap();
    assert_eq!(found.postgres, s.0.join("lib/15/bin/postgres"));
    assert_eq!(found.psql, s.0.join("bin/psql"));
}

#[test]
fn non_executables_do_not_count() {
    let s = Scratch::new("noexec");
    server_set(&s, "lib/15/bin");
    std::fs::set_permissions(
        s.0.join("lib/15/bin/postgres"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    assert!(find_pg_binaries(&s.0.join("lib"), None).is_err());
}

#[test]
fn missing_server_says_what_to_install() {
    let s = Scratch::new("missing");
    let root = s.0.join("lib");
    let path = s.path_var(&["bin"]);
    let err = find_pg_binaries(&root, Some(&path)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "PostgreSQL server binaries not found (looked in {}/*/bin and PATH): \
             install them with `apt-get install -y postgresql`",
            root.display()
        )
    );
    // Debug (what `unwrap` prints) is the same readable message.
    assert_eq!(format!("{err:?}"), err.to_string());
}

#[test]
fn missing_psql_says_what_to_install() {
    let s = Scratch::new("nopsql");
    s.exe("lib/15/bin/postgres");
    s.exe("lib/15/bin/initdb");
    let err = find_pg_binaries(&s.0.join("lib"), Some(&s.path_var(&["bin"]))).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("PostgreSQL client `psql` not found"),
        "{msg}"
    );
    assert!(
        msg.ends_with("install it with `apt-get install -y postgresql-client`"),
        "{msg}"
    );
}

#[test]
fn missing_redis_says_what_to_install() {
    let s = Scratch::new("redis");
    let err = find_redis_binaries(Some(&s.path_var(&["bin"]))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "redis-server not found in PATH: install it with `apt-get install -y redis-server`"
    );
    s.exe("bin/redis-server");
    let err = find_redis_binaries(Some(&s.path_var(&["bin"]))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "redis-cli not found in PATH: install it with `apt-get install -y redis-tools`"
    );
    s.exe("bin/redis-cli");
    let found = find_redis_binaries(Some(&s.path_var(&["bin"]))).unwrap();
    assert_eq!(found.server, s.0.join("bin/redis-server"));
    assert!(find_redis_binaries(None).is_err());
}

#[test]
fn path_lookup_takes_the_first_match() {
    let s = Scratch::new("first");
    s.exe("a/tool");
    s.exe("b/tool");
    let path = s.path_var(&["missing", "b", "a"]);
    assert_eq!(find_in_path("tool", Some(&path)), Some(s.0.join("b/tool")));
    assert_eq!(find_in_path("other", Some(&path)), None);
    assert_eq!(find_in_path("tool", None), None);
}
