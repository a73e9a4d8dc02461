//! The MCP side, with the official Rust SDK (`rmcp`): the same echo tool and a streaming tool
//! that reports its chunks as progress notifications; served over Streamable HTTP (axum) and
//! over an in-process pipe (`tokio::io::duplex`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::serve::ListenerExt;
use futures::future::BoxFuture;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, ClientRequest, JsonObject, ProgressNotificationParam,
    ProtocolVersion, RequestMetaObject, ServerCapabilities, ServerConfig, ServerResult,
};
use rmcp::service::{
    ClientLifecycleMode, ClientServiceExt, NotificationContext, PeerRequestOptions, RunningService,
};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{
    schemars, tool, tool_handler, tool_router, ClientHandler, ErrorData, Peer, RoleClient,
    RoleServer, ServerHandler, ServiceExt,
};
use serde::Deserialize;

use crate::count::{Counters, Counting};
use crate::harness::{connector, Bench, Connect, CHUNK, PAYLOAD};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct EchoArgs {
    /// The text to echo.
    pub text: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct StreamArgs {
    /// How many 32-byte chunks to send as progress notifications.
    pub n: usize,
}

#[derive(Clone)]
pub struct BenchServer {
    tool_router: ToolRouter<Self>,
}

impl BenchServer {
    pub fn new() -> Self {
        BenchServer {
            tool_router: Self::tool_router(),
        }
    }
}

#[tool_router]
impl BenchServer {
    #[tool(description = "echoes its text")]
    fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    #[tool(description = "streams n chunks of 32 bytes as progress notifications")]
    async fn stream(
        &self,
        Parameters(StreamArgs { n }): Parameters<StreamArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
    ) -> Result<String, ErrorData> {
        let token = meta
            .get_progress_token()
            .ok_or_else(|| ErrorData::invalid_params("a progress token is required", None))?;
        for i in 0..n {
            peer.notify_progress(
                ProgressNotificationParam::new(token.clone(), i as f64).with_message(CHUNK),
            )
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        }
        Ok("done".into())
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for BenchServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// The client handler: counts progress notifications.
#[derive(Default)]
pub struct BenchClient {
    progress: Arc<Progress>,
}

#[derive(Default)]
struct Progress {
    count: AtomicUsize,
    bytes: AtomicUsize,
    notify: tokio::sync::Notify,
}

impl ClientHandler for BenchClient {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let len = params.message.as_deref().map_or(0, str::len);
        self.progress.bytes.fetch_add(len, Ordering::AcqRel);
        self.progress.count.fetch_add(1, Ordering::AcqRel);
        self.progress.notify.notify_waiters();
    }
}

pub struct McpBench {
    client: RunningService<RoleClient, BenchClient>,
    progress: Arc<Progress>,
    args: JsonObject,
    counters: Option<Arc<Counters>>,
}

impl McpBench {
    fn new(
        client: RunningService<RoleClient, BenchClient>,
        counters: Option<Arc<Counters>>,
    ) -> Self {
        let progress = client.service().progress.clone();
        let mut args = JsonObject::new();
        args.insert("text".into(), PAYLOAD.into());
        McpBench {
            client,
            progress,
            args,
            counters,
        }
    }
}

impl Bench for McpBench {
    fn call(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let r = self
                .client
                .call_tool(CallToolRequestParams::new("echo").with_arguments(self.args.clone()))
                .await
                .expect("tools/call");
            assert_ne!(r.is_error, Some(true));
            debug_assert!(serde_json::to_string(&r).unwrap().contains(PAYLOAD));
        })
    }

    fn stream(&self, n: usize) -> BoxFuture<'_, usize> {
        Box::pin(async move {
            let start = self.progress.count.load(Ordering::Acquire);
            let mut args = JsonObject::new();
            args.insert("n".into(), n.into());
            let handle = self
                .client
                .send_cancellable_request(
                    ClientRequest::CallToolRequest(CallToolRequest::new(
                        CallToolRequestParams::new("stream").with_arguments(args),
                    )),
                    PeerRequestOptions::no_options(),
                )
                .await
                .expect("send");
            let r = handle.await_response().await.expect("response");
            assert!(matches!(r, ServerResult::CallToolResult(_)), "{r:?}");
            // Notifications are handled apart from responses: wait for the last of them.
            loop {
                let notified = self.progress.notify.notified();
                let got = self.progress.count.load(Ordering::Acquire) - start;
                if got >= n {
                    return got;
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {
                        panic!("progress notifications lost: {got} of {n}");
                    }
                }
            }
        })
    }

    fn counters(&self) -> Option<Arc<Counters>> {
        self.counters.clone()
    }
}

