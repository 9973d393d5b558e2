//! A peer for the fixed-rate latency comparison: may-minihttp (stackful
//! coroutines over epoll), among the fastest plaintext servers measured on
//! this machine, with one worker thread (pinned by the caller), serving the
//! same `GET /plaintext` as Tidepool's example.
//!
//! usage: peer_may ADDR:PORT

use std::io;

use may_minihttp::{HttpService, HttpServiceFactory, Request, Response};

#[derive(Clone)]
struct Plaintext;

impl HttpService for Plaintext {
    fn call(&mut self, req: Request, rsp: &mut Response) -> io::Result<()> {
        if req.path() == "/plaintext" {
            rsp.header("Content-Type: text/plain").body("Hello, World!");
        } else {
            rsp.status_code(404, "Not Found");
        }
        Ok(())
    }
}

struct Factory;

impl HttpServiceFactory for Factory {
    type Service = Plaintext;
    fn new_service(&self, _: usize) -> Plaintext {
        Plaintext
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8083".into());
    may::config()
        .set_workers(1)
        .set_pool_capacity(1000)
        .set_stack_size(0x1000);
    let server = Factory.start(&addr).expect("bind");
    eprintln!("peer_may: listening on {addr}");
    server.wait();
}
