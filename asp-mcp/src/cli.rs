//! The command line of the bridge: the `asp-mcp` binary (which `asp bridge …` runs).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::upstream::{Generation, Upstream};

/// `asp bridge …` / `asp-mcp …`.
#[derive(Debug, Subcommand)]
pub enum Bridge {
    /// MCP → ASP: serve an MCP server's tools as an ASP server (one MCP session per ASP
    /// client). Prints the ASP URL on stdout, then runs until interrupted.
    ///
    /// Examples: `asp bridge from-mcp -- python server.py`,
    /// `asp bridge from-mcp --url http://127.0.0.1:8000/mcp`.
    FromMcp(FromMcp),
    /// ASP → MCP: serve an ASP server's tools to MCP hosts, on stdio or Streamable HTTP.
    ///
    /// Example: `asp bridge to-mcp ws://127.0.0.1:7000/v1/agent-socket --http 127.0.0.1:8000`.
    ToMcp(ToMcp),
}

/// Arguments of `from-mcp`.
#[derive(Debug, Args)]
pub struct FromMcp {
    /// A Streamable HTTP MCP endpoint (instead of a command).
    #[arg(long, conflicts_with = "command")]
    pub url: Option<String>,
    /// The MCP server command and its arguments (after `--`), run once per ASP client.
    #[arg(last = true)]
    pub command: Vec<String>,
    /// Where the ASP server listens.
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,
    /// MCP protocol generation towards the server: auto, legacy (2025-11-25) or modern
    /// (2026-07-28).
    #[arg(long, default_value = "auto")]
    pub generation: Generation,
    /// End a tools/call that has not answered after this many ms with UPSTREAM_TIMEOUT (and
    /// restart a server that no longer answers at all). 0: no limit.
    #[arg(long, default_value_t = 0)]
    pub call_timeout_ms: u64,
}

/// Arguments of `to-mcp`.
#[derive(Debug, Args)]
pub struct ToMcp {
    /// The ASP server, e.g. `ws://127.0.0.1:7000/v1/agent-socket`.
    pub asp_url: String,
    /// Serve Streamable HTTP at `http://ADDR/mcp` (default: one host on stdin/stdout).
    #[arg(long)]
    pub http: Option<SocketAddr>,
}

/// Runs a bridge command until it ends (stdio host gone) or Ctrl-C. `token` is the bearer
/// token: required from ASP clients by `from-mcp`, sent to the ASP server by `to-mcp`.
pub async fn run(cmd: Bridge, token: Option<String>) -> Result<(), String> {
    match cmd {
        Bridge::FromMcp(a) => {
            let upstream = match (a.url, a.command.split_first()) {
                (Some(url), _) => Upstream::Http { url },
                (None, Some((program, args))) => Upstream::Stdio {
                    program: program.clone(),
                    args: args.to_vec(),
                },
                (None, None) => {
                    return Err("give an MCP server: --url URL or -- COMMAND [ARGS…]".into())
                }
            };
            let mut config = crate::McpToAspConfig::new(upstream);
            config.listen = a.listen;
            config.generation = a.generation;
            config.call_timeout =
                (a.call_timeout_ms > 0).then(|| Duration::from_millis(a.call_timeout_ms));
            config.token = token;
            let server = crate::serve_mcp_as_asp(config)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
            println!("{}", server.url());
            let _ = tokio::signal::ctrl_c().await;
            server.shutdown(Duration::from_secs(5)).await;
            Ok(())
        }
        Bridge::ToMcp(a) => {
            let tools = crate::AspTools::connect(&a.asp_url, token.as_deref())
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", a.asp_url))?;
            match a.http {
                None => crate::asp_to_mcp::serve_stdio(tools).await,
                Some(addr) => {
                    let ct = tokio_util::sync::CancellationToken::new();
                    let (bound, task) = crate::asp_to_mcp::serve_http(tools, addr, ct.clone())
                        .await
                        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
                    println!("http://{bound}/mcp");
                    let _ = tokio::signal::ctrl_c().await;
                    ct.cancel();
                    let _ = task.await;
                    Ok(())
                }
            }
        }
    }
}
