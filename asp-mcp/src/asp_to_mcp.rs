//! ASP → MCP: an ASP server's tools, served to MCP hosts over stdio or Streamable HTTP.
//!
//! One ASP client connection carries every MCP session (with Streamable HTTP, many hosts
//! share the socket, each call an invocation of its own). The ASP tool set (TOOL_DEF) is
//! `tools/list`, and its changes are `notifications/tools/list_changed` (on a
//! `subscriptions/listen` stream for 2026-07-28 hosts). A `tools/call` is an INVOKE: STREAM
//! chunks become progress notifications (when the host sent a progress token), COMPLETE
//! the result (`convert::complete_to_result`), a cancelled request an INTERRUPT. A REQUEST
//! (SPEC §8) becomes `elicitation/create` for 2025-era hosts that offer elicitation, and an
//! `input_required` result for 2026-07-28 hosts, whose retry carries the answer (the
//! invocation waits, parked, meanwhile).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use asp_tokio::asp_proto::frame::{Reply, ReplyStatus, Request};
use asp_tokio::{reply, Error as AspError, ErrorCode, Invocation, InvokeOptions};
use base64::Engine;
use futures::StreamExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ElicitRequest,
    ElicitRequestParams, ElicitResult, ElicitationAction, ElicitationSchema, Implementation,
    InputRequest, InputRequiredResult, ListToolsResult, PaginatedRequestParams,
    ProgressNotificationParam, ProtocolVersion, ServerCapabilities, ServerConfig,
    SubscriptionFilter,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::convert::{complete_to_result, def_to_tool, json_to_raw, raw_to_json};

/// Who answers the REQUESTs of one invocation.
#[derive(Clone)]
enum Asker {
    /// A 2025-era host session: `elicitation/create` on its peer.
    Peer(Peer<RoleServer>),
    /// A 2026-07-28 host, which takes no server requests: the call in progress returns an
    /// `input_required` result and the host's retry carries the answer (MRTR).
    Retry(mpsc::Sender<(Request, oneshot::Sender<Reply>)>),
}

type Asks = mpsc::Receiver<(Request, oneshot::Sender<Reply>)>;

/// An invocation whose `tools/call` returned `input_required` and waits for the host's retry.
struct Parked {
    inv: Invocation,
    asks: Option<Asks>,
    /// The question's key in `inputRequests`, and where its answer goes.
    key: String,
    reply: oneshot::Sender<Reply>,
    request: Request,
}

/// How long a parked invocation waits for the host's retry before it is interrupted.
const PARK_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// The state every MCP session of one bridge shares: the ASP client and who to ask.
pub struct AspTools {
    client: asp_tokio::Client,
    /// ASP invocation id → who answers its REQUESTs.
    calls: Arc<Mutex<HashMap<u16, Asker>>>,
    /// `requestState` → a parked invocation (bounded in time by [`PARK_LIMIT`]).
    parked: Arc<Mutex<HashMap<String, Parked>>>,
    /// The tool set changed.
    changes: broadcast::Sender<()>,
}

impl std::fmt::Debug for AspTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AspTools")
    }
}

impl AspTools {
    /// Connects to the ASP server at `url` (with a bearer `token` if given).
    pub async fn connect(url: &str, token: Option<&str>) -> Result<Arc<AspTools>, AspError> {
        let calls: Arc<Mutex<HashMap<u16, Asker>>> = Arc::default();
        let asked = calls.clone();
        let mut builder = asp_tokio::client().on_request(move |req: Request| {
            let asker = req.invocation.and_then(|inv| {
                asked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&inv.0)
                    .cloned()
            });
            async move {
                match asker {
                    Some(Asker::Peer(peer)) => elicit(Some(peer), req).await,
                    Some(Asker::Retry(tx)) => {
                        let (answer, rx) = oneshot::channel();
                        if tx.send((req.clone(), answer)).await.is_err() {
                            return reply(&req, ReplyStatus::Declined, None);
                        }
                        // Dropped unanswered (the host never retried): cancelled.
                        rx.await
                            .unwrap_or_else(|_| reply(&req, ReplyStatus::Cancelled, None))
                    }
                    None => elicit(None, req).await,
                }
            }
        });
        if let Some(t) = token {
            builder = builder.token(t);
        }
        let client = builder.connect(url).await?;
        let (changes, _) = broadcast::channel(16);
        let mut watch = client.tool_changes();
        let tx = changes.clone();
        tokio::spawn(async move {
            while watch.next().await.is_some() {
                let _ = tx.send(());
            }
        });
        Ok(Arc::new(AspTools {
            client,
            calls,
            parked: Arc::default(),
            changes,
        }))
    }

    /// The ASP client (for its tool set and session).
    pub fn client(&self) -> &asp_tokio::Client {
        &self.client
    }

    /// An MCP server handler over these tools, for one MCP session.
    pub fn handler(self: &Arc<Self>) -> McpFace {
        McpFace {
            tools: self.clone(),
            listening: Arc::default(),
        }
    }
}

