//! The MCP client side of the MCP → ASP direction: one MCP session to the upstream server
//! (a child process over stdio, or a Streamable HTTP URL), with progress notifications,
//! elicitation requests and list changes routed to the ASP connection it serves.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asp_tokio::asp_proto::frame::{ReplyStatus, RequestId as AspId};
use asp_tokio::asp_proto::RequestOutcome;
use asp_tokio::ServerConnection;
use rmcp::model::{
    ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult, ElicitationAction,
    ElicitationCapability, Implementation, ProgressNotificationParam, ProgressToken,
    ProtocolVersion, RequestId as McpId,
};
use rmcp::model::{JsonRpcMessage, ServerNotification};
use rmcp::service::{
    ClientLifecycleMode, ClientServiceExt, InboundStreamOrigin, NotificationContext,
    RequestContext, RunningService,
};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::{IntoTransport, Transport};
use rmcp::{ClientHandler, ErrorData, RoleClient};
use serde_json::Value;
use tokio::sync::{mpsc, Notify};

use crate::convert::{json_to_raw, raw_to_json};

/// Where the MCP server is.
#[derive(Clone, Debug)]
pub enum Upstream {
    /// A child process speaking MCP on its stdin/stdout (stderr is passed through).
    Stdio {
        /// The program.
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// A Streamable HTTP endpoint, e.g. `http://127.0.0.1:8000/mcp`.
    Http {
        /// The endpoint URL.
        url: String,
    },
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Stdio { program, args } => write!(f, "stdio:{program} {}", args.join(" ")),
            Upstream::Http { url } => write!(f, "{url}"),
        }
    }
}

/// Which MCP protocol generation the bridge speaks to its upstream, or offers to MCP hosts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Generation {
    /// 2025-11-25 and earlier: `initialize`, sessions, server→client requests.
    Legacy,
    /// 2026-07-28: stateless, `server/discover`, per-request metadata, MRTR.
    Modern,
    /// Probe with `server/discover` and fall back to `initialize` (upstream); accept both
    /// (hosts).
    #[default]
    Auto,
}

impl std::str::FromStr for Generation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "legacy" | "2025-11-25" => Ok(Generation::Legacy),
            "modern" | "2026-07-28" => Ok(Generation::Modern),
            "auto" => Ok(Generation::Auto),
            _ => Err(format!(
                "unknown MCP generation {s:?} (legacy, modern or auto)"
            )),
        }
    }
}

/// Progress notifications buffered for a call before its token is registered (the request
/// is queued before its handle exists), and per call while its handler streams.
const PROGRESS_QUEUE: usize = 64;

/// What the MCP session needs to reach the ASP connection it serves. Shared between the
/// [`ClientHandler`] (called by rmcp's service task) and the invocation handlers.
#[derive(Default)]
pub(crate) struct Routes {
    /// Progress token → the invocation streaming it.
    progress: Mutex<HashMap<ProgressToken, mpsc::Sender<ProgressNotificationParam>>>,
    /// Notifications whose token was not registered yet (bounded: oldest dropped).
    early: Mutex<VecDeque<ProgressNotificationParam>>,
    /// MCP request id of a `tools/call` in flight → its ASP invocation (elicitation requests
    /// are associated by the response stream they arrive on, where the transport knows it).
    calls: Mutex<HashMap<McpId, AspId>>,
    /// The ASP connection, for REQUEST.
    pub(crate) conn: Mutex<Option<ServerConnection>>,
    /// `notifications/tools/list_changed` arrived.
    pub(crate) list_changed: Notify,
}

