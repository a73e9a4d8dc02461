//! ASP vs MCP vs the raw WebSocket floor, in one run.
//!
//! ```text
//! cargo run --release --manifest-path bench-mcp/Cargo.toml -- [--n 2000] [--quick]
//! ```
//!
//! For every transport and runtime configuration: N sequential echo round trips of a 64-byte
//! string after a warm-up (p50/p99), the bytes on the wire per call (counted on the socket by a
//! TCP proxy, handshakes excluded), and a streaming test (1,000 chunks of 32 bytes: ASP STREAM
//! frames, MCP progress notifications). See README.md for the method and the figures.

mod asp;
mod count;
mod harness;
mod mcp;
mod pipe;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use harness::{measure, Opts, Row};
use mcp::HttpMode;

const USAGE: &str = "\
bench-mcp: ASP vs MCP (rmcp) vs raw WebSocket — latency, bytes per call, streaming

USAGE: bench-mcp [OPTIONS]

  --n N            round trips measured per transport and runtime (default 2000)
  --warmup N       warm-up round trips before measuring (default 200)
  --byte-calls N   calls counted for bytes on the wire (default 200)
  --chunks N       chunks in the streaming test (default 1000)
  --stream-reps N  timed repetitions of the streaming test (default 10; 0 skips it)
  --rounds K       repeat the whole suite K times, interleaved, and pool the samples
                   (default 3), so a burst of load hits every row alike
  --max-secs S     time cap of one latency run (default 15)
  --only LIST      comma-separated substrings: run only matching transports
  --runtimes LIST  any of current_thread,multi_thread,smol (default all)
  --wait-load L    first wait (up to 10 min) until the 1-minute load average is below L
  --quick          --n 300 --warmup 50 --byte-calls 50 --stream-reps 3 --rounds 1
  -h, --help       this text
";

fn main() {
    let mut opts = Opts {
        n: 2000,
        warmup: 200,
        byte_calls: 200,
        chunks: 1000,
        stream_reps: 10,
        max_secs: 15.0,
    };
    let mut rounds = 3usize;
    let mut wait_load: Option<f64> = None;
    let mut only: Vec<String> = Vec::new();
    let mut runtimes: Vec<String> = vec![
        "current_thread".into(),
        "multi_thread".into(),
        "smol".into(),
    ];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| -> String {
            args.next()
                .unwrap_or_else(|| die(&format!("{name} needs a value")))
        };
        let num = |s: String| -> usize {
            s.parse()
                .unwrap_or_else(|_| die(&format!("not a number: {s}")))
        };
        match a.as_str() {
            "--n" => opts.n = num(val("--n")),
            "--warmup" => opts.warmup = num(val("--warmup")),
            "--byte-calls" => opts.byte_calls = num(val("--byte-calls")).max(1),
            "--chunks" => opts.chunks = num(val("--chunks")),
            "--stream-reps" => opts.stream_reps = num(val("--stream-reps")),
            "--max-secs" => {
                opts.max_secs = val("--max-secs")
                    .parse()
                    .unwrap_or_else(|_| die("--max-secs: not a number"))
            }
            "--wait-load" => {
                wait_load = Some(
                    val("--wait-load")
                        .parse()
                        .unwrap_or_else(|_| die("--wait-load: not a number")),
                )
            }
            "--rounds" => rounds = num(val("--rounds")).max(1),
            "--only" => only = val("--only").split(',').map(str::to_owned).collect(),
            "--runtimes" => runtimes = val("--runtimes").split(',').map(str::to_owned).collect(),
            "--quick" => {
                opts.n = 300;
                opts.warmup = 50;
                opts.byte_calls = 50;
                opts.stream_reps = 3;
                rounds = 1;
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                return;
            }
            other => die(&format!("unknown argument {other}")),
        }
    }
    opts.n = opts.n.max(1);

    if let Some(limit) = wait_load {
        let until = Instant::now() + Duration::from_secs(600);
        loop {
            let one: f64 = loadavg()
                .split_whitespace()
                .next()
                .and_then(|l| l.parse().ok())
                .unwrap_or(0.0);
            if one < limit {
                break;
            }
            if Instant::now() > until {
                eprintln!("load still {one} after 10 min; running anyway");
                break;
            }
            std::thread::sleep(Duration::from_secs(5));
        }
    }
    let started = Instant::now();
    let load_before = loadavg();
    eprintln!("bench-mcp: {opts:?}, rounds {rounds}");
    eprintln!("load average before: {load_before}");

    let wanted = |t: &str| only.is_empty() || only.iter().any(|o| t.contains(o.as_str()));
    let mut all: Vec<Vec<Row>> = Vec::new();
    for round in 1..=rounds {
        eprintln!("-- round {round} of {rounds}");
        let mut rows: Vec<Row> = Vec::new();

        for rt_name in runtimes.iter().filter(|r| r.as_str() != "smol") {
            for t in TRANSPORTS.iter().filter(|t| wanted(t.name())) {
                let rt = match rt_name.as_str() {
                    "current_thread" => tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime"),
                    "multi_thread" => tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .expect("runtime"),
                    other => die(&format!("unknown runtime {other}")),
                };
                let label = match rt_name.as_str() {
                    "current_thread" => "tokio current_thread",
                    _ => "tokio multi_thread (2 workers)",
                };
                eprint!("{label:32} {:44} ", t.name());
                let o = opts.clone();
                let t = *t;
                let label2 = label.to_owned();
                // The whole scenario runs as a task of the runtime (on the workers, for
                // multi_thread), as a server and its clients would.
                let row = rt.block_on(async move {
                    tokio::spawn(async move { run_tokio(t, &o, &label2).await })
                        .await
                        .expect("scenario panicked")
                });
                eprintln!("{}", brief(&row));
                rows.push(row);
                rt.shutdown_timeout(Duration::from_secs(1));
            }
        }

        if runtimes.iter().any(|r| r == "smol") && wanted("ASP direct (asp-smol)") {
            let threads = std::env::var("SMOL_THREADS").unwrap_or_else(|_| "1".into());
            let label = format!("smol global executor ({threads} thread)");
            eprint!("{label:32} {:44} ", "ASP direct (asp-smol)");
            let o = opts.clone();
            let label2 = label.clone();
            let row = smol::block_on(smol::spawn(async move {
                let (server, connect) = asp::smol_server().await;
                let addr = server.local_addr();
                let row = measure(&o, &label2, "ASP direct (asp-smol)", Some(addr), connect).await;
                server.shutdown(Duration::from_secs(1)).await;
                row
            }));
            eprintln!("{}", brief(&row));
            rows.push(row);
        }

        all.push(rows);
    }
    // Pool the rounds, row by row.
    let rows: Vec<Row> = (0..all[0].len())
        .map(|i| harness::merge(all.iter().map(|r| r[i].clone()).collect()))
        .collect();
    let load_after = loadavg();
    let report = report(
        &rows,
        &opts,
        rounds,
        &load_before,
        &load_after,
        started.elapsed(),
    );
    println!("{report}");
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    RawWs,
    AspTokio,
    #[cfg(feature = "relay")]
    AspRelay,
    McpHttp(HttpMode),
    McpPipe,
    AspPipe,
}

