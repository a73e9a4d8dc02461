//! The push API (SPEC §15.5): a separate HTTP listener where functions and back ends act on a
//! connection later. Every request needs `Authorization: Bearer <admin secret>`.
//!
//! | request | answer |
//! |---|---|
//! | `POST /connections/{id}/frames` (body: ASP frames) | `202 {"accepted", "request_ids"}`, `400`, `404`, `409` |
//! | `GET /connections/{id}` | `200 {"connection_id", "connected_for_ms", "in_flight", "requests_in_flight", "state_bytes", "tools"}`, `404` |
//! | `DELETE /connections/{id}[?timeout_ms=N]` | `204` (GOAWAY, close when idle), `404` |

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::binding::{cut_chunks, parse_push, PushFrame, RelayOut};
use asp_async::asp_proto::codec::encoded_len;
use asp_async::asp_proto::frame::{Frame, Request as RequestFrame, Text, ToolDef, ToolOp};
use asp_async::{Locked, RequestId};
use asp_proto::{Bytes, State};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::{upstream, RelayConn, RelayInner};

/// Largest push body accepted.
pub(crate) const MAX_PUSH_BODY: usize = 16 << 20;

/// How long `DELETE` lets in-flight invocations finish by default.
pub(crate) const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// STREAM framing beyond the data, for the queue check (as the core counts it).
const STREAM_OVERHEAD: usize = 24;

pub(crate) struct AdminServer {
    pub(crate) addr: SocketAddr,
    stop: Arc<Notify>,
}

impl AdminServer {
    pub(crate) async fn start(inner: Arc<RelayInner>, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(Notify::new());
        tokio::spawn(accept(inner, listener, stop.clone()));
        Ok(AdminServer { addr, stop })
    }

    pub(crate) fn stop(&self) {
        self.stop.notify_one();
    }
}

async fn accept(inner: Arc<RelayInner>, listener: TcpListener, stop: Arc<Notify>) {
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
            _ = stop.notified() => return,
        };
        let _ = tcp.set_nodelay(true);
        let inner = inner.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let inner = inner.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&inner, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

pub(crate) type Reply = Response<Full<Bytes>>;

