//! This machine's TCP sockets as the kernel lists them (`/proc/net/tcp`),
//! for tests that must wait on a connection's state without touching it.

use std::time::{Duration, Instant};

/// `CLOSE_WAIT`: the peer's FIN arrived, nothing closed on this side yet.
const CLOSE_WAIT: u8 = 0x08;
/// `ESTABLISHED`.
const ESTABLISHED: u8 = 0x01;

/// The states (kernel numbering) of every IPv4 TCP socket whose remote
/// port is `port`: the client sides of connections to a server there.
pub fn client_states(port: u16) -> Vec<u8> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let remote = f.nth(2)?;
            let state = f.next()?;
            let (_, rport) = remote.split_once(':')?;
            (u16::from_str_radix(rport, 16).ok()? == port)
                .then(|| u8::from_str_radix(state, 16).ok())
                .flatten()
        })
        .collect()
}

/// Waits until no client connection to `port` is established any more and
/// returns how many are in `CLOSE_WAIT`: after the server there went away,
/// the moment its FIN has reached every client socket, before any client
/// read it. Lets a test act in that window without a sleep.
///
/// # Panics
/// If a connection is still established after `limit`.
pub fn wait_closed_by_server(port: u16, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let states = client_states(port);
        if !states.contains(&ESTABLISHED) {
            return states.iter().filter(|s| **s == CLOSE_WAIT).count();
        }
        assert!(
            Instant::now() < deadline,
            "connections to port {port} still established after {limit:?}: {states:?}"
        );
        std::thread::yield_now();
    }
}
