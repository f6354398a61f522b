//! The listeners' TLS: certificate/key pairs chosen by SNI, reloaded keeping the last good
//! pair, and the rustls server configuration (TLS 1.2+, ALPN).

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{TlsError, parse_certs, parse_key, provider};
use crate::config::TlsFiles;

/// One loaded pair and the DNS names its certificate is valid for (lowercased; wildcards kept
/// as `*.example.com`).
struct Entry {
    key: Arc<CertifiedKey>,
    names: Vec<String>,
}

impl Entry {
    fn matches(&self, sni: &str) -> bool {
        self.names.iter().any(|n| match n.strip_prefix("*.") {
            Some(rest) => sni
                .split_once('.')
                .is_some_and(|(label, tail)| !label.is_empty() && tail == rest),
            None => n == sni,
        })
    }
}

/// What the last certificate reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertStatus {
    /// Bumped every time a changed pair is taken into use.
    pub generation: u64,
    /// Bumped every time the files are read (changed or not).
    pub checks: u64,
    /// The error of the last check that found a broken pair; `None` once all pairs load.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct State {
    /// Per pair: a hash of the cert and key bytes in use, and of the last rejected ones (so a
    /// broken pair is logged once, not at every periodic re-read).
    in_use: Vec<u64>,
    rejected: Vec<Option<u64>>,
    status: CertStatus,
}

/// The certificates of one listener: the first pair is the default, the others are served to
/// clients whose SNI names one of their DNS names. Implements rustls' certificate lookup.
pub struct CertStore {
    files: Vec<TlsFiles>,
    current: ArcSwap<Vec<Arc<Entry>>>,
    state: Mutex<State>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn fingerprint(cert: &[u8], key: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    cert.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

/// Reads one pair: its fingerprint and, if it is good, the loaded entry.
fn read_pair(files: &TlsFiles) -> Result<(u64, Result<Entry, TlsError>), TlsError> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.clone(),
            source,
        })
    };
    let cert = read(&files.cert)?;
    let key = read(&files.key)?;
    Ok((fingerprint(&cert, &key), build_entry(files, &cert, &key)))
}

/// Builds an entry from the bytes read (not re-reading: the fingerprint describes them).
fn build_entry(files: &TlsFiles, cert: &[u8], key: &[u8]) -> Result<Entry, TlsError> {
    let pair_err = |message: String| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        message,
    };
    let chain = parse_certs(cert, &files.cert)?;
    let key = parse_key(key, &files.key)?;
    let names = match chain.first().map(webpki::EndEntityCert::try_from) {
        Some(Ok(ee)) => ee
            .valid_dns_names()
            .map(|n| n.to_ascii_lowercase())
            .collect(),
        Some(Err(e)) => return Err(pair_err(format!("cannot parse the certificate: {e:?}"))),
        None => Vec::new(),
    };
    let key = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        pair_err(match e {
            rustls::Error::InconsistentKeys(_) => {
                "the private key does not belong to the certificate".to_owned()
            }
            other => other.to_string(),
        })
    })?;
    Ok(Entry {
        key: Arc::new(key),
        names,
    })
}

impl CertStore {
    /// Loads every pair; any error is fatal (used at start-up). Blocking file I/O.
    pub fn load(files: &[TlsFiles]) -> Result<Arc<CertStore>, TlsError> {
        if files.is_empty() {
            return Err(TlsError::Config(
                "a TLS listener needs a certificate".into(),
            ));
        }
        let mut entries = Vec::with_capacity(files.len());
        let mut in_use = Vec::with_capacity(files.len());
        for f in files {
            let (fp, entry) = read_pair(f)?;
            entries.push(Arc::new(entry?));
            in_use.push(fp);
        }
        Ok(Arc::new(CertStore {
            files: files.to_vec(),
            current: ArcSwap::from_pointee(entries),
            state: Mutex::new(State {
                rejected: vec![None; in_use.len()],
                in_use,
                status: CertStatus::default(),
            }),
        }))
    }

