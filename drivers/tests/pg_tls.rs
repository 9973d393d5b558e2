//! PostgreSQL over TLS against a real server with `ssl = on`: each
//! `sslmode`, certificate checks with the host name, SCRAM channel binding,
//! and the errors that name their cause.

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
