//! The upstream side: a rustls client configuration (webpki roots plus an optional private CA,
//! an optional client certificate for mutual TLS, an optional server-name override) wrapped
//! around the HTTP connector, offering `h2` and `http/1.1` by ALPN.

use std::path::Path;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;

use super::{TlsError, load_pair, parse_certs, provider};
use crate::config::UpstreamTls;

/// Builds the TLS connectors to the upstream. Plain `http://` upstreams go through them
/// untouched, so one connector serves both schemes (and a reload may switch between them).
#[derive(Clone)]
pub struct UpstreamConnector {
    config: ClientConfig,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for UpstreamConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConnector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl UpstreamConnector {
    /// Reads the CA and client certificate files named by `opts` (blocking file I/O).
    /// Without `opts`: the webpki roots, no client certificate.
    pub fn new(opts: Option<&UpstreamTls>) -> Result<UpstreamConnector, TlsError> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(ca) = opts.and_then(|o| o.ca.as_deref()) {
            add_ca(&mut roots, ca)?;
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(super::VERSIONS)
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let config = match opts.and_then(|o| o.client_cert.as_ref()) {
            Some(files) => {
                let (chain, key) = load_pair(&files.cert, &files.key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::Pair {
                        cert: files.cert.clone(),
                        key: files.key.clone(),
                        message: match e {
                            rustls::Error::InconsistentKeys(_) => {
                                "the private key does not belong to the certificate".to_owned()
                            }
                            other => other.to_string(),
                        },
                    })?
            }
            None => builder.with_no_client_auth(),
        };
        let server_name = match opts.and_then(|o| o.server_name.as_deref()) {
            Some(n) => Some(
                ServerName::try_from(n.to_owned())
                    .map_err(|e| TlsError::Config(format!("upstream_tls.server_name: {e}")))?,
            ),
            None => None,
        };
        Ok(UpstreamConnector {
            config,
            server_name,
        })
    }

    /// Wraps `http`: `https://` upstreams get TLS, offering `h2` and `http/1.1` by ALPN (only
    /// `http/1.1` when `h2` is false, e.g. for protocol upgrades); `http://` passes through.
    pub fn wrap(&self, http: HttpConnector, h2: bool) -> HttpsConnector<HttpConnector> {
        let b = HttpsConnectorBuilder::new()
            .with_tls_config(self.config.clone())
            .https_or_http();
        let b = match &self.server_name {
            Some(n) => b.with_server_name_resolver(FixedServerNameResolver::new(n.clone())),
            None => b,
        };
        if h2 {
            b.enable_all_versions().wrap_connector(http)
        } else {
            b.enable_http1().wrap_connector(http)
        }
    }
}

fn add_ca(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    for cert in parse_certs(&pem, path)? {
        roots.add(cert).map_err(|e| TlsError::Ca {
            path: path.to_path_buf(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(())
}

/// An error and its sources on one line (`outer: inner: root`), for the logs and errors of
/// clients that use the [`UpstreamConnector`] (hyper's client errors hide the cause in
/// `source()`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
