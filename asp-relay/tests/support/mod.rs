//! What the relay cluster tests share (SPEC §15.6): real `redis-server`s started here on free
//! loopback ports (one server, or a Redis Cluster of three masters), relay nodes in this
//! process or as `asp-relay` processes, the admin API, a load balancer and a function.
//! Each test binary uses a part of it.
#![allow(dead_code)]

mod middlemen;
mod processes;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use asp_proto::codec::encode;
use asp_proto::frame::{Frame, Text, ToolDef, ToolOp};
use asp_relay::cluster::Cluster;
use asp_relay::{Relay, RelayConfig};
use asp_tokio::{Client, ToolChange};
use bytes::BytesMut;
use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use middlemen::*;
pub use processes::*;

pub const SECRET: &str = "cluster-secret";

pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Polls `check` until it holds (bounded by LIMIT): for conditions in another process
/// (Redis, a relay) that give no signal of their own.
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A relay node in this process.
pub async fn node(redis: &impl Redis, id: &str, window: Duration) -> Relay {
    let mut c = RelayConfig::new("http://127.0.0.1:9/".parse().unwrap());
    c.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    c.admin_secret = Some(SECRET.into());
    c.redis = Some(redis.url());
    c.node_id = Some(id.into());
    c.asp.resume_window = window;
    Relay::start(c).await.expect("relay node starts")
}

/// Two relay nodes in this process, `node-a` and `node-b`, with node A subscribed: (A, B,
/// A's admin address, B's admin address).
pub async fn two_nodes(
    redis: &impl Redis,
    window: Duration,
) -> (Relay, Relay, SocketAddr, SocketAddr) {
    let a = node(redis, "node-a", window).await;
    let b = node(redis, "node-b", window).await;
    let (aa, ba) = (a.admin_addr().unwrap(), b.admin_addr().unwrap());
    subscribed(aa).await;
    (a, b, aa, ba)
}

/// A relay node as an `asp-relay` process: (process, client url, admin address).
pub fn node_process(redis: &impl Redis, id: &str, window_s: &str) -> (Killed, String, SocketAddr) {
    node_process_to(redis, id, window_s, "http://127.0.0.1:9/")
}

