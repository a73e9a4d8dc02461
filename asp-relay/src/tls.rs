//! TLS in the relay: `https://` upstreams (hyper-rustls; HTTP/2 when the function offers it
//! by ALPN, else HTTP/1.1; the pool keeps connections either way) and the admin API's TLS
//! listener. The client listener's TLS is the ASP server's own
//! ([`asp_async::ServerBuilder::tls`]).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use asp_async::rustls::ServerConfig;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::RelayConfig;

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}

/// The upstream connector: plain TCP for `http://`, rustls for `https://` with the roots of
/// [`RelayConfig::upstream_tls`], offering `h2` and `http/1.1` by ALPN.
pub(crate) fn upstream_connector(
    config: &RelayConfig,
    http: HttpConnector,
) -> io::Result<HttpsConnector<HttpConnector>> {
    let tls = config.upstream_tls.build().map_err(invalid)?;
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http))
}

/// The admin listener's TLS side.
#[derive(Clone)]
pub(crate) struct AdminTls {
    config: Arc<ServerConfig>,
    timeout: Duration,
}

pub(crate) fn admin_acceptor(config: &RelayConfig) -> io::Result<Option<AdminTls>> {
    let Some(tls) = &config.admin_tls else {
        return Ok(None);
    };
    Ok(Some(AdminTls {
        config: tls.build().map_err(invalid)?,
        timeout: tls.timeout(),
    }))
}

impl AdminTls {
    /// The TLS handshake, bounded in time; a plaintext request gets a plain-HTTP 400 that
    /// says to use https://. `None` when the connection is not usable.
    pub(crate) async fn accept(
        &self,
        mut tcp: TcpStream,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let work = async {
            let mut first = [0u8; 1];
            if tcp.peek(&mut first).await.ok()? == 0 {
                return None;
            }
            if !asp_async::tls::is_tls_handshake(first[0]) {
                let _ = tcp
                    .write_all(&asp_async::tls::plaintext_to_tls_response())
                    .await;
                let _ = tcp.shutdown().await;
                return None;
            }
            match tokio_rustls::TlsAcceptor::from(self.config.clone())
                .accept(tcp)
                .await
            {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::debug!(error = %e, "admin TLS handshake failed");
                    None
                }
            }
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .ok()
            .flatten()
    }
}
