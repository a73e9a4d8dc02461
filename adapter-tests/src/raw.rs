//! A raw WebSocket peer that speaks ASP by hand with `asp_proto::codec`, over the client
//! runtime's own WebSocket (tokio-tungstenite on tokio, async-tungstenite on smol). Used to
//! do what the real client never would: skip the subprotocol, send a bad Origin, send an
//! oversized frame, stop answering.

use std::collections::VecDeque;

use asp_async::tungstenite::client::IntoClientRequest;
use asp_async::tungstenite::handshake::client::Response;
use asp_async::tungstenite::http::HeaderValue;
use asp_async::tungstenite::{self, Message};
use asp_async::Runtime;
use asp_proto::codec;
use asp_proto::frame::{Frame, Hello, Versions};
use asp_proto::ErrorCode;
use bytes::BytesMut;
use futures::{SinkExt, StreamExt};

/// Opens a WebSocket to `url` on `rt` with exactly the extra `headers` given (no
/// subprotocol unless listed). Returns tungstenite's result: `Err(Error::Http(resp))` for a
/// refused upgrade.
pub async fn ws_connect<R: Runtime>(
    rt: &R,
    url: &str,
    headers: &[(&'static str, &str)],
) -> Result<(R::Ws, Response), tungstenite::Error> {
    let mut req = url.into_client_request()?;
    for (name, value) in headers {
        req.headers_mut().insert(
            *name,
            HeaderValue::from_str(value).expect("valid header value"),
        );
    }
    let addr = asp_async::host_port(&req)?;
    let tcp = rt.tcp_connect(addr).await?;
    rt.handshake(req, tcp, asp_async::default_ws_config()).await
}

/// The HTTP status of a refused upgrade, and its body.
pub fn refusal<T>(r: Result<T, tungstenite::Error>) -> (u16, String) {
    match r {
        Ok(_) => panic!("expected an HTTP refusal, the upgrade succeeded"),
        Err(tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            resp.body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        ),
        Err(other) => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

/// An ASP peer driven frame by frame.
pub struct RawPeer<W> {
    ws: W,
    pending: VecDeque<Frame>,
    /// The code of the server's WebSocket Close once one arrived (1005 for a Close without a
    /// code, RFC 6455 §7.1.5).
    pub close_code: Option<u16>,
}

impl<W: asp_async::WsStream> RawPeer<W> {
    /// Wraps an open WebSocket.
    pub fn new(ws: W) -> Self {
        RawPeer {
            ws,
            pending: VecDeque::new(),
            close_code: None,
        }
    }

    /// Connects with `Sec-WebSocket-Protocol: asp-v1` and does the HELLO exchange; returns
    /// the server's HELLO (TOOL_DEF frames that follow stay queued).
    pub async fn connect<R: Runtime>(rt: &R, url: &str) -> (RawPeer<R::Ws>, Hello) {
        let (ws, _) = ws_connect(rt, url, &[("Sec-WebSocket-Protocol", "asp-v1")])
            .await
            .expect("raw WebSocket connect");
        let mut peer = RawPeer::new(ws);
        let hello = peer.hello().await;
        (peer, hello)
    }

    /// Sends `frames` coalesced in one binary message (SPEC §2.1).
    pub async fn send(&mut self, frames: &[Frame]) {
        let mut buf = BytesMut::new();
        for f in frames {
            codec::encode(f, &mut buf);
        }
        self.ws
            .send(Message::Binary(buf.freeze()))
            .await
            .expect("raw send");
    }

    /// The next frame from the server, or `None` once the WebSocket has ended (close,
    /// error or EOF).
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.pending.pop_front() {
                return Some(f);
            }
            match self.ws.next().await {
                Some(Ok(Message::Binary(mut b))) => {
                    while let Some(r) = codec::decode_frame(&mut b, u32::MAX) {
                        self.pending
                            .push_back(r.expect("the server sent an undecodable frame"));
                    }
                }
                Some(Ok(Message::Text(_))) => panic!("the server sent a text message"),
                Some(Ok(Message::Close(f))) => {
                    self.close_code = Some(f.map_or(1005, |f| u16::from(f.code)));
                }
                Some(Ok(_)) => {} // ping, pong: tungstenite answers those itself
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Reads until the server closes; returns the codes of the ERROR frames it sent and the
    /// code of its WebSocket Close.
    pub async fn errors_until_close(&mut self) -> (Vec<ErrorCode>, Option<u16>) {
        let mut errors = Vec::new();
        while let Some(f) = self.next_frame().await {
            if let Frame::Error(e) = f {
                errors.push(e.code);
            }
        }
        (errors, self.close_code)
    }

    /// Sends a raw binary message (possibly not whole frames).
    pub async fn send_raw(&mut self, bytes: &'static [u8]) {
        self.ws
            .send(Message::Binary(bytes::Bytes::from_static(bytes)))
            .await
            .expect("raw send");
    }

    /// Sends HELLO (versions [1], defaults otherwise) and returns the server's HELLO.
    pub async fn hello(&mut self) -> Hello {
        self.hello_with(Hello {
            versions: Versions::V1,
            ..Hello::default()
        })
        .await
    }

    /// Sends `hello` and returns the server's HELLO.
    pub async fn hello_with(&mut self, hello: Hello) -> Hello {
        self.send(&[Frame::Hello(hello)]).await;
        match self.next_frame().await {
            Some(Frame::Hello(h)) => h,
            other => panic!("expected the server HELLO, got {other:?}"),
        }
    }
}
