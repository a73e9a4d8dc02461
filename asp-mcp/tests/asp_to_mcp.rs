//! ASP → MCP: rmcp clients (an MCP host's view) using an ASP server through the bridge, over
//! stdio (the `asp-mcp to-mcp` binary as a child process) and Streamable HTTP, in both
//! protocol generations.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use asp_tokio::{Args, Output, ReplyStatus, Tool, ToolContext, ToolError};
use common::LIMIT;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, ClientCapabilities, ClientConfig, ClientRequest,
    ElicitRequestParams, ElicitResult, ElicitationAction, ElicitationCapability, Implementation,
    ProgressNotificationParam, ProtocolVersion, SubscriptionFilter,
};
use rmcp::service::{
    ClientLifecycleMode, ClientServiceExt, NotificationContext, PeerRequestOptions, RequestContext,
    RunningService,
};
use rmcp::{ClientHandler, ErrorData, RoleClient};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

/// What the ASP tools observed.
#[derive(Default)]
struct Seen {
    interrupted: AtomicUsize,
    notify: Notify,
}

struct OnDrop(Arc<Seen>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.interrupted.fetch_add(1, Ordering::AcqRel);
        self.0.notify.notify_waiters();
    }
}

async fn asp_server(seen: Arc<Seen>) -> asp_tokio::Server {
    let schema = json!({"type": "object", "properties": {"text": {"type": "string"}}});
    let echo = Tool::new("echo", |_ctx: ToolContext, args: Args| async move {
        let v: Value = args.parse()?;
        Output::value(v["text"].as_str().unwrap_or(""))
    })
    .description("echoes its text")
    .input_schema(&schema)
    .unwrap();
    let stream = Tool::new("stream", |ctx: ToolContext, args: Args| async move {
        let v: Value = args.parse()?;
        for i in 0..v["n"].as_u64().unwrap_or(0) {
            ctx.stream_text(&format!("piece {i}")).await?;
        }
        Output::value("done")
    });
    let slow_seen = seen.clone();
    let slow = Tool::new("slow", move |ctx: ToolContext, _args: Args| {
        let seen = slow_seen.clone();
        async move {
            ctx.stream_text("started").await?;
            // Dropped when the bridge interrupts the invocation.
            let _guard = OnDrop(seen);
            ctx.cancelled().await;
            Err::<Output, _>(ToolError::Cancelled)
        }
    });
    let ask = Tool::new("ask", |ctx: ToolContext, _args: Args| async move {
        let body = asp_mcp::convert::json_to_raw(&json!({
            "message": "your name?",
            "schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        }));
        let reply = ctx
            .ask("input", Some(body))
            .await
            .map_err(|e| ToolError::failed(e.to_string()))?;
        match reply.status {
            ReplyStatus::Answered => {
                let v = reply
                    .body
                    .as_ref()
                    .and_then(asp_mcp::convert::raw_to_json)
                    .unwrap_or(Value::Null);
                Output::value(&format!("hello {}", v["name"].as_str().unwrap_or("?")))
            }
            other => Output::value(&format!("no name ({other:?})")),
        }
    });
    let fail = Tool::new("fail", |_ctx: ToolContext, _args: Args| async move {
        Err::<Output, _>(ToolError::failed("it failed"))
    });
    let data = Tool::new("data", |_ctx: ToolContext, _args: Args| async move {
        Output::value(&json!({"n": 3, "list": [1, 2]}))
    });
    asp_tokio::server()
        .tool(echo)
        .tool(stream)
        .tool(slow)
        .tool(ask)
        .tool(fail)
        .tool(data)
        .start()
        .await
        .unwrap()
}

/// An MCP host: records progress, answers elicitation with `{"name": "Ada"}`, signals
/// list changes.
#[derive(Clone)]
struct Host {
    progress: mpsc::UnboundedSender<String>,
    changed: Arc<Notify>,
}

impl ClientHandler for Host {
    fn get_info(&self) -> ClientConfig {
        let mut caps = ClientCapabilities::default();
        caps.elicitation = Some(ElicitationCapability::default());
        ClientConfig::new(caps, Implementation::new("test-host", "0"))
    }

    async fn create_elicitation(
        &self,
        _request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let mut r = ElicitResult::new(ElicitationAction::Accept);
        r.content = Some(json!({"name": "Ada"}));
        Ok(r)
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.progress.send(params.message.unwrap_or_default());
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.changed.notify_one();
    }
}

fn lifecycle(modern: bool) -> ClientLifecycleMode {
    if modern {
        ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        }
    } else {
        ClientLifecycleMode::Initialize
    }
}

fn args(v: Value) -> CallToolRequestParams {
    let (name, rest) = match v {
        Value::Object(mut o) => (
            o.remove("name")
                .and_then(|n| n.as_str().map(str::to_owned))
                .unwrap(),
            o,
        ),
        _ => unreachable!(),
    };
    let mut p = CallToolRequestParams::new(name);
    p.arguments = Some(rest);
    p
}

fn text(r: &rmcp::model::CallToolResult) -> String {
    r.content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default()
}

async fn scenario(
    host: RunningService<RoleClient, Host>,
    mut progress: mpsc::UnboundedReceiver<String>,
    changed: Arc<Notify>,
    server: &asp_tokio::Server,
    seen: Arc<Seen>,
    modern: bool,
    label: &str,
) {
    // TOOL_DEF → tools/list, with schema and description.
    let tools = host.peer().list_all_tools().await.unwrap();
    let echo = tools.iter().find(|t| t.name == "echo").expect(label);
    assert_eq!(
        echo.description.as_deref(),
        Some("echoes its text"),
        "{label}"
    );
    assert_eq!(
        echo.input_schema["properties"]["text"]["type"], "string",
        "{label}"
    );

    // tools/call → INVOKE → COMPLETE.
    let r = host
        .peer()
        .call_tool(args(json!({"name": "echo", "text": "héllo"})))
        .await
        .unwrap();
    assert_eq!(text(&r), "héllo", "{label}");
    assert_eq!(r.is_error, Some(false), "{label}");
    let r = host
        .peer()
        .call_tool(args(json!({"name": "data"})))
        .await
        .unwrap();
    assert_eq!(
        r.structured_content,
        Some(json!({"n": 3, "list": [1, 2]})),
        "{label}"
    );

    // STREAM → progress notifications (the host's call carries a progress token).
    let r = host
        .peer()
        .call_tool(args(json!({"name": "stream", "n": 4})))
        .await
        .unwrap();
    assert_eq!(text(&r), "done", "{label}");
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(
            tokio::time::timeout(LIMIT, progress.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    got.sort();
    assert_eq!(got, ["piece 0", "piece 1", "piece 2", "piece 3"], "{label}");

    // Errors: a failing tool is an isError result; an unknown tool a protocol error.
    let r = host
        .peer()
        .call_tool(args(json!({"name": "fail"})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true), "{label}");
    assert!(text(&r).contains("it failed"), "{label}: {}", text(&r));
    let e = host.peer().call_tool(args(json!({"name": "nope"}))).await;
    assert!(e.is_err(), "{label}");

    // REQUEST → elicitation: a server request on 2025 sessions; on 2026-07-28 an
    // `input_required` result, which rmcp's high-level `call_tool` answers and retries.
    let r = host.call_tool(args(json!({"name": "ask"}))).await.unwrap();
    assert_eq!(text(&r), "hello Ada", "{label}");

    // Cancellation → INTERRUPT: the ASP tool sees it.
    let request =
        ClientRequest::CallToolRequest(CallToolRequest::new(args(json!({"name": "slow"}))));
    let handle = host
        .peer()
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .unwrap();
    let started = tokio::time::timeout(LIMIT, progress.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(started, "started", "{label}");
    let interrupted = seen.notify.notified();
    handle.cancel(Some("test".into())).await.unwrap();
    tokio::time::timeout(LIMIT, interrupted)
        .await
        .expect("interrupt reached the tool");
    assert_eq!(seen.interrupted.load(Ordering::Acquire), 1, "{label}");

    // TOOL_DEF add → list_changed (2026: on a subscriptions/listen stream) → re-list.
    let mut sub = if modern {
        let filter = SubscriptionFilter::builder().tools_list_changed().build();
        Some(host.peer().listen(filter).await.unwrap())
    } else {
        None
    };
    let changed_now = changed.notified();
    server.add_tool(Tool::new("late", |_c: ToolContext, _a: Args| async move {
        Output::value("late")
    }));
    match &mut sub {
        Some(s) => {
            tokio::time::timeout(LIMIT, s.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        None => tokio::time::timeout(LIMIT, changed_now).await.unwrap(),
    }
    let tools = host.peer().list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "late"), "{label}");
    let _ = host.cancel().await;
}

fn host() -> (Host, mpsc::UnboundedReceiver<String>, Arc<Notify>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let changed = Arc::new(Notify::new());
    (
        Host {
            progress: tx,
            changed: changed.clone(),
        },
        rx,
        changed,
    )
}

async fn over_http(modern: bool, label: &str) {
    let seen = Arc::new(Seen::default());
    let server = asp_server(seen.clone()).await;
    let tools = asp_mcp::AspTools::connect(&server.url(), None)
        .await
        .unwrap();
    let ct = tokio_util::sync::CancellationToken::new();
    let (addr, task) =
        asp_mcp::asp_to_mcp::serve_http(tools, "127.0.0.1:0".parse().unwrap(), ct.clone())
            .await
            .unwrap();
    let transport =
        rmcp::transport::StreamableHttpClientTransport::from_uri(format!("http://{addr}/mcp"));
    host_scenario(transport, &server, seen, modern, label).await;
    ct.cancel();
    let _ = task.await;
    server.shutdown(Duration::from_secs(5)).await;
}

/// A [`host`] connected through `transport` runs the [`scenario`].
async fn host_scenario<T, E, A>(
    transport: T,
    server: &asp_tokio::Server,
    seen: Arc<Seen>,
    modern: bool,
    label: &str,
) where
    T: rmcp::transport::IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let (handler, progress, changed) = host();
    let running = tokio::time::timeout(
        LIMIT,
        handler.serve_with_lifecycle(transport, lifecycle(modern)),
    )
    .await
    .unwrap()
    .unwrap();
    scenario(running, progress, changed, server, seen, modern, label).await;
}

async fn over_stdio(modern: bool, label: &str) {
    let seen = Arc::new(Seen::default());
    let server = asp_server(seen.clone()).await;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_asp-mcp"));
    cmd.arg("to-mcp").arg(server.url());
    let transport = rmcp::transport::TokioChildProcess::new(cmd).unwrap();
    host_scenario(transport, &server, seen, modern, label).await;
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_legacy() {
    over_http(false, "http 2025-11-25").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_modern() {
    over_http(true, "http 2026-07-28").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_legacy() {
    over_stdio(false, "stdio 2025-11-25").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_modern() {
    over_stdio(true, "stdio 2026-07-28").await;
}
