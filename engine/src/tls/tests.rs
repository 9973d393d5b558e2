//! Client and server sessions talking through plain byte vectors: no
//! socket, as the connections use them.

use super::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

fn ca() -> Ca {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // Each CA its own name, as real ones have: a certificate from another
    // CA is then an unknown issuer, not a bad signature from this one.
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("test CA {}", N.fetch_add(1, Ordering::Relaxed)),
    );
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key }
}

fn leaf(ca: &Ca, names: &[&str]) -> ServerCert {
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    ServerCert {
        chain: vec![CertificateDer::from(cert.der().to_vec())],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// A certificate for `names` that expired years ago.
fn expired_leaf(ca: &Ca, names: &[&str]) -> ServerCert {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    ServerCert {
        chain: vec![CertificateDer::from(cert.der().to_vec())],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

fn roots_file(ca: &Ca) -> (tempdir::Dir, Roots) {
    let dir = tempdir::Dir::new();
    let path = dir.0.join("ca.pem");
    std::fs::write(&path, ca.cert.pem()).unwrap();
    (dir, Roots::PemFile(path))
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            use std::sync::atomic::{AtomicU64, Ordering};
            static N: AtomicU64 = AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!(
                "tidepool-tls-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Moves bytes both ways until neither side has anything to say; returns
/// the first error and the plaintext each side received.
fn pump(c: &mut Session, s: &mut Session) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let (mut at_client, mut at_server) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let mut wire = Vec::new();
        c.take_output(&mut wire);
        let c_said = !wire.is_empty();
        s.receive(&wire, &mut at_server)?;
        wire.clear();
        s.take_output(&mut wire);
        let s_said = !wire.is_empty();
        c.receive(&wire, &mut at_client)?;
        if !c_said && !s_said {
            break;
        }
    }
    Ok((at_client, at_server))
}

fn name(n: &str) -> ServerName<'static> {
    ServerName::try_from(n.to_string()).unwrap()
}

#[test]
fn a_verified_session_carries_data_both_ways_and_ends_with_close_notify() {
    let ca = ca();
    let (_dir, roots) = roots_file(&ca);
    let sc = server_config(
        vec![leaf(&ca, &["db.example", "127.0.0.1"])],
        &[b"http/1.1"],
    )
    .unwrap();
    for host in ["db.example", "127.0.0.1"] {
        let cc = client_config(Some(&roots), Verify::Full, &[b"http/1.1"]).unwrap();
        let mut c = Session::client(cc, name(host)).unwrap();
        let mut s = Session::server(sc.clone()).unwrap();
        c.send(b"hello server").unwrap(); // waits for the handshake
        let (_, at_server) = pump(&mut c, &mut s).unwrap();
        assert!(!c.is_handshaking() && !s.is_handshaking());
        assert_eq!(at_server, b"hello server");
        assert_eq!(c.alpn(), Some(&b"http/1.1"[..]));
        assert!(c.peer_certificate().is_some());
        // A large write crosses several records.
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        s.send(&big).unwrap();
        let (at_client, _) = pump(&mut c, &mut s).unwrap();
        assert_eq!(at_client, big);
        c.close();
        pump(&mut c, &mut s).unwrap();
        assert!(s.peer_closed());
    }
}

#[test]
fn verification_levels_refuse_what_they_must() {
    let (ca, other) = (ca(), ca());
    let (_dir, roots) = roots_file(&ca);
    let sc = server_config(vec![leaf(&ca, &["db.example"])], &[]).unwrap();
    let foreign = server_config(vec![leaf(&other, &["db.example"])], &[]).unwrap();
    let run = |sc: &Arc<rustls::ServerConfig>, verify: Verify, host: &str| {
        let cc = client_config(Some(&roots), verify, &[]).unwrap();
        let mut c = Session::client(cc, name(host)).unwrap();
        let mut s = Session::server(sc.clone()).unwrap();
        pump(&mut c, &mut s).map(|_| ())
    };
    // The right certificate under another name: only the name check fails.
    run(&sc, Verify::Full, "db.example").unwrap();
    let e = run(&sc, Verify::Full, "other.example").unwrap_err();
    assert!(e.fatal, "{e}");
    assert!(e.to_string().contains("NotValidForName"), "{e}");
    run(&sc, Verify::Chain, "other.example").unwrap();
    // A certificate from an untrusted CA fails the chain check too.
    let e = run(&foreign, Verify::Chain, "db.example").unwrap_err();
    assert!(e.fatal && e.to_string().contains("UnknownIssuer"), "{e}");
    // An expired certificate from the trusted CA: refused, named.
    let expired = server_config(vec![expired_leaf(&ca, &["db.example"])], &[]).unwrap();
    let e = run(&expired, Verify::Full, "db.example").unwrap_err();
    assert!(e.fatal && e.to_string().contains("Expired"), "{e}");
    // Encryption only accepts anything.
    run(&foreign, Verify::Nothing, "other.example").unwrap();
    run(&expired, Verify::Nothing, "db.example").unwrap();
}

#[test]
fn the_server_picks_its_certificate_by_sni() {
    let ca = ca();
    let (_dir, roots) = roots_file(&ca);
    let sc = server_config(
        vec![leaf(&ca, &["a.example"]), leaf(&ca, &["b.example"])],
        &[],
    )
    .unwrap();
    for host in ["a.example", "b.example"] {
        let cc = client_config(Some(&roots), Verify::Full, &[]).unwrap();
        let mut c = Session::client(cc, name(host)).unwrap();
        let mut s = Session::server(sc.clone()).unwrap();
        pump(&mut c, &mut s).unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(s.server_name(), Some(host));
    }
}

#[test]
fn garbage_is_a_clear_error_not_a_panic() {
    let ca = ca();
    let sc = server_config(vec![leaf(&ca, &["db.example"])], &[]).unwrap();
    let mut s = Session::server(sc).unwrap();
    let mut plain = Vec::new();
    let e = s
        .receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut plain)
        .unwrap_err();
    assert!(e.to_string().starts_with("TLS:"), "{e}");
    assert!(plain.is_empty());
    // The alert to send is queued.
    let mut out = Vec::new();
    s.take_output(&mut out);
    assert!(!out.is_empty());
}
