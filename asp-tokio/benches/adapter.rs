//! `cargo bench -p asp-tokio --bench adapter`
//!
//! In one run, so the ratios are fair:
//! - `roundtrip/*`: INVOKE→COMPLETE of a small echo tool over ASP, against a raw
//!   tokio-tungstenite echo of the same bytes (an INVOKE-sized message out, a COMPLETE-sized
//!   message back) — the WebSocket floor;
//! - `stream/*`: 10 000 STREAM chunks of 32 bytes, against 10 000 raw 32-byte WebSocket
//!   messages written with `feed` and one `flush` (batched).
//!
//! Each on a multi-thread (2 workers; the headline: the configuration `#[tokio::main]`
//! services run) and a current-thread tokio runtime, every timed loop running as a spawned
//! task, as a service's client would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use asp_proto::codec;
use asp_proto::frame::{Complete, Frame, Invoke, Metrics, RawValue, RequestId, Status, Text};
use asp_tokio::{Args, Output, StreamOptions, Tool, ToolContext, ToolError};
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const CHUNKS: usize = 10_000;
const CHUNK: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

fn runtimes() -> Vec<(&'static str, tokio::runtime::Runtime)> {
    vec![
        (
            "current_thread",
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        ),
        (
            "multi_thread",
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
        ),
    ]
}

async fn asp_server() -> asp_tokio::Server {
    let echo = Tool::new("echo", |_c: ToolContext, a: Args| async move {
        Ok(Output {
            result: a.0,
            metrics: Metrics::default(),
        })
    });
    let stream = Tool::new("stream", |ctx: ToolContext, a: Args| async move {
        let n: usize = a.parse()?;
        let chunk = Bytes::from_static(CHUNK);
        for _ in 0..n {
            ctx.stream(chunk.clone(), StreamOptions::BINARY)
                .await
                .map_err(|_| ToolError::Cancelled)?;
        }
        Ok(Output::default())
    });
    asp_tokio::server()
        .tool(echo)
        .tool(stream)
        .start()
        .await
        .expect("server")
}

/// A raw WebSocket server: echoes each message, or, on a message "stream", sends CHUNKS
/// messages of 32 bytes with feed + one flush.
async fn raw_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tcp.set_nodelay(true).ok();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let reply = Bytes::from(encoded(&complete_frame()));
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Text(t) if t.as_str() == "stream" => {
                            for _ in 0..CHUNKS {
                                if ws
                                    .feed(Message::Binary(Bytes::from_static(CHUNK)))
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                            if ws.flush().await.is_err() {
                                return;
                            }
                        }
                        Message::Binary(_)
                            if ws.send(Message::Binary(reply.clone())).await.is_err() =>
                        {
                            return;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    format!("ws://{addr}/")
}

fn invoke_frame(args: &RawValue) -> Frame {
    Frame::Invoke(Invoke {
        id: RequestId(1),
        tool: Text::from_static("echo"),
        args: Some(args.clone()),
        deadline_ms: 0,
        meta: None,
    })
}

fn complete_frame() -> Frame {
    Frame::Complete(Complete {
        id: RequestId(1),
        status: Status::Ok,
        result: Some(RawValue::string(&"x".repeat(64))),
        metrics: Metrics {
            wall_us: Some(5),
            ..Metrics::default()
        },
    })
}

fn encoded(f: &Frame) -> Vec<u8> {
    let mut b = BytesMut::new();
    codec::encode(f, &mut b);
    b.to_vec()
}

/// Runs `f` as a spawned task of `rt` and returns what it measured: the configuration users
/// deploy (`#[tokio::main]`, client and server as tasks), where on the multi-thread runtime
/// the caller runs on a worker. A caller kept in `block_on` on the main thread pays a parked
/// thread's wake-up per reply, for ASP and the raw echo alike, which hid ASP's own hops.
fn spawned<F>(rt: &tokio::runtime::Runtime, f: F) -> Duration
where
    F: std::future::Future<Output = Duration> + Send + 'static,
{
    rt.block_on(async { tokio::spawn(f).await.expect("bench task") })
}

type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn bench(c: &mut Criterion) {
    let payload = "x".repeat(64);
    let args = RawValue::string(&payload);
    // The headline row first: multi_thread, everything spawned.
    for (name, rt) in runtimes().into_iter().rev() {
        let (server, client, raw_url) = rt.block_on(async {
            let server = asp_server().await;
            let client = asp_tokio::connect(&server.url()).await.expect("connect");
            (server, client, raw_server().await)
        });
        let raw: Arc<futures::lock::Mutex<RawWs>> =
            Arc::new(futures::lock::Mutex::new(rt.block_on(async {
                tokio_tungstenite::connect_async(raw_url.as_str())
                    .await
                    .expect("raw connect")
                    .0
            })));
        let request = Bytes::from(encoded(&invoke_frame(&args)));

        let mut g = c.benchmark_group(format!("roundtrip/{name}"));
        g.measurement_time(Duration::from_secs(4));
        g.bench_function("asp_invoke_complete", |b| {
            b.iter_custom(|iters| {
                let (client, args) = (client.clone(), args.clone());
                spawned(&rt, async move {
                    let t = Instant::now();
                    for _ in 0..iters {
                        client
                            .invoke_raw("echo", Some(args.clone()), Default::default())
                            .expect("invoke")
                            .completion()
                            .await
                            .expect("complete");
                    }
                    t.elapsed()
                })
            })
        });
        g.bench_function("raw_ws_echo", |b| {
            b.iter_custom(|iters| {
                let (raw, request) = (raw.clone(), request.clone());
                spawned(&rt, async move {
                    let mut raw = raw.lock().await;
                    let t = Instant::now();
                    for _ in 0..iters {
                        raw.send(Message::Binary(request.clone()))
                            .await
                            .expect("send");
                        raw.next().await.expect("reply").expect("reply");
                    }
                    t.elapsed()
                })
            })
        });
        g.finish();

        let mut g = c.benchmark_group(format!("stream/{name}"));
        g.throughput(Throughput::Elements(CHUNKS as u64));
        g.sample_size(20);
        g.measurement_time(Duration::from_secs(5));
        g.bench_function("asp_stream_32b", |b| {
            b.iter_custom(|iters| {
                let client = client.clone();
                spawned(&rt, async move {
                    let t = Instant::now();
                    for _ in 0..iters {
                        let mut call = client.invoke("stream", &CHUNKS).expect("invoke");
                        let mut n = 0;
                        while let Some(chunk) = call.next().await {
                            n += chunk.data.len();
                        }
                        assert_eq!(n, CHUNKS * 32);
                        call.completion().await.expect("complete");
                    }
                    t.elapsed()
                })
            })
        });
        g.bench_function("raw_ws_32b_batched", |b| {
            b.iter_custom(|iters| {
                let raw = raw.clone();
                spawned(&rt, async move {
                    let mut raw = raw.lock().await;
                    let t = Instant::now();
                    for _ in 0..iters {
                        raw.send(Message::text("stream")).await.expect("send");
                        for _ in 0..CHUNKS {
                            raw.next().await.expect("msg").expect("msg");
                        }
                    }
                    t.elapsed()
                })
            })
        });
        g.finish();
        rt.block_on(server.shutdown(Duration::from_secs(1)));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
