//! Counting bytes on the wire.
//!
//! - [`Proxy`]: a TCP proxy on 127.0.0.1 that counts the bytes of every connection it carries,
//!   in both directions, and the connections themselves. It runs on its own thread (its own
//!   current-thread tokio runtime), so it works for any client runtime (tokio, smol) and any
//!   protocol. It adds a hop, so it is used only for the byte-count runs, never for latency.
//! - [`Counting`]: an `AsyncRead + AsyncWrite` wrapper that counts the bytes through one
//!   in-process stream (the MCP `tokio::io::duplex` pipe, which has no socket to proxy).
//!
//! Both count payload bytes (what the application hands to the kernel, or to the pipe): TCP/IP
//! headers, SYN/FIN/ACK segments are not included.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Byte and connection counters, shared with whoever reads them.
#[derive(Debug, Default)]
pub struct Counters {
    /// Client → server bytes.
    pub up: AtomicU64,
    /// Server → client bytes.
    pub down: AtomicU64,
    /// Connections opened.
    pub conns: AtomicU64,
}

/// A point-in-time copy of [`Counters`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    pub up: u64,
    pub down: u64,
    pub conns: u64,
}

impl Counters {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            up: self.up.load(Ordering::Acquire),
            down: self.down.load(Ordering::Acquire),
            conns: self.conns.load(Ordering::Acquire),
        }
    }
}

impl std::ops::Sub for Snapshot {
    type Output = Snapshot;
    fn sub(self, o: Snapshot) -> Snapshot {
        Snapshot {
            up: self.up - o.up,
            down: self.down - o.down,
            conns: self.conns - o.conns,
        }
    }
}

/// The proxy thread's runtime, started on first use.
fn proxy_runtime() -> &'static tokio::runtime::Handle {
    static RT: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    RT.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("count-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                tx.send(rt.handle().clone()).expect("send handle");
                rt.block_on(std::future::pending::<()>());
            })
            .expect("proxy thread");
        rx.recv().expect("proxy handle")
    })
}

/// A counting TCP proxy in front of `target`.
pub struct Proxy {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub fn start(target: SocketAddr) -> Proxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("proxy addr");
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let task = proxy_runtime().spawn(async move {
            let listener = TcpListener::from_std(std_listener).expect("proxy listener");
            while let Ok((client, _)) = listener.accept().await {
                c.conns.fetch_add(1, Ordering::AcqRel);
                let c = c.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = pump(cr, sw, c.clone(), true);
                    let down = pump(sr, cw, c, false);
                    let _ = tokio::join!(up, down);
                });
            }
        });
        Proxy {
            addr,
            counters,
            task,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `BENCH_MCP_DUMP=1` prints everything the proxy carries (to see what a call looks like).
fn dump() -> bool {
    static DUMP: OnceLock<bool> = OnceLock::new();
    *DUMP.get_or_init(|| std::env::var_os("BENCH_MCP_DUMP").is_some())
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    c: Arc<Counters>,
    up: bool,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if dump() {
            eprintln!(
                "--- {} {n} bytes ---\n{}",
                if up {
                    "client → server"
                } else {
                    "server → client"
                },
                String::from_utf8_lossy(&buf[..n]).escape_debug()
            );
        }
        if up {
            c.up.fetch_add(n as u64, Ordering::AcqRel);
        } else {
            c.down.fetch_add(n as u64, Ordering::AcqRel);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Counts the bytes read (server → client, `down`) and written (client → server, `up`)
/// through a client-side stream.
pub struct Counting<S> {
    inner: S,
    counters: Arc<Counters>,
}

impl<S> Counting<S> {
    pub fn new(inner: S, counters: Arc<Counters>) -> Self {
        counters.conns.fetch_add(1, Ordering::AcqRel);
        Counting { inner, counters }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.counters.down.fetch_add(n as u64, Ordering::AcqRel);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.counters.up.fetch_add(*n as u64, Ordering::AcqRel);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