impl Routes {
    /// Routes progress for `token` to a new queue, with what arrived early.
    pub(crate) fn register(
        &self,
        token: &ProgressToken,
        call: McpId,
        inv: AspId,
    ) -> mpsc::Receiver<ProgressNotificationParam> {
        let (tx, rx) = mpsc::channel(PROGRESS_QUEUE);
        {
            let mut early = self.early.lock().unwrap_or_else(|e| e.into_inner());
            early.retain(|p| {
                if &p.progress_token == token {
                    let _ = tx.try_send(p.clone());
                    false
                } else {
                    true
                }
            });
        }
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), tx);
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(call, inv);
        rx
    }

    pub(crate) fn unregister(&self, token: &ProgressToken, call: &McpId) {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(call);
    }

    /// Routes one progress notification, in the order the transport read it.
    async fn route_progress(&self, params: ProgressNotificationParam) {
        let tx = self
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&params.progress_token)
            .cloned();
        match tx {
            // Waits while the invocation's queue is full: the MCP session then reads no
            // further until the ASP client takes the stream (SPEC §7.5 flow control reaches
            // back to the MCP server through the pipe or socket).
            Some(tx) => {
                let _ = tx.send(params).await;
            }
            None => {
                let mut early = self.early.lock().unwrap_or_else(|e| e.into_inner());
                if early.len() >= PROGRESS_QUEUE {
                    early.pop_front();
                }
                early.push_back(params);
            }
        }
    }

    fn invocation_for(&self, ctx: &RequestContext<RoleClient>) -> Option<AspId> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(InboundStreamOrigin::OutboundRequest(id)) = ctx.extensions.get() {
            return calls.get(id).copied();
        }
        // stdio carries no association (SEP-2260 defines no wire field): with exactly one
        // call in flight it can only be that one; otherwise the REQUEST names none.
        (calls.len() == 1)
            .then(|| calls.values().next().copied())
            .flatten()
    }

    /// Asks the ASP client (REQUEST `input`, SPEC §8) what an MCP elicitation asks.
    pub(crate) async fn elicit(
        &self,
        params: &ElicitRequestParams,
        inv: Option<AspId>,
    ) -> ElicitResult {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(conn) = conn else {
            return ElicitResult::new(ElicitationAction::Cancel);
        };
        let mut body = serde_json::to_value(params).unwrap_or(Value::Null);
        if let Value::Object(o) = &mut body {
            // SPEC §5.9 REQUEST body: `{message, schema, mode}`; `requestedSchema` renamed.
            if let Some(s) = o.remove("requestedSchema") {
                o.insert("schema".into(), s);
            }
            o.entry("mode").or_insert_with(|| Value::from("form"));
            o.remove("_meta");
        }
        let sent = conn.with(|l| l.request("input", Some(json_to_raw(&body)), inv));
        let Some(Ok(id)) = sent else {
            return ElicitResult::new(ElicitationAction::Cancel);
        };
        match conn.outcome(id).await {
            RequestOutcome::Reply(r) => match r.status {
                ReplyStatus::Answered => {
                    let content = r.body.as_ref().and_then(raw_to_json);
                    let mut out = ElicitResult::new(ElicitationAction::Accept);
                    out.content = match content {
                        Some(Value::Object(o)) => Some(Value::Object(o)),
                        // A bare answer to a form of one field.
                        Some(Value::Null) | None => None,
                        Some(other) => Some(serde_json::json!({ "answer": other })),
                    };
                    out
                }
                ReplyStatus::Declined => ElicitResult::new(ElicitationAction::Decline),
                ReplyStatus::Cancelled => ElicitResult::new(ElicitationAction::Cancel),
            },
            // ERROR (e.g. UNSUPPORTED: the client did not list `requests`) or a lost
            // connection: nobody answered.
            _ => ElicitResult::new(ElicitationAction::Decline),
        }
    }
}

/// The bridge's MCP client handler.
#[derive(Clone)]
pub(crate) struct BridgeClient {
    pub(crate) routes: Arc<Routes>,
}

impl ClientHandler for BridgeClient {
    fn get_info(&self) -> ClientConfig {
        let mut caps = ClientCapabilities::default();
        caps.elicitation = Some(ElicitationCapability::default());
        ClientConfig::new(
            caps,
            Implementation::new("asp-mcp", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let inv = self.routes.invocation_for(&context);
        Ok(self.routes.elicit(&request, inv).await)
    }

    // Progress is routed by `Tap` as it is read, not here: rmcp runs each notification
    // callback as a task of its own, so callbacks may run out of order, and after the
    // response they preceded.

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.routes.list_changed.notify_one();
    }
}

/// The upstream transport, with progress notifications routed as they are read: in order,
/// and before the response that follows them.
struct Tap<T> {
    inner: T,
    routes: Arc<Routes>,
}

impl<T: Transport<RoleClient>> Transport<RoleClient> for Tap<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        let msg = self.inner.receive().await?;
        if let JsonRpcMessage::Notification(n) = &msg {
            if let ServerNotification::ProgressNotification(p) = &n.notification {
                self.routes.route_progress(p.params.clone()).await;
            }
        }
        Some(msg)
    }

    fn close(&mut self) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

/// A running MCP client session.
pub(crate) type Session = RunningService<RoleClient, BridgeClient>;

/// Opens an MCP session to `up`.
pub(crate) async fn connect(
    up: &Upstream,
    generation: Generation,
    routes: Arc<Routes>,
) -> Result<Session, String> {
    let lifecycle = match generation {
        Generation::Legacy => ClientLifecycleMode::Initialize,
        Generation::Modern => ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
        Generation::Auto => ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            legacy_version: Some(ProtocolVersion::V_2025_11_25),
        },
    };
    let handler = BridgeClient {
        routes: routes.clone(),
    };
    match up {
        Upstream::Stdio { program, args } => {
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args);
            let (transport, _) = rmcp::transport::TokioChildProcess::builder(cmd)
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .map_err(|e| format!("cannot start {program}: {e}"))?;
            let transport = Tap {
                inner: transport,
                routes,
            };
            handler
                .serve_with_lifecycle(transport, lifecycle)
                .await
                .map_err(|e| format!("MCP handshake with {up} failed: {e}"))
        }
        Upstream::Http { url } => {
            let transport = Tap {
                inner: IntoTransport::<RoleClient, _, _>::into_transport(
                    rmcp::transport::StreamableHttpClientTransport::from_uri(url.as_str()),
                ),
                routes,
            };
            handler
                .serve_with_lifecycle(transport, lifecycle)
                .await
                .map_err(|e| format!("MCP handshake with {up} failed: {e}"))
        }
    }
}

/// Whether the session runs the 2026-07-28 (stateless) protocol.
pub(crate) fn is_modern(s: &Session) -> bool {
    s.peer()
        .peer_info()
        .is_some_and(|i| i.protocol_version.as_str() >= ProtocolVersion::V_2026_07_28.as_str())
}

/// How long the bridge waits for an MCP server to start and list its tools.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(20);
