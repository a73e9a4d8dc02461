//! `asp` — poke an Agent Socket Protocol server from the command line.
//!
//! `asp tools`, `asp call`, `asp serve` and `asp bench`; see `asp --help`. Built on the public
//! client and server API of `asp-tokio` only.
#![forbid(unsafe_code)]

mod load;

use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asp_tokio::asp_proto::frame::Text;
use asp_tokio::{
    Client, Completion, Config, Error, InvokeOptions, Metrics, RawValue, Reply, ReplyStatus,
    Request, Status, ToolChange, ToolDef,
};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use serde_json::{json, Map, Value};

mod tls;

/// Exit status: success.
const EXIT_OK: i32 = 0;
/// Exit status: the tool completed with status failed/cancelled, or the server answered ERROR.
const EXIT_OUTCOME: i32 = 1;
/// Exit status: usage or connection error.
const EXIT_USAGE: i32 = 2;
/// Exit status: stopped by a second Ctrl-C without waiting.
const EXIT_INTERRUPTED: i32 = 130;

/// The exit statuses, for the help texts.
macro_rules! exit_help {
    () => {
        "\
Exit status:
  0    success (`call`: the tool completed with status ok)
  1    the tool completed with status failed or cancelled, or the server answered ERROR
       (`call`, `bench`)
  2    usage error, or no usable connection: connection refused, timeout, HTTP 401/403/404
       on the upgrade, wrong WebSocket subprotocol, handshake failure, connection lost
  130  a second Ctrl-C stopped `call`/`serve` without waiting for the end"
    };
}

const EXIT_HELP: &str = exit_help!();

const AFTER_HELP: &str = concat!(
    "URL is ws://HOST:PORT/PATH; a bare HOST:PORT means ws://HOST:PORT/v1/agent-socket.\n\n",
    exit_help!(),
    "\n
Try it:
  asp serve &                       # the demo agent on 127.0.0.1:7777
  asp tools 127.0.0.1:7777
  asp call 127.0.0.1:7777 agent --args '{\"prompt\": \"hello\"}'
  asp bench 127.0.0.1:7777 -n 10000"
);

/// Poke an Agent Socket Protocol (ASP) server: list its tools, call one, benchmark it, or
/// serve the demo agent.
#[derive(Parser, Debug)]
#[command(name = "asp", version, after_help = AFTER_HELP, max_term_width = 100)]
struct Cli {
    /// Bearer token: sent on the upgrade by client commands, required from clients by `serve`.
    #[arg(
        long,
        global = true,
        env = "ASP_TOKEN",
        hide_env_values = true,
        display_order = 900
    )]
    token: Option<String>,

    /// Machine-readable output: one JSON object per line on stdout.
    #[arg(long, global = true, display_order = 901)]
    json: bool,

    /// Seconds to wait for the connection and the ASP handshake.
    #[arg(
        long,
        global = true,
        display_order = 902,
        value_name = "SECS",
        default_value = "10",
        value_parser = parse_secs
    )]
    connect_timeout: Duration,

    /// Client commands: offer session resume (SPEC §11) and, when the connection drops,
    /// redial and continue the session, with no chunk lost or repeated (if the server
    /// offers resume).
    #[arg(long, global = true, display_order = 903)]
    resume: bool,

    #[command(flatten)]
    tls: tls::ClientTlsArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Connect and print the tool set: name, description, input schema.
    #[command(after_help = EXIT_HELP)]
    Tools {
        /// The server (ws://host:port/path, or host:port).
        url: String,
        /// Keep running and print tool changes (TOOL_DEF) as the server pushes them, until
        /// Ctrl-C or the server closes the connection.
        #[arg(long, short)]
        watch: bool,
    },
    /// Invoke a tool; print its streamed chunks as they arrive, then the COMPLETE status,
    /// result and metrics.
    ///
    /// Text chunks are printed as text, binary chunks as hex (or written to --out). Ctrl-C
    /// sends INTERRUPT and waits for the cancelled COMPLETE; a second Ctrl-C quits at once.
    /// Questions from the server (REQUEST) are asked on the terminal; when stdin is not a
    /// terminal they are declined with a message on stderr, unless --answer is given.
    #[command(after_help = EXIT_HELP)]
    Call {
        /// The server (ws://host:port/path, or host:port).
        url: String,
        /// The tool to invoke.
        tool: String,
        /// Arguments as JSON (sent as MessagePack).
        #[arg(long, value_name = "JSON", conflicts_with = "args_file")]
        args: Option<String>,
        /// Read the JSON arguments from a file (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        args_file: Option<PathBuf>,
        /// Write binary chunks to FILE instead of printing them as hex.
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Answer every server question with this value (JSON, else taken as a string)
        /// instead of asking on the terminal.
        #[arg(long, value_name = "JSON")]
        answer: Option<String>,
        /// Ask the server to end the invocation with DEADLINE_EXCEEDED after this many ms.
        #[arg(long, value_name = "MS")]
        deadline_ms: Option<u32>,
    },
    /// Run the demo agent (tools agent, echo, clarify, fail, blob) until Ctrl-C, then shut
    /// down gracefully.
    #[command(after_help = EXIT_HELP)]
    Serve {
        /// Address to listen on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:7777")]
        addr: SocketAddr,
        /// The agent tool's default pause before each streamed token, in ms.
        #[arg(long, value_name = "MS", default_value_t = 30)]
        token_delay_ms: u64,
        /// Add and remove a tool named `ephemeral` every SECS seconds, to watch TOOL_DEF
        /// changes with `asp tools --watch`.
        #[arg(long, value_name = "SECS", value_parser = parse_secs)]
        churn: Option<Duration>,
        /// Do not offer session resume (SPEC §11). By default a client that lists `resume`
        /// gets a resume token, and its session survives a dropped connection for the
        /// resume window (30 s), announced in HELLO with the replay buffer (256 KiB).
        #[arg(long)]
        no_resume: bool,
        #[command(flatten)]
        tls: tls::ServeTlsArgs,
    },
    /// Measure round-trip latency (p50/p90/p99) and throughput, or streaming throughput with
    /// --stream.
    ///
    /// Round trips invoke --tool (default `echo`) with --args (default a string of --size
    /// bytes) and wait for COMPLETE. The stream test invokes --tool (default the demo's
    /// `blob`, asked for --stream bytes) and reads every chunk. A progress bar is shown on
    /// long runs when stderr is a terminal; Ctrl-C stops early and reports what was measured.
    #[command(after_help = EXIT_HELP)]
    Bench {
        /// The server (ws://host:port/path, or host:port).
        url: String,
        /// Measured invocations [default: 1000, or 20 with --stream].
        #[arg(short = 'n', long, value_name = "N")]
        count: Option<u64>,
        /// Unmeasured warm-up invocations first [default: n/10, at most 100].
        #[arg(long, value_name = "N")]
        warmup: Option<u64>,
        /// Invocations in flight at once.
        #[arg(short, long, value_name = "N", default_value_t = 1)]
        concurrency: usize,
        /// The tool to invoke [default: echo, or blob with --stream].
        #[arg(long)]
        tool: Option<String>,
        /// Arguments as JSON [default: see above].
        #[arg(long, value_name = "JSON")]
        args: Option<String>,
        /// Size of the default round-trip argument string (accepts k, M, G suffixes).
        #[arg(long, value_name = "BYTES", default_value = "64", value_parser = parse_size)]
        size: u64,
        /// Stream test: bytes each invocation streams (accepts k, M, G suffixes).
        #[arg(long, value_name = "BYTES", value_parser = parse_size)]
        stream: Option<u64>,
        /// Stream test: chunk size asked of `blob`.
        #[arg(long, value_name = "BYTES", default_value = "16k", value_parser = parse_size)]
        chunk: u64,
        /// Never show the progress bar.
        #[arg(long)]
        no_progress: bool,
        /// Load test: this many connections call `echo` at once (with --pipeline calls in
        /// flight each); -n is then the calls per connection. Any of the load flags below
        /// selects the load test.
        #[arg(long, value_name = "N")]
        connections: Option<usize>,
        /// Load test: calls in flight per connection.
        #[arg(long, value_name = "N", default_value_t = 1)]
        pipeline: usize,
        /// Load test: run for this many seconds instead of a call count.
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
        /// Load test: check that every call ends exactly once with its own argument echoed
        /// back; any failure exits with status 1.
        #[arg(long)]
        check: bool,
        /// Load test: first open this many idle connections and keep them open to the end.
        #[arg(long, value_name = "N", default_value_t = 0)]
        idle: usize,
        /// Load test: seconds to hold the idle connections before the calls start (to
        /// measure the server's memory meanwhile).
        #[arg(long, value_name = "SECS", default_value_t = 0.0)]
        hold: f64,
        /// Load test: connections that stream `blob` and read one chunk per 10 ms.
        #[arg(long, value_name = "N", default_value_t = 0)]
        slow: usize,
        /// Load test: tasks that connect, start a stream and drop the connection, repeatedly.
        #[arg(long, value_name = "N", default_value_t = 0)]
        storm: usize,
        /// Load test: raw connections that send 32 KiB `echo` calls and never read.
        #[arg(long, value_name = "N", default_value_t = 0)]
        flood: usize,
    },
    /// Bridge MCP and ASP: serve an MCP server's tools over ASP (`from-mcp`), or an ASP
    /// server's tools to MCP hosts (`to-mcp`). Built with the `bridge` feature.
    #[cfg(feature = "bridge")]
    #[command(subcommand)]
    Bridge(asp_mcp::cli::Bridge),
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(EXIT_USAGE);
        }
    };
    let code = rt.block_on(run(cli));
    let _ = std::io::stdout().flush();
    // Exit without waiting for a thread still blocked reading a terminal answer.
    std::process::exit(code);
}

