//! Fixed in-process workloads for instruction counting (`benches/icount.sh`
//! runs this under `valgrind --tool=callgrind`, whose counts do not drift
//! with a noisy machine the way time does):
//!
//! - `techempower`: parse, route and encode the TechEmpower plaintext
//!   request (as wrk sends it);
//! - `browser`: the same for a 700-byte browser request;
//! - `datarow`: a PostgreSQL point query in the client, sans-IO: Bind and
//!   Execute encoded, then BindComplete, a two-column binary DataRow,
//!   CommandComplete and ReadyForQuery decoded and the row read.
//!
//! usage: icount WORKLOAD ITERATIONS

use std::hint::black_box;

use tidepool::drivers::pg::proto::{Protocol, Response as PgResponse};
use tidepool::drivers::pg::{Column, Config, Statement, Type};
use tidepool::engine::http::offline::respond;
use tidepool::{Json, Response, Router};

const TECHEMPOWER: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\
Accept: text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7\r\n\
Connection: keep-alive\r\n\r\n";

const BROWSER: &[u8] = b"GET /todos/42?expand=owner&fields=title,done HTTP/1.1\r\n\
Host: app.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://app.example.com/todos?page=3&sort=created\r\n\
Cookie: session=4f1c2b9a8e7d6c5b4a3f2e1d0c9b8a7f; theme=dark; tz=Europe%2FBerlin\r\n\
Connection: keep-alive\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Site: same-origin\r\n\
Priority: u=0, i\r\n\r\n";

fn http(request: &[u8], n: u64) {
    let router = Router::new(())
        .get_sync("/plaintext", |_, _| Response::text("Hello, World!"))
        .get_sync("/todos/{id}", |req, _| {
            let id: u64 = req.path_param("id")?;
            Ok::<_, tidepool::Rejection>(Json(id))
        });
    let date = *b"Thu, 03 Dec 2026 11:00:00 GMT";
    let mut out = Vec::with_capacity(4096);
    for _ in 0..n {
        out.clear();
        let used = respond(&router, black_box(request), &date, &mut out).expect("parses");
        black_box((used, &out));
    }
}

/// A message: type byte, length, body.
fn msg(out: &mut Vec<u8>, ty: u8, body: &[u8]) {
    out.push(ty);
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
}

fn datarow(n: u64) {
    let cfg: Config = "postgres://u:p@127.0.0.1/db".parse().expect("url");
    let mut p = Protocol::connect(&cfg).expect("startup");
    let mut sink = Vec::new();
    p.take_output(&mut sink);
    let mut hello = Vec::new();
    msg(&mut hello, b'R', &0u32.to_be_bytes());
    msg(&mut hello, b'Z', b"I");
    p.receive(&hello);
    assert!(p.is_ready(), "authenticated");
    let column = |name: &str| Column {
        name: name.into(),
        type_: Type::INT4,
        format: 1,
        table_oid: 0,
        column_id: 0,
    };
    let stmt = Statement::new(
        "s1".into(),
        "SELECT id, randomnumber FROM world WHERE id = $1".into(),
        vec![Type::INT4],
        vec![column("id"), column("randomnumber")],
    );
    let mut reply = Vec::new();
    msg(&mut reply, b'2', b"");
    let mut row = 2u16.to_be_bytes().to_vec();
    for v in [42i32, 4242] {
        row.extend_from_slice(&4i32.to_be_bytes());
        row.extend_from_slice(&v.to_be_bytes());
    }
    msg(&mut reply, b'D', &row);
    msg(&mut reply, b'C', b"SELECT 1\0");
    msg(&mut reply, b'Z', b"I");
    for _ in 0..n {
        let id = black_box(42i32);
        p.execute(&stmt, &[&id]).expect("bind");
        sink.clear();
        p.take_output(&mut sink);
        p.receive(black_box(&reply));
        let Some((_, Ok(PgResponse::Rows { rows, .. }))) = p.poll_response() else {
            panic!("no rows")
        };
        black_box((rows[0].get::<i32>(0), rows[0].get::<i32>(1)));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let workload = args.next().unwrap_or_default();
    let n: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(1000);
    match workload.as_str() {
        "techempower" => http(TECHEMPOWER, n),
        "browser" => http(BROWSER, n),
        "datarow" => datarow(n),
        _ => {
            eprintln!("usage: icount techempower|browser|datarow ITERATIONS");
            std::process::exit(2);
        }
    }
}
