//! TLS on smol: the connection type that is either plain TCP or rustls over TCP
//! (futures-rustls), and the two handshakes the [`Runtime`](asp_async::Runtime) trait asks for.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use asp_async::rustls::pki_types::ServerName;
use asp_async::rustls::{ClientConfig, ServerConfig};
use asp_async::BoxFuture;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use smol::net::TcpStream;

/// A connection: plain TCP (`ws://`), or TLS over TCP as a client (`wss://`) or server.
#[derive(Debug)]
#[non_exhaustive]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// The client side of TLS.
    Client(Box<futures_rustls::client::TlsStream<TcpStream>>),
    /// The server side of TLS.
    Server(Box<futures_rustls::server::TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Client(s) => s.get_ref().0,
            Stream::Server(s) => s.get_ref().0,
        }
    }

    /// Whether TLS runs on this connection.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Stream::Client($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            Stream::Server($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => s.poll_write(cx, buf))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => s.poll_write_vectored(cx, bufs))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_flush(cx))
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_close(cx))
    }
}

/// The server handshake: a client whose first byte is no TLS record gets the plain-HTTP
/// 400 of [`asp_async::tls::plaintext_to_tls_response`] instead of silence.
pub(crate) fn accept(
    tcp: Stream,
    config: Arc<ServerConfig>,
) -> BoxFuture<'static, io::Result<Stream>> {
    Box::pin(async move {
        let Stream::Plain(mut tcp) = tcp else {
            return Err(io::Error::other(
                "TLS is already running on this connection",
            ));
        };
        let mut first = [0u8; 1];
        if tcp.peek(&mut first).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if !asp_async::tls::is_tls_handshake(first[0]) {
            let _ = tcp
                .write_all(&asp_async::tls::plaintext_to_tls_response())
                .await;
            let _ = tcp.close().await;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "plaintext request on a TLS port",
            ));
        }
        let tls = futures_rustls::TlsAcceptor::from(config)
            .accept(tcp)
            .await?;
        Ok(Stream::Server(Box::new(tls)))
    })
}

/// The client handshake to `name`.
pub(crate) fn connect(
    tcp: Stream,
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
) -> BoxFuture<'static, io::Result<Stream>> {
    Box::pin(async move {
        let Stream::Plain(tcp) = tcp else {
            return Err(io::Error::other(
                "TLS is already running on this connection",
            ));
        };
        let tls = futures_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        Ok(Stream::Client(Box::new(tls)))
    })
}
