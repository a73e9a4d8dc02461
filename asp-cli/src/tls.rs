//! TLS options of the `asp` tool: trust and identity for `wss://` URLs (client commands),
//! certificate and key for `asp serve`, and reloading that certificate on SIGHUP.

use std::path::PathBuf;

use asp_tokio::{ClientTls, Roots, ServerTls};

/// Built-in trust anchors for `wss://` (`--roots`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
pub enum RootsArg {
    /// The operating system's trust store (falls back to webpki when it is empty).
    #[default]
    Platform,
    /// Mozilla's roots compiled into `asp` (webpki-roots).
    Webpki,
}

/// TLS options of the client commands (`tools`, `call`, `bench`) for `wss://` URLs.
#[derive(clap::Args, Debug, Default)]
pub struct ClientTlsArgs {
    /// Trust the CA certificates in this PEM file (instead of the built-in roots) for wss://.
    #[arg(long, global = true, value_name = "FILE", display_order = 910)]
    pub ca: Option<PathBuf>,
    /// Built-in roots for wss:// when no --ca is given.
    #[arg(long, global = true, value_enum, default_value_t, display_order = 911)]
    pub roots: RootsArg,
    /// Client certificate chain (PEM) presented to servers that require one (mutual TLS).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        requires = "client_key",
        display_order = 912
    )]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        requires = "client_cert",
        display_order = 913
    )]
    pub client_key: Option<PathBuf>,
    /// Send this TLS server name (SNI) and verify the certificate against it instead of the
    /// URL's host.
    #[arg(long, global = true, value_name = "NAME", display_order = 914)]
    pub tls_server_name: Option<String>,
}

impl ClientTlsArgs {
    /// The client TLS settings these options describe.
    pub fn client_tls(&self) -> Result<ClientTls, String> {
        let mut tls = ClientTls::new().roots(match self.roots {
            RootsArg::Platform => Roots::Platform,
            RootsArg::Webpki => Roots::Webpki,
        });
        if let Some(ca) = &self.ca {
            tls = tls
                .roots(Roots::Empty)
                .ca_pem_file(ca)
                .map_err(|e| format!("--ca: {e}"))?;
        }
        if let (Some(c), Some(k)) = (&self.client_cert, &self.client_key) {
            tls = tls
                .identity_pem_files(c, k)
                .map_err(|e| format!("--client-cert/--client-key: {e}"))?;
        }
        if let Some(n) = &self.tls_server_name {
            tls = tls.server_name(n.clone());
        }
        Ok(tls)
    }
}

/// TLS options of `asp serve`.
#[derive(clap::Args, Debug, Default)]
pub struct ServeTlsArgs {
    /// Serve wss:// with this certificate chain (PEM); reloaded on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates issued by the CAs in this PEM file (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
}

impl ServeTlsArgs {
    /// The server TLS settings, if TLS was asked for.
    pub fn server_tls(&self) -> Result<Option<ServerTls>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let mut tls = ServerTls::from_pem_files(cert, key)
            .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
        if let Some(ca) = &self.client_ca {
            tls = tls
                .client_ca_pem_file(ca)
                .map_err(|e| format!("--client-ca: {e}"))?;
        }
        Ok(Some(tls))
    }
}

/// SIGHUP, as a stream of reload requests (never fires where there is no SIGHUP).
pub struct Hangups {
    #[cfg(unix)]
    sig: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    /// Listens for SIGHUP.
    pub fn new() -> Hangups {
        Hangups {
            #[cfg(unix)]
            sig: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    /// The next SIGHUP.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.sig {
            if s.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

impl Default for Hangups {
    fn default() -> Self {
        Hangups::new()
    }
}
