//! The relay over TLS: `wss://` at the edge, `https://` upstreams — a Python function
//! (`http.server` + `ssl`, HTTP/1.1) and a Rust one (hyper over rustls, HTTP/2 by ALPN) —
//! with streaming, trailer metrics and pooled upstream connections; an untrusted upstream
//! certificate is a named failure; the admin API over TLS; the `asp-relay` binary reloading
//! its certificate on SIGHUP. Certificates are made at test time (rcgen). Every wait is
//! bounded.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use adapter_tests::pki::{temp_dir, Ca};
use asp_proto::Bytes;
use asp_relay::{Relay, RelayConfig};
use asp_tokio::{Client, ClientBuilder, Error, Status};
use futures::StreamExt;
use http_body_util::BodyExt;
use hyper::body::Frame as BodyFrame;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::sync::mpsc;

use support::{python_function, python_tokens_and_state, wait_line, within, LIMIT};

const NAMES: &[&str] = &["localhost", "127.0.0.1"];

/// Invokes `tool` and collects its text and completion.
async fn run(
    client: &Client,
    tool: &str,
    args: serde_json::Value,
) -> (Vec<String>, Result<asp_tokio::Completion, Error>) {
    let mut call = client.invoke(tool, &args).expect("invoke");
    let mut chunks = Vec::new();
    within("chunks", async {
        while let Some(c) = call.next().await {
            chunks.push(String::from_utf8_lossy(&c.data).into_owned());
        }
    })
    .await;
    (chunks, within("completion", call.completion()).await)
}

/// A relay with TLS on the client side (`wss://`), calling `upstream` with `ca` trusted.
async fn tls_relay(upstream: &str, ca: &Ca, tweak: impl FnOnce(&mut RelayConfig)) -> Relay {
    let mut c = RelayConfig::new(upstream.parse().expect("upstream URL"));
    c.tls = Some(ca.server(NAMES).server_tls());
    c.upstream_tls = ca.client_tls();
    c.format = asp_relay::BodyFormat::Json;
    tweak(&mut c);
    Relay::start(c).await.expect("relay starts")
}

async fn connect(relay: &Relay, ca: &Ca) -> Client {
    let url = relay.url();
    assert!(url.starts_with("wss://"), "{url}");
    within(
        "connect",
        ClientBuilder::new(asp_tokio::Tokio::current())
            .tls(ca.client_tls())
            .connect(&url),
    )
    .await
    .expect("wss connect to the relay")
}

// ───────────────────────────── Python over HTTPS ─────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_function_over_https() {
    let ca = Ca::new("relay test CA");
    let dir = temp_dir("relay-py");
    let (cert, key) = ca.server(NAMES).write(&dir, "function");
    let (_py, port) = python_function(&["--tls".as_ref(), cert.as_os_str(), key.as_os_str()])
        .expect("python3 (the CI installs it)");
    let upstream = format!("https://127.0.0.1:{port}");
    let relay = tls_relay(&upstream, &ca, |_| {}).await;
    let client = connect(&relay, &ca).await;

    python_tokens_and_state(&client, "over TLS").await;

    // A relay that does not trust the function's CA: the call fails, naming the cause.
    let untrusting = tls_relay(&upstream, &ca, |c| {
        c.upstream_tls = Ca::new("another CA").client_tls();
    })
    .await;
    let client2 = connect(&untrusting, &ca).await;
    let (_, r) = run(&client2, "tokens", json!({"n": 1})).await;
    let e = match r {
        Err(Error::Remote(e)) => e,
        other => panic!("expected an ERROR, got {other:?}"),
    };
    let msg = e.message.map(|m| m.as_str().to_owned()).unwrap_or_default();
    assert!(
        msg.contains("certificate") || msg.contains("UnknownIssuer"),
        "names the certificate problem: {msg}"
    );
    client2.close().await;
    untrusting.shutdown(Duration::from_secs(2)).await;
    client.close().await;
    relay.shutdown(Duration::from_secs(2)).await;
    let _ = std::fs::remove_dir_all(dir);
}

// ───────────────────────────── Rust over HTTPS, HTTP/2 ─────────────────────────────

