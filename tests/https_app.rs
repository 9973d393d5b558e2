//! The example serving HTTPS: certificates chosen by SNI, ALPN http/1.1,
//! keep-alive and pipelining through TLS, `close_notify` at a close, and a
//! cleartext client on the TLS port refused without harm to others.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use support::App;
use tidepool::engine::tls::{self, rustls, Roots, Verify};
use tidepool_testkit::tls::TestCa;

struct Certs {
    dir: PathBuf,
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA and two server certificates (127.0.0.1, and a.test), as files.
fn certs() -> Certs {
    let dir = std::env::temp_dir().join(format!("tidepool-https-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new().unwrap();
    ca.write_pem(&dir, "ca.pem").unwrap();
    for (name, host) in [("ip", "127.0.0.1"), ("a", "a.test")] {
        let c = ca.issue(&[host]).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), c.cert_pem).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), c.key_pem).unwrap();
    }
    Certs { dir }
}

fn connect(
    app: &App,
    ca: &Path,
    name: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let config = tls::client_config(
        Some(&Roots::PemFile(ca.into())),
        Verify::Full,
        &[b"http/1.1"],
    )
    .unwrap();
    let conn = rustls::ClientConnection::new(
        Arc::clone(&config),
        rustls::pki_types::ServerName::try_from(name.to_string()).unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(app.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Reads one response with a Content-Length body.
fn response(s: &mut impl Read) -> (String, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "response cut short: {buf:?}");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (head, String::from_utf8(body).unwrap())
}

#[test]
fn https_with_sni_keep_alive_pipelining_and_close_notify() {
    let certs = certs();
    let d = &certs.dir;
    let p = |f: &str| d.join(f).to_string_lossy().into_owned();
    let app = App::start(&[
        "--workers",
        "2",
        "--tls-cert",
        &p("ip.crt"),
        "--tls-key",
        &p("ip.key"),
        "--tls-cert",
        &p("a.crt"),
        "--tls-key",
        &p("a.key"),
    ]);
    let ca = d.join("ca.pem");
    // Each name gets the certificate valid for it (verified in full).
    for name in ["127.0.0.1", "a.test"] {
        let mut s = connect(&app, &ca, name);
        // Two pipelined requests in one write, then one more: keep-alive.
        s.write_all(
            b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\nGET /json HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .unwrap();
        let (head, body) = response(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{name}: {head}");
        assert_eq!(body, "Hello, World!");
        assert_eq!(response(&mut s).1, r#"{"message":"Hello, World!"}"#);
        assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        s.write_all(b"GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        assert_eq!(response(&mut s).1, "Hello, World!");
        // The server ends with close_notify: a clean end, not a truncation
        // (rustls reports a missing close_notify as an error).
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
    // Cleartext on the TLS port: refused (the connection ends), and the
    // server goes on serving.
    let mut plain = TcpStream::connect(app.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!String::from_utf8_lossy(&got).contains("Hello"), "{got:?}");
    let mut s = connect(&app, &ca, "127.0.0.1");
    s.write_all(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(response(&mut s).1, "Hello, World!");
    drop(s);
    // A real client: curl, verifying against the CA, two requests on one
    // kept-alive connection.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&ca)
        .arg(format!("https://127.0.0.1:{}/plaintext", app.addr.port()))
        .arg(format!("https://127.0.0.1:{}/json", app.addr.port()))
        .args(["-w", " %{http_code} %{num_connects}\n"])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text, "Hello, World! 200 1\n{\"message\":\"Hello, World!\"} 200 0\n",
        "the second request reused the connection"
    );
    // Malformed requests get the same answers as over cleartext.
    for (request, status) in [
        (&b"GET / HTTP/1.1\r\nHost: x\r\nA : b\r\n\r\n"[..], "400"),
        (b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n", "400"),
        (b"POST /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", "501"),
    ] {
        let mut s = connect(&app, &ca, "127.0.0.1");
        s.write_all(request).unwrap();
        let mut got = Vec::new();
        // The server answers, sends close_notify and closes.
        s.read_to_end(&mut got).unwrap();
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with(&format!("HTTP/1.1 {status}")), "{request:?}: {got}");
    }
    assert!(app.stop().success());
}
