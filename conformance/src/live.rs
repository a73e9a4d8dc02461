//! Live mode (README "Live mode"): plays the `live` session vectors of role `server` against
//! a running ASP endpoint over WebSocket (subprotocol `asp-v1`), the runner acting as the
//! client. Each vector gets a new connection.

use std::collections::VecDeque;
use std::io::Write;
use std::time::Duration;

use asp_proto::codec;
use asp_proto::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::hex::{self, Captures};
use crate::matcher::{required_count, transmit_matches, Sent};
use crate::model;
use crate::runner::{ExpectedFailures, Summary, VectorFile};

/// The subprotocol (SPEC §2.1).
pub const SUBPROTOCOL: &str = "asp-v1";

/// Live-mode settings.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// `ws://HOST:PORT/PATH` of the endpoint under test.
    pub url: String,
    /// How long to wait for each expected frame or close.
    pub timeout: Duration,
}

impl LiveOptions {
    /// Defaults: 5 s per wait.
    pub fn new(url: impl Into<String>) -> LiveOptions {
        LiveOptions {
            url: url.into(),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Whether a session vector can be played live (README "Live mode").
pub fn is_live(t: &Value) -> bool {
    t["live"].as_bool() == Some(true) && t["role"].as_str() == Some("server")
}

/// Plays every live vector of `files` against `opts.url`.
pub async fn run_live(
    files: &[VectorFile],
    opts: &LiveOptions,
    xf: &ExpectedFailures,
    out: &mut (dyn Write + Send),
) -> Summary {
    let mut sum = Summary::default();
    for f in files.iter().filter(|f| f.kind() == "sessions") {
        for t in f.tests().iter().filter(|t| is_live(t)) {
            let id = t["id"].as_str().unwrap_or("?");
            let r = play(t, opts).await;
            let live_id = format!("live:{id}");
            let reason = xf.reason(&live_id).or_else(|| xf.reason(id));
            sum.record(out, "live", id, r, reason);
        }
    }
    sum
}

type Ws = WebSocketStream<TcpStream>;

struct Peer {
    ws: Ws,
    queue: VecDeque<Sent>,
    timeout: Duration,
}

enum Next {
    Frame(Sent),
    Closed,
}

impl Peer {
    async fn connect(url: &str, timeout: Duration) -> Result<Peer, String> {
        let mut req = url
            .into_client_request()
            .map_err(|e| format!("bad url {url}: {e}"))?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        let uri = req.uri();
        if uri.scheme_str() != Some("ws") {
            return Err("only ws:// URLs are supported".into());
        }
        let host = uri.host().ok_or("url without host")?;
        let addr = format!("{}:{}", host, uri.port_u16().unwrap_or(80));
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| format!("connect {addr}: timed out"))?
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (ws, resp) = tokio::time::timeout(timeout, tokio_tungstenite::client_async(req, tcp))
            .await
            .map_err(|_| "WebSocket handshake timed out".to_string())?
            .map_err(|e| format!("WebSocket handshake: {e}"))?;
        let selected = resp
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok());
        if selected != Some(SUBPROTOCOL) {
            return Err(format!(
                "the server did not select the subprotocol {SUBPROTOCOL} (got {selected:?}), SPEC §2.1"
            ));
        }
        Ok(Peer {
            ws,
            queue: VecDeque::new(),
            timeout,
        })
    }

    async fn send(&mut self, m: Message) -> Result<(), String> {
        self.ws.send(m).await.map_err(|e| format!("send: {e}"))
    }

    /// The next frame the server sent (PINGs are answered and skipped), or its close.
    async fn next(&mut self, what: &str) -> Result<Next, String> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(s) = self.queue.pop_front() {
                return Ok(Next::Frame(s));
            }
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Err(format!("timed out waiting for {what}")),
                Ok(None) => return Ok(Next::Closed),
                Ok(Some(Err(e))) => {
                    return match e {
                        tokio_tungstenite::tungstenite::Error::ConnectionClosed
                        | tokio_tungstenite::tungstenite::Error::AlreadyClosed
                        | tokio_tungstenite::tungstenite::Error::Io(_)
                        | tokio_tungstenite::tungstenite::Error::Protocol(_) => Ok(Next::Closed),
                        e => Err(format!("receive: {e}")),
                    }
                }
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Binary(b) => {
                    let mut b: Bytes = b;
                    if b.is_empty() {
                        return Err("the server sent an empty message (SPEC §2.1)".into());
                    }
                    while let Some(r) = codec::decode_frame(&mut b, u32::MAX) {
                        let f = r.map_err(|e| format!("the server sent an invalid frame: {e}"))?;
                        if matches!(f, asp_proto::Frame::Ping(_)) {
                            self.send(Message::Binary(Bytes::from_static(&PONG)))
                                .await?;
                            continue;
                        }
                        self.queue.push_back(Sent::of(&f));
                    }
                }
                Message::Text(_) => return Err("the server sent a text message (SPEC §2.1)".into()),
                Message::Close(_) => return Ok(Next::Closed),
                _ => {}
            }
        }
    }
}

