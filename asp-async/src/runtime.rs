//! What an adapter must supply: spawning and timers. Everything else (the driver, the
//! client and server logic) is written once, here.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

use crate::config::WsConfig;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A server-side upgrade check, given to the WebSocket handshake (see [`crate::UpgradePolicy`]).
pub type UpgradeCheck = Box<
    dyn FnOnce(
            &tungstenite::handshake::server::Request,
            tungstenite::handshake::server::Response,
        ) -> Result<
            tungstenite::handshake::server::Response,
            tungstenite::handshake::server::ErrorResponse,
        > + Send,
>;

/// Any WebSocket stream of tungstenite messages: tokio-tungstenite's and
/// async-tungstenite's `WebSocketStream` both qualify.
pub trait WsStream:
    futures::Stream<Item = Result<tungstenite::Message, tungstenite::Error>>
    + futures::Sink<tungstenite::Message, Error = tungstenite::Error>
    + Send
    + Unpin
    + 'static
{
}

impl<T> WsStream for T where
    T: futures::Stream<Item = Result<tungstenite::Message, tungstenite::Error>>
        + futures::Sink<tungstenite::Message, Error = tungstenite::Error>
        + Send
        + Unpin
        + 'static
{
}

/// The runtime services the shared code needs: spawning, timers and sockets. `asp-tokio`
/// and `asp-smol` implement it; nothing else in this crate depends on a runtime.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A bound TCP listener.
    type Listener: Send + Sync + 'static;
    /// An accepted TCP connection, before the WebSocket upgrade.
    type Tcp: Send + 'static;
    /// An open WebSocket.
    type Ws: WsStream;

    /// Runs a task in the background.
    fn spawn(&self, fut: BoxFuture<'static, ()>);
    /// Whether a task that streams without ever waiting should now and then give way to the
    /// connection's writer task it woke (see `ToolContext::stream`). Say `true` when a task
    /// woken by a running task cannot run elsewhere until that task yields, although other
    /// threads are idle: tokio's multi-thread scheduler puts it in the waking worker's LIFO
    /// slot, which other workers do not steal. Say `false` (the default) on a single thread,
    /// where yielding only cuts write batches smaller.
    fn yield_to_writer(&self) -> bool {
        false
    }
    /// A future that is pending once and lets the other tasks that are ready run before it
    /// completes, ideally after all of them (tokio's `yield_now`, which the scheduler wakes
    /// only once it has run out of ready tasks). The driver waits on it before writing what
    /// handles queued, so that the other callers of a connection add theirs and all leave in
    /// one write (README, issue 19); only where [`Runtime::yield_to_writer`] says a woken task
    /// would run first. The default wakes the task at once, which puts it at the back of the
    /// run queue on most executors.
    fn yield_now(&self) -> BoxFuture<'static, ()> {
        let mut yielded = false;
        Box::pin(std::future::poll_fn(move |cx| {
            if yielded {
                return std::task::Poll::Ready(());
            }
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }))
    }
    /// The runtime's monotonic clock, the only clock the async layer reads: the core's time
    /// ([`Clock`]), the driver's deadlines and the builders' timeouts all come from it, so a
    /// runtime whose clock is paused or virtual (tokio's `time::pause`) runs the whole layer
    /// on that time, and tests of timeouts need not wait for them. The default reads
    /// `std::time::Instant::now()`.
    fn now(&self) -> std::time::Instant {
        std::time::Instant::now()
    }
    /// A timer that fires at `deadline` (on [`Runtime::now`]'s clock) and can be moved
    /// ([`AsyncTimer::reset`]), as quinn's `Runtime::new_timer`. The driver keeps one per
    /// connection for its whole life and moves it to the core's next deadline: that
    /// deadline moves with nearly every frame received (the heartbeat, SPEC §6.7), and a new
    /// sleep each time (an allocation, a timer registration and a removal) was a measurable
    /// part of a round trip.
    fn new_timer(&self, deadline: std::time::Instant) -> Pin<Box<dyn AsyncTimer>>;
    /// A future that completes at `deadline`: a timer that is never moved, for the one-off
    /// waits (handshake and shutdown timeouts, reconnect backoff).
    fn sleep_until(&self, deadline: std::time::Instant) -> BoxFuture<'static, ()> {
        let mut timer = self.new_timer(deadline);
        Box::pin(std::future::poll_fn(move |cx| timer.as_mut().poll(cx)))
    }
    /// Binds a TCP listener.
    fn bind(
        &self,
        addr: std::net::SocketAddr,
    ) -> BoxFuture<'static, std::io::Result<Self::Listener>>;
    /// The listener's address.
    fn local_addr(&self, listener: &Self::Listener) -> std::io::Result<std::net::SocketAddr>;
    /// Accepts one TCP connection.
    fn accept<'a>(
        &self,
        listener: &'a Self::Listener,
    ) -> BoxFuture<'a, std::io::Result<(Self::Tcp, std::net::SocketAddr)>>;
    /// Opens a TCP connection to `host:port`.
    fn tcp_connect(&self, addr: String) -> BoxFuture<'static, std::io::Result<Self::Tcp>>;
    /// Sets `TCP_NODELAY` (ASP frames are small and latency-bound).
    fn set_nodelay(&self, tcp: &Self::Tcp) -> std::io::Result<()>;
    /// Runs the server side of the WebSocket handshake, consulting `check`.
    fn upgrade(
        &self,
        tcp: Self::Tcp,
        check: UpgradeCheck,
        config: WsConfig,
    ) -> BoxFuture<'static, Result<Self::Ws, tungstenite::Error>>;
    /// Runs the client side of the WebSocket handshake.
    fn handshake(
        &self,
        request: tungstenite::handshake::client::Request,
        tcp: Self::Tcp,
        config: WsConfig,
    ) -> BoxFuture<
        'static,
        Result<(Self::Ws, tungstenite::handshake::client::Response), tungstenite::Error>,
    >;
    /// Runs the server side of a TLS handshake on an accepted connection (see
    /// [`crate::tls`]). A client that sends plaintext instead gets the plain-HTTP answer
    /// [`crate::tls::plaintext_to_tls_response`] and an error. The default: no TLS.
    fn tls_accept(
        &self,
        tcp: Self::Tcp,
        config: std::sync::Arc<rustls::ServerConfig>,
    ) -> BoxFuture<'static, std::io::Result<Self::Tcp>> {
        let _ = (tcp, config);
        Box::pin(async { Err(no_tls()) })
    }
    /// Runs the client side of a TLS handshake to `name`. The default: no TLS.
    fn tls_connect(
        &self,
        tcp: Self::Tcp,
        name: rustls::pki_types::ServerName<'static>,
        config: std::sync::Arc<rustls::ClientConfig>,
    ) -> BoxFuture<'static, std::io::Result<Self::Tcp>> {
        let _ = (tcp, name, config);
        Box::pin(async { Err(no_tls()) })
    }
}

