//! Lua scripts invoked by SHA1 with a fallback to sending the source.

use std::sync::Arc;

/// A Lua script with its SHA1, computed once. Cheap to clone, and `Send +
/// Sync`, so one `static` script can serve every worker.
///
/// [`Connection::run_script`](super::Connection::run_script) sends
/// `EVALSHA` (the body is not re-sent on every call); on `NOSCRIPT` (first
/// use, or after a server restart or `SCRIPT FLUSH`) it sends `EVAL`
/// once, which both runs and caches the script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    code: Arc<str>,
    hash: String,
}

impl Script {
    /// Wraps a script and hashes it.
    pub fn new(code: &str) -> Script {
        Script {
            code: Arc::from(code),
            hash: sha1_smol::Sha1::from(code).digest().to_string(),
        }
    }

    /// The lowercase hex SHA1, as `SCRIPT LOAD` returns it.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The source.
    pub fn code(&self) -> &str {
        &self.code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_matches_redis() {
        // SCRIPT LOAD "return 1" on a real server returns this hash.
        assert_eq!(
            Script::new("return 1").hash(),
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
        assert_eq!(
            Script::new("").hash(),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
    }
}
