//! `asp-relay`: ASP sockets at the edge, serverless functions behind HTTP (SPEC §15).
//!
//! ```text
//! asp-relay --listen 0.0.0.0:8080 --upstream http://127.0.0.1:9000 \
//!           --admin-listen 127.0.0.1:8081 --admin-secret "$SECRET"
//! ```
//!
//! Every flag can also come from a config file (`--config relay.json`, a JSON object whose
//! keys are the long flag names: `{"upstream": "http://…", "max-inflight": 8}`); flags given
//! on the command line win. Logs go to stderr; `ASP_RELAY_LOG=info` (or debug, trace)
//! shows more than warnings.

use std::net::SocketAddr;
use std::time::Duration;

use asp_relay::{parse_tools, Relay, RelayConfig};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Msgpack,
    Json,
}

/// ASP relay: holds client WebSockets and forwards each INVOKE to `POST {upstream}/invoke`,
/// streaming the function's response back (SPEC §15).
#[derive(Parser, Debug)]
#[command(name = "asp-relay", version)]
struct Args {
    /// A JSON file of settings (keys are the long flag names); flags win over it.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Address for client WebSocket connections [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// WebSocket path [default: /v1/agent-socket].
    #[arg(long)]
    path: Option<String>,
    /// Address of the admin (push) API; off unless set.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Bearer secret of the admin API.
    #[arg(long, env = "ASP_RELAY_ADMIN_SECRET", hide_env_values = true)]
    admin_secret: Option<String>,
    /// The function's base URL (http://host:port[/base]); the relay calls {upstream}/invoke.
    #[arg(long)]
    upstream: Option<String>,
    /// Body encoding towards the function [default: msgpack].
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Forward the client's upgrade Authorization header to the function.
    #[arg(long)]
    forward_auth: bool,
    /// Require `Authorization: Bearer <token>` from clients.
    #[arg(long, env = "ASP_RELAY_CLIENT_TOKEN", hide_env_values = true)]
    client_token: Option<String>,
    /// Client connections at most [default: 10000].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Upstream calls in flight per connection [default: 32].
    #[arg(long)]
    max_inflight: Option<u16>,
    /// Largest per-connection state blob in bytes [default: 65536].
    #[arg(long)]
    max_state: Option<usize>,
    /// Seconds to wait for the function's status line [default: 300].
    #[arg(long)]
    upstream_timeout: Option<f64>,
    /// Seconds without body bytes before the call fails [default: 60].
    #[arg(long)]
    idle_timeout: Option<f64>,
    /// A JSON file: the initial tool set, [{"name", "description", "input_schema"}, …].
    #[arg(long)]
    tools: Option<std::path::PathBuf>,
    /// Do not offer session resume (SPEC §11; offered by default, with a 30 s window and a
    /// 256 KiB replay buffer per session, announced in HELLO).
    #[arg(long)]
    no_resume: bool,
    /// Serve clients over TLS (wss://) with this certificate chain (PEM); reloaded on SIGHUP.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Require client certificates issued by the CAs in this PEM file (mutual TLS).
    #[arg(long)]
    client_ca: Option<std::path::PathBuf>,
    /// Serve the admin API over TLS (https://) too, with the --tls-cert certificate.
    #[arg(long)]
    admin_tls: bool,
    /// Trust the CA certificates in this PEM file (instead of the built-in roots) for an
    /// https:// upstream.
    #[arg(long)]
    upstream_ca: Option<std::path::PathBuf>,
    /// Built-in roots for an https:// upstream without --upstream-ca [default: platform].
    #[arg(long, value_enum)]
    upstream_roots: Option<RootsArg>,
    /// Join a relay cluster through this Redis, e.g. redis://127.0.0.1:6379 (SPEC §15.6):
    /// pushes on any node reach the connection wherever it is. A Redis Cluster:
    /// redis+cluster://h1:p1,h2:p2 (any of its nodes; needs the build feature `cluster`).
    #[arg(long, env = "ASP_RELAY_REDIS")]
    redis: Option<String>,
    /// This node's id in the cluster (default: random).
    #[arg(long)]
    node_id: Option<String>,
    /// How long a detached session is kept, seconds (SPEC §11; default 30). In a cluster,
    /// also how long a session and its queued pushes outlive a node that died.
    #[arg(long)]
    resume_window: Option<f64>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RootsArg {
    /// The operating system's trust store (webpki roots when it is empty).
    Platform,
    /// Mozilla's roots compiled in (webpki-roots).
    Webpki,
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("asp-relay: {msg}");
    std::process::exit(2);
}

fn secs(v: f64, flag: &str) -> Duration {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .unwrap_or_else(|| fail(format!("--{flag} must be a positive number of seconds")))
}

/// Fills flags not given on the command line from the config file.
fn merge_file(args: &mut Args) {
    let Some(path) = &args.config else { return };
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| fail(format!("reading {}: {e}", path.display())));
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
    let obj = v
        .as_object()
        .unwrap_or_else(|| fail(format!("{}: expected a JSON object", path.display())));
    for key in obj.keys() {
        const KNOWN: &[&str] = &[
            "listen",
            "path",
            "admin-listen",
            "admin-secret",
            "upstream",
            "format",
            "forward-auth",
            "client-token",
            "max-connections",
            "max-inflight",
            "max-state",
            "upstream-timeout",
            "idle-timeout",
            "tools",
            "tls-cert",
            "tls-key",
            "client-ca",
            "admin-tls",
            "upstream-ca",
            "upstream-roots",
        ];
        if !KNOWN.contains(&key.as_str()) {
            fail(format!("{}: unknown setting `{key}`", path.display()));
        }
    }
    let s = |k: &str| obj.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let n = |k: &str| obj.get(k).and_then(|v| v.as_f64());
    // A flag set in the file; absent or not a boolean: not set.
    let flag = |k: &str| obj.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    let parse_addr =
        |k: &str| s(k).map(|a| a.parse().unwrap_or_else(|e| fail(format!("{k}: {e}"))));
    args.listen = args.listen.or_else(|| parse_addr("listen"));
    args.admin_listen = args.admin_listen.or_else(|| parse_addr("admin-listen"));
    args.path = args.path.take().or_else(|| s("path"));
    args.admin_secret = args.admin_secret.take().or_else(|| s("admin-secret"));
    args.upstream = args.upstream.take().or_else(|| s("upstream"));
    args.format = args.format.or_else(|| match s("format").as_deref() {
        None => None,
        Some("msgpack") => Some(Format::Msgpack),
        Some("json") => Some(Format::Json),
        Some(o) => fail(format!("format: `{o}` is not msgpack or json")),
    });
    args.client_token = args.client_token.take().or_else(|| s("client-token"));
    args.forward_auth |= flag("forward-auth");
    args.no_resume |= flag("no-resume");
    args.max_connections = args
        .max_connections
        .or_else(|| n("max-connections").map(|v| v as usize));
    args.max_inflight = args
        .max_inflight
        .or_else(|| n("max-inflight").map(|v| v as u16));
    args.max_state = args
        .max_state
        .or_else(|| n("max-state").map(|v| v as usize));
    args.upstream_timeout = args.upstream_timeout.or_else(|| n("upstream-timeout"));
    args.idle_timeout = args.idle_timeout.or_else(|| n("idle-timeout"));
    args.tools = args.tools.take().or_else(|| s("tools").map(Into::into));
    args.tls_cert = args
        .tls_cert
        .take()
        .or_else(|| s("tls-cert").map(Into::into));
    args.tls_key = args.tls_key.take().or_else(|| s("tls-key").map(Into::into));
    args.client_ca = args
        .client_ca
        .take()
        .or_else(|| s("client-ca").map(Into::into));
    args.admin_tls |= flag("admin-tls");
    args.upstream_ca = args
        .upstream_ca
        .take()
        .or_else(|| s("upstream-ca").map(Into::into));
    args.upstream_roots = args
        .upstream_roots
        .or_else(|| match s("upstream-roots").as_deref() {
            None => None,
            Some("platform") => Some(RootsArg::Platform),
            Some("webpki") => Some(RootsArg::Webpki),
            Some(o) => fail(format!("upstream-roots: `{o}` is not platform or webpki")),
        });
    args.redis = args.redis.take().or_else(|| s("redis"));
    args.node_id = args.node_id.take().or_else(|| s("node-id"));
    args.resume_window = args.resume_window.or_else(|| n("resume-window"));
}

