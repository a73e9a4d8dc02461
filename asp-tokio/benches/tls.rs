//! `cargo bench -p asp-tokio --bench tls` — ASP over `wss://` next to its TLS floor, in one
//! run, as ratios (the README's TLS table). Release build, tokio multi-thread runtime (2
//! workers), server and client in one process on loopback, rustls on ring, TLS 1.3, one
//! rustls client and server configuration shared by ASP and the floor.
//!
//! - `roundtrip`: INVOKE→COMPLETE of a 64-byte echo over one wss connection, against a raw
//!   tokio-tungstenite echo of INVOKE- and COMPLETE-sized messages over the same TLS config.
//! - `first result`: a fresh connection — TCP + TLS 1.3 + WebSocket upgrade + HELLO + one
//!   call — against TCP + TLS + upgrade + one echoed message; each with a full handshake
//!   (a new client config per connection) and with TLS session resumption (one shared
//!   client config, whose session cache resumes).
//!
//! Rounds alternate ASP and floor so that load from other processes hits both alike; each
//! line gives the median and range of the per-round ratio.

use std::sync::Arc;
use std::time::{Duration, Instant};

use adapter_tests::pki::Ca;
use asp_tokio::rustls::{ClientConfig, ServerConfig};
use asp_tokio::{Args, ClientTls, Output, Tool, ToolContext};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const ROUNDS: usize = 7;
const CALLS: usize = 2_000;
const FRESH: usize = 100;

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// A raw TLS WebSocket echo server on the same rustls config.
async fn raw_server(config: Arc<ServerConfig>, reply: Bytes) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tcp.set_nodelay(true).ok();
            let (acceptor, reply) = (acceptor.clone(), reply.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if let Message::Binary(_) = msg {
                        if ws.send(Message::Binary(reply.clone())).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr.to_string()
}

type RawWs = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

async fn raw_connect(addr: &str, config: Arc<ClientConfig>) -> (RawWs, bool) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).ok();
    let name = asp_tokio::tls::server_name("127.0.0.1").expect("name");
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS");
    let resumed =
        tls.get_ref().1.handshake_kind() == Some(asp_tokio::rustls::HandshakeKind::Resumed);
    let (ws, _) = tokio_tungstenite::client_async(format!("wss://{addr}/"), tls)
        .await
        .expect("upgrade");
    (ws, resumed)
}

async fn raw_echo(ws: &mut RawWs, msg: &Bytes) {
    ws.send(Message::Binary(msg.clone())).await.expect("send");
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(_))) => return,
            Some(Ok(_)) => continue,
            other => panic!("raw echo: {other:?}"),
        }
    }
}

fn summary(name: &str, asp: &[f64], floor: &[f64], unit: &str) {
    let mut ratios: Vec<f64> = asp.iter().zip(floor).map(|(a, f)| a / f).collect();
    ratios.sort_by(|a, b| a.total_cmp(b));
    let med = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "{name:<44} asp {:>8.1} {unit}  floor {:>8.1} {unit}  ratio median {:.2}x  range {:.2}-{:.2}x",
        med(asp),
        med(floor),
        med(&ratios),
        ratios[0],
        ratios[ratios.len() - 1]
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing useful here.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds = env_usize("ASP_TLS_ROUNDS", ROUNDS);
    let calls = env_usize("ASP_TLS_CALLS", CALLS);
    let fresh = env_usize("ASP_TLS_FRESH", FRESH);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ca = Ca::new("bench CA");
        let server_tls = ca.server(&["localhost", "127.0.0.1"]).server_tls();
        let server_config = server_tls.build().expect("server config");
        let client_tls = ca.client_tls();
        let echo = Tool::new("echo", |_c: ToolContext, a: Args| async move {
            Ok(Output {
                result: a.0,
                metrics: Default::default(),
            })
        });
        let server = asp_tokio::server()
            .tls(server_tls)
            .tool(echo)
            .start()
            .await
            .expect("server");
        let url = server.url();
        // INVOKE and COMPLETE of a 64-byte string are about 80 and 90 bytes.
        let request = Bytes::from(vec![b'i'; 80]);
        let reply = Bytes::from(vec![b'c'; 90]);
        let raw_addr = raw_server(server_config, reply).await;
        let payload = "x".repeat(64);

        println!(
            "TLS benchmarks: {rounds} rounds, {calls} round trips and {fresh} fresh connections per round"
        );
        // Round trips on one connection each.
        let client = asp_tokio::client()
            .tls(client_tls.clone())
            .connect(&url)
            .await
            .expect("wss connect");
        let (mut raw, _) = raw_connect(&raw_addr, client_tls.build().expect("config")).await;
        for _ in 0..200 {
            client.invoke("echo", &payload).expect("invoke").completion().await.expect("ok");
            raw_echo(&mut raw, &request).await;
        }
        let (mut a, mut f) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..calls {
                client.invoke("echo", &payload).expect("invoke").completion().await.expect("ok");
            }
            a.push(t.elapsed().as_secs_f64() * 1e6 / calls as f64);
            let t = Instant::now();
            for _ in 0..calls {
                raw_echo(&mut raw, &request).await;
            }
            f.push(t.elapsed().as_secs_f64() * 1e6 / calls as f64);
        }
        summary("roundtrip over wss (per call)", &a, &f, "us");

        // Fresh connections: full handshakes, then resumed ones.
        for resume in [false, true] {
            let shared = client_tls.build().expect("config");
            let (mut a, mut f) = (Vec::new(), Vec::new());
            let mut resumed = 0;
            for _ in 0..rounds {
                let t = Instant::now();
                for _ in 0..fresh {
                    let tls = if resume {
                        ClientTls::from_rustls(shared.clone())
                    } else {
                        client_tls.clone()
                    };
                    let c = asp_tokio::client().tls(tls).connect(&url).await.expect("connect");
                    c.invoke("echo", &payload).expect("invoke").completion().await.expect("ok");
                    drop(c);
                }
                a.push(t.elapsed().as_secs_f64() * 1e6 / fresh as f64);
                let t = Instant::now();
                for _ in 0..fresh {
                    let config = if resume {
                        shared.clone()
                    } else {
                        client_tls.build().expect("config")
                    };
                    let (mut ws, r) = raw_connect(&raw_addr, config).await;
                    resumed += usize::from(r);
                    raw_echo(&mut ws, &request).await;
                    drop(ws);
                }
                f.push(t.elapsed().as_secs_f64() * 1e6 / fresh as f64);
            }
            let name = if resume {
                "first result, TLS session resumed"
            } else {
                "first result, full TLS 1.3 handshake"
            };
            summary(name, &a, &f, "us");
            if resume {
                println!("  (floor connections that resumed: {resumed} of {})", rounds * fresh);
            }
        }
        client.close().await;
        server.shutdown(Duration::from_secs(1)).await;
    });
}