const PING: [u8; 8] = [0x18, 0, 0, 0, 0, 0, 0, 0];
const PONG: [u8; 8] = [0x19, 0, 0, 0, 0, 0, 0, 0];

/// Plays one vector; the runner is the client.
pub async fn play(t: &Value, opts: &LiveOptions) -> Result<(), String> {
    let steps = t["steps"].as_array().ok_or("no steps")?;
    let mut peer: Option<Peer> = None;
    let mut caps = Captures::new();
    let t0 = Instant::now();
    let mut closed = false;
    for (n, s) in steps.iter().enumerate() {
        let at_ms = model::uint_of(&s["at_ms"]).unwrap_or(0);
        let fail = |e: String| format!("step {n} (at {at_ms} ms): {e}");
        tokio::time::sleep_until(t0 + Duration::from_millis(at_ms)).await;
        if s.get("start").is_some() {
            peer = Some(Peer::connect(&opts.url, opts.timeout).await.map_err(fail)?);
        }
        let p = peer.as_mut().ok_or_else(|| fail("no start step".into()))?;
        if let Some(x) = s["recv"].as_str() {
            let b = hex::parse(x, &caps).map_err(fail)?;
            p.send(Message::Binary(Bytes::from(b)))
                .await
                .map_err(fail)?;
        } else if let Some(x) = s.get("recv_text") {
            let text = x.as_str().unwrap_or("text").to_owned();
            p.send(Message::Text(text.into())).await.map_err(fail)?;
        }
        // `command` steps are the remote application's own actions (the live profile's
        // tools); `timeout` steps only let time pass.
        let none = Vec::new();
        let expected = s["transmit"].as_array().unwrap_or(&none);
        let mut got = Vec::new();
        for _ in 0..required_count(expected) {
            match p.next("an expected frame").await.map_err(fail)? {
                Next::Frame(f) => got.push(f),
                Next::Closed => {
                    let so_far: Vec<String> = got.iter().map(ToString::to_string).collect();
                    return Err(fail(format!(
                        "the server closed the connection; expected {} frames, got [{}]",
                        required_count(expected),
                        so_far.join("; ")
                    )));
                }
            }
        }
        transmit_matches(expected, &got, &mut caps).map_err(fail)?;
        if s["closed"].as_bool() == Some(true) {
            match p.next("the server to close").await.map_err(fail)? {
                Next::Closed => {}
                Next::Frame(f) => return Err(fail(format!("expected close, got {f}"))),
            }
            closed = true;
            break;
        }
    }
    if !closed {
        // Barrier: everything the server sent before our PING's PONG must have been expected.
        let p = peer.as_mut().ok_or("no start step")?;
        p.send(Message::Binary(Bytes::from_static(&PING))).await?;
        match p.next("PONG (end-of-vector barrier)").await? {
            Next::Frame(f) if f.ty == "PONG" => {}
            Next::Frame(f) => return Err(format!("unexpected frame after the last step: {f}")),
            Next::Closed => return Err("the server closed the connection unexpectedly".into()),
        }
        let _ = p.ws.close(None).await;
    }
    Ok(())
}
