//! MCP → ASP: the tools of an MCP server, served as an ASP server.
//!
//! Each ASP client gets an MCP session of its own (a child process of its own for stdio),
//! so state never leaks between clients. The session's `tools/list` is the connection's
//! initial tool set (SPEC §6.2 step 3); a list change re-lists and pushes TOOL_DEF adds,
//! updates and removals (SPEC §9). Each INVOKE is one `tools/call` (many in flight):
//! progress notifications become STREAM chunks, the result COMPLETE, an INTERRUPT
//! `notifications/cancelled`, an elicitation a REQUEST (SPEC §8), MCP errors ERROR codes
//! (`convert::service_error`). A session that dies (crash, garbage on stdout, closed HTTP
//! session) fails its calls in flight with `UNAVAILABLE` (retryable) and is restarted with
//! backoff; the ASP connection and its other state stay.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asp_tokio::{
    Args, ConnectionHook, ErrorCode, Output, ServerConnection, ToolContext, ToolError,
};
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CancelledNotification, CancelledNotificationParam,
    ClientNotification, ClientRequest, InputRequest, ProgressNotificationParam, ServerResult, Tool,
};
use rmcp::service::{PeerRequestOptions, ServiceError};
use rmcp::{Peer, RoleClient};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::convert::{mcp_error, raw_to_json, result_to_complete, service_error, tool_to_def};
use crate::upstream::{self, Generation, Routes, Upstream};

/// Settings of an MCP → ASP bridge.
#[derive(Clone, Debug)]
pub struct McpToAspConfig {
    /// The MCP server.
    pub upstream: Upstream,
    /// The MCP protocol generation to speak to it.
    pub generation: Generation,
    /// Where the ASP server listens.
    pub listen: SocketAddr,
    /// A `tools/call` that has not answered after this long ends with `UPSTREAM_TIMEOUT`, is
    /// cancelled upstream, and the session is probed; a session that does not answer the
    /// probe either is restarted (a hung server). `None`: only the INVOKE's own deadline
    /// applies (SPEC §7.4).
    pub call_timeout: Option<Duration>,
    /// Bearer token ASP clients must present, if any.
    pub token: Option<String>,
}

impl McpToAspConfig {
    /// Defaults: listen on `127.0.0.1:0`, auto generation, no call timeout, no token.
    pub fn new(upstream: Upstream) -> Self {
        McpToAspConfig {
            upstream,
            generation: Generation::Auto,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            call_timeout: None,
            token: None,
        }
    }
}

/// Starts an ASP server whose tools are the MCP server's.
pub async fn serve(config: McpToAspConfig) -> std::io::Result<asp_tokio::Server> {
    let bridge = Arc::new(Bridge {
        config: config.clone(),
        clients: Mutex::new(HashMap::new()),
    });
    let fallback = bridge.clone();
    let mut builder = asp_tokio::server()
        .bind(config.listen)
        .on_connection(Hook(bridge.clone()))
        .fallback(move |ctx: ToolContext, args: Args| {
            let bridge = fallback.clone();
            async move { bridge.invoke(ctx, args).await }
        });
    if let Some(t) = &config.token {
        builder = builder.token(t.clone());
    }
    builder.start().await
}

struct Bridge {
    config: McpToAspConfig,
    /// ASP connection id → its MCP side.
    clients: Mutex<HashMap<String, Arc<Client>>>,
}

/// One ASP client's MCP side.
struct Client {
    routes: Arc<Routes>,
    /// The live session's peer (`None` while it is down or restarting).
    peer: watch::Sender<Option<Peer<RoleClient>>>,
    /// The tool set last listed, by name.
    tools: Mutex<BTreeMap<String, Tool>>,
    /// Ends the supervisor (the ASP connection closed).
    closed: CancellationToken,
    /// Restart the session now (a probe found it hung).
    restart: tokio::sync::Notify,
}

struct Hook(Arc<Bridge>);

