//! The push API (SPEC §15.5): a separate HTTP listener where functions and back ends act on a
//! connection later. Every request needs `Authorization: Bearer <admin secret>`.
//!
//! | request | answer |
//! |---|---|
//! | `POST /connections/{id}/frames` (body: ASP frames) | `202 {"accepted", "request_ids"}`, `400`, `404`, `409` |
//! | `GET /connections/{id}` | `200 {"connection_id", "connected_for_ms", "in_flight", "requests_in_flight", "state_bytes", "tools"}`, `404` |
//! | `DELETE /connections/{id}[?timeout_ms=N]` | `204` (GOAWAY, close when idle), `404` |

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::binding::{cut_chunks, parse_push, PushFrame, RelayOut};
use asp_async::asp_proto::frame::{RawValue, Text, ToolDef, ToolOp};
use asp_async::{Locked, RequestId};
use asp_proto::{BatchError, Bytes, Command, SendError, StreamOptions};
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
const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// How long a `DELETE` lets in-flight invocations finish: its `timeout_ms` query parameter,
/// else [`DEFAULT_DRAIN`].
pub(crate) fn drain_timeout<B>(req: &Request<B>) -> Duration {
    req.uri()
        .query()
        .and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("timeout_ms="))
                .and_then(|v| v.parse().ok())
        })
        .map_or(DEFAULT_DRAIN, Duration::from_millis)
}

pub(crate) struct AdminServer {
    pub(crate) addr: SocketAddr,
    stop: Arc<Notify>,
}

impl AdminServer {
    pub(crate) async fn start(inner: Arc<RelayInner>, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(Notify::new());
        let tls = crate::tls::admin_acceptor(&inner.config)?;
        tokio::spawn(accept(inner, listener, tls, stop.clone()));
        Ok(AdminServer { addr, stop })
    }

    pub(crate) fn stop(&self) {
        self.stop.notify_one();
    }
}

