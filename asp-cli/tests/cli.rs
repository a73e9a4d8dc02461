//! The `asp` binary against servers on loopback: output and exit codes.
//!
//! `cargo test -p asp-cli --test cli`. Every wait is bounded: children are
//! read line by line through channels with a time limit and killed when it passes.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use asp_cli::demo;
use asp_tokio::{Args, Metrics, Output, Tool, ToolContext};
use common::asp_command;
use serde_json::Value;

/// The most any one child process may take.
const LIMIT: Duration = Duration::from_secs(60);

/// A demo server on 127.0.0.1:0, run by a runtime of its own.
struct TestServer {
    server: asp_tokio::Server,
    url: String,
    // Dropped last: stops the server's tasks.
    _rt: tokio::runtime::Runtime,
}

fn start_server(token: Option<&str>) -> TestServer {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(async {
        let mut b = asp_tokio::server();
        for t in demo::tools() {
            b = b.tool(t);
        }
        if let Some(t) = token {
            b = b.token(t);
        }
        b.start().await.expect("server starts")
    });
    let url = server.url();
    TestServer {
        server,
        url,
        _rt: rt,
    }
}

/// A finished run of `asp`.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\n{self:?}"))
            })
            .collect()
    }
}

/// Runs `asp` to completion (stdin is not a terminal).
fn asp(args: &[&str]) -> Run {
    let child = asp_command(args).spawn().expect("spawn asp");
    Live::new(child).finish()
}

fn read_all(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status();
}

/// A running `asp` whose stdout is read line by line.
struct Live {
    pid: u32,
    waiter: Option<Receiver<std::io::Result<ExitStatus>>>,
    lines: Receiver<String>,
    stderr: Option<JoinHandle<String>>,
    seen: Vec<String>,
}

impl Live {
    fn spawn(args: &[&str]) -> Live {
        Live::new(asp_command(args).spawn().expect("spawn asp"))
    }

    fn new(mut child: Child) -> Live {
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = read_all(child.stderr.take().expect("piped stderr"));
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (wtx, waiter) = mpsc::channel();
        thread::spawn(move || {
            let _ = wtx.send(child.wait());
        });
        Live {
            pid,
            waiter: Some(waiter),
            lines,
            stderr: Some(stderr),
            seen: Vec::new(),
        }
    }

    /// The next stdout line; panics if none comes within the limit.
    fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(LIMIT) {
            Ok(l) => {
                self.seen.push(l.clone());
                l
            }
            Err(e) => panic!("no line from asp ({e:?}); so far: {:?}", self.seen),
        }
    }

    fn next_json(&mut self) -> Value {
        let l = self.next_line();
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"))
    }

    fn signal(&self, sig: &str) {
        signal(self.pid, sig);
    }

    /// Waits for the exit (killing the child after the limit) and collects the output.
    fn finish(mut self) -> Run {
        let waiter = self.waiter.take().expect("not finished yet");
        let status = match waiter.recv_timeout(LIMIT) {
            Ok(s) => s.expect("wait for asp"),
            Err(_) => {
                signal(self.pid, "KILL");
                panic!(
                    "asp did not exit within {LIMIT:?}; stdout so far: {:?}",
                    self.seen
                );
            }
        };
        // The pipe is at its end now that the child exited.
        let deadline = Instant::now() + LIMIT;
        let mut stdout: Vec<String> = std::mem::take(&mut self.seen);
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => stdout.push(l),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("stdout did not close"),
            }
        }
        let stderr = self
            .stderr
            .take()
            .expect("stderr reader")
            .join()
            .expect("stderr reader thread");
        let mut out = stdout.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        Run {
            code: status.code(),
            stdout: out,
            stderr,
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // A failed assertion must not leave the child running.
        if self.waiter.is_some() {
            signal(self.pid, "KILL");
        }
    }
}

/// A free port nobody listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn tmp_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("asp-cli-{}-{name}", std::process::id()))
}

