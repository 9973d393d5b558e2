//! A tiny HTTP/1.1 keep-alive server on std threads, for tests only.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

pub struct TestServer {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    /// The most requests one read brought on any connection: above 1 when
    /// the client pipelines.
    pub max_batch: Arc<AtomicU64>,
    /// Request body bytes received, over all connections.
    pub body_bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// What every connection's thread counts into.
#[derive(Clone)]
struct Tally {
    requests: Arc<AtomicU64>,
    stalled: Arc<AtomicBool>,
    max_batch: Arc<AtomicU64>,
    body_bytes: Arc<AtomicU64>,
}

#[derive(Clone, Default)]
pub struct Behaviour {
    /// Before answering request number N (1-based, over all connections),
    /// hold every response for this long — once.
    pub stall_once_at: Option<(u64, Duration)>,
    /// Serve pool metrics at /metrics that move with the request count.
    pub metrics: bool,
}

impl TestServer {
    pub fn start(b: Behaviour) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Tally {
            requests: Arc::new(AtomicU64::new(0)),
            stalled: Arc::new(AtomicBool::new(false)),
            max_batch: Arc::new(AtomicU64::new(0)),
            body_bytes: Arc::new(AtomicU64::new(0)),
        };
        {
            let (stop, tally) = (stop.clone(), tally.clone());
            thread::spawn(move || loop {
                match listener.accept() {
                    // Drop wakes the acceptor with a connection of its own.
                    Ok(_) if stop.load(Ordering::Acquire) => return,
                    Ok((s, _)) => {
                        s.set_nodelay(true).unwrap();
                        let (b, tally) = (b.clone(), tally.clone());
                        thread::spawn(move || serve(s, b, tally));
                    }
                    Err(_) => return,
                }
            });
        }
        TestServer {
            addr,
            requests: tally.requests,
            max_batch: tally.max_batch,
            body_bytes: tally.body_bytes,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(mut s: TcpStream, b: Behaviour, t: Tally) {
    let Tally {
        requests,
        stalled,
        max_batch,
        body_bytes,
    } = t;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // A connection's thread ends when the generator closes its side.
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        let mut batch = 0;
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end + 4);
            batch += 1;
            // The body is read (and dropped) before the response, so the
            // response says the whole request arrived.
            let len = content_length(&head);
            let from_buf = len.min(buf.len());
            buf.drain(..from_buf);
            let mut left = len - from_buf;
            while left > 0 {
                match s.read(&mut chunk[..left.min(8192)]) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => left -= n,
                }
            }
            body_bytes.fetch_add(len as u64, Ordering::Relaxed);
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            if path == "/metrics" {
                let body = if b.metrics {
                    metrics_body(requests.load(Ordering::Relaxed))
                } else {
                    String::new()
                };
                let status = if b.metrics { "200 OK" } else { "404 Not Found" };
                out.extend_from_slice(
                    format!("HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                        .as_bytes(),
                );
                continue;
            }
            if path.starts_with("/hang") {
                // Never answered: the client's timeout has to deal with it.
                continue;
            }
            let k = requests.fetch_add(1, Ordering::Relaxed) + 1;
            if path.starts_with("/close") {
                // A body that runs until the server closes the connection.
                out.extend_from_slice(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close",
                );
                let _ = s.write_all(&out);
                return;
            }
            if let Some((at, d)) = b.stall_once_at {
                if k >= at && !stalled.swap(true, Ordering::AcqRel) {
                    // The stall under test: the server stops answering for `d`.
                    thread::sleep(d);
                }
            }
            let body = if path.starts_with("/missing") {
                "no"
            } else {
                "ok"
            };
            let status = if path.starts_with("/missing") {
                "404 Not Found"
            } else {
                "200 OK"
            };
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
        max_batch.fetch_max(batch, Ordering::Relaxed);
        if !out.is_empty() && s.write_all(&out).is_err() {
            return;
        }
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Pool gauges that grow with the requests served, and decision counters
/// that move every 300 requests, so charts and markers have something to show.
fn metrics_body(n: u64) -> String {
    let open = 2 + (n / 200).min(14);
    format!(
        "# TYPE tidepool_pool_open gauge\n\
         tidepool_pool_open{{pool=\"pg\"}} {open}\n\
         tidepool_pool_max_open{{pool=\"pg\"}} 16\n\
         tidepool_pool_in_use{{pool=\"pg\"}} {}\n\
         tidepool_pool_waiting{{pool=\"pg\"}} 0\n\
         tidepool_pool_acquire_wait_seconds{{pool=\"pg\",quantile=\"0.99\"}} 0.002\n\
         tidepool_supervisor_decisions_total{{pool=\"pg\",direction=\"grow\"}} {}\n\
         tidepool_supervisor_decisions_total{{pool=\"pg\",direction=\"shrink\"}} 0\n",
        open / 2,
        n / 300
    )
}
