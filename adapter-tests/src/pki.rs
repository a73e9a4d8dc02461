//! Certificates made at test time (rcgen): a CA, leaves it signs, and the bad ones (a
//! stranger's, a wrong name, expired), written as PEM files for the file-based options.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use asp_async::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use asp_async::rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use asp_async::{ClientTls, Roots, ServerTls};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate and its key, as PEM.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// The certificate chain, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl Leaf {
    /// The chain and key as rustls types.
    pub fn der(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        use asp_async::rustls::pki_types::pem::PemObject;
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("test cert PEM");
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("test key PEM");
        (chain, key)
    }

    /// Writes `cert.pem` and `key.pem` into `dir`; returns their paths.
    pub fn write(&self, dir: &std::path::Path, stem: &str) -> (PathBuf, PathBuf) {
        let (c, k) = (
            dir.join(format!("{stem}.crt.pem")),
            dir.join(format!("{stem}.key.pem")),
        );
        std::fs::write(&c, &self.cert_pem).expect("write cert");
        std::fs::write(&k, &self.key_pem).expect("write key");
        (c, k)
    }

    /// A server TLS configuration serving this certificate.
    pub fn server_tls(&self) -> ServerTls {
        let (chain, key) = self.der();
        ServerTls::new(chain, key).expect("server TLS")
    }
}

/// A test certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
}

impl Ca {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA cert");
        let cert_pem = issuer.pem();
        Ca { issuer, cert_pem }
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid now.
    pub fn server(&self, names: &[&str]) -> Leaf {
        self.leaf(names, ExtendedKeyUsagePurpose::ServerAuth, false)
    }

    /// A server certificate for `names` that expired in 2021.
    pub fn expired_server(&self, names: &[&str]) -> Leaf {
        self.leaf(names, ExtendedKeyUsagePurpose::ServerAuth, true)
    }

    /// A client certificate (for mutual TLS).
    pub fn client(&self, name: &str) -> Leaf {
        self.leaf(&[name], ExtendedKeyUsagePurpose::ClientAuth, false)
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose, expired: bool) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        if let Some(n) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, n.as_str());
        }
        params.extended_key_usages = vec![usage];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Client settings trusting only this CA.
    pub fn client_tls(&self) -> ClientTls {
        ClientTls::new()
            .roots(Roots::Empty)
            .ca_pem(self.cert_pem.as_bytes())
            .expect("CA PEM")
    }
}

/// A fresh directory under the system temp dir for one test's PEM files.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "asp-tls-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A server's TLS session store (rustls' in-memory one) that counts the sessions it gave
/// back for resumption: set it as a server configuration's `session_storage`.
#[derive(Debug)]
pub struct CountingSessions {
    inner: Arc<dyn StoresServerSessions>,
    resumed: AtomicUsize,
}

impl CountingSessions {
    /// A store of up to `capacity` sessions.
    pub fn new(capacity: usize) -> Arc<CountingSessions> {
        Arc::new(CountingSessions {
            inner: ServerSessionMemoryCache::new(capacity),
            resumed: AtomicUsize::new(0),
        })
    }

    /// How many sessions it gave back so far.
    pub fn resumed(&self) -> usize {
        self.resumed.load(Ordering::SeqCst)
    }
}

impl StoresServerSessions for CountingSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.put(key, value)
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let v = self.inner.get(key);
        self.resumed
            .fetch_add(usize::from(v.is_some()), Ordering::SeqCst);
        v
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        let v = self.inner.take(key);
        self.resumed
            .fetch_add(usize::from(v.is_some()), Ordering::SeqCst);
        v
    }
    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}
