//! Sessions that outlive their node (SPEC §11.4, §15.6): the relay's
//! [`SessionStore`](asp_async::SessionStore) keeps each connection's session snapshot in its
//! Redis hash, and a node that receives a RESUME for a session another node held resumes it
//! from there; a draining node moves its sessions to the others.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use asp_async::{BoxFuture, ServerConnection};
use asp_proto::{Bytes, ErrorCode, Snapshot};

use super::Cluster;
use crate::{RelayConn, RelayInner};

/// The cluster as the relay server's session store.
pub(crate) struct Store(pub(crate) Arc<Cluster>);

impl asp_async::SessionStore for Store {
    fn store(&self, conn: ServerConnection, snapshot: Snapshot) {
        // Called with the connection locked, so this is the last push the snapshot holds.
        let applied = self.0.applied(conn.id());
        let cluster = self.0.clone();
        tokio::spawn(async move {
            let cid = conn.id().to_owned();
            match cluster.store_snapshot(&cid, &snapshot, applied).await {
                Ok(true) => {}
                Ok(false) if cluster.applied(&cid).is_some() => {
                    // A newer generation holds the session: the client resumed on another
                    // node, so this transport is stale (fencing, SPEC §15.6).
                    tracing::warn!(connection = %cid, "session claimed by another node: letting go");
                    cluster.release(&cid);
                    conn.detach();
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(connection = %cid, error = %e, "storing the session failed")
                }
            }
            // Stored or not, the output goes on (SPEC §15.6: Redis unreachable must not
            // stall clients; a resume elsewhere of unstored output fails cleanly).
            conn.persisted(snapshot.mark);
        });
    }

    fn load(&self, token: Bytes) -> BoxFuture<'static, Option<Bytes>> {
        let cluster = self.0.clone();
        Box::pin(async move { cluster.load(&token).await })
    }
}

/// A session resumed here from another node's snapshot has just been adopted (detached, the
/// RESUME about to be answered): own it, take its state blob, and end the invocations its
/// old node was running — their function calls died with that node — with a retryable
/// `UNAVAILABLE` (SPEC §15.6). Pushes queued meanwhile follow once it is attached.
pub(crate) fn adopted(inner: &Arc<RelayInner>, cluster: &Arc<Cluster>, rc: &Arc<RelayConn>) {
    let cid = rc.handle.id().to_owned();
    let Some(state) = cluster.register_restored(&cid) else {
        tracing::warn!(connection = %cid, "restored session without a claim");
        return;
    };
    *rc.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    rc.handle.with(|l| {
        let ids: Vec<_> = l
            .core()
            .in_flight_ids()
            .filter(|id| id.is_client())
            .collect();
        for id in ids {
            let _ = l.fail(
                id,
                ErrorCode::UNAVAILABLE,
                "the relay node running this invocation was lost; retry (SPEC §15.6)",
                true,
            );
        }
    });
    cluster.catch_up_when_attached(inner, &cid, rc);
}

/// Drain (SPEC §15.6): hand every connection of this node to the other nodes. A connection
/// is moved once it has nothing in flight (or when `timeout` has passed): its final snapshot
/// is stored, this node stops holding it, and its transport ends without ending the session
/// (a transport loss, §11.3), so the client resumes through the load balancer on another
/// node. Pushes meanwhile wait in the outbox; none is lost.
pub(crate) async fn drain(inner: &Arc<RelayInner>, cluster: &Arc<Cluster>, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let conns: Vec<Arc<RelayConn>> = inner
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let late = tokio::time::Instant::now() >= deadline;
        let mut left = 0;
        for rc in conns {
            let cid = rc.handle.id().to_owned();
            if cluster.applied(&cid).is_none() {
                continue; // not (or no longer) held here
            }
            let ready = rc.handle.with(|l| {
                if !l.core().session().is_some_and(|s| s.resumable) {
                    // Cannot move: the shutdown's GOAWAY (SPEC §6.5) ends it.
                    return None;
                }
                let busy = l.core().in_flight() > 0;
                let open = matches!(
                    l.core().state(),
                    asp_proto::State::Open | asp_proto::State::Draining
                );
                Some(open && (!busy || late))
            });
            match ready {
                Some(Some(true)) => {}
                Some(Some(false)) => {
                    left += 1;
                    continue;
                }
                _ => continue,
            }
            // The transport ends first, so nothing more reaches the client: the final
            // snapshot then covers everything it got (a snapshot stored meanwhile, which the
            // client may resume from if it is quick, covers all that was sent before it).
            rc.handle.detach();
            let snap = rc
                .handle
                .with(|l| l.core().snapshot().ok().map(|s| (s, cluster.applied(&cid))));
            let Some(Some((snap, applied))) = snap else {
                cluster.release(&cid);
                continue;
            };
            match cluster.store_snapshot(&cid, &snap, applied).await {
                Ok(true) => {
                    cluster.release(&cid);
                    cluster.metrics.moved_out.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => cluster.release(&cid),
                Err(e) => {
                    // The last stored snapshot still covers what the client got.
                    tracing::warn!(connection = %cid, error = %e, "drain: storing the session failed");
                    cluster.release(&cid);
                }
            }
        }
        if left == 0 || late {
            return;
        }
        // Bounded: until every connection is idle or the drain timeout.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
