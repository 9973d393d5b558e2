//! The HTTPS peer: hyper 1.x behind tokio-rustls (rustls with ring, as
//! Tidepool uses), on a current-thread tokio runtime, serving the same
//! `GET /plaintext` with the same certificate and key.
//!
//! usage: peer_hyper_tls ADDR:PORT CERT.pem KEY.pem

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tidepool_benches::hyper_plaintext;
use tidepool_engine::tls;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, cert, key] = &args[..] else {
        panic!("usage: peer_hyper_tls ADDR:PORT CERT.pem KEY.pem");
    };
    let addr: std::net::SocketAddr = addr.parse().expect("ADDR:PORT");
    // The same rustls configuration Tidepool's example builds.
    let config = tls::server_config(
        vec![tls::ServerCert {
            chain: tls::load_certs(cert.as_ref()).expect("certificate"),
            key: tls::load_key(key.as_ref()).expect("key"),
        }],
        &[b"http/1.1"],
    )
    .expect("TLS configuration");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&config));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        eprintln!("peer_hyper_tls: listening on {addr}");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::task::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        TokioIo::new(stream),
                        hyper::service::service_fn(hyper_plaintext),
                    )
                    .await;
            });
        }
    });
}
