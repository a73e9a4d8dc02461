//! The ASP side: the echo and stream tools (one definition, served by the tokio and the smol
//! adapter), the raw tokio-tungstenite floor, and the relay with a small hyper function.

use std::net::SocketAddr;

use asp_async::{Args, Output, Runtime, Tool, ToolContext, ToolError};
use asp_proto::codec;
use asp_proto::frame::{
    Complete, Frame, Invoke, Metrics, RawValue, RequestId, Status, Stream, Text,
};
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{connector, Bench, Connect, CHUNK, PAYLOAD};

#[derive(Serialize, Deserialize)]
pub struct EchoArgs {
    pub text: String,
}

#[derive(Serialize, Deserialize)]
pub struct StreamArgs {
    pub n: usize,
}

/// `echo {text}` → `text`, and `stream {n}` → n text chunks of 32 bytes.
pub fn tools() -> Vec<Tool> {
    let echo = Tool::new("echo", |_ctx: ToolContext, args: Args| async move {
        let a: EchoArgs = args.parse()?;
        Output::value(&a.text)
    })
    .description("echoes its text");
    let stream = Tool::new("stream", |ctx: ToolContext, args: Args| async move {
        let a: StreamArgs = args.parse()?;
        for _ in 0..a.n {
            ctx.stream_text(CHUNK)
                .await
                .map_err(|_| ToolError::Cancelled)?;
        }
        Ok(Output::default())
    })
    .description("streams n chunks of 32 bytes");
    vec![echo, stream]
}

/// A client of any ASP server (direct on tokio or smol, or the relay).
pub struct AspBench<R: Runtime> {
    pub client: asp_async::Client<R>,
    pub args: EchoArgs,
}

impl<R: Runtime> AspBench<R> {
    pub fn new(client: asp_async::Client<R>) -> Self {
        AspBench {
            client,
            args: EchoArgs {
                text: PAYLOAD.into(),
            },
        }
    }
}

impl<R: Runtime> Bench for AspBench<R> {
    fn call(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let done = self
                .client
                .invoke("echo", &self.args)
                .expect("invoke")
                .completion()
                .await
                .expect("completion");
            assert_eq!(done.status, Status::Ok);
            debug_assert_eq!(
                asp_async::from_value::<String>(done.result.as_ref().expect("result"))
                    .expect("decode"),
                PAYLOAD
            );
        })
    }

    fn stream(&self, n: usize) -> BoxFuture<'_, usize> {
        Box::pin(async move {
            let mut call = self
                .client
                .invoke("stream", &StreamArgs { n })
                .expect("invoke");
            let mut bytes = 0;
            while let Some(chunk) = call.next().await {
                bytes += chunk.data.len();
            }
            let done = call.completion().await.expect("completion");
            assert_eq!(done.status, Status::Ok);
            bytes / CHUNK.len()
        })
    }
}

impl<R: Runtime> Drop for AspBench<R> {
    fn drop(&mut self) {
        // Ends the connection (GOAWAY/close) in the background.
        let c = self.client.clone();
        let _ = futures::FutureExt::now_or_never(async move { c.close().await });
    }
}

/// ASP on tokio: server + connector.
pub async fn tokio_server() -> (asp_tokio::Server, Connect) {
    let mut b = asp_tokio::server();
    for t in tools() {
        b = b.tool(t);
    }
    let server = b.start().await.expect("asp server");
    let connect = connector(|addr: Option<SocketAddr>| async move {
        let url = format!("ws://{}{}", addr.expect("addr"), asp_async::DEFAULT_PATH);
        let client = asp_tokio::connect(&url).await.expect("asp connect");
        Box::new(AspBench::new(client)) as Box<dyn Bench>
    });
    (server, connect)
}

/// ASP on smol: server + connector.
pub async fn smol_server() -> (asp_smol::Server, Connect) {
    let mut b = asp_smol::server();
    for t in tools() {
        b = b.tool(t);
    }
    let server = b.start().await.expect("asp server");
    let connect = connector(|addr: Option<SocketAddr>| async move {
        let url = format!("ws://{}{}", addr.expect("addr"), asp_async::DEFAULT_PATH);
        let client = asp_smol::connect(&url).await.expect("asp connect");
        Box::new(AspBench::new(client)) as Box<dyn Bench>
    });
    (server, connect)
}

// ---------------------------------------------------------------------------------------
// The floor: raw tokio-tungstenite, the same bytes ASP puts in its messages.

fn encode(f: &Frame) -> Bytes {
    let mut b = BytesMut::new();
    codec::encode(f, &mut b);
    b.freeze()
}

fn value<T: Serialize + ?Sized>(v: &T) -> RawValue {
    asp_async::to_value(v).expect("encode")
}

/// The INVOKE an ASP client sends for the echo call.
fn invoke_bytes() -> Bytes {
    encode(&Frame::Invoke(Invoke {
        id: RequestId(1),
        tool: Text::from_static("echo"),
        args: Some(value(&EchoArgs {
            text: PAYLOAD.into(),
        })),
        deadline_ms: 0,
        meta: None,
    }))
}

