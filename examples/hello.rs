//! Tidepool's example server.
//!
//! ```text
//! cargo run --release --example hello -- --listen 127.0.0.1:8080 [--workers N]
//! ```
//! Routes: `GET /plaintext`, `GET /json`, `GET /health`.

use std::net::SocketAddr;
use std::process::ExitCode;

use tidepool::engine::workers::on_termination_signal;
use tidepool::engine::{Response, Router, Server};

struct Args {
    listen: SocketAddr,
    workers: usize,
}

fn usage() -> &'static str {
    "usage: hello [--listen ADDR:PORT] [--workers N]\n\
     \n  --listen ADDR:PORT   address to serve on (default 127.0.0.1:8080)\n  \
     --workers N          worker threads, one per CPU by default"
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:8080".parse().unwrap(),
        workers: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value("--listen")?;
                args.listen = v.parse().map_err(|e| format!("--listen {v}: {e}"))?;
            }
            "--workers" => {
                let v = value("--workers")?;
                args.workers = v.parse().map_err(|e| format!("--workers {v}: {e}"))?;
            }
            "-h" | "--help" => return Err(usage().to_string()),
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    Ok(args)
}

#[derive(serde::Serialize)]
struct Message {
    message: &'static str,
}

fn app() -> Router<()> {
    Router::new(())
        .get_sync("/plaintext", |_, _| Response::text("Hello, World!"))
        .get_sync("/json", |_, _| {
            Response::json(&Message {
                message: "Hello, World!",
            })
        })
        .get_sync("/health", |_, _| Response::text("ok"))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let (tx, rx) = std::sync::mpsc::channel();
    if let Err(e) = on_termination_signal(move || {
        let _ = tx.send(());
    }) {
        eprintln!("hello: cannot install signal handling: {e}");
        return ExitCode::FAILURE;
    }
    let server = match Server::bind(args.listen)
        .workers(args.workers)
        .serve(|_| app())
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hello: cannot serve on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    eprintln!("hello: listening on http://{}", server.local_addr());
    let _ = rx.recv();
    eprintln!("hello: shutting down");
    server.shutdown();
    ExitCode::SUCCESS
}
