//! The async layer on virtual time: tokio's paused clock (`start_paused`) drives the
//! heartbeat of a real client and a real server, and the test checks the instants the
//! SPEC names, exactly, without waiting for them. This works because the layer reads time
//! only through `Runtime::now` and waits only on `Runtime::new_timer`/`sleep_until`.
//!
//! The transport is in memory, not TCP: with a paused clock tokio advances time whenever
//! every task is idle, and bytes in flight through the kernel's loopback leave tasks idle
//! while they travel, so timers would fire "before" data arrived. Between tokio's in-memory
//! pipes nothing is ever in flight: time moves only when nothing can happen until a
//! deadline, which makes every instant below deterministic.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asp_async::{
    Args, BoxFuture, ClientBuilder, CloseReason, Config, ErrorCode, Runtime, ServerBuilder, Tool,
    ToolContext, ToolError,
};
use asp_proto::HeartbeatMode;
use asp_tokio::Tokio;
use futures::channel::oneshot;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The heartbeat interval `H` of both sides (SPEC §6.7).
const H: Duration = Duration::from_millis(200);

/// A runtime on tokio whose "TCP" connections are in-memory pipes through a [`Link`]
/// that the test can make silent.
#[derive(Clone)]
struct Pipes {
    tokio: Tokio,
    /// Dialled pipes, for the listener.
    dialled: mpsc::UnboundedSender<DuplexStream>,
    listener: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<DuplexStream>>>,
    link: Link,
}

/// Whether the pipes still carry bytes. Once cut, the bytes written by either side are
/// read and dropped: the connection stays open and the peer simply never answers again,
/// as a peer behind a dead route (the case the heartbeat exists for).
#[derive(Clone, Default)]
struct Link(Arc<AtomicBool>);

impl Link {
    fn cut(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Moves bytes from `from` to `to` until either ends, dropping them once cut.
    async fn carry(
        self,
        mut from: tokio::io::ReadHalf<DuplexStream>,
        mut to: tokio::io::WriteHalf<DuplexStream>,
    ) {
        let mut buf = vec![0; 16 << 10];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) if !self.0.load(Ordering::Acquire) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
            }
        }
    }
}

impl Pipes {
    fn new() -> Pipes {
        let (dialled, listener) = mpsc::unbounded_channel();
        Pipes {
            tokio: Tokio::current(),
            dialled,
            listener: Arc::new(tokio::sync::Mutex::new(listener)),
            link: Link::default(),
        }
    }
}

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1))
}

impl Runtime for Pipes {
    type Listener = ();
    type Tcp = DuplexStream;
    type Ws = tokio_tungstenite::WebSocketStream<DuplexStream>;

    // Tokio's tasks and clock (paused in the test below).
    asp_async::__tasks_and_time_of!(tokio);

    fn bind(&self, _addr: SocketAddr) -> BoxFuture<'static, std::io::Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn local_addr(&self, _listener: &()) -> std::io::Result<SocketAddr> {
        Ok(addr())
    }

    fn accept<'a>(&self, _: &'a ()) -> BoxFuture<'a, std::io::Result<(DuplexStream, SocketAddr)>> {
        let listener = self.listener.clone();
        Box::pin(async move {
            match listener.lock().await.recv().await {
                Some(pipe) => Ok((pipe, addr())),
                None => std::future::pending().await,
            }
        })
    }

    fn tcp_connect(&self, _addr: String) -> BoxFuture<'static, std::io::Result<DuplexStream>> {
        let (client, client_link) = tokio::io::duplex(64 << 10);
        let (server_link, server) = tokio::io::duplex(64 << 10);
        let (from_client, to_client) = tokio::io::split(client_link);
        let (from_server, to_server) = tokio::io::split(server_link);
        let link = self.link.clone();
        self.tokio
            .spawn(Box::pin(link.clone().carry(from_client, to_server)));
        self.tokio
            .spawn(Box::pin(link.carry(from_server, to_client)));
        let sent = self.dialled.send(server);
        Box::pin(async move {
            sent.map_err(|_| std::io::Error::other("no listener"))?;
            Ok(client)
        })
    }

    fn set_nodelay(&self, _tcp: &DuplexStream) -> std::io::Result<()> {
        Ok(())
    }

    asp_async::__ws_handshakes!(tokio_tungstenite);
}

fn heartbeat_config() -> Config {
    let mut config = Config::default();
    config.heartbeat = Some(H);
    config.heartbeat_mode = HeartbeatMode::Frames;
    config.resume = false;
    config
}

/// A client and a server with heartbeat `H` stay connected across a hundred intervals of
/// idleness (their PINGs answered), then the link goes silent half an interval after a
/// heartbeat exchange: each side last heard the other at that exchange, and SPEC §6.7 says
/// it declares the peer dead `3 × H` later, which the client observes at exactly that
/// virtual instant. Twenty seconds of protocol time; the test takes milliseconds.
#[tokio::test(start_paused = true)]
async fn heartbeat_timeout_at_the_spec_instant() {
    let rt = Pipes::new();
    // A tool that runs until the protocol ends it, and says when (on virtual time).
    let (ended_tx, ended) = oneshot::channel();
    let ended_tx = Arc::new(Mutex::new(Some(ended_tx)));
    let hold = Tool::new("hold", move |ctx: ToolContext, _args: Args| {
        let ended_tx = ended_tx.clone();
        async move {
            ctx.cancelled().await;
            if let Some(tx) = ended_tx.lock().unwrap().take() {
                let _ = tx.send(Instant::now());
            }
            Err(ToolError::Cancelled)
        }
    });
    let server = ServerBuilder::new(rt.clone())
        .config(heartbeat_config())
        .tool(hold)
        .start()
        .await
        .expect("server");
    let t0 = Instant::now();
    let client = ClientBuilder::new(rt.clone())
        .config(heartbeat_config())
        .connect(&server.url())
        .await
        .expect("connect");
    // No time passes while bytes move: the HELLO exchange happened at t0.
    assert_eq!(Instant::now(), t0);
    assert_eq!(server.connections(), 1);
    let call = client.invoke("hold", &()).expect("invoke");

    // A hundred intervals and a half: heartbeats keep both sides alive. The last exchange
    // was at t0 + 100 H (each side PINGs after H of silence, and is answered at once).
    tokio::time::sleep_until(t0 + H * 100 + H / 2).await;
    assert_eq!(
        server.connections(),
        1,
        "live peers outlast the dead-peer limit"
    );
    assert!(client.session().is_some());
    rt.link.cut();

    let reason = client.closed().await;
    assert_eq!(
        Instant::now(),
        t0 + H * 103,
        "3 × H after the last frame received"
    );
    assert!(
        matches!(&reason, CloseReason::ProtocolError { code, .. } if *code == ErrorCode::HEARTBEAT_TIMEOUT),
        "{reason:?}"
    );

    // The server found the same at the same instant: the connection's close ended the
    // invocation, whose handler was cancelled then.
    assert_eq!(ended.await.expect("the handler ran"), t0 + H * 103);
    assert!(
        call.completion().await.is_err(),
        "the call was lost with the connection"
    );
    server.shutdown(Duration::from_secs(1)).await;
}