/// Options shared by the client commands.
struct Global {
    token: Option<String>,
    json: bool,
    connect_timeout: Duration,
    resume: bool,
    tls: tls::ClientTlsArgs,
}

async fn run(cli: Cli) -> i32 {
    let g = Global {
        token: cli.token,
        json: cli.json,
        connect_timeout: cli.connect_timeout,
        resume: cli.resume,
        tls: cli.tls,
    };
    match cli.command {
        Command::Tools { url, watch } => tools(&g, &normalize_url(&url), watch).await,
        #[cfg(feature = "bridge")]
        Command::Bridge(b) => match asp_mcp::cli::run(b, g.token.clone()).await {
            Ok(()) => EXIT_OK,
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_USAGE
            }
        },
        Command::Call {
            url,
            tool,
            args,
            args_file,
            out,
            answer,
            deadline_ms,
        } => {
            let opts = CallOpts {
                url: normalize_url(&url),
                tool,
                args,
                args_file,
                out,
                answer,
                deadline_ms,
            };
            call(&g, opts).await
        }
        Command::Serve {
            addr,
            token_delay_ms,
            churn,
            no_resume,
            tls,
        } => {
            let delay = Duration::from_millis(token_delay_ms);
            serve(&g, addr, delay, churn, !no_resume, tls).await
        }
        Command::Bench {
            url,
            count,
            warmup,
            concurrency,
            tool,
            args,
            size,
            stream,
            chunk,
            no_progress,
            connections,
            pipeline,
            duration,
            check,
            idle,
            hold,
            slow,
            storm,
            flood,
        } => {
            let load = connections.is_some()
                || duration.is_some()
                || check
                || idle > 0
                || slow > 0
                || storm > 0
                || flood > 0;
            if load {
                let o = load::LoadOpts {
                    url: normalize_url(&url),
                    token: g.token.clone(),
                    connections: connections.unwrap_or(1),
                    pipeline,
                    calls: count.unwrap_or(100),
                    duration: duration.map(Duration::from_secs_f64),
                    check,
                    size: usize::try_from(size).unwrap_or(64),
                    idle,
                    hold: Duration::from_secs_f64(hold.max(0.0)),
                    slow,
                    storm,
                    flood,
                };
                return load_bench(&g, o).await;
            }
            let opts = BenchOpts {
                url: normalize_url(&url),
                count,
                warmup,
                concurrency,
                tool,
                args,
                size,
                stream,
                chunk,
                no_progress,
            };
            bench(&g, opts).await
        }
    }
}

// ---------------------------------------------------------------------------------------
// Output

/// Writes to stdout and flushes. A closed pipe (`asp … | head`) ends the program quietly.
fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    if o.write_all(s.as_bytes()).and_then(|()| o.flush()).is_err() {
        std::process::exit(141);
    }
}

