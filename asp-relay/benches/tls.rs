//! `cargo bench -p asp-relay --bench tls` — the relay hop over an HTTPS upstream against a
//! direct HTTPS call to the same function, in one run (the README's TLS table).
//!
//! The function: hyper over rustls (ring, TLS 1.3, ALPN `h2` and `http/1.1`) answering
//! `POST /invoke` with a short text body. Direct: a pooled hyper-rustls client POSTs the
//! same JSON body the relay sends. Relay: an ASP client on a plain `ws://` edge (so that only
//! the upstream side is TLS) invokes a tool, the relay POSTs over its pooled HTTPS client.
//! Calls interleave the two one by one; per round the median (p50) and mean latency of each,
//! then the median and range over rounds of the per-round ratio, and the median difference.
//! Tokio multi-thread runtime (2 workers), the measuring code in a spawned task, release.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use adapter_tests::pki::Ca;
use asp_proto::Bytes;
use asp_relay::{Relay, RelayConfig};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

async fn https_function(ca: &Ca) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let config = ca
        .server(&["localhost", "127.0.0.1"])
        .server_tls()
        .build_with_alpn(&[b"h2", b"http/1.1"])
        .expect("TLS");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tcp.set_nodelay(true).ok();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        let mut r = Response::new(Full::new(Bytes::from_static(b"pong")));
                        r.headers_mut()
                            .insert("content-type", "text/plain".parse().expect("value"));
                        Ok::<_, Infallible>(r)
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    format!("https://127.0.0.1:{port}")
}

fn med(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds = env_usize("ASP_TLS_ROUNDS", 7);
    let calls = env_usize("ASP_TLS_CALLS", 2_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // The measuring code runs in a spawned task, as an application's does.
    rt.block_on(async { tokio::spawn(run(rounds, calls)).await.expect("bench task") });
}

async fn run(rounds: usize, calls: usize) {
    let ca = Ca::new("bench CA");
    let upstream = https_function(&ca).await;
    let mut c = RelayConfig::new(upstream.parse().expect("url"));
    c.upstream_tls = ca.client_tls();
    c.format = asp_relay::BodyFormat::Json;
    let relay = Relay::start(c).await.expect("relay");
    let client = asp_tokio::connect(&relay.url()).await.expect("connect");

    // Built as the relay builds its upstream client (TCP_NODELAY: without it Nagle's
    // algorithm and delayed ACKs hold HTTP/2's small frames for tens of milliseconds).
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*ca.client_tls().build().expect("TLS")).clone())
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let direct: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
    let body =
        Bytes::from_static(br#"{"connection_id":"c1","request_id":1,"tool":"ping","args":"x"}"#);
    let uri: hyper::Uri = format!("{upstream}/invoke").parse().expect("uri");
    let call_direct = || {
        let req = Request::post(uri.clone())
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .expect("request");
        let direct = direct.clone();
        async move {
            let resp = direct.request(req).await.expect("direct call");
            let _ = resp.into_body().collect().await.expect("body");
        }
    };
    let call_relay = || async {
        client
            .invoke("ping", "x")
            .expect("invoke")
            .completion()
            .await
            .expect("relay call");
    };
    for _ in 0..200 {
        call_direct().await;
        call_relay().await;
    }
    // Calls interleave one by one, the order turning each time, so that a burst of load
    // from other processes hits both alike; per round the median (p50) and the mean.
    let (mut r50, mut d50, mut rmean, mut dmean) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let (mut r, mut d) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
        for i in 0..calls {
            for relay_turn in [i % 2 == 0, i % 2 == 1] {
                let t = Instant::now();
                if relay_turn {
                    call_relay().await;
                    r.push(t.elapsed().as_secs_f64() * 1e6);
                } else {
                    call_direct().await;
                    d.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
        }
        r50.push(med(&r));
        d50.push(med(&d));
        rmean.push(r.iter().sum::<f64>() / calls as f64);
        dmean.push(d.iter().sum::<f64>() / calls as f64);
    }
    // (median, min, max) of the per-round ratios and the median per-round difference.
    let summary = |r: &[f64], d: &[f64]| {
        let mut ratios: Vec<f64> = r.iter().zip(d).map(|(a, b)| a / b).collect();
        ratios.sort_by(|a, b| a.total_cmp(b));
        let diffs: Vec<f64> = r.iter().zip(d).map(|(a, b)| a - b).collect();
        format!(
            "relay {:.1} us  direct HTTPS {:.1} us  added {:.1} us  ratio median {:.2}x range {:.2}-{:.2}x",
            med(r),
            med(d),
            med(&diffs),
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1]
        )
    };
    println!("relay over HTTPS: {rounds} rounds of {calls} calls each way, interleaved");
    println!("relay hop, HTTPS upstream, p50   {}", summary(&r50, &d50));
    println!(
        "relay hop, HTTPS upstream, mean  {}",
        summary(&rmean, &dmean)
    );
    client.close().await;
    relay.shutdown(Duration::from_secs(1)).await;
}
