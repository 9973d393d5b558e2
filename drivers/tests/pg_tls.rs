//! PostgreSQL over TLS against a real server with `ssl = on`: each
//! `sslmode`, certificate checks (the host name, the issuer, the validity
//! period), SCRAM channel binding, and the errors that name their cause.

use std::sync::OnceLock;

use tidepool_drivers::pg::config::SslMode;
use tidepool_drivers::pg::{Client, Config, Error};
use tidepool_engine::rt::block_on;
use tidepool_engine::tls::Roots;
use tidepool_testkit::tls::TestCa;
use tidepool_testkit::{PgServer, PgUser};

fn tls_server() -> &'static PgServer {
    static S: OnceLock<PgServer> = OnceLock::new();
    S.get_or_init(|| PgServer::start_tls().expect("postgres with ssl"))
}

fn cfg(server: &PgServer, user: PgUser, mode: SslMode) -> Config {
    let c: Config = server.url(user).parse().unwrap();
    c.sslmode(mode)
}

fn ca(server: &PgServer) -> Roots {
    Roots::PemFile(server.ca_file().expect("tls server").to_path_buf())
}

async fn encrypted(c: &mut Client) -> bool {
    c.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .await
    .unwrap()
    .get::<bool>(0)
}

#[test]
fn every_sslmode_against_a_server_with_tls() {
    let pg = tls_server();
    block_on(async {
        // The server takes TLS sessions only (hostssl): cleartext is
        // refused with its own reason.
        let e = Client::connect(&cfg(pg, PgUser::Md5, SslMode::Disable))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no encryption"), "{e}");
        for mode in [SslMode::Prefer, SslMode::Require] {
            let mut c = Client::connect(&cfg(pg, PgUser::Md5, mode)).await.unwrap();
            assert!(c.is_tls(), "{mode:?}");
            assert!(encrypted(&mut c).await, "{mode:?} as the server sees it");
        }
        // The certificate is for 127.0.0.1, which is what the URL names.
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let mut c = Client::connect(&cfg(pg, PgUser::Md5, mode).sslrootcert(ca(pg)))
                .await
                .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            assert!(encrypted(&mut c).await);
            // Enough traffic to cross many records both ways.
            let big = "x".repeat(200_000);
            let row = c.query_one("SELECT $1::text", &[&big]).await.unwrap();
            assert_eq!(row.get::<String>(0), big);
        }
    });
}

#[test]
fn scram_is_bound_to_the_tls_channel() {
    let pg = tls_server();
    block_on(async {
        let c = Client::connect(&cfg(pg, PgUser::Scram, SslMode::Require))
            .await
            .unwrap();
        assert_eq!(c.auth_method(), "scram-sha-256-plus");
        // Without TLS there is no channel to bind to.
        let c = Client::connect(&cfg(PgServer::shared(), PgUser::Scram, SslMode::Prefer))
            .await
            .unwrap();
        assert!(!c.is_tls());
        assert_eq!(c.auth_method(), "scram-sha-256");
    });
}

