//! # adapter-tests — the asp-tokio / asp-smol adapter suite
//!
//! Every scenario is written once here, generic over the server's runtime `S` and the
//! client's runtime `C` (both [`asp_async::Runtime`]). The test binaries run each scenario
//! with `S = C = Tokio` (`tests/tokio.rs`), `S = C = Smol` (`tests/smol.rs`), and across
//! runtimes in both directions (`tests/interop.rs`). [`for_each_scenario!`] is the list.
//!
//! Rules the scenarios keep: servers bind `127.0.0.1:0`; every scenario runs under
//! [`with_timeout`] (the test entry points wrap it); nothing sleeps to wait for a
//! condition — waits are on channels, gates, invocation futures, `client.closed()` and
//! `server.shutdown()`. The only time-based waits are the heartbeat scenario's idle period,
//! the ticking tool of the interrupt scenario, and bounded polls of `Server::connections`
//! (20 ms steps, a few seconds at most), for which the API has no signal.
//!
//! Raw-socket scenarios speak ASP by hand over the client runtime's own WebSocket
//! (`Runtime::tcp_connect` + `Runtime::handshake`: tokio-tungstenite on tokio,
//! async-tungstenite on smol), see [`raw`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use asp_async::asp_proto::frame::{
    Frame, Hello, HelloLimits, Invoke, RawValue, Request, RequestId, Versions,
};
use asp_async::asp_proto::{HeartbeatMode, InvokeOptions, SendError};
use asp_async::{
    from_value, reply, to_value, Args, Client, ClientBuilder, CloseReason, Config, Error,
    ErrorCode, Output, ReplyStatus, Runtime, Server, ServerBuilder, Status, Tool, ToolChange,
    ToolContext, ToolError,
};
use bytes::Bytes;
use futures::channel::mpsc;
use futures::future::{join, join_all, select, Either};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

pub mod hostile;
pub mod pki;
pub mod proxy;
pub mod raw;
pub mod resume;
pub mod tls;
pub mod util;

pub use hostile::{
    arguments_in_flight_are_bounded, flood_that_never_reads, half_open_connections,
    overloaded_results_end_with_error, oversized_message_is_overloaded,
};
use raw::{refusal, ws_connect, RawPeer};
pub use resume::{
    heartbeat_timeout_then_resume, no_resume_closes, resume_after_reset_past_the_window,
    resume_after_reset_with_invoke_in_flight, resume_mid_stream, resume_over_half_open,
    resume_refused_starts_new_session,
};
pub use tls::{
    wss_bad_certificates, wss_certificate_reload, wss_invoke_stream_interrupt, wss_mutual_tls,
    wss_plaintext_mismatch, wss_resume_mid_stream, wss_session_resumption,
};
pub use util::{poll_until, sleep, with_timeout, yield_now, DropSignal, Gate, SCENARIO_TIMEOUT};

/// Calls `$callback! { scenario, … }` with every scenario name, so each test binary
/// generates one `#[test]` per scenario.
#[macro_export]
macro_rules! for_each_scenario {
    ($callback:ident) => {
        $callback! {
            invoke_stream_complete,
            concurrent_invocations,
            interrupt_mid_stream,
            tool_def_push,
            server_request,
            auth_token,
            origin_check,
            subprotocol_required,
            oversized_frame,
            heartbeat_closes_unresponsive_peer,
            heartbeat_closes_silent_peer,
            heartbeat_closes_blocked_peer,
            heartbeat_keeps_live_client,
            graceful_shutdown,
            shutdown_timeout,
            handler_panic,
            stream_from_spawned_task,
            long_stream_without_waiting,
            flow_control,
            small_frame_limit,
            small_window_large_writes,
            deadline_exceeded,
            max_connections,
            resume_mid_stream,
            resume_refused_starts_new_session,
            resume_over_half_open,
            no_resume_closes,
            resume_after_reset_past_the_window,
            resume_after_reset_with_invoke_in_flight,
            heartbeat_timeout_then_resume,
            flood_that_never_reads,
            overloaded_results_end_with_error,
            oversized_message_is_overloaded,
            half_open_connections,
            arguments_in_flight_are_bounded,
            close_codes,
            request_ends_with_invocation,
            wss_invoke_stream_interrupt,
            wss_resume_mid_stream,
            wss_bad_certificates,
            wss_plaintext_mismatch,
            wss_mutual_tls,
            wss_certificate_reload,
            wss_session_resumption,
        }
    };
}

// ───────────────────────────── shared fixtures ─────────────────────────────

/// Typed arguments of the `greet` tool.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct GreetArgs {
    /// Who to greet.
    pub name: String,
    /// How many chunks to stream.
    pub times: u32,
}

/// Typed result of the `greet` tool.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct GreetResult {
    /// The greeting.
    pub greeting: String,
    /// Chunks streamed.
    pub chunks: u32,
}

/// Streams `times` lines of text, then returns a [`GreetResult`].
pub fn greet_tool() -> Tool {
    Tool::new("greet", |ctx: ToolContext, args: Args| async move {
        let a: GreetArgs = args.parse()?;
        for i in 0..a.times {
            ctx.stream_text(&format!("hello {} #{i}\n", a.name))
                .await
                .map_err(|_| ToolError::Cancelled)?;
        }
        Output::value(&GreetResult {
            greeting: format!("hello {}", a.name),
            chunks: a.times,
        })
    })
    .description("streams greetings")
}

/// A tool that reports its start on `started`, waits for `gate`, then returns `"done"`.
pub fn gated_tool(name: &str, started: mpsc::UnboundedSender<RequestId>, gate: Gate) -> Tool {
    Tool::new(name, move |ctx: ToolContext, _args: Args| {
        let started = started.clone();
        let gate = gate.clone();
        async move {
            let _ = started.unbounded_send(ctx.id());
            gate.wait().await;
            Output::value("done")
        }
    })
}

async fn start<S: Runtime>(b: ServerBuilder<S>) -> Server<S> {
    b.start().await.expect("server start")
}

async fn connect<C: Runtime>(cli: &C, server_url: &str) -> Client<C> {
    ClientBuilder::new(cli.clone())
        .connect(server_url)
        .await
        .expect("client connect")
}

/// Invokes `greet` and checks its output end to end.
async fn greet_ok<C: Runtime>(client: &Client<C>, name: &str) {
    let mut inv = client
        .invoke(
            "greet",
            &GreetArgs {
                name: name.into(),
                times: 2,
            },
        )
        .expect("invoke greet");
    let mut n = 0;
    while let Some(c) = inv.next().await {
        assert_eq!(c.as_str(), Some(format!("hello {name} #{n}\n").as_str()));
        n += 1;
    }
    let done = inv.completion().await.expect("greet completes");
    assert_eq!(done.status, Status::Ok);
    assert_eq!(n, 2);
}

