//! Relay cluster on Redis (SPEC §15.6), with a real `redis-server` started here on a free
//! loopback port (`--save '' --appendonly no`) and real relays: in this process, and as
//! `asp-relay` processes where a node must die with SIGKILL.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
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

const SECRET: &str = "cluster-secret";
const LIMIT: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Polls `check` until it holds (bounded by LIMIT): for conditions in another process
/// (Redis, a relay) that give no signal of their own.
async fn until<F, Fut>(what: &str, mut check: F)
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

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads `child`'s stdout on a thread until a line contains `marker`; returns that line.
fn wait_line(child: &mut Child, marker: &'static str) -> String {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        let mut sent = false;
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if !sent && line.contains(marker) => {
                    let _ = tx.send(line.clone());
                    sent = true;
                }
                Ok(_) => {}
            }
        }
    });
    rx.recv_timeout(LIMIT)
        .unwrap_or_else(|_| panic!("no `{marker}` line"))
}

/// A real redis-server on a free loopback port.
struct RedisServer {
    port: u16,
    child: Option<Killed>,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = RedisServer { port, child: None };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        wait_line(&mut child, "Ready to accept connections");
        self.child = Some(Killed(child));
    }

    fn kill(&mut self) {
        self.child = None;
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

/// A relay node in this process.
async fn node(redis: &RedisServer, id: &str, window: Duration) -> Relay {
    let mut c = RelayConfig::new("http://127.0.0.1:9/".parse().unwrap());
    c.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    c.admin_secret = Some(SECRET.into());
    c.redis = Some(redis.url());
    c.node_id = Some(id.into());
    c.asp.resume_window = window;
    Relay::start(c).await.expect("relay node starts")
}

/// A relay node as an `asp-relay` process: (process, client url, admin address).
fn node_process(redis: &RedisServer, id: &str, window_s: &str) -> (Killed, String, SocketAddr) {
    node_process_to(redis, id, window_s, "http://127.0.0.1:9/")
}

/// [`node_process`] forwarding invocations to `upstream`.
fn node_process_to(
    redis: &RedisServer,
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
    let line = wait_line(&mut child, "listening");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .expect("url")
        .to_owned();
    let admin = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .expect("admin address")
        .trim_end_matches(')')
        .parse()
        .unwrap();
    (Killed(child), url, admin)
}

/// One admin API call (HTTP/1.1, `Connection: close`): (status, JSON body or Null).
async fn admin(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
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
fn tool(name: &str) -> Vec<u8> {
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

async fn push(addr: SocketAddr, cid: &str, name: &str) -> (u16, Value) {
    admin(
        addr,
        "POST",
        &format!("/connections/{cid}/frames"),
        &tool(name),
    )
    .await
}

fn conn_id(client: &Client) -> String {
    client.session().unwrap().connection_id.to_string()
}

/// The next tool the client was given.
async fn next_added(changes: &mut asp_async::ToolChanges) -> String {
    match within("a tool change", changes.next()).await {
        Some(ToolChange::Added(d)) => d.name.to_string(),
        other => panic!("expected an added tool, got {other:?}"),
    }
}

/// Waits until the session of `cid` is known to the cluster with `node` as its owner.
async fn owned_by(addr: SocketAddr, cid: &str, node: &str) {
    until(&format!("{cid} owned by {node}"), || async {
        let (s, v) = admin(addr, "GET", &format!("/connections/{cid}"), b"").await;
        s == 200 && v["node"] == node
    })
    .await;
}

/// Waits until a node receives `cid`'s live pushes (its owner subscribed to its channel):
/// from then on a push answers `200`.
async fn live(redis: &RedisServer, cid: &str) {
    let observer = Cluster::connect(&redis.url(), "observer".into(), LIMIT, 100)
        .await
        .unwrap();
    until(&format!("{cid} subscribed"), || async {
        observer.subscribers(cid).await.unwrap_or(0) > 0
    })
    .await;
}

/// Waits until the node behind `addr` reports its Redis subscription up.
async fn subscribed(addr: SocketAddr) {
    until("redis subscription up", || async {
        admin(addr, "GET", "/metrics", b"").await.1["redis_up"] == true
    })
    .await;
}

/// A push through node B reaches a client on node A (200, in order); an unknown id is 410;
/// `GET` through B names A; the metrics say which node routed and which delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_through_any_node_reaches_the_connection() {
    let redis = RedisServer::start();
    let a = node(&redis, "node-a", Duration::from_secs(30)).await;
    let b = node(&redis, "node-b", Duration::from_secs(30)).await;
    let (aa, ba) = (a.admin_addr().unwrap(), b.admin_addr().unwrap());
    subscribed(aa).await;
    let client = within("connect", asp_tokio::connect(&a.url()))
        .await
        .unwrap();
    let mut changes = client.tool_changes();
    let cid = conn_id(&client);
    owned_by(ba, &cid, "node-a").await;
    live(&redis, &cid).await;

    for i in 0..10 {
        let via = if i % 2 == 0 { ba } else { aa };
        let (status, body) = push(via, &cid, &format!("p{i}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["seq"], i + 1);
        assert_eq!(body["delivered"], true);
    }
    for i in 0..10 {
        assert_eq!(next_added(&mut changes).await, format!("p{i}"), "in order");
    }
    let (status, _) = push(ba, "no-such-connection", "x").await;
    assert_eq!(status, 410);
    let (status, _) = admin(ba, "GET", "/connections/no-such-connection", b"").await;
    assert_eq!(status, 410);
    let (status, _) = admin(ba, "POST", &format!("/connections/{cid}/frames"), b"\x01").await;
    assert_eq!(status, 400, "a bad body is refused by the node that got it");

    // The counters are updated by the nodes' own tasks: wait until they have caught up with
    // what the client already saw, then check all of them.
    until("metrics caught up", || async {
        let ma = admin(aa, "GET", "/metrics", b"").await.1;
        let mb = admin(ba, "GET", "/metrics", b"").await.1;
        ma["pushes_delivered"] == 10 && mb["pushes_routed"] == 5
    })
    .await;
    let ma = admin(aa, "GET", "/metrics", b"").await.1;
    let mb = admin(ba, "GET", "/metrics", b"").await.1;
    assert_eq!(ma["node"], "node-a");
    assert_eq!(ma["connections"], 1);
    assert_eq!(ma["pushes_delivered"], 10);
    assert_eq!(ma["pushes_local"], 5);
    assert_eq!(mb["pushes_routed"], 5);
    assert_eq!(mb["connections"], 0);

    // DELETE through B drains the connection on A (GOAWAY).
    let (status, _) = admin(
        ba,
        "DELETE",
        &format!("/connections/{cid}?timeout_ms=0"),
        b"",
    )
    .await;
    assert_eq!(status, 204);
    within("closed by the owner", client.closed()).await;
    until("session ended", || async {
        push(ba, &cid, "late").await.0 == 410
    })
    .await;
}

/// The owner is killed with SIGKILL: its subscription vanishes with its Redis connection, so
/// pushes through another node answer 202 (queued in the outbox, in order) until the resume
/// window ends, then 410.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_queue_when_the_owner_dies_and_go_when_the_window_ends() {
    let redis = RedisServer::start();
    let (mut a, a_url, aa) = node_process(&redis, "node-a", "2");
    let (_b, _, ba) = node_process(&redis, "node-b", "2");
    subscribed(aa).await;
    let client = within("connect", asp_tokio::connect(&a_url)).await.unwrap();
    let mut changes = client.tool_changes();
    let cid = conn_id(&client);
    owned_by(ba, &cid, "node-a").await;
    live(&redis, &cid).await;
    assert_eq!(push(ba, &cid, "live").await.0, 200);
    assert_eq!(next_added(&mut changes).await, "live");

    a.0.kill().unwrap(); // SIGKILL
    a.0.wait().unwrap();
    until("202 once the owner is gone", || async {
        push(ba, &cid, "probe").await.0 == 202
    })
    .await;
    let (status, body) = push(ba, &cid, "queued").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["queued"], true);
    let cluster = Cluster::connect(&redis.url(), "observer".into(), LIMIT, 100)
        .await
        .unwrap();
    let s = cluster.session(&cid).await.unwrap().expect("session kept");
    assert_eq!(s.node, "node-a");
    assert_eq!(s.seq, body["seq"].as_u64().unwrap());
    until("410 after the resume window", || async {
        push(ba, &cid, "late").await.0 == 410
    })
    .await;
    drop(client);
}

/// Two nodes claim one session: each claim is a newer generation, and only the newest may
/// write the state blob (fencing, SPEC §15.6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_newest_generation_writes() {
    let redis = RedisServer::start();
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

/// Redis restarts (empty: no persistence). Meanwhile pushes answer 503 and the client's
/// socket stays up; afterwards the owner writes its session again and pushes flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_keeps_sockets_up_and_pushes_flow_again() {
    let mut redis = RedisServer::start();
    let a = node(&redis, "node-a", Duration::from_secs(30)).await;
    let b = node(&redis, "node-b", Duration::from_secs(30)).await;
    let (aa, ba) = (a.admin_addr().unwrap(), b.admin_addr().unwrap());
    subscribed(aa).await;
    let client = within("connect", asp_tokio::connect(&a.url()))
        .await
        .unwrap();
    let mut changes = client.tool_changes();
    let cid = conn_id(&client);
    owned_by(ba, &cid, "node-a").await;
    live(&redis, &cid).await;
    assert_eq!(push(ba, &cid, "before").await.0, 200);
    assert_eq!(next_added(&mut changes).await, "before");

    redis.kill();
    let (status, body) = push(ba, &cid, "during").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(a.connections(), 1, "the socket stays up");

    redis.spawn();
    owned_by(ba, &cid, "node-a").await;
    subscribed(aa).await;
    until("pushes flow again", || async {
        push(ba, &cid, "after").await.0 == 200
    })
    .await;
    assert_eq!(next_added(&mut changes).await, "after");
    assert!(client.session().is_some());
    assert_eq!(a.connections(), 1);
}

/// A client whose connection drops resumes on its node (SPEC §11); pushes taken through
/// another node meanwhile wait in the outbox and arrive after the resume: every one once,
/// in order, on the same connection id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_while_detached_arrive_after_the_resume() {
    let redis = RedisServer::start();
    let a = node(&redis, "node-a", Duration::from_secs(3)).await;
    let b = node(&redis, "node-b", Duration::from_secs(3)).await;
    let (aa, ba) = (a.admin_addr().unwrap(), b.admin_addr().unwrap());
    subscribed(aa).await;
    // A TCP proxy whose connections the test can drop.
    let proxy = support::DropProxy::start(a.local_addr()).await;
    let url = proxy.url(&a.url());
    let client = within("connect", asp_tokio::client().resume(true).connect(&url))
        .await
        .unwrap();
    let mut changes = client.tool_changes();
    let cid = conn_id(&client);
    owned_by(ba, &cid, "node-a").await;
    live(&redis, &cid).await;
    assert_eq!(push(ba, &cid, "p0").await.0, 200);
    assert_eq!(next_added(&mut changes).await, "p0");

    proxy.drop_all();
    for i in 1..6 {
        let (status, body) = push(ba, &cid, &format!("p{i}")).await;
        assert!(status == 200 || status == 202, "{status} {body}");
    }
    for i in 1..6 {
        assert_eq!(
            next_added(&mut changes).await,
            format!("p{i}"),
            "once, in order"
        );
    }
    assert_eq!(conn_id(&client), cid, "the same session");
    assert_eq!(push(ba, &cid, "p6").await.0, 200);
    assert_eq!(next_added(&mut changes).await, "p6");
    let m = admin(aa, "GET", "/metrics", b"").await.1;
    assert_eq!(m["pushes_delivered"], 7, "{m}");
}

