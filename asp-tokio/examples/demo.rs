//! The README's first command: `cargo run --release -p asp-tokio --example demo`.
//!
//! Starts a server on 127.0.0.1 (port 0) with a mock agent tool that streams tokens, connects
//! a client, invokes the tool, prints the streamed tokens and the COMPLETE metrics, then
//! measures the INVOKE→COMPLETE round trip of a small echo tool.

use std::time::{Duration, Instant};

use asp_tokio::{Args, Metrics, Output, Tool, ToolContext, ToolError};
use futures::StreamExt;

/// A stand-in for an LLM: streams the words of a canned answer one token at a time.
async fn mock_agent(ctx: ToolContext, args: Args) -> Result<Output, ToolError> {
    #[derive(serde::Deserialize)]
    struct Prompt {
        prompt: String,
    }
    let Prompt { prompt } = args.parse()?;
    let answer = format!(
        "You asked: \"{prompt}\". Agent Socket streams each token as its own STREAM frame, \
         many invocations share one socket, and either side can interrupt."
    );
    let mut tokens = 0;
    for word in answer.split_inclusive(' ') {
        ctx.stream_text(word)
            .await
            .map_err(|_| ToolError::Cancelled)?;
        tokens += 1;
    }
    let mut out = Output::value(&serde_json_like(tokens))?;
    out.metrics = Metrics {
        input_tokens: Some(prompt.split_whitespace().count() as u64),
        output_tokens: Some(tokens),
        ..Metrics::default()
    };
    Ok(out)
}

fn serde_json_like(tokens: u64) -> std::collections::BTreeMap<&'static str, u64> {
    [("tokens", tokens)].into_iter().collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = asp_tokio::server()
        .tool(Tool::new("agent", mock_agent).description("mock LLM: streams a canned answer"))
        .tool(
            Tool::new("echo", |_ctx: ToolContext, args: Args| async move {
                Ok(Output {
                    result: args.0,
                    metrics: Metrics::default(),
                })
            })
            .description("returns its arguments"),
        )
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