async fn finish<S: Runtime, C: Runtime>(client: Client<C>, server: Server<S>) {
    client.close().await;
    server.shutdown(Duration::from_secs(2)).await;
    assert_eq!(server.connections(), 0, "shutdown left connections open");
}

fn remote_code<T: std::fmt::Debug>(r: Result<T, Error>) -> ErrorCode {
    match r {
        Err(Error::Remote(e)) => e.code,
        other => panic!("expected a remote ERROR, got {other:?}"),
    }
}

// ───────────────────────────── 1. invoke, stream, complete ─────────────────────────────

/// INVOKE with typed args → text chunks in order → COMPLETE(ok) with the typed result and a
/// `wall_us` metric. Bad args give INVALID_ARGUMENTS.
pub async fn invoke_stream_complete<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let server = start(ServerBuilder::new(srv).tool(greet_tool())).await;
    let client = connect(&cli, &server.url()).await;

    let session = client.session().expect("session after connect");
    assert_eq!(session.version, 1);
    assert!(!session.connection_id.as_str().is_empty());
    let tools = client.tools();
    assert_eq!(tools.len(), 1, "initial tool set: {tools:?}");
    assert_eq!(tools[0].name.as_str(), "greet");
    assert_eq!(tools[0].description.as_str(), "streams greetings");

    let args = GreetArgs {
        name: "ada".into(),
        times: 5,
    };
    let mut inv = client.invoke("greet", &args).expect("invoke");
    let mut chunks = Vec::new();
    while let Some(c) = inv.next().await {
        assert!(c.text, "stream_text sends text chunks");
        assert!(!c.fin);
        chunks.push(c.as_str().expect("utf-8 text").to_owned());
    }
    let expected: Vec<String> = (0..5).map(|i| format!("hello ada #{i}\n")).collect();
    assert_eq!(chunks, expected);
    let done = inv.completion().await.expect("completion");
    assert_eq!(done.status, Status::Ok);
    let result: GreetResult = from_value(done.result.as_ref().expect("a result")).expect("decode");
    assert_eq!(
        result,
        GreetResult {
            greeting: "hello ada".into(),
            chunks: 5
        }
    );
    assert!(done.metrics.wall_us.is_some(), "wall_us filled in");

    // Arguments that do not fit the tool's type: INVALID_ARGUMENTS, connection unaffected.
    let bad = client.invoke("greet", "not a map").expect("invoke");
    assert_eq!(
        remote_code(bad.completion().await),
        ErrorCode::INVALID_ARGUMENTS
    );
    // A tool the server does not have.
    let missing = client.invoke("nope", &()).expect("invoke");
    assert_eq!(
        remote_code(missing.completion().await),
        ErrorCode::UNKNOWN_TOOL
    );
    greet_ok(&client, "again").await;

    finish(client, server).await;
}

// ───────────────────────────── 2. 100 concurrent invocations ─────────────────────────────

#[derive(Serialize, Deserialize)]
struct CountArgs {
    tag: u32,
    n: u32,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct CountResult {
    tag: u32,
    sent: u32,
}

/// 100 invocations in flight at once on one connection (the tool waits until all 100 have
/// started), each streaming its own chunks: every one gets its chunks in order and its own
/// result.
pub async fn concurrent_invocations<S: Runtime, C: Runtime>(srv: S, cli: C) {
    const N: u32 = 100;
    const CHUNKS: u32 = 4;
    let all_started = Gate::new();
    let started = Arc::new(AtomicUsize::new(0));
    let tool = {
        let all_started = all_started.clone();
        Tool::new("count", move |ctx: ToolContext, args: Args| {
            let all_started = all_started.clone();
            let started = started.clone();
            async move {
                let a: CountArgs = args.parse()?;
                if started.fetch_add(1, Ordering::SeqCst) + 1 == N as usize {
                    all_started.open();
                }
                all_started.wait().await;
                for i in 0..a.n {
                    ctx.stream_text(&format!("{}:{i}", a.tag))
                        .await
                        .map_err(|_| ToolError::Cancelled)?;
                    yield_now().await;
                }
                Output::value(&CountResult {
                    tag: a.tag,
                    sent: a.n,
                })
            }
        })
    };
    let server = start(ServerBuilder::new(srv).tool(tool)).await;
    let client = connect(&cli, &server.url()).await;

    let invocations: Vec<_> = (0..N)
        .map(|tag| {
            client
                .invoke("count", &CountArgs { tag, n: CHUNKS })
                .expect("invoke")
        })
        .collect();
    let ids: std::collections::HashSet<u16> = invocations.iter().map(|i| i.id().0).collect();
    assert_eq!(ids.len(), N as usize, "distinct ids");
    let results = join_all(
        invocations
            .into_iter()
            .enumerate()
            .map(|(tag, mut inv)| async move {
                let mut chunks = Vec::new();
                while let Some(c) = inv.next().await {
                    chunks.push(c.as_str().expect("text").to_owned());
                }
                let done = inv.completion().await.expect("completion");
                (tag as u32, chunks, done)
            }),
    )
    .await;
    for (tag, chunks, done) in results {
        let expected: Vec<String> = (0..CHUNKS).map(|i| format!("{tag}:{i}")).collect();
        assert_eq!(chunks, expected, "chunks of invocation {tag}");
        assert_eq!(done.status, Status::Ok);
        let r: CountResult = from_value(done.result.as_ref().expect("result")).expect("decode");
        assert_eq!(r, CountResult { tag, sent: CHUNKS });
    }
    finish(client, server).await;
}

// ───────────────────────────── 3. interrupt ─────────────────────────────

/// A tool that streams a tick every 5 ms forever: the client reads two chunks and
/// interrupts; the invocation completes `cancelled` and the handler is dropped while
/// cancelled. Dropping an `Invocation` interrupts it too.
pub async fn interrupt_mid_stream<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let (dropped_tx, mut dropped) = mpsc::unbounded::<bool>();
    let tool = {
        let srv = srv.clone();
        Tool::new("forever", move |ctx: ToolContext, _args: Args| {
            let rt = srv.clone();
            let ctx2 = ctx.clone();
            let guard = DropSignal::new(dropped_tx.clone(), move || ctx2.is_cancelled());
            async move {
                let _guard = guard;
                let mut i = 0u64;
                loop {
                    ctx.stream_text(&format!("tick {i}"))
                        .await
                        .map_err(|_| ToolError::Cancelled)?;
                    i += 1;
                    sleep(&rt, Duration::from_millis(5)).await;
                }
            }
        })
    };
    let server = start(ServerBuilder::new(srv).tool(tool).tool(greet_tool())).await;
    let client = connect(&cli, &server.url()).await;

    let mut inv = client.invoke("forever", &()).expect("invoke");
    for i in 0..2 {
        let c = inv.next().await.expect("a tick");
        assert_eq!(c.as_str(), Some(format!("tick {i}").as_str()));
    }
    inv.interrupt();
    inv.interrupt(); // twice is harmless (SPEC §7.3)
    let done = inv.completion().await.expect("completion after interrupt");
    assert_eq!(done.status, Status::Cancelled);
    assert_eq!(
        dropped.next().await,
        Some(true),
        "the handler is dropped, and saw the cancellation"
    );

