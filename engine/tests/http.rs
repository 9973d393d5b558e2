//! The HTTP server over real loopback sockets: framing, pipelining, limits,
//! timeouts, the connection cap and graceful shutdown.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use tidepool_engine::http::parse::Limits;
use tidepool_engine::rt::time;
use tidepool_engine::{HttpConfig, Method, Response, Router, Server, ServerHandle, Status};

struct State {
    started: mpsc::Sender<()>,
}

fn app(started: mpsc::Sender<()>) -> Router<State> {
    Router::new(State { started })
        .get_sync("/plaintext", |_, _| Response::text("Hello, World!"))
        .get_sync("/last-header", |req, _| {
            Response::text_owned(
                String::from_utf8_lossy(req.header("x-last").unwrap_or(b"none")).into_owned(),
            )
        })
        .get_sync("/big", |_, _| {
            Response::bytes("application/octet-stream", vec![b'x'; 4 << 20])
        })
        .get_sync("/framing", |_, _| {
            // Framing a handler should not set: the server's wins.
            Response::text("abc")
                .with_header("Content-Length", "99")
                .with_header("Transfer-Encoding", "chunked")
        })
        .get_sync("/bye", |_, _| {
            (
                Status::OK,
                Response::text("bye").with_header("Connection", "close"),
            )
        })
        .route_sync(Method::Post, "/echo", |req, _| {
            Response::bytes("application/octet-stream", req.body().to_vec())
        })
        .get_sync("/items/{id}", |req, _| {
            Response::text_owned(req.param("id").unwrap().to_string())
        })
        .get(
            "/slow",
            async |req: &tidepool_engine::Request<'_>, s: &State| {
                let ms: u64 = req
                    .query_param("ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(100);
                let _ = s.started.send(());
                time::sleep(Duration::from_millis(ms)).await;
                Response::text("slow done")
            },
        )
        .get_sync("/panic-sync", |_, _| -> Response {
            panic!("sync handler panic (expected by the test)")
        })
        .get_sync("/timers", |_, _| {
            Response::text_owned(tidepool_engine::rt::timer_heap_len().to_string())
        })
        .get(
            "/panic",
            async |_: &tidepool_engine::Request<'_>, _: &State| -> Response {
                panic!("handler panic (expected by the test)")
            },
        )
}

fn start(config: HttpConfig) -> (ServerHandle, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let server = Server::bind("127.0.0.1:0".parse().unwrap())
        .workers(1)
        .pin_workers(false)
        .http_config(config)
        .serve(move |_| app(tx.lock().unwrap().clone()))
        .expect("server starts");
    (server, rx)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads until the server closes the connection.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("read failed (server did not close?): {e}"),
        }
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses one response from the front of `buf`; None if incomplete.
fn parse_resp(buf: &[u8]) -> Option<(Resp, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end - 4]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(
        status_line.starts_with("HTTP/1.1 "),
        "bad status line {status_line:?}"
    );
    let status: u16 = status_line[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    let len = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse::<usize>().unwrap())
        .unwrap_or(0);
    if buf.len() < end + len {
        return None;
    }
    Some((
        Resp {
            status,
            headers,
            body: buf[end..end + len].to_vec(),
        },
        end + len,
    ))
}

/// Reads exactly `n` responses from a keep-alive connection.
fn read_responses(s: &mut TcpStream, n: usize) -> Vec<Resp> {
    read_responses_after(s, Vec::new(), n)
}

/// As `read_responses`, when the first `buf` bytes were already read.
fn read_responses_after(s: &mut TcpStream, mut buf: Vec<u8>, n: usize) -> Vec<Resp> {
    let mut out = Vec::new();
    let mut tmp = [0u8; 65536];
    while out.len() < n {
        while let Some((r, used)) = parse_resp(&buf) {
            out.push(r);
            buf.drain(..used);
            if out.len() == n {
                return out;
            }
        }
        let k = s.read(&mut tmp).expect("read");
        assert!(k > 0, "server closed after {} of {n} responses", out.len());
        buf.extend_from_slice(&tmp[..k]);
    }
    out
}

