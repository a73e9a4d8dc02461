//! MCP → ASP: an ASP client using MCP servers through the bridge. The same scenario runs
//! against the rmcp fixture (stdio and Streamable HTTP, both protocol generations) and, in
//! `python_peer.rs`, against the official Python SDK's server.

mod common;

use std::time::Duration;

use asp_mcp::Generation;
use asp_tokio::{ErrorCode, Status, ToolChange};
use common::*;
use futures::StreamExt;
use serde_json::json;

/// List, call (text, structured, image), progress, many in flight, errors, elicitation,
/// list changes and cancellation, through one bridge.
pub async fn scenario(url: &str, label: &str) {
    let (client, mut asked) = client(url).await;

    // tools/list → the initial TOOL_DEF set, with schemas.
    let tools = client.tools();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    for t in [
        "echo", "add", "image", "progress", "slow", "ask", "fail", "toggle",
    ] {
        assert!(names.contains(&t), "{label}: {t} missing from {names:?}");
    }
    let echo = tools.iter().find(|t| t.name.as_str() == "echo").unwrap();
    let schema = asp_mcp::convert::raw_to_json(echo.input_schema.as_ref().unwrap()).unwrap();
    assert_eq!(schema["properties"]["text"]["type"], "string", "{label}");

    // tools/call → COMPLETE: text, structured content, an image as bin.
    let (_, done) = call(&client, "echo", json!({"text": "héllo"})).await;
    let done = done.unwrap();
    assert_eq!(done.status, Status::Ok, "{label}");
    assert_eq!(first_text(&done), "héllo", "{label}");
    let (_, done) = call(&client, "add", json!({"a": 2, "b": 3})).await;
    assert_eq!(
        result(&done.unwrap())["structuredContent"]["sum"],
        5.0,
        "{label}"
    );
    let (_, done) = call(&client, "image", json!({})).await;
    let done = done.unwrap();
    let raw = done.result.clone().unwrap();
    let mut bytes: &[u8] = raw.as_bytes();
    let mp = rmpv::decode::read_value(&mut bytes).unwrap();
    let image = &mp["content"][0];
    assert_eq!(image["type"].as_str(), Some("image"), "{label}");
    let data = image["data"].as_slice().expect("image data is bin");
    assert_eq!(&data[..4], b"\x89PNG", "{label}");

    // Progress → STREAM chunks, in order, before COMPLETE.
    let (chunks, done) = call(&client, "progress", json!({"n": 5})).await;
    let texts: Vec<&str> = chunks.iter().filter_map(|c| c.as_str()).collect();
    assert_eq!(
        texts,
        ["chunk 0", "chunk 1", "chunk 2", "chunk 3", "chunk 4"],
        "{label}"
    );
    assert_eq!(first_text(&done.unwrap()), "done", "{label}");

    // Many calls in flight on one socket.
    let calls: Vec<_> = (0..16)
        .map(|i| {
            let c = &client;
            async move {
                let (_, d) = call(c, "echo", json!({"text": format!("n{i}")})).await;
                first_text(&d.unwrap())
            }
        })
        .collect();
    let out = futures::future::join_all(calls).await;
    for (i, o) in out.iter().enumerate() {
        assert_eq!(o, &format!("n{i}"), "{label}");
    }

    // Errors: a tool error is COMPLETE(failed); a protocol error an ERROR; an unknown tool
    // is refused by the core.
    let (_, done) = call(&client, "fail", json!({})).await;
    let done = done.unwrap();
    assert_eq!(done.status, Status::Failed, "{label}");
    assert!(first_text(&done).contains("it failed"), "{label}");
    let (_, err) = call(&client, "boom", json!({})).await;
    let err = err.unwrap_err();
    assert!(
        matches!(code(&err), Some(c) if c == ErrorCode::INTERNAL || c == ErrorCode::TOOL_FAILED),
        "{label}: {err}"
    );
    let (_, err) = call(&client, "nope", json!({})).await;
    assert_eq!(
        code(&err.unwrap_err()),
        Some(ErrorCode::UNKNOWN_TOOL),
        "{label}"
    );

    // Elicitation → REQUEST `input` → REPLY → the tool's answer.
    let (_, done) = call(&client, "ask", json!({})).await;
    assert_eq!(first_text(&done.unwrap()), "hello Ada", "{label}");
    let q = asked.recv().await.unwrap();
    assert_eq!(q["kind"], "input", "{label}");
    assert_eq!(q["body"]["message"], "your name?", "{label}");
    assert_eq!(
        q["body"]["schema"]["properties"]["name"]["type"], "string",
        "{label}"
    );

    // list_changed → re-list → TOOL_DEF add, then remove.
    let mut changes = client.tool_changes();
    let (_, done) = call(&client, "toggle", json!({})).await;
    assert_eq!(first_text(&done.unwrap()), "added", "{label}");
    let change = tokio::time::timeout(LIMIT, changes.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&change, ToolChange::Added(d) if d.name.as_str() == "extra"),
        "{label}: {change:?}"
    );
    let (_, done) = call(&client, "extra", json!({})).await;
    assert_eq!(done.unwrap().status, Status::Ok, "{label}");
    let (_, done) = call(&client, "toggle", json!({})).await;
    assert_eq!(first_text(&done.unwrap()), "removed", "{label}");
    let change = tokio::time::timeout(LIMIT, changes.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&change, ToolChange::Removed(n) if n.as_str() == "extra"),
        "{label}: {change:?}"
    );

    // INTERRUPT → notifications/cancelled: the server sees the cancellation.
    let mut inv = client.invoke("slow", &json!({"ms": 60_000})).unwrap();
    let first = tokio::time::timeout(LIMIT, inv.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.as_str(), Some("started"), "{label}");
    inv.interrupt();
    let done = tokio::time::timeout(LIMIT, inv.completion())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, Status::Cancelled, "{label}");
    let (_, done) = call(&client, "cancelled", json!({"at_least": 1})).await;
    assert_eq!(first_text(&done.unwrap()), "1", "{label}");

    client.close().await;
}

