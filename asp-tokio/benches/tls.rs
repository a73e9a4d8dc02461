//! `cargo bench -p asp-tokio --bench tls` — ASP over `wss://` next to its TLS floor, in one
//! run, as ratios (the README's TLS table). Release build, tokio multi-thread runtime (2
//! workers), every measuring loop in a spawned task (as an application's code runs), server
//! and client in one process on loopback, rustls on ring, TLS 1.3, one rustls client and
//! server configuration shared by ASP and the floor.
//!
//! - `roundtrip`: INVOKE→COMPLETE of a 64-byte echo over one wss connection, against a raw
//!   tokio-tungstenite echo of INVOKE- and COMPLETE-sized messages over the same TLS config.
//!   The same two over plain `ws://` in the same rounds say how much of the gap is TLS's:
//!   what TLS adds to ASP's round trip against what it adds to the raw echo's.
//! - `first result`: a fresh connection — TCP + TLS 1.3 + WebSocket upgrade + HELLO + one
//!   call — against TCP + TLS + upgrade + one echoed message; each with a full handshake
//!   (a new client config per connection) and with TLS session resumption (one client config
//!   per side, kept across connections, whose session cache resumes). Resumptions are
//!   counted, not assumed: on the ASP server by its session store's hits, on the floor by
//!   rustls' `handshake_kind`.
//!
//! Calls (and fresh connections) interleave ASP and floor one by one, the order turning each
//! time, so that a burst of load from other processes hits both alike. Each round gives the
//! median (p50) and the mean latency of each side; each line gives the median and range over
//! rounds of the per-round ratio. On a loaded machine the p50 ratio is the steady figure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use adapter_tests::pki::{Ca, CountingSessions};
use asp_tokio::rustls::server::ServerSessionMemoryCache;
use asp_tokio::rustls::{ClientConfig, HandshakeKind, ServerConfig};
use asp_tokio::{Args, Client, ClientTls, Output, ServerTls, Tool, ToolContext};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const ROUNDS: usize = 7;
const CALLS: usize = 2_000;
const FRESH: usize = 100;

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// A raw WebSocket echo server (TLS when `config` is given).
async fn raw_server(config: Option<Arc<ServerConfig>>, reply: Bytes) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = config.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tcp.set_nodelay(true).ok();
            let (acceptor, reply) = (acceptor.clone(), reply.clone());
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(tcp).await {
                            raw_serve(tls, reply).await;
                        }
                    }
                    None => raw_serve(tcp, reply).await,
                }
            });
        }
    });
    addr.to_string()
}

async fn raw_serve<S: AsyncRead + AsyncWrite + Unpin>(io: S, reply: Bytes) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(io).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Binary(_) = msg {
            if ws.send(Message::Binary(reply.clone())).await.is_err() {
                return;
            }
        }
    }
}

type RawWss = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;
type RawWs = WebSocketStream<TcpStream>;

async fn raw_tcp(addr: &str) -> TcpStream {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).ok();
    tcp
}

/// A raw wss client; whether its TLS session was resumed.
async fn raw_wss(addr: &str, config: Arc<ClientConfig>) -> (RawWss, bool) {
    let tcp = raw_tcp(addr).await;
    let name = asp_tokio::tls::server_name("127.0.0.1").expect("name");
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS");
    let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
    let (ws, _) = tokio_tungstenite::client_async(format!("wss://{addr}/"), tls)
        .await
        .expect("upgrade");
    (ws, resumed)
}

async fn raw_ws(addr: &str) -> RawWs {
    let tcp = raw_tcp(addr).await;
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)
        .await
        .expect("upgrade");
    ws
}

async fn raw_echo<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, msg: &Bytes) {
    ws.send(Message::Binary(msg.clone())).await.expect("send");
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(_))) => return,
            Some(Ok(_)) => continue,
            other => panic!("raw echo: {other:?}"),
        }
    }
}

async fn asp_call(client: &Client, payload: &str) {
    client
        .invoke("echo", payload)
        .expect("invoke")
        .completion()
        .await
        .expect("ok");
}