/// Asks the MCP host what the ASP server asks (SPEC §8 REQUEST → `elicitation/create`).
async fn elicit(peer: Option<Peer<RoleServer>>, req: Request) -> Reply {
    let Some(peer) = peer else {
        return reply(&req, ReplyStatus::Declined, None);
    };
    let supported = peer.peer_info().is_some_and(|i| {
        i.capabilities.elicitation.is_some()
            && i.protocol_version.as_str() < ProtocolVersion::V_2026_07_28.as_str()
    });
    if !supported {
        return reply(&req, ReplyStatus::Declined, None);
    }
    let Some(params) = elicit_params(&req) else {
        return reply(&req, ReplyStatus::Declined, None);
    };
    match peer.create_elicitation(params).await {
        Ok(r) => answer(&req, &r),
        Err(_) => reply(&req, ReplyStatus::Cancelled, None),
    }
}

/// The REPLY for an elicitation result.
fn answer(req: &Request, r: &ElicitResult) -> Reply {
    match r.action {
        ElicitationAction::Accept => reply(
            req,
            ReplyStatus::Answered,
            r.content.as_ref().map(json_to_raw),
        ),
        ElicitationAction::Decline => reply(req, ReplyStatus::Declined, None),
        _ => reply(req, ReplyStatus::Cancelled, None),
    }
}

/// A REQUEST as an elicitation form: `body.message` (or the body itself if it is a string)
/// and `body.schema`, else a form of one string field `answer`.
fn elicit_params(req: &Request) -> Option<ElicitRequestParams> {
    let body = req
        .body
        .as_ref()
        .and_then(raw_to_json)
        .unwrap_or(Value::Null);
    let (message, schema) = match &body {
        Value::String(s) => (s.clone(), None),
        Value::Object(o) => (
            o.get("message")
                .and_then(Value::as_str)
                .unwrap_or(req.kind.as_str())
                .to_owned(),
            o.get("schema").cloned(),
        ),
        other => (other.to_string(), None),
    };
    let schema = schema
        .and_then(|s| serde_json::from_value::<ElicitationSchema>(s).ok())
        .or_else(|| {
            serde_json::from_value(serde_json::json!({
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"],
            }))
            .ok()
        });
    Some(ElicitRequestParams::FormElicitationParams {
        meta: None,
        message,
        requested_schema: schema?,
    })
}

/// One MCP session's view of the ASP tools.
#[derive(Clone)]
pub struct McpFace {
    tools: Arc<AspTools>,
    /// Subscribed when a `subscriptions/listen` is accepted, which rmcp acknowledges before
    /// it runs [`ServerHandler::listen`]: a change between the two is not lost.
    listening: Arc<Mutex<Option<broadcast::Receiver<()>>>>,
}

