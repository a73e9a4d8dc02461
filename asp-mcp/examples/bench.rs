//! The bridge's cost, measured against MCP used directly, in one run:
//!
//! - stdio: an ASP client → the bridge (`asp-mcp from-mcp`, its own process) → the rmcp
//!   fixture server (a child of the bridge, stdio) vs an rmcp client → the same server as its
//!   own child directly;
//! - HTTP: an ASP client → the bridge → the fixture over Streamable HTTP vs the rmcp
//!   Streamable HTTP client → the same server directly.
//!
//! Each row: sequential round trips of `echo` (64-byte text; p50 and p99 latency), and
//! throughput with 32 calls in flight over one connection (one ASP socket; one MCP client).
//! Both sides speak MCP 2025-11-25 to the server (rmcp's default client lifecycle; the bridge
//! with `--generation legacy`). Each run opens both paths, interleaves their sequential calls
//! one by one and alternates their in-flight blocks (so that load from other processes hits
//! both alike), `--runs` times; the ratios are per run, reported as median and range. Tokio's
//! multi-thread runtime, the measuring code in a spawned task; release builds.
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

/// One measurement: sequential round trips (p50, p99 in µs) and calls/s with IN_FLIGHT in
/// flight.
struct Sample {
    p50: f64,
    p99: f64,
    rate: f64,
}

/// Blocks of calls in flight per side and run, alternating between the sides.
const BLOCKS: usize = 8;

/// Direct and bridged measured together: sequential calls interleave one by one (the order
/// turning each time), and the throughput runs in `BLOCKS` alternating blocks per side, so
/// that a burst of load from other processes hits both alike.
async fn measure(d: &impl Caller, b: &impl Caller, calls: usize) -> (Sample, Sample) {
    for _ in 0..calls / 10 {
        d.call().await;
        b.call().await;
    }
    let (mut ld, mut lb) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
    for i in 0..calls {
        for bridged in [i % 2 == 0, i % 2 == 1] {
            let t = Instant::now();
            if bridged {
                b.call().await;
                lb.push(t.elapsed().as_secs_f64() * 1e6);
            } else {
                d.call().await;
                ld.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    let per = (calls / (IN_FLIGHT * BLOCKS)).max(1);
    let (mut td, mut tb) = (0.0, 0.0);
    for block in 0..2 * BLOCKS {
        let bridged = block % 2 == 1;
        let t = Instant::now();
        futures::future::join_all((0..IN_FLIGHT).map(|_| async move {
            for _ in 0..per {
                if bridged {
                    b.call().await;
                } else {
                    d.call().await;
                }
            }
        }))
        .await;
        let e = t.elapsed().as_secs_f64();
        if bridged {
            tb += e;
        } else {
            td += e;
        }
    }
    let n = (per * IN_FLIGHT * BLOCKS) as f64;
    (percentiles(ld, n / td), percentiles(lb, n / tb))
}

fn percentiles(mut lat: Vec<f64>, rate: f64) -> Sample {
    lat.sort_by(f64::total_cmp);
    Sample {
        p50: lat[lat.len() / 2],
        p99: lat[(lat.len() * 99 / 100).min(lat.len() - 1)],
        rate,
    }
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
    // The measuring code runs in a spawned task, as an application's does.
    tokio::spawn(run()).await.expect("bench task");
}

async fn run() {
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
    // (path, direct samples, bridged samples), one sample per run.
    let mut rows: Vec<(&str, Vec<Sample>, Vec<Sample>)> = vec![
        ("stdio", vec![], vec![]),
        ("Streamable HTTP", vec![], vec![]),
    ];
    for run in 0..runs {
        for (i, row) in rows.iter_mut().enumerate() {
            let args: Vec<&str> = if i == 0 {
                vec!["--", &fixture]
            } else {
                vec!["--url", &http_url]
            };
            let (mut child, bridged) = bridge(&args).await;
            let direct = if i == 0 {
                mcp_stdio().await
            } else {
                mcp_http(&http_url).await
            };
            let (d, b) = measure(&direct, &bridged, calls).await;
            bridged.0.close().await;
            let _ = child.kill().await;
            let _ = direct.0.cancel().await;
            eprintln!(
                "run {run} {}: direct p50 {:.0} µs p99 {:.0} µs {:.0}/s, bridged p50 {:.0} µs p99 {:.0} µs {:.0}/s",
                row.0, d.p50, d.p99, d.rate, b.p50, b.p99, b.rate
            );
            row.1.push(d);
            row.2.push(b);
        }
    }
    println!("{runs} runs, each {calls} sequential calls per side (interleaved) and about {calls} calls per side with {IN_FLIGHT} in flight (alternating blocks); per-run ratios, median (range)");
    println!();
    println!("| path | direct MCP p50 / p99 | bridged p50 / p99 | bridged / direct p50 | bridged / direct p99 | direct calls/s ({IN_FLIGHT} in flight) | bridged calls/s | bridged / direct calls/s |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, d, b) in rows {
        let ratio = |f: fn(&Sample) -> f64| -> (f64, f64, f64) {
            median_range(d.iter().zip(&b).map(|(d, b)| f(b) / f(d)).collect())
        };
        let m = |v: &[Sample], f: fn(&Sample) -> f64| median_range(v.iter().map(f).collect()).0;
        let (p50, p99, rate) = (ratio(|s| s.p50), ratio(|s| s.p99), ratio(|s| s.rate));
        println!(
            "| {name} | {:.0} / {:.0} µs | {:.0} / {:.0} µs | {:.2}× ({:.2}–{:.2}) | {:.2}× ({:.2}–{:.2}) | {:.0} | {:.0} | {:.2}× ({:.2}–{:.2}) |",
            m(&d, |s| s.p50),
            m(&d, |s| s.p99),
            m(&b, |s| s.p50),
            m(&b, |s| s.p99),
            p50.0, p50.1, p50.2,
            p99.0, p99.1, p99.2,
            m(&d, |s| s.rate),
            m(&b, |s| s.rate),
            rate.0, rate.1, rate.2,
        );
    }
}
