//! Relay cluster on Redis (SPEC §15.6): many relay nodes, a push accepted by any node reaches
//! the node that holds the connection.
//!
//! Per connection (all under the hash tag `{cid}`):
//! - `asp:{cid}:s` HASH: `node`, `gen` (fencing generation), `epoch`, `seq` (last pushed),
//!   `st` (state blob); TTL = the resume window, refreshed by the owner while it holds the
//!   socket, so a killed node's sessions expire by themselves.
//! - `asp:{cid}:o` STREAM: the outbox, entry id = `seq`, bounded in length and by the window.
//! - `asp:{cid}:p` channel: live delivery `seq|body`, subscribed by the owner only, so the
//!   subscription *is* the ownership record: it vanishes with the owner's Redis connection.
//!
//! A push is one Lua call (`scripts::PUSH`) that answers 200 (owner subscribed), 202
//! (queued in the outbox) or 410 (no session). The owner applies pushes in `seq` order: a
//! gap (a lost message) is filled from the outbox, duplicates are dropped.

pub(crate) mod admin;
mod connection;
mod scripts;
pub(crate) mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use asp_proto::Bytes;
use redis::{AsyncCommands, Script};
use tokio::sync::mpsc;

use connection::{io, Delivery, Redis, Target};

use crate::RelayInner;

/// How a push through the cluster ended (SPEC §15.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The owning node is subscribed: delivered live (HTTP 200).
    Live {
        /// The push's sequence number in the connection's outbox.
        seq: u64,
    },
    /// Nobody holds the socket now; kept in the outbox for a resume (HTTP 202).
    Queued {
        /// The push's sequence number in the connection's outbox.
        seq: u64,
    },
    /// No such session (HTTP 410).
    Gone,
}

/// Per-node counters (`GET /metrics` on the admin API).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Pushes this node accepted whose connection it holds.
    pub pushes_local: AtomicU64,
    /// Pushes this node accepted for a connection on another node (routed via Redis).
    pub pushes_routed: AtomicU64,
    /// Pushes answered 202 (queued for a resume).
    pub pushes_queued: AtomicU64,
    /// Pushes applied to a connection held here (from the channel or the outbox).
    pub pushes_delivered: AtomicU64,
    /// Pushes read back from the outbox to fill a gap (replays).
    pub replays: AtomicU64,
    /// Pushes the owner could not apply (the connection refused them, see §15.5's 409).
    pub pushes_refused: AtomicU64,
    /// Sessions another node held that resumed here, from their snapshot (SPEC §15.6).
    pub resumes: AtomicU64,
    /// Session snapshots stored (SPEC §11.4).
    pub snapshots: AtomicU64,
    /// Sessions handed to other nodes by a drain (SPEC §15.6).
    pub moved_out: AtomicU64,
}

struct Local {
    /// A push arrived while the connection was detached (SPEC §11): apply from the outbox
    /// once it is back.
    pending: bool,
    gen: u64,
    last_seq: u64,
    epoch: u64,
    /// `last_seq` when this node took the session: what a snapshot taken before the
    /// registration completed contains.
    first_seq: u64,
    /// The token index key (`asp:t:{sha256(token)}`), once written.
    token_key: Option<String>,
}

/// `RESUME_CLAIM`'s answer: `(gen, snap, applied, st, epoch)`.
type ClaimReply = (u64, Vec<u8>, u64, Vec<u8>, u64);

/// What a resume claim read for a session this node is adopting (SPEC §15.6).
struct Adopted {
    gen: u64,
    applied: u64,
    state: Bytes,
    epoch: u64,
    token_key: String,
}

enum SubCmd {
    Sub(String),
    Unsub(String),
}