/// [`node_process`] forwarding invocations to `upstream`.
pub fn node_process_to(
    redis: &impl Redis,
    id: &str,
    window_s: &str,
    upstream: &str,
) -> (Killed, String, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_asp-relay"))
        .args(["--upstream", upstream, "--listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0", "--redis", &redis.url()])
        .args(["--node-id", id, "--resume-window", window_s])
        .env("ASP_RELAY_ADMIN_SECRET", SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn asp-relay");
    let (url, admin) = listening(&mut child);
    (Killed(child), url, admin.expect("admin address"))
}

/// Two nodes as `asp-relay` processes behind a [`balancer`].
pub struct BalancedProcesses {
    /// `node-a`, where new connections go while it accepts them.
    pub a: Killed,
    /// Node A's client URL.
    pub a_url: String,
    /// `node-b`.
    pub b: Killed,
    /// Node B's admin address.
    pub ba: SocketAddr,
    /// The client URL through the balancer.
    pub url: String,
}

/// `node-a` and `node-b` as processes (resume window 30 s) forwarding to `upstream`, both
/// subscribed, behind a [`balancer`] that prefers A.
pub async fn balanced_processes(redis: &impl Redis, upstream: &str) -> BalancedProcesses {
    let (a, a_url, aa) = node_process_to(redis, "node-a", "30", upstream);
    let (b, b_url, ba) = node_process_to(redis, "node-b", "30", upstream);
    subscribed(aa).await;
    subscribed(ba).await;
    let url = balancer(vec![ws_addr(&a_url), ws_addr(&b_url)], &a_url).await;
    BalancedProcesses {
        a,
        a_url,
        b,
        ba,
        url,
    }
}

/// `tests/relay_upstream.py` through a relay (JSON bodies, `over` says how the function is
/// reached): `tokens` streams text as it comes and ends with the trailer's metrics; `count`
/// counts the calls in the connection's state.
pub async fn python_tokens_and_state(client: &Client, over: &str) {
    let mut call = client
        .invoke("tokens", &serde_json::json!({"n": 4, "prefix": "py"}))
        .expect("invoke");
    let mut chunks = Vec::new();
    within("tokens to end", async {
        while let Some(c) = call.next().await {
            chunks.push(c.as_str().expect("a text chunk").to_owned());
        }
    })
    .await;
    let done = within("completion", call.completion())
        .await
        .expect("completion");
    assert_eq!(chunks.concat(), "py0 py1 py2 py3 ");
    assert!(chunks.len() >= 2, "streamed as it came: {chunks:?}");
    assert_eq!(done.status, asp_tokio::Status::Ok);
    assert_eq!(
        done.metrics.cpu_us,
        Some(2_500),
        "X-Cpu-Time trailer {over}"
    );
    assert_eq!(done.metrics.output_tokens, Some(4));
    let count = || async {
        let mut call = client
            .invoke("count", &serde_json::json!({}))
            .expect("invoke");
        let mut text = String::new();
        while let Some(c) = within("count", call.next()).await {
            text.push_str(&String::from_utf8_lossy(&c.data));
        }
        text
    };
    let (t1, t2) = (count().await, count().await);
    assert_eq!((t1.as_str(), t2.as_str()), ("calls=1", "calls=2"));
}

/// One admin API call (HTTP/1.1, `Connection: close`): (status, JSON body or Null).
pub async fn admin(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {SECRET}\r\nContent-Type: application/vnd.asp.frames\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

/// A push body: TOOL_DEF add `name`.
pub fn tool(name: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode(
        &Frame::ToolDef(ToolDef {
            op: ToolOp::Add,
            name: Text::from(name),
            description: Text::from("pushed"),
            input_schema: None,
            annotations: None,
        }),
        &mut b,
    );
    b.to_vec()
}

pub async fn push(addr: SocketAddr, cid: &str, name: &str) -> (u16, Value) {
    admin(
        addr,
        "POST",
        &format!("/connections/{cid}/frames"),
        &tool(name),
    )
    .await
}

pub fn conn_id(client: &Client) -> String {
    client.session().unwrap().connection_id.to_string()
}

/// The next tool the client was given.
pub async fn next_added(changes: &mut asp_async::ToolChanges) -> String {
    match within("a tool change", changes.next()).await {
        Some(ToolChange::Added(d)) => d.name.to_string(),
        other => panic!("expected an added tool, got {other:?}"),
    }
}

/// Waits until the session of `cid` is known to the cluster with `node` as its owner.
pub async fn owned_by(addr: SocketAddr, cid: &str, node: &str) {
    until(&format!("{cid} owned by {node}"), || async {
        let (s, v) = admin(addr, "GET", &format!("/connections/{cid}"), b"").await;
        s == 200 && v["node"] == node
    })
    .await;
}

/// A client of `url` that resumes its session (SPEC §11), once the cluster names `node` its
/// owner (asked through the admin API at `via`): (client, its tool changes, connection id).
pub async fn resuming_client(
    url: &str,
    via: SocketAddr,
    node: &str,
) -> (Client, asp_async::ToolChanges, String) {
    client_owned_by(asp_tokio::client().resume(true), url, via, node).await
}

/// A client of `url` (no resume), once the cluster names `node` its owner (asked at `via`)
/// and it receives live pushes: (client, its tool changes, connection id).
pub async fn live_client(
    redis: &impl Redis,
    url: &str,
    via: SocketAddr,
    node: &str,
) -> (Client, asp_async::ToolChanges, String) {
    let (client, changes, cid) = client_owned_by(asp_tokio::client(), url, via, node).await;
    live(redis, &cid).await;
    (client, changes, cid)
}

async fn client_owned_by(
    builder: asp_tokio::ClientBuilder,
    url: &str,
    via: SocketAddr,
    node: &str,
) -> (Client, asp_async::ToolChanges, String) {
    let client = within("connect", builder.connect(url)).await.unwrap();
    let changes = client.tool_changes();
    let cid = conn_id(&client);
    owned_by(via, &cid, node).await;
    (client, changes, cid)
}

/// Pushes the tools `p{i}` for each `i` through `via`; each is taken, delivered or queued
/// (200 or 202).
pub async fn push_taken(via: SocketAddr, cid: &str, range: std::ops::Range<usize>) {
    for i in range {
        let (status, body) = push(via, cid, &format!("p{i}")).await;
        assert!(status == 200 || status == 202, "{status} {body}");
    }
}

/// The client is given the tools `p{i}` for each `i`: each once, in order.
pub async fn added_once_in_order(
    changes: &mut asp_async::ToolChanges,
    range: std::ops::Range<usize>,
) {
    for i in range {
        assert_eq!(next_added(changes).await, format!("p{i}"), "once, in order");
    }
}

/// A connection to the cluster's Redis that owns no session, to look at what the nodes wrote.
pub async fn observer(redis: &impl Redis) -> std::sync::Arc<Cluster> {
    Cluster::connect(&redis.url(), "observer".into(), LIMIT, 100)
        .await
        .unwrap()
}

/// Waits until a node receives `cid`'s live pushes (its owner subscribed to its channel):
/// from then on a push answers `200`.
pub async fn live(redis: &impl Redis, cid: &str) {
    let observer = observer(redis).await;
    until(&format!("{cid} subscribed"), || async {
        observer.subscribers(cid).await.unwrap_or(0) > 0
    })
    .await;
}

/// Waits until the node behind `addr` reports its Redis subscription up.
pub async fn subscribed(addr: SocketAddr) {
    until("redis subscription up", || async {
        admin(addr, "GET", "/metrics", b"").await.1["redis_up"] == true
    })
    .await;
}

/// Waits until Redis names `node` as the owner of `cid` (the node's own `GET` answers with
/// its local view, without `node`).
pub async fn owner_is(observer: &Cluster, cid: &str, node: &str) {
    until(&format!("{cid} owned by {node} in redis"), || async {
        observer
            .session(cid)
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.node == node)
    })
    .await;
}

/// A [`balancer_at`] in front of `nodes`: the client URL through it (the path of
/// `path_of`).
pub async fn balancer(nodes: Vec<SocketAddr>, path_of: &str) -> String {
    balancer_of(Backends::new(nodes), path_of).await
}

/// [`balancer`] in front of changeable `nodes`.
pub async fn balancer_of(nodes: Backends, path_of: &str) -> String {
    let addr = balancer_at(nodes).await;
    let path = path_of.splitn(4, '/').nth(3).unwrap_or("");
    format!("ws://{addr}/{path}")
}

/// A function behind the relays: every `/invoke` answers 200 `text/plain` at once with the
/// chunk `first`, then holds the body open until `release` is notified, then sends `last`
/// and ends (`release` never notified: the call never ends).
pub async fn function(release: std::sync::Arc<tokio::sync::Notify>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let release = release.clone();
            tokio::spawn(async move {
                // The request head and its body (Content-Length).
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body_start = loop {
                    let Ok(n) = tcp.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..body_start]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < body_start + len {
                    let Ok(n) = tcp.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let start = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nfirst\r\n";
                if tcp.write_all(start.as_bytes()).await.is_err() {
                    return;
                }
                release.notified().await;
                let _ = tcp.write_all(b"4\r\nlast\r\n0\r\n\r\n").await;
                let _ = tcp.flush().await;
            });
        }
    });
    format!("http://{addr}/")
}

