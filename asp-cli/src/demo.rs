//! The demo agent's tools, for trying the protocol out: `examples/demo.rs` and `asp serve`
//! use them, and the CLI tests run against them.
//!
//! - [`agent_tool`] — `agent`: a stand-in for an LLM that streams a canned answer one token
//!   (word) at a time;
//! - [`echo_tool`] — `echo`: returns its arguments;
//! - [`clarify_tool`] — `clarify`: asks the client a question (a server REQUEST, SPEC §8) and
//!   streams the answer back;
//! - [`fail_tool`] — `fail`: always completes with status `failed`;
//! - [`blob_tool`] — `blob`: streams binary data, for byte-stream and throughput tests.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let server = asp_tokio::server().tool(asp_cli::demo::agent_tool()).start().await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use asp_tokio::{to_value, Args, Metrics, Output, ReplyStatus, Tool, ToolContext, ToolError};

/// Every demo tool: `agent` (no delay between tokens), `echo`, `clarify`, `fail`, `blob`.
pub fn tools() -> Vec<Tool> {
    vec![
        agent_tool(),
        echo_tool(),
        clarify_tool(),
        fail_tool(),
        blob_tool(),
    ]
}

/// `agent`: a mock LLM. Arguments `{"prompt": string, "delay_ms"?: int, "repeat"?: int}`;
/// streams the words of a canned answer (repeated `repeat` times, default 1) as text chunks,
/// sleeping `delay_ms` (default 0) before each, then completes with `{"tokens": n}` and token
/// metrics.
pub fn agent_tool() -> Tool {
    agent_tool_with_delay(Duration::ZERO)
}

/// [`agent_tool`] whose default pause before each token is `delay` (`delay_ms` in the
/// arguments still overrides it), so that streaming is visible to a person.
pub fn agent_tool_with_delay(delay: Duration) -> Tool {
    let default_ms = delay.as_millis().min(u128::from(u64::MAX)) as u64;
    Tool::new("agent", move |ctx: ToolContext, args: Args| {
        mock_agent(ctx, args, default_ms)
    })
    .description("mock LLM: streams a canned answer")
    .input_schema(&Schema {
        ty: "object",
        properties: [
            ("prompt", prop("string", "what to ask")),
            (
                "delay_ms",
                prop("integer", "pause before each token, in ms"),
            ),
            (
                "repeat",
                prop("integer", "how many times to stream the answer (default 1)"),
            ),
        ]
        .into_iter()
        .collect(),
        required: &["prompt"],
    })
    .expect("a static schema encodes")
}

#[derive(Deserialize)]
struct Prompt {
    prompt: String,
    delay_ms: Option<u64>,
    repeat: Option<u32>,
}

async fn mock_agent(ctx: ToolContext, args: Args, default_ms: u64) -> Result<Output, ToolError> {
    let Prompt {
        prompt,
        delay_ms,
        repeat,
    } = args.parse()?;
    let delay = Duration::from_millis(delay_ms.unwrap_or(default_ms));
    let answer = format!(
        "You asked: \"{prompt}\". Agent Socket streams each token as its own STREAM frame, \
         many invocations share one socket, and either side can interrupt."
    );
    let mut tokens = 0;
    for round in 0..repeat.unwrap_or(1).max(1) {
        if round > 0 {
            send_text(&ctx, "\n").await?;
        }
        for word in answer.split_inclusive(' ') {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            send_text(&ctx, word).await?;
            tokens += 1;
        }
    }
    let mut out = Output::value(&BTreeMap::from([("tokens", tokens)]))?;
    out.metrics = Metrics {
        input_tokens: Some(prompt.split_whitespace().count() as u64),
        output_tokens: Some(tokens),
        ..Metrics::default()
    };
    Ok(out)
}

async fn send_text(ctx: &ToolContext, text: &str) -> Result<(), ToolError> {
    // Only an interrupt is `cancelled` (SPEC §5.6); a chunk the core refused fails the
    // invocation instead (`From<StreamError>`).
    Ok(ctx.stream_text(text).await?)
}

/// `echo`: completes at once with its arguments as the result.
pub fn echo_tool() -> Tool {
    Tool::new("echo", |_ctx: ToolContext, args: Args| async move {
        Ok(Output {
            result: args.0,
            metrics: Metrics::default(),
        })
    })
    .description("returns its arguments")
}

