//! # asp-smol — the Agent Socket Protocol on smol
//!
//! The same public shape as `asp-tokio`: [`Smol`] implements [`asp_async::Runtime`] with
//! smol's executor, timers and sockets and async-tungstenite's WebSocket; the client,
//! server and tool API is `asp-async`'s, re-exported with the runtime filled in.
//!
//! ```no_run
//! use asp_smol::{Args, Output, Tool, ToolContext};
//!
//! smol::block_on(async {
//!     let echo = Tool::new("echo", |_ctx: ToolContext, args: Args| async move {
//!         Ok(Output { result: args.0, metrics: Default::default() })
//!     });
//!     let server = asp_smol::server().tool(echo).start().await.unwrap();
//!     let client = asp_smol::connect(&server.url()).await.unwrap();
//!     let done = client.invoke("echo", "hi").unwrap().completion().await.unwrap();
//!     println!("{:?}", done.status);
//! });
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::net::SocketAddr;

mod tls_stream;

pub use tls_stream::Stream;

use async_tungstenite::WebSocketStream;
use smol::net::{TcpListener, TcpStream};

pub use asp_async::*;

/// smol's global executor, as an [`asp_async::Runtime`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Smol;

impl Runtime for Smol {
    type Listener = TcpListener;
    type Tcp = Stream;
    type Ws = WebSocketStream<Stream>;

    fn spawn(&self, fut: BoxFuture<'static, ()>) {
        smol::spawn(fut).detach();
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            smol::Timer::at(deadline).await;
        })
    }

    fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, std::io::Result<TcpListener>> {
        Box::pin(TcpListener::bind(addr))
    }

    fn local_addr(&self, l: &TcpListener) -> std::io::Result<SocketAddr> {
        l.local_addr()
    }

    fn accept<'a>(
        &self,
        l: &'a TcpListener,
    ) -> BoxFuture<'a, std::io::Result<(Stream, SocketAddr)>> {
        Box::pin(async move {
            let (tcp, peer) = l.accept().await?;
            Ok((Stream::Plain(tcp), peer))
        })
    }

    fn tcp_connect(&self, addr: String) -> BoxFuture<'static, std::io::Result<Stream>> {
        Box::pin(async move { TcpStream::connect(addr).await.map(Stream::Plain) })
    }

    fn set_nodelay(&self, tcp: &Stream) -> std::io::Result<()> {
        tcp.tcp().set_nodelay(true)
    }

    // The TLS and WebSocket handshakes, the same for every adapter (`asp_async::adapter`).
    asp_async::__tls_handshakes!(tls_stream);
    asp_async::__ws_handshakes!(async_tungstenite);
}

/// A server on smol.
pub type Server = asp_async::Server<Smol>;
/// A server builder on smol.
pub type ServerBuilder = asp_async::ServerBuilder<Smol>;
/// A client on smol.
pub type Client = asp_async::Client<Smol>;
/// A client builder on smol.
pub type ClientBuilder = asp_async::ClientBuilder<Smol>;

/// A server builder on smol.
pub fn server() -> ServerBuilder {
    ServerBuilder::new(Smol)
}

/// A client builder on smol.
pub fn client() -> ClientBuilder {
    ClientBuilder::new(Smol)
}

/// Connects a client with default options.
pub async fn connect(url: &str) -> Result<Client, Error> {
    client().connect(url).await
}