impl ConnectionHook for Hook {
    fn connected(
        &self,
        conn: ServerConnection,
        _upgrade: &asp_tokio::tungstenite::http::HeaderMap,
    ) {
        let routes = Arc::new(Routes::default());
        *routes.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        let client = Arc::new(Client {
            routes,
            peer: watch::channel(None).0,
            tools: Mutex::new(BTreeMap::new()),
            closed: CancellationToken::new(),
            restart: tokio::sync::Notify::new(),
        });
        self.0
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(conn.id().to_owned(), client);
    }

    fn prepare(&self, conn: ServerConnection) -> asp_tokio::BoxFuture<'static, ()> {
        let bridge = self.0.clone();
        Box::pin(async move {
            let Some(client) = bridge.client(conn.id()) else {
                return;
            };
            // The first session is started before the connection reads HELLO, so its tools
            // are the initial set; later ones (restarts) run in the supervisor.
            let first = tokio::time::timeout(
                upstream::START_TIMEOUT,
                start(&bridge.config, &client, &conn),
            )
            .await
            .unwrap_or_else(|_| Err("the MCP server did not start in time".into()));
            if let Err(e) = &first {
                tracing::warn!(upstream = %bridge.config.upstream, error = %e, "MCP session failed to start");
            }
            tokio::spawn(supervise(bridge.config.clone(), client, conn, first.ok()));
        })
    }

    fn closed(&self, conn: &ServerConnection) {
        let client = self
            .0
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(conn.id());
        if let Some(c) = client {
            c.closed.cancel();
        }
    }
}