/// `clarify`: arguments `{"question"?: string}`. Asks the client a `clarify` REQUEST with body
/// `{"question": …}`; on an answer, streams `You answered: …` and completes with the answer
/// as its result; when the client declines, completes with status `failed`.
pub fn clarify_tool() -> Tool {
    Tool::new("clarify", |ctx: ToolContext, args: Args| async move {
        #[derive(Deserialize, Default)]
        struct Question {
            question: Option<String>,
        }
        let q: Option<Question> = args.parse()?;
        let question = q
            .unwrap_or_default()
            .question
            .unwrap_or_else(|| "What should I do next?".to_owned());
        let body = to_value(&BTreeMap::from([("question", question.as_str())]))
            .map_err(|e| ToolError::failed(e.to_string()))?;
        let reply = ctx
            .ask("clarify", Some(body))
            .await
            .map_err(|e| ToolError::failed(format!("could not ask the client: {e}")))?;
        match reply.status {
            ReplyStatus::Answered => {
                let answer = reply.body.unwrap_or_else(asp_tokio::RawValue::nil);
                let shown = asp_tokio::from_value::<String>(&answer)
                    .unwrap_or_else(|_| "(a structured answer)".to_owned());
                send_text(&ctx, &format!("You answered: {shown}")).await?;
                Ok(Output::from(answer))
            }
            // The client withdrew the question; nobody interrupted the invocation, so it
            // is not `cancelled` (SPEC §5.6).
            ReplyStatus::Cancelled => Err(failed_with("the client cancelled the question")),
            ReplyStatus::Declined => Err(failed_with("the client declined to answer")),
        }
    })
    .description("asks the client a question (a server REQUEST) and streams the answer back")
    .input_schema(&Schema {
        ty: "object",
        properties: [("question", prop("string", "what to ask the client"))]
            .into_iter()
            .collect(),
        required: &[],
    })
    .expect("a static schema encodes")
}

/// `fail`: arguments `{"message"?: string}`. Streams one line, then completes with status
/// `failed` and result `{"error": message}`.
pub fn fail_tool() -> Tool {
    Tool::new("fail", |ctx: ToolContext, args: Args| async move {
        #[derive(Deserialize, Default)]
        struct Fail {
            message: Option<String>,
        }
        let f: Option<Fail> = args.parse()?;
        let message = f
            .unwrap_or_default()
            .message
            .unwrap_or_else(|| "this tool always fails".to_owned());
        send_text(&ctx, "working…\n").await?;
        Err(failed_with(&message))
    })
    .description("always completes with status failed")
    .input_schema(&Schema {
        ty: "object",
        properties: [("message", prop("string", "the failure message"))]
            .into_iter()
            .collect(),
        required: &[],
    })
    .expect("a static schema encodes")
}

fn failed_with(message: &str) -> ToolError {
    ToolError::Failed(to_value(&BTreeMap::from([("error", message)])).ok())
}

/// The most `blob` streams in one invocation.
const BLOB_MAX: u64 = 1 << 30;

/// `blob`: arguments `{"bytes"?: int, "chunk"?: int}`. Streams `bytes` (default 1 MiB, at
/// most 1 GiB) of binary data — byte `i` is `i mod 256` — in chunks of `chunk` bytes
/// (default 16 KiB), then completes with `{"bytes": n}`.
pub fn blob_tool() -> Tool {
    Tool::new("blob", |ctx: ToolContext, args: Args| async move {
        #[derive(Deserialize, Default)]
        struct Blob {
            bytes: Option<u64>,
            chunk: Option<u32>,
        }
        let b: Option<Blob> = args.parse()?;
        let b = b.unwrap_or_default();
        let total = b.bytes.unwrap_or(1 << 20);
        if total > BLOB_MAX {
            return Err(ToolError::invalid_arguments("bytes: at most 1 GiB"));
        }
        let chunk = u64::from(b.chunk.unwrap_or(16 << 10).clamp(1, 1 << 20));
        // The pattern from every start offset mod 256: each chunk is a cheap slice of it.
        let pattern: Bytes = (0..256 + chunk).map(|i| i as u8).collect::<Vec<_>>().into();
        let mut sent = 0u64;
        while sent < total {
            let n = chunk.min(total - sent);
            let start = (sent % 256) as usize;
            ctx.stream_bytes(pattern.slice(start..start + n as usize))
                .await?;
            sent += n;
        }
        Output::value(&BTreeMap::from([("bytes", sent)]))
    })
    .description("streams binary data (byte i is i mod 256)")
    .input_schema(&Schema {
        ty: "object",
        properties: [
            ("bytes", prop("integer", "how many bytes (default 1 MiB)")),
            ("chunk", prop("integer", "bytes per chunk (default 16 KiB)")),
        ]
        .into_iter()
        .collect(),
        required: &[],
    })
    .expect("a static schema encodes")
}

/// A small JSON Schema of an object's arguments.
#[derive(Serialize)]
struct Schema {
    #[serde(rename = "type")]
    ty: &'static str,
    properties: BTreeMap<&'static str, Prop>,
    #[serde(skip_serializing_if = "no_names")]
    required: &'static [&'static str],
}

#[derive(Serialize)]
struct Prop {
    #[serde(rename = "type")]
    ty: &'static str,
    description: &'static str,
}

fn no_names(names: &&[&str]) -> bool {
    names.is_empty()
}

fn prop(ty: &'static str, description: &'static str) -> Prop {
    Prop { ty, description }
}