const TRANSPORTS: &[Transport] = &[
    Transport::RawWs,
    Transport::AspTokio,
    #[cfg(feature = "relay")]
    Transport::AspRelay,
    Transport::McpHttp(HttpMode::OutOfTheBox),
    Transport::McpHttp(HttpMode::BestCase),
    Transport::McpHttp(HttpMode::BestCaseH2),
    Transport::McpHttp(HttpMode::Modern),
    Transport::McpPipe,
    Transport::AspPipe,
];

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::RawWs => "raw WebSocket echo (floor)",
            Transport::AspTokio => "ASP direct (asp-tokio)",
            #[cfg(feature = "relay")]
            Transport::AspRelay => "ASP via relay (hyper fn upstream)",
            Transport::McpHttp(HttpMode::OutOfTheBox) => "MCP HTTP, out of the box",
            Transport::McpHttp(HttpMode::BestCase) => "MCP HTTP, best case",
            Transport::McpHttp(HttpMode::BestCaseH2) => "MCP HTTP/2 (h2c), best case",
            Transport::McpHttp(HttpMode::Modern) => "MCP HTTP, best case, 2026-07-28",
            Transport::McpPipe => "MCP in-process pipe",
            Transport::AspPipe => "ASP in-process pipe (WS over duplex)",
        }
    }
}

async fn run_tokio(t: Transport, o: &Opts, rt: &str) -> Row {
    match t {
        Transport::RawWs => {
            let addr = asp::raw_server().await;
            measure(o, rt, t.name(), Some(addr), asp::raw_connect()).await
        }
        Transport::AspTokio => {
            let (server, connect) = asp::tokio_server().await;
            let row = measure(o, rt, t.name(), Some(server.local_addr()), connect).await;
            server.shutdown(Duration::from_secs(1)).await;
            row
        }
        #[cfg(feature = "relay")]
        Transport::AspRelay => {
            let (relay, connect) = asp::relay::start().await;
            let row = measure(o, rt, t.name(), Some(relay.local_addr()), connect).await;
            relay.shutdown(Duration::from_secs(1)).await;
            row
        }
        Transport::McpHttp(mode) => {
            let (addr, connect) = mcp::http_server(mode).await;
            measure(o, rt, t.name(), Some(addr), connect).await
        }
        Transport::McpPipe => measure(o, rt, t.name(), None, mcp::pipe_connect()).await,
        Transport::AspPipe => measure(o, rt, t.name(), None, pipe::pipe_connect()).await,
    }
}