fn config(mut args: Args) -> RelayConfig {
    merge_file(&mut args);
    let upstream = args
        .upstream
        .unwrap_or_else(|| fail("--upstream URL is required"))
        .parse()
        .unwrap_or_else(|e| fail(format!("--upstream: {e}")));
    let mut c = RelayConfig::new(upstream);
    c.listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    if let Some(p) = args.path {
        c.path = p;
    }
    c.admin_listen = args.admin_listen;
    c.admin_secret = args.admin_secret;
    if c.admin_listen.is_some() && c.admin_secret.as_deref().unwrap_or("").is_empty() {
        fail("--admin-listen needs --admin-secret (or ASP_RELAY_ADMIN_SECRET)");
    }
    if let Some(Format::Json) = args.format {
        c.format = asp_relay::BodyFormat::Json;
    }
    c.forward_auth = args.forward_auth;
    c.asp.resume = !args.no_resume;
    if let Some(t) = args.resume_window {
        c.asp.resume_window = secs(t, "resume-window");
    }
    c.redis = args.redis.filter(|r| !r.is_empty());
    c.node_id = args.node_id;
    c.client_token = args.client_token.filter(|t| !t.is_empty());
    if let Some(n) = args.max_connections {
        c.max_connections = n;
    }
    if let Some(n) = args.max_inflight {
        if n == 0 || n > 32767 {
            fail("--max-inflight must be 1-32767");
        }
        c.max_inflight = n;
    }
    if let Some(n) = args.max_state {
        c.max_state = n;
    }
    if let Some(t) = args.upstream_timeout {
        c.timeouts.upstream = secs(t, "upstream-timeout");
    }
    if let Some(t) = args.idle_timeout {
        c.timeouts.idle = secs(t, "idle-timeout");
    }
    if let Some(path) = args.tools {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| fail(format!("reading {}: {e}", path.display())));
        c.tools = parse_tools(&text).unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
    }
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let mut tls = asp_async::ServerTls::from_pem_files(cert, key)
                .unwrap_or_else(|e| fail(format!("--tls-cert/--tls-key: {e}")));
            if let Some(ca) = &args.client_ca {
                tls = tls
                    .client_ca_pem_file(ca)
                    .unwrap_or_else(|e| fail(format!("--client-ca: {e}")));
            }
            if args.admin_tls {
                c.admin_tls = Some(tls.clone());
            }
            c.tls = Some(tls);
        }
        (None, None) => {
            if args.admin_tls || args.client_ca.is_some() {
                fail("--admin-tls and --client-ca need --tls-cert and --tls-key");
            }
        }
        _ => fail("--tls-cert and --tls-key go together"),
    }
    if let Some(RootsArg::Webpki) = args.upstream_roots {
        c.upstream_tls = c.upstream_tls.roots(asp_async::Roots::Webpki);
    }
    if let Some(ca) = &args.upstream_ca {
        c.upstream_tls = c
            .upstream_tls
            .roots(asp_async::Roots::Empty)
            .ca_pem_file(ca)
            .unwrap_or_else(|e| fail(format!("--upstream-ca: {e}")));
    }
    c
}

