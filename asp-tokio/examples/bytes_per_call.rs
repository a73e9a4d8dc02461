//! Bytes on the wire per echo call, counted on the socket (README, "ASP vs MCP").
//!
//! `cargo run --release -p asp-tokio --example bytes_per_call`
//!
//! An asp-tokio server with an `echo` tool, a client connected through a counting TCP proxy
//! on 127.0.0.1, 20 warm-up calls, then 200 calls: the TCP payload bytes per call in each
//! direction, next to the ASP frames (header + payload) that make them up. The rest is
//! WebSocket framing: 2 header bytes per message, plus a 4-byte mask on client messages
//! (RFC 6455 §5.2). Run for two argument shapes: the benchmark's `{"text": <64 bytes>}`, and
//! a bare 64-byte string.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use asp_tokio::asp_proto::codec::{encoded_len, HEADER_LEN};
use asp_tokio::asp_proto::frame::{Complete, Invoke, Metrics, RequestId, Status, Text};
use asp_tokio::asp_proto::{Frame, RawValue};
use asp_tokio::{Args, Output, Tool, ToolContext};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PAYLOAD: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The benchmark's arguments, `{"text": …}`.
type EchoArgs = std::collections::BTreeMap<String, String>;

/// Copies `from` → `to`, adding every byte to `count`.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                count.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A one-connection counting proxy in front of `target`; returns its address and the
/// (client → server, server → client) counters.
async fn proxy(
    target: std::net::SocketAddr,
) -> (std::net::SocketAddr, Arc<AtomicU64>, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (u, d) = (up.clone(), down.clone());
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.expect("accept");
        let server = TcpStream::connect(target).await.expect("connect");
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        tokio::spawn(pump(cr, sw, u));
        tokio::spawn(pump(sr, cw, d));
    });
    (addr, up, down)
}

#[tokio::main]
async fn main() {
    let echo = Tool::new("echo", |_ctx: ToolContext, args: Args| async move {
        // The benchmark's shape `{"text": …}`, or a bare string.
        match args.parse::<EchoArgs>() {
            Ok(mut a) => Output::value(&a.remove("text").unwrap_or_default()),
            Err(_) => Ok(Output::from(args.0.unwrap_or_else(RawValue::nil))),
        }
    });
    let server = asp_tokio::server()
        .tool(echo)
        .start()
        .await
        .expect("server");
    for bare in [false, true] {
        let (addr, up, down) = proxy(server.local_addr()).await;
        let url = format!("ws://{addr}/v1/agent-socket");
        let client = asp_tokio::client().connect(&url).await.expect("connect");
        let args = if bare {
            asp_tokio::to_value(&PAYLOAD).expect("args")
        } else {
            asp_tokio::to_value(&EchoArgs::from([("text".to_owned(), PAYLOAD.to_owned())]))
                .expect("args")
        };
        let call = || async {
            let done = client
                .invoke_raw("echo", Some(args.clone()), Default::default())
                .expect("invoke")
                .completion()
                .await
                .expect("completion");
            assert_eq!(done.status, Status::Ok);
        };
        for _ in 0..20 {
            call().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (u0, d0) = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
        const N: u64 = 200;
        for _ in 0..N {
            call().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (u1, d1) = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
        let (u, d) = ((u1 - u0) as f64 / N as f64, (d1 - d0) as f64 / N as f64);

        // The frames themselves, encoded by the core (the COMPLETE with a one-byte `wall_us`,
        // as a fast echo measures).
        let invoke = Frame::Invoke(Invoke {
            id: RequestId(1),
            tool: Text::from_static("echo"),
            args: Some(args.clone()),
            deadline_ms: 0,
            meta: None,
        });
        let complete = Frame::Complete(Complete {
            id: RequestId(1),
            status: Status::Ok,
            result: Some(asp_tokio::to_value(&PAYLOAD).expect("result")),
            metrics: Metrics {
                wall_us: Some(50),
                ..Metrics::default()
            },
        });
        let (fi, fc) = (encoded_len(&invoke), encoded_len(&complete));
        println!(
            "args {}: on the socket {u:.1} + {d:.1} = {:.1} B per call; frames INVOKE {fi} B \
             ({HEADER_LEN} + {}) + COMPLETE {fc} B ({HEADER_LEN} + {}) = {} B; WebSocket framing \
             {:.1} + {:.1} B",
            if bare {
                "a bare 64-byte string"
            } else {
                "{\"text\": 64 bytes}"
            },
            u + d,
            fi - HEADER_LEN,
            fc - HEADER_LEN,
            fi + fc,
            u - fi as f64,
            d - fc as f64,
        );
        drop(client);
    }
    server.shutdown(Duration::from_secs(1)).await;
}