/// The first chunk of `call`.
pub async fn first_chunk(call: &mut asp_async::Invocation) -> String {
    let c = within("the first chunk", call.next())
        .await
        .expect("a chunk");
    String::from_utf8_lossy(&c.data).into_owned()
}

/// Two nodes claim one session: each claim is a newer generation, and only the newest may
/// write the state blob (fencing, SPEC §15.6).
pub async fn only_the_newest_generation_writes_on(redis: &impl Redis) {
    let one = Cluster::connect(&redis.url(), "one".into(), LIMIT, 100)
        .await
        .unwrap();
    let two = Cluster::connect(&redis.url(), "two".into(), LIMIT, 100)
        .await
        .unwrap();
    let g1 = one.claim("c1").await.unwrap();
    assert!(one.write_state_at("c1", g1, b"from one").await.unwrap());
    let g2 = two.claim("c1").await.unwrap();
    assert!(g2 > g1);
    assert!(
        !one.write_state_at("c1", g1, b"stale").await.unwrap(),
        "the stale owner is fenced off"
    );
    assert!(two.write_state_at("c1", g2, b"from two").await.unwrap());
    let s = two.session("c1").await.unwrap().unwrap();
    assert_eq!((s.node.as_str(), s.gen), ("two", g2));
    assert_eq!(&s.state[..], b"from two");
    // A claim again by the first node fences the second.
    let g3 = one.claim("c1").await.unwrap();
    assert!(!two.write_state_at("c1", g2, b"stale").await.unwrap());
    assert!(one.write_state_at("c1", g3, b"again").await.unwrap());
    assert_eq!(
        &one.session("c1").await.unwrap().unwrap().state[..],
        b"again"
    );
}