/// Which Streamable HTTP setup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpMode {
    /// What the SDK does with no options: `StreamableHttpServerConfig::default()` (sessions,
    /// SSE responses, 15 s keep-alive) behind plain `axum::serve`, and
    /// `StreamableHttpClientTransport::from_uri` (its reqwest client has pooling off) with
    /// `serve()` (legacy `initialize` handshake).
    OutOfTheBox,
    /// The fastest setup we found: stateless, JSON responses, no keep-alive; TCP_NODELAY on the
    /// server's sockets; a pooled reqwest client (TCP_NODELAY is its default); `initialize`.
    BestCase,
    /// As `BestCase`, over HTTP/2 without TLS (h2c, prior knowledge): one multiplexed
    /// connection and HPACK header compression.
    BestCaseH2,
    /// As `BestCase`, but the 2026-07-28 lifecycle (`server/discover`, no `initialize`; each
    /// request carries protocol version, client info and capabilities in `_meta`).
    Modern,
}

pub async fn http_server(mode: HttpMode) -> (SocketAddr, Connect) {
    let config = match mode {
        HttpMode::OutOfTheBox => StreamableHttpServerConfig::default(),
        HttpMode::BestCase | HttpMode::BestCaseH2 | HttpMode::Modern => {
            StreamableHttpServerConfig::default()
                .with_legacy_session_mode(false)
                .with_json_response(true)
                .with_sse_keep_alive(None)
        }
    };
    let service: StreamableHttpService<BenchServer, LocalSessionManager> =
        StreamableHttpService::new(|| Ok(BenchServer::new()), Default::default(), config);
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    if mode == HttpMode::OutOfTheBox {
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
    } else {
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
    }
    let connect = connector(move |addr: Option<SocketAddr>| async move {
        let uri = format!("http://{}/mcp", addr.expect("addr"));
        let client = match mode {
            HttpMode::OutOfTheBox => {
                let transport = StreamableHttpClientTransport::from_uri(uri);
                BenchClient::default()
                    .serve(transport)
                    .await
                    .expect("mcp connect")
            }
            HttpMode::BestCase | HttpMode::BestCaseH2 | HttpMode::Modern => {
                let mut http = reqwest::Client::builder().tcp_nodelay(true);
                if mode == HttpMode::BestCaseH2 {
                    http = http.http2_prior_knowledge();
                }
                let http = http.build().expect("reqwest");
                let transport = StreamableHttpClientTransport::with_client(
                    http,
                    StreamableHttpClientTransportConfig::with_uri(uri),
                );
                if mode == HttpMode::Modern {
                    BenchClient::default()
                        .serve_with_lifecycle(
                            transport,
                            ClientLifecycleMode::Discover {
                                preferred_versions: vec![ProtocolVersion::LATEST],
                            },
                        )
                        .await
                        .expect("mcp connect")
                } else {
                    BenchClient::default()
                        .serve(transport)
                        .await
                        .expect("mcp connect")
                }
            }
        };
        Box::new(McpBench::new(client, None)) as Box<dyn Bench>
    });
    (addr, connect)
}

/// MCP over an in-process pipe (`tokio::io::duplex`, newline-delimited JSON-RPC), a new
/// server per client; bytes counted on the client's end of the pipe.
pub fn pipe_connect() -> Connect {
    connector(|_addr: Option<SocketAddr>| async move {
        let (server_end, client_end) = tokio::io::duplex(64 << 10);
        tokio::spawn(async move {
            if let Ok(running) = BenchServer::new().serve(server_end).await {
                let _ = running.waiting().await;
            }
        });
        let counters = Arc::new(Counters::default());
        let client = BenchClient::default()
            .serve(Counting::new(client_end, counters.clone()))
            .await
            .expect("mcp pipe connect");
        Box::new(McpBench::new(client, Some(counters))) as Box<dyn Bench>
    })
}
