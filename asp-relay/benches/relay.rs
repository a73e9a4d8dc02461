//! `cargo bench -p asp-relay --bench relay`
//!
//! 1. `relay_hop/*` (criterion): what the relay adds to a call. A small INVOKE through the
//!    relay to a loopback function that answers `ok` (client → WebSocket → relay → HTTP →
//!    function and back), against the same `POST /invoke` (same headers, same MessagePack
//!    body) sent straight to the function with a pooled keep-alive hyper client, and against
//!    an ASP server answering the tool itself (the ASP floor, no HTTP hop). All in one
//!    2-worker tokio runtime.
//!    Then the same three calls alternate 5 000 times (paired samples, robust to load from
//!    other processes) and their medians are printed.
//! 2. Idle memory per relay connection (printed after the criterion groups): the
//!    `asp-relay` binary runs as a child process (bench profile) and this process opens
//!    `ASP_RELAY_IDLE_CONNS` (default 10 000) idle client connections to it; the child's
//!    `VmRSS` (from `/proc/<pid>/status`) is read after a 200-connection warm-up and again
//!    with every connection open. Clients live in this process, so only the relay's memory
//!    is counted. `ASP_RELAY_IDLE_CONNS=0` skips it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use asp_proto::frame::RawValue;
use asp_relay::{Relay, RelayConfig};
use asp_tokio::{Args, Output, Tool, ToolContext};
use bytes::Bytes;
use criterion::Criterion;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// A function that reads the request and answers `ok` (text/plain, Content-Length).
async fn function() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tcp.set_nodelay(true).ok();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
                    r.headers_mut()
                        .insert("content-type", "text/plain".parse().expect("value"));
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

fn hop(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let args = RawValue::string(&"x".repeat(64));
    let (relay, client, direct, asp_server, asp_client, invoke_uri) = rt.block_on(async {
        let addr = function().await;
        let upstream: hyper::Uri = format!("http://{addr}").parse().expect("uri");
        let relay = Relay::start(RelayConfig::new(upstream))
            .await
            .expect("relay");
        let client = asp_tokio::connect(&relay.url()).await.expect("connect");
        let direct =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let ok = Tool::new("ok", |_c: ToolContext, _a: Args| async move {
            Ok(Output::from(RawValue::string("ok")))
        });
        let asp_server = asp_tokio::server().tool(ok).start().await.expect("server");
        let asp_client = asp_tokio::connect(&asp_server.url())
            .await
            .expect("connect");
        let invoke_uri: hyper::Uri = format!("http://{addr}/invoke").parse().expect("uri");
        (relay, client, direct, asp_server, asp_client, invoke_uri)
    });
    let conn_id = client.session().expect("session").connection_id.to_string();
    // The relay's `POST /invoke` for this call (SPEC §15.2), built here by hand.
    let body = {
        let mut b = Vec::new();
        rmp::encode::write_map_len(&mut b, 4).expect("encode");
        rmp::encode::write_str(&mut b, "connection_id").expect("encode");
        rmp::encode::write_str(&mut b, &conn_id).expect("encode");
        rmp::encode::write_str(&mut b, "request_id").expect("encode");
        rmp::encode::write_uint(&mut b, 1).expect("encode");
        rmp::encode::write_str(&mut b, "tool").expect("encode");
        rmp::encode::write_str(&mut b, "ok").expect("encode");
        rmp::encode::write_str(&mut b, "args").expect("encode");
        b.extend_from_slice(args.as_bytes());
        Bytes::from(b)
    };
    let headers = [
        ("content-type", "application/msgpack".to_owned()),
        ("accept", "application/vnd.asp.frames, */*".to_owned()),
        ("te", "trailers".to_owned()),
        ("x-asp-connection-id", conn_id.clone()),
        ("x-asp-request-id", "1".to_owned()),
        ("x-asp-tool", "ok".to_owned()),
    ];

    // The three calls compared, each measured by criterion and then in paired samples.
    let via_relay = || async {
        let mut call = client
            .invoke_raw("ok", Some(args.clone()), Default::default())
            .expect("invoke");
        let chunk = call.next().await.expect("chunk");
        assert_eq!(&chunk.data[..], b"ok");
        call.completion().await.expect("complete")
    };
    let direct_http = || async {
        let mut req = Request::post(invoke_uri.clone());
        for (k, v) in &headers {
            req = req.header(*k, v.as_str());
        }
        let resp = direct
            .request(req.body(Full::new(body.clone())).expect("request"))
            .await
            .expect("response");
        let b = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&b[..], b"ok");
    };
    let asp_server_floor = || async {
        asp_client
            .invoke_raw("ok", Some(args.clone()), Default::default())
            .expect("invoke")
            .completion()
            .await
            .expect("complete")
    };

    let mut g = c.benchmark_group("relay_hop");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("asp_via_relay_to_http_function", |b| {
        b.to_async(&rt).iter(via_relay)
    });
    g.bench_function("http_post_direct_to_function", |b| {
        b.to_async(&rt).iter(direct_http)
    });
    g.bench_function("asp_direct_to_asp_server", |b| {
        b.to_async(&rt).iter(asp_server_floor)
    });
    g.finish();

    // Paired samples: the three calls alternate, so load from other processes on this
    // machine hits all three alike; medians and the median difference are printed.
    if std::env::args().any(|a| a == "--bench") {
        const PAIRS: usize = 5_000;
        let (mut via, mut direct_t, mut floor) = (Vec::new(), Vec::new(), Vec::new());
        rt.block_on(async {
            for _ in 0..PAIRS {
                let t = Instant::now();
                via_relay().await;
                via.push(t.elapsed());
                let t = Instant::now();
                direct_http().await;
                direct_t.push(t.elapsed());
                let t = Instant::now();
                asp_server_floor().await;
                floor.push(t.elapsed());
            }
        });
        let pct = |v: &mut Vec<Duration>, p: usize| {
            v.sort();
            v[v.len() * p / 100].as_secs_f64() * 1e6
        };
        let mut diffs: Vec<f64> = Vec::new();
        for (a, b) in via.iter().zip(&direct_t) {
            diffs.push(a.as_secs_f64() * 1e6 - b.as_secs_f64() * 1e6);
        }
        diffs.sort_by(|a, b| a.total_cmp(b));
        println!(
            "relay_hop paired ({PAIRS} each, µs p50/p90): via relay {:.1}/{:.1}, direct HTTP {:.1}/{:.1}, ASP server {:.1}/{:.1}; relay adds p50 {:.1} µs (median of paired differences)",
            pct(&mut via, 50),
            pct(&mut via, 90),
            pct(&mut direct_t, 50),
            pct(&mut direct_t, 90),
            pct(&mut floor, 50),
            pct(&mut floor, 90),
            diffs[diffs.len() / 2],
        );
    }
    rt.block_on(async {
        relay.shutdown(Duration::from_secs(1)).await;
        asp_server.shutdown(Duration::from_secs(1)).await;
    });
}