fn outln(s: &str) {
    out(&format!("{s}\n"));
}

fn emit(v: &Value) {
    outln(&v.to_string());
}

/// Prints `error: …` and returns the usage/connection exit status.
fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("error: {msg}");
    EXIT_USAGE
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// A MessagePack value as JSON, or as hex when JSON cannot represent it (binary, non-string
/// map keys, extension types).
enum Shown {
    Json(Value),
    Hex(String),
}

fn show(v: &RawValue) -> Shown {
    match asp_tokio::from_value::<Value>(v) {
        Ok(j) => Shown::Json(j),
        Err(_) => Shown::Hex(hex(v.as_bytes())),
    }
}

/// Puts `key: value` into a JSON object, or `key_msgpack_hex: "…"` when not representable.
fn put_value(obj: &mut Map<String, Value>, key: &str, v: Option<&RawValue>) {
    match v.map(show) {
        None => {
            obj.insert(key.to_owned(), Value::Null);
        }
        Some(Shown::Json(j)) => {
            obj.insert(key.to_owned(), j);
        }
        Some(Shown::Hex(h)) => {
            obj.insert(format!("{key}_msgpack_hex"), Value::String(h));
        }
    }
}

/// A value for a line of text.
fn show_plain(v: &RawValue) -> String {
    match show(v) {
        Shown::Json(j) => j.to_string(),
        Shown::Hex(h) => format!("(MessagePack, not representable as JSON) {h}"),
    }
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Cancelled => "cancelled",
        Status::Failed => "failed",
    }
}

fn metrics_fields(m: &Metrics) -> Vec<(&'static str, u64)> {
    [
        ("wall_us", m.wall_us),
        ("cpu_us", m.cpu_us),
        ("input_tokens", m.input_tokens),
        ("output_tokens", m.output_tokens),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect()
}

fn tool_json(t: &ToolDef) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), t.name.as_str().into());
    o.insert("description".into(), t.description.as_str().into());
    put_value(&mut o, "input_schema", t.input_schema.as_ref());
    if t.annotations.is_some() {
        put_value(&mut o, "annotations", t.annotations.as_ref());
    }
    Value::Object(o)
}

fn tool_plain(prefix: &str, t: &ToolDef) -> String {
    let mut s = format!("{prefix}{}", t.name.as_str());
    if !t.description.as_str().is_empty() {
        let _ = write!(s, " — {}", t.description.as_str());
    }
    if let Some(schema) = &t.input_schema {
        let _ = write!(s, "\n    input: {}", show_plain(schema));
    }
    if let Some(a) = &t.annotations {
        let _ = write!(s, "\n    annotations: {}", show_plain(a));
    }
    s
}

// ---------------------------------------------------------------------------------------
// Connecting

/// `host:port` → `ws://host:port/v1/agent-socket`; `ws://host:port` gets the default path.
fn normalize_url(url: &str) -> String {
    let url = if url.contains("://") {
        url.to_owned()
    } else {
        format!("ws://{url}")
    };
    let after_scheme = url.split_once("://").map_or("", |(_, rest)| rest);
    if after_scheme.contains('/') {
        url
    } else {
        format!("{url}{}", asp_tokio::DEFAULT_PATH)
    }
}

fn client_config() -> Config {
    Config {
        agent: Some(Text::from(format!("asp-cli/{}", env!("CARGO_PKG_VERSION")))),
        ..Config::default()
    }
}

async fn connect(g: &Global, url: &str, asker: Option<Arc<Asker>>) -> Result<Client, String> {
    let mut b = asp_tokio::client().config(client_config()).resume(g.resume);
    if url
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("wss://"))
    {
        b = b.tls(g.tls.client_tls()?);
    }
    if let Some(t) = &g.token {
        b = b.token(t.clone());
    }
    if let Some(asker) = asker {
        b = b.on_request(move |req: Request| {
            let asker = asker.clone();
            async move { asker.answer(req).await }
        });
    }
    match tokio::time::timeout(g.connect_timeout, b.connect(url)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(describe_connect_error(&e, url, g.token.is_some())),
        Err(_) => Err(format!(
            "timed out after {} connecting to {url} (--connect-timeout)",
            human(g.connect_timeout)
        )),
    }
}

/// A one-line explanation of why connecting failed, with a hint where one helps.
fn describe_connect_error(e: &Error, url: &str, have_token: bool) -> String {
    match e {
        Error::Io(io) if io.to_ascii_lowercase().contains("refused") => {
            format!("connection refused by {url} — is an ASP server listening there? ({io})")
        }
        Error::Io(io) => format!("cannot connect to {url}: {io}"),
        Error::Rejected { status, body } => {
            let what = match status {
                400 => "bad request",
                401 => "authentication required",
                403 => "forbidden",
                404 => "not found",
                503 => "unavailable",
                _ => "",
            };
            let mut s = format!("server refused the upgrade: HTTP {status}");
            if !what.is_empty() {
                let _ = write!(s, " ({what})");
            }
            let body = body.trim();
            if !body.is_empty() && body.len() <= 200 && !body.contains('\n') && body != what {
                let _ = write!(s, ": {body}");
            }
            let hint = match (status, have_token) {
                (401, false) => " — pass --token",
                (401, true) => " — the server did not accept the --token given",
                (403, _) => " — the server does not allow this client (token or Origin policy)",
                (404, _) => " — check the path (the default is /v1/agent-socket)",
                (503, _) => " — the server is at its connection limit; retry later",
                _ => "",
            };
            s + hint
        }
        Error::Subprotocol => subprotocol_message(url),
        Error::WebSocket(w) if w.to_ascii_lowercase().contains("subprotocol") => {
            subprotocol_message(url)
        }
        Error::WebSocket(w) => {
            format!("WebSocket handshake with {url} failed: {w} — is this an ASP server?")
        }
        Error::InvalidUrl(u) => {
            format!("invalid URL {url}: {u} — use ws://host:port/path or wss://host:port/path")
        }
        Error::Tls(t) => format!("cannot connect to {url}: {t}"),
        Error::Closed(r) => {
            format!("the server closed the connection during the ASP handshake: {r}")
        }
        other => format!("cannot connect to {url}: {other}"),
    }
}

fn subprotocol_message(url: &str) -> String {
    format!(
        "{url} accepted the WebSocket upgrade but did not select the asp-v1 subprotocol — \
         it is not an ASP endpoint (or speaks another protocol version)"
    )
}

