//! Relay mode (SPEC §15) end to end: a real function server on loopback (hyper, and one in
//! Python's standard library), the relay on 127.0.0.1:0, and an ordinary `asp_tokio` client.
//!
//! `cargo test -p asp-relay --test relay`. Every wait is bounded
//! ([`LIMIT`]); nothing sleeps to synchronize: the function server reports what it saw
//! (requests, aborts, replies) on a channel the tests wait on.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use asp_proto::codec::encode;
use asp_proto::frame::{Frame, Request as RequestFrame, Stream as StreamFrame, ToolDef, ToolOp};
use asp_proto::{Bytes, ErrorCode};
use asp_relay::{Relay, RelayConfig};
use asp_tokio::{Chunk, Client, Error, RawValue, ReplyStatus, RequestId, Status, ToolChange};
use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame as BodyFrame, Incoming};
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use support::{
    listening, python_function, python_tokens_and_state, within, DropProxy, Killed, LIMIT,
};

// ───────────────────────────── the function server ─────────────────────────────

/// What the function server saw.
#[derive(Debug, Clone)]
enum Seen {
    /// An `/invoke` request: its headers and decoded body.
    Invoke {
        headers: HeaderMap,
        body: Box<InvokeBody>,
    },
    /// The relay went away before the function finished answering `request_id`.
    Aborted { tool: String, request_id: u16 },
    /// A `/reply` body.
    Reply(Value),
    /// An `/invoke` body in JSON (a relay with `BodyFormat::Json`), as received.
    Json(String),
}

/// `/invoke` body (SPEC §15.2), MessagePack.
#[derive(Debug, Clone, Deserialize)]
struct InvokeBody {
    connection_id: String,
    request_id: u16,
    tool: String,
    #[serde(default)]
    args: Value,
    #[serde(default)]
    deadline_ms: Option<u32>,
    #[serde(default)]
    meta: Option<Value>,
    #[serde(default)]
    state: Option<Bin>,
}

/// A MessagePack `bin`.
#[derive(Debug, Clone, PartialEq)]
struct Bin(Vec<u8>);

impl<'de> Deserialize<'de> for Bin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Bin, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Bin;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Bin, E> {
                Ok(Bin(v.to_vec()))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// A response body fed from a channel: chunked encoding, trailers, and a closed channel
/// (send error) when the relay goes away.
struct ChannelBody(mpsc::Receiver<BodyFrame<Bytes>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

/// Reports `Aborted` if dropped before `done` (hyper drops the handler when the relay
/// closes the connection).
struct AbortGuard {
    seen: mpsc::UnboundedSender<Seen>,
    tool: String,
    request_id: u16,
    done: bool,
}

impl AbortGuard {
    /// The function answered completely.
    fn finish(mut self) {
        self.done = true;
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.seen.send(Seen::Aborted {
                tool: self.tool.clone(),
                request_id: self.request_id,
            });
        }
    }
}

struct Function {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// Bytes the `flood` tool managed to hand to hyper so far.
    flooded: Arc<AtomicUsize>,
    /// Held invocations (`hold` tool) wait for a message here.
    release: Arc<Mutex<Vec<mpsc::Sender<()>>>>,
    /// TCP connections accepted from the relay.
    accepted: Arc<AtomicUsize>,
}

impl Function {
    async fn start() -> Function {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, seen) = mpsc::unbounded_channel();
        let flooded = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Mutex::new(Vec::new()));
        let state = (tx, flooded.clone(), release.clone());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::AcqRel);
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(function(req, state).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Function {
            addr,
            seen,
            flooded,
            release,
            accepted,
        }
    }

    fn url(&self) -> hyper::Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    /// The next thing seen that `pick` selects (others are skipped).
    async fn wait<T>(&mut self, what: &str, mut pick: impl FnMut(Seen) -> Option<T>) -> T {
        within(what, async {
            loop {
                let s = self.seen.recv().await.expect("function server alive");
                if let Some(t) = pick(s) {
                    return t;
                }
            }
        })
        .await
    }

    async fn aborted(&mut self, tool: &str) -> u16 {
        self.wait(
            &format!("the function to see `{tool}` aborted"),
            |s| match s {
                Seen::Aborted {
                    tool: t,
                    request_id,
                } if t == tool => Some(request_id),
                _ => None,
            },
        )
        .await
    }

    async fn invoked(&mut self, tool: &str) -> (HeaderMap, InvokeBody) {
        self.wait(&format!("an /invoke of `{tool}`"), |s| match s {
            Seen::Invoke { headers, body } if body.tool == tool => Some((headers, *body)),
            _ => None,
        })
        .await
    }
}

type State = (
    mpsc::UnboundedSender<Seen>,
    Arc<AtomicUsize>,
    Arc<Mutex<Vec<mpsc::Sender<()>>>>,
);

