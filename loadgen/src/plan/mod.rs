//! What to send and when: rate curves (`pattern`), the run's timeline and
//! each thread's intended send times (`schedule`), the request mix
//! (`mix`), pattern files and command-line shorthands turned into a plan
//! (`config`), and the plan drawn without sending (`dryrun`).

pub mod config;
pub mod dryrun;
pub mod mix;
pub mod pattern;
pub mod schedule;