/// The [`scenario`] through a bridge to `upstream`.
async fn bridged(upstream: asp_mcp::Upstream, generation: Generation, label: &str) {
    let server = bridge(upstream, generation).await;
    scenario(&server.url(), label).await;
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_stdio_legacy() {
    bridged(fixture(), Generation::Legacy, "rmcp stdio 2025-11-25").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_stdio_modern() {
    bridged(fixture(), Generation::Modern, "rmcp stdio 2026-07-28").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_http_legacy() {
    let up = fixture_http();
    let upstream = asp_mcp::Upstream::Http {
        url: up.url.clone(),
    };
    bridged(upstream, Generation::Legacy, "rmcp http 2025-11-25").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_http_modern() {
    let up = fixture_http();
    let upstream = asp_mcp::Upstream::Http {
        url: up.url.clone(),
    };
    bridged(upstream, Generation::Modern, "rmcp http 2026-07-28").await;
}

/// Each ASP client has its own MCP session (for stdio, its own child): a tool-set change
/// in one is not seen by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_per_client() {
    let server = bridge(fixture(), Generation::Auto).await;
    let (a, _) = client(&server.url()).await;
    let (b, _) = client(&server.url()).await;
    let (_, done) = call(&a, "toggle", json!({})).await;
    assert_eq!(first_text(&done.unwrap()), "added");
    let (_, done) = call(&b, "toggle", json!({})).await;
    assert_eq!(first_text(&done.unwrap()), "added", "b's server is its own");
    server.shutdown(Duration::from_secs(5)).await;
}

/// A child that crashes fails the call with UNAVAILABLE (retryable) and is restarted; the
/// ASP connection and its next calls go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_crash_restarts() {
    let server = bridge(fixture(), Generation::Legacy).await;
    let (client, _) = client(&server.url()).await;
    let (_, err) = call(&client, "crash", json!({})).await;
    let err = err.unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::UNAVAILABLE), "{err}");
    for i in 0..3 {
        let (_, done) = call(&client, "echo", json!({"text": format!("after {i}")})).await;
        assert_eq!(first_text(&done.unwrap()), format!("after {i}"));
    }
    server.shutdown(Duration::from_secs(5)).await;
}