/// Closes the connection politely, without hanging on a silent server.
async fn close(client: &Client) {
    let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
}

// ---------------------------------------------------------------------------------------
// Ctrl-C

/// Ctrl-C, listened for from creation on (so a Ctrl-C is never lost between two waits).
struct Interrupts {
    #[cfg(unix)]
    sig: tokio::signal::unix::Signal,
    #[cfg(windows)]
    sig: tokio::signal::windows::CtrlC,
}

impl Interrupts {
    fn new() -> Result<Interrupts, String> {
        #[cfg(unix)]
        let sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
        #[cfg(windows)]
        let sig = tokio::signal::windows::ctrl_c();
        sig.map(|sig| Interrupts { sig })
            .map_err(|e| format!("cannot listen for Ctrl-C: {e}"))
    }

    async fn recv(&mut self) {
        if self.sig.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// asp tools

async fn tools(g: &Global, url: &str, watch: bool) -> i32 {
    let mut sig = match watch.then(Interrupts::new).transpose() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let client = match connect(g, url, None).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // Subscribe before reading the set: this runtime is single-threaded, so no change can
    // slip in between (none is lost, none is printed twice).
    let mut changes = watch.then(|| client.tool_changes());
    let mut set = client.tools();
    set.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    if g.json {
        let list: Vec<Value> = set.iter().map(tool_json).collect();
        emit(&json!({"type": "tools", "tools": list}));
    } else if set.is_empty() {
        outln("(no tools)");
    } else {
        for t in &set {
            outln(&tool_plain("", t));
        }
    }
    let (Some(changes), Some(sig)) = (changes.as_mut(), sig.as_mut()) else {
        close(&client).await;
        return EXIT_OK;
    };
    if !g.json && std::io::stderr().is_terminal() {
        eprintln!("watching for tool changes (Ctrl-C to stop)…");
    }
    loop {
        tokio::select! {
            change = changes.next() => match change {
                Some(c) => print_change(g, &c),
                None => {
                    let reason = client.closed().await;
                    let graceful = client.is_draining();
                    if g.json {
                        emit(&json!({
                            "type": "closed",
                            "graceful": graceful,
                            "reason": reason.to_string(),
                        }));
                    }
                    if graceful {
                        eprintln!("the server closed the connection ({reason})");
                        return EXIT_OK;
                    }
                    return fail(format!("connection lost: {reason}"));
                }
            },
            () = sig.recv() => break,
        }
    }
    close(&client).await;
    EXIT_OK
}

fn print_change(g: &Global, c: &ToolChange) {
    match (c, g.json) {
        (ToolChange::Added(t), true) => emit(&json!({"type": "tool_added", "tool": tool_json(t)})),
        (ToolChange::Updated(t), true) => {
            emit(&json!({"type": "tool_updated", "tool": tool_json(t)}));
        }
        (ToolChange::Removed(name), true) => {
            emit(&json!({"type": "tool_removed", "name": name.as_str()}));
        }
        (ToolChange::Added(t), false) => outln(&tool_plain("added: ", t)),
        (ToolChange::Updated(t), false) => outln(&tool_plain("updated: ", t)),
        (ToolChange::Removed(name), false) => outln(&format!("removed: {}", name.as_str())),
    }
}

// ---------------------------------------------------------------------------------------
// asp call

struct CallOpts {
    url: String,
    tool: String,
    args: Option<String>,
    args_file: Option<PathBuf>,
    out: Option<PathBuf>,
    answer: Option<String>,
    deadline_ms: Option<u32>,
}

/// JSON text → MessagePack.
fn json_to_msgpack(text: &str, what: &str) -> Result<RawValue, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("{what} is not valid JSON: {e}"))?;
    asp_tokio::to_value(&v).map_err(|e| format!("{what}: {e}"))
}