/// The COMPLETE an ASP server answers it with (`wall_us` of a typical size).
fn complete_bytes(id: u16) -> Bytes {
    encode(&Frame::Complete(Complete {
        id: RequestId(id),
        status: Status::Ok,
        result: Some(value(PAYLOAD)),
        metrics: Metrics {
            wall_us: Some(200),
            ..Metrics::default()
        },
    }))
}

fn stream_bytes(id: u16, seq: u32) -> Bytes {
    encode(&Frame::Stream(Stream {
        id: RequestId(id),
        data: Bytes::from_static(CHUNK.as_bytes()),
        text: true,
        seq,
        fin: false,
    }))
}

/// A raw WebSocket server: answers each binary message with a COMPLETE-sized message; on a
/// text message `stream N`, sends N STREAM-sized messages (fed, one flush) and a COMPLETE.
pub async fn raw_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tcp.set_nodelay(true).ok();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let reply = complete_bytes(1);
                let chunk = stream_bytes(1, 0);
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Text(t) => {
                            let n: usize = t
                                .as_str()
                                .strip_prefix("stream ")
                                .and_then(|n| n.parse().ok())
                                .unwrap_or(0);
                            for _ in 0..n {
                                if ws.feed(Message::Binary(chunk.clone())).await.is_err() {
                                    return;
                                }
                            }
                            if ws.send(Message::Binary(reply.clone())).await.is_err() {
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
    addr
}

type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct RawBench {
    ws: futures::lock::Mutex<RawWs>,
    request: Bytes,
}

impl Bench for RawBench {
    fn call(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut ws = self.ws.lock().await;
            ws.send(Message::Binary(self.request.clone()))
                .await
                .expect("send");
            let m = ws.next().await.expect("reply").expect("reply");
            assert!(m.is_binary());
        })
    }

    fn stream(&self, n: usize) -> BoxFuture<'_, usize> {
        Box::pin(async move {
            let mut ws = self.ws.lock().await;
            ws.send(Message::text(format!("stream {n}")))
                .await
                .expect("send");
            for _ in 0..=n {
                ws.next().await.expect("msg").expect("msg");
            }
            n
        })
    }
}

pub fn raw_connect() -> Connect {
    connector(|addr: Option<SocketAddr>| async move {
        let url = format!("ws://{}/", addr.expect("addr"));
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true)
            .await
            .expect("raw connect");
        Box::new(RawBench {
            ws: futures::lock::Mutex::new(ws),
            request: invoke_bytes(),
        }) as Box<dyn Bench>
    })
}

// ---------------------------------------------------------------------------------------
// The relay (`asp-relay`) in front of a small hyper function.

#[cfg(feature = "relay")]
pub mod relay {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;

    #[derive(Deserialize)]
    struct Body<T> {
        args: T,
    }

    /// `POST /invoke` (SPEC §15.2): answers with a frames body (§15.3): for `echo`, one
    /// COMPLETE whose result is the text; for `stream`, n STREAM frames and a COMPLETE.
    async fn function(
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        let tool = req
            .headers()
            .get("x-asp-tool")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = req.into_body().collect().await.map(|b| b.to_bytes());
        let Ok(body) = body else {
            return Ok(Response::builder()
                .status(400)
                .body(Full::default())
                .unwrap());
        };
        let mut out = BytesMut::new();
        match tool.as_str() {
            "echo" => {
                let b: Body<EchoArgs> = rmp_serde::from_slice(&body).expect("echo body");
                codec::encode(
                    &Frame::Complete(Complete {
                        id: RequestId(1),
                        status: Status::Ok,
                        result: Some(value(&b.args.text)),
                        metrics: Metrics::default(),
                    }),
                    &mut out,
                );
            }
            "stream" => {
                let b: Body<StreamArgs> = rmp_serde::from_slice(&body).expect("stream body");
                for i in 0..b.args.n {
                    out.extend_from_slice(&stream_bytes(1, i as u32));
                }
                codec::encode(
                    &Frame::Complete(Complete {
                        id: RequestId(1),
                        status: Status::Ok,
                        result: None,
                        metrics: Metrics::default(),
                    }),
                    &mut out,
                );
            }
            _ => {
                return Ok(Response::builder()
                    .status(404)
                    .body(Full::default())
                    .unwrap());
            }
        }
        Ok(Response::builder()
            .header("content-type", "application/vnd.asp.frames")
            .body(Full::new(out.freeze()))
            .unwrap())
    }

    /// Starts the function (hyper, HTTP/1.1 keep-alive, TCP_NODELAY) and the relay in front
    /// of it, on the current tokio runtime.
    pub async fn start() -> (asp_relay::Relay, Connect) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let fn_addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tcp.set_nodelay(true).ok();
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(function))
                        .await;
                });
            }
        });
        let config =
            asp_relay::RelayConfig::new(format!("http://{fn_addr}").parse().expect("uri"));
        let relay = asp_relay::Relay::start(config).await.expect("relay");
        let connect = connector(|addr: Option<SocketAddr>| async move {
            let url = format!("ws://{}{}", addr.expect("addr"), asp_async::DEFAULT_PATH);
            let client = asp_tokio::connect(&url).await.expect("relay connect");
            Box::new(AspBench::new(client)) as Box<dyn Bench>
        });
        (relay, connect)
    }
}
