//! TLS for `wss://`: client trust and identity ([`ClientTls`]), server certificates with
//! reload ([`ServerTls`]), and the handshake failures a user can act on ([`TlsError`]).
//!
//! rustls with the `ring` provider (it builds with only a C compiler), TLS 1.3 and 1.2 only.
//! The adapters do the IO (tokio-rustls, futures-rustls); everything a runtime need not
//! know — which roots, which certificate, what a failure means — is written once here.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};

/// How long a TLS handshake may take before the connection is given up (client and
/// server). A peer that never answers must give an error, not a hang.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a TLS server answers, in plain HTTP, to a client that sent plaintext to its TLS
/// port (the first byte was not a TLS handshake record). Clients of this crate turn it into
/// [`TlsError::PlaintextToTlsPort`]; curl and browsers show the body.
pub const PLAINTEXT_TO_TLS_BODY: &str = "this port speaks TLS: connect with wss:// (or https://)";

/// The ring provider, the one every config of this crate is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 and 1.2 only (rustls supports no older version anyway; said here so a future
/// rustls default cannot widen it).
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Whether the first byte a client sent opens a TLS handshake record (content type 22).
pub fn is_tls_handshake(first_byte: u8) -> bool {
    first_byte == 0x16
}

/// The plain-HTTP answer to a plaintext request on a TLS port.
pub fn plaintext_to_tls_response() -> Vec<u8> {
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        PLAINTEXT_TO_TLS_BODY.len(),
        PLAINTEXT_TO_TLS_BODY
    )
    .into_bytes()
}

/// Where a client's trust anchors come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Roots {
    /// The operating system's trust store (rustls-native-certs: `/etc/ssl/certs` and
    /// `SSL_CERT_FILE`/`SSL_CERT_DIR` on Linux, the keychain on macOS, the Windows store);
    /// when it holds no certificate (a minimal container), Mozilla's roots as with
    /// [`Roots::Webpki`]. The default: what the machine's administrator trusts — including
    /// a company's private CA — is trusted, as curl and browsers on that machine do, and
    /// root removals arrive with OS updates instead of a rebuild.
    #[default]
    Platform,
    /// Mozilla's root program, compiled in (webpki-roots): the same on every machine.
    Webpki,
    /// No built-in roots: only the CAs added with [`ClientTls::ca_pem`] /
    /// [`ClientTls::ca_pem_file`] (a private deployment that trusts nothing else).
    Empty,
}

/// A client's TLS settings for `wss://` URLs. The default (used when a `wss://` URL is
/// given and no settings are) trusts [`Roots::Platform`], sends SNI for the URL's host and
/// presents no client certificate.
#[derive(Clone, Default)]
pub struct ClientTls {
    roots: Roots,
    cas: Vec<CertificateDer<'static>>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    server_name: Option<String>,
    rustls: Option<Arc<ClientConfig>>,
    timeout: Option<Duration>,
    /// The configuration [`build`](ClientTls::build) made, shared by every clone of these
    /// settings (and reset by each setter), so that all connections made with them draw on
    /// one TLS session cache.
    built: Arc<std::sync::OnceLock<Arc<ClientConfig>>>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("roots", &self.roots)
            .field("extra_cas", &self.cas.len())
            .field("client_cert", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// The default settings (see the type).
    pub fn new() -> Self {
        ClientTls::default()
    }

    /// A complete rustls configuration, used as is (roots, identity and versions are then
    /// its own). Keep the same `Arc` across connections for TLS session resumption.
    pub fn from_rustls(config: Arc<ClientConfig>) -> Self {
        ClientTls {
            rustls: Some(config),
            ..ClientTls::default()
        }
    }

    /// Which built-in roots to trust (default [`Roots::Platform`]).
    pub fn roots(mut self, roots: Roots) -> Self {
        self.roots = roots;
        self.built = Arc::default();
        self
    }

    /// Also trusts the CA certificates in `pem`.
    pub fn ca_pem(mut self, pem: &[u8]) -> Result<Self, TlsError> {
        let certs = certs_from_pem(pem, "CA bundle")?;
        self.cas.extend(certs);
        self.built = Arc::default();
        Ok(self)
    }

    /// Also trusts the CA certificates in the PEM file at `path`.
    pub fn ca_pem_file(self, path: impl AsRef<Path>) -> Result<Self, TlsError> {
        let pem = read(path.as_ref())?;
        self.ca_pem(&pem)
    }

    /// Presents this certificate chain and key to servers that ask for one (mutual TLS).
    pub fn identity(
        mut self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Self {
        self.identity = Some((chain, Arc::new(key)));
        self.built = Arc::default();
        self
    }

    /// [`identity`](Self::identity) from PEM files: a certificate chain and a private key
    /// (PKCS#8, PKCS#1 or SEC1).
    pub fn identity_pem_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let (chain, key) = load_pair(cert.as_ref(), key.as_ref())?;
        Ok(self.identity(chain, key))
    }

    /// Sends this name as SNI and verifies the certificate against it, instead of the
    /// URL's host (a server reached by IP address or through a tunnel).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// How long the TLS handshake may take (default [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT)
    }