/// `--answer`: JSON if it parses, else the text as a string.
fn parse_answer(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

async fn call(g: &Global, o: CallOpts) -> i32 {
    let mut stdin_used = false;
    let args = match (&o.args, &o.args_file) {
        (Some(a), _) => Some(json_to_msgpack(a, "--args")),
        (None, Some(path)) => {
            let mut text = String::new();
            let read = if path.as_os_str() == "-" {
                stdin_used = true;
                std::io::stdin().read_to_string(&mut text).map(|_| ())
            } else {
                std::fs::read_to_string(path).map(|t| text = t)
            };
            match read {
                Ok(()) => Some(json_to_msgpack(
                    &text,
                    &format!("--args-file {}", path.display()),
                )),
                Err(e) => return fail(format!("cannot read {}: {e}", path.display())),
            }
        }
        (None, None) => None,
    };
    let args = match args.transpose() {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let mut file = match &o.out {
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Some((p.clone(), std::io::BufWriter::new(f), 0u64)),
            Err(e) => return fail(format!("cannot create {}: {e}", p.display())),
        },
        None => None,
    };
    let mode = if let Some(a) = &o.answer {
        AnswerMode::Fixed(parse_answer(a))
    } else if stdin_used {
        AnswerMode::Decline("stdin was read for --args-file -")
    } else if std::io::stdin().is_terminal() {
        AnswerMode::Terminal
    } else {
        AnswerMode::Decline("stdin is not a terminal")
    };
    let asker = Arc::new(Asker {
        mode,
        json: g.json,
        prompt: tokio::sync::Mutex::new(()),
    });

    // Listen for Ctrl-C before anything is sent, so that it always means INTERRUPT.
    let mut sig = match Interrupts::new() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let client = tokio::select! {
        c = connect(g, &o.url, Some(asker)) => match c {
            Ok(c) => c,
            Err(e) => return fail(e),
        },
        () = sig.recv() => return EXIT_INTERRUPTED,
    };
    let opts = InvokeOptions {
        deadline_ms: o.deadline_ms.unwrap_or(0),
        ..InvokeOptions::default()
    };
    let mut inv = match client.invoke_raw(&o.tool, args, opts) {
        Ok(i) => i,
        Err(e) => return fail(format!("cannot invoke {}: {e}", o.tool)),
    };

    let mut at_line_start = true;
    let mut interrupted = false;
    loop {
        let chunk = tokio::select! {
            c = inv.next() => c,
            () = sig.recv() => {
                if interrupted {
                    eprintln!("stopped without waiting for the end");
                    return EXIT_INTERRUPTED;
                }
                interrupted = true;
                inv.interrupt();
                let nl = if at_line_start { "" } else { "\n" };
                eprintln!(
                    "{nl}interrupt: sent INTERRUPT, waiting for the cancelled COMPLETE \
                     (Ctrl-C again to quit at once)"
                );
                continue;
            }
        };
        let Some(chunk) = chunk else { break };
        let fin = chunk.fin;
        match (chunk.as_str(), &mut file) {
            (Some(text), _) => {
                if g.json {
                    let mut v = json!({"type": "chunk", "text": text});
                    if fin {
                        v["fin"] = true.into();
                    }
                    emit(&v);
                } else {
                    out(text);
                    if !text.is_empty() {
                        at_line_start = text.ends_with('\n');
                    }
                }
            }
            (None, Some((path, w, n))) => {
                if let Err(e) = w.write_all(&chunk.data) {
                    return fail(format!("cannot write {}: {e}", path.display()));
                }
                *n += chunk.data.len() as u64;
                if g.json {
                    let mut v = json!({
                        "type": "chunk",
                        "bytes": chunk.data.len(),
                        "file": path.display().to_string(),
                    });
                    if fin {
                        v["fin"] = true.into();
                    }
                    emit(&v);
                }
            }
            (None, None) => {
                if g.json {
                    let mut v = json!({"type": "chunk", "hex": hex(&chunk.data)});
                    if fin {
                        v["fin"] = true.into();
                    }
                    emit(&v);
                } else if !chunk.data.is_empty() {
                    if !at_line_start {
                        out("\n");
                    }
                    outln(&hex(&chunk.data));
                    at_line_start = true;
                }
            }
        }
    }
    let done = inv.completion().await;
    if !g.json && !at_line_start {
        out("\n");
    }
    if let Some((path, mut w, n)) = file {
        if let Err(e) = w.flush() {
            return fail(format!("cannot write {}: {e}", path.display()));
        }
        if !g.json {
            eprintln!("wrote {n} bytes of binary output to {}", path.display());
        }
    }
    let code = match done {
        Ok(c) => {
            print_completion(g, &c);
            if c.status == Status::Ok {
                EXIT_OK
            } else {
                EXIT_OUTCOME
            }
        }
        Err(Error::Remote(e)) => {
            let code_name = code_name(e.code);
            let message = e.message.as_ref().map(|m| m.as_str().to_owned());
            if g.json {
                emit(&json!({
                    "type": "error",
                    "code": code_name,
                    "code_num": e.code.0,
                    "message": message,
                    "retryable": e.retryable,
                }));
            } else {
                let mut s = format!("error: {}", remote_error_text(&e));
                if e.code == asp_tokio::ErrorCode::UNKNOWN_TOOL {
                    let mut names: Vec<String> =
                        client.tools().iter().map(|t| t.name.to_string()).collect();
                    names.sort();
                    let _ = write!(s, " — the server offers: {}", names.join(", "));
                }
                eprintln!("{s}");
            }
            EXIT_OUTCOME
        }
        Err(Error::Closed(r)) => fail(format!(
            "the connection closed before the invocation ended: {r}"
        )),
        Err(e) => fail(e),
    };
    close(&client).await;
    code
}

/// An error code's registry name, or `APPLICATION_ERROR_0x…` for codes SPEC §12.2 does not
/// define.
fn code_name(code: asp_tokio::ErrorCode) -> String {
    code.name().map_or_else(
        || format!("APPLICATION_ERROR_0x{:02x}", code.0),
        str::to_owned,
    )
}

/// `the server answered ERROR NAME (0x..): message`.
fn remote_error_text(e: &asp_tokio::asp_proto::frame::ErrorFrame) -> String {
    let mut s = format!(
        "the server answered ERROR {} (0x{:02x})",
        code_name(e.code),
        e.code.0
    );
    if let Some(m) = &e.message {
        let _ = write!(s, ": {m}");
    }
    if e.retryable {
        s.push_str(" (retryable)");
    }
    s
}

fn print_completion(g: &Global, c: &Completion) {
    if g.json {
        let mut o = Map::new();
        o.insert("type".into(), "complete".into());
        o.insert("status".into(), status_name(c.status).into());
        put_value(&mut o, "result", c.result.as_ref());
        let metrics: Map<String, Value> = metrics_fields(&c.metrics)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect();
        o.insert("metrics".into(), Value::Object(metrics));
        emit(&Value::Object(o));
        return;
    }
    outln(&format!("status: {}", status_name(c.status)));
    if let Some(r) = &c.result {
        outln(&format!("result: {}", show_plain(r)));
    }
    let m = metrics_fields(&c.metrics);
    if !m.is_empty() {
        let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
        outln(&format!("metrics: {}", parts.join(" ")));
    }
}

/// How server questions (REQUEST, SPEC §8) are answered.
enum AnswerMode {
    /// `--answer`.
    Fixed(Value),
    /// Prompt on the terminal.
    Terminal,
    /// Decline, for this reason.
    Decline(&'static str),
}

struct Asker {
    mode: AnswerMode,
    json: bool,
    /// One prompt at a time.
    prompt: tokio::sync::Mutex<()>,
}

impl Asker {
    async fn answer(&self, req: Request) -> Reply {
        let kind = req.kind.as_str().to_owned();
        let mut report = Map::new();
        report.insert("type".into(), "request".into());
        report.insert("kind".into(), kind.clone().into());
        put_value(&mut report, "body", req.body.as_ref());
        let body = req
            .body
            .as_ref()
            .map_or_else(|| "(no body)".to_owned(), show_plain);
        let (status, value) = match &self.mode {
            AnswerMode::Fixed(v) => {
                if !self.json {
                    eprintln!("the server asks ({kind}): {body} — answering {v} (--answer)");
                }
                (ReplyStatus::Answered, Some(v.clone()))
            }
            AnswerMode::Decline(why) => {
                eprintln!(
                    "asp: declined the server's question ({kind}): {body} — {why}; run from a \
                     terminal to answer it, or pass --answer JSON"
                );
                report.insert("reason".into(), (*why).into());
                (ReplyStatus::Declined, None)
            }
            AnswerMode::Terminal => {
                let _one = self.prompt.lock().await;
                eprintln!("? the server asks ({kind}): {body}");
                eprint!("  answer (JSON or text; empty line or Ctrl-D declines): ");
                let _ = std::io::stderr().flush();
                match read_line().await {
                    Some(line) if !line.trim().is_empty() => {
                        (ReplyStatus::Answered, Some(parse_answer(line.trim())))
                    }
                    _ => {
                        eprintln!("  declined");
                        (ReplyStatus::Declined, None)
                    }
                }
            }
        };
        let body = match &value {
            Some(v) => match asp_tokio::to_value(v) {
                Ok(raw) => Some(raw),
                Err(e) => {
                    eprintln!("asp: cannot encode the answer ({e}); declining");
                    return asp_tokio::reply(&req, ReplyStatus::Declined, None);
                }
            },
            None => None,
        };
        if self.json {
            let r = match status {
                ReplyStatus::Answered => "answered",
                ReplyStatus::Cancelled => "cancelled",
                ReplyStatus::Declined => "declined",
            };
            report.insert("reply".into(), r.into());
            if let Some(v) = value {
                report.insert("answer".into(), v);
            }
            emit(&Value::Object(report));
        }
        asp_tokio::reply(&req, status, body)
    }
}

/// One line from stdin, read on a thread of its own (`None` at end of input).
async fn read_line() -> Option<String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let r = std::io::stdin().read_line(&mut line);
        let _ = tx.send(match r {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line),
        });
    });
    rx.await.ok().flatten()
}

