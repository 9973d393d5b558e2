//! The peer for the plaintext comparison: hyper 1.x on a current-thread
//! tokio runtime (one thread, pinned by the caller), serving the same
//! `GET /plaintext` as Tidepool's example. Pipelined responses are flushed
//! together (`pipeline_flush`), hyper's best setting for that scenario.
//!
//! usage: peer_hyper ADDR:PORT

use hyper_util::rt::TokioIo;
use tidepool_benches::hyper_plaintext;

fn main() {
    let addr: std::net::SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".into())
        .parse()
        .expect("ADDR:PORT");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        eprintln!("peer_hyper: listening on {addr}");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::task::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .pipeline_flush(true)
                    .serve_connection(
                        TokioIo::new(stream),
                        hyper::service::service_fn(hyper_plaintext),
                    )
                    .await;
            });
        }
    });
}
