//! `asp serve`: the demo agent.

use std::net::SocketAddr;
use std::time::Duration;

use asp_tokio::Metrics;
use serde_json::json;

use crate::interrupt::Interrupts;
use crate::output::{emit, fail, outln};
use crate::{tls, Global, EXIT_INTERRUPTED, EXIT_OK};

pub(crate) async fn serve(
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
pub(crate) async fn next_tick(tick: &mut Option<tokio::time::Interval>) {
    match tick {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The tool `asp serve --churn` adds and removes: an echo.
pub(crate) fn ephemeral_tool() -> asp_tokio::Tool {
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
