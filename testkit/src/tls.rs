//! Certificates for tests: a throwaway CA that issues server certificates
//! for the names a test asks for, written as PEM files the servers (and
//! the clients' `sslrootcert`) read.

use std::path::{Path, PathBuf};

use crate::TestkitError;

/// A certificate authority that exists for one test run.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A certificate issued by a [`TestCa`], as PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn err(e: impl std::fmt::Display) -> TestkitError {
    TestkitError::new(format!("test certificate: {e}"))
}

impl TestCa {
    pub fn new() -> Result<TestCa, TestkitError> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        // Each CA its own name, as real ones have: a certificate from
        // another CA is then an unknown issuer to a client trusting this
        // one, not a bad signature.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("tidepool test CA {} {n}", std::process::id()),
        );
        let key = rcgen::KeyPair::generate().map_err(err)?;
        let cert = params.self_signed(&key).map_err(err)?;
        Ok(TestCa { cert, key })
    }

    /// The CA's certificate (what a client trusts).
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate valid for `names` (host names or IP literals).
    pub fn issue(&self, names: &[&str]) -> Result<Issued, TestkitError> {
        self.issue_with(names, false)
    }

    /// A server certificate for `names` that expired (valid during 2020
    /// only).
    pub fn issue_expired(&self, names: &[&str]) -> Result<Issued, TestkitError> {
        self.issue_with(names, true)
    }

    fn issue_with(&self, names: &[&str], expired: bool) -> Result<Issued, TestkitError> {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .map_err(err)?;
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = rcgen::KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &self.cert, &self.key).map_err(err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes the CA's certificate to `dir/name`; returns the path.
    pub fn write_pem(&self, dir: &Path, name: &str) -> Result<PathBuf, TestkitError> {
        let path = dir.join(name);
        std::fs::write(&path, self.pem())
            .map_err(|e| TestkitError::new(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    }
}