    pub(crate) fn name_override(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// The rustls configuration these settings describe. Built once and shared by every
    /// clone of these settings: every client given them, and each client's reconnects, draw
    /// on one session cache, so that a new connection to a server already seen resumes its
    /// TLS session (no certificate sent, signed or verified). Settings built anew (a
    /// new `ClientTls`, or a setter called) start with an empty cache.
    pub fn build(&self) -> Result<Arc<ClientConfig>, TlsError> {
        if let Some(c) = &self.rustls {
            return Ok(c.clone());
        }
        // The default settings share one configuration per process: the OS store is read
        // once, and every client's connections resume TLS sessions from one cache.
        if self.cas.is_empty() && self.identity.is_none() && self.roots == Roots::Platform {
            static DEFAULT: std::sync::OnceLock<Arc<ClientConfig>> = std::sync::OnceLock::new();
            if let Some(c) = DEFAULT.get() {
                return Ok(c.clone());
            }
            let c = self.build_new()?;
            return Ok(DEFAULT.get_or_init(|| c).clone());
        }
        if let Some(c) = self.built.get() {
            return Ok(c.clone());
        }
        let c = self.build_new()?;
        Ok(self.built.get_or_init(|| c).clone())
    }

    fn build_new(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let mut store = RootCertStore::empty();
        match self.roots {
            Roots::Platform => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    // One unparsable OS certificate must not take the others down.
                    let _ = store.add(c);
                }
                if store.is_empty() {
                    tracing::debug!("no platform root certificates: using webpki roots");
                    store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                }
            }
            Roots::Webpki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Roots::Empty => {}
        }
        for c in &self.cas {
            store
                .add(c.clone())
                .map_err(|e| TlsError::Config(format!("CA certificate rejected: {e}")))?;
        }
        if store.is_empty() {
            return Err(TlsError::Config(
                "no trusted root certificates (Roots::Empty and no CA added)".into(),
            ));
        }
        let provider = provider();
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(VERSIONS)
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_webpki_verifier(verifier);
        let config = match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| TlsError::Config(format!("client certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// The server name to send and verify for `host` (a DNS name or an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    // `http::Uri` keeps the brackets of an IPv6 literal.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|_| TlsError::Config(format!("{host:?} is not a valid TLS server name")))
}

/// A TLS server's certificate and settings. Clone it to keep a handle: [`reload`]
/// (e.g. on SIGHUP) swaps the certificate for new handshakes while open connections go on.
///
/// [`reload`]: ServerTls::reload
#[derive(Clone)]
pub struct ServerTls {
    slot: Arc<CertSlot>,
    files: Option<(PathBuf, PathBuf)>,
    client_cas: Option<Arc<RootCertStore>>,
    rustls: Option<Arc<ServerConfig>>,
    timeout: Duration,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .field("client_auth", &self.client_cas.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// A certificate chain (leaf first) and its private key.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let key = certified(chain, key)?;
        Ok(ServerTls {
            slot: Arc::new(CertSlot(RwLock::new(Arc::new(key)))),
            files: None,
            client_cas: None,
            rustls: None,
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        })
    }

    /// A certificate chain and key from PEM files; [`reload`](Self::reload) reads them again.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, TlsError> {
        let (cert, key) = (cert.as_ref().to_path_buf(), key.as_ref().to_path_buf());
        let (chain, k) = load_pair(&cert, &key)?;
        let mut tls = ServerTls::new(chain, k)?;
        tls.files = Some((cert, key));
        Ok(tls)
    }

    /// A complete rustls configuration, used as is (no reload).
    pub fn from_rustls(config: Arc<ServerConfig>) -> Self {
        ServerTls {
            slot: Arc::new(CertSlot(RwLock::new(Arc::new(CertifiedKey::new(
                Vec::new(),
                Arc::new(NoKey),
            ))))),
            files: None,
            client_cas: None,
            rustls: Some(config),
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Requires every client to present a certificate issued by one of the CAs in the PEM
    /// file at `path` (mutual TLS).
    pub fn client_ca_pem_file(mut self, path: impl AsRef<Path>) -> Result<Self, TlsError> {
        let pem = read(path.as_ref())?;
        let mut store = RootCertStore::empty();
        for c in certs_from_pem(&pem, "client CA bundle")? {
            store
                .add(c)
                .map_err(|e| TlsError::Config(format!("client CA rejected: {e}")))?;
        }
        self.client_cas = Some(Arc::new(store));
        Ok(self)
    }

    /// How long a client may take over the TLS handshake (default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The handshake timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Reads the PEM files again and serves the new certificate to new handshakes; open
    /// connections keep theirs. On error the old certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let Some((cert, key)) = &self.files else {
            return Err(TlsError::Config(
                "this certificate was not loaded from files".into(),
            ));
        };
        let (chain, k) = load_pair(cert, key)?;
        self.set_certificate(chain, k)
    }

    /// Serves this certificate to new handshakes from now on.
    pub fn set_certificate(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<(), TlsError> {
        let key = certified(chain, key)?;
        *self.slot.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// The rustls configuration: TLS 1.3 and 1.2, ALPN `http/1.1` (the WebSocket upgrade),
    /// the certificate from the reloadable slot.
    pub fn build(&self) -> Result<Arc<ServerConfig>, TlsError> {
        self.build_with_alpn(&[b"http/1.1"])
    }

    /// [`build`](Self::build) with other ALPN protocols (an HTTP server offering `h2`).
    pub fn build_with_alpn(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        if let Some(c) = &self.rustls {
            return Ok(c.clone());
        }
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.client_cas {
            Some(cas) => {
                let v = WebPkiClientVerifier::builder_with_provider(cas.clone(), provider)
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
                builder.with_client_cert_verifier(v)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(self.slot.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// The certificate new handshakes get; swapped by [`ServerTls::reload`].
#[derive(Debug)]
struct CertSlot(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// The placeholder key of a [`ServerTls::from_rustls`] (whose slot is never consulted).
#[derive(Debug)]
struct NoKey;

impl rustls::sign::SigningKey for NoKey {
    fn choose_scheme(
        &self,
        _offered: &[rustls::SignatureScheme],
    ) -> Option<Box<dyn rustls::sign::Signer>> {
        None
    }
    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::SignatureAlgorithm::Anonymous
    }
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    if chain.is_empty() {
        return Err(TlsError::Config("empty certificate chain".into()));
    }
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| TlsError::Config(format!("certificate and key: {e}")))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Config(format!("{}: {e}", path.display())))
}

fn certs_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Config(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Config(format!(
            "{what}: no PEM certificate found"
        )));
    }
    Ok(certs)
}

fn load_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = certs_from_pem(&read(cert)?, &cert.display().to_string())?;
    let key = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| TlsError::Config(format!("{}: {e}", key.display())))?;
    Ok((chain, key))
}

/// A TLS failure, named by the cause a user can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsError {
    /// The local TLS settings are unusable (unreadable PEM, key not matching the
    /// certificate, no roots…).
    Config(String),
    /// The server's certificate is not issued by a trusted CA.
    UntrustedCertificate(String),
    /// The server's certificate is not valid for the name connected to.
    NameMismatch {
        /// The name the client expected.
        expected: String,
        /// The names the certificate holds.
        presented: Vec<String>,
    },
    /// The server's certificate has expired.
    Expired(String),
    /// The server's certificate is not valid yet.
    NotYetValid(String),
    /// The server refused the client's certificate (or the lack of one).
    ClientCertificateRejected(String),
    /// The server does not speak TLS on this port (a TLS client to a plaintext port).
    NotTls(String),
    /// The server speaks TLS on this port and the client sent plaintext.
    PlaintextToTlsPort,
    /// The TLS handshake did not finish in time.
    HandshakeTimeout(Duration),
    /// Another TLS failure.
    Other(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Config(e) => write!(f, "TLS configuration: {e}"),
            TlsError::UntrustedCertificate(e) => write!(
                f,
                "TLS: the server's certificate is not trusted ({e}); add its CA (--ca FILE / ClientTls::ca_pem_file)"
            ),
            TlsError::NameMismatch { expected, presented } => write!(
                f,
                "TLS: the server's certificate is not valid for {expected:?} (it names {})",
                if presented.is_empty() { "no usable name".to_string() } else { presented.join(", ") }
            ),
            TlsError::Expired(e) => write!(f, "TLS: the server's certificate has expired ({e})"),
            TlsError::NotYetValid(e) => {
                write!(f, "TLS: the server's certificate is not valid yet ({e})")
            }
            TlsError::ClientCertificateRejected(e) => write!(
                f,
                "TLS: the server refused the client certificate ({e}); give one with --cert/--key / ClientTls::identity_pem_files"
            ),
            TlsError::NotTls(e) => write!(
                f,
                "TLS: the server does not speak TLS on this port ({e}); use ws:// instead of wss://"
            ),
            TlsError::PlaintextToTlsPort => write!(
                f,
                "the server speaks TLS on this port: use wss:// instead of ws://"
            ),
            TlsError::HandshakeTimeout(d) => {
                write!(f, "TLS: the handshake did not finish within {d:?}")
            }
            TlsError::Other(e) => write!(f, "TLS: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

impl TlsError {
    /// Names the cause of a failed client handshake (the `io::Error` tokio-rustls and
    /// futures-rustls return, which wraps the `rustls::Error`).
    pub fn from_handshake(e: &io::Error) -> TlsError {
        if let Some(r) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return TlsError::from_rustls(r);
        }
        match e.kind() {
            // A plaintext HTTP server closes when the ClientHello does not parse as HTTP.
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => {
                TlsError::NotTls(format!("connection closed during the TLS handshake: {e}"))
            }
            _ => TlsError::Other(e.to_string()),
        }
    }

    /// Names the cause of a rustls error.
    pub fn from_rustls(e: &rustls::Error) -> TlsError {
        use rustls::AlertDescription as A;
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer
                | CertificateError::BadSignature
                | CertificateError::BadEncoding => TlsError::UntrustedCertificate(format!("{c:?}")),
                CertificateError::NotValidForName => TlsError::NameMismatch {
                    expected: String::new(),
                    presented: Vec::new(),
                },
                CertificateError::NotValidForNameContext {
                    expected,
                    presented,
                } => TlsError::NameMismatch {
                    expected: server_name_str(expected),
                    presented: presented.iter().map(|p| bare_name(p)).collect(),
                },
                CertificateError::Expired => TlsError::Expired("expired".into()),
                CertificateError::ExpiredContext { time, not_after } => TlsError::Expired(format!(
                    "not after {} s, now {} s since the Unix epoch",
                    not_after.as_secs(),
                    time.as_secs()
                )),
                CertificateError::NotValidYet => TlsError::NotYetValid("not valid yet".into()),
                CertificateError::NotValidYetContext { time, not_before } => {
                    TlsError::NotYetValid(format!(
                        "not before {} s, now {} s since the Unix epoch",
                        not_before.as_secs(),
                        time.as_secs()
                    ))
                }
                other => TlsError::UntrustedCertificate(format!("{other:?}")),
            },
            rustls::Error::AlertReceived(
                a @ (A::CertificateRequired
                | A::BadCertificate
                | A::UnknownCA
                | A::CertificateUnknown
                | A::CertificateExpired
                | A::CertificateRevoked
                | A::AccessDenied),
            ) => TlsError::ClientCertificateRejected(format!("alert {a:?}")),
            rustls::Error::InvalidMessage(m) => {
                TlsError::NotTls(format!("the server's answer is not TLS: {m:?}"))
            }
            other => TlsError::Other(other.to_string()),
        }
    }
}

/// rustls presents certificate names as `DnsName("x")` / `IpAddress(x)`: the bare name.
fn bare_name(p: &str) -> String {
    for prefix in ["DnsName(", "IpAddress(", "URI("] {
        if let Some(rest) = p.strip_prefix(prefix).and_then(|r| r.strip_suffix(')')) {
            return rest.trim_matches(|c| c == '"' || c == '\\').to_string();
        }
    }
    p.to_string()
}

fn server_name_str(n: &ServerName<'_>) -> String {
    match n {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}