// ---------------------------------------------------------------------------------------
// asp serve

async fn serve(
    g: &Global,
    addr: SocketAddr,
    delay: Duration,
    churn: Option<Duration>,
    resume: bool,
    tls_args: tls::ServeTlsArgs,
) -> i32 {
    use asp_cli::demo;
    let mut sig = match Interrupts::new() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut builder = asp_tokio::server()
        .bind(addr)
        .tool(demo::agent_tool_with_delay(delay))
        .tool(demo::echo_tool())
        .tool(demo::clarify_tool())
        .tool(demo::fail_tool())
        .tool(demo::blob_tool())
        .resume(resume);
    if let Some(t) = &g.token {
        builder = builder.token(t.clone());
    }
    let server_tls = match tls_args.server_tls() {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    if let Some(t) = &server_tls {
        builder = builder.tls(t.clone());
    }
    let mut hangups = tls::Hangups::new();
    let server = match builder.start().await {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot listen on {addr}: {e}")),
    };
    let url = server.url();
    let names = ["agent", "echo", "clarify", "fail", "blob"];
    if g.json {
        emit(&json!({"type": "listening", "url": url, "tools": names, "resume": resume}));
    } else {
        outln(&format!("serving the demo agent on {url}"));
        eprintln!("tools: {}", names.join(", "));
        if resume {
            eprintln!("session resume offered (30 s window; --no-resume to turn it off)");
        }
        if g.token.is_some() {
            eprintln!("clients must send the token (asp … --token TOKEN)");
        }
        let token = if g.token.is_some() {
            " --token …"
        } else {
            ""
        };
        eprintln!("try: asp call {url}{token} agent --args '{{\"prompt\": \"hello\"}}'");
        eprintln!("Ctrl-C stops the server");
    }
    let mut tick =
        churn.map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
    let mut present = false;
    loop {
        tokio::select! {
            () = sig.recv() => break,
            () = hangups.recv() => {
                // SIGHUP: new handshakes get the certificate now in the files; open
                // connections keep theirs.
                let Some(t) = &server_tls else { continue };
                match (t.reload(), g.json) {
                    (Ok(()), true) => emit(&json!({"type": "tls_reloaded"})),
                    (Ok(()), false) => eprintln!("reloaded the TLS certificate"),
                    (Err(e), true) => emit(&json!({"type": "tls_reload_failed", "error": e.to_string()})),
                    (Err(e), false) => eprintln!("TLS reload failed, keeping the old certificate: {e}"),
                }
            }
            () = next_tick(&mut tick) => {
                present = !present;
                if present {
                    server.add_tool(ephemeral_tool());
                } else {
                    server.remove_tool("ephemeral");
                }
            }
        }
    }
    if g.json {
        emit(&json!({"type": "shutting_down"}));
    } else {
        eprintln!("shutting down: letting invocations finish (Ctrl-C again to stop at once)…");
    }
    tokio::select! {
        () = server.shutdown(Duration::from_secs(5)) => {}
        () = sig.recv() => return EXIT_INTERRUPTED,
    }
    if g.json {
        emit(&json!({"type": "stopped"}));
    } else {
        eprintln!("stopped");
    }
    EXIT_OK
}

/// The next tick of an optional interval (never, without one).
async fn next_tick(tick: &mut Option<tokio::time::Interval>) {
    match tick {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The tool `asp serve --churn` adds and removes: an echo.
fn ephemeral_tool() -> asp_tokio::Tool {
    asp_tokio::Tool::new(
        "ephemeral",
        |_ctx: asp_tokio::ToolContext, args: asp_tokio::Args| async move {
            Ok(asp_tokio::Output {
                result: args.0,
                metrics: Metrics::default(),
            })
        },
    )
    .description("returns its arguments; comes and goes (asp serve --churn)")
}

// ---------------------------------------------------------------------------------------
// asp bench

/// `asp bench` with the load flags: runs `load::run` and reports.
async fn load_bench(g: &Global, o: load::LoadOpts) -> i32 {
    let json = g.json;
    let r = load::run(&o, |line| {
        if !json {
            eprintln!("{line}");
        }
    })
    .await;
    let mut lat = r.latencies.clone();
    lat.sort();
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let total = r.calls_ok + r.calls_failed;
    if g.json {
        emit(&json!({
            "type": "load",
            "url": o.url,
            "connections": o.connections,
            "pipeline": o.pipeline,
            "calls_ok": r.calls_ok,
            "calls_failed": r.calls_failed,
            "check_failures": r.check_failures,
            "elapsed_s": (secs * 1e3).round() / 1e3,
            "calls_per_s": (r.calls_ok as f64 / secs).round(),
            "p50_us": micros(quantile(&lat, 0.50)),
            "p99_us": micros(quantile(&lat, 0.99)),
            "max_us": micros(quantile(&lat, 1.0)),
            "idle_open": r.idle_open,
            "idle_lost": r.idle_lost,
            "slow_bytes": r.slow_bytes,
            "storm_cycles": r.storm_cycles,
            "flood_bytes_sent": r.flood_bytes_sent,
            "flood_overloaded": r.flood_overloaded,
            "flood_cut_silently": r.flood_cut_silently,
            "errors": r.errors,
        }));
    } else {
        outln(&format!(
            "{total} calls on {} connections × {} in flight in {}: {} ok, {} failed{}",
            o.connections,
            o.pipeline,
            human(r.elapsed),
            r.calls_ok,
            r.calls_failed,
            if o.check {
                format!(", {} check failures", r.check_failures)
            } else {
                String::new()
            }
        ));
        outln(&format!(
            "  {:.0} calls/s   latency p50 {}  p99 {}  max {}",
            r.calls_ok as f64 / secs,
            human(quantile(&lat, 0.50)),
            human(quantile(&lat, 0.99)),
            human(quantile(&lat, 1.0)),
        ));
        if o.idle > 0 {
            outln(&format!(
                "  idle: {} open, {} lost by the end",
                r.idle_open, r.idle_lost
            ));
        }
        if o.slow > 0 {
            outln(&format!(
                "  slow consumers read {}",
                human_bytes(r.slow_bytes as f64)
            ));
        }
        if o.storm > 0 {
            outln(&format!("  disconnect storm: {} cycles", r.storm_cycles));
        }
        if o.flood > 0 {
            outln(&format!(
                "  floods sent {} without reading; ended with OVERLOADED: {}, cut silently: {}",
                human_bytes(r.flood_bytes_sent as f64),
                r.flood_overloaded,
                r.flood_cut_silently
            ));
        }
        for e in &r.errors {
            eprintln!("  error: {e}");
        }
    }
    let bad = r.calls_failed > 0
        || r.check_failures > 0
        || r.idle_lost > 0
        || r.flood_cut_silently > 0
        || r.calls_ok == 0 && o.connections > 0;
    if bad {
        EXIT_OUTCOME
    } else {
        EXIT_OK
    }
}

struct BenchOpts {
    url: String,
    count: Option<u64>,
    warmup: Option<u64>,
    concurrency: usize,
    tool: Option<String>,
    args: Option<String>,
    size: u64,
    stream: Option<u64>,
    chunk: u64,
    no_progress: bool,
}

/// One measured invocation.
#[derive(Clone, Copy)]
struct Sample {
    total: Duration,
    first_chunk: Option<Duration>,
    bytes: u64,
    chunks: u64,
}

/// Why a bench invocation failed, with its exit status.
struct BenchFailure {
    code: i32,
    message: String,
}

async fn run_one(
    client: &Client,
    tool: &str,
    args: &Option<RawValue>,
    read_chunks: bool,
) -> Result<Sample, BenchFailure> {
    let start = Instant::now();
    let mut inv = client
        .invoke_raw(tool, args.clone(), InvokeOptions::default())
        .map_err(|e| BenchFailure {
            code: EXIT_USAGE,
            message: format!("cannot invoke {tool}: {e}"),
        })?;
    let (mut first_chunk, mut bytes, mut chunks) = (None, 0, 0);
    if read_chunks {
        while let Some(c) = inv.next().await {
            first_chunk.get_or_insert_with(|| start.elapsed());
            bytes += c.data.len() as u64;
            chunks += 1;
        }
    }
    match inv.completion().await {
        Ok(c) if c.status == Status::Ok => Ok(Sample {
            total: start.elapsed(),
            first_chunk,
            bytes,
            chunks,
        }),
        Ok(c) => Err(BenchFailure {
            code: EXIT_OUTCOME,
            message: format!("{tool} completed with status {}", status_name(c.status)),
        }),
        Err(Error::Remote(e)) => Err(BenchFailure {
            code: EXIT_OUTCOME,
            message: remote_error_text(&e),
        }),
        Err(e) => Err(BenchFailure {
            code: EXIT_USAGE,
            message: format!("invocation failed: {e}"),
        }),
    }
}

/// What a bench runs.
struct Load<'a> {
    client: &'a Client,
    tool: &'a str,
    args: &'a Option<RawValue>,
    /// Stream test: read every chunk (round trips leave them to `completion`).
    read_chunks: bool,
    concurrency: usize,
}

/// Runs `count` invocations with `concurrency` in flight, until done, a failure or `stop`.
async fn run_phase(
    load: &Load<'_>,
    count: u64,
    stop: &AtomicBool,
    mut on_sample: impl FnMut(Sample),
) -> Result<(), BenchFailure> {
    let Load {
        client,
        tool,
        args,
        read_chunks,
        concurrency,
    } = *load;
    let next = AtomicU64::new(0);
    let samples = Mutex::new(Vec::new());
    let worker = || async {
        loop {
            if stop.load(Ordering::Relaxed) || next.fetch_add(1, Ordering::Relaxed) >= count {
                return Ok(());
            }
            match run_one(client, tool, args, read_chunks).await {
                Ok(s) => samples.lock().unwrap_or_else(|e| e.into_inner()).push(s),
                Err(f) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(f);
                }
            }
        }
    };
    let workers = futures::future::join_all((0..concurrency.max(1)).map(|_| worker()));
    tokio::pin!(workers);
    // Hand samples over as they come (for the progress bar) while the workers run.
    let mut report = tokio::time::interval(Duration::from_millis(100));
    let results = loop {
        tokio::select! {
            r = &mut workers => break r,
            _ = report.tick() => {
                for s in samples.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                    on_sample(s);
                }
            }
        }
    };
    for s in samples.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        on_sample(s);
    }
    results.into_iter().collect()
}