#[test]
fn certificate_checks_refuse_with_the_cause_and_are_not_retried() {
    let pg = tls_server();
    block_on(async {
        // The right CA, the wrong name: verify-full refuses, verify-ca does not.
        let by_name = |mode| {
            cfg(pg, PgUser::Md5, mode)
                .host("localhost")
                .sslrootcert(ca(pg))
        };
        let e = Client::connect(&by_name(SslMode::VerifyFull))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("NotValidForName"), "{e}");
        assert!(
            !e.is_transient(),
            "a verification failure is not retried: {e}"
        );
        Client::connect(&by_name(SslMode::VerifyCa)).await.unwrap();
        // A CA that did not sign the server's certificate.
        let dir = std::env::temp_dir().join(format!("tidepool-pg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let other = TestCa::new().unwrap().write_pem(&dir, "other.pem").unwrap();
        let e = Client::connect(
            &cfg(pg, PgUser::Md5, SslMode::VerifyCa).sslrootcert(Roots::PemFile(other)),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("UnknownIssuer"), "{e}");
        assert!(matches!(e, Error::Tls { fatal: true, .. }), "{e:?}");
        // A missing root file is a configuration error, named.
        let e = Client::connect(
            &cfg(pg, PgUser::Md5, SslMode::VerifyCa)
                .sslrootcert(Roots::PemFile(dir.join("missing.pem"))),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// A certificate past its validity is refused with the cause named, and
/// not retried, though the CA and the name are right.
#[test]
fn an_expired_certificate_is_refused_with_the_cause() {
    // Its own server: the certificate changes under it.
    let pg = PgServer::start_tls().expect("postgres with ssl");
    let dir = std::env::temp_dir().join(format!("tidepool-pg-expired-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca2 = TestCa::new().unwrap();
    let roots = Roots::PemFile(ca2.write_pem(&dir, "ca2.pem").unwrap());
    pg.use_certificate(&ca2.issue_expired(&["127.0.0.1"]).unwrap())
        .unwrap();
    let config = cfg(&pg, PgUser::Md5, SslMode::VerifyFull).sslrootcert(roots);
    block_on(async {
        // Until the server has read the reload signal, it still shows the
        // old certificate (from a CA this client does not trust).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let e = loop {
            let e = Client::connect(&config).await.unwrap_err();
            if !e.to_string().contains("UnknownIssuer") {
                break e;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server never loaded the new certificate: {e}"
            );
            tidepool_engine::rt::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert!(e.to_string().contains("Expired"), "{e}");
        assert!(matches!(e, Error::Tls { fatal: true, .. }), "{e:?}");
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_server_without_tls_is_refused_only_when_tls_is_required() {
    let pg = PgServer::shared();
    block_on(async {
        let c = Client::connect(&cfg(pg, PgUser::Md5, SslMode::Prefer))
            .await
            .unwrap();
        assert!(!c.is_tls());
        for mode in [SslMode::Require, SslMode::VerifyFull] {
            let e = Client::connect(&cfg(pg, PgUser::Md5, mode))
                .await
                .unwrap_err();
            assert!(
                e.to_string()
                    .contains("server does not support SSL, and sslmode="),
                "{e}"
            );
            assert!(!e.is_transient());
        }
    });
}

/// A pool whose connects fail certificate verification fails its callers
/// at once with the cause, after one attempt: no retry storm against a
/// server that will never pass.
#[test]
fn a_pool_fails_fast_on_a_refused_certificate() {
    use std::time::Duration;
    use tidepool_drivers::pool::pg::PgManager;
    use tidepool_drivers::pool::{Pool, PoolConfig};
    let pg = tls_server();
    let config = cfg(pg, PgUser::Md5, SslMode::VerifyFull)
        .host("localhost")
        .sslrootcert(ca(pg));
    let pool_cfg = PoolConfig {
        max_open: 2,
        acquire_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(10),
        ..PoolConfig::default()
    };
    let pool = Pool::new("tls", pool_cfg, PgManager::new(config), 1).unwrap();
    block_on(async {
        let local = pool.local(0);
        let e = local.get().await.err().expect("refused");
        assert!(e.to_string().contains("NotValidForName"), "{e}");
        let s = local.stats();
        assert_eq!(
            s.connect_failures.iter().sum::<u64>(),
            1,
            "one attempt: {s:?}"
        );
        assert_eq!(s.acquire_timeouts, 0);
    });
}

/// `prefer` falls back to cleartext, on a new connection, when a server
/// that accepted the SSLRequest fails the handshake (as libpq does);
/// `require` does not. A scripted server: the first connection answers
/// `S` and then garbage; the second must open with a StartupMessage, not
/// another SSLRequest, and is answered with a FATAL that ends the test.
#[test]
fn prefer_falls_back_to_cleartext_after_a_failed_handshake() {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    const SSL_REQUEST: [u8; 4] = [0x04, 0xd2, 0x16, 0x2f];
    const PROTOCOL_3: [u8; 4] = [0x00, 0x03, 0x00, 0x00];
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let mut firsts = Vec::new();
        for _ in 0..3 {
            let Ok((mut s, _)) = listener.accept() else {
                break;
            };
            let mut head = [0u8; 8];
            if s.read_exact(&mut head).is_err() {
                break;
            }
            let code: [u8; 4] = head[4..8].try_into().unwrap();
            firsts.push(code);
            if code == SSL_REQUEST {
                s.write_all(b"S").unwrap();
                let mut hello = [0u8; 256];
                let _ = s.read(&mut hello);
                let _ = s.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n");
            } else {
                // ErrorResponse: S FATAL, C 28000, M scripted.
                let body = b"SFATAL\0VFATAL\0C28000\0Mscripted refusal\0\0";
                let mut msg = vec![b'E'];
                msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
                msg.extend_from_slice(body);
                let _ = s.write_all(&msg);
                break;
            }
        }
        firsts
    });
    block_on(async move {
        let url = format!("postgres://u:p@127.0.0.1:{port}/db?sslmode=prefer");
        let e = Client::connect(&url.parse().unwrap()).await.unwrap_err();
        assert!(e.to_string().contains("scripted refusal"), "{e}");
    });
    assert_eq!(server.join().unwrap(), vec![SSL_REQUEST, PROTOCOL_3]);
    // `require` stops at the failed handshake.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut head = [0u8; 8];
        s.read_exact(&mut head).unwrap();
        s.write_all(b"S").unwrap();
        let mut hello = [0u8; 256];
        let _ = s.read(&mut hello);
        let _ = s.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n");
    });
    block_on(async move {
        let url = format!("postgres://u:p@127.0.0.1:{port}/db?sslmode=require");
        let e = Client::connect(&url.parse().unwrap()).await.unwrap_err();
        assert!(matches!(e, Error::Tls { .. }), "{e:?}");
    });
    server.join().unwrap();
}
