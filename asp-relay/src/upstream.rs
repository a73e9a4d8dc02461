//! The relay's side of the function call (SPEC §15.2–§15.4): one pooled hyper client, the
//! forwarding handler every tool runs, and the delivery of REPLYs to pushed requests.
//!
//! Backpressure (SPEC §15.3) comes from the order of the loop in [`forward`]: one body
//! frame is read, turned into chunks, and each chunk awaits `ToolContext::stream`, which
//! waits while the client's flow-control window or the connection's queue is full. Only then
//! is the next frame read, so a slow client leaves the function's bytes in hyper's bounded
//! read buffer and the TCP window, and the function's writes block.
//!
//! Aborting (SPEC §15.3): when the client interrupts or disconnects, the runtime drops the
//! handler future, and with it the hyper response future or body; hyper then closes that
//! upstream connection, which the function sees as a reset or a failed write.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::binding::{
    CallLimits, Ending, InvokeRequest, RelayOut, ReplyRequest, StateUpdate, TimeoutPhase,
    UpstreamCall,
};
use asp_async::asp_proto::frame::{Invoke, Status, Text};
use asp_async::{
    Args, Output, RequestId, ServerConnection, StreamError, StreamOptions, ToolContext, ToolError,
};
use asp_proto::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::{RelayConfig, RelayConn, RelayInner};

/// The pooled keep-alive client to the function: `http://`, or `https://` with rustls
/// (HTTP/2 when the function offers it by ALPN, else HTTP/1.1; see [`crate::tls`]).
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub(crate) fn http_client(config: &RelayConfig) -> std::io::Result<HttpClient> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(config.timeouts.upstream));
    // The HTTPS wrapper decides the scheme.
    connector.enforce_http(false);
    let connector = crate::tls::upstream_connector(config, connector)?;
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_max_idle_per_host(config.pool_max_idle)
        .build(connector))
}

/// Bytes of a body the relay still reads after the call ended early (a frames body's
/// COMPLETE, an error body's first 1024 bytes) so that the upstream connection can return to
/// the pool; beyond it the connection is dropped.
const DRAIN_LIMIT: usize = 64 << 10;

/// The handler of every tool: one INVOKE → one `POST {upstream}/invoke`.
pub(crate) async fn forward(
    inner: Arc<RelayInner>,
    ctx: ToolContext,
    args: Args,
) -> Result<Output, ToolError> {
    let conn = ctx.connection().ok_or(ToolError::Cancelled)?;
    let rc = inner.conn(conn.id()).ok_or(ToolError::Cancelled)?;
    let started = now(&conn);
    let invoke = Invoke {
        id: ctx.id(),
        tool: Text::from(ctx.tool()),
        args: args.0,
        deadline_ms: ctx.deadline_ms(),
        meta: ctx.meta().cloned(),
    };
    // SPEC §15.4: each invocation sees the state as of its own start.
    let state = rc.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let req = InvokeRequest::new(inner.config.format, conn.id(), &invoke, Some(&state))
        .map_err(tool_error)?;
    let mut http = Request::post(inner.invoke_uri.clone());
    for (k, v) in &req.headers {
        http = http.header(*k, v.as_str());
    }
    if let Some(auth) = &rc.auth {
        http = http.header(hyper::header::AUTHORIZATION, auth.clone());
    }
    let http = http
        .body(Full::new(req.body))
        .map_err(|e| ToolError::failed(format!("cannot build the upstream request: {e}")))?;

    let t = inner.config.timeouts;
    let response = match tokio::time::timeout(t.upstream, inner.client.request(http)).await {
        Err(_) => {
            return Err(tool_error(Ending::timed_out(
                TimeoutPhase::Head,
                t.upstream,
            )))
        }
        Ok(Err(e)) => return Err(tool_error(Ending::unreachable(&error_chain(&e)))),
        Ok(Ok(r)) => r,
    };
    let (parts, mut body) = response.into_parts();
    let limits = CallLimits {
        max_chunk: max_chunk(&conn),
        max_state: inner.config.max_state,
        max_frame_payload: inner.config.asp.limits.max_frame_payload,
    };
    let mut call = {
        let head: Vec<(&str, &[u8])> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect();
        UpstreamCall::start(parts.status.as_u16(), &head, limits, started)
    };
    apply_state(&inner, &rc, &mut call);
    loop {
        while let Some(out) = call.poll_output() {
            match out {
                RelayOut::Chunk { data, text, fin } => {
                    // Waits for the client's window: this is the backpressure.
                    ctx.stream(data, StreamOptions::BINARY.text(text).fin(fin))
                        .await
                        .map_err(|e| match e {
                            StreamError::Cancelled => ToolError::Cancelled,
                            StreamError::Invalid(e) => ToolError::Error {
                                code: asp_proto::ErrorCode::INTERNAL,
                                message: format!("the relay could not stream a chunk: {e}"),
                                retryable: false,
                            },
                        })?;
                }
                RelayOut::End(ending) => {
                    apply_state(&inner, &rc, &mut call);
                    if !body.is_end_stream() {
                        tokio::spawn(drain(body, t.idle));
                    }
                    return ending_result(ending);
                }
            }
        }
        match tokio::time::timeout(t.idle, body.frame()).await {
            Err(_) => return Err(tool_error(Ending::timed_out(TimeoutPhase::Body, t.idle))),
            Ok(None) => call.handle_end(&[], now(&conn)),
            Ok(Some(Err(e))) => call.handle_error(&error_chain(&e)),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => call.handle_body(data, now(&conn)),
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let list: Vec<(&str, &[u8])> = trailers
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_bytes()))
                            .collect();
                        call.handle_end(&list, now(&conn));
                    }
                }
            },
        }
    }
}

