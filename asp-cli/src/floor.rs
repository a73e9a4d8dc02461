//! `asp bench --floor`: the load test against its floor, in one process and one run. An ASP
//! echo server and a raw WebSocket echo server listen on loopback; N connections × P
//! pipelined small calls run against each for the same time, alternately, on a tokio
//! runtime of the chosen flavor (servers and clients all spawned tasks of it, as a service
//! would run them). The result is ASP's invocations per second as a share of the raw
//! WebSocket's messages per second at the same concurrency, per round, with median and range
//! (README, throughput with many connections).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asp_tokio::asp_proto::codec;
use asp_tokio::asp_proto::frame::{Frame, Invoke, RequestId, Text};
use asp_tokio::tungstenite::client::IntoClientRequest;
use asp_tokio::tungstenite::Message;
use asp_tokio::{
    Args, Client, InvokeOptions, Output, RawValue, Runtime, StreamOptions, Tokio, Tool, ToolContext,
};
use bytes::{Bytes, BytesMut};
use futures::{FutureExt, SinkExt, StreamExt};

/// What to run.
#[derive(Clone, Debug)]
pub struct FloorOpts {
    /// `current_thread` or `multi_thread` (2 workers).
    pub runtime: String,
    pub connections: usize,
    pub pipeline: usize,
    /// Length of each measured run.
    pub duration: Duration,
    /// Rounds; each runs ASP and the raw floor once, alternating which goes first.
    pub rounds: usize,
    /// Size of each call's argument.
    pub size: usize,
    /// Instead of calls: a stream of this many chunks of this many bytes on one connection
    /// (ASP STREAM frames against raw WebSocket messages written with `feed` and one flush),
    /// timed `reps` times per side and round (median).
    pub stream: Option<(usize, usize)>,
    /// Streams timed per side and round.
    pub reps: usize,
}

/// One round's rates.
#[derive(Clone, Copy, Debug)]
pub struct Round {
    /// ASP invocations completed per second.
    pub asp: f64,
    /// Raw WebSocket messages echoed per second.
    pub raw: f64,
}

/// Runs the rounds on a runtime of its own (in a thread of its own, so that the caller's
/// runtime is left alone).
pub async fn run(o: FloorOpts, progress: impl Fn(&str)) -> Result<Vec<Round>, String> {
    let (tx, rx) = futures::channel::oneshot::channel();
    let o2 = o.clone();
    std::thread::Builder::new()
        .name("asp-bench-floor".into())
        .spawn(move || {
            let _ = tx.send(run_blocking(o2));
        })
        .map_err(|e| e.to_string())?;
    let (rounds, log) = rx
        .await
        .map_err(|_| "the bench thread failed".to_string())??;
    for l in log {
        progress(&l);
    }
    Ok(rounds)
}

fn run_blocking(o: FloorOpts) -> Result<(Vec<Round>, Vec<String>), String> {
    let rt = match o.runtime.as_str() {
        "current_thread" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        "multi_thread" => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
        other => {
            return Err(format!(
                "unknown runtime {other} (current_thread, multi_thread)"
            ))
        }
    }
    .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        tokio::spawn(async move {
            let server = asp_tokio::server()
                .bind("127.0.0.1:0".parse().map_err(|_| "address")?)
                .tool(Tool::new("echo", |_c: ToolContext, a: Args| async move {
                    Ok(Output {
                        result: a.0,
                        ..Output::default()
                    })
                }))
                .tool(Tool::new(
                    "stream",
                    |ctx: ToolContext, a: Args| async move {
                        let (n, size): (usize, usize) = a.parse()?;
                        let chunk = Bytes::from(vec![b'x'; size]);
                        for _ in 0..n {
                            ctx.stream(chunk.clone(), StreamOptions::BINARY)
                                .await
                                .map_err(|_| asp_tokio::ToolError::Cancelled)?;
                        }
                        Ok(Output::default())
                    },
                ))
                .start()
                .await
                .map_err(|e| e.to_string())?;
            let raw = raw_server().await?;
            let mut rounds = Vec::new();
            let mut log = Vec::new();
            for r in 0..o.rounds.max(1) {
                // Alternate the order, so that a burst of load on the machine hits both alike.
                let (asp, raw_rate) = match o.stream {
                    Some(s) => stream_rates(&server.url(), &raw, s, o.reps.max(1), r % 2 == 0)
                        .await
                        .map_err(|e| e.to_string())?,
                    None if r % 2 == 0 => {
                        let a = asp_rate(&server.url(), &o).await?;
                        (a, raw_rate(&raw, &o).await?)
                    }
                    None => {
                        let w = raw_rate(&raw, &o).await?;
                        (asp_rate(&server.url(), &o).await?, w)
                    }
                };
                log.push(format!(
                    "round {}: ASP {:.0}/s, raw WebSocket {:.0}/s: {:.0} %",
                    r + 1,
                    asp,
                    raw_rate,
                    100.0 * asp / raw_rate.max(1e-9)
                ));
                rounds.push(Round { asp, raw: raw_rate });
            }
            server.shutdown(Duration::from_secs(1)).await;
            Ok((rounds, log))
        })
        .await
        .map_err(|e| e.to_string())?
    })
}