    // Dropping the handle mid-stream interrupts too.
    let mut inv = client.invoke("forever", &()).expect("invoke");
    assert!(inv.next().await.is_some());
    drop(inv);
    assert_eq!(dropped.next().await, Some(true));

    // The connection is still fine.
    greet_ok(&client, "after interrupt").await;
    finish(client, server).await;
}

// ───────────────────────────── 4. TOOL_DEF push ─────────────────────────────

/// `add_tool`/`remove_tool` on a running server reach a connected client's
/// `tool_changes()` and `tools()`; re-adding a name is an update.
pub async fn tool_def_push<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let server = start(ServerBuilder::new(srv).tool(greet_tool())).await;
    let client = connect(&cli, &server.url()).await;
    let mut changes = client.tool_changes();
    let names = |c: &Client<C>| {
        let mut v: Vec<String> = c.tools().iter().map(|t| t.name.to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&client), ["greet"]);

    let late = Tool::new("late", |_ctx: ToolContext, _args: Args| async move {
        Output::value("late result")
    })
    .description("added later");
    server.add_tool(late);
    match changes.next().await {
        Some(ToolChange::Added(def)) => {
            assert_eq!(def.name.as_str(), "late");
            assert_eq!(def.description.as_str(), "added later");
        }
        other => panic!("expected Added(late), got {other:?}"),
    }
    assert_eq!(names(&client), ["greet", "late"]);
    let done = client
        .invoke("late", &())
        .expect("invoke")
        .completion()
        .await
        .expect("the pushed tool runs");
    let r: String = from_value(done.result.as_ref().expect("result")).expect("decode");
    assert_eq!(r, "late result");

    // Same name again: an update.
    server.add_tool(greet_tool().description("v2"));
    match changes.next().await {
        Some(ToolChange::Updated(def)) => {
            assert_eq!(def.name.as_str(), "greet");
            assert_eq!(def.description.as_str(), "v2");
        }
        other => panic!("expected Updated(greet), got {other:?}"),
    }

    assert!(server.remove_tool("late"));
    match changes.next().await {
        Some(ToolChange::Removed(name)) => assert_eq!(name.as_str(), "late"),
        other => panic!("expected Removed(late), got {other:?}"),
    }
    assert_eq!(names(&client), ["greet"]);
    let gone = client.invoke("late", &()).expect("invoke");
    assert_eq!(
        remote_code(gone.completion().await),
        ErrorCode::UNKNOWN_TOOL
    );
    assert!(!server.remove_tool("late"), "already removed");

    finish(client, server).await;
}

// ───────────────────────────── 5. server → client requests ─────────────────────────────

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct AskOutcome {
    status: String,
    answer: Option<String>,
}

fn ask_tool() -> Tool {
    Tool::new("ask", |ctx: ToolContext, _args: Args| async move {
        let question = to_value("which colour?").map_err(|e| ToolError::failed(e.to_string()))?;
        let outcome = match ctx.ask("clarify", Some(question)).await {
            Ok(r) => AskOutcome {
                status: format!("{:?}", r.status),
                answer: r.body.and_then(|b| from_value::<String>(&b).ok()),
            },
            Err(Error::Send(SendError::Unsupported(cap))) => AskOutcome {
                status: format!("unsupported {cap}"),
                answer: None,
            },
            Err(e) => AskOutcome {
                status: format!("error {e}"),
                answer: None,
            },
        };
        Output::value(&outcome)
    })
}

async fn ask_once<C: Runtime>(client: &Client<C>) -> (RequestId, AskOutcome) {
    let inv = client.invoke("ask", &()).expect("invoke ask");
    let id = inv.id();
    let done = inv.completion().await.expect("ask completes");
    assert_eq!(done.status, Status::Ok);
    let outcome = from_value(done.result.as_ref().expect("result")).expect("decode");
    (id, outcome)
}

/// `ctx.ask("clarify", …)` reaches a client's `on_request` handler, whose answer the tool
/// gets back; a client without a handler declines; a client that turned `accept_requests`
/// off is never asked (the tool gets `Unsupported`).
pub async fn server_request<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let server = start(ServerBuilder::new(srv).tool(ask_tool())).await;

    let (seen_tx, mut seen) = mpsc::unbounded::<Request>();
    let answering = ClientBuilder::new(cli.clone())
        .on_request(move |req: Request| {
            let seen_tx = seen_tx.clone();
            async move {
                let answer = to_value("blue").expect("encode");
                let r = reply(&req, ReplyStatus::Answered, Some(answer));
                let _ = seen_tx.unbounded_send(req);
                r
            }
        })
        .connect(&server.url())
        .await
        .expect("connect");
    let (inv_id, outcome) = ask_once(&answering).await;
    assert_eq!(
        outcome,
        AskOutcome {
            status: "Answered".into(),
            answer: Some("blue".into())
        }
    );
    let req = seen.next().await.expect("the handler saw the request");
    assert_eq!(req.kind.as_str(), "clarify");
    let q: String = from_value(req.body.as_ref().expect("body")).expect("decode");
    assert_eq!(q, "which colour?");
    assert_eq!(req.invocation, Some(inv_id), "REQUEST names its invocation");

    // No handler: the documented default is to decline.
    let declining = connect(&cli, &server.url()).await;
    let (_, outcome) = ask_once(&declining).await;
    assert_eq!(
        outcome,
        AskOutcome {
            status: "Declined".into(),
            answer: None
        }
    );

    // A handler function that panics (before returning its future) declines too, and the
    // client goes on: its reader polls new handlers, so the panic must not reach it.
    fn panics(_req: Request) -> std::future::Ready<asp_async::asp_proto::frame::Reply> {
        panic!("request handler panic (expected by the test)")
    }
    let panicking = ClientBuilder::new(cli.clone())
        .on_request(panics)
        .connect(&server.url())
        .await
        .expect("connect");
    let (_, outcome) = ask_once(&panicking).await;
    assert_eq!(outcome.status, "Declined");
    let (_, outcome) = ask_once(&panicking).await;
    assert_eq!(
        outcome.status, "Declined",
        "the client still answers after a panic"
    );

    // accept_requests off: the capability is not offered, so the server may not ask.
    let deaf = ClientBuilder::new(cli.clone())
        .config({
            let mut config = Config::default();
            config.accept_requests = false;
            config
        })
        .connect(&server.url())
        .await
        .expect("connect");
    let (_, outcome) = ask_once(&deaf).await;
    assert_eq!(outcome.status, "unsupported requests");

    answering.close().await;
    declining.close().await;
    panicking.close().await;
    finish(deaf, server).await;
}

