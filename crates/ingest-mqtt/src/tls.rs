//! MQTT over TLS (the `:8883` listener), with optional client-certificate
//! (mutual TLS) authentication.
//!
//! [`MqttTls`] holds a rustls server configuration (ring provider, TLS 1.2
//! and 1.3). [`MqttServer::serve_tls`](crate::MqttServer::serve_tls)
//! accepts TCP sockets, runs each handshake in the connection's own task
//! under a timeout, and hands the decrypted stream to the same connection
//! code as plain TCP. A failed or slow handshake closes only its own socket.
//!
//! With a client CA configured, a client *may* present a certificate signed
//! by that CA; the SHA-256 fingerprint of the certificate it presented
//! travels with the connection ([`Peer`]) so that CONNECT can authenticate a
//! device whose certificate is registered, without a password. Clients
//! without a certificate still authenticate with their token.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use crate::error::MqttError;

/// How long a TLS handshake may take unless told otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS side of the MQTT server: certificate, key, optional client CA.
/// Cheap to clone.
#[derive(Clone)]
pub struct MqttTls {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    client_auth: bool,
}

impl fmt::Debug for MqttTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttTls")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

impl MqttTls {
    /// Loads the server certificate chain and private key from PEM files,
    /// and, when `client_ca` is given, the CA certificates (PEM) that client
    /// certificates must chain to. Client certificates stay optional: a
    /// client without one authenticates with its token.
    pub fn from_pem_files(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<Self, MqttError> {
        let chain = read_certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| tls_error(format!("reading the private key {}: {e}", key.display())))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(format!("TLS protocol versions: {e}")))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in read_certs(ca)? {
                    roots
                        .add(c)
                        .map_err(|e| tls_error(format!("client CA {}: {e}", ca.display())))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| tls_error(format!("client CA {}: {e}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| tls_error(format!("server certificate and key: {e}")))?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            client_auth: client_ca.is_some(),
        })
    }

    /// Uses a rustls configuration built elsewhere. `client_auth` says
    /// whether it asks clients for certificates.
    pub fn from_config(config: Arc<rustls::ServerConfig>, client_auth: bool) -> Self {
        Self {
            acceptor: TlsAcceptor::from(config),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            client_auth,
        }
    }

    /// Sets how long a handshake may take before the socket is closed
    /// (at least 1 ms).
    #[must_use]
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Whether clients are asked for certificates (a client CA is set).
    pub fn client_auth(&self) -> bool {
        self.client_auth
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }
}

/// What the transport knows about the client before CONNECT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Peer {
    /// Lower-case hex SHA-256 of the client certificate presented (and
    /// verified against the client CA) in the TLS handshake.
    pub(crate) certificate: Option<String>,
}

impl Peer {
    /// The peer of a TLS connection: its leaf certificate's fingerprint.
    pub(crate) fn from_tls(certs: Option<&[CertificateDer<'static>]>) -> Self {
        Self {
            certificate: certs.and_then(|c| c.first()).map(|c| fingerprint(c)),
        }
    }
}

/// The lower-case hex SHA-256 of a DER certificate: the form the registry
/// stores (`openssl x509 -noout -fingerprint -sha256`, without colons,
/// lower-cased).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, MqttError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(format!("reading {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(format!("parsing {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls_error(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn tls_error(message: String) -> MqttError {
    MqttError::Tls(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_lower_hex_sha256() {
        // SHA-256 of the empty input.
        assert_eq!(
            fingerprint(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn missing_or_empty_files_are_config_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let missing = dir.path().join("missing.pem");
        for (cert, key) in [(&missing, &missing), (&empty, &empty)] {
            let err = MqttTls::from_pem_files(cert, key, None).expect_err("refused");
            assert!(matches!(err, MqttError::Tls(_)), "{err}");
        }
    }
}
