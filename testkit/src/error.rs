use std::fmt;

/// Why a test server could not be provided.
///
/// The message is meant to be read by a person staring at a failed test run,
/// so it is a single, self-contained explanation (including what to install
/// or the tail of the server log when that is the useful part).
#[derive(Clone, PartialEq, Eq)]
pub struct TestkitError {
    message: String,
}

impl TestkitError {
    pub(crate) fn new(message: impl Into<String>) -> TestkitError {
        TestkitError {
            message: message.into(),
        }
    }

    /// The same text `Display` prints.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TestkitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

// Debug shows the plain message too: `Result::unwrap` uses Debug, and an
// escaped one-line string would make multi-line log tails unreadable.
impl fmt::Debug for TestkitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TestkitError {}