/// SPEC §8: a request ends with its invocation. The client's request handler waits forever;
/// interrupting the invocation ends it (`cancelled`), the server then interrupts the request,
/// and the client drops the handler and answers REPLY(cancelled).
pub async fn request_ends_with_invocation<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let server = start(ServerBuilder::new(srv).tool(ask_tool())).await;
    let (asked_tx, mut asked) = mpsc::unbounded::<()>();
    let (dropped_tx, mut dropped) = mpsc::unbounded::<()>();
    let client = ClientBuilder::new(cli.clone())
        .on_request(move |req: Request| {
            let guard = DropSignal::new(dropped_tx.clone(), || ());
            let _ = asked_tx.unbounded_send(());
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                reply(&req, ReplyStatus::Answered, None)
            }
        })
        .connect(&server.url())
        .await
        .expect("connect");
    let inv = client.invoke("ask", &()).expect("invoke ask");
    asked.next().await.expect("the question reached the client");
    inv.interrupt();
    let done = inv.completion().await.expect("the invocation ends");
    assert_eq!(done.status, Status::Cancelled);
    dropped
        .next()
        .await
        .expect("the client dropped the question of the ended invocation");
    finish(client, server).await;
}

// ───────────────────────────── 6. bearer token ─────────────────────────────

/// A server with `.token("secret")` refuses a client without (or with a wrong) token with
/// HTTP 401, and accepts the right one.
pub async fn auth_token<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let server = start(ServerBuilder::new(srv).token("secret").tool(greet_tool())).await;
    let url = server.url();
    for builder in [
        ClientBuilder::new(cli.clone()),
        ClientBuilder::new(cli.clone()).token("wrong"),
    ] {
        match builder.connect(&url).await {
            Err(Error::Rejected { status: 401, .. }) => {}
            other => panic!("expected 401, got {other:?}"),
        }
    }
    let client = ClientBuilder::new(cli.clone())
        .token("secret")
        .connect(&url)
        .await
        .expect("the right token connects");
    greet_ok(&client, "authenticated").await;
    finish(client, server).await;
}

// ───────────────────────────── 7. Origin ─────────────────────────────

/// With `.allow_origin(good)`, an upgrade from another Origin gets 403; the allowed Origin
/// and non-browser clients (no Origin) get through.
pub async fn origin_check<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let server = start(
        ServerBuilder::new(srv)
            .allow_origin("https://good.example")
            .tool(greet_tool()),
    )
    .await;
    let url = server.url();
    let proto = ("Sec-WebSocket-Protocol", "asp-v1");

    let evil = ws_connect(&cli, &url, &[("Origin", "https://evil.example"), proto]).await;
    let (status, _) = refusal(evil);
    assert_eq!(status, 403);

    let (ws, resp) = ws_connect(&cli, &url, &[("Origin", "https://good.example"), proto])
        .await
        .expect("the allowed Origin upgrades");
    assert_eq!(resp.status().as_u16(), 101);
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok()),
        Some("asp-v1")
    );
    let mut peer = RawPeer::new(ws);
    let hello = peer.hello().await;
    assert!(hello.connection_id.is_some());
    drop(peer);

    // The ASP client sends no Origin (it is not a browser): allowed.
    let client = connect(&cli, &url).await;
    greet_ok(&client, "no origin").await;
    finish(client, server).await;
}

// ───────────────────────────── 8. subprotocol ─────────────────────────────

/// An upgrade that does not offer `asp-v1` gets HTTP 400 with a body naming `asp-v1`; a
/// wrong path gets 404; and the client refuses a server that does not select `asp-v1`.
pub async fn subprotocol_required<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let server = start(ServerBuilder::new(srv.clone()).tool(greet_tool())).await;
    let url = server.url();

    let (status, body) = refusal(ws_connect(&cli, &url, &[]).await);
    assert_eq!(status, 400);
    assert!(
        body.contains("asp-v1"),
        "body names the subprotocol: {body:?}"
    );
    let (status, _) =
        refusal(ws_connect(&cli, &url, &[("Sec-WebSocket-Protocol", "chat, superchat")]).await);
    assert_eq!(status, 400);
    let wrong_path = format!("ws://{}/elsewhere", server.local_addr());
    let (status, _) =
        refusal(ws_connect(&cli, &wrong_path, &[("Sec-WebSocket-Protocol", "asp-v1")]).await);
    assert_eq!(status, 404);

    // A plain WebSocket server that accepts the upgrade without selecting asp-v1.
    let listener = srv
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = srv.local_addr(&listener).expect("addr");
    let accepted = Gate::new();
    #[allow(clippy::result_large_err)] // tungstenite's handshake callback fixes the error type
    {
        let srv2 = srv.clone();
        let accepted = accepted.clone();
        srv.spawn(Box::pin(async move {
            if let Ok((tcp, _)) = srv2.accept(&listener).await {
                let ws = srv2
                    .upgrade(
                        tcp,
                        Box::new(|_, resp| Ok(resp)),
                        asp_async::default_ws_config(),
                    )
                    .await;
                drop(ws);
                accepted.open();
            }
        }));
    }
    match ClientBuilder::new(cli.clone())
        .connect(&format!("ws://{addr}/v1/agent-socket"))
        .await
    {
        Err(Error::Subprotocol) => {}
        other => panic!("expected Error::Subprotocol, got {other:?}"),
    }
    accepted.wait().await;

    // The real client offers asp-v1 and gets in.
    let client = connect(&cli, &url).await;
    greet_ok(&client, "subprotocol").await;
    finish(client, server).await;
}

// ───────────────────────────── 9. oversized frame ─────────────────────────────

/// A raw peer sends two INVOKEs of a gated tool, then an INVOKE larger than the server's
/// `max_frame_payload` (1024): the server answers ERROR(FRAME_TOO_LARGE) naming that id
/// only, and the two others still COMPLETE.
pub async fn oversized_frame<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let (started_tx, mut started) = mpsc::unbounded();
    let gate = Gate::new();
    let mut config = Config::default();
    config.limits.max_frame_payload = 1024;
    let server = start(ServerBuilder::new(srv).config(config).tool(gated_tool(
        "slow",
        started_tx,
        gate.clone(),
    )))
    .await;
    let (mut peer, hello) = RawPeer::<C::Ws>::connect(&cli, &server.url()).await;
    assert_eq!(hello.limits.max_frame_payload, Some(1024));
    assert_eq!(hello.tools, 1);
    assert!(matches!(peer.next_frame().await, Some(Frame::ToolDef(_))));

    let invoke = |id: u16, args: Option<RawValue>| {
        Frame::Invoke(Invoke {
            id: RequestId(id),
            tool: "slow".into(),
            args,
            deadline_ms: 0,
            meta: None,
        })
    };
    peer.send(&[invoke(1, None), invoke(2, None)]).await;
    let mut running = [started.next().await, started.next().await];
    running.sort();
    assert_eq!(running, [Some(RequestId(1)), Some(RequestId(2))]);

    let big = RawValue::string(&"x".repeat(2000));
    peer.send(&[invoke(3, Some(big))]).await;
    match peer.next_frame().await {
        Some(Frame::Error(e)) => {
            assert_eq!(e.code, ErrorCode::FRAME_TOO_LARGE);
            assert_eq!(
                e.id,
                RequestId(3),
                "the ERROR names the oversized frame's id"
            );
            assert_eq!(e.frame_type, Some(0x2));
        }
        other => panic!("expected ERROR(FRAME_TOO_LARGE), got {other:?}"),
    }

    gate.open();
    let mut completed = Vec::new();
    while completed.len() < 2 {
        match peer.next_frame().await {
            Some(Frame::Complete(c)) => {
                assert_eq!(c.status, Status::Ok);
                completed.push(c.id.0);
            }
            Some(Frame::Ping(_) | Frame::ToolDef(_)) => {}
            other => panic!("expected COMPLETE, got {other:?}"),
        }
    }
    completed.sort();
    assert_eq!(completed, [1, 2]);
    drop(peer);
    server.shutdown(Duration::from_secs(2)).await;
}