/// This node's membership in a relay cluster.
pub struct Cluster {
    node: String,
    redis: Redis,
    target: Target,
    ttl: Duration,
    outbox_max: usize,
    local: Mutex<HashMap<String, Local>>,
    subs: mpsc::UnboundedSender<SubCmd>,
    subs_rx: Mutex<Option<mpsc::UnboundedReceiver<SubCmd>>>,
    up: AtomicBool,
    /// Woken whenever a connection's registration completes.
    registered: tokio::sync::Notify,
    adopting: Mutex<HashMap<String, Adopted>>,
    /// Counters of this node.
    pub metrics: Metrics,
    snapshot: Script,
    resume_claim: Script,
    claim: Script,
    push: Script,
    write_state: Script,
    end: Script,
    refresh: Script,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.node).finish()
    }
}

fn session_key(cid: &str) -> String {
    format!("asp:{{{cid}}}:s")
}
fn outbox_key(cid: &str) -> String {
    format!("asp:{{{cid}}}:o")
}
fn channel(cid: &str) -> String {
    format!("asp:{{{cid}}}:p")
}

/// The token index key: a resume token is a secret (SPEC §13.1), so Redis holds its
/// SHA-256, never the token.
fn token_key(token: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut k = String::with_capacity(6 + 64);
    k.push_str("asp:t:");
    for b in d.as_ref() {
        k.push_str(&format!("{b:02x}"));
    }
    k
}

impl Cluster {
    /// Connects to Redis at `url` as node `node`: one server (`redis://…`) or, with the
    /// `cluster` feature, a Redis Cluster (`redis+cluster://h1:p1,h2:p2`). `ttl` is how long
    /// a session outlives its owner (the resume window); `outbox_max` bounds each
    /// connection's outbox.
    pub async fn connect(
        url: &str,
        node: String,
        ttl: Duration,
        outbox_max: usize,
    ) -> std::io::Result<Arc<Cluster>> {
        let target = Target::parse(url)?;
        let redis = target.connect().await?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Arc::new(Cluster {
            node,
            redis,
            target,
            ttl,
            outbox_max,
            local: Mutex::new(HashMap::new()),
            subs: tx,
            subs_rx: Mutex::new(Some(rx)),
            up: AtomicBool::new(false),
            registered: tokio::sync::Notify::new(),
            adopting: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            snapshot: Script::new(scripts::SNAPSHOT),
            resume_claim: Script::new(scripts::RESUME_CLAIM),
            claim: Script::new(scripts::CLAIM),
            push: Script::new(scripts::PUSH),
            write_state: Script::new(scripts::WRITE_STATE),
            end: Script::new(scripts::END),
            refresh: Script::new(scripts::REFRESH),
        }))
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether the live-delivery subscription is up now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Connections this node holds.
    pub fn local_connections(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Local>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims session `cid` for this node: a new generation that fences off any earlier
    /// owner (SPEC §15.6). Returns the generation.
    pub async fn claim(&self, cid: &str) -> std::io::Result<u64> {
        let epoch: u64 = rand_u64();
        let gen: u64 = self
            .claim
            .key(session_key(cid))
            .arg(&self.node)
            .arg(self.ttl.as_millis() as u64)
            .arg(epoch)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(io)?;
        Ok(gen)
    }

    /// A connection opened here: claim its session and subscribe to its channel.
    pub(crate) async fn register(&self, cid: &str) -> std::io::Result<u64> {
        let gen = self.claim(cid).await?;
        let mut r = self.redis.clone();
        let (epoch, seq): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(session_key(cid))
            .arg("epoch")
            .arg("seq")
            .query_async(&mut r)
            .await
            .map_err(io)?;
        self.lock().insert(
            cid.to_owned(),
            Local {
                pending: false,
                gen,
                last_seq: seq.unwrap_or(0),
                epoch: epoch.unwrap_or(0),
                first_seq: seq.unwrap_or(0),
                token_key: None,
            },
        );
        self.registered.notify_waiters();
        let _ = self.subs.send(SubCmd::Sub(cid.to_owned()));
        Ok(gen)
    }

    /// A session another node held, adopted here from its snapshot (`load`): own it at the
    /// generation the resume claim took, from the last push its snapshot contains. Returns
    /// its state blob. `None` if this node did not load it.
    pub(crate) fn register_restored(&self, cid: &str) -> Option<Bytes> {
        let a = self
            .adopting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(cid)?;
        self.lock().insert(
            cid.to_owned(),
            Local {
                pending: false,
                gen: a.gen,
                last_seq: a.applied,
                epoch: a.epoch,
                first_seq: a.applied,
                token_key: Some(a.token_key),
            },
        );
        self.registered.notify_waiters();
        let _ = self.subs.send(SubCmd::Sub(cid.to_owned()));
        self.metrics.resumes.fetch_add(1, Ordering::Relaxed);
        Some(a.state)
    }

    /// SPEC §15.6: a RESUME for a session this node does not hold. Finds it by its token,
    /// claims it (a new generation: the old owner, if alive, is fenced off) and returns its
    /// snapshot for the relay to resume.
    pub(crate) async fn load(&self, token: &[u8]) -> Option<Bytes> {
        let key = token_key(token);
        let mut r = self.redis.clone();
        let cid: Option<String> = r.get(&key).await.ok()?;
        let cid = cid?;
        let v: Option<ClaimReply> = self
            .resume_claim
            .key(session_key(&cid))
            .arg(&self.node)
            .arg(self.ttl.as_millis() as u64)
            .invoke_async(&mut r)
            .await
            .map_err(|e| tracing::warn!(connection = %cid, error = %e, "resume claim failed"))
            .ok()?;
        let (gen, snap, applied, state, epoch) = v?;
        if snap.is_empty() {
            return None;
        }
        self.adopting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                cid,
                Adopted {
                    gen,
                    applied,
                    state: Bytes::from(state),
                    epoch,
                    token_key: key,
                },
            );
        Some(Bytes::from(snap))
    }