/// Waits until Redis names `node` as the owner of `cid` (the node's own `GET` answers with
/// its local view, without `node`).
async fn owner_is(observer: &Cluster, cid: &str, node: &str) {
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

/// The client address of a node's `ws://host:port/path` URL.
fn ws_addr(url: &str) -> SocketAddr {
    url.trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A load balancer in front of the nodes (`support::balancer`). Returns the client URL
/// through it.
async fn balancer(nodes: Vec<SocketAddr>, path_of: &str) -> String {
    let addr = support::balancer(nodes).await;
    let path = path_of.splitn(4, '/').nth(3).unwrap_or("");
    format!("ws://{addr}/{path}")
}

/// A function behind the relays: every `/invoke` answers 200 `text/plain` at once with the
/// chunk `first`, then holds the body open until `release` is notified, then sends `last`
/// and ends (`release` never notified: the call never ends).
async fn function(release: std::sync::Arc<tokio::sync::Notify>) -> String {
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
async fn first_chunk(call: &mut asp_async::Invocation) -> String {
    let c = within("the first chunk", call.next())
        .await
        .expect("a chunk");
    String::from_utf8_lossy(&c.data).into_owned()
}

/// SIGKILL of the node holding a session: the client reconnects through the balancer to
/// another node, which resumes the session from its snapshot in Redis (SPEC §11.4, §15.6):
/// same connection id and state blob, the pushes queued meanwhile once and in order, and
/// the invocation the dead node was running ended with a retryable UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumes_on_another_node_after_sigkill() {
    let redis = RedisServer::start();
    let upstream = function(Default::default()).await;
    let (mut a, a_url, aa) = node_process_to(&redis, "node-a", "30", &upstream);
    let (_b, b_url, ba) = node_process_to(&redis, "node-b", "30", &upstream);
    subscribed(aa).await;
    subscribed(ba).await;
    let url = balancer(vec![ws_addr(&a_url), ws_addr(&b_url)], &a_url).await;
    let client = within("connect", asp_tokio::client().resume(true).connect(&url))
        .await
        .unwrap();
    let mut changes = client.tool_changes();
    let cid = conn_id(&client);
    owned_by(ba, &cid, "node-a").await;
    // The state blob, written at the owner's generation (as a function's X-Asp-State is).
    let observer = Cluster::connect(&redis.url(), "observer".into(), LIMIT, 100)
        .await
        .unwrap();
    let gen = observer.session(&cid).await.unwrap().unwrap().gen;
    assert!(observer.write_state_at(&cid, gen, b"blob").await.unwrap());
    assert_eq!(push(ba, &cid, "p0").await.0, 200);
    assert_eq!(next_added(&mut changes).await, "p0");
    let mut call = client.invoke("slow", &serde_json::json!({})).unwrap();
    assert_eq!(first_chunk(&mut call).await, "first");

    a.0.kill().unwrap(); // SIGKILL
    a.0.wait().unwrap();
    for i in 1..4 {
        let (status, body) = push(ba, &cid, &format!("p{i}")).await;
        assert!(status == 200 || status == 202, "{status} {body}");
    }
    match within("the lost invocation's end", call.completion()).await {
        Err(asp_async::Error::Remote(e)) => {
            assert_eq!(e.code, asp_proto::ErrorCode::UNAVAILABLE, "{e:?}");
            assert!(e.retryable, "retryable");
        }
        other => panic!("expected a retryable ERROR, got {other:?}"),
    }
    for i in 1..4 {
        assert_eq!(
            next_added(&mut changes).await,
            format!("p{i}"),
            "once, in order"
        );
    }
    assert_eq!(conn_id(&client), cid, "the same session");
    owner_is(&observer, &cid, "node-b").await;
    live(&redis, &cid).await;
    let (status, info) = admin(ba, "GET", &format!("/connections/{cid}"), b"").await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["state_bytes"], 4, "{info}");
    assert_eq!(push(ba, &cid, "p4").await.0, 200, "live on node B");
    assert_eq!(next_added(&mut changes).await, "p4");
    let m = admin(ba, "GET", "/metrics", b"").await.1;
    assert_eq!(m["resumes"], 1, "{m}");
    // The session goes on: a new invocation runs on node B.
    let mut call = client.invoke("slow", &serde_json::json!({})).unwrap();
    assert_eq!(first_chunk(&mut call).await, "first");
}

/// A node drained with SIGTERM (a rolling deploy): it stops accepting, lets the invocation
/// in flight finish, then moves the session to another node; nothing is lost — the
/// invocation's result arrives, and every push taken meanwhile arrives once, in order, on
/// the same connection id (SPEC §15.6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_moves_its_sessions_without_loss() {
    if std::env::var_os("ASP_TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_test_writer()
            .try_init();
    }
    let redis = RedisServer::start();
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let upstream = function(release.clone()).await;
    let (mut a, a_url, aa) = node_process_to(&redis, "node-a", "30", &upstream);
    let (_b, b_url, ba) = node_process_to(&redis, "node-b", "30", &upstream);
    subscribed(aa).await;
    subscribed(ba).await;
    let url = balancer(vec![ws_addr(&a_url), ws_addr(&b_url)], &a_url).await;
    let client = within("connect", asp_tokio::client().resume(true).connect(&url))
        .await
        .unwrap();
    let mut changes = client.tool_changes();
    let cid = conn_id(&client);
    owned_by(ba, &cid, "node-a").await;
    live(&redis, &cid).await;
    assert_eq!(push(ba, &cid, "p0").await.0, 200);
    assert_eq!(next_added(&mut changes).await, "p0");
    let mut call = client.invoke("slow", &serde_json::json!({})).unwrap();
    assert_eq!(first_chunk(&mut call).await, "first");

    let term = Command::new("kill")
        .args(["-TERM", &a.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    // Node A stops accepting at once; until the invocation ends it still holds the session.
    until("node A stopped accepting", || async {
        tokio::net::TcpStream::connect(ws_addr(&a_url))
            .await
            .is_err()
    })
    .await;
    for i in 1..3 {
        let (status, body) = push(ba, &cid, &format!("p{i}")).await;
        assert!(status == 200 || status == 202, "{status} {body}");
    }
    release.notify_one();
    let mut text = String::new();
    while let Some(c) = within("the rest of the result", call.next()).await {
        text.push_str(&String::from_utf8_lossy(&c.data));
    }
    assert_eq!(text, "last");
    let done = within("the result", call.completion()).await;
    assert!(done.is_ok(), "{done:?}");
    // The move: the client resumes on node B.
    let observer = Cluster::connect(&redis.url(), "observer".into(), LIMIT, 100)
        .await
        .unwrap();
    owner_is(&observer, &cid, "node-b").await;
    for i in 3..5 {
        let (status, body) = push(ba, &cid, &format!("p{i}")).await;
        assert!(status == 200 || status == 202, "{status} {body}");
    }
    for i in 1..5 {
        assert_eq!(
            next_added(&mut changes).await,
            format!("p{i}"),
            "once, in order"
        );
    }
    assert_eq!(conn_id(&client), cid, "the same session");
    let exit = within("node A exits", async {
        tokio::task::spawn_blocking(move || a.0.wait().unwrap())
            .await
            .unwrap()
    })
    .await;
    assert!(exit.success(), "{exit:?}");
    live(&redis, &cid).await;
    let m = admin(ba, "GET", "/metrics", b"").await.1;
    assert_eq!(m["resumes"], 1, "{m}");
    assert_eq!(push(ba, &cid, "p5").await.0, 200, "live on node B");
    assert_eq!(next_added(&mut changes).await, "p5");
}