// ───────────────────────────── 10. heartbeat ─────────────────────────────

fn heartbeat_config() -> Config {
    let mut config = Config::default();
    config.heartbeat = Some(Duration::from_millis(200));
    config.heartbeat_mode = HeartbeatMode::Frames;
    config
}

/// A raw peer that reads but never answers PING: the server PINGs, then after three
/// intervals of silence sends ERROR(HEARTBEAT_TIMEOUT) and closes.
pub async fn heartbeat_closes_unresponsive_peer<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let server = start(ServerBuilder::new(srv).config(heartbeat_config())).await;
    let (mut peer, hello) = RawPeer::<C::Ws>::connect(&cli, &server.url()).await;
    assert_eq!(hello.heartbeat_ms, Some(200));
    let mut pings = 0;
    let mut timeout = None;
    while let Some(f) = peer.next_frame().await {
        match f {
            Frame::Ping(_) => pings += 1,
            Frame::Error(e) => timeout = Some(e),
            other => panic!("unexpected {other:?}"),
        }
    }
    let e = timeout.expect("an ERROR before the close");
    assert_eq!(e.code, ErrorCode::HEARTBEAT_TIMEOUT);
    assert_eq!(e.id, RequestId(0));
    // SPEC §2.1: a timeout closes with 1001 (going away).
    assert_eq!(peer.close_code, Some(1001));
    assert!(pings >= 1, "the server pinged before giving up");
    drop(peer);
    poll_until(&cli, Duration::from_secs(5), "connection gone", || {
        server.connections() == 0
    })
    .await;
    server.shutdown(Duration::from_secs(1)).await;
}

/// A raw peer that does the handshake and then neither reads nor writes: the server must
/// still drop the connection (it cannot count on the peer to finish a close handshake).
pub async fn heartbeat_closes_silent_peer<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let server = start(ServerBuilder::new(srv).config(heartbeat_config())).await;
    let (peer, _hello) = RawPeer::<C::Ws>::connect(&cli, &server.url()).await;
    assert_eq!(server.connections(), 1);
    // Three 200 ms intervals, then the close; allow generously more.
    poll_until(&cli, Duration::from_secs(10), "dead peer dropped", || {
        server.connections() == 0
    })
    .await;
    drop(peer);
    server.shutdown(Duration::from_secs(1)).await;
}

/// A raw peer with a huge window invokes a tool that streams without end, then neither
/// reads nor writes: once the socket buffers are full the server's writes block, and the
/// heartbeat must still close the connection (and cancel the handler).
pub async fn heartbeat_closes_blocked_peer<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let (started_tx, mut started) = mpsc::unbounded();
    let (dropped_tx, mut dropped) = mpsc::unbounded::<()>();
    let flood = Tool::new("flood", move |ctx: ToolContext, _args: Args| {
        let guard = DropSignal::new(dropped_tx.clone(), || ());
        let started = started_tx.clone();
        async move {
            let _guard = guard;
            let _ = started.unbounded_send(());
            let chunk = Bytes::from(vec![b'x'; 64 << 10]);
            // 256 MiB at most: far beyond any socket buffer, so the writes block.
            for _ in 0..4096 {
                ctx.stream_bytes(chunk.clone())
                    .await
                    .map_err(|_| ToolError::Cancelled)?;
            }
            Output::value("flood ended")
        }
    });
    let server = start(
        ServerBuilder::new(srv)
            .config(heartbeat_config())
            .tool(flood),
    )
    .await;
    let (ws, _) = ws_connect(&cli, &server.url(), &[("Sec-WebSocket-Protocol", "asp-v1")])
        .await
        .expect("raw connect");
    let mut peer = RawPeer::new(ws);
    peer.hello_with(Hello {
        versions: Versions::V1,
        limits: HelloLimits {
            initial_window: Some(u32::MAX),
            ..HelloLimits::default()
        },
        ..Hello::default()
    })
    .await;
    peer.send(&[Frame::Invoke(Invoke {
        id: RequestId(1),
        tool: "flood".into(),
        args: None,
        deadline_ms: 0,
        meta: None,
    })])
    .await;
    started.next().await.expect("flood started");
    // From here on the peer is silent and reads nothing.
    dropped.next().await.expect("the handler was cancelled");
    poll_until(
        &cli,
        Duration::from_secs(10),
        "blocked peer dropped",
        || server.connections() == 0,
    )
    .await;
    drop(peer);
    server.shutdown(Duration::from_secs(1)).await;
}

/// A real client under the same 200 ms heartbeat stays connected across 1 s of idleness
/// (five intervals, past the 600 ms dead-peer limit) and can still invoke.
pub async fn heartbeat_keeps_live_client<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let server = start(
        ServerBuilder::new(srv)
            .config(heartbeat_config())
            .tool(greet_tool()),
    )
    .await;
    let client = connect(&cli, &server.url()).await;
    assert_eq!(client.session().expect("session").heartbeat_ms, 200);
    greet_ok(&client, "before idle").await;
    // Idle for 1 s: the behaviour under test is "still open afterwards".
    let closed = client.closed();
    match select(
        Box::pin(closed),
        Box::pin(sleep(&cli, Duration::from_secs(1))),
    )
    .await
    {
        Either::Left((reason, _)) => panic!("closed while idle: {reason}"),
        Either::Right(_) => {}
    }
    assert_eq!(server.connections(), 1);
    greet_ok(&client, "after idle").await;
    finish(client, server).await;
}

// ───────────────────────────── 11. graceful shutdown ─────────────────────────────

