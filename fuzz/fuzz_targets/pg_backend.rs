//! PostgreSQL backend messages on arbitrary bytes, before authentication
//! and after: no panic, no allocation driven by a declared length, and the
//! protocol state either ready, waiting, or dead with an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidepool_drivers::pg::proto::Protocol;
use tidepool_drivers::pg::Config;

fuzz_target!(|data: &[u8]| {
    let cfg: Config = "postgres://u:p@127.0.0.1/db".parse().unwrap();
    let Ok(mut p) = Protocol::connect(&cfg) else { return };
    let mut out = Vec::new();
    p.take_output(&mut out);
    // Fed in two pieces: a message split across reads is the common case.
    let at = data.len() / 3;
    p.receive(&data[..at]);
    p.receive(&data[at..]);
    while p.poll_response().is_some() {}
    let _ = p.take_fatal();
    let _ = p.is_ready();
});
