//! `asp` — poke an Agent Socket Protocol server from the command line.
//!
//! `asp tools`, `asp call`, `asp serve` and `asp bench`; see `asp --help`. Built on the public
//! client and server API of `asp-tokio` only.
#![forbid(unsafe_code)]

mod bench;
mod bridge;
mod call;
mod connect;
mod floor;
mod interrupt;
mod load;
mod output;
mod serve;
mod tls;
mod tools;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use bench::{bench, floor_bench, load_bench, BenchOpts};
use call::{call, CallOpts};
use connect::normalize_url;
use serve::serve;
use tools::tools;

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
        /// The server (ws://host:port/path, or host:port); none with --floor.
        #[arg(required_unless_present = "floor")]
        url: Option<String>,
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
        /// Load test against its floor, in this process: an ASP echo server and a raw
        /// WebSocket echo server on loopback, --connections × --pipeline small calls against
        /// each for --duration seconds (default 3), alternately for --rounds rounds; reports
        /// ASP's calls per second as a share of the raw WebSocket's messages per second.
        /// With --stream: one connection streams --stream bytes in --chunk chunks instead,
        /// -n times per side and round (default 15), against raw WebSocket messages of
        /// --chunk bytes written with one flush; reports chunks per second.
        #[arg(long, conflicts_with = "url")]
        floor: bool,
        /// With --floor: the tokio runtime the servers and clients run on, `multi_thread`
        /// (2 workers) or `current_thread`.
        #[arg(
            long,
            value_name = "FLAVOR",
            default_value = "multi_thread",
            requires = "floor"
        )]
        runtime: String,
        /// With --floor: rounds of both runs.
        #[arg(long, value_name = "K", default_value_t = 5, requires = "floor")]
        rounds: usize,
    },
    /// Bridge MCP and ASP: serve an MCP server's tools over ASP (`from-mcp`), or an ASP
    /// server's tools to MCP hosts (`to-mcp`).
    ///
    /// Runs the `asp-mcp` binary of the asp-mcp crate (`cargo install --path asp-mcp`) with
    /// these arguments; `asp bridge --help` shows its help. Looked up as ASP_MCP_BIN names it,
    /// else next to `asp`, else on PATH.
    #[command(disable_help_flag = true)]
    Bridge {
        /// `from-mcp …` or `to-mcp …` (see `asp bridge --help`).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<std::ffi::OsString>,
    },
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
    pub(crate) token: Option<String>,
    pub(crate) json: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) resume: bool,
    pub(crate) tls: tls::ClientTlsArgs,
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
        Command::Bridge { args } => bridge::run(g.token.clone(), args),
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
            floor,
            runtime,
            rounds,
        } => {
            if floor {
                let o = floor::FloorOpts {
                    runtime,
                    connections: connections.unwrap_or(16).max(1),
                    pipeline: pipeline.max(1),
                    duration: Duration::from_secs_f64(duration.unwrap_or(3.0).max(0.1)),
                    rounds: rounds.max(1),
                    size: usize::try_from(size).unwrap_or(64),
                    // `--stream BYTES --chunk BYTES`: a stream of BYTES / chunk chunks.
                    stream: stream.map(|b| {
                        let chunk = usize::try_from(chunk).unwrap_or(1).max(1);
                        (usize::try_from(b).unwrap_or(0) / chunk, chunk)
                    }),
                    reps: usize::try_from(count.unwrap_or(15)).unwrap_or(15),
                };
                return floor_bench(&g, o).await;
            }
            let url = url.unwrap_or_default();
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