/// `server.shutdown()` while an invocation runs: the client sees GOAWAY (`is_draining`), a
/// new invoke fails with `Draining`, the running one completes ok, then the connection
/// closes and `shutdown` returns.
pub async fn graceful_shutdown<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let (started_tx, mut started) = mpsc::unbounded();
    let goaway_sent = Gate::new();
    let finish_gate = Gate::new();
    let tool = {
        let goaway_sent = goaway_sent.clone();
        let finish_gate = finish_gate.clone();
        Tool::new("slow", move |ctx: ToolContext, _args: Args| {
            let started = started_tx.clone();
            let goaway_sent = goaway_sent.clone();
            let finish_gate = finish_gate.clone();
            async move {
                let _ = started.unbounded_send(());
                goaway_sent.wait().await;
                // Queued after the GOAWAY, so the client has seen GOAWAY when this arrives.
                ctx.stream_text("after goaway")
                    .await
                    .map_err(|_| ToolError::Cancelled)?;
                finish_gate.wait().await;
                Output::value("finished")
            }
        })
    };
    let server = start(ServerBuilder::new(srv).tool(tool).tool(greet_tool())).await;
    let client = connect(&cli, &server.url()).await;
    let mut inv = client.invoke("slow", &()).expect("invoke");
    started.next().await.expect("handler started");
    assert!(!client.is_draining());

    // The shutdown timeout is longer than the scenario's: shutdown must return because the
    // connection drained, not because it gave up.
    let shutdown = server.shutdown(Duration::from_secs(60));
    let drive = async {
        // `join` polls `shutdown` first, which sends GOAWAY before its first await.
        goaway_sent.open();
        let c = inv.next().await.expect("chunk");
        assert_eq!(c.as_str(), Some("after goaway"));
        assert!(client.is_draining(), "GOAWAY arrived before the chunk");
        match client.invoke("greet", &()) {
            Err(Error::Send(SendError::Draining)) => {}
            other => panic!("expected Draining, got {other:?}"),
        }
        finish_gate.open();
        let done = inv
            .completion()
            .await
            .expect("the in-flight invocation finishes");
        assert_eq!(done.status, Status::Ok);
        let r: String = from_value(done.result.as_ref().expect("result")).expect("decode");
        assert_eq!(r, "finished");
        client.closed().await
    };
    let ((), reason) = join(shutdown, drive).await;
    assert!(
        !matches!(
            reason,
            CloseReason::PeerError { .. } | CloseReason::ProtocolError { .. }
        ),
        "clean close, got {reason}"
    );
    assert_eq!(server.connections(), 0);
}

/// `server.shutdown(300 ms)` with an invocation that never ends: after the drain timeout
/// the connection closes with GOING_AWAY, the handler is dropped, and `shutdown` returns.
pub async fn shutdown_timeout<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let (started_tx, mut started) = mpsc::unbounded();
    let (dropped_tx, mut dropped) = mpsc::unbounded::<()>();
    let never = Gate::new();
    let tool = Tool::new("stuck", move |_ctx: ToolContext, _args: Args| {
        let guard = DropSignal::new(dropped_tx.clone(), || ());
        let started = started_tx.clone();
        let never = never.clone();
        async move {
            let _guard = guard;
            let _ = started.unbounded_send(());
            never.wait().await;
            Output::value("unreachable")
        }
    });
    let server = start(ServerBuilder::new(srv).tool(tool)).await;
    let client = connect(&cli, &server.url()).await;
    let inv = client.invoke("stuck", &()).expect("invoke");
    started.next().await.expect("handler started");
    let (_, outcome) = join(
        server.shutdown(Duration::from_millis(300)),
        inv.completion(),
    )
    .await;
    match outcome {
        Err(Error::Closed(CloseReason::PeerError { code, .. })) => {
            assert_eq!(code, ErrorCode::GOING_AWAY)
        }
        other => panic!("expected the connection to end with GOING_AWAY, got {other:?}"),
    }
    dropped.next().await.expect("the stuck handler was dropped");
    let _ = client.closed().await;
    // `shutdown` returns when the connection is gone or 1 s after the drain timeout,
    // whichever is first; do not race that bound.
    poll_until(&cli, Duration::from_secs(5), "connection gone", || {
        server.connections() == 0
    })
    .await;
}

/// SPEC §2.1: every WebSocket Close carries the code that says why: 1002 after a protocol
/// error (a STREAM from a client; an empty binary message), 1008 after FLOOD, 1000 after a
/// GOAWAY drain. (1001 after HEARTBEAT_TIMEOUT: `heartbeat_closes_unresponsive_peer`.)
pub async fn close_codes<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let mut config = Config::default();
    config.rate_limit = 2;
    config.flood_limit = 4;
    let server = start(ServerBuilder::new(srv).config(config).tool(greet_tool())).await;

    // A frame in the wrong direction (§3.3): PROTOCOL_VIOLATION, then 1002.
    let (mut peer, _) = RawPeer::<C::Ws>::connect(&cli, &server.url()).await;
    peer.send(&[Frame::Stream(asp_async::asp_proto::frame::Stream {
        id: RequestId(1),
        data: Bytes::from_static(b"x"),
        text: true,
        seq: 0,
        fin: false,
    })])
    .await;
    let (errors, code) = peer.errors_until_close().await;
    assert_eq!(errors, [ErrorCode::PROTOCOL_VIOLATION]);
    assert_eq!(code, Some(1002), "close code after PROTOCOL_VIOLATION");

    // An empty binary message (§2.1): FRAMING_ERROR, then 1002.
    let (mut peer, _) = RawPeer::<C::Ws>::connect(&cli, &server.url()).await;
    peer.send_raw(b"").await;
    let (errors, code) = peer.errors_until_close().await;
    assert_eq!(errors, [ErrorCode::FRAMING_ERROR]);
    assert_eq!(code, Some(1002), "close code after FRAMING_ERROR");

    // Beyond the hard rate limit (§10): FLOOD, then 1008.
    let (mut peer, _) = RawPeer::<C::Ws>::connect(&cli, &server.url()).await;
    peer.send(&[
        Frame::PING,
        Frame::PING,
        Frame::PING,
        Frame::PING,
        Frame::PING,
    ])
    .await;
    let (errors, code) = peer.errors_until_close().await;
    assert_eq!(errors.last(), Some(&ErrorCode::FLOOD), "{errors:?}");
    assert_eq!(code, Some(1008), "close code after FLOOD");

    // A graceful drain (§6.5): GOAWAY, nothing in flight, close with 1000.
    let (mut peer, _) = RawPeer::<C::Ws>::connect(&cli, &server.url()).await;
    let ((), (errors, code)) = join(
        server.shutdown(Duration::from_secs(5)),
        peer.errors_until_close(),
    )
    .await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(code, Some(1000), "close code after a GOAWAY drain");
}

// ───────────────────────────── 12. handler panic ─────────────────────────────

