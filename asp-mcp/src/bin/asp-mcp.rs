//! `asp-mcp`: the MCP bridge from the command line (the same as `asp bridge …`).

use clap::Parser;

/// A bridge between MCP and the Agent Socket Protocol.
#[derive(Parser)]
#[command(name = "asp-mcp", version)]
struct Cli {
    /// Bearer token: required from ASP clients (`from-mcp`), sent to the ASP server
    /// (`to-mcp`).
    #[arg(long, global = true, env = "ASP_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    cmd: asp_mcp::cli::Bridge,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    if let Err(e) = asp_mcp::cli::run(cli.cmd, cli.token).await {
        eprintln!("asp-mcp: {e}");
        std::process::exit(1);
    }
}
