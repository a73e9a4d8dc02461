//! The push API in a cluster (SPEC §15.5, §15.6): answers for connections wherever they are.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use super::{Cluster, PushOutcome};
use crate::admin::{drain_timeout, error, reply, Reply, MAX_PUSH_BODY};
use crate::binding::parse_push;
use crate::RelayInner;

fn unavailable(e: std::io::Error) -> Reply {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the cluster's Redis is unreachable; retry later ({e})"),
    )
}

fn gone(id: &str) -> Reply {
    error(StatusCode::GONE, format!("no session {id}"))
}

pub(crate) async fn handle(
    inner: &Arc<RelayInner>,
    cluster: &Arc<Cluster>,
    id: &str,
    method: Method,
    action: Option<&str>,
    req: Request<Incoming>,
) -> Reply {
    match (method, action) {
        (Method::POST, Some(_)) => {
            let body = match Limited::new(req.into_body(), MAX_PUSH_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
            };
            // Malformed bodies are refused here, on the node that received them (400).
            let frames = match parse_push(body.clone(), inner.config.asp.limits.max_frame_payload) {
                Ok(f) => f.len(),
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("frame {}: {}", e.index, e.message),
                    )
                }
            };
            match cluster.push(id, &body).await {
                Err(e) => unavailable(e),
                Ok(PushOutcome::Gone) => gone(id),
                Ok(PushOutcome::Live { seq }) => reply(
                    StatusCode::OK,
                    Some(json!({"accepted": frames, "seq": seq, "delivered": true})),
                ),
                Ok(PushOutcome::Queued { seq }) => reply(
                    StatusCode::ACCEPTED,
                    Some(json!({"accepted": frames, "seq": seq, "queued": true})),
                ),
            }
        }
        (Method::GET, None) => match cluster.session(id).await {
            Err(e) => unavailable(e),
            Ok(None) => gone(id),
            Ok(Some(s)) => reply(
                StatusCode::OK,
                Some(json!({
                    "connection_id": id,
                    "node": s.node,
                    "generation": s.gen,
                    "seq": s.seq,
                    "state_bytes": s.state.len(),
                })),
            ),
        },
        (Method::DELETE, None) => {
            let timeout = drain_timeout(&req).as_millis() as u64;
            match cluster.close_remote(id, timeout).await {
                Err(e) => unavailable(e),
                Ok(None) => gone(id),
                Ok(Some(true)) => reply(StatusCode::NO_CONTENT, None),
                Ok(Some(false)) => error(
                    StatusCode::CONFLICT,
                    "no node holds the connection now (detached); it ends with its resume window",
                ),
            }
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
    }
}

/// `GET /metrics`: this node's counters.
pub(crate) fn metrics(inner: &Arc<RelayInner>) -> Reply {
    let Some(c) = &inner.cluster else {
        return reply(
            StatusCode::OK,
            Some(
                json!({"connections": inner.conns.lock().unwrap_or_else(|e| e.into_inner()).len()}),
            ),
        );
    };
    let m = &c.metrics;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    reply(
        StatusCode::OK,
        Some(json!({
            "node": c.node(),
            "redis_up": c.is_up(),
            "connections": c.local_connections(),
            "pushes_local": n(&m.pushes_local),
            "pushes_routed": n(&m.pushes_routed),
            "pushes_queued": n(&m.pushes_queued),
            "pushes_delivered": n(&m.pushes_delivered),
            "pushes_refused": n(&m.pushes_refused),
            "replays": n(&m.replays),
            "resumes": n(&m.resumes),
            "snapshots": n(&m.snapshots),
            "moved_out": n(&m.moved_out),
        })),
    )
}
