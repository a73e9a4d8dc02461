//! Profiling aid: streams 2 million 32-byte chunks through one connection on a
//! current-thread runtime. `cargo run --release -p asp-tokio --example stream_profile`.

use std::time::Instant;

use asp_tokio::{Args, Output, StreamOptions, Tool, ToolContext, ToolError};
use bytes::Bytes;
use futures::StreamExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let stream = Tool::new("stream", |ctx: ToolContext, a: Args| async move {
        let n: usize = a.parse()?;
        let chunk = Bytes::from_static(b"0123456789abcdef0123456789abcdef");
        for _ in 0..n {
            ctx.stream(chunk.clone(), StreamOptions::BINARY)
                .await
                .map_err(|_| ToolError::Cancelled)?;
        }
        Ok(Output::default())
    });
    let server = asp_tokio::server().tool(stream).start().await?;
    let client = asp_tokio::connect(&server.url()).await?;
    let n = 2_000_000usize;
    let t = Instant::now();
    let mut call = client.invoke("stream", &n)?;
    let mut got = 0usize;
    while let Some(c) = call.next().await {
        got += c.data.len();
    }
    call.completion().await?;
    let dt = t.elapsed();
    assert_eq!(got, n * 32);
    println!(
        "{n} chunks in {dt:?}: {:.0} ns/chunk",
        dt.as_nanos() as f64 / n as f64
    );
    Ok(())
}