/// A panicking handler ends its invocation with ERROR(INTERNAL); an invocation running
/// beside it and later ones are unaffected.
pub async fn handler_panic<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let (started_tx, mut started) = mpsc::unbounded();
    let gate = Gate::new();
    let boom = Tool::new("boom", |_ctx: ToolContext, _args: Args| async move {
        if true {
            panic!("handler panic (expected by the test)");
        }
        Output::value("unreachable")
    });
    // Panics in the handler function itself, before it returns a future.
    fn boom_now(_ctx: ToolContext, _args: Args) -> std::future::Ready<Result<Output, ToolError>> {
        panic!("handler function panic (expected by the test)")
    }
    let server = start(
        ServerBuilder::new(srv)
            .tool(boom)
            .tool(Tool::new("boom_now", boom_now))
            .tool(gated_tool("slow", started_tx, gate.clone()))
            .tool(greet_tool()),
    )
    .await;
    let client = connect(&cli, &server.url()).await;
    let slow = client.invoke("slow", &()).expect("invoke");
    started.next().await.expect("slow started");

    let r = client
        .invoke("boom", &())
        .expect("invoke")
        .completion()
        .await;
    match r {
        Err(Error::Remote(e)) => {
            assert_eq!(e.code, ErrorCode::INTERNAL);
            assert!(e.retryable);
        }
        other => panic!("expected ERROR(INTERNAL), got {other:?}"),
    }
    gate.open();
    let done = slow.completion().await.expect("the neighbour completes");
    assert_eq!(done.status, Status::Ok);
    greet_ok(&client, "after panic").await;
    // Twice: a panic must not poison anything.
    let again = client.invoke("boom", &()).expect("invoke");
    assert_eq!(remote_code(again.completion().await), ErrorCode::INTERNAL);
    greet_ok(&client, "after second panic").await;
    let sync = client.invoke("boom_now", &()).expect("invoke");
    assert_eq!(remote_code(sync.completion().await), ErrorCode::INTERNAL);
    greet_ok(&client, "after a panicking handler function").await;
    finish(client, server).await;
}

/// Chunks streamed from a task the handler spawned (with a clone of its context) go out at
/// once, while the handler itself waits: here it waits for the client to have read them.
pub async fn stream_from_spawned_task<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let gate = Gate::new();
    let rt = srv.clone();
    let g = gate.clone();
    let tool = Tool::new("side", move |ctx: ToolContext, _args: Args| {
        let rt = rt.clone();
        let gate = g.clone();
        async move {
            let side = ctx.clone();
            rt.spawn(Box::pin(async move {
                for word in ["one ", "two ", "three"] {
                    let _ = side.stream_text(word).await;
                }
            }));
            gate.wait().await;
            Output::value("done")
        }
    });
    let server = start(ServerBuilder::new(srv).tool(tool)).await;
    let client = connect(&cli, &server.url()).await;
    let mut inv = client.invoke("side", &()).expect("invoke");
    let mut text = String::new();
    while text.len() < "one two three".len() {
        let chunk = inv.next().await.expect("a chunk while the handler waits");
        text.push_str(chunk.as_str().expect("text"));
    }
    assert_eq!(text, "one two three");
    gate.open();
    let done = inv.completion().await.expect("completes");
    assert_eq!(done.status, Status::Ok);
    finish(client, server).await;
}

const LONG_CHUNKS: u64 = 20_000;

/// A handler that streams 20 000 chunks of 32 bytes (640 KB, well past the 32 KiB at which
/// a send gives way to the writer on tokio's multi-thread runtime, the 256 KiB window and
/// the per-invocation queue) without ever waiting on anything else, twice at once on one
/// connection: every chunk of each arrives once and in order, and both complete.
pub async fn long_stream_without_waiting<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let tool = Tool::new("long", |ctx: ToolContext, args: Args| async move {
        let tag: u64 = args.parse()?;
        for i in 0..LONG_CHUNKS {
            let mut chunk = Vec::with_capacity(32);
            chunk.extend_from_slice(&tag.to_be_bytes());
            chunk.extend_from_slice(&i.to_be_bytes());
            chunk.resize(32, b'.');
            ctx.stream_bytes(Bytes::from(chunk))
                .await
                .map_err(|_| ToolError::Cancelled)?;
        }
        Output::value(&LONG_CHUNKS)
    });
    let server = start(ServerBuilder::new(srv).tool(tool)).await;
    let client = connect(&cli, &server.url()).await;
    let read = |tag: u64| {
        let mut inv = client.invoke("long", &tag).expect("invoke");
        async move {
            let mut next = 0u64;
            while let Some(c) = inv.next().await {
                assert_eq!(c.data.len(), 32);
                let got_tag = u64::from_be_bytes(c.data[..8].try_into().expect("8 bytes"));
                let got = u64::from_be_bytes(c.data[8..16].try_into().expect("8 bytes"));
                assert_eq!((got_tag, got), (tag, next), "chunk out of order or lost");
                next += 1;
            }
            assert_eq!(next, LONG_CHUNKS);
            let done = inv.completion().await.expect("completion");
            assert_eq!(done.status, Status::Ok);
        }
    };
    join(read(1), read(2)).await;
    finish(client, server).await;
}

// ───────────────────────────── 13. flow control ─────────────────────────────

const BULK_LEN: usize = 200 << 10;
const BULK_CHUNK: usize = 100;
const SMALL_WINDOW: u32 = 1024;

fn bulk_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// A client with a 1 KiB window reads 200 KiB streamed in 100-byte chunks, yielding
/// between chunks: every byte arrives, in order, and the server is never more than one
/// window ahead of what the client consumed. An unread stream does not stall
/// `completion()`.
pub async fn flow_control<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let sent = Arc::new(AtomicUsize::new(0));
    let tool = {
        let sent = sent.clone();
        Tool::new("bulk", move |ctx: ToolContext, _args: Args| {
            let sent = sent.clone();
            async move {
                let data: Vec<u8> = (0..BULK_LEN).map(bulk_byte).collect();
                let data = Bytes::from(data);
                for off in (0..BULK_LEN).step_by(BULK_CHUNK) {
                    ctx.stream_bytes(data.slice(off..off + BULK_CHUNK))
                        .await
                        .map_err(|_| ToolError::Cancelled)?;
                    sent.fetch_add(BULK_CHUNK, Ordering::SeqCst);
                }
                Output::value(&(BULK_LEN as u64))
            }
        })
    };
    let server = start(ServerBuilder::new(srv).tool(tool)).await;
    let mut config = Config::default();
    config.limits.initial_window = SMALL_WINDOW;
    let client = ClientBuilder::new(cli.clone())
        .config(config)
        .connect(&server.url())
        .await
        .expect("connect");

    let mut inv = client.invoke("bulk", &()).expect("invoke");
    let mut received = 0usize;
    while let Some(c) = inv.next().await {
        assert!(!c.text);
        assert!(c.data.len() <= SMALL_WINDOW as usize);
        for (k, b) in c.data.iter().enumerate() {
            assert_eq!(
                *b,
                bulk_byte(received + k),
                "byte {} out of order",
                received + k
            );
        }
        received += c.data.len();
        // The server can have queued at most the initial window plus the credit we
        // granted, which never exceeds what we consumed.
        let ahead = sent.load(Ordering::SeqCst).saturating_sub(received);
        assert!(
            ahead <= SMALL_WINDOW as usize,
            "server got {ahead} bytes ahead of a {SMALL_WINDOW}-byte window"
        );
        yield_now().await;
    }
    assert_eq!(received, BULK_LEN);
    let done = inv.completion().await.expect("completion");
    assert_eq!(done.status, Status::Ok);
    let total: u64 = from_value(done.result.as_ref().expect("result")).expect("decode");
    assert_eq!(total, BULK_LEN as u64);

    // Not reading at all: `completion()` discards the chunks and still grants credit, so
    // the stream does not stall on the 1 KiB window.
    let done = client
        .invoke("bulk", &())
        .expect("invoke")
        .completion()
        .await
        .expect("completion without reading");
    assert_eq!(done.status, Status::Ok);
    finish(client, server).await;
}