/// The `q` quantile (nearest rank) of sorted samples.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Microseconds, to 0.1 µs.
fn micros(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e7).round() / 10.0
}

fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

async fn bench(g: &Global, o: BenchOpts) -> i32 {
    let streaming = o.stream.is_some();
    let count = o.count.unwrap_or(if streaming { 20 } else { 1000 });
    if count == 0 {
        return fail("-n must be at least 1");
    }
    let warmup = o.warmup.unwrap_or((count / 10).min(100));
    let tool = o
        .tool
        .clone()
        .unwrap_or_else(|| if streaming { "blob" } else { "echo" }.to_owned());
    let args = match (&o.args, o.stream) {
        (Some(a), _) => json_to_msgpack(a, "--args"),
        (None, Some(bytes)) => asp_tokio::to_value(&json!({"bytes": bytes, "chunk": o.chunk}))
            .map_err(|e| e.to_string()),
        (None, None) => match usize::try_from(o.size) {
            Ok(n) => asp_tokio::to_value(&"x".repeat(n)).map_err(|e| e.to_string()),
            Err(_) => Err("--size is too large".to_owned()),
        },
    };
    let args = match args {
        Ok(a) => Some(a),
        Err(e) => return fail(e),
    };
    let mut sig = match Interrupts::new() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let client = tokio::select! {
        c = connect(g, &o.url, None) => match c {
            Ok(c) => c,
            Err(e) => return fail(e),
        },
        () = sig.recv() => return EXIT_INTERRUPTED,
    };
    let mut concurrency = o.concurrency.max(1);
    if let Some(session) = client.session() {
        let max = usize::from(session.peer_limits.max_inflight).max(1);
        if concurrency > max {
            eprintln!("note: the server allows {max} invocations in flight; using -c {max}");
            concurrency = max;
        }
    }

    let stop = AtomicBool::new(false);
    let mut interrupted = false;
    // Warm-up, then the measured run; Ctrl-C stops either and reports what was measured.
    let mut samples: Vec<Sample> = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let show_bar = !g.json
        && !o.no_progress
        && std::io::stderr().is_terminal()
        && (count >= 1000 || streaming);
    let bar = if show_bar {
        let b = indicatif::ProgressBar::new(count);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} eta {eta}",
        ) {
            b.set_style(style);
        }
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let load = Load {
        client: &client,
        tool: &tool,
        args: &args,
        read_chunks: streaming,
        concurrency,
    };
    let mut elapsed = Duration::ZERO;
    let mut result = Ok(());
    for (phase, n) in [("warm-up", warmup), ("measure", count)] {
        if n == 0 || interrupted {
            continue;
        }
        let measuring = phase == "measure";
        let start = Instant::now();
        let run = run_phase(&load, n, &stop, |s| {
            if measuring {
                samples.push(s);
                bar.inc(1);
            }
        });
        tokio::pin!(run);
        let r = tokio::select! {
            r = &mut run => r,
            () = sig.recv() => {
                interrupted = true;
                stop.store(true, Ordering::Relaxed);
                run.await
            }
        };
        if measuring {
            elapsed = start.elapsed();
        }
        if r.is_err() {
            result = r;
            break;
        }
    }
    bar.finish_and_clear();
    close(&client).await;
    if let Err(f) = result {
        eprintln!("error: {}", f.message);
        return f.code;
    }
    if interrupted {
        eprintln!(
            "interrupted: reporting {} of {count} invocations",
            samples.len()
        );
    }
    if samples.is_empty() {
        return fail("nothing was measured");
    }
    report_bench(g, &o, &tool, concurrency, &samples, elapsed, interrupted);
    EXIT_OK
}

