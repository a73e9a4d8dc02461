//! ASP over an in-process pipe, to compare with MCP's in-process pipe on equal terms (no
//! sockets, no kernel): an `asp_async::Runtime` on tokio whose "TCP" is `tokio::io::duplex`.
//! The client and the server are the stock `asp-async` ones; the WebSocket (tokio-tungstenite)
//! runs over the pipe, so the bytes are exactly what would go over TCP.

use std::net::SocketAddr;
use std::sync::Arc;

use asp_async::{BoxFuture, Runtime};
use asp_tokio::Tokio;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;

use crate::asp::{tools, AspBench};
use crate::count::{Counters, Counting};
use crate::harness::{connector, Bench, Connect};

type Pipe = Counting<DuplexStream>;

/// Where "dialled" pipes go: the server's accept loop.
pub struct Hub {
    tx: mpsc::UnboundedSender<Pipe>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Pipe>>,
    /// Counts the client's end of every pipe.
    client_counters: Arc<Counters>,
}

#[derive(Clone)]
pub struct PipeRt {
    tokio: Tokio,
    hub: Arc<Hub>,
}

impl PipeRt {
    fn new(client_counters: Arc<Counters>) -> PipeRt {
        let (tx, rx) = mpsc::unbounded_channel();
        PipeRt {
            tokio: Tokio::current(),
            hub: Arc::new(Hub {
                tx,
                rx: tokio::sync::Mutex::new(rx),
                client_counters,
            }),
        }
    }
}

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1))
}

impl Runtime for PipeRt {
    type Listener = Arc<Hub>;
    type Tcp = Pipe;
    type Ws = WebSocketStream<Pipe>;

    asp_async::__tasks_and_time_of!(tokio);

    fn bind(&self, _addr: SocketAddr) -> BoxFuture<'static, std::io::Result<Arc<Hub>>> {
        let hub = self.hub.clone();
        Box::pin(async move { Ok(hub) })
    }

    fn local_addr(&self, _l: &Arc<Hub>) -> std::io::Result<SocketAddr> {
        Ok(addr())
    }

    fn accept<'a>(&self, l: &'a Arc<Hub>) -> BoxFuture<'a, std::io::Result<(Pipe, SocketAddr)>> {
        Box::pin(async move {
            match l.rx.lock().await.recv().await {
                Some(p) => Ok((p, addr())),
                None => std::future::pending().await,
            }
        })
    }

    fn tcp_connect(&self, _addr: String) -> BoxFuture<'static, std::io::Result<Pipe>> {
        let hub = self.hub.clone();
        Box::pin(async move {
            let (client, server) = tokio::io::duplex(64 << 10);
            hub.tx
                .send(Counting::new(server, Arc::new(Counters::default())))
                .map_err(|_| std::io::Error::other("pipe server gone"))?;
            Ok(Counting::new(client, hub.client_counters.clone()))
        })
    }

    fn set_nodelay(&self, _tcp: &Pipe) -> std::io::Result<()> {
        Ok(())
    }

    asp_async::__ws_handshakes!(tokio_tungstenite);
}

/// A client with its own server over a fresh pipe.
struct PipeBench {
    inner: AspBench<PipeRt>,
    counters: Arc<Counters>,
    _server: asp_async::Server<PipeRt>,
}

impl Bench for PipeBench {
    fn call(&self) -> futures::future::BoxFuture<'_, ()> {
        self.inner.call()
    }
    fn stream(&self, n: usize) -> futures::future::BoxFuture<'_, usize> {
        self.inner.stream(n)
    }
    fn counters(&self) -> Option<Arc<Counters>> {
        Some(self.counters.clone())
    }
}

pub fn pipe_connect() -> Connect {
    connector(|_addr: Option<SocketAddr>| async move {
        let counters = Arc::new(Counters::default());
        let rt = PipeRt::new(counters.clone());
        let mut b = asp_async::ServerBuilder::new(rt.clone());
        for t in tools() {
            b = b.tool(t);
        }
        let server = b.start().await.expect("pipe server");
        let client = asp_async::ClientBuilder::new(rt)
            .connect(&format!("ws://127.0.0.1:1{}", asp_async::DEFAULT_PATH))
            .await
            .expect("pipe connect");
        Box::new(PipeBench {
            inner: AspBench::new(client),
            counters,
            _server: server,
        }) as Box<dyn Bench>
    })
}