/// A body that yields the given frames with a short pause between them.
struct Paced {
    frames: std::collections::VecDeque<BodyFrame<Bytes>>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl hyper::body::Body for Paced {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Infallible>>> {
        if let Some(s) = &mut self.sleep {
            if s.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        let next = self.frames.pop_front();
        if next.is_some() {
            self.sleep = Some(Box::pin(tokio::time::sleep(Duration::from_millis(2))));
        }
        Poll::Ready(next.map(Ok))
    }
}

/// A function over HTTPS that speaks only HTTP/2 (ALPN `h2`): `tokens {n}` streams n text
/// tokens, then trailers. Reports each request's HTTP version; counts TCP connections.
async fn rust_h2_function(
    ca: &Ca,
) -> (
    String,
    mpsc::UnboundedReceiver<hyper::Version>,
    Arc<AtomicUsize>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let config = ca
        .server(NAMES)
        .server_tls()
        .build_with_alpn(&[b"h2"])
        .expect("TLS config");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (tx, rx) = mpsc::unbounded_channel();
    let conns = Arc::new(AtomicUsize::new(0));
    let conns2 = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            conns2.fetch_add(1, Ordering::SeqCst);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let _ = tx.send(req.version());
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            let v: serde_json::Value = body
                                .ok()
                                .and_then(|b| serde_json::from_slice(&b).ok())
                                .unwrap_or_default();
                            let n = v["args"]["n"].as_u64().unwrap_or(3);
                            let mut frames: std::collections::VecDeque<_> = (0..n)
                                .map(|i| BodyFrame::data(Bytes::from(format!("rs{i} "))))
                                .collect();
                            let mut t = hyper::HeaderMap::new();
                            t.insert("x-cpu-time", "4.5".parse().expect("value"));
                            t.insert("x-output-tokens", n.to_string().parse().expect("value"));
                            frames.push_back(BodyFrame::trailers(t));
                            let mut r = Response::new(Paced {
                                frames,
                                sleep: None,
                            });
                            r.headers_mut().insert(
                                "content-type",
                                "text/plain; charset=utf-8".parse().expect("value"),
                            );
                            Ok::<_, Infallible>(r)
                        }
                    });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (format!("https://127.0.0.1:{port}"), rx, conns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_function_over_https_http2_streams_trailers_and_pools() {
    let ca = Ca::new("relay test CA");
    let (upstream, mut versions, conns) = rust_h2_function(&ca).await;
    let relay = tls_relay(&upstream, &ca, |_| {}).await;
    let client = connect(&relay, &ca).await;
    for round in 0..3 {
        let (chunks, done) = run(&client, "tokens", json!({"n": 5})).await;
        assert_eq!(chunks.concat(), "rs0 rs1 rs2 rs3 rs4 ", "round {round}");
        assert!(chunks.len() >= 2, "streamed: {chunks:?}");
        let done = done.expect("completion");
        assert_eq!(done.status, Status::Ok);
        assert_eq!(done.metrics.cpu_us, Some(4_500), "HTTP/2 trailer");
        assert_eq!(done.metrics.output_tokens, Some(5));
        assert_eq!(
            within("version", versions.recv()).await,
            Some(hyper::Version::HTTP_2),
            "negotiated by ALPN"
        );
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "one pooled upstream connection for sequential calls"
    );
    client.close().await;
    relay.shutdown(Duration::from_secs(2)).await;
}

// ───────────────────────────── the admin API over TLS ─────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_over_tls() {
    let ca = Ca::new("relay test CA");
    let (upstream, _versions, _) = rust_h2_function(&ca).await;
    let relay = tls_relay(&upstream, &ca, |c| {
        c.admin_listen = Some("127.0.0.1:0".parse().expect("addr"));
        c.admin_secret = Some("s3cret".into());
        c.admin_tls = c.tls.clone();
    })
    .await;
    let admin = relay.admin_addr().expect("admin listener");

    // HTTPS with the secret: the API answers (no such connection).
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*ca.client_tls().build().expect("TLS")).clone())
        .https_only()
        .enable_http1()
        .build();
    let http: hyper_util::client::legacy::Client<_, http_body_util::Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
    let req = Request::get(format!("https://{admin}/connections/nope"))
        .header("authorization", "Bearer s3cret")
        .body(http_body_util::Empty::new())
        .expect("request");
    let resp = within("admin over TLS", http.request(req))
        .await
        .expect("HTTPS admin call");
    assert_eq!(resp.status(), 404);

    // Plaintext to the TLS admin port: a plain 400 saying so, not a hang.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(admin)
        .await
        .expect("connect");
    tcp.write_all(b"GET /connections/x HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    within("plaintext answer", tcp.read_to_string(&mut answer))
        .await
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("speaks TLS"), "{answer}");
    relay.shutdown(Duration::from_secs(2)).await;
}

// ───────────────────────────── SIGHUP reload (the binary) ─────────────────────────────

/// The first certificate a TLS handshake with `addr` is served (SNI "localhost"), trusting
/// `trust` only.
async fn served_cert(
    addr: &str,
    trust: &asp_async::ClientTls,
) -> asp_async::rustls::pki_types::CertificateDer<'static> {
    let tcp = within("tcp connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    let name = asp_async::rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = within(
        "TLS handshake",
        tokio_rustls::TlsConnector::from(trust.build().expect("TLS")).connect(name, tcp),
    )
    .await
    .expect("TLS handshake");
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a served certificate")
        .clone()
        .into_owned()
}

