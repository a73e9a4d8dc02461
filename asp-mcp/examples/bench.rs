//! The bridge's cost, measured against MCP used directly, in one run:
//!
//! - stdio: an ASP client → the bridge (`asp-mcp from-mcp`, its own process) → the rmcp
//!   fixture server (a child of the bridge, stdio) vs an rmcp client → the same server as its
//!   own child directly;
//! - HTTP: an ASP client → the bridge → the fixture over Streamable HTTP vs the rmcp
//!   Streamable HTTP client → the same server directly.
//!
//! Each row: sequential round trips of `echo` (64-byte text; median latency), and
//! throughput with 32 calls in flight over one connection (one ASP socket; one MCP client).
//! Runs alternate direct and bridged, `--runs` times; the ratios are per run, reported as
//! median and range.
//!
//! `cargo run --release --example bench -- [--runs 5] [--calls 2000]`
//! (build the binaries first: `cargo build --release --bins`).

use std::process::Stdio;
use std::time::Instant;

use asp_tokio::Client;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

const TEXT: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const IN_FLIGHT: usize = 32;

fn bin(name: &str) -> String {
    let exe = std::env::current_exe().expect("exe");
    // target/release/examples/bench → target/release/NAME
    let dir = exe.parent().and_then(|p| p.parent()).expect("dir");
    dir.join(name).to_string_lossy().into_owned()
}

/// Starts a process that prints a URL on its first line.
async fn url_child(mut cmd: tokio::process::Command) -> (tokio::process::Child, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).await.expect("url");
    (child, line.trim().to_owned())
}

trait Caller {
    async fn call(&self);
}

struct Mcp(RunningService<RoleClient, ()>);

impl Caller for Mcp {
    async fn call(&self) {
        let mut p = CallToolRequestParams::new("echo");
        p.arguments = json!({"text": TEXT}).as_object().cloned();
        let r = self.0.peer().call_tool(p).await.expect("tools/call");
        assert!(r.is_error != Some(true));
    }
}

struct Asp(Client);

impl Caller for Asp {
    async fn call(&self) {
        let inv = self
            .0
            .invoke("echo", &json!({"text": TEXT}))
            .expect("invoke");
        let c = inv.completion().await.expect("complete");
        assert_eq!(c.status, asp_tokio::Status::Ok);
    }
}

/// (median µs per sequential call, calls/s with IN_FLIGHT in flight).
async fn measure(c: &impl Caller, calls: usize) -> (f64, f64) {
    for _ in 0..calls / 10 {
        c.call().await;
    }
    let mut lat = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        c.call().await;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    let p50 = lat[lat.len() / 2];
    let t = Instant::now();
    let per = calls / IN_FLIGHT;
    futures::future::join_all((0..IN_FLIGHT).map(|_| async {
        for _ in 0..per {
            c.call().await;
        }
    }))
    .await;
    let rate = (per * IN_FLIGHT) as f64 / t.elapsed().as_secs_f64();
    (p50, rate)
}

fn median_range(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

async fn mcp_stdio() -> Mcp {
    let cmd = tokio::process::Command::new(bin("mcp-fixture"));
    let t = rmcp::transport::TokioChildProcess::new(cmd).expect("spawn");
    Mcp(().serve(t).await.expect("initialize"))
}

async fn mcp_http(url: &str) -> Mcp {
    let t = rmcp::transport::StreamableHttpClientTransport::from_uri(url);
    Mcp(().serve(t).await.expect("initialize"))
}

async fn bridge(args: &[&str]) -> (tokio::process::Child, Asp) {
    let mut cmd = tokio::process::Command::new(bin("asp-mcp"));
    cmd.args([
        "from-mcp",
        "--listen",
        "127.0.0.1:0",
        "--generation",
        "legacy",
    ])
    .args(args);
    let (child, url) = url_child(cmd).await;
    let client = asp_tokio::connect(&url).await.expect("connect");
    (child, Asp(client))
}

#[tokio::main]
async fn main() {
    let mut runs = 5;
    let mut calls = 2000;
    let args: Vec<String> = std::env::args().collect();
    for w in args.windows(2) {
        match w[0].as_str() {
            "--runs" => runs = w[1].parse().expect("--runs N"),
            "--calls" => calls = w[1].parse().expect("--calls N"),
            _ => {}
        }
    }
    let (_http_server, http_url) = {
        let mut cmd = tokio::process::Command::new(bin("mcp-fixture"));
        cmd.args(["--http", "127.0.0.1:0"]);
        url_child(cmd).await
    };
    let fixture = bin("mcp-fixture");
    // (path, direct µs, bridged µs, direct calls/s, bridged calls/s) per run.
    #[allow(clippy::type_complexity)]
    let mut rows: Vec<(&str, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>)> = vec![
        ("stdio", vec![], vec![], vec![], vec![]),
        ("Streamable HTTP", vec![], vec![], vec![], vec![]),
    ];
    for run in 0..runs {
        for (i, row) in rows.iter_mut().enumerate() {
            let (direct, bridged) = if i == 0 {
                let d = mcp_stdio().await;
                let (d_lat, d_rate) = measure(&d, calls).await;
                let _ = d.0.cancel().await;
                let (_child, b) = bridge(&["--", &fixture]).await;
                let (b_lat, b_rate) = measure(&b, calls).await;
                ((d_lat, d_rate), (b_lat, b_rate))
            } else {
                let d = mcp_http(&http_url).await;
                let (d_lat, d_rate) = measure(&d, calls).await;
                let _ = d.0.cancel().await;
                let (_child, b) = bridge(&["--url", &http_url]).await;
                let (b_lat, b_rate) = measure(&b, calls).await;
                ((d_lat, d_rate), (b_lat, b_rate))
            };
            eprintln!(
                "run {run} {}: direct {:.0} µs {:.0}/s, bridged {:.0} µs {:.0}/s",
                row.0, direct.0, direct.1, bridged.0, bridged.1
            );
            row.1.push(direct.0);
            row.2.push(bridged.0);
            row.3.push(direct.1);
            row.4.push(bridged.1);
        }
    }
    println!("| path | direct MCP p50 | bridged p50 | bridged / direct latency | direct MCP calls/s ({IN_FLIGHT} in flight) | bridged calls/s | bridged / direct throughput |");
    println!("|---|---|---|---|---|---|---|");
    for (name, dl, bl, dr, br) in rows {
        let lat_ratio: Vec<f64> = bl.iter().zip(&dl).map(|(b, d)| b / d).collect();
        let rate_ratio: Vec<f64> = br.iter().zip(&dr).map(|(b, d)| b / d).collect();
        let (dl, _, _) = median_range(dl);
        let (bl, _, _) = median_range(bl);
        let (dr, _, _) = median_range(dr);
        let (br, _, _) = median_range(br);
        let (lr, lr0, lr1) = median_range(lat_ratio);
        let (rr, rr0, rr1) = median_range(rate_ratio);
        println!(
            "| {name} | {dl:.0} µs | {bl:.0} µs | {lr:.2}× ({lr0:.2}–{lr1:.2}) | {dr:.0} | {br:.0} | {rr:.2}× ({rr0:.2}–{rr1:.2}) |"
        );
    }
}