    /// The last push applied to `cid`'s connection: read under the connection's lock, with a
    /// snapshot of it (`None` before its registration completed).
    pub(crate) fn applied(&self, cid: &str) -> Option<u64> {
        self.lock().get(cid).map(|l| l.last_seq)
    }

    /// Waits (briefly) for `cid`'s registration: `(gen, applied, token index written)`.
    async fn registration(&self, cid: &str, applied: Option<u64>) -> Option<(u64, u64, bool)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let woken = self.registered.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(l) = self.lock().get(cid) {
                return Some((l.gen, applied.unwrap_or(l.first_seq), l.token_key.is_some()));
            }
            if !self.is_up() {
                return None;
            }
            tokio::time::timeout_at(deadline, woken).await.ok()?;
        }
    }

    /// Stores a snapshot of `cid`'s session at its generation, with the last push it
    /// contains (SPEC §11.4, §15.6). `Ok(false)`: a newer owner holds the session, or this
    /// node does not (yet).
    pub(crate) async fn store_snapshot(
        &self,
        cid: &str,
        snap: &asp_proto::Snapshot,
        applied: Option<u64>,
    ) -> std::io::Result<bool> {
        let Some((gen, applied, indexed)) = self.registration(cid, applied).await else {
            return Ok(false);
        };
        let mut r = self.redis.clone();
        if !indexed {
            let key = token_key(&snap.token);
            let () = redis::cmd("SET")
                .arg(&key)
                .arg(cid)
                .arg("PX")
                .arg(self.ttl.as_millis() as u64)
                .query_async(&mut r)
                .await
                .map_err(io)?;
            if let Some(l) = self.lock().get_mut(cid) {
                l.token_key = Some(key);
            }
        }
        let n: i64 = self
            .snapshot
            .key(session_key(cid))
            .arg(gen)
            .arg(&snap.bytes[..])
            .arg(applied)
            .invoke_async(&mut r)
            .await
            .map_err(io)?;
        if n == 1 {
            self.metrics.snapshots.fetch_add(1, Ordering::Relaxed);
        }
        Ok(n == 1)
    }

    /// This node stops holding `cid` without ending its session (a drain moved it, or a
    /// newer owner claimed it): no delete when its connection closes here.
    pub(crate) fn release(&self, cid: &str) {
        if self.lock().remove(cid).is_some() {
            let _ = self.subs.send(SubCmd::Unsub(cid.to_owned()));
        }
    }

    /// The connection's session ended here: unsubscribe and delete it (fenced).
    pub(crate) async fn unregister(&self, cid: &str) {
        let Some(local) = self.lock().remove(cid) else {
            return;
        };
        let _ = self.subs.send(SubCmd::Unsub(cid.to_owned()));
        let mut r = self.redis.clone();
        let ended: Result<i64, _> = self
            .end
            .key(session_key(cid))
            .key(outbox_key(cid))
            .arg(local.gen)
            .invoke_async(&mut r)
            .await;
        match ended {
            Err(e) => {
                tracing::warn!(connection = cid, error = %e, "ending the session in redis failed")
            }
            Ok(1) => {
                if let Some(key) = local.token_key {
                    let _: redis::RedisResult<i64> = r.del(key).await;
                }
            }
            Ok(_) => {}
        }
    }

    /// One push (SPEC §15.5), from any node.
    pub async fn push(&self, cid: &str, body: &[u8]) -> std::io::Result<PushOutcome> {
        let (seq, n): (i64, i64) = self
            .push
            .key(session_key(cid))
            .key(outbox_key(cid))
            .key(channel(cid))
            .arg(body)
            .arg(self.outbox_max)
            .arg(self.ttl.as_millis() as u64)
            .arg(self.redis.publish_command())
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(io)?;
        if seq < 0 {
            return Ok(PushOutcome::Gone);
        }
        let local = self.lock().contains_key(cid);
        if local {
            self.metrics.pushes_local.fetch_add(1, Ordering::Relaxed);
        } else {
            self.metrics.pushes_routed.fetch_add(1, Ordering::Relaxed);
        }
        let seq = seq as u64;
        if n > 0 {
            Ok(PushOutcome::Live { seq })
        } else {
            self.metrics.pushes_queued.fetch_add(1, Ordering::Relaxed);
            Ok(PushOutcome::Queued { seq })
        }
    }

    /// Writes the state blob of `cid` at generation `gen`; `false` if a newer owner holds
    /// the session (fencing, SPEC §15.6) or it is gone.
    pub async fn write_state_at(&self, cid: &str, gen: u64, blob: &[u8]) -> std::io::Result<bool> {
        let n: i64 = self
            .write_state
            .key(session_key(cid))
            .arg(gen)
            .arg(blob)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(io)?;
        Ok(n == 1)
    }

    /// Writes the state blob of a connection held here, at its generation.
    pub(crate) async fn write_state(&self, cid: &str, blob: Bytes) {
        let Some(gen) = self.lock().get(cid).map(|l| l.gen) else {
            return;
        };
        match self.write_state_at(cid, gen, &blob).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(connection = cid, gen, "state write fenced off"),
            Err(e) => tracing::warn!(connection = cid, error = %e, "state write failed"),
        }
    }

    /// The session as Redis holds it: `(node, gen, seq, state)`, `None` if gone.
    pub async fn session(&self, cid: &str) -> std::io::Result<Option<SessionInfo>> {
        let (node, gen, seq, st): (Option<String>, Option<u64>, Option<u64>, Option<Vec<u8>>) =
            redis::cmd("HMGET")
                .arg(session_key(cid))
                .arg("node")
                .arg("gen")
                .arg("seq")
                .arg("st")
                .query_async(&mut self.redis.clone())
                .await
                .map_err(io)?;
        Ok(node.map(|node| SessionInfo {
            node,
            gen: gen.unwrap_or(0),
            seq: seq.unwrap_or(0),
            state: Bytes::from(st.unwrap_or_default()),
        }))
    }

    /// How many nodes receive `cid`'s live pushes now (its owner once it has subscribed):
    /// `PUBSUB NUMSUB` (`SHARDNUMSUB` on a Redis Cluster) of its channel.
    pub async fn subscribers(&self, cid: &str) -> std::io::Result<u64> {
        self.redis.subscribers(&channel(cid)).await
    }

    /// Asks the owner of `cid` to drain it (GOAWAY, SPEC §6.5): `None` if there is no
    /// session, `Some(false)` if no node holds it now.
    pub(crate) async fn close_remote(
        &self,
        cid: &str,
        timeout_ms: u64,
    ) -> std::io::Result<Option<bool>> {
        let mut r = self.redis.clone();
        let exists: bool = r.exists(session_key(cid)).await.map_err(io)?;
        if !exists {
            return Ok(None);
        }
        // seq 0 is the control message "drain" (pushes count from 1).
        let n: i64 = redis::cmd(self.redis.publish_command())
            .arg(channel(cid))
            .arg(format!("0|{timeout_ms}"))
            .query_async(&mut r)
            .await
            .map_err(io)?;
        Ok(Some(n > 0))
    }

    /// Starts the node's background tasks: the subscription (with reconnect) and the lease
    /// refresh.
    pub(crate) fn start(self: &Arc<Self>, inner: Weak<RelayInner>) {
        let rx = self
            .subs_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(rx) = rx {
            tokio::spawn(subscriber(Arc::downgrade(self), inner.clone(), rx));
        }
        tokio::spawn(refresher(Arc::downgrade(self), inner));
    }

    /// Applies pushes `seq` of `cid` in order: a gap is read from the outbox first,
    /// duplicates are dropped.
    async fn on_message(&self, inner: &Arc<RelayInner>, cid: &str, seq: u64, body: Bytes) {
        if seq == 0 {
            let ms = std::str::from_utf8(&body)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(30_000);
            if let Some(rc) = inner.conn(cid) {
                rc.handle.with(|l| {
                    l.goaway(
                        Some(asp_proto::frame::Text::from_static(
                            "closed through the relay's admin API",
                        )),
                        Duration::from_millis(ms),
                    );
                });
            }
            return;
        }
        let last = self.lock().get(cid).map(|l| l.last_seq);
        let Some(last) = last else { return };
        if seq <= last {
            return;
        }
        if seq > last + 1 {
            self.catch_up(inner, cid, Some(seq - 1)).await;
        }
        self.apply(inner, cid, seq, body);
    }

    /// Reads the outbox after the last applied push (up to `until`) and applies it.
    async fn catch_up(&self, inner: &Arc<RelayInner>, cid: &str, until: Option<u64>) {
        let Some(last) = self.lock().get(cid).map(|l| l.last_seq) else {
            return;
        };
        let end = until.map_or("+".to_owned(), |u| format!("{u}-0"));
        let r: redis::RedisResult<redis::streams::StreamRangeReply> = self
            .redis
            .clone()
            .xrange(outbox_key(cid), format!("({last}-0"), end)
            .await;
        let Ok(reply) = r else {
            return;
        };
        for entry in reply.ids {
            let Some(seq) = entry.id.split('-').next().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let body: Option<Vec<u8>> = entry.get("f");
            self.metrics.replays.fetch_add(1, Ordering::Relaxed);
            self.apply(inner, cid, seq, Bytes::from(body.unwrap_or_default()));
        }
    }

    fn apply(&self, inner: &Arc<RelayInner>, cid: &str, seq: u64, body: Bytes) {
        let Some(rc) = inner.conn(cid) else { return };
        // A detached (or resuming, or not yet open) connection takes its pushes once it has
        // a transport: they stay in the outbox until then.
        let detached = rc.handle.with(|l| {
            matches!(
                l.core().state(),
                asp_proto::State::Detached
                    | asp_proto::State::Resuming
                    | asp_proto::State::Handshaking
            )
        });
        {
            let mut l = self.lock();
            let Some(local) = l.get_mut(cid) else { return };
            if seq <= local.last_seq {
                return;
            }
            if detached != Some(false) || local.pending && seq > local.last_seq + 1 {
                if !local.pending {
                    local.pending = true;
                    self.catch_up_when_attached(inner, cid, &rc);
                }
                return;
            }
        }
        // `last_seq` moves with the frames, under the connection's lock, so a snapshot
        // (SPEC §11.4) names exactly the pushes it contains.
        let consume = || match self.lock().get_mut(cid) {
            Some(local) if seq > local.last_seq => {
                local.last_seq = seq;
                self.metrics
                    .pushes_delivered
                    .fetch_add(1, Ordering::Relaxed);
                true
            }
            _ => false,
        };
        if let Err(e) = crate::admin::deliver(inner, rc, body, consume) {
            self.metrics.pushes_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(connection = cid, seq, error = %e, "push refused by the connection");
        }
    }
}

