//! Locating the external server and client programs.
//!
//! The functions take the search locations as arguments so that tests can
//! point them at a fake tree; [`PgBinaries::from_env`] and
//! [`RedisBinaries::from_env`] are what the servers themselves use.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::TestkitError;

/// Where Debian and Ubuntu put the versioned PostgreSQL server binaries.
pub const PG_LIB_ROOT: &str = "/usr/lib/postgresql";

/// The PostgreSQL programs the testkit runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    pub postgres: PathBuf,
    pub initdb: PathBuf,
    pub psql: PathBuf,
    pub pg_isready: PathBuf,
}

/// The redis programs the testkit runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisBinaries {
    pub server: PathBuf,
    pub cli: PathBuf,
}

impl PgBinaries {
    /// Looks in [`PG_LIB_ROOT`] and `$PATH`, once per process.
    pub fn from_env() -> Result<&'static PgBinaries, TestkitError> {
        static CACHE: OnceLock<Result<PgBinaries, TestkitError>> = OnceLock::new();
        CACHE
            .get_or_init(|| {
                find_pg_binaries(Path::new(PG_LIB_ROOT), std::env::var_os("PATH").as_deref())
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl RedisBinaries {
    /// Looks in `$PATH`, once per process.
    pub fn from_env() -> Result<&'static RedisBinaries, TestkitError> {
        static CACHE: OnceLock<Result<RedisBinaries, TestkitError>> = OnceLock::new();
        CACHE
            .get_or_init(|| find_redis_binaries(std::env::var_os("PATH").as_deref()))
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Finds the PostgreSQL server binaries: the highest version under
/// `lib_root/<version>/bin` wins, then the first `PATH` entry holding both
/// `postgres` and `initdb`. The clients are taken from the same directory
/// when present there (so they match the server), else from `PATH`.
pub fn find_pg_binaries(
    lib_root: &Path,
    path_var: Option<&OsStr>,
) -> Result<PgBinaries, TestkitError> {
    let server_dir = versioned_bin_dirs(lib_root)
        .into_iter()
        .chain(path_dirs(path_var))
        .find(|dir| is_executable(&dir.join("postgres")) && is_executable(&dir.join("initdb")))
        .ok_or_else(|| {
            TestkitError::new(format!(
                "PostgreSQL server binaries not found (looked in {}/*/bin and PATH): \
                 install them with `apt-get install -y postgresql`",
                lib_root.display()
            ))
        })?;
    let client = |name: &str| {
        let local = server_dir.join(name);
        if is_executable(&local) {
            return Ok(local);
        }
        find_in_path(name, path_var).ok_or_else(|| {
            TestkitError::new(format!(
                "PostgreSQL client `{name}` not found (looked in {} and PATH): \
                 install it with `apt-get install -y postgresql-client`",
                server_dir.display()
            ))
        })
    };
    Ok(PgBinaries {
        postgres: server_dir.join("postgres"),
        initdb: server_dir.join("initdb"),
        psql: client("psql")?,
        pg_isready: client("pg_isready")?,
    })
}

/// Finds `redis-server` and `redis-cli` in `PATH`.
pub fn find_redis_binaries(path_var: Option<&OsStr>) -> Result<RedisBinaries, TestkitError> {
    let find = |name: &str, package: &str| {
        find_in_path(name, path_var).ok_or_else(|| {
            TestkitError::new(format!(
                "{name} not found in PATH: install it with `apt-get install -y {package}`"
            ))
        })
    };
    Ok(RedisBinaries {
        server: find("redis-server", "redis-server")?,
        // Debian ships redis-cli in its own package, which redis-server pulls in.
        cli: find("redis-cli", "redis-tools")?,
    })
}

/// The first executable `name` in the colon-separated `path_var`.
pub fn find_in_path(name: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    path_dirs(path_var)
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn path_dirs(path_var: Option<&OsStr>) -> Vec<PathBuf> {
    match path_var {
        // An empty PATH element means the current directory, which is never
        // where a system package puts its programs; skipping it avoids
        // running something unexpected from the crate directory.
        Some(p) => std::env::split_paths(p)
            .filter(|d| !d.as_os_str().is_empty())
            .collect(),
        None => Vec::new(),
    }
}

/// `lib_root/*/bin`, highest version first ("16" > "15" > "9.6").
fn versioned_bin_dirs(lib_root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(lib_root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = parse_version(name.to_str()?)?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions_order_numerically() {
        assert!(parse_version("16").unwrap() > parse_version("9.6").unwrap());
        assert!(parse_version("15").unwrap() > parse_version("9.6").unwrap());
        assert_eq!(parse_version("common"), None);
    }
}
