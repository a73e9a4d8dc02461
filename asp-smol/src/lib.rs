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

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

mod tls_stream;

pub use tls_stream::Stream;

use async_tungstenite::WebSocketStream;
use smol::net::{TcpListener, TcpStream};

pub use asp_async::*;

/// An async-io timer as an [`AsyncTimer`], moved later lazily as tokio's `Sleep` is: async-io's
/// `Timer::set_at` takes the registration out of the reactor and puts a new one in (and wakes
/// the reactor thread), and the driver moves its deadline later with nearly every frame
/// received (the heartbeat, SPEC §6.7). So a later deadline is only recorded; when the
/// registered one is reached early, the timer re-registers for the recorded one instead of
/// firing. An earlier deadline re-registers at once.
#[derive(Debug)]
struct Timer {
    timer: smol::Timer,
    /// When the reactor registration fires; `None` once it has fired (an async-io timer
    /// that fired stays pending until it is set again).
    at: Option<std::time::Instant>,
    /// When the timer fires (no earlier than `at`).
    deadline: std::time::Instant,
}

impl AsyncTimer for Timer {
    fn reset(self: Pin<&mut Self>, deadline: std::time::Instant) {
        let this = self.get_mut();
        this.deadline = deadline;
        if this.at.is_none_or(|at| deadline < at) {
            this.at = Some(deadline);
            this.timer.set_at(deadline);
        }
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            if this.at.is_none() {
                // Fired for the current deadline already; `reset` sets it again.
                return Poll::Pending;
            }
            std::task::ready!(Pin::new(&mut this.timer).poll(cx));
            if this.at.is_some_and(|at| at >= this.deadline) {
                this.at = None;
                return Poll::Ready(());
            }
            this.at = Some(this.deadline);
            this.timer.set_at(this.deadline);
        }
    }
}

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

    fn new_timer(&self, deadline: std::time::Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(Timer {
            timer: smol::Timer::at(deadline),
            at: Some(deadline),
            deadline,
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