/// Streams: `reps` streams of `n` chunks of `size` bytes on one ASP connection and on one raw
/// WebSocket, alternating one by one (`asp_first` says which starts), so that load from
/// other processes hits both alike; each side's median rate in chunks per second.
async fn stream_rates(
    url: &str,
    raw: &str,
    (n, size): (usize, usize),
    reps: usize,
    asp_first: bool,
) -> Result<(f64, f64), String> {
    let failed = |e: &dyn std::fmt::Display| e.to_string();
    let client: Client = asp_tokio::client()
        .connect(url)
        .await
        .map_err(|e| failed(&e))?;
    let mut ws = raw_connect(raw).await?;
    let cmd = format!("stream {n} {size}");
    let asp_once = || async {
        let t = Instant::now();
        let mut call = client
            .invoke("stream", &(n, size))
            .map_err(|e| failed(&e))?;
        let mut got = 0;
        while let Some(c) = call.next().await {
            got += c.data.len();
        }
        call.completion().await.map_err(|e| failed(&e))?;
        if got != n * size {
            return Err(format!("ASP stream: {got} bytes of {}", n * size));
        }
        Ok::<f64, String>(n as f64 / t.elapsed().as_secs_f64().max(1e-9))
    };
    // Warm-up.
    asp_once().await?;
    raw_stream(&mut ws, &cmd, n, size).await?;
    let (mut a, mut w) = (Vec::new(), Vec::new());
    for i in 0..reps {
        if (i % 2 == 0) == asp_first {
            a.push(asp_once().await?);
            w.push(raw_stream(&mut ws, &cmd, n, size).await?);
        } else {
            w.push(raw_stream(&mut ws, &cmd, n, size).await?);
            a.push(asp_once().await?);
        }
    }
    client.close().await;
    let _ = ws.close(None).await;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((median(a), median(w)))
}

/// One raw stream: asks the raw server for `n` messages of `size` bytes; chunks per second.
async fn raw_stream(
    ws: &mut <Tokio as Runtime>::Ws,
    cmd: &str,
    n: usize,
    size: usize,
) -> Result<f64, String> {
    let failed = || "a raw WebSocket stream failed".to_string();
    let t = Instant::now();
    ws.send(Message::text(cmd)).await.map_err(|_| failed())?;
    let mut got = 0;
    for _ in 0..n {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => got += b.len(),
            _ => return Err(failed()),
        }
    }
    if got != n * size {
        return Err(failed());
    }
    Ok(n as f64 / t.elapsed().as_secs_f64().max(1e-9))
}

fn argument(size: usize) -> RawValue {
    RawValue::string(&"x".repeat(size))
}

/// ASP: `pipeline` tasks per connection, each calling `echo` one call at a time.
async fn asp_rate(url: &str, o: &FloorOpts) -> Result<f64, String> {
    let mut clients = Vec::new();
    for _ in 0..o.connections {
        let c: Client = asp_tokio::client()
            .connect(url)
            .await
            .map_err(|e| e.to_string())?;
        clients.push(Arc::new(c));
    }
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let args = argument(o.size);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in &clients {
        for _ in 0..o.pipeline.max(1) {
            let (c, done, stop, args) = (c.clone(), done.clone(), stop.clone(), args.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let failed = || "an ASP call failed".to_string();
                    c.invoke_raw("echo", Some(args.clone()), InvokeOptions::default())
                        .map_err(|_| failed())?
                        .completion()
                        .await
                        .map_err(|_| failed())?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<(), String>(())
            }));
        }
    }
    let n = measure(&done, &stop, start, o.duration).await;
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    for c in clients {
        c.close().await;
    }
    Ok(n)
}