async fn accept(
    inner: Arc<RelayInner>,
    listener: TcpListener,
    tls: Option<crate::tls::AdminTls>,
    stop: Arc<Notify>,
) {
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
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let inner = inner.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&inner, req).await) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            let _ = match tls {
                None => http.serve_connection(TokioIo::new(tcp), service).await,
                Some(tls) => match tls.accept(tcp).await {
                    Some(tcp) => http.serve_connection(TokioIo::new(tcp), service).await,
                    None => Ok(()),
                },
            };
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
            let timeout = drain_timeout(&req);
            rc.handle.with(|l| {
                l.goaway(
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
        let c = l.core();
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
    consume: impl FnOnce() -> bool,
) -> Result<(), String> {
    let frames = parse_push(body, inner.config.asp.limits.max_frame_payload)
        .map_err(|e| format!("frame {}: {}", e.index, e.message))?;
    let applied = rc.handle.with(|l| {
        // Under the connection's lock, with the frames: a session snapshot (SPEC §11.4)
        // taken by this connection sees both or neither (cluster: the last push applied),
        // and a push applied meanwhile by another task is not applied twice.
        if !consume() {
            return Ok((0, Vec::new()));
        }
        // The same all-or-nothing check as a local push (SPEC §15.5), by the core.
        let batch = Batch::new(frames, max_chunk(l));
        if let Err(e) = l.core().check_batch(&batch.commands()) {
            return Err(batch.refused(e));
        }
        apply(l, &rc, batch)
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
    let applied = rc.handle.with(|l| {
        // All or nothing (SPEC §15.5: "nothing sent"): the core checks the whole batch,
        // then it is sent.
        let batch = Batch::new(frames, max_chunk(l));
        if let Err(e) = l.core().check_batch(&batch.commands()) {
            return Err(batch.refused(e));
        }
        apply(l, &rc, batch)
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

/// The client's chunk size, as the core decides it (SPEC §7.5).
fn max_chunk(l: &mut Locked<'_>) -> usize {
    l.core().chunk_cap()
}

/// A push body as the commands that send it: each STREAM already cut to the client's chunk
/// size, so the core checks exactly what will be sent.
struct Batch(Vec<Pushed>);

enum Pushed {
    ToolDef(ToolDef),
    Stream {
        id: RequestId,
        pieces: Vec<(Bytes, bool, bool)>,
    },
    Request {
        kind: Text,
        body: Option<RawValue>,
        invocation: Option<RequestId>,
    },
}

impl Batch {
    fn new(frames: Vec<PushFrame>, max_chunk: usize) -> Batch {
        Batch(
            frames
                .into_iter()
                .map(|f| match f {
                    PushFrame::ToolDef(d) => Pushed::ToolDef(d),
                    PushFrame::Stream {
                        id,
                        data,
                        text,
                        fin,
                    } => Pushed::Stream {
                        id,
                        pieces: cut_chunks(data, text, fin, max_chunk)
                            .into_iter()
                            .filter_map(|p| match p {
                                RelayOut::Chunk { data, text, fin } => Some((data, text, fin)),
                                RelayOut::End(_) => None,
                            })
                            .collect(),
                    },
                    PushFrame::Request {
                        kind,
                        body,
                        invocation,
                    } => Pushed::Request {
                        kind,
                        body,
                        invocation,
                    },
                })
                .collect(),
        )
    }

    fn commands(&self) -> Vec<Command<'_>> {
        let mut out = Vec::with_capacity(self.0.len());
        for p in &self.0 {
            match p {
                Pushed::ToolDef(d) if d.op == ToolOp::Remove => {
                    out.push(Command::RemoveTool(d.name.as_str()))
                }
                Pushed::ToolDef(d) => out.push(Command::AddTool(d)),
                Pushed::Stream { id, pieces } => {
                    out.extend(pieces.iter().map(|(data, text, fin)| Command::Stream {
                        id: *id,
                        data,
                        options: StreamOptions::BINARY.text(*text).fin(*fin),
                    }))
                }
                Pushed::Request {
                    kind,
                    body,
                    invocation,
                } => out.push(Command::Request {
                    kind: kind.as_str(),
                    body: body.as_ref(),
                    invocation: *invocation,
                }),
            }
        }
        out
    }

    /// The 409 (or 400, for text that is not UTF-8) for a refused batch, naming the frame of
    /// the body that the refused command came from.
    fn refused(&self, e: BatchError) -> Refused {
        let mut command = 0;
        let frame = self
            .0
            .iter()
            .position(|p| {
                command += match p {
                    Pushed::Stream { pieces, .. } => pieces.len(),
                    _ => 1,
                };
                command > e.index
            })
            .unwrap_or(0);
        let status = match e.error {
            SendError::InvalidField("data") => StatusCode::BAD_REQUEST,
            _ => StatusCode::CONFLICT,
        };
        let what = match self.0.get(frame) {
            Some(Pushed::ToolDef(_)) => "TOOL_DEF",
            Some(Pushed::Stream { .. }) => "STREAM",
            _ => "REQUEST",
        };
        Refused(status, format!("frame {frame} ({what}): {}", e.error))
    }
}

fn apply(
    l: &mut Locked<'_>,
    rc: &RelayConn,
    batch: Batch,
) -> Result<(usize, Vec<RequestId>), Refused> {
    let n = batch.0.len();
    let mut ids = Vec::new();
    let internal = |e: asp_proto::SendError| {
        Refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("sending failed after the checks: {e}"),
        )
    };
    for p in batch.0 {
        match p {
            Pushed::ToolDef(d) => match d.op {
                ToolOp::Remove => {
                    l.remove_tool(d.name.as_str()).map_err(internal)?;
                }
                // SPEC §15.5: add and update both mean "the client has this definition";
                // the core sends add or update by what the client holds (SPEC §9).
                ToolOp::Add | ToolOp::Update => l
                    .add_tool(ToolDef {
                        op: ToolOp::Add,
                        ..d
                    })
                    .map_err(internal)?,
            },
            Pushed::Stream { id, pieces } => {
                // SPEC §15.5: a STREAM over the client's chunk size is split, as a
                // function's are (§15.3), not refused (`Batch::new` cut it).
                for (data, text, fin) in pieces {
                    l.stream(id, data, StreamOptions::BINARY.text(text).fin(fin))
                        .map_err(internal)?;
                }
            }
            Pushed::Request {
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
