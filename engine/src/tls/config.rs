//! rustls configurations: where trusted roots come from, how much of the
//! server's certificate a client checks, and a server's certificates
//! chosen by SNI.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A configuration that cannot be built: a file that cannot be read, PEM
/// without the expected item, a key rustls cannot use.
#[derive(Debug, Clone)]
pub struct TlsConfigError(pub String);

impl std::fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsConfigError {}

/// Where a client's trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The certificates in a PEM file.
    PemFile(PathBuf),
    /// The platform's bundle (`SSL_CERT_FILE`, else the usual paths of
    /// Debian, Fedora and Alpine).
    System,
}

/// How much of the server's certificate a client checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Nothing but the handshake's signatures: encryption against a passive
    /// listener, no protection from an active one (PostgreSQL's `prefer`
    /// and `require`).
    Nothing,
    /// The chain up to a trusted root, not the name (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`).
    Full,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file, in order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsConfigError(format!("{}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsConfigError(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsConfigError(format!(
            "{}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| TlsConfigError(format!("{}: no usable private key: {e}", path.display())))
}

fn root_store(roots: &Roots) -> Result<RootCertStore, TlsConfigError> {
    let path = match roots {
        Roots::PemFile(p) => p.clone(),
        Roots::System => system_bundle()?,
    };
    let mut store = RootCertStore::empty();
    for cert in load_certs(&path)? {
        store
            .add(cert)
            .map_err(|e| TlsConfigError(format!("{}: {e}", path.display())))?;
    }
    Ok(store)
}

fn system_bundle() -> Result<PathBuf, TlsConfigError> {
    if let Some(p) = std::env::var_os("SSL_CERT_FILE") {
        return Ok(PathBuf::from(p));
    }
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .ok_or_else(|| TlsConfigError("no system certificate bundle found (set SSL_CERT_FILE)".into()))
}

/// A client configuration. `roots` is needed unless `verify` is
/// [`Verify::Nothing`]; `alpn` lists the protocols to offer.
pub fn client_config(
    roots: Option<&Roots>,
    verify: Verify,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match (verify, roots) {
        (Verify::Nothing, _) => Arc::new(SignaturesOnly(provider.clone())),
        (_, None) => {
            return Err(TlsConfigError(
                "verifying the server's certificate needs trusted roots".into(),
            ))
        }
        (v, Some(r)) => {
            let inner = WebPkiServerVerifier::builder_with_provider(
                Arc::new(root_store(r)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| TlsConfigError(e.to_string()))?;
            if v == Verify::Full {
                inner
            } else {
                Arc::new(ChainOnly(inner))
            }
        }
    };
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// One certificate chain and its key, for the names the leaf is valid for.
pub struct ServerCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// A server configuration with one or more certificates: the one valid for
/// the name the client asks for (SNI), else the first. `alpn` lists the
/// protocols the server speaks, preferred first.
pub fn server_config(
    certs: Vec<ServerCert>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let provider = provider();
    let mut keys = Vec::new();
    for c in certs {
        let signing = provider
            .key_provider
            .load_private_key(c.key)
            .map_err(|e| TlsConfigError(format!("private key: {e}")))?;
        let key = CertifiedKey::new(c.chain, signing);
        key.keys_match()
            .map_err(|e| TlsConfigError(format!("certificate and key: {e}")))?;
        keys.push(Arc::new(key));
    }
    if keys.is_empty() {
        return Err(TlsConfigError("no certificate".into()));
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni(keys)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Picks the first certificate valid for the client's SNI name, else the
/// first of all (clients that send no name, or one nothing matches: they
/// decide whether to accept it).
#[derive(Debug)]
struct BySni(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let first = self.0.first().cloned();
        let Some(name) = hello.server_name() else {
            return first;
        };
        let Ok(name) = ServerName::try_from(name) else {
            return first;
        };
        self.0
            .iter()
            .find(|k| {
                k.end_entity_cert().is_ok_and(|leaf| {
                    webpki::EndEntityCert::try_from(leaf)
                        .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
                })
            })
            .cloned()
            .or(first)
    }
}

/// Checks the chain, not the name (PostgreSQL's `verify-ca`).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Accepts any certificate but still checks the handshake is signed by its
/// key (so channel binding to it means something).
#[derive(Debug)]
struct SignaturesOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for SignaturesOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