fn no_tls() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "this runtime adapter does not support TLS",
    )
}

/// A timer that can be moved, as quinn's `AsyncTimer`: made by [`Runtime::new_timer`].
pub trait AsyncTimer: Send + std::fmt::Debug + 'static {
    /// Moves the deadline to `deadline` (earlier or later; also after the timer fired). The
    /// task that last polled the timer need not be woken: the driver polls it again after
    /// every reset.
    fn reset(self: Pin<&mut Self>, deadline: std::time::Instant);
    /// `Ready` once the current deadline has passed; never before it (a timer that fired
    /// for an earlier deadline and was since moved later must re-arm, not report `Ready`).
    /// Once it returned `Ready`, callers poll it again only after a `reset`.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
}

/// Maps the runtime's monotonic clock ([`Runtime::now`]) onto `asp_proto::Instant` (µs since
/// an epoch). The core never reads a clock; adapters do, here.
#[derive(Clone)]
pub struct Clock {
    epoch: std::time::Instant,
    /// The runtime's clock; a function rather than the runtime so that [`Clock`] (kept in
    /// the shared, runtime-agnostic connection state) needs no type parameter.
    now: std::sync::Arc<dyn Fn() -> std::time::Instant + Send + Sync>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Clock {
    /// A clock on `rt`'s time ([`Runtime::now`]) whose epoch is now.
    pub fn new<R: Runtime>(rt: &R) -> Clock {
        let rt = rt.clone();
        Clock {
            epoch: rt.now(),
            now: std::sync::Arc::new(move || rt.now()),
        }
    }

    /// The current time for the core.
    pub fn now(&self) -> asp_proto::Instant {
        let elapsed = (self.now)().saturating_duration_since(self.epoch);
        asp_proto::Instant::from_micros(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
    }

    /// A core time as a runtime deadline.
    pub fn to_std(&self, t: asp_proto::Instant) -> std::time::Instant {
        self.epoch + std::time::Duration::from_micros(t.as_micros())
    }
}

/// A single-waiter wake-up flag: handles call [`Notify::notify`] after changing the
/// connection; the writer task awaits [`Notify::notified`]. Notifications coalesce.
#[derive(Default, Debug)]
pub(crate) struct Notify {
    flag: AtomicBool,
    waker: AtomicWaker,
}

impl Notify {
    pub(crate) fn notify(&self) {
        // Already set: whoever set it woke the waiter (or the waiter has not parked since and
        // will see the flag), so a second wake-up is only cost; pumps call this per chunk.
        if !self.flag.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// Sets the flag; returns the waiter's waker when this set it, for the caller to wake
    /// (after releasing the connection lock, see `shared::Guard`).
    pub(crate) fn set(&self) -> Option<std::task::Waker> {
        // A load first: while the flag stays set (the writer has not run yet) a pump per
        // chunk only reads the flag's cache line instead of taking it from the writer's core.
        if self.flag.load(Ordering::Acquire) || self.flag.swap(true, Ordering::AcqRel) {
            return None;
        }
        self.waker.take()
    }

    /// Clears the flag; whether it was set.
    pub(crate) fn take(&self) -> bool {
        self.flag.swap(false, Ordering::AcqRel)
    }

    /// The waker to wake at the next [`Notify::set`]/[`Notify::notify`].
    pub(crate) fn register(&self, w: &std::task::Waker) {
        self.waker.register(w);
    }

    pub(crate) fn notified(&self) -> Notified<'_> {
        Notified(self)
    }
}

pub(crate) struct Notified<'a>(&'a Notify);

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.flag.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.0.waker.register(cx.waker());
        if self.0.flag.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}