/// Runs `scenario` under [`SCENARIO_TIMEOUT`] on `rt`'s timer (the test entry points'
/// wrapper).
pub async fn bounded<R: Runtime>(rt: &R, scenario: impl std::future::Future<Output = ()>) {
    with_timeout(rt, SCENARIO_TIMEOUT, scenario).await;
}

/// A client that accepts only 1 KiB frame payloads (default `max_chunk`): streamed output
/// must be split to fit its frame limit, not only its `max_chunk`, and arrive whole.
pub async fn small_frame_limit<S: Runtime, C: Runtime>(srv: S, cli: C) {
    const TEXT_LEN: usize = 10_000;
    let tool = Tool::new("long", |ctx: ToolContext, _args: Args| async move {
        let text: String = (0..TEXT_LEN)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        if let Err(e) = ctx.stream_text(&text).await {
            return Err(ToolError::failed(format!("stream_text: {e:?}")));
        }
        Output::value(&(TEXT_LEN as u64))
    });
    let server = start(ServerBuilder::new(srv).tool(tool)).await;
    let mut config = Config::default();
    config.limits.max_frame_payload = 1024;
    let client = ClientBuilder::new(cli.clone())
        .config(config)
        .connect(&server.url())
        .await
        .expect("connect");
    let mut inv = client.invoke("long", &()).expect("invoke");
    let mut text = String::new();
    while let Some(c) = inv.next().await {
        assert!(c.data.len() <= 1024);
        text.push_str(c.as_str().expect("text"));
    }
    let done = inv.completion().await.expect("completion");
    assert_eq!(done.status, Status::Ok, "{done:?}");
    assert_eq!(text.len(), TEXT_LEN);
    assert!(text
        .bytes()
        .enumerate()
        .all(|(i, b)| b == b'a' + (i % 26) as u8));
    finish(client, server).await;
}

/// A client with a 1 KiB window; the tool writes 100 bytes, then whole-window-sized and
/// larger writes. The client's credit lags by up to half a window (it grants in batches,
/// SPEC §7.5), so a chunk the size of the full window could never fit again: chunks must
/// be cut so that the stream always makes progress.
pub async fn small_window_large_writes<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let tool = Tool::new("uneven", |ctx: ToolContext, _args: Args| async move {
        let mut total = 0usize;
        for (i, len) in [100usize, 1024, 3000, 1, 1024].into_iter().enumerate() {
            let b = b'a' + i as u8;
            ctx.stream_bytes(Bytes::from(vec![b; len]))
                .await
                .map_err(|_| ToolError::Cancelled)?;
            total += len;
        }
        Output::value(&(total as u64))
    });
    let server = start(ServerBuilder::new(srv).tool(tool)).await;
    let mut config = Config::default();
    config.limits.initial_window = SMALL_WINDOW;
    let client = ClientBuilder::new(cli.clone())
        .config(config)
        .connect(&server.url())
        .await
        .expect("connect");
    let mut inv = client.invoke("uneven", &()).expect("invoke");
    let mut data = Vec::new();
    while let Some(c) = inv.next().await {
        assert!(c.data.len() <= SMALL_WINDOW as usize);
        data.extend_from_slice(&c.data);
        yield_now().await;
    }
    let done = inv.completion().await.expect("completion");
    assert_eq!(done.status, Status::Ok);
    let mut expected = Vec::new();
    for (i, len) in [100usize, 1024, 3000, 1, 1024].into_iter().enumerate() {
        expected.extend(std::iter::repeat_n(b'a' + i as u8, len));
    }
    assert_eq!(data.len(), expected.len());
    assert!(data == expected, "bytes arrive in order");
    finish(client, server).await;
}

/// INVOKE with `deadline_ms` (SPEC §7.4) of a handler that never finishes: the client gets
/// ERROR(DEADLINE_EXCEEDED) and the handler is dropped; the connection carries on.
pub async fn deadline_exceeded<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let (dropped_tx, mut dropped) = mpsc::unbounded::<()>();
    let never = Gate::new();
    let tool = Tool::new("stuck", move |_ctx: ToolContext, _args: Args| {
        let guard = DropSignal::new(dropped_tx.clone(), || ());
        let never = never.clone();
        async move {
            let _guard = guard;
            never.wait().await;
            Output::value("unreachable")
        }
    });
    let server = start(ServerBuilder::new(srv).tool(tool).tool(greet_tool())).await;
    let client = connect(&cli, &server.url()).await;
    let inv = client
        .invoke_raw("stuck", None, InvokeOptions::default().deadline_ms(50))
        .expect("invoke");
    match inv.completion().await {
        Err(Error::Remote(e)) => {
            assert_eq!(e.code, ErrorCode::DEADLINE_EXCEEDED);
            assert!(e.retryable);
        }
        other => panic!("expected ERROR(DEADLINE_EXCEEDED), got {other:?}"),
    }
    dropped.next().await.expect("the handler was dropped");
    greet_ok(&client, "after deadline").await;
    finish(client, server).await;
}

/// `max_connections(1)`: a second connection is refused with HTTP 503 while the first is
/// open, and accepted once it has gone.
pub async fn max_connections<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let server = start(
        ServerBuilder::new(srv)
            .max_connections(1)
            .tool(greet_tool()),
    )
    .await;
    let first = connect(&cli, &server.url()).await;
    match ClientBuilder::new(cli.clone()).connect(&server.url()).await {
        Err(Error::Rejected { status: 503, .. }) => {}
        other => panic!("expected 503, got {other:?}"),
    }
    greet_ok(&first, "first").await;
    first.close().await;
    poll_until(
        &cli,
        Duration::from_secs(5),
        "first connection gone",
        || server.connections() == 0,
    )
    .await;
    let second = connect(&cli, &server.url()).await;
    greet_ok(&second, "second").await;
    finish(second, server).await;
}
