//! TLS at both ends, with rustls (Pingora's `rustls` feature; no OpenSSL to install).
//!
//! - The listener's certificate: [`CertStore`] serves the chain and key loaded from
//!   `listen.tls_cert` / `listen.tls_key`, and [`CertStore::reload_if_changed`] (called by the
//!   admin runtime every second) swaps in new files when they change on disk. Connections being
//!   served keep the certificate they were opened with; the next handshake gets the new one. A
//!   new pair that does not load is refused and the old one stays.
//! - Upstreams over TLS: [`UpstreamTrust`] is what the peers verify the upstream's certificate
//!   against (a CA file, or the system's roots), loaded once per pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{CertificateDer, ClientHello, ResolvesServerCert};

/// A certificate chain and its key, read from two PEM files.
fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let shown = |p: &Path| p.display().to_string();
    for p in [cert, key] {
        std::fs::metadata(p).map_err(|e| format!("{}: {e}", shown(p)))?;
    }
    let (chain, key_der) = pingora::tls::load_certs_and_key_files(&shown(cert), &shown(key))
        .map_err(|e| format!("{} / {}: {e}", shown(cert), shown(key)))?
        .ok_or_else(|| {
            format!("{} / {}: no certificate in the first, or no private key in the second", shown(cert), shown(key))
        })?;
    pingora::tls::install_default_crypto_provider();
    let provider =
        pingora::tls::CryptoProvider::get_default().ok_or_else(|| "no TLS crypto provider installed".to_owned())?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("{}: the private key cannot be used: {e}", shown(key)))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match().map_err(|e| format!("{} does not match the key in {}: {e}", shown(cert), shown(key)))?;
    Ok(pair)
}

/// The files' contents as last loaded, to notice a change whatever the file system's clock says.
fn fingerprint(cert: &Path, key: &Path) -> Option<(Vec<u8>, Vec<u8>)> {
    Some((std::fs::read(cert).ok()?, std::fs::read(key).ok()?))
}

/// The listener's certificate, swapped in when its files change.
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    loaded: std::sync::Mutex<Option<(Vec<u8>, Vec<u8>)>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").field("cert", &self.cert).field("key", &self.key).finish_non_exhaustive()
    }
}

impl CertStore {
    /// Loads the pair; an error names the file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> Result<CertStore, String> {
        let loaded = fingerprint(cert, key);
        let pair = load_pair(cert, key)?;
        Ok(CertStore {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: ArcSwap::from_pointee(pair),
            loaded: std::sync::Mutex::new(loaded),
        })
    }

    /// Loads the files again if their content changed: `Some(Ok)` when the new pair is live,
    /// `Some(Err)` when it was refused (the old one stays), `None` when nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<(), String>> {
        let now = fingerprint(&self.cert, &self.key);
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if now.is_none() || *loaded == now {
            return None;
        }
        // Remember it either way, so a bad pair is reported once, not every second.
        *loaded = now;
        Some(load_pair(&self.cert, &self.key).map(|pair| self.current.store(Arc::new(pair))))
    }

    /// The certificate chain served now (DER, leaf first).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.load().cert.clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// What an upstream's certificate is verified against.
#[derive(Clone)]
pub struct UpstreamTrust {
    /// For Pingora's peers: the CA file's certificates (`None`: the system's roots).
    pub peer_ca: Option<Arc<pingora::protocols::tls::CaType>>,
    /// The same, DER, for the shadow calls' client (`None`: the system's roots).
    pub roots: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for UpstreamTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTrust").field("roots", &self.roots.len()).finish_non_exhaustive()
    }
}

impl UpstreamTrust {
    /// The CAs of `ca_file`, or the system's roots when there is none.
    pub fn load(ca_file: Option<&Path>) -> Result<UpstreamTrust, String> {
        let Some(path) = ca_file else {
            let roots = pingora::tls::load_native_certs().map_err(|e| format!("the system's CA certificates: {e}"))?;
            return Ok(UpstreamTrust { peer_ca: None, roots });
        };
        let shown = path.display();
        let text = std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?;
        let mut roots = Vec::new();
        for item in rustls_pemfile::certs(&mut text.as_slice()) {
            roots.push(item.map_err(|e| format!("{shown}: not a PEM certificate file: {e}"))?);
        }
        if roots.is_empty() {
            return Err(format!("{shown}: no certificate (expected PEM `BEGIN CERTIFICATE` blocks)"));
        }
        // Check each one parses as a certificate before Pingora's parser (which panics) sees it.
        let mut store = pingora::tls::RootCertStore::empty();
        for der in &roots {
            store.add(der.clone()).map_err(|e| format!("{shown}: a certificate cannot be used as a CA: {e}"))?;
        }
        let wrapped: Vec<pingora::utils::tls::WrappedX509> = roots
            .iter()
            .map(|der| pingora::utils::tls::WrappedX509::new(der.to_vec(), pingora::utils::tls::parse_x509))
            .collect();
        Ok(UpstreamTrust { peer_ca: Some(Arc::from(wrapped.into_boxed_slice())), roots })
    }
}