fn report_bench(
    g: &Global,
    o: &BenchOpts,
    tool: &str,
    concurrency: usize,
    samples: &[Sample],
    elapsed: Duration,
    interrupted: bool,
) {
    let mut lat: Vec<Duration> = samples.iter().map(|s| s.total).collect();
    lat.sort();
    let mut first: Vec<Duration> = samples.iter().filter_map(|s| s.first_chunk).collect();
    first.sort();
    let n = samples.len();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mean = lat.iter().sum::<Duration>() / n as u32;
    let per_s = n as f64 / secs;
    let bytes: u64 = samples.iter().map(|s| s.bytes).sum();
    let chunks: u64 = samples.iter().map(|s| s.chunks).sum();
    let streaming = o.stream.is_some();
    if g.json {
        let mut v = json!({
            "type": "bench",
            "mode": if streaming { "stream" } else { "round_trip" },
            "url": o.url,
            "tool": tool,
            "n": n,
            "concurrency": concurrency,
            "elapsed_s": (secs * 1e6).round() / 1e6,
            "p50_us": micros(quantile(&lat, 0.50)),
            "p90_us": micros(quantile(&lat, 0.90)),
            "p99_us": micros(quantile(&lat, 0.99)),
            "max_us": micros(quantile(&lat, 1.0)),
            "mean_us": micros(mean),
            "throughput_per_s": (per_s * 10.0).round() / 10.0,
        });
        if interrupted {
            v["interrupted"] = true.into();
        }
        if streaming {
            v["bytes"] = bytes.into();
            v["chunks"] = chunks.into();
            v["bytes_per_s"] = (bytes as f64 / secs).round().into();
            v["first_chunk_p50_us"] = micros(quantile(&first, 0.50)).into();
            v["first_chunk_p99_us"] = micros(quantile(&first, 0.99)).into();
        }
        emit(&v);
        return;
    }
    let what = if streaming {
        format!("streams of {}", human_bytes(bytes as f64 / n as f64))
    } else {
        "round trips".to_owned()
    };
    outln(&format!(
        "{tool}: {n} {what} in {} (concurrency {concurrency})",
        human(elapsed)
    ));
    outln(&format!(
        "  latency      p50 {}  p90 {}  p99 {}  max {}  mean {}",
        human(quantile(&lat, 0.50)),
        human(quantile(&lat, 0.90)),
        human(quantile(&lat, 0.99)),
        human(quantile(&lat, 1.0)),
        human(mean)
    ));
    if streaming {
        outln(&format!(
            "  first chunk  p50 {}  p99 {}",
            human(quantile(&first, 0.50)),
            human(quantile(&first, 0.99))
        ));
        outln(&format!(
            "  throughput   {}/s, {:.0} chunks/s, {per_s:.1} streams/s",
            human_bytes(bytes as f64 / secs),
            chunks as f64 / secs
        ));
    } else {
        outln(&format!("  throughput   {per_s:.0} calls/s"));
    }
}

// ---------------------------------------------------------------------------------------
// Argument parsers

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("expected seconds (e.g. 2.5), got {s:?}"))?;
    Duration::try_from_secs_f64(v).map_err(|_| format!("expected seconds ≥ 0, got {s:?}"))
}

/// `4096`, `64k`, `1M`, `2GiB`…
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("expected a size like 4096, 64k or 1M, got {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("unknown size unit in {s:?} (use k, M or G)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}