/// Reads what is left of a body, bounded, so the connection can be reused.
async fn drain(mut body: Incoming, idle: std::time::Duration) {
    let mut read = 0usize;
    while read <= DRAIN_LIMIT {
        match tokio::time::timeout(idle, body.frame()).await {
            Ok(Some(Ok(f))) => read += f.data_ref().map_or(0, |d| d.len()),
            _ => return,
        }
    }
}

fn now(conn: &ServerConnection) -> asp_proto::Instant {
    conn.with(|l| l.now()).unwrap_or_default()
}

/// The chunk size the client accepts, as the core decides it (SPEC §7.5: `max_chunk`, half
/// the initial window, the frame limit).
fn max_chunk(conn: &ServerConnection) -> usize {
    conn.with(|l| l.core().chunk_cap()).unwrap_or(64 << 10)
}

/// SPEC §15.4: the header's update as soon as the head arrives, the trailer's at the end.
/// Keeps the state here and, in a cluster, in Redis at this node's generation (SPEC §15.6).
fn set_state(inner: &Arc<RelayInner>, rc: &RelayConn, b: Bytes) {
    *rc.state.lock().unwrap_or_else(|e| e.into_inner()) = b.clone();
    if let Some(c) = &inner.cluster {
        let (c, id) = (c.clone(), rc.handle.id().to_owned());
        tokio::spawn(async move { c.write_state(&id, b).await });
    }
}

fn apply_state(inner: &Arc<RelayInner>, rc: &RelayConn, call: &mut UpstreamCall) {
    match call.take_state_update() {
        StateUpdate::Unchanged => {}
        StateUpdate::Set(b) => set_state(inner, rc, b),
        StateUpdate::Clear => set_state(inner, rc, Bytes::new()),
        StateUpdate::TooLarge { len } => tracing::warn!(
            connection = rc.handle.id(),
            len,
            "X-Asp-State larger than max_state ignored"
        ),
        StateUpdate::Invalid => tracing::warn!(
            connection = rc.handle.id(),
            "X-Asp-State that is not base64 ignored"
        ),
    }
}

fn ending_result(ending: Ending) -> Result<Output, ToolError> {
    match ending {
        Ending::Complete {
            status: Status::Ok,
            result,
            metrics,
        } => Ok(Output { result, metrics }),
        Ending::Complete {
            status,
            result,
            metrics,
        } => Err(ToolError::Complete {
            status,
            output: Output { result, metrics },
        }),
        e @ Ending::Error { .. } => Err(tool_error(e)),
    }
}

fn tool_error(ending: Ending) -> ToolError {
    match ending {
        Ending::Error {
            code,
            message,
            retryable,
        } => ToolError::Error {
            code,
            message,
            retryable,
        },
        Ending::Complete {
            status,
            result,
            metrics,
        } => ToolError::Complete {
            status,
            output: Output { result, metrics },
        },
    }
}

/// An error and its sources, for messages ("client error (Connect): tcp connect error:
/// Connection refused").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Waits for the client's answer to a pushed REQUEST and delivers it to
/// `POST {upstream}/reply` (SPEC §15.5). The response is only logged.
pub(crate) async fn deliver_reply(inner: Arc<RelayInner>, rc: Arc<RelayConn>, id: RequestId) {
    let outcome = rc.handle.outcome(id).await;
    rc.pending_requests.fetch_sub(1, Ordering::AcqRel);
    let req = ReplyRequest::new(inner.config.format, rc.handle.id(), id, &outcome);
    let mut http = Request::post(inner.reply_uri.clone());
    for (k, v) in &req.headers {
        http = http.header(*k, v.as_str());
    }
    let Ok(http) = http.body(Full::new(req.body)) else {
        return;
    };
    let t = inner.config.timeouts.upstream;
    match tokio::time::timeout(t, inner.client.request(http)).await {
        Ok(Ok(resp)) => {
            let status = resp.status();
            if !status.is_success() {
                tracing::warn!(connection = rc.handle.id(), id = id.0, %status, "the function refused a reply");
            }
            let _ = collect_limited(resp, 1024).await;
        }
        Ok(Err(e)) => {
            tracing::warn!(connection = rc.handle.id(), id = id.0, error = %error_chain(&e), "delivering a reply failed")
        }
        Err(_) => tracing::warn!(
            connection = rc.handle.id(),
            id = id.0,
            "delivering a reply timed out"
        ),
    }
}

async fn collect_limited(resp: Response<Incoming>, limit: usize) -> Option<Bytes> {
    http_body_util::Limited::new(resp.into_body(), limit)
        .collect()
        .await
        .ok()
        .map(|c| c.to_bytes())
}