/// Logs to stderr at the level in `ASP_RELAY_LOG` (error, warn, info, debug, trace;
/// default warn).
fn init_logging() {
    let level = match std::env::var("ASP_RELAY_LOG").as_deref() {
        Ok("error") => tracing::Level::ERROR,
        Ok("info") => tracing::Level::INFO,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("trace") => tracing::Level::TRACE,
        _ => tracing::Level::WARN,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() {
    init_logging();
    let config = config(Args::parse());
    let tls = config.tls.clone();
    let relay_admin_tls = config.admin_tls.is_some();
    let relay = Relay::start(config)
        .await
        .unwrap_or_else(|e| fail(format!("cannot start: {e}")));
    // One line a supervisor (or a test) can parse.
    match relay.admin_addr() {
        Some(a) => println!(
            "asp-relay listening on {} (admin API on {}://{a})",
            relay.url(),
            if relay_admin_tls { "https" } else { "http" }
        ),
        None => println!("asp-relay listening on {}", relay.url()),
    }
    wait_for_stop(tls).await;
    relay.shutdown(Duration::from_secs(10)).await;
}

/// Waits for Ctrl-C (or SIGTERM); on SIGHUP meanwhile, reloads the TLS certificate files:
/// new handshakes (client and admin listeners) get the new certificate, open connections
/// keep theirs.
async fn wait_for_stop(tls: Option<asp_async::ServerTls>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut hup), Ok(mut term)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = term.recv() => return,
                _ = hup.recv() => {
                    if let Some(t) = &tls {
                        match t.reload() {
                            Ok(()) => eprintln!("asp-relay: reloaded the TLS certificate"),
                            Err(e) => eprintln!(
                                "asp-relay: TLS reload failed, keeping the old certificate: {e}"
                            ),
                        }
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tls;
        let _ = tokio::signal::ctrl_c().await;
    }
}