/// Garbage on the child's stdout does not take the connection down: the call ends cleanly
/// (answered, or UNAVAILABLE if the session broke and was restarted) and the next works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_garbage() {
    let server = bridge(fixture(), Generation::Legacy).await;
    let (client, _) = client(&server.url()).await;
    let (_, r) = call(&client, "garbage", json!({})).await;
    match r {
        Ok(d) => assert_eq!(first_text(&d), "wrote garbage"),
        Err(e) => assert_eq!(code(&e), Some(ErrorCode::UNAVAILABLE), "{e}"),
    }
    let (_, done) = call(&client, "echo", json!({"text": "still here"})).await;
    assert_eq!(first_text(&done.unwrap()), "still here");
    server.shutdown(Duration::from_secs(5)).await;
}

/// A child that stops answering: the call ends with UPSTREAM_TIMEOUT after the call
/// timeout, the probe fails, the child is restarted, and the next call works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_hang_restarts() {
    let mut config = asp_mcp::McpToAspConfig::new(fixture());
    config.generation = Generation::Legacy;
    config.call_timeout = Some(Duration::from_millis(500));
    let server = asp_mcp::serve_mcp_as_asp(config).await.unwrap();
    let (client, _) = client(&server.url()).await;
    let (_, err) = call(&client, "hang", json!({})).await;
    assert_eq!(code(&err.unwrap_err()), Some(ErrorCode::UPSTREAM_TIMEOUT));
    let (_, done) = call(&client, "echo", json!({"text": "revived"})).await;
    assert_eq!(first_text(&done.unwrap()), "revived");
    server.shutdown(Duration::from_secs(5)).await;
}

fn python_script() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/fixture_server.py"
    )
    .to_owned()
}

/// The official Python SDK's server (`MCPServer`, formerly FastMCP) over stdio.
async fn python_stdio(generation: Generation, label: &str) {
    let Some(py) = python() else { return };
    let up = asp_mcp::Upstream::Stdio {
        program: py,
        args: vec![python_script()],
    };
    let server = bridge(up, generation).await;
    scenario(&server.url(), label).await;
    server.shutdown(Duration::from_secs(5)).await;
}

/// The same over Streamable HTTP (uvicorn on a free loopback port).
async fn python_http(generation: Generation, label: &str) {
    let Some(py) = python() else { return };
    let mut cmd = std::process::Command::new(py);
    cmd.arg(python_script()).arg("--http");
    let up = UrlChild::spawn(cmd);
    let server = bridge(
        asp_mcp::Upstream::Http {
            url: up.url.clone(),
        },
        generation,
    )
    .await;
    scenario(&server.url(), label).await;
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_stdio_legacy() {
    python_stdio(Generation::Legacy, "python stdio 2025-11-25").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_stdio_modern() {
    python_stdio(Generation::Modern, "python stdio 2026-07-28").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_http_legacy() {
    python_http(Generation::Legacy, "python http 2025-11-25").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_http_modern() {
    python_http(Generation::Modern, "python http 2026-07-28").await;
}

/// A Python child that crashes is restarted too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_child_crash_restarts() {
    let Some(py) = python() else { return };
    let up = asp_mcp::Upstream::Stdio {
        program: py,
        args: vec![python_script()],
    };
    let server = bridge(up, Generation::Auto).await;
    let (client, _) = client(&server.url()).await;
    let (_, err) = call(&client, "crash", json!({})).await;
    assert_eq!(code(&err.unwrap_err()), Some(ErrorCode::UNAVAILABLE));
    let (_, done) = call(&client, "echo", json!({"text": "back"})).await;
    assert_eq!(first_text(&done.unwrap()), "back");
    server.shutdown(Duration::from_secs(5)).await;
}
