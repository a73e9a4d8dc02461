//! # asp-tokio — the Agent Socket Protocol on tokio
//!
//! A thin adapter: [`Tokio`] implements [`asp_async::Runtime`] with tokio's tasks, timers
//! and sockets and tokio-tungstenite's WebSocket; the client, server and tool API is
//! `asp-async`'s, re-exported here with the runtime filled in. `asp-smol` has the same shape.
//!
//! ```no_run
//! use asp_tokio::{Output, Tool, ToolContext, Args, ToolError};
//! use futures::StreamExt;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let echo = Tool::new("echo", |ctx: ToolContext, args: Args| async move {
//!     let text: String = args.parse()?;
//!     ctx.stream_text(&text).await.map_err(|_| ToolError::Cancelled)?;
//!     Output::value(&text)
//! });
//! let server = asp_tokio::server().tool(echo).start().await?;
//! let client = asp_tokio::client().connect(&server.url()).await?;
//! let mut call = client.invoke("echo", "hello")?;
//! while let Some(chunk) = call.next().await {
//!     print!("{}", chunk.as_str().unwrap_or(""));
//! }
//! let done = call.completion().await?;
//! println!("\n{:?}", done.status);
//! server.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

mod tls_stream;

pub use tls_stream::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;

pub use asp_async::*;

/// The tokio runtime, as an [`asp_async::Runtime`].
#[derive(Clone, Debug)]
pub struct Tokio {
    handle: tokio::runtime::Handle,
}

impl Tokio {
    /// The runtime of the calling task. Panics outside a tokio runtime, like
    /// `tokio::spawn`.
    pub fn current() -> Tokio {
        Tokio {
            handle: tokio::runtime::Handle::current(),
        }
    }

    /// A specific runtime, usable from any thread (also outside tokio, e.g. from a smol
    /// task): sockets and timers are created on that runtime.
    pub fn from_handle(handle: tokio::runtime::Handle) -> Tokio {
        Tokio { handle }
    }
}

impl Runtime for Tokio {
    type Listener = TcpListener;
    type Tcp = Stream;
    type Ws = WebSocketStream<Stream>;

    fn spawn(&self, fut: BoxFuture<'static, ()>) {
        drop(self.handle.spawn(fut));
    }

    fn yield_to_writer(&self) -> bool {
        // The multi-thread scheduler's LIFO slot (see the trait method).
        matches!(
            self.handle.runtime_flavor(),
            tokio::runtime::RuntimeFlavor::MultiThread
        )
    }

    fn yield_now(&self) -> BoxFuture<'static, ()> {
        // Woken by the scheduler only once it has run out of ready tasks (and polled its I/O
        // driver): every ready caller has queued its frames by then.
        Box::pin(tokio::task::yield_now())
    }

    fn now(&self) -> std::time::Instant {
        // tokio's clock, which a test may pause (`time::pause`, `start_paused`): the async
        // layer then runs on virtual time (it reads no other clock).
        tokio::time::Instant::now().into_std()
    }

    fn new_timer(&self, deadline: std::time::Instant) -> Pin<Box<dyn AsyncTimer>> {
        // Enter the runtime: a `Tokio` made with `from_handle` may be used from a thread
        // outside tokio (a smol client awaiting a tokio server's `shutdown`), and tokio's
        // timer panics when created there. The sleep keeps the handle it was created with.
        let _guard = self.handle.enter();
        Box::pin(Timer(Box::pin(tokio::time::sleep_until(deadline.into()))))
    }

    fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, std::io::Result<TcpListener>> {
        // Run on the runtime: tokio sockets must be registered from inside it, and the
        // caller may be outside (see `new_timer`).
        on_runtime(&self.handle, TcpListener::bind(addr))
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
        on_runtime(&self.handle, async move {
            TcpStream::connect(addr).await.map(Stream::Plain)
        })
    }

    fn set_nodelay(&self, tcp: &Stream) -> std::io::Result<()> {
        tcp.tcp().set_nodelay(true)
    }

    // The TLS and WebSocket handshakes, the same for every adapter (`asp_async::adapter`).
    asp_async::__tls_handshakes!(tls_stream);
    asp_async::__ws_handshakes!(tokio_tungstenite);
}

/// A tokio `Sleep` as an [`AsyncTimer`]. Boxed inside (rather than pin-projected) to keep the
/// crate free of unsafe code: the timer is made once per connection.
#[derive(Debug)]
struct Timer(Pin<Box<tokio::time::Sleep>>);

impl AsyncTimer for Timer {
    fn reset(mut self: Pin<&mut Self>, deadline: std::time::Instant) {
        // A later deadline only records it (tokio re-registers once the old one is reached),
        // which is what makes one timer cheaper than a sleep per deadline.
        self.0.as_mut().reset(deadline.into());
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

/// Runs a socket-creating future as a task of `handle`'s runtime and awaits it from
/// anywhere.
fn on_runtime<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    fut: impl std::future::Future<Output = std::io::Result<T>> + Send + 'static,
) -> BoxFuture<'static, std::io::Result<T>> {
    let task = handle.spawn(fut);
    Box::pin(async move { task.await.map_err(std::io::Error::other)? })
}

/// A server on tokio.
pub type Server = asp_async::Server<Tokio>;
/// A server builder on tokio.
pub type ServerBuilder = asp_async::ServerBuilder<Tokio>;
/// A client on tokio.
pub type Client = asp_async::Client<Tokio>;
/// A client builder on tokio.
pub type ClientBuilder = asp_async::ClientBuilder<Tokio>;

/// A server builder on the current tokio runtime.
pub fn server() -> ServerBuilder {
    ServerBuilder::new(Tokio::current())
}

/// A client builder on the current tokio runtime.
pub fn client() -> ClientBuilder {
    ClientBuilder::new(Tokio::current())
}

/// Connects a client with default options.
pub async fn connect(url: &str) -> Result<Client, Error> {
    client().connect(url).await
}

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
