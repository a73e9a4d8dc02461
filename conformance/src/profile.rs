//! The live profile (README "Live profile"): the tools a server under test offers so the
//! `live` session vectors can be played against it. `asp-tokio` and `asp-smol` share the
//! tool type, so the same definitions serve both adapters.

use asp_proto::ErrorCode;
use asp_tokio::{Args, Output, Tool, ToolContext, ToolError};

/// `ask`, `chunks`, `echo`, `fail`, `wait`, as README "Live profile" specifies them.
pub fn tools() -> Vec<Tool> {
    vec![
        Tool::new("ask", |ctx: ToolContext, args: Args| async move {
            match ctx.ask("confirm", args.0.clone()).await {
                Ok(reply) => Ok(Output {
                    result: reply.body,
                    metrics: Default::default(),
                }),
                Err(e) => Err(ToolError::failed(format!("cannot ask: {e}"))),
            }
        }),
        Tool::new("chunks", |ctx: ToolContext, args: Args| async move {
            let parts: Vec<String> = args.parse()?;
            for p in parts {
                ctx.stream_text(&p)
                    .await
                    .map_err(|_| ToolError::Cancelled)?;
            }
            Ok(Output::default())
        }),
        Tool::new("echo", |_ctx: ToolContext, args: Args| async move {
            Ok(Output {
                result: args.0,
                metrics: Default::default(),
            })
        }),
        Tool::new("fail", |_ctx: ToolContext, args: Args| async move {
            let code = ErrorCode(args.parse::<u16>()?);
            Err(ToolError::Error {
                code,
                message: "failed as asked".into(),
                retryable: code.default_retryable(),
            })
        }),
        Tool::new("wait", |_ctx: ToolContext, _args: Args| async move {
            futures::future::pending::<()>().await;
            Ok(Output::default())
        }),
    ]
}