const GET: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn plaintext_and_routing() {
    let (server, _rx) = start(HttpConfig::default());
    let mut s = connect(server.local_addr());
    s.write_all(GET).unwrap();
    s.write_all(b"GET /items/42 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.write_all(b"DELETE /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = read_responses(&mut s, 4);
    assert_eq!((r[0].status, &r[0].body[..]), (200, &b"Hello, World!"[..]));
    assert_eq!(r[0].header("content-type"), Some("text/plain"));
    assert_eq!(r[0].header("date").map(|d| d.len()), Some(29));
    assert_eq!((r[1].status, &r[1].body[..]), (200, &b"42"[..]));
    assert_eq!(r[2].status, 404);
    assert_eq!(r[3].status, 405);
    assert_eq!(r[3].header("allow"), Some("GET, HEAD"));
    // HEAD: the length of the GET body, and no body bytes.
    s.write_all(b"HEAD /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let mut tmp = [0u8; 4096];
    while !rest.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0);
        rest.extend_from_slice(&tmp[..n]);
    }
    let head = String::from_utf8(rest).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("Content-Length: 13"), "{head}");
    server.shutdown();
}

/// Middleware: a `before` hook answers instead of the handler when it
/// says so (here: a missing token), an `after` hook sees every routed
/// response (here: adds a header), and a panic in a hook is a 500 like one
/// in a handler.
#[test]
fn before_and_after_hooks_wrap_routed_requests() {
    let server = Server::bind("127.0.0.1:0".parse().unwrap())
        .workers(1)
        .serve(|_| {
            Router::new(())
                .get_sync("/open", |_, _| "open")
                .get_sync("/secret", |_, _| "secret")
                .get_sync("/hook-panics", |_, _| "never")
                .before(|req, _| {
                    if req.path() == "/hook-panics" {
                        panic!("before hook panics (expected by the test)");
                    }
                    let locked = req.path() == "/secret" && req.header_str("x-token") != Some("t");
                    locked.then(|| Response::error(Status::UNAUTHORIZED, "token needed"))
                })
                .after(|req, resp| {
                    let seen = format!("{} {}", req.method(), resp.status.as_u16());
                    resp.headers.push(("X-Seen", seen.into()));
                })
        })
        .unwrap();
    let mut s = connect(server.local_addr());
    s.write_all(b"GET /open HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.write_all(b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.write_all(b"GET /secret HTTP/1.1\r\nHost: x\r\nX-Token: t\r\n\r\n")
        .unwrap();
    let r = read_responses(&mut s, 3);
    assert_eq!((r[0].status, &r[0].body[..]), (200, &b"open"[..]));
    assert_eq!(r[0].header("x-seen"), Some("GET 200"));
    assert_eq!(r[1].status, 401);
    assert_eq!(
        r[1].header("x-seen"),
        Some("GET 401"),
        "after sees what before answered"
    );
    assert_eq!((r[2].status, &r[2].body[..]), (200, &b"secret"[..]));
    s.write_all(b"GET /hook-panics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let out = read_to_close(&mut s);
    assert_eq!(parse_resp(&out).unwrap().0.status, 500);
    server.shutdown();
}

/// Synchronous handlers are answered off the connection's task and async
/// ones in it, a connection choosing by its last request; whatever the
/// mix, pipelined in one write, every request gets its own answer, in
/// order, bodies (a chunked one too) and hooks included.
#[test]
fn sync_and_async_handlers_interleaved_answer_in_order() {
    let server = Server::bind("127.0.0.1:0".parse().unwrap())
        .workers(1)
        .serve(|_| {
            Router::new(())
                .route_sync(Method::Post, "/sync", |req, _| {
                    let body = String::from_utf8_lossy(req.body());
                    Response::text_owned(format!("sync {} {body}", req.header_str("x-n").unwrap()))
                })
                .get_sync("/sync", |req, _| {
                    Response::text_owned(format!("sync {}", req.header_str("x-n").unwrap()))
                })
                .route(
                    Method::Post,
                    "/async",
                    async |req: &tidepool_engine::Request<'_>, _: &()| {
                        time::sleep(Duration::from_millis(1)).await;
                        let body = String::from_utf8_lossy(req.body());
                        Response::text_owned(format!(
                            "async {} {body}",
                            req.header_str("x-n").unwrap()
                        ))
                    },
                )
                .get(
                    "/async",
                    async |req: &tidepool_engine::Request<'_>, _: &()| {
                        time::sleep(Duration::from_millis(1)).await;
                        Response::text_owned(format!("async {}", req.header_str("x-n").unwrap()))
                    },
                )
                .get(
                    "/async-locked",
                    async |_: &tidepool_engine::Request<'_>, _: &()| Response::text("never"),
                )
                .before(|req, _| {
                    (req.path() == "/async-locked")
                        .then(|| Response::error(Status::UNAUTHORIZED, "locked"))
                })
                .after(|req, resp| {
                    resp.headers.push((
                        "X-Seen",
                        format!("{} {}", req.path(), resp.status.as_u16()).into(),
                    ));
                })
        })
        .unwrap();
    let mut s = connect(server.local_addr());
    let plan: [(&str, &str, u16, &str); 10] = [
        ("GET", "/sync", 200, "sync 0"),
        ("GET", "/async", 200, "async 1"),
        ("GET", "/async", 200, "async 2"),
        ("GET", "/sync", 200, "sync 3"),
        ("POST", "/async", 200, "async 4 four"),
        ("GET", "/missing", 404, ""),
        ("GET", "/async-locked", 401, ""),
        ("POST", "/sync", 200, "sync 7 seven"),
        ("POST", "/async", 200, "async 8 eight"),
        ("GET", "/sync", 200, "sync 9"),
    ];
    let bodies = ["", "", "", "", "four", "", "", "seven", "eight", ""];
    let mut batch = Vec::new();
    for (n, ((method, path, _, _), body)) in plan.iter().zip(bodies).enumerate() {
        batch.extend_from_slice(
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\nX-N: {n}\r\n").as_bytes(),
        );
        if n == 8 {
            // A chunked body, decoded before its async handler runs.
            batch.extend_from_slice(
                b"Transfer-Encoding: chunked\r\n\r\n3\r\neig\r\n2\r\nht\r\n0\r\n\r\n",
            );
        } else if method == &"POST" {
            batch.extend_from_slice(
                format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
            );
        } else {
            batch.extend_from_slice(b"\r\n");
        }
    }
    s.write_all(&batch).unwrap();
    let got = read_responses(&mut s, plan.len());
    for (n, ((_, path, status, body), r)) in plan.iter().zip(&got).enumerate() {
        assert_eq!(r.status, *status, "request {n} ({path})");
        if *status == 200 {
            assert_eq!(String::from_utf8_lossy(&r.body), *body, "request {n}");
        }
        // The after hook runs on every routed request, either path.
        let seen = (*status != 404).then(|| format!("{path} {status}"));
        assert_eq!(r.header("x-seen"), seen.as_deref(), "request {n}");
    }
    server.shutdown();
}