impl Bridge {
    fn client(&self, id: &str) -> Option<Arc<Client>> {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    async fn invoke(&self, ctx: ToolContext, args: Args) -> Result<Output, ToolError> {
        let client = ctx
            .connection()
            .and_then(|c| self.client(c.id()))
            .ok_or_else(|| unavailable("connection closing"))?;
        // While the session restarts, a call waits for the new one (bounded by the start
        // timeout) rather than failing: only the calls the dead session held are lost.
        let mut live = client.peer.subscribe();
        let peer = tokio::time::timeout(upstream::START_TIMEOUT, async {
            // A peer whose transport closed is a session that just died and that the
            // supervisor has not replaced yet.
            live.wait_for(|p| p.as_ref().is_some_and(|p| !p.is_transport_closed()))
                .await
                .ok()
                .and_then(|p| p.clone())
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| unavailable("the MCP server is not running (restarting)"))?;
        let arguments = match args.raw().and_then(raw_to_json) {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) => Some(o),
            Some(_) => {
                return Err(ToolError::invalid_arguments(
                    "MCP tool arguments must be a map",
                ))
            }
        };
        let mut params = CallToolRequestParams::new(ctx.tool().to_owned());
        params.arguments = arguments;
        let call = call(&client.routes, &peer, &ctx, params);
        let result = match self.config.call_timeout {
            None => call.await,
            Some(t) => match tokio::time::timeout(t, call).await {
                Ok(r) => r,
                Err(_) => {
                    // The call's guard sent `notifications/cancelled`. Is the server alive?
                    let probe =
                        tokio::time::timeout(t.min(Duration::from_secs(5)), peer.list_tools(None))
                            .await;
                    if !matches!(probe, Ok(Ok(_))) {
                        tracing::warn!("MCP server hung: restarting it");
                        // Later calls wait for the new session rather than the hung one.
                        client.peer.send_replace(None);
                        client.restart.notify_one();
                    }
                    return Err(ToolError::Error {
                        code: ErrorCode::UPSTREAM_TIMEOUT,
                        message: format!("the MCP server did not answer within {t:?}"),
                        retryable: true,
                    });
                }
            },
        };
        result
    }
}

fn unavailable(why: &str) -> ToolError {
    ToolError::Error {
        code: ErrorCode::UNAVAILABLE,
        message: why.to_owned(),
        retryable: true,
    }
}

/// Opens a session for `client`, lists its tools and installs them on the connection.
async fn start(
    config: &McpToAspConfig,
    client: &Client,
    conn: &ServerConnection,
) -> Result<upstream::Session, String> {
    let session =
        upstream::connect(&config.upstream, config.generation, client.routes.clone()).await?;
    let tools = session
        .peer()
        .list_all_tools()
        .await
        .map_err(|e| format!("tools/list failed: {e}"))?;
    sync_tools(client, conn, tools);
    client.peer.send_replace(Some(session.peer().clone()));
    Ok(session)
}

/// Makes the connection's tool set the listed one: TOOL_DEF add, update (a definition that
/// changed) and remove (SPEC §9).
fn sync_tools(client: &Client, conn: &ServerConnection, listed: Vec<Tool>) {
    let mut known = client.tools.lock().unwrap_or_else(|e| e.into_inner());
    let new: BTreeMap<String, Tool> = listed
        .into_iter()
        .map(|t| (t.name.to_string(), t))
        .collect();
    conn.with(|l| {
        for name in known.keys() {
            if !new.contains_key(name) {
                let _ = l.remove_tool(name);
            }
        }
        for (name, tool) in &new {
            if known.get(name) != Some(tool) {
                // `add_tool` sends `update` for a name the client knows (SPEC §9).
                if let Err(e) = l.add_tool(tool_to_def(tool)) {
                    tracing::warn!(tool = %name, error = %e, "MCP tool not offered over ASP");
                }
            }
        }
    });
    *known = new;
}

/// Keeps one ASP client's MCP session alive: re-lists on list changes, restarts a session
/// that died or hung (20 ms backoff doubling to 5 s), closes it when the client leaves.
async fn supervise(
    config: McpToAspConfig,
    client: Arc<Client>,
    conn: ServerConnection,
    mut session: Option<upstream::Session>,
) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let Some(s) = session.take() else {
            client.peer.send_replace(None);
            tokio::select! {
                _ = client.closed.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            match tokio::time::timeout(upstream::START_TIMEOUT, start(&config, &client, &conn))
                .await
            {
                Ok(Ok(s)) => session = Some(s),
                Ok(Err(e)) => {
                    tracing::warn!(upstream = %config.upstream, error = %e, "MCP session restart failed")
                }
                Err(_) => {
                    tracing::warn!(upstream = %config.upstream, "MCP session restart timed out")
                }
            }
            continue;
        };
        backoff = Duration::from_millis(20);
        let listen = upstream::is_modern(&s).then(|| {
            let routes = client.routes.clone();
            let peer_session = s.peer().clone();
            tokio::spawn(async move { listen_changes(peer_session, routes).await })
        });
        let ct = s.cancellation_token();
        let peer = s.peer().clone();
        let mut waiting = tokio::spawn(s.waiting());
        let ended = loop {
            tokio::select! {
                _ = client.closed.cancelled() => {
                    ct.cancel();
                    let _ = (&mut waiting).await;
                    break true;
                }
                _ = &mut waiting => break false,
                _ = client.restart.notified() => {
                    ct.cancel();
                    let _ = (&mut waiting).await;
                    break false;
                }
                _ = client.routes.list_changed.notified() => {
                    match peer.list_all_tools().await {
                        Ok(tools) => sync_tools(&client, &conn, tools),
                        Err(e) => tracing::warn!(error = %e, "re-listing MCP tools failed"),
                    }
                }
            }
        };
        if let Some(l) = listen {
            l.abort();
        }
        client.peer.send_replace(None);
        if ended {
            return;
        }
        tracing::warn!(upstream = %config.upstream, "MCP session ended: restarting it");
    }
}

async fn listen_changes(peer: Peer<RoleClient>, routes: Arc<Routes>) {
    use rmcp::model::SubscriptionFilter;
    let filter = SubscriptionFilter::builder().tools_list_changed().build();
    let Ok(mut sub) = peer.listen(filter).await else {
        return;
    };
    while let Ok(Some(_)) = sub.next().await {
        routes.list_changed.notify_one();
    }
}

/// Sends `notifications/cancelled` for a `tools/call` that is dropped before its answer
/// (the ASP invocation was interrupted, hit its deadline, or the connection closed).
struct CancelOnDrop {
    peer: Peer<RoleClient>,
    routes: Arc<Routes>,
    id: rmcp::model::RequestId,
    token: rmcp::model::ProgressToken,
    done: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.routes.unregister(&self.token, &self.id);
        if self.done {
            return;
        }
        let peer = self.peer.clone();
        let note = CancelledNotification::new(CancelledNotificationParam::new(
            Some(self.id.clone()),
            Some("interrupted by the ASP client".into()),
        ));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = peer
                    .send_notification(ClientNotification::CancelledNotification(note))
                    .await;
            });
        }
    }
}