impl Cluster {
    /// Pushes that waited while the connection was detached (or being resumed here) are
    /// applied as soon as it has a transport again.
    pub(crate) fn catch_up_when_attached(
        &self,
        inner: &Arc<RelayInner>,
        cid: &str,
        rc: &Arc<crate::RelayConn>,
    ) {
        let Some(me) = inner.cluster.clone() else {
            return;
        };
        let (inner, cid, handle) = (Arc::downgrade(inner), cid.to_owned(), rc.handle.clone());
        tokio::spawn(async move {
            if !handle.attached().await {
                return;
            }
            let Some(inner) = inner.upgrade() else { return };
            if let Some(l) = me.lock().get_mut(&cid) {
                l.pending = false;
            }
            me.catch_up(&inner, &cid, None).await;
        });
    }
}

/// A session as the cluster holds it.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    /// The owning node (the last to claim it).
    pub node: String,
    /// Its fencing generation.
    pub gen: u64,
    /// The last push's sequence number.
    pub seq: u64,
    /// The state blob (SPEC §15.4).
    pub state: Bytes,
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() >> 1
}

/// Live delivery: one pub/sub connection per node, subscribed to the channel of every
/// connection it holds. When Redis goes away the sockets stay up; on reconnect the node
/// re-subscribes, re-creates sessions Redis lost, and catches up from the outboxes.
async fn subscriber(
    cluster: Weak<Cluster>,
    inner: Weak<RelayInner>,
    mut rx: mpsc::UnboundedReceiver<SubCmd>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let sub = match c.target.subscription().await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::debug!(error = %e, "redis pub/sub connect failed");
                c.up.store(false, Ordering::Release);
                drop(c);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let (mut sink, mut stream) = (sub.sink, sub.stream);
        let cids: Vec<String> = {
            let l = c.lock();
            l.keys().cloned().collect()
        };
        let mut ok = true;
        for cid in &cids {
            if sink.subscribe(&channel(cid)).await.is_err() {
                ok = false;
                break;
            }
        }
        if !ok {
            continue;
        }
        backoff = Duration::from_millis(50);
        let was_up = c.up.swap(true, Ordering::AcqRel);
        if !was_up {
            if let Some(inner) = inner.upgrade() {
                // Continuity: sessions Redis lost (a restart without persistence) are
                // written again by their owner; pushes queued meanwhile are applied.
                refresh_all(&c, Some(&inner)).await;
                for cid in &cids {
                    c.catch_up(&inner, cid, None).await;
                }
            }
        }
        drop(c);
        loop {
            tokio::select! {
                delivery = stream.next() => {
                    let (Some(c), Some(inner)) = (cluster.upgrade(), inner.upgrade()) else { return };
                    let msg = match delivery {
                        Delivery::Message(msg) => msg,
                        Delivery::Lost => break,
                        #[cfg(feature = "cluster")]
                        Delivery::Lagged => {
                            let cids: Vec<String> = c.lock().keys().cloned().collect();
                            for cid in &cids {
                                c.catch_up(&inner, cid, None).await;
                            }
                            continue;
                        }
                    };
                    let name = msg.get_channel_name();
                    let Some(cid) = name.strip_prefix("asp:{").and_then(|s| s.strip_suffix("}:p")) else { continue };
                    let payload = msg.get_payload_bytes();
                    let Some(bar) = payload.iter().position(|b| *b == b'|') else { continue };
                    let Some(seq) = std::str::from_utf8(&payload[..bar]).ok().and_then(|s| s.parse().ok()) else { continue };
                    let body = Bytes::copy_from_slice(&payload[bar + 1..]);
                    c.on_message(&inner, cid, seq, body).await;
                }
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { return };
                    let r = match cmd {
                        SubCmd::Sub(cid) => {
                            let r = sink.subscribe(&channel(&cid)).await;
                            // Pushes that came between the claim and the subscription were
                            // queued (202): apply them now, not at the next push.
                            if let (true, Some(c), Some(inner)) = (r.is_ok(), cluster.upgrade(), inner.upgrade()) {
                                c.catch_up(&inner, &cid, None).await;
                            }
                            r
                        }
                        SubCmd::Unsub(cid) => sink.unsubscribe(&channel(&cid)).await,
                    };
                    if r.is_err() { break; }
                }
            }
        }
        if let Some(c) = cluster.upgrade() {
            c.up.store(false, Ordering::Release);
            tracing::warn!(node = %c.node, "redis pub/sub lost; reconnecting");
        }
    }
}

