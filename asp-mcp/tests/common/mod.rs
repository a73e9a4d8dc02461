//! Helpers shared by the bridge's scenario tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use asp_mcp::{Generation, McpToAspConfig, Upstream};
use asp_tokio::asp_proto::frame::{Reply, ReplyStatus, Request};
use asp_tokio::{Chunk, Client, Completion, Error};
use futures::StreamExt;
use serde_json::Value;

/// Every wait in these tests is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(60);

pub fn fixture() -> Upstream {
    Upstream::Stdio {
        program: env!("CARGO_BIN_EXE_mcp-fixture").to_owned(),
        args: vec![],
    }
}

/// A child process that prints its URL on its first stdout line; killed on drop.
pub struct UrlChild {
    pub child: Child,
    pub url: String,
}

impl UrlChild {
    pub fn spawn(mut cmd: Command) -> UrlChild {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).expect("read url");
        assert!(!line.trim().is_empty(), "no URL printed");
        UrlChild {
            child,
            url: line.trim().to_owned(),
        }
    }
}

impl Drop for UrlChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn fixture_http() -> UrlChild {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-fixture"));
    cmd.arg("--http").arg("127.0.0.1:0");
    UrlChild::spawn(cmd)
}

/// Logs of the bridge, with `RUST_LOG` (e.g. `RUST_LOG=asp_mcp=debug`).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
}

/// Starts an MCP → ASP bridge in this process.
pub async fn bridge(upstream: Upstream, generation: Generation) -> asp_tokio::Server {
    logs();
    let mut config = McpToAspConfig::new(upstream);
    config.generation = generation;
    asp_mcp::serve_mcp_as_asp(config).await.expect("bridge")
}

/// An ASP client that answers every REQUEST with `{"name": "Ada"}` and records it.
pub async fn client(url: &str) -> (Client, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = asp_tokio::client()
        .on_request(move |req: Request| {
            let body = req
                .body
                .as_ref()
                .and_then(asp_mcp::convert::raw_to_json)
                .unwrap_or(Value::Null);
            let _ = tx.send(serde_json::json!({"kind": req.kind.as_str(), "body": body, "invocation": req.invocation.map(|i| i.0)}));
            async move {
                Reply {
                    id: req.id,
                    status: ReplyStatus::Answered,
                    body: Some(asp_mcp::convert::json_to_raw(&serde_json::json!({"name": "Ada"}))),
                }
            }
        })
        .connect(url)
        .await
        .expect("connect");
    (client, rx)
}

/// Invokes and collects all chunks and the completion.
pub async fn call(
    client: &Client,
    tool: &str,
    args: Value,
) -> (Vec<Chunk>, Result<Completion, Error>) {
    tokio::time::timeout(LIMIT, async {
        let mut inv = client.invoke(tool, &args).expect("invoke");
        let mut chunks = Vec::new();
        while let Some(c) = inv.next().await {
            chunks.push(c);
        }
        (chunks, inv.completion().await)
    })
    .await
    .expect("call timed out")
}

/// The COMPLETE result as JSON (bin as base64).
pub fn result(c: &Completion) -> Value {
    c.result
        .as_ref()
        .and_then(asp_mcp::convert::raw_to_json)
        .unwrap_or(Value::Null)
}

/// The first text block of a bridged MCP result.
pub fn first_text(c: &Completion) -> String {
    result(c)["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

pub fn code(e: &Error) -> Option<asp_tokio::ErrorCode> {
    match e {
        Error::Remote(f) => Some(f.code),
        _ => None,
    }
}

/// The Python interpreter of a venv with the official `mcp` package: `MCP_PYTHON`, or
/// `asp-mcp/.venv/bin/python`. Under CI its absence fails the test; elsewhere the test
/// is skipped with a note.
pub fn python() -> Option<String> {
    let candidates = [
        std::env::var("MCP_PYTHON").ok(),
        Some(concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_owned()),
    ];
    for c in candidates.into_iter().flatten() {
        if std::path::Path::new(&c).exists() {
            return Some(c);
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI: no Python with the mcp package (set MCP_PYTHON or create asp-mcp/.venv)"
    );
    eprintln!("skipped: no Python with the mcp package (set MCP_PYTHON)");
    None
}