fn die(msg: &str) -> ! {
    eprintln!("bench-mcp: {msg}\n\n{USAGE}");
    std::process::exit(2)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

fn brief(r: &Row) -> String {
    let r = &harness::merge(vec![r.clone()]);
    format!(
        "p50 {:>8.1} µs  p99 {:>8.1} µs  {:>6.0} B/call{}",
        r.p50_us,
        r.p99_us,
        r.bytes_per_call(),
        r.stream_ms
            .map(|s| format!("  stream {s:.2} ms"))
            .unwrap_or_default()
    )
}

fn report(
    rows: &[Row],
    o: &Opts,
    rounds: usize,
    before: &str,
    after: &str,
    took: Duration,
) -> String {
    let mut s = String::new();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(
        s,
        "\n## Results\n\nMachine: {} × {cpus} CPUs; load average before {before}, after {after}; \
         run took {:.0} s.\n\
         {} rounds × {} round trips per row, each after {} warm-up calls; bytes over {} calls (payload bytes on the socket, \
         both directions, handshakes excluded); streaming: {} chunks × 32 B, median of {} runs per round.\n",
        cpu_model(),
        took.as_secs_f64(),
        rounds,
        o.n,
        o.warmup,
        o.byte_calls,
        o.chunks,
        o.stream_reps,
    );
    let _ = writeln!(
        s,
        "| runtime | transport | p50 µs | p99 µs | mean µs | bytes/call (up + down) | TCP conns / 1k calls | stream {} chunks: ms | stream bytes |",
        o.chunks
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.0} ({:.0} + {:.0}) | {} | {} | {} |",
            r.runtime,
            r.transport,
            r.p50_us,
            r.p99_us,
            r.mean_us,
            r.bytes_per_call(),
            r.up_per_call,
            r.down_per_call,
            if r.transport.contains("pipe") {
                "—".to_owned()
            } else {
                format!("{:.0}", r.conns_per_1k)
            },
            r.stream_ms.map_or("—".into(), |v| format!("{v:.2}")),
            r.stream_bytes.map_or("—".into(), |v| format!("{v:.0}")),
        );
    }
    let notes: Vec<_> = rows.iter().filter(|r| !r.note.is_empty()).collect();
    if !notes.is_empty() {
        let _ = writeln!(s);
        for r in notes {
            let _ = writeln!(s, "- {} / {}: {}", r.runtime, r.transport, r.note);
        }
    }

    // Ratios against the targets, per runtime.
    let _ = writeln!(
        s,
        "\n### Ratios (targets: ASP direct ≥ 10× faster than MCP HTTP best case at p50; ≤ 1/8 of its bytes)\n"
    );
    let _ = writeln!(
        s,
        "Each ASP row is compared with the other row on the same runtime. Overhead = bytes per call minus the \
         128 payload bytes (the 64-byte string goes out and comes back); for streaming, minus the \
         {} chunk bytes.\n",
        o.chunks * 32
    );
    let _ = writeln!(
        s,
        "| runtime | ASP row vs | its p50 ÷ ASP p50 | ASP bytes ÷ its bytes | ASP overhead ÷ its overhead | its stream time ÷ ASP's | ASP stream bytes ÷ its | targets (≥10×, ≤1/8) |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---|");
    let runtimes: Vec<&str> = {
        let mut v: Vec<&str> = rows.iter().map(|r| r.runtime.as_str()).collect();
        v.dedup();
        v
    };
    for rt in runtimes {
        let find = |t: &str| rows.iter().find(|r| r.runtime == rt && r.transport == t);
        for (asp_name, other) in [
            ("ASP direct (asp-tokio)", "MCP HTTP, best case"),
            ("ASP direct (asp-tokio)", "MCP HTTP, best case, 2026-07-28"),
            ("ASP direct (asp-tokio)", "MCP HTTP/2 (h2c), best case"),
            ("ASP direct (asp-tokio)", "MCP HTTP, out of the box"),
            (
                "ASP in-process pipe (WS over duplex)",
                "MCP in-process pipe",
            ),
            ("ASP direct (asp-tokio)", "raw WebSocket echo (floor)"),
        ] {
            let Some(asp) = find(asp_name) else { continue };
            let Some(m) = find(other) else { continue };
            let payload = 2.0 * harness::PAYLOAD.len() as f64;
            let speed = m.p50_us / asp.p50_us;
            let bytes = asp.bytes_per_call() / m.bytes_per_call();
            let overhead = (asp.bytes_per_call() - payload) / (m.bytes_per_call() - payload);
            let stream = match (m.stream_ms, asp.stream_ms) {
                (Some(a), Some(b)) => format!("{:.1}×", a / b),
                _ => "—".into(),
            };
            let sbytes = match (asp.stream_bytes, m.stream_bytes) {
                (Some(a), Some(b)) => format!("1/{:.1}", b / a),
                _ => "—".into(),
            };
            let verdict = if other == "MCP HTTP, best case" {
                format!(
                    "{} / {} (overhead {})",
                    if speed >= 10.0 { "✅ p50" } else { "❌ p50" },
                    if bytes <= 1.0 / 8.0 {
                        "✅ bytes"
                    } else {
                        "❌ bytes"
                    },
                    if overhead <= 1.0 / 8.0 { "✅" } else { "❌" },
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "| {rt} | {asp_name} vs {other} | {speed:.1}× | 1/{:.1} | 1/{:.1} | {stream} | {sbytes} | {verdict} |",
                1.0 / bytes,
                1.0 / overhead,
            );
        }
    }
    s
}