async fn refresh_all(c: &Cluster, inner: Option<&Arc<RelayInner>>) {
    let sessions: Vec<(String, u64, u64, u64, Option<String>)> = c
        .lock()
        .iter()
        .map(|(k, l)| (k.clone(), l.gen, l.epoch, l.last_seq, l.token_key.clone()))
        .collect();
    let ttl = c.ttl.as_millis() as u64;
    let mut r = c.redis.clone();
    let held = sessions.len();
    let _: redis::RedisResult<()> = redis::cmd("SET")
        .arg(format!("asp:node:{}", c.node))
        .arg(held)
        .arg("PX")
        .arg(ttl)
        .query_async(&mut r)
        .await;
    for (cid, gen, epoch, seq, token_key) in sessions {
        // Re-created after a Redis restart with the state this node holds.
        let st = inner
            .and_then(|i| i.conn(&cid))
            .map(|rc| rc.state.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default();
        let res: redis::RedisResult<i64> = c
            .refresh
            .key(session_key(&cid))
            .key(outbox_key(&cid))
            .arg(gen)
            .arg(ttl)
            .arg(&c.node)
            .arg(&st[..])
            .arg(epoch)
            .arg(seq)
            .invoke_async(&mut r)
            .await;
        match res {
            Ok(0) => tracing::warn!(connection = %cid, gen, "a newer owner claimed this session"),
            // The token index lives as long as the session (SPEC §15.6).
            Ok(1) => {
                if let Some(key) = token_key {
                    let _: redis::RedisResult<i64> = r.pexpire(key, ttl as i64).await;
                }
            }
            _ => {}
        }
    }
}

/// Keeps this node's sessions alive in Redis while it holds their sockets.
async fn refresher(cluster: Weak<Cluster>, inner: Weak<RelayInner>) {
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let period = c.ttl / 3;
        let inner = inner.upgrade();
        refresh_all(&c, inner.as_ref()).await;
        if let Some(inner) = &inner {
            let pending: Vec<String> = {
                let mut l = c.lock();
                l.iter_mut()
                    .filter(|(_, v)| v.pending)
                    .map(|(k, v)| {
                        v.pending = false;
                        k.clone()
                    })
                    .collect()
            };
            for cid in pending {
                c.catch_up(inner, &cid, None).await;
            }
        }
        drop(inner);
        drop(c);
        tokio::time::sleep(period.max(Duration::from_millis(100))).await;
    }
}