impl ServerHandler for McpFace {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("asp-mcp", env!("CARGO_PKG_VERSION")))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = self.tools.client.tools().iter().map(def_to_tool).collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let modern = context
            .protocol_version()
            .is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str());
        let resumed = request.request_state.as_ref().and_then(|state| {
            self.tools
                .parked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(state)
        });
        let (mut inv, mut asks) = match resumed {
            // The host's retry of an `input_required` call: its answer is the REPLY.
            Some(p) => {
                let result = request
                    .input_responses
                    .as_ref()
                    .and_then(|r| r.get(&p.key))
                    .and_then(|v| serde_json::from_value::<ElicitResult>(v.clone()).ok());
                let r = match result {
                    Some(r) => answer(&p.request, &r),
                    None => reply(&p.request, ReplyStatus::Cancelled, None),
                };
                let _ = p.reply.send(r);
                (p.inv, p.asks)
            }
            None => {
                let args = request.arguments.map(|a| json_to_raw(&Value::Object(a)));
                let (asker, asks) = if modern {
                    let (tx, rx) = mpsc::channel(4);
                    (Asker::Retry(tx), Some(rx))
                } else {
                    (Asker::Peer(context.peer.clone()), None)
                };
                // The asker is registered under the same lock as the INVOKE goes out: the
                // server's REQUEST can arrive (on another worker) before `invoke_raw`
                // returns, and its handler must find who to ask, not decline. No cycle:
                // the client calls request handlers outside the connection's lock.
                let mut calls = self.tools.calls.lock().unwrap_or_else(|e| e.into_inner());
                let inv = self
                    .tools
                    .client
                    .invoke_raw(&request.name, args, InvokeOptions::default())
                    .map_err(|e| ErrorData::internal_error(format!("ASP: {e}"), None))?;
                calls.insert(inv.id().0, asker);
                drop(calls);
                (inv, asks)
            }
        };
        let mut forget = Forget {
            calls: self.tools.calls.clone(),
            id: inv.id().0,
            armed: true,
        };
        let token = context.meta.get_progress_token();
        let mut n = 0u64;
        loop {
            tokio::select! {
                chunk = inv.next() => {
                    let Some(chunk) = chunk else { break };
                    n += 1;
                    if let Some(token) = &token {
                        let message = match chunk.as_str() {
                            Some(s) => s.to_owned(),
                            None => base64::engine::general_purpose::STANDARD.encode(&chunk.data),
                        };
                        let p = ProgressNotificationParam::new(token.clone(), n as f64)
                            .with_message(message);
                        let _ = context.peer.notify_progress(p).await;
                    }
                }
                Some((req, reply_to)) = next_ask(&mut asks) => {
                    // A 2026-07-28 host: park the invocation and ask with `input_required`.
                    let Some(params) = elicit_params(&req) else {
                        let _ = reply_to.send(reply(&req, ReplyStatus::Declined, None));
                        continue;
                    };
                    let key = format!("asp-{}", req.id.0);
                    let state = new_state();
                    let mut requests = std::collections::BTreeMap::new();
                    requests.insert(
                        key.clone(),
                        InputRequest::Elicitation(ElicitRequest::new(params)),
                    );
                    forget.armed = false;
                    let parked = Parked { inv, asks: asks.take(), key, reply: reply_to, request: req };
                    self.tools
                        .parked
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(state.clone(), parked);
                    let all = self.tools.parked.clone();
                    let calls = self.tools.calls.clone();
                    let expired = state.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(PARK_LIMIT).await;
                        let gone = all.lock().unwrap_or_else(|e| e.into_inner()).remove(&expired);
                        if let Some(p) = gone {
                            calls.lock().unwrap_or_else(|e| e.into_inner()).remove(&p.inv.id().0);
                            // Dropping the invocation interrupts it.
                        }
                    });
                    return Ok(CallToolResponse::InputRequired(InputRequiredResult::new(
                        Some(requests),
                        Some(state),
                    )));
                }
                _ = context.ct.cancelled() => {
                    // notifications/cancelled (or, on 2026-07-28 HTTP, the closed stream).
                    inv.interrupt();
                    break;
                }
            }
        }
        match inv.completion().await {
            Ok(c) => Ok(complete_to_result(c.status, c.result.as_ref()).into()),
            Err(AspError::Remote(e)) => asp_error(e.code, e.message.as_ref().map(|m| m.as_str())),
            Err(e) => Err(ErrorData::internal_error(format!("ASP: {e}"), None)),
        }
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // 2025-era session: push list changes as plain notifications.
        let mut rx = self.tools.changes.subscribe();
        let peer = context.peer;
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        if peer.notify_tool_list_changed().await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let _ = requested;
        *self.listening.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(self.tools.changes.subscribe());
        Some(SubscriptionFilter::builder().tools_list_changed().build())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        // 2026-07-28: list changes go on the host's `subscriptions/listen` stream.
        let early = self
            .listening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let mut rx = early.unwrap_or_else(|| self.tools.changes.subscribe());
        loop {
            tokio::select! {
                _ = context.cancelled() => return Ok(()),
                r = rx.recv() => match r {
                    Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        if context.sink().notify_tool_list_changed().await.is_err() {
                            return Ok(());
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        }
    }
}

/// An ASP ERROR as the MCP answer: tool-level failures (application codes, SPEC §12.1) are
/// results with `isError` so the model sees them (MCP SEP-1303); an unknown tool is the
/// protocol error `-32602`; the rest are internal errors.
fn asp_error(code: ErrorCode, message: Option<&str>) -> Result<CallToolResponse, ErrorData> {
    let text = format!("{code:?}: {}", message.unwrap_or(""));
    if code == ErrorCode::UNKNOWN_TOOL {
        return Err(ErrorData::invalid_params(text, None));
    }
    if code.0 >= 0x40 || code == ErrorCode::DEADLINE_EXCEEDED {
        return Ok(CallToolResult::error(vec![ContentBlock::text(text)]).into());
    }
    Err(ErrorData::internal_error(text, None))
}

/// The next REQUEST for a 2026-07-28 call (never, for others).
async fn next_ask(asks: &mut Option<Asks>) -> Option<(Request, oneshot::Sender<Reply>)> {
    match asks {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// An unguessable `requestState`: it names a parked invocation, and a host must not be
/// able to answer another host's question.
fn new_state() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Forgets the invocation's asker when the call ends (not when it is parked).
struct Forget {
    calls: Arc<Mutex<HashMap<u16, Asker>>>,
    id: u16,
    armed: bool,
}

impl Drop for Forget {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// Serves `tools` to one MCP host on this process's stdin/stdout until it disconnects.
pub async fn serve_stdio(tools: Arc<AspTools>) -> Result<(), String> {
    use rmcp::ServiceExt;
    let running = tools
        .handler()
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| e.to_string())?;
    running.waiting().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Serves `tools` over Streamable HTTP at `http://{addr}/mcp` (both protocol generations:
/// 2025-era sessions and stateless 2026-07-28 requests). Returns the bound address and the
/// server task; cancel `ct` to stop it.
pub async fn serve_http(
    tools: Arc<AspTools>,
    addr: SocketAddr,
    ct: tokio_util::sync::CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let config = StreamableHttpServerConfig::default().with_cancellation_token(ct.child_token());
    let service = StreamableHttpService::new(
        move || Ok(tools.handler()),
        LocalSessionManager::default().into(),
        config,
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { ct.cancelled().await })
            .await;
    });
    Ok((bound, task))
}