    /// The certificate and key files.
    pub fn files(&self) -> &[TlsFiles] {
        &self.files
    }

    /// The files to watch for changes: every certificate and key.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.files
            .iter()
            .flat_map(|f| [f.cert.clone(), f.key.clone()])
            .collect()
    }

    /// The status of the last reload.
    pub fn status(&self) -> CertStatus {
        self.lock().status.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads every pair. A changed pair that loads and whose key matches replaces the old
    /// one for new connections (existing connections keep theirs); a broken one is logged and
    /// the last good pair stays. Returns whether anything changed. Blocking file I/O.
    pub fn reload(&self) -> bool {
        let mut st = self.lock();
        st.status.checks += 1;
        let mut next: Vec<Arc<Entry>> = self.current.load().as_ref().clone();
        let mut changed = false;
        let mut errors: Vec<String> = Vec::new();
        for (i, f) in self.files.iter().enumerate() {
            let (fp, entry) = match read_pair(f) {
                Ok(x) => x,
                Err(e) => {
                    errors.push(e.to_string());
                    tracing::error!("certificate reload failed, keeping the last good pair: {e}");
                    continue;
                }
            };
            if st.in_use.get(i) == Some(&fp) {
                if let Some(r) = st.rejected.get_mut(i) {
                    *r = None;
                }
                continue;
            }
            match entry {
                Ok(entry) => {
                    tracing::info!(cert = %f.cert.display(), names = ?entry.names, "certificate reloaded");
                    if let Some(slot) = next.get_mut(i) {
                        *slot = Arc::new(entry);
                    }
                    if let Some(slot) = st.in_use.get_mut(i) {
                        *slot = fp;
                    }
                    if let Some(r) = st.rejected.get_mut(i) {
                        *r = None;
                    }
                    changed = true;
                }
                Err(e) => {
                    if st.rejected.get(i).copied().flatten() != Some(fp) {
                        tracing::error!(
                            "certificate reload rejected, keeping the last good pair: {e}"
                        );
                    }
                    if let Some(r) = st.rejected.get_mut(i) {
                        *r = Some(fp);
                    }
                    errors.push(e.to_string());
                }
            }
        }
        if changed {
            self.current.store(Arc::new(next));
            st.status.generation += 1;
        }
        st.status.last_error = (!errors.is_empty()).then(|| errors.join("; "));
        changed
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let entries = self.current.load();
        if let Some(sni) = hello.server_name() {
            let sni = sni.trim_end_matches('.').to_ascii_lowercase();
            if let Some(e) = entries.iter().find(|e| e.matches(&sni)) {
                return Some(e.key.clone());
            }
        }
        entries.first().map(|e| e.key.clone())
    }
}

/// A rustls server configuration serving `store`'s certificates: TLS 1.3 and 1.2, ALPN `h2`
/// and `http/1.1` (only `http/1.1` without `h2`).
pub fn server_config(store: Arc<CertStore>, h2: bool) -> Result<Arc<ServerConfig>, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(super::VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(names: &[&str]) -> Entry {
        // The key is irrelevant to name matching; any loaded pair will do.
        let ck = rcgen::generate_simple_self_signed(vec!["x.test".to_owned()]);
        let ck = match ck {
            Ok(c) => c,
            Err(e) => panic!("rcgen: {e}"),
        };
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let Ok(certified) = CertifiedKey::from_der(vec![ck.cert.der().clone()], key, &provider())
        else {
            panic!("certified key");
        };
        Entry {
            key: Arc::new(certified),
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn sni_name_matching() {
        let e = entry(&["a.test", "*.b.test"]);
        for (sni, want) in [
            ("a.test", true),
            ("x.a.test", false),
            ("x.b.test", true),
            ("b.test", false),
            ("y.x.b.test", false),
            (".b.test", false),
            ("c.test", false),
        ] {
            assert_eq!(e.matches(sni), want, "{sni}");
        }
    }
}
