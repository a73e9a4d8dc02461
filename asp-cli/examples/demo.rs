//! The README's first command: `cargo run --release -p asp-cli --example demo`.
//!
//! Starts a server on 127.0.0.1 (port 0) with a mock agent tool that streams tokens, connects
//! a client, invokes the tool, prints the streamed tokens and the COMPLETE metrics, then
//! measures the INVOKE→COMPLETE round trip of a small echo tool. The tools are
//! [`asp_cli::demo`]'s, which `asp serve` also runs.

use std::time::{Duration, Instant};

use asp_cli::demo::{agent_tool, echo_tool};
use futures::StreamExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = asp_tokio::server()
        .tool(agent_tool())
        .tool(echo_tool())
        .start()
        .await?;
    println!("server listening on {}", server.url());

    let client = asp_tokio::connect(&server.url()).await?;
    let session = client.session().ok_or("no session")?;
    println!(
        "connected: connection id {}, tools {:?}",
        session.connection_id,
        client
            .tools()
            .iter()
            .map(|t| t.name.to_string())
            .collect::<Vec<_>>()
    );

    #[derive(serde::Serialize)]
    struct Prompt<'a> {
        prompt: &'a str,
    }
    let mut call = client.invoke(
        "agent",
        &Prompt {
            prompt: "what is ASP?",
        },
    )?;
    print!("tokens: ");
    let mut n = 0;
    while let Some(chunk) = call.next().await {
        print!("{}", chunk.as_str().unwrap_or("?"));
        n += 1;
    }
    let done = call.completion().await?;
    println!();
    println!(
        "COMPLETE status={:?} chunks={n} wall_us={:?} input_tokens={:?} output_tokens={:?}",
        done.status, done.metrics.wall_us, done.metrics.input_tokens, done.metrics.output_tokens
    );

    // Round-trip latency of a 64-byte echo, after a warm-up.
    let payload = "x".repeat(64);
    for _ in 0..200 {
        client.invoke("echo", &payload)?.completion().await?;
    }
    let rounds = 2000;
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        client.invoke("echo", &payload)?.completion().await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    let p = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!(
        "echo round trip over {rounds} calls: p50 {:?}  p99 {:?}",
        p(0.50),
        p(0.99)
    );

    client.close().await;
    server.shutdown(Duration::from_secs(2)).await;
    println!("done");
    Ok(())
}