/// `VmRSS` of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The soft limit on open files of this process.
fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(1024)
}

fn idle_memory() {
    let wanted: u64 = std::env::var("ASP_RELAY_IDLE_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    if wanted == 0 {
        return;
    }
    let limit = open_files_limit();
    let n = wanted.min(limit.saturating_sub(200));
    if n < wanted {
        println!(
            "idle_memory: the open-files limit is {limit}; measuring {n} connections instead of {wanted} (raise `ulimit -n` for more)"
        );
    }
    const WARM: u64 = 200;
    if n <= WARM {
        println!("idle_memory: skipped, too few file descriptors");
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_asp-relay"))
        .args([
            "--listen",
            "127.0.0.1:0",
            // Never called: idle connections make no function calls (SPEC §15.1).
            "--upstream",
            "http://127.0.0.1:9",
            "--max-connections",
            &(n + 10).to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn asp-relay");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("relay banner");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .expect("relay URL")
        .to_owned();
    let pid = child.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let base = rss_kib(pid);
    let open = |count: u64| {
        let url = url.clone();
        rt.block_on(async move {
            futures::stream::iter(0..count)
                .map(|_| {
                    let url = url.clone();
                    async move { asp_tokio::connect(&url).await.expect("connect") }
                })
                .buffer_unordered(64)
                .collect::<Vec<_>>()
                .await
        })
    };
    let settle = || std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let mut clients = open(WARM);
    settle();
    let warm = rss_kib(pid);
    clients.extend(open(n - WARM));
    let took = t.elapsed();
    settle();
    let full = rss_kib(pid);
    let per_conn = (full.saturating_sub(warm) as f64 * 1024.0) / (n - WARM) as f64;
    println!(
        "idle_memory: relay RSS {:.1} MiB at start, {:.1} MiB with {WARM}, {:.1} MiB with {n} idle connections (opened in {:.1} s)",
        base as f64 / 1024.0,
        warm as f64 / 1024.0,
        full as f64 / 1024.0,
        took.as_secs_f64()
    );
    println!(
        "idle_memory: {:.1} KiB per idle connection; 10 000 connections ≈ {:.0} MiB",
        per_conn / 1024.0,
        (base as f64 * 1024.0 + per_conn * 10_000.0) / (1 << 20) as f64
    );
    drop(clients);
    let _ = child.kill();
    let _ = child.wait();
    drop(rt);
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    hop(&mut c);
    c.final_summary();
    // `cargo test --benches` runs benches in test mode (`--bench` absent): keep that quick.
    if std::env::args().any(|a| a == "--bench") {
        idle_memory();
    }
}