/// Rounds of 2026-07-28 `input_required` results (MRTR) one call may take.
const MAX_INPUT_ROUNDS: usize = 8;

/// One `tools/call`, with its progress streamed and its input rounds answered.
async fn call(
    routes: &Arc<Routes>,
    peer: &Peer<RoleClient>,
    ctx: &ToolContext,
    mut params: CallToolRequestParams,
) -> Result<Output, ToolError> {
    for _round in 0..MAX_INPUT_ROUNDS {
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params.clone()));
        let handle = peer
            .send_cancellable_request(request, PeerRequestOptions::no_options())
            .await
            .map_err(|e| service_error(&e))?;
        let mut progress = routes.register(&handle.progress_token, handle.id.clone(), ctx.id());
        let mut guard = CancelOnDrop {
            peer: peer.clone(),
            routes: routes.clone(),
            id: handle.id.clone(),
            token: handle.progress_token.clone(),
            done: false,
        };
        let response = handle.await_response();
        tokio::pin!(response);
        let response = loop {
            tokio::select! {
                biased;
                Some(p) = progress.recv() => stream_progress(ctx, &p).await?,
                r = &mut response => break r,
            }
        };
        guard.done = true;
        // Progress that was queued before the answer goes out before COMPLETE.
        while let Ok(p) = progress.try_recv() {
            stream_progress(ctx, &p).await?;
        }
        drop(guard);
        match response {
            Ok(ServerResult::CallToolResult(r)) => {
                let (status, result) = result_to_complete(&r);
                return match status {
                    asp_tokio::Status::Ok => Ok(Output::from(result)),
                    _ => Err(ToolError::Failed(Some(result))),
                };
            }
            Ok(ServerResult::EmptyResult(_)) => {
                let (_, result) = result_to_complete(&rmcp::model::CallToolResult::success(vec![]));
                return Ok(Output::from(result));
            }
            Ok(ServerResult::InputRequiredResult(ir)) => {
                let mut responses = BTreeMap::new();
                for (key, req) in ir.input_requests.clone().unwrap_or_default() {
                    let answer = match req {
                        InputRequest::Elicitation(e) => {
                            serde_json::to_value(routes.elicit(&e.params, Some(ctx.id())).await)
                                .unwrap_or(Value::Null)
                        }
                        // Sampling and roots have no ASP counterpart: refused, so the server
                        // can fall back or fail the call with its own message.
                        _ => {
                            return Err(ToolError::failed(
                                "the MCP server asked for sampling or roots, which the bridge \
                                 cannot answer over ASP (only elicitation)",
                            ))
                        }
                    };
                    responses.insert(key, answer);
                }
                params.input_responses = (!responses.is_empty()).then_some(responses);
                params.request_state = ir.request_state.clone();
            }
            Ok(other) => {
                return Err(ToolError::Error {
                    code: ErrorCode::INTERNAL,
                    message: format!("unexpected tools/call answer: {other:?}")
                        .chars()
                        .take(512)
                        .collect(),
                    retryable: false,
                })
            }
            Err(ServiceError::McpError(e)) => return Err(mcp_error(e.code.0, &e.message)),
            Err(e) => return Err(service_error(&e)),
        }
    }
    Err(ToolError::failed(format!(
        "the MCP server asked for input more than {MAX_INPUT_ROUNDS} times"
    )))
}

/// A progress notification as one STREAM text chunk: its message, or, without one, the
/// numbers as JSON (`{"progress":…,"total":…}`).
async fn stream_progress(
    ctx: &ToolContext,
    p: &ProgressNotificationParam,
) -> Result<(), ToolError> {
    let text = match &p.message {
        Some(m) if !m.is_empty() => m.clone(),
        _ => serde_json::json!({"progress": p.progress, "total": p.total}).to_string(),
    };
    ctx.stream_text(&text).await.map_err(ToolError::from)
}