fn med(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One side's per-round figures: the median and the mean of its latencies in µs.
#[derive(Default)]
struct Side {
    p50: Vec<f64>,
    mean: Vec<f64>,
}

impl Side {
    fn round(&mut self, lat: &[f64]) {
        self.p50.push(med(lat));
        self.mean.push(lat.iter().sum::<f64>() / lat.len() as f64);
    }
}

/// (median, min, max) of the per-round ratios `a / f`.
fn ratios(a: &[f64], f: &[f64]) -> (f64, f64, f64) {
    let mut r: Vec<f64> = a.iter().zip(f).map(|(a, f)| a / f).collect();
    r.sort_by(|a, b| a.total_cmp(b));
    (r[r.len() / 2], r[0], r[r.len() - 1])
}

fn summary(name: &str, asp: &Side, floor: &Side) {
    let (m, lo, hi) = ratios(&asp.p50, &floor.p50);
    let (mm, mlo, mhi) = ratios(&asp.mean, &floor.mean);
    println!(
        "{name:<38} p50 asp {:>7.1} us  floor {:>7.1} us  ratio median {m:.2}x range {lo:.2}-{hi:.2}x | mean asp {:>7.1} us  floor {:>7.1} us  ratio {mm:.2}x ({mlo:.2}-{mhi:.2}x)",
        med(&asp.p50),
        med(&floor.p50),
        med(&asp.mean),
        med(&floor.mean),
    );
}

/// The µs an awaited expression took.
macro_rules! timed {
    ($e:expr) => {{
        let t = Instant::now();
        $e;
        t.elapsed().as_secs_f64() * 1e6
    }};
}

struct Setup {
    rounds: usize,
    calls: usize,
    fresh: usize,
}

async fn run(s: Setup) {
    let Setup {
        rounds,
        calls,
        fresh,
    } = s;
    let ca = Ca::new("bench CA");
    let server_tls = ca.server(&["localhost", "127.0.0.1"]).server_tls();
    // One server configuration for ASP and the floor (each server its own copy, so that each
    // keeps its own session store, counted for ASP).
    let base = server_tls.build().expect("server config");
    // The server's TLS session store, counting the sessions it resumed.
    let store = CountingSessions::new(256);
    let mut asp_config = (*base).clone();
    asp_config.session_storage = store.clone();
    let mut raw_config = (*base).clone();
    raw_config.session_storage = ServerSessionMemoryCache::new(256);
    // A new rustls client configuration (an empty session cache: a full handshake).
    let fresh_config = || ca.client_tls().build().expect("client config");

    let echo = || {
        Tool::new("echo", |_c: ToolContext, a: Args| async move {
            Ok(Output {
                result: a.0,
                metrics: Default::default(),
            })
        })
    };
    let server = asp_tokio::server()
        .tls(ServerTls::from_rustls(Arc::new(asp_config)))
        .tool(echo())
        .start()
        .await
        .expect("server");
    let plain_server = asp_tokio::server()
        .tool(echo())
        .start()
        .await
        .expect("plain server");
    let url = server.url();
    // INVOKE and COMPLETE of a 64-byte string are about 80 and 90 bytes.
    let request = Bytes::from(vec![b'i'; 80]);
    let reply = Bytes::from(vec![b'c'; 90]);
    let raw_addr = raw_server(Some(Arc::new(raw_config)), reply.clone()).await;
    let raw_plain_addr = raw_server(None, reply).await;
    let payload = "x".repeat(64);

    println!(
        "TLS benchmarks: {rounds} rounds, {calls} round trips and {fresh} fresh connections per round"
    );
    // Round trips on one connection each, wss and ws.
    let client = asp_tokio::client()
        .tls(ClientTls::from_rustls(fresh_config()))
        .connect(&url)
        .await
        .expect("wss connect");
    let plain = asp_tokio::connect(&plain_server.url())
        .await
        .expect("ws connect");
    let (mut raw, _) = raw_wss(&raw_addr, fresh_config()).await;
    let mut raw_plain = raw_ws(&raw_plain_addr).await;
    for _ in 0..calls / 10 {
        asp_call(&client, &payload).await;
        asp_call(&plain, &payload).await;
        raw_echo(&mut raw, &request).await;
        raw_echo(&mut raw_plain, &request).await;
    }
    // Calls interleave (ASP, floor, ASP over ws, floor over ws; the order turning each
    // time), so that a burst of load from other processes hits all four alike.
    let (mut a, mut f, mut ap, mut fp) = Default::default();
    for _ in 0..rounds {
        let mut lat = [(); 4].map(|_| Vec::with_capacity(calls));
        for i in 0..calls {
            for k in 0..4 {
                let k = (k + i) % 4;
                lat[k].push(match k {
                    0 => timed!(asp_call(&client, &payload).await),
                    1 => timed!(raw_echo(&mut raw, &request).await),
                    2 => timed!(asp_call(&plain, &payload).await),
                    _ => timed!(raw_echo(&mut raw_plain, &request).await),
                });
            }
        }
        Side::round(&mut a, &lat[0]);
        Side::round(&mut f, &lat[1]);
        Side::round(&mut ap, &lat[2]);
        Side::round(&mut fp, &lat[3]);
    }
    let (a, f, ap, fp): (Side, Side, Side, Side) = (a, f, ap, fp);
    summary("roundtrip over wss (per call)", &a, &f);
    summary("roundtrip over ws, same rounds", &ap, &fp);
    let added = |tls: &[f64], plain: &[f64]| -> f64 {
        med(&tls
            .iter()
            .zip(plain)
            .map(|(t, p)| t - p)
            .collect::<Vec<_>>())
    };
    println!(
        "  TLS adds per round trip (p50, median of rounds): asp {:.1} us, raw {:.1} us",
        added(&a.p50, &ap.p50),
        added(&f.p50, &fp.p50)
    );
    client.close().await;
    plain.close().await;

    // Fresh connections: full handshakes, then resumed ones.
    for resume in [false, true] {
        // One configuration per side, so that the two servers' tickets do not mix in one
        // cache (both are "127.0.0.1").
        let (asp_shared, raw_shared) = (fresh_config(), fresh_config());
        let (mut a, mut f) = (Side::default(), Side::default());
        let (mut raw_resumed, asp_before) = (0, store.resumed());
        for _ in 0..rounds {
            let (mut la, mut lf) = (Vec::with_capacity(fresh), Vec::with_capacity(fresh));
            for i in 0..fresh {
                for k in [i % 2, 1 - i % 2] {
                    if k == 0 {
                        let config = if resume {
                            asp_shared.clone()
                        } else {
                            fresh_config()
                        };
                        la.push(timed!({
                            let c = asp_tokio::client()
                                .tls(ClientTls::from_rustls(config))
                                .connect(&url)
                                .await
                                .expect("connect");
                            asp_call(&c, &payload).await;
                            drop(c);
                        }));
                    } else {
                        let config = if resume {
                            raw_shared.clone()
                        } else {
                            fresh_config()
                        };
                        lf.push(timed!({
                            let (mut ws, r) = raw_wss(&raw_addr, config).await;
                            raw_resumed += usize::from(r);
                            raw_echo(&mut ws, &request).await;
                            drop(ws);
                        }));
                    }
                }
            }
            a.round(&la);
            f.round(&lf);
        }
        let asp_resumed = store.resumed() - asp_before;
        let name = if resume {
            "first result, TLS session resumed"
        } else {
            "first result, full TLS 1.3 handshake"
        };
        summary(name, &a, &f);
        println!(
            "  (connections that resumed a TLS session: asp {asp_resumed}, floor {raw_resumed}, of {} each)",
            rounds * fresh
        );
    }
    server.shutdown(Duration::from_secs(1)).await;
    plain_server.shutdown(Duration::from_secs(1)).await;
}

fn main() {
    // `cargo test --benches` runs this with no arguments but `--list`-style probes exit.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let setup = Setup {
        rounds: env_usize("ASP_TLS_ROUNDS", ROUNDS),
        calls: env_usize("ASP_TLS_CALLS", CALLS),
        fresh: env_usize("ASP_TLS_FRESH", FRESH),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // The measuring code runs in a spawned task, as an application's does (not in
    // `block_on` on the main thread, whose every wake-up is a parked-thread unpark).
    rt.block_on(async { tokio::spawn(run(setup)).await.expect("bench task") });
}