/// A running `asp-relay` binary, killed on drop; its stderr lines arrive on a channel.
struct RelayProcess {
    child: std::process::Child,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl RelayProcess {
    /// Sends it SIGHUP (reload the certificate files).
    fn hup(&self) {
        let hup = std::process::Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(hup.success());
    }

    fn wait_for_stderr(&self, what: &str) -> String {
        let end = std::time::Instant::now() + LIMIT;
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            let line = self
                .stderr
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("asp-relay did not print {what:?}"));
            if line.contains(what) {
                return line;
            }
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue 20: `asp-relay --tls-cert --tls-key` reloads its certificate files on SIGHUP. A
/// connection made before the reload keeps going (it calls the function again afterwards);
/// new handshakes, on the client listener and on the TLS admin listener, get the new
/// certificate, from another CA, which a client trusting only the old CA now refuses as
/// untrusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_reloads_its_certificate_on_sighup() {
    use std::io::{BufRead, BufReader};
    let (ca, ca2) = (Ca::new("relay CA"), Ca::new("relay CA 2"));
    let (upstream, _versions, _) = rust_h2_function(&ca).await;
    let dir = temp_dir("relay-hup");
    let ca_file = dir.join("upstream-ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).expect("write");
    let (old_leaf, new_leaf) = (ca.server(NAMES), ca2.server(NAMES));
    let (cert, key) = old_leaf.write(&dir, "relay");
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_owned();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_asp-relay"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--admin-tls",
        ])
        .args(["--upstream", &upstream, "--format", "json"])
        .args(["--upstream-ca", &path(&ca_file)])
        .args(["--tls-cert", &path(&cert), "--tls-key", &path(&key)])
        .env("ASP_RELAY_ADMIN_SECRET", "s3cret")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn asp-relay");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut relay = RelayProcess {
        child,
        stderr: lines,
    };
    // The banner names both listeners.
    let banner = wait_line(&mut relay.child, "listening");
    let url = banner
        .split_whitespace()
        .find(|w| w.starts_with("wss://"))
        .unwrap_or_else(|| panic!("a wss:// URL in {banner:?}"))
        .to_owned();
    let admin = banner
        .split_whitespace()
        .find_map(|w| w.strip_prefix("https://"))
        .unwrap_or_else(|| panic!("an https admin address in {banner:?}"))
        .trim_end_matches(')')
        .to_owned();
    let edge = url
        .strip_prefix("wss://")
        .and_then(|r| r.split('/').next())
        .expect("host:port")
        .to_owned();
    let der = |leaf: &adapter_tests::pki::Leaf| leaf.der().0.remove(0);

    // Before: the old certificate, on both listeners; a client connects and calls.
    assert_eq!(served_cert(&edge, &ca.client_tls()).await, der(&old_leaf));
    assert_eq!(served_cert(&admin, &ca.client_tls()).await, der(&old_leaf));
    let connect_with = |trust: asp_async::ClientTls| {
        let url = url.clone();
        async move {
            within(
                "connect",
                ClientBuilder::new(asp_tokio::Tokio::current())
                    .tls(trust)
                    .connect(&url),
            )
            .await
        }
    };
    let old = connect_with(ca.client_tls()).await.expect("wss connect");
    let (chunks, done) = run(&old, "tokens", json!({"n": 2})).await;
    assert_eq!(chunks.concat(), "rs0 rs1 ");
    assert_eq!(done.expect("completion").status, Status::Ok);

    // New files in place, then SIGHUP.
    new_leaf.write(&dir, "relay");
    relay.hup();
    relay.wait_for_stderr("reloaded the TLS certificate");

    // After: new handshakes get the new certificate, on both listeners.
    assert_eq!(served_cert(&edge, &ca2.client_tls()).await, der(&new_leaf));
    assert_eq!(served_cert(&admin, &ca2.client_tls()).await, der(&new_leaf));
    let new = connect_with(ca2.client_tls()).await.expect("wss connect");
    let (chunks, _) = run(&new, "tokens", json!({"n": 1})).await;
    assert_eq!(chunks.concat(), "rs0 ");
    match connect_with(ca.client_tls()).await {
        Err(Error::Tls(asp_async::TlsError::UntrustedCertificate(_))) => {}
        other => panic!("the old CA no longer verifies the relay: {other:?}"),
    }
    // The connection made before the reload is still up and still calls the function.
    let (chunks, done) = run(&old, "tokens", json!({"n": 3})).await;
    assert_eq!(chunks.concat(), "rs0 rs1 rs2 ");
    assert_eq!(done.expect("completion").status, Status::Ok);

    // A reload that fails (a key that does not parse) keeps the certificate in force.
    std::fs::write(&key, "not a key").expect("write");
    relay.hup();
    relay.wait_for_stderr("TLS reload failed, keeping the old certificate");
    assert_eq!(served_cert(&edge, &ca2.client_tls()).await, der(&new_leaf));

    old.close().await;
    new.close().await;
    drop(relay);
    let _ = std::fs::remove_dir_all(dir);
}
