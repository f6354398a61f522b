//! tls: rustls configurations for both sides of the gate, built from PEM files.
//!
//! - [`server`]: the listeners' side. A [`CertStore`] holds one or more certificate/key pairs
//!   (the first is the default, the others are chosen by SNI), answers rustls' certificate
//!   lookups, and reloads the files keeping the last good pair when a new one is broken or its
//!   key does not match. [`server_config`] builds the rustls config: TLS 1.3 and 1.2 only,
//!   ALPN `h2` and `http/1.1` (or `http/1.1` alone for the admin listener).
//! - [`client`]: the upstream side. [`UpstreamConnector`] wraps the HTTP connector with
//!   rustls (webpki roots, an optional extra CA, an optional client certificate for mutual TLS,
//!   an optional server-name override), offering `h2` and `http/1.1` by ALPN.
//! - [`watch`]: watches the parent directories of the certificate and key files and reloads
//!   the stores on changes, on SIGHUP and periodically.
//!
//! One crypto provider: aws-lc-rs (rustls' default). This module never imports `admin`,
//! `store` or `reload`.

pub mod client;
pub mod server;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use client::UpstreamConnector;
pub use server::{CertStatus, CertStore, server_config};

/// Why TLS material could not be loaded or a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key found (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("{path}: not valid PEM: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{cert} / {key}: {message}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("{path}: {message}")]
    Ca { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The crypto provider used everywhere: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The protocol versions offered and accepted: TLS 1.3 and TLS 1.2.
pub(crate) static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM text (at least one).
pub(crate) fn parse_certs(
    pem: &[u8],
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM text.
pub(crate) fn parse_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        other => TlsError::Pem {
            path: path.to_path_buf(),
            message: other.to_string(),
        },
    })
}

/// Reads a certificate chain and its key (not checked against each other here).
pub(crate) fn load_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = parse_certs(&read(cert)?, cert)?;
    let der = parse_key(&read(key)?, key)?;
    Ok((chain, der))
}