pub(crate) fn reply(status: StatusCode, json: Option<serde_json::Value>) -> Reply {
    let mut r = Response::new(Full::new(
        json.map(|j| Bytes::from(j.to_string())).unwrap_or_default(),
    ));
    *r.status_mut() = status;
    if status != StatusCode::NO_CONTENT {
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    r
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    reply(status, Some(serde_json::json!({ "error": message.into() })))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn handle(inner: &Arc<RelayInner>, req: Request<Incoming>) -> Reply {
    let expected = format!(
        "Bearer {}",
        inner.config.admin_secret.as_deref().unwrap_or("")
    );
    let authorized = req
        .headers()
        .get(AUTHORIZATION)
        .is_some_and(|v| constant_time_eq(v.as_bytes(), expected.as_bytes()));
    if !authorized {
        let mut r = error(StatusCode::UNAUTHORIZED, "admin secret required");
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (id, action) = match parts.as_slice() {
        ["connections", id] => (*id, None),
        ["connections", id, "frames"] => (*id, Some("frames")),
        ["metrics"] => return crate::cluster::admin::metrics(inner),
        _ => return error(StatusCode::NOT_FOUND, "no such endpoint"),
    };
    let method = req.method().clone();
    // SPEC §15.6: in a cluster every push goes through Redis (one order, one outbox), and
    // a connection held by another node is answered from Redis.
    if let Some(cluster) = &inner.cluster {
        if action.is_some() || inner.conn(id).is_none() {
            return crate::cluster::admin::handle(inner, cluster, id, method, action, req).await;
        }
    }
    let Some(rc) = inner.conn(id) else {
        return error(StatusCode::NOT_FOUND, format!("no connection {id}"));
    };
    match (method, action) {
        (Method::POST, Some(_)) => push(inner, rc, req).await,
        (Method::GET, None) => describe(&rc),
        (Method::DELETE, None) => {
            let timeout = req
                .uri()
                .query()
                .and_then(|q| {
                    q.split('&')
                        .find_map(|kv| kv.strip_prefix("timeout_ms="))
                        .and_then(|v| v.parse().ok())
                })
                .map_or(DEFAULT_DRAIN, Duration::from_millis);
            rc.handle.with(|l| {
                let now = l.now();
                l.conn().goaway(
                    now,
                    Some(Text::from_static("closed through the relay's admin API")),
                    timeout,
                );
            });
            reply(StatusCode::NO_CONTENT, None)
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
    }
}

fn describe(rc: &RelayConn) -> Reply {
    let state_bytes = rc.state.lock().unwrap_or_else(|e| e.into_inner()).len();
    let Some((in_flight, requests, tools)) = rc.handle.with(|l| {
        let c = l.conn();
        let tools: Vec<String> = c.tools().map(|t| t.name.to_string()).collect();
        (c.invocations_in_flight(), c.requests_in_flight(), tools)
    }) else {
        return error(StatusCode::NOT_FOUND, "the connection closed");
    };
    reply(
        StatusCode::OK,
        Some(serde_json::json!({
            "connection_id": rc.handle.id(),
            // SPEC §15.5: a duration (how long the client has been connected), not a time.
            "connected_for_ms": rc.connected.elapsed().as_millis() as u64,
            // Invocations only; pushed REQUESTs awaiting the client's answer apart.
            "in_flight": in_flight,
            "requests_in_flight": requests,
            "state_bytes": state_bytes,
            "tools": tools,
        })),
    )
}

/// Cluster: applies a push that reached the owning node through Redis (SPEC §15.6), with the
/// same checks as a local push; the refusal is only logged (the caller already had its 200).
pub(crate) fn deliver(
    inner: &Arc<RelayInner>,
    rc: Arc<RelayConn>,
    body: Bytes,
) -> Result<(), String> {
    let frames = parse_push(body, inner.config.asp.limits.max_frame_payload)
        .map_err(|e| format!("frame {}: {}", e.index, e.message))?;
    let max_queued = inner.config.asp.max_queued_bytes;
    let applied = rc.handle.with(|l| {
        check(l, &rc, &frames, max_queued)?;
        apply(l, &rc, frames)
    });
    match applied {
        None => Err("the connection closed".into()),
        Some(Err(Refused(_, message))) => Err(message),
        Some(Ok((_, request_ids))) => {
            for id in request_ids {
                tokio::spawn(upstream::deliver_reply(inner.clone(), rc.clone(), id));
            }
            Ok(())
        }
    }
}

async fn push(inner: &Arc<RelayInner>, rc: Arc<RelayConn>, req: Request<Incoming>) -> Reply {
    let body = match Limited::new(req.into_body(), MAX_PUSH_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
    };
    let frames = match parse_push(body, inner.config.asp.limits.max_frame_payload) {
        Ok(f) => f,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("frame {}: {}", e.index, e.message),
            )
        }
    };
    let max_queued = inner.config.asp.max_queued_bytes;
    let applied = rc.handle.with(|l| {
        // All or nothing (SPEC §15.5: "nothing sent"): check every frame, then send.
        check(l, &rc, &frames, max_queued)?;
        apply(l, &rc, frames)
    });
    match applied {
        None => error(StatusCode::NOT_FOUND, "the connection closed"),
        Some(Err(Refused(status, message))) => error(status, message),
        Some(Ok((accepted, request_ids))) => {
            for id in &request_ids {
                tokio::spawn(upstream::deliver_reply(inner.clone(), rc.clone(), *id));
            }
            let ids: Vec<u16> = request_ids.iter().map(|i| i.0).collect();
            reply(
                StatusCode::ACCEPTED,
                Some(serde_json::json!({ "accepted": accepted, "request_ids": ids })),
            )
        }
    }
}

struct Refused(StatusCode, String);

fn conflict(message: String) -> Refused {
    Refused(StatusCode::CONFLICT, message)
}

/// The client's chunk size (as the forwarding handler uses it).
fn max_chunk(l: &mut Locked<'_>) -> usize {
    l.conn().session().map_or(64 << 10, |s| {
        (s.peer_limits.max_chunk as usize).min((s.peer_limits.initial_window / 2).max(1) as usize)
    })
}

/// Whether every frame can be sent now; the first that cannot gives 409.
fn check(
    l: &mut Locked<'_>,
    rc: &RelayConn,
    frames: &[PushFrame],
    max_queued: usize,
) -> Result<(), Refused> {
    let conn = l.conn();
    let Some(session) = conn.session().cloned() else {
        return Err(conflict("the client has not finished its handshake".into()));
    };
    if !matches!(conn.state(), State::Open | State::Draining) {
        return Err(conflict(format!("the connection is {:?}", conn.state())));
    }
    let max_payload = session.peer_limits.max_frame_payload as usize;
    let mut tools: BTreeSet<String> = conn.tools().map(|t| t.name.to_string()).collect();
    let mut stream_bytes: BTreeMap<u16, usize> = BTreeMap::new();
    let mut requests = 0usize;
    for (i, f) in frames.iter().enumerate() {
        match f {
            PushFrame::ToolDef(d) => {
                if encoded_len(&Frame::ToolDef(d.clone())) - 8 > max_payload {
                    return Err(conflict(format!(
                        "frame {i}: TOOL_DEF larger than the client accepts"
                    )));
                }
                let name = d.name.to_string();
                match d.op {
                    ToolOp::Remove => {
                        if !tools.remove(&name) {
                            return Err(conflict(format!("frame {i}: no tool `{name}` to remove")));
                        }
                    }
                    ToolOp::Add | ToolOp::Update => {
                        if !tools.contains(&name)
                            && tools.len() >= usize::from(session.peer_limits.max_tools)
                        {
                            return Err(conflict(format!(
                                "frame {i}: the client holds at most {} tools",
                                session.peer_limits.max_tools
                            )));
                        }
                        tools.insert(name);
                    }
                }
            }
            PushFrame::Stream { id, data, text, .. } => {
                if *text && std::str::from_utf8(data).is_err() {
                    return Err(Refused(
                        StatusCode::BAD_REQUEST,
                        format!("frame {i}: text is not UTF-8"),
                    ));
                }
                *stream_bytes.entry(id.0).or_default() += data.len();
            }
            PushFrame::Request {
                kind,
                body,
                invocation,
            } => {
                if conn.state() != State::Open {
                    return Err(conflict(format!("frame {i}: the connection is draining")));
                }
                if !session.peer_capabilities.iter().any(|c| c == "requests") {
                    return Err(conflict(format!(
                        "frame {i}: the client does not accept requests"
                    )));
                }
                requests += 1;
                let pending = rc.pending_requests.load(Ordering::Acquire) + requests;
                if pending > usize::from(session.peer_limits.max_inflight) {
                    return Err(conflict(format!(
                        "frame {i}: the client accepts {} requests in flight",
                        session.peer_limits.max_inflight
                    )));
                }
                let frame = Frame::Request(RequestFrame {
                    id: RequestId(0x8000),
                    kind: kind.clone(),
                    body: body.clone(),
                    invocation: *invocation,
                });
                if encoded_len(&frame) - 8 > max_payload {
                    return Err(conflict(format!(
                        "frame {i}: REQUEST larger than the client accepts"
                    )));
                }
            }
        }
    }
    let mut total = 0;
    for (id, len) in &stream_bytes {
        if !conn.can_stream(RequestId(*id), *len) {
            return Err(conflict(format!(
                "STREAM for invocation {id}: not in flight, finished, or no flow-control window for {len} bytes now"
            )));
        }
        total += len + STREAM_OVERHEAD;
    }
    if conn.queued_bytes() + total > max_queued {
        return Err(conflict(
            "the connection's send queue is full; retry later".into(),
        ));
    }
    Ok(())
}

fn apply(
    l: &mut Locked<'_>,
    rc: &RelayConn,
    frames: Vec<PushFrame>,
) -> Result<(usize, Vec<RequestId>), Refused> {
    let max = max_chunk(l);
    let n = frames.len();
    let mut ids = Vec::new();
    let internal = |e: asp_proto::SendError| {
        Refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("sending failed after the checks: {e}"),
        )
    };
    for f in frames {
        match f {
            PushFrame::ToolDef(d) => match d.op {
                ToolOp::Remove => {
                    l.conn().remove_tool(d.name.as_str()).map_err(internal)?;
                }
                // SPEC §15.5: add and update both mean "the client has this definition";
                // the core sends add or update by what the client holds (SPEC §9).
                ToolOp::Add | ToolOp::Update => l
                    .conn()
                    .add_tool(ToolDef {
                        op: ToolOp::Add,
                        ..d
                    })
                    .map_err(internal)?,
            },
            PushFrame::Stream {
                id,
                data,
                text,
                fin,
            } => {
                // SPEC §15.5: a STREAM over the client's chunk size is split, as a
                // function's are (§15.3), not refused.
                for piece in cut_chunks(data, text, fin, max) {
                    if let RelayOut::Chunk { data, text, fin } = piece {
                        l.conn().stream(id, data, text, fin).map_err(internal)?;
                    }
                }
            }
            PushFrame::Request {
                kind,
                body,
                invocation,
            } => {
                let id = l.request(kind, body, invocation).map_err(internal)?;
                rc.pending_requests.fetch_add(1, Ordering::AcqRel);
                ids.push(id);
            }
        }
    }
    Ok((n, ids))
}