const ANSWER: &str = "You asked: \"what is ASP?\". Agent Socket streams each token as its own \
                      STREAM frame, many invocations share one socket, and either side can \
                      interrupt.";

#[test]
fn help_documents_exit_codes() {
    let r = asp(&["--help"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    for s in [
        "tools",
        "call",
        "serve",
        "bench",
        "--token",
        "--json",
        "Exit status",
        "130",
    ] {
        assert!(r.stdout.contains(s), "help lacks {s:?}: {}", r.stdout);
    }
    let r = asp(&["call", "--help"]);
    assert!(r.stdout.contains("Exit status"), "{}", r.stdout);
    // A usage error is exit 2.
    let r = asp(&["call"]);
    assert_eq!(r.code, Some(2), "{r:?}");
}

#[test]
fn tools_plain_and_json() {
    let s = start_server(None);
    let r = asp(&["tools", &s.url]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        r.stdout
            .contains("agent — mock LLM: streams a canned answer"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("echo — returns its arguments"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(r#"input: {"type":"object""#),
        "{}",
        r.stdout
    );

    let r = asp(&["--json", "tools", &s.url]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let lines = r.json_lines();
    assert_eq!(lines.len(), 1, "{r:?}");
    assert_eq!(lines[0]["type"], "tools");
    let tools = lines[0]["tools"].as_array().expect("tool list");
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["agent", "blob", "clarify", "echo", "fail"]);
    assert_eq!(
        tools[0]["input_schema"]["required"],
        serde_json::json!(["prompt"])
    );
    assert_eq!(tools[0]["description"], "mock LLM: streams a canned answer");

    // host:port alone means the default path.
    let hostport = s.server.local_addr().to_string();
    let r = asp(&["tools", &hostport]);
    assert_eq!(r.code, Some(0), "{r:?}");
}

#[test]
fn call_streams_text_then_complete() {
    let s = start_server(None);
    let r = asp(&[
        "call",
        &s.url,
        "agent",
        "--args",
        r#"{"prompt": "what is ASP?"}"#,
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.starts_with(&format!("{ANSWER}\n")), "{}", r.stdout);
    assert!(r.stdout.contains("status: ok\n"), "{}", r.stdout);
    assert!(
        r.stdout.contains(r#"result: {"tokens":25}"#),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("input_tokens=3 output_tokens=25"),
        "{}",
        r.stdout
    );

    let r = asp(&[
        "--json",
        "call",
        &s.url,
        "agent",
        "--args",
        r#"{"prompt": "what is ASP?"}"#,
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let lines = r.json_lines();
    let (last, chunks) = lines.split_last().expect("output");
    assert_eq!(chunks.len(), 25);
    let text: String = chunks
        .iter()
        .map(|c| {
            assert_eq!(c["type"], "chunk");
            c["text"].as_str().expect("text chunk")
        })
        .collect();
    assert_eq!(text, ANSWER);
    assert_eq!(last["type"], "complete");
    assert_eq!(last["status"], "ok");
    assert_eq!(last["result"]["tokens"], 25);
    assert_eq!(last["metrics"]["output_tokens"], 25);
    assert!(last["metrics"]["wall_us"].is_u64(), "{last}");
}

#[test]
fn call_args_from_a_file_and_json_results() {
    let s = start_server(None);
    let path = tmp_path("args.json");
    std::fs::write(&path, r#"{"a": [1, 2.5, null, "s"], "b": {"c": true}}"#).expect("write");
    let r = asp(&[
        "call",
        &s.url,
        "echo",
        "--args-file",
        path.to_str().expect("utf-8"),
    ]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        r.stdout
            .contains(r#"result: {"a":[1,2.5,null,"s"],"b":{"c":true}}"#),
        "{}",
        r.stdout
    );

    let r = asp(&["call", &s.url, "echo", "--args", "{not json"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr.contains("--args is not valid JSON"),
        "{}",
        r.stderr
    );
}

#[test]
fn call_binary_chunks_as_hex_or_to_a_file() {
    let s = start_server(None);
    let args = r#"{"bytes": 40, "chunk": 16}"#;
    let r = asp(&["call", &s.url, "blob", "--args", args]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        r.stdout.starts_with(
            "000102030405060708090a0b0c0d0e0f\n101112131415161718191a1b1c1d1e1f\n2021222324252627\n"
        ),
        "{}",
        r.stdout
    );

    let path = tmp_path("blob.bin");
    let r = asp(&[
        "call",
        &s.url,
        "blob",
        "--args",
        args,
        "--out",
        path.to_str().expect("utf-8"),
    ]);
    let data = std::fs::read(&path).expect("output file");
    let _ = std::fs::remove_file(&path);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(data, (0..40u8).collect::<Vec<_>>());
    assert!(r.stdout.starts_with("status: ok\n"), "{}", r.stdout);
    assert!(r.stderr.contains("wrote 40 bytes"), "{}", r.stderr);
}

#[test]
fn failing_tool_exits_1() {
    let s = start_server(None);
    let r = asp(&["call", &s.url, "fail", "--args", r#"{"message": "boom"}"#]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stdout.contains("status: failed"), "{}", r.stdout);
    assert!(
        r.stdout.contains(r#"result: {"error":"boom"}"#),
        "{}",
        r.stdout
    );

    let r = asp(&["--json", "call", &s.url, "fail"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    let last = r.json_lines().pop().expect("output");
    assert_eq!(last["status"], "failed");
}

#[test]
fn unknown_tool_exits_1_with_the_code_name() {
    let s = start_server(None);
    let r = asp(&["call", &s.url, "nope"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("UNKNOWN_TOOL"), "{}", r.stderr);
    assert!(
        r.stderr.contains("the server offers: agent, blob"),
        "{}",
        r.stderr
    );

    let r = asp(&["--json", "call", &s.url, "nope"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    let last = r.json_lines().pop().expect("output");
    assert_eq!(last["type"], "error");
    assert_eq!(last["code"], "UNKNOWN_TOOL");
}

#[test]
fn connection_refused_exits_2() {
    let url = format!("ws://127.0.0.1:{}/v1/agent-socket", closed_port());
    for args in [
        vec!["tools", url.as_str()],
        vec!["call", url.as_str(), "echo"],
    ] {
        let r = asp(&args);
        assert_eq!(r.code, Some(2), "{r:?}");
        assert!(
            r.stderr.starts_with("error: connection refused"),
            "{}",
            r.stderr
        );
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(r.stdout.is_empty(), "{}", r.stdout);
    }
}

#[test]
fn silent_server_times_out_with_exit_2() {
    // Accepts TCP (the kernel's backlog) but never answers the upgrade.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "ws://{}/v1/agent-socket",
        listener.local_addr().expect("addr")
    );
    let r = asp(&["--connect-timeout", "0.3", "tools", &url]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr.starts_with("error: timed out after"),
        "{}",
        r.stderr
    );
    drop(listener);
}

#[test]
fn authentication_errors_exit_2() {
    let s = start_server(Some("s3cret"));
    let r = asp(&["tools", &s.url]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert_eq!(
        r.stderr.trim_end(),
        "error: server refused the upgrade: HTTP 401 (authentication required) — pass --token"
    );

    let r = asp(&["--token", "wrong", "call", &s.url, "echo"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("HTTP 401"), "{}", r.stderr);
    assert!(
        r.stderr.contains("did not accept the --token"),
        "{}",
        r.stderr
    );

    let r = asp(&[
        "call", &s.url, "echo", "--token", "s3cret", "--args", "\"hi\"",
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains(r#"result: "hi""#), "{}", r.stdout);

    let r = asp(&[
        "tools",
        &format!("ws://{}/elsewhere", s.server.local_addr()),
    ]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("HTTP 404"), "{}", r.stderr);
}

#[test]
fn wrong_subprotocol_exits_2() {
    // A plain WebSocket server that selects no subprotocol.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    drop(ws);
                }
            });
        }
    });
    let r = asp(&["tools", &format!("ws://{addr}/v1/agent-socket")]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr.contains("did not select the asp-v1 subprotocol"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
}

#[test]
fn questions_without_a_terminal_are_declined() {
    let s = start_server(None);
    let q = r#"{"question": "Which color?"}"#;
    let r = asp(&["call", &s.url, "clarify", "--args", q]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.contains("declined the server's question"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("stdin is not a terminal"), "{}", r.stderr);
    assert!(r.stderr.contains("Which color?"), "{}", r.stderr);
    assert!(r.stdout.contains("status: failed"), "{}", r.stdout);

    let r = asp(&["--json", "call", &s.url, "clarify", "--args", q]);
    assert_eq!(r.code, Some(1), "{r:?}");
    let lines = r.json_lines();
    assert_eq!(lines[0]["type"], "request");
    assert_eq!(lines[0]["kind"], "clarify");
    assert_eq!(lines[0]["body"]["question"], "Which color?");
    assert_eq!(lines[0]["reply"], "declined");

    // --answer replies without a terminal.
    let r = asp(&["call", &s.url, "clarify", "--args", q, "--answer", "blue"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.starts_with("You answered: blue\n"), "{}", r.stdout);
}

#[test]
fn bench_reports_percentiles() {
    let s = start_server(None);
    let r = asp(&["bench", &s.url, "-n", "200", "--json"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let lines = r.json_lines();
    assert_eq!(lines.len(), 1, "{r:?}");
    let b = &lines[0];
    assert_eq!(b["type"], "bench");
    assert_eq!(b["mode"], "round_trip");
    assert_eq!(b["n"], 200);
    let p50 = b["p50_us"].as_f64().expect("p50");
    let p99 = b["p99_us"].as_f64().expect("p99");
    assert!(p50 > 0.0 && p50 <= p99, "{b}");
    assert!(
        b["throughput_per_s"].as_f64().expect("throughput") > 0.0,
        "{b}"
    );

    let r = asp(&["bench", &s.url, "-n", "50", "-c", "4"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains("p50"), "{}", r.stdout);
    assert!(r.stdout.contains("p99"), "{}", r.stdout);
    assert!(r.stdout.contains("calls/s"), "{}", r.stdout);

    let r = asp(&["bench", &s.url, "--stream", "256k", "-n", "4", "--json"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let b = &r.json_lines()[0];
    assert_eq!(b["mode"], "stream");
    assert_eq!(b["bytes"], 4 * 256 * 1024);

    let r = asp(&["bench", &s.url, "-n", "5", "--tool", "nope"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("UNKNOWN_TOOL"), "{}", r.stderr);
}

/// The load mode (issue 16): connections × pipelined checked calls next to idle
/// connections, a disconnect storm and a flood that never reads, for one second.
#[test]
fn bench_load_checks_every_call() {
    let s = start_server(None);
    let r = asp(&[
        "bench",
        &s.url,
        "--connections",
        "8",
        "--pipeline",
        "2",
        "--duration",
        "1",
        "--check",
        "--idle",
        "5",
        "--storm",
        "1",
        "--flood",
        "1",
        "--json",
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let b = &r.json_lines()[0];
    assert_eq!(b["type"], "load");
    assert!(b["calls_ok"].as_u64().expect("calls_ok") > 0, "{b}");
    assert_eq!(b["calls_failed"], 0, "{b}");
    assert_eq!(b["check_failures"], 0, "{b}");
    assert_eq!(b["idle_open"], 5, "{b}");
    assert_eq!(b["idle_lost"], 0, "{b}");
    assert!(b["storm_cycles"].as_u64().expect("storm") > 0, "{b}");
    assert!(b["flood_bytes_sent"].as_u64().expect("flood") > 0, "{b}");
    assert_eq!(b["flood_cut_silently"], 0, "{b}");
    // The server is still fine.
    let r = asp(&["call", &s.url, "echo", "--args", "\"ok\"", "--json"]);
    assert_eq!(r.code, Some(0), "{r:?}");
}

/// The floor mode (issue 19): an ASP echo server and a raw WebSocket echo server in the
/// process, both loads run on each runtime flavor, every call answered (a failed call exits
/// non-zero), and both rates reported.
#[test]
fn bench_floor_runs_asp_and_the_raw_websocket() {
    for runtime in ["current_thread", "multi_thread"] {
        let r = asp(&[
            "bench",
            "--floor",
            "--runtime",
            runtime,
            "--connections",
            "3",
            "--pipeline",
            "2",
            "--duration",
            "0.3",
            "--rounds",
            "2",
            "--json",
        ]);
        assert_eq!(r.code, Some(0), "{r:?}");
        let b = &r.json_lines()[0];
        assert_eq!(b["type"], "floor", "{b}");
        assert_eq!(b["runtime"], runtime, "{b}");
        for key in ["asp_calls_per_s", "raw_msgs_per_s"] {
            let rates = b[key].as_array().expect("rates");
            assert_eq!(rates.len(), 2, "{b}");
            assert!(rates.iter().all(|r| r.as_f64() > Some(0.0)), "{b}");
        }
        assert!(b["ratio_median"].as_f64() > Some(0.0), "{b}");
    }
    let r = asp(&["bench", "--floor", "--runtime", "nope", "--rounds", "1"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("unknown runtime"), "{}", r.stderr);
}

fn ticker() -> Tool {
    Tool::new("ticker", |_ctx: ToolContext, _args: Args| async move {
        Ok(Output {
            result: None,
            metrics: Metrics::default(),
        })
    })
    .description("added while watching")
}

#[cfg(unix)]
#[test]
fn tools_watch_prints_pushed_changes() {
    let s = start_server(None);
    let mut live = Live::spawn(&["--json", "tools", &s.url, "--watch"]);
    let first = live.next_json();
    assert_eq!(first["type"], "tools", "{first}");
    // Subscribed before that line was printed: the change cannot be missed.
    s.server.add_tool(ticker());
    let added = live.next_json();
    assert_eq!(added["type"], "tool_added", "{added}");
    assert_eq!(added["tool"]["name"], "ticker");
    assert_eq!(added["tool"]["description"], "added while watching");
    assert!(s.server.remove_tool("ticker"));
    let removed = live.next_json();
    assert_eq!(removed["type"], "tool_removed", "{removed}");
    assert_eq!(removed["name"], "ticker");
    live.signal("INT");
    let r = live.finish();
    assert_eq!(r.code, Some(0), "{r:?}");

    // Plain output too.
    let mut live = Live::spawn(&["tools", &s.url, "--watch"]);
    while !live.next_line().starts_with("fail — ") {}
    live.next_line(); // fail's input schema
    s.server.add_tool(ticker());
    assert_eq!(live.next_line(), "added: ticker — added while watching");
    live.signal("INT");
    assert_eq!(live.finish().code, Some(0));
}

#[cfg(unix)]
#[test]
fn ctrl_c_interrupts_and_waits_for_cancelled() {
    let s = start_server(None);
    let args = r#"{"prompt": "x", "delay_ms": 20, "repeat": 1000}"#;
    let mut live = Live::spawn(&["--json", "call", &s.url, "agent", "--args", args]);
    let first = live.next_json();
    assert_eq!(first["type"], "chunk", "{first}");
    live.signal("INT");
    let r = live.finish();
    assert_eq!(r.code, Some(1), "{r:?}");
    let last = r.json_lines().pop().expect("output");
    assert_eq!(last["type"], "complete", "{r:?}");
    assert_eq!(last["status"], "cancelled", "{r:?}");
    assert!(r.stderr.contains("sent INTERRUPT"), "{}", r.stderr);

    // Plain output: the streamed text, then the cancelled status.
    let mut live = Live::spawn(&["call", &s.url, "agent", "--args", args]);
    let first = live.next_line(); // the first repetition of the answer ends with a newline
    assert!(first.starts_with("You asked: \"x\""), "{first}");
    live.signal("INT");
    let r = live.finish();
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stdout.contains("status: cancelled\n"), "{}", r.stdout);
}

#[cfg(unix)]
#[test]
fn serve_runs_the_demo_agent_until_ctrl_c() {
    let mut live = Live::spawn(&["--json", "serve", "--addr", "127.0.0.1:0", "--token", "t0k"]);
    let hello = live.next_json();
    assert_eq!(hello["type"], "listening", "{hello}");
    let url = hello["url"].as_str().expect("url").to_owned();
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");

    let r = asp(&[
        "call",
        &url,
        "agent",
        "--token",
        "t0k",
        "--args",
        r#"{"prompt": "hi", "delay_ms": 0}"#,
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.starts_with("You asked: \"hi\""), "{}", r.stdout);
    let r = asp(&["tools", &url]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("401"), "{}", r.stderr);

    live.signal("INT");
    let r = live.finish();
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains(r#""type":"stopped""#), "{}", r.stdout);
}

/// Issue 25: `asp serve` offers session resume by default, announcing its window and
/// replay buffer in HELLO (SPEC §11), and `--no-resume` turns it off.
#[cfg(unix)]
#[test]
fn serve_offers_resume_unless_told_not_to() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (extra, offered) in [(None, true), (Some("--no-resume"), false)] {
        let mut cmd = vec!["--json", "serve", "--addr", "127.0.0.1:0"];
        cmd.extend(extra);
        let mut live = Live::spawn(&cmd);
        let hello = live.next_json();
        assert_eq!(hello["resume"], offered, "{hello}");
        let url = hello["url"].as_str().expect("url").to_owned();
        let session = rt.block_on(async {
            let client = asp_tokio::client()
                .resume(true)
                .connect(&url)
                .await
                .expect("connect");
            let s = client.session().expect("session");
            client.close().await;
            s
        });
        assert_eq!(session.resumable, offered, "{extra:?}");
        assert_eq!(session.resume_window_ms, if offered { 30_000 } else { 0 });
        live.signal("INT");
        let r = live.finish();
        assert_eq!(r.code, Some(0), "{r:?}");
    }
}

/// `asp bridge ARGS` runs the `asp-mcp` binary with ARGS and the token in ASP_TOKEN: here a
/// stand-in script (named by ASP_MCP_BIN) that prints what it got and exits with 3.
#[cfg(unix)]
#[test]
fn bridge_runs_asp_mcp_with_the_arguments_and_token() {
    use std::os::unix::fs::PermissionsExt;
    let script = tmp_path("fake-asp-mcp.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf 'args:'; for a in \"$@\"; do printf ' [%s]' \"$a\"; done\n\
         printf '\\ntoken: %s\\n' \"$ASP_TOKEN\"\nexit 3\n",
    )
    .expect("write the stand-in");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut cmd = asp_command(&[
        "--token",
        "s3cret",
        "bridge",
        "to-mcp",
        "ws://127.0.0.1:1/v1/agent-socket",
        "--http",
        "127.0.0.1:0",
    ]);
    cmd.env("ASP_MCP_BIN", &script);
    let run = Live::new(cmd.spawn().expect("spawn asp")).finish();
    assert_eq!(run.code, Some(3), "{run:?}");
    assert_eq!(
        run.stdout,
        "args: [to-mcp] [ws://127.0.0.1:1/v1/agent-socket] [--http] [127.0.0.1:0]\n\
         token: s3cret\n",
        "{run:?}"
    );
    let _ = std::fs::remove_file(&script);
}

#[test]
fn bridge_without_asp_mcp_says_how_to_install_it() {
    let mut cmd = asp_command(&["bridge", "from-mcp", "--", "python3", "server.py"]);
    cmd.env("ASP_MCP_BIN", tmp_path("no-such-asp-mcp"));
    let run = Live::new(cmd.spawn().expect("spawn asp")).finish();
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("cargo install --path asp-mcp"),
        "{run:?}"
    );
}