/// Counts completions over `duration` after a tenth of it as warm-up; the rate per second.
async fn measure(done: &AtomicU64, stop: &AtomicBool, start: Instant, duration: Duration) -> f64 {
    tokio::time::sleep_until((start + duration / 10).into()).await;
    let (t0, n0) = (Instant::now(), done.load(Ordering::Relaxed));
    tokio::time::sleep(duration).await;
    let (t1, n1) = (Instant::now(), done.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    (n1 - n0) as f64 / (t1 - t0).as_secs_f64().max(1e-9)
}

/// The INVOKE an ASP client sends for the same call, as the raw floor's message.
fn request(size: usize) -> Bytes {
    let mut b = BytesMut::new();
    codec::encode(
        &Frame::Invoke(Invoke {
            id: RequestId(1),
            tool: Text::from_static("echo"),
            args: Some(argument(size)),
            deadline_ms: 0,
            meta: None,
        }),
        &mut b,
    );
    b.freeze()
}

/// The floor: a raw WebSocket per connection keeping `pipeline` messages in flight (one
/// task reads each echo and sends the next), writes coalesced like ASP's.
async fn raw_rate(url: &str, o: &FloorOpts) -> Result<f64, String> {
    let mut conns = Vec::new();
    for _ in 0..o.connections {
        conns.push(raw_connect(url).await?);
    }
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let msg = request(o.size);
    let pipeline = o.pipeline.max(1);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut ws in conns {
        let (done, stop, msg) = (done.clone(), stop.clone(), msg.clone());
        tasks.push(tokio::spawn(async move {
            let failed = || "a raw WebSocket echo failed".to_string();
            for _ in 0..pipeline {
                ws.feed(Message::Binary(msg.clone()))
                    .await
                    .map_err(|_| failed())?;
            }
            ws.flush().await.map_err(|_| failed())?;
            let mut in_flight = pipeline;
            // Answers that have arrived are all read before one flush sends their
            // successors (coalesced writes, as ASP's driver does).
            let mut next = ws.next().await;
            while in_flight > 0 {
                match next {
                    Some(Ok(Message::Binary(_))) => {
                        in_flight -= 1;
                        done.fetch_add(1, Ordering::Relaxed);
                        if !stop.load(Ordering::Relaxed) {
                            ws.feed(Message::Binary(msg.clone()))
                                .await
                                .map_err(|_| failed())?;
                            in_flight += 1;
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => return Err(failed()),
                }
                next = match ws.next().now_or_never() {
                    Some(n) => n,
                    None if in_flight == 0 => break,
                    None => {
                        ws.flush().await.map_err(|_| failed())?;
                        ws.next().await
                    }
                };
            }
            let _ = ws.close(None).await;
            Ok::<(), String>(())
        }));
    }
    let n = measure(&done, &stop, start, o.duration).await;
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(n)
}

/// A raw WebSocket client connection, with the client's default WebSocket settings.
async fn raw_connect(url: &str) -> Result<<Tokio as Runtime>::Ws, String> {
    let rt = Tokio::current();
    let req = url.into_client_request().map_err(|e| e.to_string())?;
    let addr = asp_tokio::host_port(&req).map_err(|e| e.to_string())?;
    let tcp = rt.tcp_connect(addr).await.map_err(|e| e.to_string())?;
    rt.set_nodelay(&tcp).map_err(|e| e.to_string())?;
    let (ws, _) = rt
        .handshake(req, tcp, asp_tokio::default_ws_config())
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// A raw WebSocket echo server on loopback: one task per connection, reading and writing.
async fn raw_server() -> Result<String, String> {
    let rt = Tokio::current();
    let listener = rt
        .bind("127.0.0.1:0".parse().map_err(|_| "address")?)
        .await
        .map_err(|e| e.to_string())?;
    let addr = rt.local_addr(&listener).map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = rt.accept(&listener).await {
            let rt = rt.clone();
            tokio::spawn(async move {
                let _ = rt.set_nodelay(&tcp);
                let Ok(mut ws) = rt
                    .upgrade(tcp, Box::new(accept_all), asp_tokio::default_ws_config())
                    .await
                else {
                    return;
                };
                // Echoes every message that has arrived, then flushes once (coalesced
                // writes, as ASP's driver does).
                let mut next = ws.next().await;
                while let Some(Ok(m)) = next {
                    let failed = match m {
                        Message::Binary(b) => ws.feed(Message::Binary(b)).await.is_err(),
                        // `stream N SIZE`: N messages of SIZE bytes, fed and flushed once.
                        Message::Text(t) => {
                            let mut it = t.as_str().split(' ').skip(1);
                            let mut num = || it.next().and_then(|x| x.parse::<usize>().ok());
                            let (n, size) = (num().unwrap_or(0), num().unwrap_or(0));
                            let chunk = Bytes::from(vec![b'x'; size]);
                            let mut failed = false;
                            for _ in 0..n {
                                if ws.feed(Message::Binary(chunk.clone())).await.is_err() {
                                    failed = true;
                                    break;
                                }
                            }
                            failed
                        }
                        _ => false,
                    };
                    if failed {
                        return;
                    }
                    next = match ws.next().now_or_never() {
                        Some(n) => n,
                        None => {
                            if ws.flush().await.is_err() {
                                return;
                            }
                            ws.next().await
                        }
                    };
                }
            });
        }
    });
    Ok(format!("ws://{addr}/"))
}

/// Accepts every upgrade (the signature is tungstenite's, error type included).
#[allow(clippy::result_large_err)]
fn accept_all(
    _: &asp_tokio::tungstenite::handshake::server::Request,
    r: asp_tokio::tungstenite::handshake::server::Response,
) -> Result<
    asp_tokio::tungstenite::handshake::server::Response,
    asp_tokio::tungstenite::handshake::server::ErrorResponse,
> {
    Ok(r)
}