/// RFC 9112 §2.2 and §3.2.2: empty lines before a request line are
/// ignored, an absolute-form target is routed by its path; an HTTP/1.0
/// client that asked for keep-alive hears `Connection: keep-alive`; a
/// handler's framing headers give way to the server's, and its
/// `Connection: close` closes the connection after its response.
#[test]
fn framing_as_the_rfc_asks() {
    let (server, _rx) = start(HttpConfig::default());
    let mut s = connect(server.local_addr());
    s.write_all(
        b"\r\n\r\nGET http://example.com/items/7?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    )
    .unwrap();
    s.write_all(b"GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    s.write_all(b"GET /framing HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = read_responses(&mut s, 3);
    assert_eq!((r[0].status, &r[0].body[..]), (200, &b"7"[..]));
    assert_eq!(r[1].status, 200);
    assert_eq!(r[1].header("connection"), Some("keep-alive"));
    assert_eq!((r[2].status, &r[2].body[..]), (200, &b"abc"[..]));
    assert_eq!(r[2].header("content-length"), Some("3"));
    assert_eq!(r[2].header("transfer-encoding"), None);
    s.write_all(b"GET /bye HTTP/1.1\r\nHost: x\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let out = read_to_close(&mut s);
    let (first, used) = parse_resp(&out).expect("one response");
    assert_eq!((first.status, &first.body[..]), (200, &b"bye"[..]));
    assert_eq!(first.header("connection"), Some("close"));
    assert_eq!(used, out.len(), "nothing after the closing response");
    server.shutdown();
}

#[test]
fn hundred_pipelined_requests_in_one_write() {
    let (server, _rx) = start(HttpConfig::default());
    let mut s = connect(server.local_addr());
    let mut batch = Vec::new();
    for i in 0..100 {
        batch.extend_from_slice(format!("GET /items/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    s.write_all(&batch).unwrap();
    let r = read_responses(&mut s, 100);
    for (i, resp) in r.iter().enumerate() {
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, i.to_string().into_bytes(), "responses in order");
    }
    server.shutdown();
}

#[test]
fn request_one_byte_at_a_time() {
    let (server, _rx) = start(HttpConfig::default());
    let mut s = connect(server.local_addr());
    let req = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    for b in req.iter() {
        s.write_all(std::slice::from_ref(b)).unwrap();
    }
    let r = read_responses(&mut s, 1);
    assert_eq!((r[0].status, &r[0].body[..]), (200, &b"hello"[..]));
    server.shutdown();
}

#[test]
fn bodies_chunked_and_expect_continue() {
    let (server, _rx) = start(HttpConfig::default());
    let mut s = connect(server.local_addr());
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n").unwrap();
    let r = read_responses(&mut s, 1);
    assert_eq!(r[0].body, b"hello world");
    // Expect: 100-continue gets the interim response before the body is sent.
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let mut buf = [0u8; 25];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"abc").unwrap();
    let r = read_responses(&mut s, 1);
    assert_eq!(r[0].body, b"abc");
    // A body split across many writes, pipelined with the next request.
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n")
        .unwrap();
    for _ in 0..10 {
        s.write_all(&[b'z'; 1000]).unwrap();
    }
    s.write_all(GET).unwrap();
    let r = read_responses(&mut s, 2);
    assert_eq!(r[0].body, vec![b'z'; 10000]);
    assert_eq!(r[1].body, b"Hello, World!");
    server.shutdown();
}

/// Requests with more fields than the slots tried first are parsed whole
/// (up to the limit, 64 by default); one field more is a 431.
#[test]
fn requests_with_many_header_fields_are_served_up_to_the_limit() {
    let (server, _rx) = start(HttpConfig::default());
    let mut s = connect(server.local_addr());
    for fields in [3usize, 16, 17, 40, 64] {
        // `fields` lines in all: Host, fillers, and X-Last at the end.
        let fill = "A: b\r\n".repeat(fields - 2);
        let req = format!("GET /last-header HTTP/1.1\r\nHost: x\r\n{fill}X-Last: {fields}\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let r = &read_responses(&mut s, 1)[0];
        assert_eq!(r.status, 200, "{fields} fields");
        assert_eq!(r.body, fields.to_string().as_bytes(), "{fields} fields");
    }
    let fill = "A: b\r\n".repeat(63);
    let req = format!("GET /last-header HTTP/1.1\r\nHost: x\r\n{fill}X-Last: 65\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    assert_eq!(parse_resp(&read_to_close(&mut s)).unwrap().0.status, 431);
    server.shutdown();
}

/// Every malformed request gets its status and a closed connection.
#[test]
fn malformed_requests_get_4xx_and_close() {
    let config = HttpConfig {
        max_body: 1000,
        limits: Limits {
            max_request_line: 256,
            max_head_bytes: 1024,
            max_headers: 16,
        },
        ..HttpConfig::default()
    };
    let (server, _rx) = start(config);
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(300));
    let many_headers = format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", "A: b\r\n".repeat(20));
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nA: {}\r\n\r\n",
        "b".repeat(1100)
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("CL and TE", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("two CL", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc".to_vec(), 400),
        ("CL list", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc".to_vec(), 400),
        ("CL sign", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc".to_vec(), 400),
        ("TE gzip", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), 501),
        ("TE gzip, chunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(), 501),
        ("bad chunk size", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec(), 400),
        ("chunk without CRLF", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n".to_vec(), 400),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n".to_vec(), 400),
        ("space before colon", b"GET / HTTP/1.1\r\nHost: x\r\nA : b\r\n\r\n".to_vec(), 400),
        ("bare CR", b"GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n".to_vec(), 400),
        ("bare LF", b"GET / HTTP/1.1\nHost: x\r\n\r\n".to_vec(), 400),
        ("bare LF only, refused before any timeout", b"GET / HTTP/1.1\nHost: x\n\n".to_vec(), 400),
        ("bad method", b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("bad target", b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("bad field name", b"GET / HTTP/1.1\r\nHost: x\r\nA\x7fB: c\r\n\r\n".to_vec(), 400),
        ("NUL in value", b"GET / HTTP/1.1\r\nHost: x\r\nA: b\x00c\r\n\r\n".to_vec(), 400),
        ("no host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(), 505),
        ("garbage version", b"GET / HTTX/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("uri too long", long_target.into_bytes(), 414),
        ("too many headers", many_headers.into_bytes(), 431),
        ("head too big", big_head.into_bytes(), 431),
        ("body too big", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".to_vec(), 413),
        ("chunked body too big", format!("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n{}\r\n0\r\n\r\n", "a".repeat(2000)).into_bytes(), 413),
    ];
    for (name, req, want) in cases {
        let mut s = connect(server.local_addr());
        s.write_all(&req).unwrap();
        let out = read_to_close(&mut s);
        let (resp, used) = parse_resp(&out).unwrap_or_else(|| {
            panic!("{name}: no response in {:?}", String::from_utf8_lossy(&out))
        });
        assert_eq!(resp.status, want, "{name}");
        assert_eq!(resp.header("connection"), Some("close"), "{name}");
        assert_eq!(used, out.len(), "{name}: nothing after the error response");
    }
    let stats = server.stats();
    assert!(stats.parse_errors >= 20, "{stats:?}");
    server.shutdown();
}

#[test]
fn header_timeout_answers_408_and_closes() {
    let config = HttpConfig {
        header_timeout: Duration::from_millis(200),
        ..HttpConfig::default()
    };
    let (server, _rx) = start(config);
    let mut s = connect(server.local_addr());
    s.write_all(b"GET /plaintext HTTP/1.1\r\nHos").unwrap();
    let out = read_to_close(&mut s);
    assert_eq!(parse_resp(&out).unwrap().0.status, 408);
    assert_eq!(server.stats().timeouts, 1);
    server.shutdown();
}

#[test]
fn body_timeout_closes() {
    let config = HttpConfig {
        header_timeout: Duration::from_millis(100),
        body_timeout: Duration::from_millis(100),
        ..HttpConfig::default()
    };
    let (server, _rx) = start(config);
    let mut s = connect(server.local_addr());
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    let out = read_to_close(&mut s);
    assert_eq!(parse_resp(&out).unwrap().0.status, 408);
    server.shutdown();
}

#[test]
fn idle_keep_alive_timeout_closes_silently() {
    let config = HttpConfig {
        idle_timeout: Duration::from_millis(150),
        ..HttpConfig::default()
    };
    let (server, _rx) = start(config);
    let mut s = connect(server.local_addr());
    s.write_all(GET).unwrap();
    read_responses(&mut s, 1);
    let out = read_to_close(&mut s);
    assert!(out.is_empty(), "idle close sends nothing");
    assert_eq!(server.stats().connections_open, 0);
    server.shutdown();
}

#[test]
fn write_timeout_drops_a_client_that_never_reads() {
    let config = HttpConfig {
        write_timeout: Duration::from_millis(200),
        ..HttpConfig::default()
    };
    let (server, _rx) = start(config);
    let s = connect(server.local_addr());
    // 8 x 4 MiB of responses can never fit in the socket buffers.
    let mut w = &s;
    for _ in 0..8 {
        w.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
    }
    // Wait (bounded) until the server gives up on the connection.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.stats().timeouts == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "server never timed out the write"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The timed-out connection is gone (its count drops as the task ends).
    while server.stats().connections_open > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "connection not closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(s);
    server.shutdown();
}

/// Responses are sent without waking the connection's task when they go
/// out in full while it waits for the next request. A request that arrives
/// while a send is still in flight must be answered once that send ends:
/// the task then waits on the send alone, and its completion must wake it.
/// With a write timeout far beyond the client's 10 s read timeout, a missed
/// wake-up fails the read instead of being waited out. (A short send, which
/// also wakes the task, cannot be produced here: io_uring finishes a TCP
/// send itself when the socket has room again.)
#[test]
fn large_and_overlapping_responses_are_not_held_back() {
    let config = HttpConfig {
        write_timeout: Duration::from_secs(120),
        idle_timeout: Duration::from_secs(120),
        ..HttpConfig::default()
    };
    let (server, _rx) = start(config);
    let mut s = connect(server.local_addr());
    let big = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n";
    for _ in 0..2 {
        s.write_all(big).unwrap();
        let r = read_responses(&mut s, 1);
        assert_eq!((r[0].status, r[0].body.len()), (200, 4 << 20));
    }
    // The next request arrives while 16 MiB of responses, more than the
    // socket buffers hold, are still going out: their first bytes are
    // here, the rest waits for this client to read.
    for _ in 0..3 {
        s.write_all(&big.repeat(4)).unwrap();
        let mut first = vec![0u8; 4096];
        let n = s.read(&mut first).expect("the responses start");
        first.truncate(n);
        s.write_all(GET).unwrap();
        let r = read_responses_after(&mut s, first, 5);
        for big in &r[..4] {
            assert_eq!((big.status, big.body.len()), (200, 4 << 20));
        }
        assert_eq!((r[4].status, &r[4].body[..]), (200, &b"Hello, World!"[..]));
    }
    server.shutdown();
}

#[test]
fn connection_cap_closes_excess_at_once() {
    let config = HttpConfig {
        max_connections: 2,
        ..HttpConfig::default()
    };
    let (server, _rx) = start(config);
    let mut a = connect(server.local_addr());
    let mut b = connect(server.local_addr());
    a.write_all(GET).unwrap();
    b.write_all(GET).unwrap();
    read_responses(&mut a, 1);
    read_responses(&mut b, 1);
    let mut c = connect(server.local_addr());
    let _ = c.write_all(GET);
    let out = read_to_close(&mut c);
    assert!(
        out.is_empty(),
        "the third connection is closed without a response"
    );
    assert_eq!(server.stats().connections_rejected, 1);
    // The first two still work.
    a.write_all(GET).unwrap();
    assert_eq!(read_responses(&mut a, 1)[0].status, 200);
    server.shutdown();
}

#[test]
fn ten_thousand_requests_on_one_connection() {
    let (server, _rx) = start(HttpConfig::default());
    let mut s = connect(server.local_addr());
    for _ in 0..10_000 {
        s.write_all(GET).unwrap();
        let r = read_responses(&mut s, 1);
        assert_eq!(r[0].status, 200);
    }
    assert_eq!(server.stats().requests, 10_000);
    assert_eq!(server.stats().connections_accepted, 1);
    server.shutdown();
}

/// Every keep-alive exchange moves the connection's deadline earlier (the
/// write timeout) and back (the idle timeout): the worker's timer heap
/// must stay bounded by its connections, not grow with the requests served.
#[test]
fn keep_alive_requests_leave_timer_entries_bounded_by_connections() {
    const CONNS: usize = 64;
    const REQUESTS: usize = 100_000;
    let (server, _rx) = start(HttpConfig::default());
    let addr = server.local_addr();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut conns: Vec<TcpStream> = (0..CONNS / 8).map(|_| connect(addr)).collect();
                for _ in 0..REQUESTS / CONNS {
                    for c in &mut conns {
                        c.write_all(GET).unwrap();
                    }
                    for c in &mut conns {
                        assert_eq!(read_responses(c, 1)[0].status, 200);
                    }
                }
                conns
            })
        })
        .collect();
    let conns: Vec<Vec<TcpStream>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut probe = connect(addr);
    probe
        .write_all(b"GET /timers HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = read_responses(&mut probe, 1);
    let heap: usize = std::str::from_utf8(&r[0].body).unwrap().parse().unwrap();
    // One timer per connection (65 with the probe), plus at most as many
    // stale items and a fixed slack: not one per request.
    assert!(heap <= 4 * (CONNS + 1), "timer heap holds {heap} items");
    assert_eq!(
        server.stats().requests as usize,
        REQUESTS / CONNS * CONNS + 1
    );
    drop(conns);
    server.shutdown();
}

#[test]
fn handler_panic_is_a_500_and_the_server_lives_on() {
    let (server, _rx) = start(HttpConfig::default());
    let mut s = connect(server.local_addr());
    s.write_all(b"GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let out = read_to_close(&mut s);
    assert_eq!(parse_resp(&out).unwrap().0.status, 500);
    let mut s = connect(server.local_addr());
    s.write_all(GET).unwrap();
    assert_eq!(read_responses(&mut s, 1)[0].status, 200);
    server.shutdown();
}

#[test]
fn sync_handler_panic_is_a_500_after_the_earlier_pipelined_responses() {
    let (server, _rx) = start(HttpConfig::default());
    let mut s = connect(server.local_addr());
    let mut batch = Vec::new();
    batch.extend_from_slice(GET);
    batch.extend_from_slice(GET);
    batch.extend_from_slice(b"GET /panic-sync HTTP/1.1\r\nHost: x\r\n\r\n");
    batch.extend_from_slice(GET);
    s.write_all(&batch).unwrap();
    let out = read_to_close(&mut s);
    let mut rest = &out[..];
    let mut statuses = Vec::new();
    while let Some((r, used)) = parse_resp(rest) {
        statuses.push(r.status);
        if r.status == 500 {
            assert_eq!(r.header("connection"), Some("close"));
        }
        rest = &rest[used..];
    }
    assert_eq!(
        statuses,
        [200, 200, 500],
        "nothing after the panic is served"
    );
    let mut s = connect(server.local_addr());
    s.write_all(GET).unwrap();
    assert_eq!(read_responses(&mut s, 1)[0].status, 200);
    server.shutdown();
}

#[test]
fn a_panicking_app_builder_fails_serve() {
    let res = Server::bind("127.0.0.1:0".parse().unwrap())
        .workers(2)
        .pin_workers(false)
        .serve(|info| {
            if info.index == 1 {
                panic!("app builder panics (expected by the test)");
            }
            Router::new(()).get_sync("/", |_, _| Response::text("ok"))
        });
    let err = res.err().expect("serve fails");
    let msg = err.to_string();
    assert!(
        msg.contains("worker 1") && msg.contains("app builder panics"),
        "{msg}"
    );
}

#[test]
fn graceful_shutdown_finishes_requests_in_flight() {
    let (server, started) = start(HttpConfig::default());
    let addr = server.local_addr();
    let mut busy = connect(addr);
    let mut idle = connect(addr);
    idle.write_all(GET).unwrap();
    read_responses(&mut idle, 1);
    busy.write_all(b"GET /slow?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    started
        .recv_timeout(Duration::from_secs(5))
        .expect("handler started");
    let handle = server.shutdown_handle();
    handle.shutdown();
    // The idle connection is closed; the busy one gets its whole response,
    // marked as the last on the connection.
    assert!(read_to_close(&mut idle).is_empty());
    let out = read_to_close(&mut busy);
    let (resp, _) = parse_resp(&out).expect("in-flight response delivered");
    assert_eq!(resp.body, b"slow done");
    assert_eq!(resp.header("connection"), Some("close"));
    server.join();
    let after = TcpStream::connect(addr);
    assert!(after.is_err(), "listener closed after shutdown: {after:?}");
}

/// HTTPS: a client that connects and never completes the TLS handshake is
/// closed after `tls_handshake_timeout`, not after the idle timeout.
#[test]
fn an_unfinished_tls_handshake_is_closed_at_its_timeout() {
    use tidepool_engine::tls::{server_config, ServerCert};
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let tls = server_config(
        vec![ServerCert {
            chain: vec![cert.der().clone()],
            key: tidepool_engine::tls::rustls::pki_types::PrivateKeyDer::Pkcs8(
                key.serialize_der().into(),
            ),
        }],
        &[b"http/1.1"],
    )
    .unwrap();
    let config = HttpConfig {
        tls: Some(tls),
        tls_handshake_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(3600),
        ..HttpConfig::default()
    };
    let (server, _rx) = start(config);
    // Nothing at all, and half a ClientHello-sized record header.
    for bytes in [&b""[..], &b"\x16\x03\x01\x02\x00"[..]] {
        let mut s = connect(server.local_addr());
        s.write_all(bytes).unwrap();
        // Closed by the server (read_to_close panics after 10 s otherwise).
        read_to_close(&mut s);
    }
    server.shutdown();
}

/// An async handler that runs past `handler_timeout` is answered 503 and
/// dropped; the connection goes on serving (a quick async handler, which
/// finishes at its first poll, is untouched by the limit).
#[test]
fn a_handler_past_its_timeout_is_answered_503() {
    let config = HttpConfig {
        handler_timeout: Duration::from_millis(200),
        ..HttpConfig::default()
    };
    let (server, _rx) = start(config);
    let mut s = connect(server.local_addr());
    s.write_all(b"GET /slow?ms=60000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = read_responses(&mut s, 1);
    assert_eq!(r[0].status, 503);
    s.write_all(b"GET /slow?ms=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.write_all(GET).unwrap();
    let r = read_responses(&mut s, 2);
    assert_eq!((r[0].status, r[1].status), (200, 200));
    server.shutdown();
}