fn text_response(
    status: u16,
    content_type: &str,
    headers: &[(&str, String)],
) -> (Response<ChannelBody>, mpsc::Sender<BodyFrame<Bytes>>) {
    let (tx, rx) = mpsc::channel(1);
    let mut r = Response::new(ChannelBody(rx));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    // Hyper sends only the trailer fields announced here (and only to a client that sent
    // `TE: trailers`, as the relay does).
    r.headers_mut().insert(
        "trailer",
        "x-cpu-time, x-output-tokens, x-asp-state".parse().unwrap(),
    );
    for (k, v) in headers {
        r.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    (r, tx)
}

fn data(s: &str) -> BodyFrame<Bytes> {
    BodyFrame::data(Bytes::copy_from_slice(s.as_bytes()))
}

fn trailers(list: &[(&str, String)]) -> BodyFrame<Bytes> {
    let mut h = HeaderMap::new();
    for (k, v) in list {
        h.insert(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    BodyFrame::trailers(h)
}

/// Standard base64 with padding (RFC 4648 §4), as a function sends `X-Asp-State`.
/// Decodes standard base64 (padding optional): the scripted function's bodies.
fn unb64(s: &str) -> Option<Vec<u8>> {
    const SYM: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for c in s.trim_end_matches('=').bytes() {
        acc = acc << 6 | SYM.iter().position(|&x| x == c)? as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn b64(b: &[u8]) -> String {
    const SYM: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            s.push(if i <= c.len() {
                char::from(SYM[(n >> (18 - 6 * i)) as usize & 63])
            } else {
                '='
            });
        }
    }
    s
}

/// The function. Tools, by name:
/// - `tokens {n, delay_ms}`: n text tokens, `X-Cpu-Time` header 1.5 ms and trailer 12.25 ms,
///   `X-Output-Tokens` trailer;
/// - `count`: counts its invocations in the connection's state (header `X-Asp-State`);
/// - `count_trailer`: the same, with the state in a trailer;
/// - `big_state`: sets a 32-byte state;
/// - `fail {status, body}`: that status;
/// - `sleep {ms}`: answers after `ms` (bounded), reporting an abort;
/// - `slow`: a token every 20 ms for up to 10 s, reporting an abort;
/// - `hold`: headers, then waits for `Function::release` (bounded), then ends;
/// - `frames`: a frames body: two STREAM, COMPLETE(failed) with a result and metrics;
/// - `auth`: the `Authorization` header it got, as the body;
/// - `flood {bytes}`: that many bytes as fast as hyper takes them;
/// - `scripted {status, content_type, headers, body, split, trailers}`: exactly that response
///   (`body` base64, sent in pieces of `split` bytes if given; `headers` and `trailers` as
///   `{name: value}`), for the SPEC §15 cases a test spells out byte by byte;
/// - `unknown`: 404.
///
/// A JSON `/invoke` body (`BodyFormat::Json`) is parsed with serde_json's defaults, reported
/// as `Seen::Json` and echoed as the `text/plain` body (`400` if serde_json refuses it).
async fn function(
    req: Request<Incoming>,
    (seen, flooded, release): State,
) -> Response<ChannelBody> {
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let raw = req.into_body().collect().await.unwrap().to_bytes();
    if path == "/reply" {
        let v: Value = rmp_serde::from_slice(&raw).expect("reply body is MessagePack");
        let _ = seen.send(Seen::Reply(v));
        return text_response(204, "text/plain", &[]).0;
    }
    assert_eq!(path, "/invoke");
    if headers["content-type"] == "application/json" {
        let text = String::from_utf8(raw.to_vec()).expect("a JSON body is UTF-8");
        let _ = seen.send(Seen::Json(text.clone()));
        let status = match serde_json::from_str::<Value>(&text) {
            Ok(_) => 200,
            Err(_) => 400,
        };
        let (r, tx) = text_response(status, "text/plain", &[]);
        tokio::spawn(async move {
            let _ = tx.send(data(&text)).await;
        });
        return r;
    }
    let body: InvokeBody = rmp_serde::from_slice(&raw).expect("invoke body is MessagePack");
    let _ = seen.send(Seen::Invoke {
        headers: headers.clone(),
        body: Box::new(body.clone()),
    });
    let arg = |k: &str| body.args.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    let guard = AbortGuard {
        seen: seen.clone(),
        tool: body.tool.clone(),
        request_id: body.request_id,
        done: false,
    };
    match body.tool.as_str() {
        "tokens" => {
            let (r, tx) = text_response(
                200,
                "text/plain; charset=utf-8",
                &[("x-cpu-time", "1.5".into()), ("x-input-tokens", "7".into())],
            );
            let (n, delay) = (arg("n"), arg("delay_ms"));
            tokio::spawn(async move {
                for i in 0..n {
                    if tx.send(data(&format!("tok{i} "))).await.is_err() {
                        return;
                    }
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                }
                let _ = tx
                    .send(trailers(&[
                        ("x-cpu-time", "12.25".into()),
                        ("x-output-tokens", n.to_string()),
                    ]))
                    .await;
                guard.finish();
            });
            r
        }
        "count" | "count_trailer" => {
            let prev = body
                .state
                .as_ref()
                .map_or(0, |b| b.0.first().copied().unwrap_or(0));
            let next = b64(&[prev + 1]);
            let in_trailer = body.tool == "count_trailer";
            let hdrs = if in_trailer {
                vec![]
            } else {
                vec![("x-asp-state", next.clone())]
            };
            let (r, tx) = text_response(200, "text/plain", &hdrs);
            guard.finish();
            tokio::spawn(async move {
                let _ = tx.send(data(&format!("count={}", prev + 1))).await;
                if in_trailer {
                    let _ = tx.send(trailers(&[("x-asp-state", next)])).await;
                }
            });
            r
        }
        "big_state" => {
            let (r, tx) = text_response(200, "text/plain", &[("x-asp-state", b64(&[9; 32]))]);
            guard.finish();
            tokio::spawn(async move {
                let _ = tx.send(data("big")).await;
            });
            r
        }
        "fail" => {
            let status = u16::try_from(arg("status")).unwrap();
            let msg = body
                .args
                .get("body")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned();
            let (r, tx) = text_response(status, "text/plain", &[]);
            guard.finish();
            tokio::spawn(async move {
                if !msg.is_empty() {
                    let _ = tx.send(data(&msg)).await;
                }
            });
            r
        }
        "sleep" => {
            tokio::time::sleep(Duration::from_millis(arg("ms").min(10_000))).await;
            guard.finish();
            let (r, tx) = text_response(200, "text/plain", &[]);
            tokio::spawn(async move {
                let _ = tx.send(data("woke")).await;
            });
            r
        }
        "slow" => {
            let (r, tx) = text_response(200, "text/plain", &[]);
            tokio::spawn(async move {
                for i in 0..500 {
                    if tx.send(data(&format!("s{i} "))).await.is_err() {
                        return; // the guard reports the abort
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                guard.finish();
            });
            r
        }
        "hold" => {
            let (r, tx) = text_response(200, "text/plain", &[]);
            let (go, mut wait) = mpsc::channel(1);
            release.lock().unwrap().push(go);
            tokio::spawn(async move {
                let _ = tx.send(data("held ")).await;
                tokio::select! {
                    _ = tokio::time::timeout(LIMIT, wait.recv()) => {}
                    // The relay closed the connection (hyper dropped the body).
                    _ = tx.closed() => return,
                }
                let _ = tx.send(data("released")).await;
                guard.finish();
            });
            r
        }
        "frames" => {
            let (r, tx) = text_response(
                200,
                "application/vnd.asp.frames",
                &[("x-cpu-time", "3".into())],
            );
            guard.finish();
            let mut b = BytesMut::new();
            for (i, t) in ["fr", "ames"].iter().enumerate() {
                encode(
                    &Frame::Stream(StreamFrame {
                        id: RequestId(1),
                        data: Bytes::from_static(t.as_bytes()),
                        text: true,
                        seq: 100 + i as u32,
                        fin: false,
                    }),
                    &mut b,
                );
            }
            encode(
                &Frame::Complete(asp_proto::frame::Complete {
                    id: RequestId(1),
                    status: Status::Failed,
                    result: Some(RawValue::string("partial")),
                    metrics: asp_proto::frame::Metrics {
                        output_tokens: Some(2),
                        ..Default::default()
                    },
                }),
                &mut b,
            );
            let b = b.freeze();
            tokio::spawn(async move {
                // Split mid-frame: the relay reassembles.
                let _ = tx.send(BodyFrame::data(b.slice(..5))).await;
                let _ = tx.send(BodyFrame::data(b.slice(5..))).await;
            });
            r
        }
        "auth" => {
            let auth = headers
                .get("authorization")
                .map_or("none".to_owned(), |v| v.to_str().unwrap().to_owned());
            let (r, tx) = text_response(200, "text/plain", &[]);
            guard.finish();
            tokio::spawn(async move {
                let _ = tx.send(data(&auth)).await;
            });
            r
        }
        "flood" => {
            let (r, tx) = text_response(200, "application/octet-stream", &[]);
            let total = arg("bytes") as usize;
            guard.finish();
            tokio::spawn(async move {
                let block = Bytes::from(vec![b'x'; 16 << 10]);
                let mut sent = 0;
                while sent < total {
                    if tx.send(BodyFrame::data(block.clone())).await.is_err() {
                        return;
                    }
                    sent += block.len();
                    flooded.store(sent, Ordering::Release);
                }
            });
            r
        }
        "scripted" => {
            let a = &body.args;
            let pairs = |key: &str| -> Vec<(String, String)> {
                a.get(key)
                    .and_then(|v| v.as_object())
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let mut hdrs: Vec<(&str, String)> = Vec::new();
            let head = pairs("headers");
            let trail = pairs("trailers");
            let has_trailers = !trail.is_empty();
            if has_trailers {
                let names: Vec<&str> = trail.iter().map(|(k, _)| k.as_str()).collect();
                hdrs.push(("trailer", names.join(", ")));
            }
            hdrs.extend(head.iter().map(|(k, v)| (k.as_str(), v.clone())));
            let content_type = a["content_type"].as_str().unwrap_or("text/plain");
            let status = u16::try_from(a["status"].as_u64().unwrap_or(200)).unwrap();
            let (r, tx) = text_response(status, content_type, &hdrs);
            let bytes = unb64(a["body"].as_str().unwrap_or("")).expect("body is base64");
            let split = a["split"]
                .as_u64()
                .map_or(bytes.len().max(1), |n| n as usize);
            let trail = trailers(
                &trail
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect::<Vec<_>>(),
            );
            guard.finish();
            tokio::spawn(async move {
                for piece in bytes.chunks(split) {
                    let piece = BodyFrame::data(Bytes::copy_from_slice(piece));
                    if tx.send(piece).await.is_err() {
                        return;
                    }
                }
                if has_trailers {
                    let _ = tx.send(trail).await;
                }
            });
            r
        }
        _ => {
            guard.finish();
            let (r, tx) = text_response(404, "text/plain", &[]);
            tokio::spawn(async move {
                let _ = tx.send(data("no such tool")).await;
            });
            r
        }
    }
}

// ───────────────────────────── helpers ─────────────────────────────

const SECRET: &str = "test-secret";

async fn relay_to(upstream: hyper::Uri, tweak: impl FnOnce(&mut RelayConfig)) -> Relay {
    let mut c = RelayConfig::new(upstream);
    c.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    c.admin_secret = Some(SECRET.into());
    tweak(&mut c);
    Relay::start(c).await.expect("relay starts")
}

async fn connect(relay: &Relay) -> Client {
    within("connect", asp_tokio::connect(&relay.url()))
        .await
        .expect("client connects")
}

async fn run(
    client: &Client,
    tool: &str,
    args: Value,
) -> (String, Result<asp_tokio::Completion, Error>) {
    let mut call = client.invoke(tool, &args).expect("invoke");
    let mut text = String::new();
    within(&format!("{tool} to end"), async {
        while let Some(c) = call.next().await {
            text.push_str(&String::from_utf8_lossy(&c.data));
        }
    })
    .await;
    let end = within("completion", call.completion()).await;
    (text, end)
}

fn remote(r: Result<asp_tokio::Completion, Error>) -> asp_proto::frame::ErrorFrame {
    match r {
        Err(Error::Remote(e)) => e,
        other => panic!("expected an ERROR, got {other:?}"),
    }
}

/// An admin API call.
async fn admin(
    relay: &Relay,
    method: &str,
    path: &str,
    secret: Option<&str>,
    body: Bytes,
) -> (u16, Value) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", relay.admin_addr().unwrap()))
        .header("content-type", "application/vnd.asp.frames");
    if let Some(s) = secret {
        req = req.header("authorization", format!("Bearer {s}"));
    }
    let resp = within(
        "admin call",
        client.request(req.body(Full::new(body)).unwrap()),
    )
    .await
    .expect("admin API answers");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, v)
}

fn frames(fs: &[Frame]) -> Bytes {
    let mut b = BytesMut::new();
    for f in fs {
        encode(f, &mut b);
    }
    b.freeze()
}

/// A TOOL_DEF of `name` with no schema and no annotations.
fn tool_def(op: ToolOp, name: &str, description: &str) -> ToolDef {
    ToolDef {
        op,
        name: name.into(),
        description: description.into(),
        input_schema: None,
        annotations: None,
    }
}

fn conn_id(client: &Client) -> String {
    client.session().unwrap().connection_id.to_string()
}

type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A bare WebSocket client of the relay (subprotocol `asp-v1`, nothing sent yet): it sends
/// what the `Client` API would not, and can vanish without a goodbye.
async fn raw_ws(relay: &Relay) -> RawWs {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = relay.url().into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "asp-v1".parse().unwrap());
    let (ws, _) = within("ws connect", tokio_tungstenite::connect_async(req))
        .await
        .unwrap();
    ws
}

/// A client's HELLO offering version 1.
fn hello() -> Frame {
    Frame::Hello(asp_proto::frame::Hello {
        versions: asp_proto::frame::Versions::V1,
        ..Default::default()
    })
}

/// [`raw_ws`] once the HELLO exchange is done.
async fn raw_ws_greeted(relay: &Relay) -> RawWs {
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = raw_ws(relay).await;
    within("hello", ws.send(Message::Binary(frames(&[hello()]))))
        .await
        .unwrap();
    within("server hello", ws.next()).await.unwrap().unwrap();
    ws
}

/// Relay timeouts short enough to reach in a test: 300 ms for the status line and between
/// body bytes.
fn short_timeouts(c: &mut RelayConfig) {
    c.timeouts.upstream = Duration::from_millis(300);
    c.timeouts.idle = Duration::from_millis(300);
}

/// An admin API call with the secret and no body.
async fn admin_bodiless(relay: &Relay, method: &str, path: &str) -> (u16, Value) {
    admin(relay, method, path, Some(SECRET), Bytes::new()).await
}

/// Waits for the completion of `call` and asserts it is OK.
async fn completes_ok(call: asp_tokio::Invocation) {
    assert_eq!(
        within("completion", call.completion())
            .await
            .unwrap()
            .status,
        Status::Ok
    );
}

// ───────────────────────────── tests ─────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_streams_tokens_and_completes_with_metrics() {
    let mut f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let client = connect(&relay).await;
    // SPEC §15.1: the handshake calls no function.
    assert!(!client.session().unwrap().connection_id.is_empty());
    assert!(f.seen.try_recv().is_err(), "no function call on connect");
    let (chunks, done) = chunks_of(&client, "tokens", json!({"n": 5, "delay_ms": 2})).await;
    let done = done.unwrap();
    let text: String = chunks.iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 tok4 ");
    assert!(
        chunks.len() >= 2,
        "streamed as it arrived, not buffered: {chunks:?}"
    );
    assert_eq!(done.status, Status::Ok);
    assert_eq!(
        done.metrics.cpu_us,
        Some(12_250),
        "the trailer wins over the header"
    );
    assert_eq!(done.metrics.input_tokens, Some(7), "from the header");
    assert_eq!(done.metrics.output_tokens, Some(5), "from the trailer");
    assert!(done.metrics.wall_us.unwrap() >= 8_000, "{:?}", done.metrics);

    // What the function received (SPEC §15.2).
    let (headers, body) = f.invoked("tokens").await;
    assert_eq!(body.connection_id, conn_id(&client));
    assert_eq!(headers["x-asp-connection-id"], body.connection_id.as_str());
    assert_eq!(
        headers["x-asp-request-id"],
        body.request_id.to_string().as_str()
    );
    assert_eq!(headers["x-asp-tool"], "tokens");
    assert_eq!(headers["content-type"], "application/msgpack");
    assert_eq!(headers["accept"], "application/vnd.asp.frames, */*");
    assert_eq!(body.args, json!({"n": 5, "delay_ms": 2}));
    assert_eq!(body.deadline_ms, None);
    assert_eq!(body.meta, None);
    assert_eq!(body.state, None);
    assert!(
        headers.get("authorization").is_none(),
        "not forwarded unless configured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_body_gives_typed_chunks_and_the_functions_complete() {
    let f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let client = connect(&relay).await;
    let (text, end) = run(&client, "frames", json!({})).await;
    assert_eq!(text, "frames");
    let c = end.unwrap();
    assert_eq!(c.status, Status::Failed);
    assert_eq!(c.result, Some(RawValue::string("partial")));
    assert_eq!(c.metrics.output_tokens, Some(2));
    assert_eq!(c.metrics.cpu_us, Some(3_000));
    assert!(c.metrics.wall_us.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_errors_map_to_error_codes() {
    let f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let client = connect(&relay).await;
    for (status, body, code, retryable) in [
        (503, "overloaded", ErrorCode::UNAVAILABLE, true),
        (500, "", ErrorCode::INTERNAL, true),
        (422, "bad args", ErrorCode::INVALID_ARGUMENTS, false),
        (403, "no", ErrorCode::TOOL_FAILED, false),
        (504, "slow", ErrorCode::UPSTREAM_TIMEOUT, true),
    ] {
        let e = remote(
            run(&client, "fail", json!({"status": status, "body": body}))
                .await
                .1,
        );
        assert_eq!((e.code, e.retryable), (code, retryable), "HTTP {status}");
        let expected = if body.is_empty() {
            format!("the function answered HTTP {status}")
        } else {
            body.to_owned()
        };
        assert_eq!(e.message.unwrap().as_str(), expected);
    }
    let e = remote(run(&client, "no_such_tool", json!({})).await.1);
    assert_eq!(e.code, ErrorCode::UNKNOWN_TOOL);
    assert_eq!(e.message.unwrap().as_str(), "no such tool");
    // The connection carries on.
    assert_eq!(run(&client, "tokens", json!({"n": 1})).await.0, "tok0 ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_function_is_unavailable_and_retryable() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let relay = relay_to(format!("http://127.0.0.1:{port}").parse().unwrap(), |_| {}).await;
    let client = connect(&relay).await;
    let e = remote(run(&client, "anything", json!({})).await.1);
    assert_eq!((e.code, e.retryable), (ErrorCode::UNAVAILABLE, true));
    assert!(e.message.unwrap().as_str().contains("unreachable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeouts() {
    let mut f = Function::start().await;
    let relay = relay_to(f.url(), short_timeouts).await;
    let client = connect(&relay).await;
    // No status line in time.
    let e = remote(run(&client, "sleep", json!({"ms": 5000})).await.1);
    assert_eq!((e.code, e.retryable), (ErrorCode::UPSTREAM_TIMEOUT, true));
    assert!(e.message.unwrap().as_str().contains("no response"));
    f.aborted("sleep").await; // the relay gave up on the request
                              // A body that stalls: `hold` sends one chunk, then nothing.
    let (text, end) = run(&client, "hold", json!({})).await;
    assert_eq!(text, "held ");
    let e = remote(end);
    assert_eq!(e.code, ErrorCode::UPSTREAM_TIMEOUT);
    assert!(e.message.unwrap().as_str().contains("no body bytes"));
    f.aborted("hold").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_aborts_the_upstream_request() {
    let mut f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let client = connect(&relay).await;

    // While the function streams.
    let mut call = client.invoke("slow", &json!({})).unwrap();
    let first = within("first chunk", call.next()).await.unwrap();
    assert!(first.as_str().unwrap().starts_with("s0"));
    call.interrupt();
    let done = within("cancelled", call.completion()).await.unwrap();
    assert_eq!(done.status, Status::Cancelled);
    f.aborted("slow").await;

    // Before the function has answered at all.
    let call = client.invoke("sleep", &json!({"ms": 10_000})).unwrap();
    f.invoked("sleep").await;
    call.interrupt();
    let done = within("cancelled", call.completion()).await.unwrap();
    assert_eq!(done.status, Status::Cancelled);
    f.aborted("sleep").await;

    // The connection and the pool still work.
    assert_eq!(
        run(&client, "tokens", json!({"n": 2})).await.0,
        "tok0 tok1 "
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_aborts_its_upstream_requests() {
    use asp_proto::frame::Invoke;
    use tokio_tungstenite::tungstenite::Message;

    let mut f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    // A bare WebSocket client, so that it can vanish without sending anything (the
    // `Client` API interrupts what it drops).
    let mut ws = raw_ws_greeted(&relay).await;
    let invoke = |id: u16, tool: &str, args: Value| {
        Frame::Invoke(Invoke {
            id: RequestId(id),
            tool: tool.into(),
            args: Some(asp_tokio::to_value(&args).unwrap()),
            deadline_ms: 0,
            meta: None,
        })
    };
    let both = frames(&[
        invoke(1, "slow", json!({})),
        invoke(2, "sleep", json!({"ms": 10_000})),
    ]);
    within("invokes", ws.send(Message::Binary(both)))
        .await
        .unwrap();
    // Both calls reached the function (in either order).
    let mut tools = Vec::new();
    while tools.len() < 2 {
        tools.push(f.invoked_any().await);
    }
    tools.sort();
    assert_eq!(tools, ["sleep", "slow"]);
    // The first STREAM of `slow` shows the relay is reading its body.
    within("a STREAM", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) if b.first() == Some(&0x13) => return,
                Some(Ok(_)) => continue,
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    drop(ws); // the TCP connection closes, no goodbye
    let mut aborted = vec![f.aborted_any().await, f.aborted_any().await];
    aborted.sort();
    assert_eq!(aborted, ["sleep", "slow"]);
    within("the relay to drop the connection", async {
        while relay.connections() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

impl Function {
    async fn invoked_any(&mut self) -> String {
        self.wait("an /invoke", |s| match s {
            Seen::Invoke { body, .. } => Some(body.tool),
            _ => None,
        })
        .await
    }

    async fn aborted_any(&mut self) -> String {
        self.wait("an abort", |s| match s {
            Seen::Aborted { tool, .. } => Some(tool),
            _ => None,
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_carried_across_invocations() {
    let mut f = Function::start().await;
    let relay = relay_to(f.url(), |c| c.max_state = 16).await;
    let client = connect(&relay).await;
    assert_eq!(run(&client, "count", json!({})).await.0, "count=1");
    assert_eq!(run(&client, "count", json!({})).await.0, "count=2");
    // The state set by a trailer counts too.
    assert_eq!(run(&client, "count_trailer", json!({})).await.0, "count=3");
    assert_eq!(run(&client, "count", json!({})).await.0, "count=4");
    // Larger than max_state (16): ignored, the state stays.
    assert_eq!(run(&client, "big_state", json!({})).await.0, "big");
    assert_eq!(run(&client, "count", json!({})).await.0, "count=5");
    let (_, body) = f.invoked("count").await;
    assert_eq!(body.state, None, "the first call has no state");
    let (_, body) = f.invoked("count").await;
    assert_eq!(body.state, Some(Bin(vec![1])));
    // Per connection: another client starts empty.
    let other = connect(&relay).await;
    assert_eq!(run(&other, "count", json!({})).await.0, "count=1");
    let (s, v) = admin_bodiless(&relay, "GET", &format!("/connections/{}", conn_id(&client))).await;
    assert_eq!((s, v["state_bytes"].as_u64()), (200, Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_through_the_admin_api() {
    let mut f = Function::start().await;
    let relay = relay_to(f.url(), |c| {
        c.tools = vec![tool_def(ToolOp::Add, "tokens", "streams tokens")];
    })
    .await;
    let client = within(
        "connect",
        asp_tokio::client()
            .on_request(|req: asp_tokio::Request| async move {
                asp_tokio::reply(&req, ReplyStatus::Answered, Some(RawValue::string("yes")))
            })
            .connect(&relay.url()),
    )
    .await
    .unwrap();
    assert_eq!(client.tools().len(), 1, "the configured initial tool set");
    let id = conn_id(&client);
    let path = format!("/connections/{id}/frames");
    let mut changes = client.tool_changes();

    // TOOL_DEF.
    let def = tool_def(ToolOp::Add, "late", "pushed later");
    let (s, v) = admin(
        &relay,
        "POST",
        &path,
        Some(SECRET),
        frames(&[Frame::ToolDef(def)]),
    )
    .await;
    assert_eq!((s, v["accepted"].as_u64()), (202, Some(1)), "{v}");
    match within("tool change", changes.next()).await.unwrap() {
        ToolChange::Added(d) => assert_eq!(d.name.as_str(), "late"),
        other => panic!("{other:?}"),
    }

    // STREAM into an invocation in flight, with a seq the relay renumbers.
    let mut call = client.invoke("hold", &json!({})).unwrap();
    let first = within("held chunk", call.next()).await.unwrap();
    assert_eq!(first.as_str(), Some("held "));
    let push = frames(&[Frame::Stream(StreamFrame {
        id: call.id(),
        data: Bytes::from_static(b"pushed "),
        text: true,
        seq: 77,
        fin: false,
    })]);
    let (s, _) = admin(&relay, "POST", &path, Some(SECRET), push).await;
    assert_eq!(s, 202);
    assert_eq!(
        within("pushed chunk", call.next()).await.unwrap().as_str(),
        Some("pushed ")
    );
    let go = f.release.lock().unwrap().pop().unwrap();
    go.send(()).await.unwrap();
    assert_eq!(
        within("released chunk", call.next())
            .await
            .unwrap()
            .as_str(),
        Some("released")
    );
    completes_ok(call).await;

    // A STREAM for an id not in flight: 409, and nothing of the body is sent.
    let def2 = tool_def(ToolOp::Add, "never", "");
    let stale = frames(&[
        Frame::ToolDef(def2),
        Frame::Stream(StreamFrame {
            id: RequestId(99),
            data: Bytes::from_static(b"x"),
            text: true,
            seq: 0,
            fin: false,
        }),
    ]);
    let (s, v) = admin(&relay, "POST", &path, Some(SECRET), stale).await;
    assert_eq!(s, 409, "{v}");
    assert!(!client.tools().iter().any(|t| t.name.as_str() == "never"));

    // A server→client REQUEST: the answer goes to POST {upstream}/reply.
    let ask = frames(&[Frame::Request(RequestFrame {
        id: RequestId(0x8000),
        kind: "confirm".into(),
        body: Some(RawValue::string("proceed?")),
        invocation: None,
    })]);
    let (s, v) = admin(&relay, "POST", &path, Some(SECRET), ask).await;
    assert_eq!(s, 202, "{v}");
    let rid = v["request_ids"][0].as_u64().unwrap();
    assert!(rid >= 0x8000);
    let reply = f
        .wait("the reply", |s| match s {
            Seen::Reply(v) => Some(v),
            _ => None,
        })
        .await;
    assert_eq!(
        reply,
        json!({"connection_id": id, "request_id": rid, "status": "answered", "body": "yes"})
    );

    // GET describes the connection.
    let (s, v) = admin_bodiless(&relay, "GET", &format!("/connections/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(v["connection_id"], id.as_str());
    assert_eq!(v["tools"], json!(["late", "tokens"]));
    assert_eq!(v["in_flight"], 0);

    // Errors: malformed body, unknown connection, frame type not allowed.
    let (s, _) = admin(
        &relay,
        "POST",
        &path,
        Some(SECRET),
        Bytes::from_static(b"\x15\x00"),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = admin(&relay, "POST", &path, Some(SECRET), frames(&[Frame::PING])).await;
    assert_eq!(s, 400);
    let (s, _) = admin_bodiless(&relay, "GET", "/connections/nope").await;
    assert_eq!(s, 404);

    // DELETE: GOAWAY, then the connection closes (nothing in flight).
    let (s, _) = admin_bodiless(&relay, "DELETE", &format!("/connections/{id}")).await;
    assert_eq!(s, 204);
    within("the client to be closed", client.closed()).await;
    let (s, _) = admin_bodiless(&relay, "GET", &format!("/connections/{id}")).await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_admin_calls_are_refused() {
    let f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let client = connect(&relay).await;
    let id = conn_id(&client);
    let push = frames(&[Frame::ToolDef(tool_def(ToolOp::Add, "evil", ""))]);
    for secret in [None, Some("wrong"), Some("test-secre")] {
        for (method, path) in [
            ("POST", format!("/connections/{id}/frames")),
            ("GET", format!("/connections/{id}")),
            ("DELETE", format!("/connections/{id}")),
        ] {
            let (s, _) = admin(&relay, method, &path, secret, push.clone()).await;
            assert_eq!(s, 401, "{method} {path} with {secret:?}");
        }
    }
    // Nothing happened to the connection.
    assert!(client.tools().is_empty());
    assert_eq!(run(&client, "tokens", json!({"n": 1})).await.0, "tok0 ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_can_be_required_to_authenticate() {
    let f = Function::start().await;
    let relay = relay_to(f.url(), |c| c.client_token = Some("letmein".into())).await;
    match within("connect", asp_tokio::connect(&relay.url())).await {
        Err(Error::Rejected { status: 401, .. }) => {}
        other => panic!("expected HTTP 401, got {other:?}"),
    }
    let client = within(
        "connect",
        asp_tokio::client().token("letmein").connect(&relay.url()),
    )
    .await
    .unwrap();
    assert_eq!(run(&client, "tokens", json!({"n": 1})).await.0, "tok0 ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_auth_is_forwarded_when_configured() {
    let f = Function::start().await;
    // The `Authorization` the function sees from a client with a token.
    async fn seen(relay: &Relay) -> String {
        let client = within(
            "connect",
            asp_tokio::client()
                .token("user-token")
                .connect(&relay.url()),
        )
        .await
        .unwrap();
        run(&client, "auth", json!({})).await.0
    }
    let forwarding = relay_to(f.url(), |c| c.forward_auth = true).await;
    assert_eq!(seen(&forwarding).await, "Bearer user-token");
    let plain = relay_to(f.url(), |_| {}).await;
    assert_eq!(seen(&plain).await, "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_slows_the_function_down() {
    let f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let client = connect(&relay).await;
    const TOTAL: usize = 48 << 20;
    let mut call = client.invoke("flood", &json!({"bytes": TOTAL})).unwrap();
    // The client reads one chunk, then nothing: the relay may hold at most the window, its
    // queue, hyper's buffer and the sockets' buffers.
    within("first chunk", call.next()).await.unwrap();
    let mut last = 0;
    let mut stable = 0;
    within("the function to be blocked", async {
        // Wait until the function's progress stops (10 checks in a row without change).
        while stable < 10 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = f.flooded.load(Ordering::Acquire);
            if now == last {
                stable += 1;
            } else {
                stable = 0;
                last = now;
            }
        }
    })
    .await;
    eprintln!("the function was held at {} KiB", last >> 10);
    assert!(
        last < 16 << 20,
        "the function wrote {} MiB of {} MiB while the client read nothing",
        last >> 20,
        TOTAL >> 20
    );
    // Reading resumes the flow to the end.
    let mut got = 0;
    within("the rest", async {
        while let Some(c) = call.next().await {
            got += c.data.len();
        }
    })
    .await;
    assert!(got + (64 << 10) >= TOTAL, "got {got}");
    completes_ok(call).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_reused() {
    let f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let client = connect(&relay).await;
    for _ in 0..5 {
        assert_eq!(
            run(&client, "tokens", json!({"n": 2})).await.0,
            "tok0 tok1 "
        );
        assert_eq!(run(&client, "frames", json!({})).await.0, "frames");
    }
    // One pooled connection; a request may race the previous one's return to the pool
    // and open a second.
    let accepted = f.accepted.load(Ordering::Acquire);
    assert!(accepted <= 2, "{accepted} connections for 10 calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_invocations_share_one_socket() {
    let f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let client = connect(&relay).await;
    let runs = (0..8).map(|i| {
        let client = client.clone();
        async move { run(&client, "tokens", json!({"n": i + 1, "delay_ms": 1})).await }
    });
    let results = futures::future::join_all(runs).await;
    for (i, (text, end)) in results.into_iter().enumerate() {
        assert_eq!(text.split_whitespace().count(), i + 1);
        assert_eq!(end.unwrap().status, Status::Ok);
    }
}

// ───────────────────────────── the Python function ─────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_function_over_json() {
    let (_py, port) = match python_function(&[]) {
        Ok(py) => py,
        Err(e) => {
            eprintln!(
                "SKIPPED: python3 is not available ({e}); the Python function test did not run"
            );
            return;
        }
    };
    let url = format!("http://127.0.0.1:{port}").parse().unwrap();
    let relay = relay_to(url, |c| c.format = asp_relay::BodyFormat::Json).await;
    let client = connect(&relay).await;

    // Streaming, trailer metrics, and state: the Python function counts its calls in the
    // connection's state.
    python_tokens_and_state(&client, "from Python").await;

    // The JSON body it received, echoed back.
    let (echo, _) = run(&client, "echo", json!({"x": [1, "two", null]})).await;
    let v: Value = serde_json::from_str(&echo).unwrap();
    assert_eq!(v["args"], json!({"x": [1, "two", null]}));
    assert_eq!(v["connection_id"], conn_id(&client).as_str());
    assert!(v["state"].is_string(), "the state travels as base64: {v}");

    // Errors from Python.
    let e = remote(run(&client, "fail", json!({})).await.1);
    assert_eq!((e.code, e.retryable), (ErrorCode::UNAVAILABLE, true));
    assert_eq!(e.message.unwrap().as_str(), "python says no");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_and_meta_are_forwarded_and_enforced() {
    let mut f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let client = connect(&relay).await;
    let opts = asp_tokio::InvokeOptions::default()
        .deadline_ms(300)
        .meta(asp_tokio::to_value(&json!({"trace": "t-1"})).unwrap());
    let args = asp_tokio::to_value(&json!({"ms": 10_000})).unwrap();
    let call = client.invoke_raw("sleep", Some(args), opts).unwrap();
    let e = match within("deadline", call.completion()).await {
        Err(Error::Remote(e)) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(e.code, ErrorCode::DEADLINE_EXCEEDED);
    let (_, body) = f.invoked("sleep").await;
    assert_eq!(body.deadline_ms, Some(300));
    assert_eq!(body.meta, Some(json!({"trace": "t-1"})));
    f.aborted("sleep").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_on_connections_and_calls_in_flight() {
    let f = Function::start().await;
    let relay = relay_to(f.url(), |c| {
        c.max_connections = 1;
        c.max_inflight = 1;
    })
    .await;
    let client = connect(&relay).await;
    assert_eq!(
        client.session().unwrap().peer_limits.max_inflight,
        1,
        "announced in HELLO"
    );
    let mut held = client.invoke("hold", &json!({})).unwrap();
    within("held chunk", held.next()).await.unwrap();
    match client.invoke("tokens", &json!({"n": 1})) {
        Err(Error::Send(asp_proto::SendError::TooManyInflight)) => {}
        other => panic!("expected TooManyInflight, got {other:?}"),
    }
    match within("second connect", asp_tokio::connect(&relay.url())).await {
        Err(Error::Rejected { status: 503, .. }) => {}
        other => panic!("expected HTTP 503, got {other:?}"),
    }
    let go = f.release.lock().unwrap().pop().unwrap();
    go.send(()).await.unwrap();
    assert_eq!(
        within("held end", held.completion()).await.unwrap().status,
        Status::Ok
    );
    assert_eq!(run(&client, "tokens", json!({"n": 1})).await.0, "tok0 ");
}

/// The `asp-relay` binary: a config file, a tools file, the secret from the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_binary_with_config_and_tools_files() {
    let f = Function::start().await;
    let dir = std::env::temp_dir().join(format!("asp-relay-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tools = dir.join("tools.json");
    std::fs::write(
        &tools,
        r#"[{"name": "tokens", "description": "streams tokens", "input_schema": {"type": "object"}},
            {"name": "count", "annotations": {"readOnly": false}}]"#,
    )
    .unwrap();
    let config = dir.join("relay.json");
    std::fs::write(
        &config,
        json!({
            "upstream": format!("http://{}", f.addr),
            "listen": "127.0.0.1:0",
            "admin-listen": "127.0.0.1:0",
            "max-inflight": 4,
            "tools": tools.to_str().unwrap(),
        })
        .to_string(),
    )
    .unwrap();
    let mut child = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_asp-relay"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "--upstream-timeout",
                "5",
            ])
            .env("ASP_RELAY_ADMIN_SECRET", SECRET)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn asp-relay"),
    );
    // The banner names both listeners.
    let (url, admin_addr) = listening(&mut child.0);
    let admin_addr = admin_addr.expect("admin address");

    let client = within("connect", asp_tokio::connect(&url)).await.unwrap();
    let names: Vec<String> = client.tools().iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["count", "tokens"]);
    assert_eq!(client.session().unwrap().peer_limits.max_inflight, 4);
    assert_eq!(
        run(&client, "tokens", json!({"n": 3})).await.0,
        "tok0 tok1 tok2 "
    );

    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let get = |secret: &'static str| {
        Request::get(format!(
            "http://{admin_addr}/connections/{}",
            conn_id(&client)
        ))
        .header("authorization", format!("Bearer {secret}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
    };
    let ok = within("admin", http.request(get(SECRET))).await.unwrap();
    assert_eq!(ok.status(), 200);
    let refused = within("admin", http.request(get("nope"))).await.unwrap();
    assert_eq!(refused.status(), 401);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 25: the relay offers resume by default (single node). A client's connection
/// drops in the middle of a streamed function response; the client reconnects and resumes
/// its session on the same relay: every token arrives once, in order, the invocation
/// completes, and the connection id (by which the push API routes) is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_client_resumes_its_session() {
    let f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let proxy = DropProxy::start(relay.local_addr()).await;
    let url = proxy.url(&relay.url());
    let client = within("connect", asp_tokio::client().resume(true).connect(&url))
        .await
        .expect("client connects");
    let session = client.session().unwrap();
    assert!(session.resumable, "the relay offers resume");
    let mut call = client
        .invoke("tokens", &json!({"n": 60, "delay_ms": 5}))
        .unwrap();
    let mut text = String::new();
    within("first tokens", async {
        while !text.contains("tok10 ") {
            let c = call.next().await.expect("a chunk");
            text.push_str(c.as_str().unwrap());
        }
    })
    .await;
    // Drop the connection (both sockets close at once).
    proxy.drop_all();
    within("the rest", async {
        while let Some(c) = call.next().await {
            text.push_str(c.as_str().unwrap());
        }
    })
    .await;
    let want: String = (0..60).map(|i| format!("tok{i} ")).collect();
    assert_eq!(text, want, "every token once, in order");
    let done = within("completion", call.completion()).await.unwrap();
    assert_eq!(done.status, Status::Ok);
    assert_eq!(conn_id(&client), session.connection_id.as_str());
    assert_eq!(relay.connections(), 1);
}

// ─────────────── SPEC §15 as decided in issue 26: one test per point ───────────────

/// `scripted` arguments: this status, content type and body.
fn script(status: u16, content_type: &str, body: &[u8]) -> Value {
    json!({"status": status, "content_type": content_type, "body": b64(body)})
}

/// Every chunk of one invocation, and its ending.
async fn chunks_of(
    client: &Client,
    tool: &str,
    args: Value,
) -> (Vec<Chunk>, Result<asp_tokio::Completion, Error>) {
    let mut call = client.invoke(tool, &args).expect("invoke");
    let mut chunks = Vec::new();
    within(&format!("{tool} to end"), async {
        while let Some(c) = call.next().await {
            chunks.push(c);
        }
    })
    .await;
    (chunks, within("completion", call.completion()).await)
}

fn stream(id: u16, data: &[u8], text: bool, fin: bool) -> Frame {
    Frame::Stream(StreamFrame {
        id: RequestId(id),
        data: Bytes::copy_from_slice(data),
        text,
        seq: 0,
        fin,
    })
}

fn complete(id: u16, metrics: asp_proto::frame::Metrics) -> Frame {
    Frame::Complete(asp_proto::frame::Complete {
        id: RequestId(id),
        status: Status::Ok,
        result: None,
        metrics,
    })
}

fn error_frame(code: ErrorCode, retryable: bool) -> Frame {
    Frame::Error(asp_proto::frame::ErrorFrame {
        id: RequestId(1),
        code,
        message: Some("from the function".into()),
        retryable,
        frame_type: None,
    })
}

const FRAMES: &str = "application/vnd.asp.frames";

/// A client with these limits.
async fn connect_with(relay: &Relay, limits: impl FnOnce(&mut asp_proto::Limits)) -> Client {
    let mut config = asp_tokio::default_config();
    limits(&mut config.limits);
    within(
        "connect",
        asp_tokio::client().config(config).connect(&relay.url()),
    )
    .await
    .expect("client connects")
}

/// Point 1: a frames body's ids must be valid for their type (§3.5) and are otherwise
/// ignored: any client-space id works, 0 or a server-space id is INVALID_ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_body_ids_must_be_valid_for_their_type_and_are_replaced() {
    let f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let client = connect(&relay).await;
    let body = frames(&[
        stream(0x7fff, b"any ", true, false),
        stream(3, b"id", true, false),
        complete(42, Default::default()),
    ]);
    let (text, end) = run(&client, "scripted", script(200, FRAMES, &body)).await;
    assert_eq!(text, "any id");
    assert_eq!(end.unwrap().status, Status::Ok);
    for body in [
        frames(&[stream(0, b"x", true, false)]),
        frames(&[complete(0x8001, Default::default())]),
    ] {
        let e = remote(run(&client, "scripted", script(200, FRAMES, &body)).await.1);
        assert_eq!((e.code, e.retryable), (ErrorCode::INVALID_ID, false));
    }
    // The same rule for a pushed REQUEST (§15.5): its id must be in the server space, and
    // the relay allocates the one it sends.
    let path = format!("/connections/{}/frames", conn_id(&client));
    let ask = |id| {
        frames(&[Frame::Request(RequestFrame {
            id: RequestId(id),
            kind: "confirm".into(),
            body: None,
            invocation: None,
        })])
    };
    let (s, v) = admin(&relay, "POST", &path, Some(SECRET), ask(0)).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = admin(&relay, "POST", &path, Some(SECRET), ask(0xfffe)).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["request_ids"], json!([0x8000]), "{v}");
}

/// Point 2: a pushed TOOL_DEF add or update means "the client has this definition": add of
/// a held tool goes out as update, update of an unknown tool as add; both 202.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_tool_defs_add_or_update_whatever_the_client_holds() {
    let f = Function::start().await;
    let relay = relay_to(f.url(), |c| {
        c.tools = vec![tool_def(ToolOp::Add, "tokens", "v1")];
    })
    .await;
    let client = connect(&relay).await;
    let path = format!("/connections/{}/frames", conn_id(&client));
    let mut changes = client.tool_changes();
    let def = |op, name: &str, description: &str| {
        frames(&[Frame::ToolDef(tool_def(op, name, description))])
    };
    for (push, expect_update) in [
        (def(ToolOp::Add, "tokens", "v2"), true),
        (def(ToolOp::Add, "tokens", "v3"), true), // the same push again: idempotent
        (def(ToolOp::Update, "fresh", "new"), false),
    ] {
        let (s, v) = admin(&relay, "POST", &path, Some(SECRET), push).await;
        assert_eq!((s, v["accepted"].as_u64()), (202, Some(1)), "{v}");
        match within("tool change", changes.next()).await.unwrap() {
            ToolChange::Updated(d) if expect_update => assert_eq!(d.name.as_str(), "tokens"),
            ToolChange::Added(d) if !expect_update => assert_eq!(d.name.as_str(), "fresh"),
            other => panic!("{other:?}"),
        }
    }
    let tools = client.tools();
    let desc = |n: &str| {
        tools
            .iter()
            .find(|t| t.name.as_str() == n)
            .map(|t| t.description.to_string())
    };
    assert_eq!(desc("tokens").as_deref(), Some("v3"));
    assert_eq!(desc("fresh").as_deref(), Some("new"));
    // A removal of a tool the client does not hold stays a 409.
    let (s, _) = admin(
        &relay,
        "POST",
        &path,
        Some(SECRET),
        def(ToolOp::Remove, "nope", ""),
    )
    .await;
    assert_eq!(s, 409);
}

/// Point 3: once the status line has arrived, an idle body is UPSTREAM_TIMEOUT, not
/// retryable (the function may have acted); no status line in time stays retryable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_after_the_status_line_is_not_retryable() {
    let mut f = Function::start().await;
    let relay = relay_to(f.url(), short_timeouts).await;
    let client = connect(&relay).await;
    let (text, end) = run(&client, "hold", json!({})).await;
    assert_eq!(text, "held ");
    let e = remote(end);
    assert_eq!((e.code, e.retryable), (ErrorCode::UPSTREAM_TIMEOUT, false));
    f.aborted("hold").await;
    let e = remote(run(&client, "sleep", json!({"ms": 5000})).await.1);
    assert_eq!((e.code, e.retryable), (ErrorCode::UPSTREAM_TIMEOUT, true));
    f.aborted("sleep").await;
}

/// Point 4: the `retryable` of every ERROR a function's response can cause: §12.2's default
/// for the status mapping, false for whatever a frames body does wrong, the function's own
/// for an ERROR frame it sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_errors_carry_the_documented_retryable_flag() {
    let f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let client = connect(&relay).await;
    let cases = [
        (
            script(500, "text/plain", b"boom"),
            ErrorCode::INTERNAL,
            true,
        ),
        (script(429, "text/plain", b""), ErrorCode::UNAVAILABLE, true),
        (
            script(302, "text/plain", b""),
            ErrorCode::UNAVAILABLE,
            false,
        ),
        (
            script(200, FRAMES, &frames(&[stream(1, b"a", true, false)])),
            ErrorCode::UNAVAILABLE,
            false,
        ),
        (
            script(200, FRAMES, &frames(&[Frame::PING])),
            ErrorCode::INTERNAL,
            false,
        ),
        (
            script(200, FRAMES, &frames(&[error_frame(ErrorCode::FLOOD, true)])),
            ErrorCode::INTERNAL,
            false,
        ),
        (
            script(
                200,
                FRAMES,
                &frames(&[error_frame(ErrorCode::TOOL_FAILED, true)]),
            ),
            ErrorCode::TOOL_FAILED,
            true,
        ),
        (
            script(
                200,
                FRAMES,
                &frames(&[error_frame(ErrorCode::INTERNAL, false)]),
            ),
            ErrorCode::INTERNAL,
            false,
        ),
    ];
    for (args, code, retryable) in cases {
        let e = remote(run(&client, "scripted", args.clone()).await.1);
        assert_eq!((e.code, e.retryable), (code, retryable), "{args}");
    }
}

/// Point 5: a header version ≠ 1 in a frames body ends the invocation with INTERNAL; the
/// client's connection (where UNSUPPORTED_VERSION would close it) carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_frame_fails_the_invocation_not_the_connection() {
    let f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let client = connect(&relay).await;
    let mut body = BytesMut::from(&frames(&[stream(1, b"ok ", true, false)])[..]);
    body.extend_from_slice(&[0x23, 0, 0, 1, 0, 0, 0, 0]);
    let (text, end) = run(&client, "scripted", script(200, FRAMES, &body)).await;
    assert_eq!(text, "ok ");
    let e = remote(end);
    assert_eq!((e.code, e.retryable), (ErrorCode::INTERNAL, false));
    assert!(e.message.unwrap().as_str().contains("version"), "says why");
    assert_eq!(run(&client, "tokens", json!({"n": 1})).await.0, "tok0 ");
}

/// Point 6: the message of an error status is whole characters of the body's first 1024
/// bytes: a character that byte 1024 cuts is left out, so 1023 bytes here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_messages_are_whole_characters_of_the_first_1024_bytes() {
    let f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let client = connect(&relay).await;
    let mut body = "a".repeat(1023).into_bytes();
    body.extend_from_slice("€ and more".as_bytes());
    let mut args = script(503, "text/plain", &body);
    args["split"] = json!(1000); // the cut character also straddles two reads
    let e = remote(run(&client, "scripted", args).await.1);
    assert_eq!(e.message.unwrap().as_str(), "a".repeat(1023));
    let mut body = b" \n".to_vec();
    body.extend_from_slice("é".repeat(600).as_bytes()); // 1200 bytes of 2-byte characters
    let e = remote(
        run(&client, "scripted", script(400, "text/plain", &body))
            .await
            .1,
    );
    let m = e.message.unwrap();
    assert_eq!(
        m.as_str(),
        "é".repeat(511),
        "2 + 511 × 2 bytes = 1024: trimmed"
    );
    let e = remote(
        run(&client, "scripted", script(400, "text/plain", b"  \r\n"))
            .await
            .1,
    );
    assert_eq!(
        e.message.unwrap().as_str(),
        "the function answered HTTP 400"
    );
}

/// Point 7: a pushed STREAM larger than the client's `max_chunk` is split and accepted;
/// a pushed COMPLETE (a type never pushed) is 400; a TOOL_DEF larger than the client's
/// `max_frame_payload` is the 409 "exceeds what the client accepts".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_streams_are_split_and_pushed_completes_are_refused() {
    let f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let client = connect_with(&relay, |l| {
        l.max_chunk = 4;
        l.max_frame_payload = 1024;
    })
    .await;
    let path = format!("/connections/{}/frames", conn_id(&client));
    let mut call = client.invoke("hold", &json!({})).unwrap();
    let mut got = String::new();
    while got != "held " {
        let c = within("held chunk", call.next()).await.unwrap();
        assert!(c.data.len() <= 4);
        got.push_str(c.as_str().unwrap());
    }
    let push = frames(&[stream(call.id().0, b"pushed text", true, false)]);
    let (s, v) = admin(&relay, "POST", &path, Some(SECRET), push).await;
    assert_eq!((s, v["accepted"].as_u64()), (202, Some(1)), "{v}");
    let mut pieces = Vec::new();
    while pieces.concat() != "pushed text" {
        let c = within("pushed chunk", call.next()).await.unwrap();
        pieces.push(c.as_str().unwrap().to_owned());
    }
    assert_eq!(pieces, ["push", "ed t", "ext"]);
    let end = frames(&[complete(call.id().0, Default::default())]);
    let (s, v) = admin(&relay, "POST", &path, Some(SECRET), end).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("COMPLETE"), "{v}");
    let big = frames(&[Frame::ToolDef(tool_def(
        ToolOp::Add,
        "big",
        &"d".repeat(2000),
    ))]);
    let (s, v) = admin(&relay, "POST", &path, Some(SECRET), big).await;
    assert_eq!(s, 409, "{v}");
    // The invocation was not touched by the refused pushes.
    let go = f.release.lock().unwrap().pop().unwrap();
    go.send(()).await.unwrap();
    let mut rest = String::new();
    within("the rest", async {
        while let Some(c) = call.next().await {
            rest.push_str(c.as_str().unwrap());
        }
    })
    .await;
    assert_eq!(rest, "released");
    completes_ok(call).await;
}

/// Point 8: chunk boundaries are not kept: a typed STREAM is cut at the client's
/// `max_chunk` and at half its `initial_window`, `final` on its last piece; chunks are never
/// merged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_streams_are_cut_to_the_client_and_never_merged() {
    let f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let big = vec![7u8; 10_000];
    let body = frames(&[
        stream(1, &big, false, false),
        stream(1, b"x", true, false),
        stream(1, b"y", true, true),
        complete(1, Default::default()),
    ]);
    for (max_chunk, initial_window, cut) in [(4096, 262_144, 4096), (65_536, 4096, 2048)] {
        let client = connect_with(&relay, |l| {
            l.max_chunk = max_chunk;
            l.initial_window = initial_window;
        })
        .await;
        let (chunks, end) = chunks_of(&client, "scripted", script(200, FRAMES, &body)).await;
        assert_eq!(end.unwrap().status, Status::Ok);
        let shape: Vec<(usize, bool, bool)> = chunks
            .iter()
            .map(|c| (c.data.len(), c.text, c.fin))
            .collect();
        let mut expected = vec![];
        let mut left = big.len();
        while left > 0 {
            expected.push((left.min(cut), false, false));
            left -= left.min(cut);
        }
        expected.extend([(1, true, false), (1, true, true)]);
        assert_eq!(
            shape, expected,
            "max_chunk {max_chunk}, window {initial_window}"
        );
        let all: Vec<u8> = chunks.iter().flat_map(|c| c.data.to_vec()).collect();
        assert_eq!(&all[..10_000], &big[..]);
    }
}

/// Point 9: `deadline_ms` 0 in an INVOKE (present on the wire, meaning "none") gives no
/// `deadline_ms` key; a deadline > 0 gives the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_ms_zero_gives_no_key() {
    use tokio_tungstenite::tungstenite::Message;
    let mut f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let mut ws = raw_ws_greeted(&relay).await;
    // INVOKE payloads written by hand, so that key 2 is really on the wire:
    // {0: "zero", 2: 0} and {0: "five", 2: 5000}.
    let invoke = |id: u8, payload: &[u8]| {
        let mut b = vec![0x12, 0, 0, id, 0, 0, 0, payload.len() as u8];
        b.extend_from_slice(payload);
        b
    };
    let mut msg = invoke(1, b"\x82\x00\xa4zero\x02\x00");
    msg.extend(invoke(2, b"\x82\x00\xa4five\x02\xcd\x13\x88"));
    within("invokes", ws.send(Message::Binary(msg.into())))
        .await
        .unwrap();
    // The two calls reach the function in either order.
    let mut deadlines = std::collections::BTreeMap::new();
    while deadlines.len() < 2 {
        let body = f
            .wait("an /invoke", |s| match s {
                Seen::Invoke { body, .. } => Some(body),
                _ => None,
            })
            .await;
        deadlines.insert(body.tool, body.deadline_ms);
    }
    assert_eq!(deadlines["zero"], None, "no key for deadline_ms 0");
    assert_eq!(deadlines["five"], Some(5000));
}

/// Point 10: JSON bodies: a `bin` key is its base64 string, other keys their JSON text; keys
/// that collide as JSON names and nesting over 126 are refused (INVALID_ARGUMENTS, no call);
/// the deepest body accepted parses with serde_json's defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_convert_keys_and_refuse_what_json_cannot_say() {
    let mut f = Function::start().await;
    let relay = relay_to(f.url(), |c| c.format = asp_relay::BodyFormat::Json).await;
    let client = connect(&relay).await;
    let call = |args: &[u8]| {
        let raw = RawValue::new(Bytes::copy_from_slice(args)).unwrap();
        client
            .invoke_raw("echo", Some(raw), asp_tokio::InvokeOptions::default())
            .unwrap()
    };
    let echo = |call: asp_tokio::Invocation| async move {
        let mut call = call;
        let mut text = String::new();
        within("echo", async {
            while let Some(c) = call.next().await {
                text.push_str(c.as_str().unwrap());
            }
        })
        .await;
        (text, within("completion", call.completion()).await)
    };
    // {bin[01]: 1, 2: "two", nil: [1.5]}
    let (text, end) = echo(call(
        b"\x83\xc4\x01\x01\x01\x02\xa3two\xc0\x91\xcb\x3f\xf8\0\0\0\0\0\0",
    ))
    .await;
    assert_eq!(end.unwrap().status, Status::Ok, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["args"], json!({"AQ==": 1, "2": "two", "null": [1.5]}));
    assert!(
        text.contains(r#""args":{"AQ==":1,"2":"two","null":[1.5]}"#),
        "{text}"
    );

    // 126 nested arrays: the body nests 127, which serde_json (the function) accepts.
    let mut deep = vec![0x91u8; 126];
    deep.push(0x01);
    let (text, end) = echo(call(&deep)).await;
    assert_eq!(end.unwrap().status, Status::Ok, "{text}");
    let refused = [
        &b"\x82\x01\x01\xa11\x02"[..], // {1: 1, "1": 2}
        b"\x82\xa1a\x01\xa1a\x02",     // {"a": 1, "a": 2}
        &[0x91u8; 127][..],            // (completed below)
    ];
    for (i, args) in refused.iter().enumerate() {
        let mut args = args.to_vec();
        if i == 2 {
            args.push(0x01);
        }
        let e = remote(echo(call(&args)).await.1);
        assert_eq!((e.code, e.retryable), (ErrorCode::INVALID_ARGUMENTS, false));
    }
    // None of the refused calls reached the function: the next body it sees is this one.
    let (text, _) = echo(call(b"\xa4last")).await;
    let mut bodies = Vec::new();
    while let Ok(s) = f.seen.try_recv() {
        if let Seen::Json(j) = s {
            bodies.push(j);
        }
    }
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    assert_eq!(bodies.last(), Some(&text));
}

/// Point 11: which plain bodies stream as text: `text/*`, `application/json`,
/// `application/*+json`, NDJSON; case and parameters do not matter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_media_types_stream_as_text() {
    let f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let client = connect(&relay).await;
    for (content_type, text) in [
        ("application/problem+json", true),
        ("application/x-ndjson", true),
        ("application/ndjson", true),
        ("Text/Plain; Charset=UTF-8", true),
        ("APPLICATION/JSON", true),
        ("application/octet-stream", false),
        ("application/xml", false),
        ("application/jsonl", false),
    ] {
        let (chunks, end) = chunks_of(
            &client,
            "scripted",
            script(200, content_type, b"{\"a\":1}\n"),
        )
        .await;
        assert_eq!(end.unwrap().status, Status::Ok);
        assert!(!chunks.is_empty());
        for c in &chunks {
            assert_eq!(c.text, text, "{content_type}");
        }
    }
    // The frames type too, whatever its case and parameters.
    let body = frames(&[
        stream(1, b"typed", true, true),
        complete(1, Default::default()),
    ]);
    let args = script(200, "Application/VND.ASP.Frames; v=1", &body);
    assert_eq!(run(&client, "scripted", args).await.0, "typed");
}

/// Point 12: metrics merge field by field (a frames COMPLETE, then trailers, then headers);
/// `X-Cpu-Time` accepts fractions and exponents, rounded to the nearest µs; other forms are
/// ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_metrics_merge_field_by_field_and_read_x_cpu_time_exactly() {
    let f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let client = connect(&relay).await;
    let metrics = |args: Value| {
        let client = client.clone();
        async move { run(&client, "scripted", args).await.1.unwrap().metrics }
    };
    // A COMPLETE with only output_tokens keeps the headers' other two.
    let body = frames(&[complete(
        1,
        asp_proto::frame::Metrics {
            output_tokens: Some(9),
            cpu_us: None,
            ..Default::default()
        },
    )]);
    let mut args = script(200, FRAMES, &body);
    args["headers"] =
        json!({"x-cpu-time": "0.0015", "x-input-tokens": "4", "x-output-tokens": "1"});
    let m = metrics(args).await;
    assert_eq!(
        (m.cpu_us, m.input_tokens, m.output_tokens),
        (Some(2), Some(4), Some(9))
    );
    // Plain bodies: the trailer wins field by field.
    let mut args = script(200, "text/plain", b"x");
    args["headers"] = json!({"x-cpu-time": "1e3", "x-input-tokens": "5"});
    args["trailers"] = json!({"x-output-tokens": "6"});
    let m = metrics(args).await;
    assert_eq!(
        (m.cpu_us, m.input_tokens, m.output_tokens),
        (Some(1_000_000), Some(5), Some(6))
    );
    let mut args = script(200, "text/plain", b"x");
    args["headers"] = json!({"x-cpu-time": "7"});
    args["trailers"] = json!({"x-cpu-time": "2.5E-1"});
    assert_eq!(metrics(args).await.cpu_us, Some(250));
    for bad in ["-1", "+1", "0x10", "inf", "1,5"] {
        let mut args = script(200, "text/plain", b"x");
        args["headers"] = json!({"x-cpu-time": bad, "x-input-tokens": "+5"});
        let m = metrics(args).await;
        assert_eq!((m.cpu_us, m.input_tokens), (None, None), "{bad}");
    }
}

/// Point 13: `X-Asp-State` in either base64 alphabet, padded or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_accepts_either_base64_alphabet() {
    let mut f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let client = connect(&relay).await;
    for (value, state) in [
        ("-_8", vec![0xfb, 0xff]),
        ("AQ", vec![1]),
        ("-_8=", vec![0xfb, 0xff]),
        ("AQ==", vec![1]),
        ("+/8=", vec![0xfb, 0xff]),
        ("not base64!", vec![0xfb, 0xff]), // ignored: the state stays
    ] {
        let mut args = script(200, "text/plain", b"ok");
        args["headers"] = json!({ "x-asp-state": value });
        assert_eq!(run(&client, "scripted", args).await.0, "ok");
        assert_eq!(run(&client, "tokens", json!({"n": 0})).await.0, "");
        let (_, body) = f.invoked("tokens").await;
        assert_eq!(body.state, Some(Bin(state)), "after {value:?}");
    }
}

/// Point 14: `GET /connections/{id}`: `connected_for_ms` is a duration; `in_flight` counts
/// invocations and `requests_in_flight` the pushed REQUESTs awaiting an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_tells_invocations_and_requests_apart() {
    let mut f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let (answer, answered) = mpsc::channel::<()>(1);
    let answered = Arc::new(tokio::sync::Mutex::new(answered));
    let client = within(
        "connect",
        asp_tokio::client()
            .on_request(move |req: asp_tokio::Request| {
                let answered = answered.clone();
                async move {
                    let _ = tokio::time::timeout(LIMIT, answered.lock().await.recv()).await;
                    asp_tokio::reply(&req, ReplyStatus::Answered, None)
                }
            })
            .connect(&relay.url()),
    )
    .await
    .unwrap();
    let id = conn_id(&client);
    let get_path = format!("/connections/{id}");
    let describe = || admin_bodiless(&relay, "GET", &get_path);
    let mut call = client.invoke("hold", &json!({})).unwrap();
    within("held chunk", call.next()).await.unwrap();
    let ask = frames(&[Frame::Request(RequestFrame {
        id: RequestId(0x8000),
        kind: "confirm".into(),
        body: None,
        invocation: Some(call.id()),
    })]);
    let (s, _) = admin(
        &relay,
        "POST",
        &format!("/connections/{id}/frames"),
        Some(SECRET),
        ask,
    )
    .await;
    assert_eq!(s, 202);
    let (s, v) = describe().await;
    assert_eq!(s, 200);
    assert_eq!(
        (v["in_flight"].as_u64(), v["requests_in_flight"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert!(
        v["connected_for_ms"].as_u64().unwrap() < LIMIT.as_millis() as u64 * 2,
        "{v}"
    );
    assert!(v.get("connected_ms").is_none(), "{v}");
    // The client answers: the request is no longer in flight.
    answer.send(()).await.unwrap();
    f.wait("the reply", |s| matches!(s, Seen::Reply(_)).then_some(()))
        .await;
    let (_, v) = describe().await;
    assert_eq!(
        (v["in_flight"].as_u64(), v["requests_in_flight"].as_u64()),
        (Some(1), Some(0)),
        "{v}"
    );
    let go = f.release.lock().unwrap().pop().unwrap();
    go.send(()).await.unwrap();
    within("held end", call.completion()).await.unwrap();
    let (_, v) = describe().await;
    assert_eq!(v["in_flight"].as_u64(), Some(0), "{v}");
}

/// Point 15: `TE: trailers` comes with `Connection: TE` (RFC 9110 §10.1.4), and the
/// upstream connection stays persistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_requests_name_te_in_connection() {
    let mut f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let client = connect(&relay).await;
    for _ in 0..3 {
        assert_eq!(run(&client, "tokens", json!({"n": 1})).await.0, "tok0 ");
        let (headers, _) = f.invoked("tokens").await;
        assert_eq!(headers["te"], "trailers");
        let connection = headers["connection"].to_str().unwrap().to_ascii_lowercase();
        assert!(
            connection.split(',').any(|t| t.trim() == "te"),
            "{connection}"
        );
    }
    assert!(f.accepted.load(Ordering::Acquire) <= 2, "kept alive");
}

/// SPEC §2.1 at the relay's edge: a client that breaks the protocol (a STREAM, which only a
/// server may send) gets ERROR(PROTOCOL_VIOLATION) and a WebSocket Close with code 1002.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_edge_closes_with_the_spec_close_code() {
    use tokio_tungstenite::tungstenite::Message;

    let f = Function::start().await;
    let relay = relay_to(f.url(), |_| {}).await;
    let mut ws = raw_ws(&relay).await;
    let stream = Frame::Stream(StreamFrame {
        id: RequestId(1),
        data: Bytes::from_static(b"x"),
        text: true,
        seq: 0,
        fin: false,
    });
    within("send", ws.send(Message::Binary(frames(&[hello(), stream]))))
        .await
        .unwrap();
    let (mut errors, mut close) = (Vec::new(), None);
    within("the close", async {
        while let Some(Ok(m)) = ws.next().await {
            match m {
                Message::Binary(mut b) => {
                    while let Some(Ok(fr)) = asp_proto::codec::decode_frame(&mut b, u32::MAX) {
                        if let Frame::Error(e) = fr {
                            errors.push(e.code);
                        }
                    }
                }
                Message::Close(c) => close = Some(c.map_or(1005, |c| u16::from(c.code))),
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(errors, [ErrorCode::PROTOCOL_VIOLATION]);
    assert_eq!(close, Some(1002));
}
