//! Relay cluster benchmark (README "Scaling out"): push latency through the owning node and
//! through another node, next to a single relay without Redis (the floor), pushes/s through
//! the cluster, the time from SIGKILL of the owner to the session resumed on another node
//! with a queued push delivered, and memory per idle connection (cluster node vs single
//! relay, `asp-relay` processes). Needs `redis-server` on PATH and a release build of the binary:
//!
//! ```text
//! cargo build --release -p asp-relay && cargo run --release -p asp-relay --example cluster_bench
//! ```
//!
//! `REDIS_CLUSTER=1` adds push latency on a Redis Cluster of three masters (needs `redis-cli`
//! and the feature: `cargo run --release -p asp-relay --features cluster --example
//! cluster_bench`).

#[path = "../tests/support/middlemen.rs"]
mod middlemen;
#[path = "../tests/support/processes.rs"]
mod processes;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use asp_proto::codec::encode;
use asp_proto::frame::{Frame, Text, ToolDef, ToolOp};
use asp_relay::{Relay, RelayConfig};
use bytes::BytesMut;
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use middlemen::{balancer_at, Backends};
use processes::{listening, ws_addr, Killed, Redis, RedisCluster, RedisServer};

const SECRET: &str = "bench";

async fn node(redis: Option<&str>, id: &str) -> Relay {
    let mut c = RelayConfig::new("http://127.0.0.1:9/".parse().unwrap());
    c.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    c.admin_secret = Some(SECRET.into());
    c.redis = redis.map(Into::into);
    c.node_id = Some(id.into());
    Relay::start(c).await.unwrap()
}

/// A keep-alive admin API connection.
struct Admin(BufReader<TcpStream>);

impl Admin {
    async fn new(addr: SocketAddr) -> Admin {
        let t = TcpStream::connect(addr).await.unwrap();
        t.set_nodelay(true).unwrap();
        Admin(BufReader::new(t))
    }

    async fn push(&mut self, cid: &str, body: &[u8]) -> u16 {
        let head = format!(
            "POST /connections/{cid}/frames HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer {SECRET}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let s = self.0.get_mut();
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body).await.unwrap();
        let mut line = String::new();
        self.0.read_line(&mut line).await.unwrap();
        let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut len = 0usize;
        loop {
            line.clear();
            self.0.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut b = vec![0; len];
        self.0.read_exact(&mut b).await.unwrap();
        status
    }
}

fn tool(name: &str) -> Vec<u8> {
    tool_op(name, ToolOp::Add)
}

/// Push `i` of a sequence: adds and removes alternately, so the client's tool set (at most
/// `max_tools`, SPEC §9) never fills up however many pushes run.
fn nth_push(tag: &str, i: usize) -> Vec<u8> {
    let name = format!("{tag}{}", i / 2);
    if i.is_multiple_of(2) {
        tool_op(&name, ToolOp::Add)
    } else {
        tool_op(&name, ToolOp::Remove)
    }
}

fn tool_op(name: &str, op: ToolOp) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode(
        &Frame::ToolDef(ToolDef {
            op,
            name: Text::from(name),
            description: Text::from(""),
            input_schema: None,
            annotations: None,
        }),
        &mut b,
    );
    b.to_vec()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Push → the client sees the tool: µs per push, `n` sequential pushes.
async fn latency(admin: SocketAddr, client: &asp_tokio::Client, n: usize, tag: &str) -> Vec<f64> {
    let cid = client.session().unwrap().connection_id.to_string();
    let mut changes = client.tool_changes();
    let mut a = Admin::new(admin).await;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let body = nth_push(tag, i);
        let t = Instant::now();
        let st = a.push(&cid, &body).await;
        assert!(st == 200 || st == 202, "{st}");
        changes.next().await.unwrap();
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    out
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

/// The release `asp-relay` next to this example, with no function behind it, on `redis`
/// when given.
fn relay_command(redis: Option<&str>) -> Command {
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("asp-relay");
    let mut cmd = Command::new(bin);
    cmd.args([
        "--upstream",
        "http://127.0.0.1:9/",
        "--listen",
        "127.0.0.1:0",
    ]);
    if let Some(r) = redis {
        cmd.args(["--redis", r]);
    }
    cmd
}

/// Runs `cmd` with its stdout read: (process, client url, admin address if any).
fn spawn_relay(mut cmd: Command) -> (Killed, String, Option<SocketAddr>) {
    let mut child = Killed(
        cmd.stdout(Stdio::piped())
            .spawn()
            .expect("release asp-relay"),
    );
    let (url, admin) = listening(&mut child.0);
    (child, url, admin)
}

/// RSS growth per idle client of an `asp-relay` process, KiB.
async fn memory_per_conn(redis: Option<&str>, n: usize) -> f64 {
    let (child, url, _) = spawn_relay(relay_command(redis));
    // Warm up (allocator arenas, first connection paths), then measure.
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(asp_tokio::connect(&url).await.unwrap());
    }
    let before = rss_kib(child.0.id());
    for _ in 0..n {
        clients.push(asp_tokio::connect(&url).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = rss_kib(child.0.id());
    drop(clients);
    (after.saturating_sub(before)) as f64 / n as f64
}

/// An `asp-relay` process: (process, client url, admin address).
fn relay_process(redis: Option<&str>, id: &str) -> (Killed, String, SocketAddr) {
    let mut cmd = relay_command(redis);
    cmd.args(["--admin-listen", "127.0.0.1:0", "--node-id", id])
        .env("ASP_RELAY_ADMIN_SECRET", SECRET);
    let (child, url, admin) = spawn_relay(cmd);
    (child, url, admin.unwrap())
}

/// Waits until the node holding `client`'s session has claimed it and subscribed: a push
/// through `admin` answers 200 (every probe is delivered, the queued ones a little later:
/// waits for all of them).
async fn warm(client: &asp_tokio::Client, admin: &mut Admin) {
    let cid = client.session().unwrap().connection_id.to_string();
    let mut changes = client.tool_changes();
    let mut probes = 0;
    loop {
        probes += 1;
        if admin.push(&cid, &tool(&format!("warm{probes}"))).await == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..probes {
        changes.next().await.unwrap();
    }
}

/// SIGKILL of the owner → the client, through the balancer, resumes on the other node and
/// gets a push queued after the kill: ms from the kill to that push's arrival.
async fn resume_elsewhere_ms(redis: &str) -> f64 {
    let (mut a, a_url, _) = relay_process(Some(redis), "ra");
    let (_b, b_url, b_admin) = relay_process(Some(redis), "rb");
    let lb = balancer_at(Backends::new(vec![ws_addr(&a_url), ws_addr(&b_url)])).await;
    let url = a_url.replace(&ws_addr(&a_url).to_string(), &lb.to_string());
    let client = asp_tokio::client()
        .resume(true)
        .connect(&url)
        .await
        .unwrap();
    let cid = client.session().unwrap().connection_id.to_string();
    // The session is stored (its HELLO went out only after that) and owned by A.
    let mut ad = Admin::new(b_admin).await;
    warm(&client, &mut ad).await;
    let mut changes = client.tool_changes();
    let t = Instant::now();
    a.0.kill().unwrap();
    a.0.wait().unwrap();
    let st = ad.push(&cid, &tool("after-kill")).await;
    assert!(st == 200 || st == 202, "{st}");
    let got = tokio::time::timeout(Duration::from_secs(20), changes.next())
        .await
        .expect("resumed within 20 s");
    assert!(got.is_some());
    assert_eq!(client.session().unwrap().connection_id.to_string(), cid);
    t.elapsed().as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let n: usize = std::env::var("PUSHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let redis = RedisServer::start();
    let url = redis.url();
    let single = node(None, "single").await;
    let a = node(Some(&url), "a").await;
    let b = node(Some(&url), "b").await;
    let cs = asp_tokio::connect(&single.url()).await.unwrap();
    let ca = asp_tokio::connect(&a.url()).await.unwrap();
    warm(&ca, &mut Admin::new(b.admin_addr().unwrap()).await).await;
    let mut rows: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![
        ("single relay (no Redis)", vec![], vec![]),
        ("cluster, via the owner", vec![], vec![]),
        ("cluster, via another node", vec![], vec![]),
    ];
    // The same two paths with the nodes on a Redis Cluster of three masters.
    let sharded = std::env::var_os("REDIS_CLUSTER").map(|_| RedisCluster::start());
    let on_sharded = match &sharded {
        Some(rc) => {
            let c = node(Some(&rc.url()), "c").await;
            let d = node(Some(&rc.url()), "d").await;
            let cc = asp_tokio::connect(&c.url()).await.unwrap();
            warm(&cc, &mut Admin::new(d.admin_addr().unwrap()).await).await;
            Some((c, d, cc))
        }
        None => None,
    };
    let mut targets = vec![
        (single.admin_addr().unwrap(), &cs),
        (a.admin_addr().unwrap(), &ca),
        (b.admin_addr().unwrap(), &ca),
    ];
    if let Some((c, d, cc)) = &on_sharded {
        rows.push(("Redis Cluster, via the owner", vec![], vec![]));
        rows.push(("Redis Cluster, via another node", vec![], vec![]));
        targets.push((c.admin_addr().unwrap(), cc));
        targets.push((d.admin_addr().unwrap(), cc));
    }
    let mut rates = Vec::new();
    for run in 0..runs {
        for (i, &(addr, c)) in targets.iter().enumerate() {
            let mut v = latency(addr, c, n, &format!("r{run}t{i}p")).await;
            rows[i].1.push(pct(&mut v, 0.5));
            rows[i].2.push(pct(&mut v, 0.99));
        }
        // Throughput: 8 concurrent keep-alive pushers through B, to the client on A.
        let cid = ca.session().unwrap().connection_id.to_string();
        let mut changes = ca.tool_changes();
        let total = 8 * (n / 8);
        let t = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..8 {
            let cid = cid.clone();
            let addr = b.admin_addr().unwrap();
            tasks.push(tokio::spawn(async move {
                let mut ad = Admin::new(addr).await;
                for i in 0..n / 8 {
                    let st = ad.push(&cid, &nth_push(&format!("x{run}w{w}i"), i)).await;
                    assert!(st == 200 || st == 202, "{st}");
                }
            }));
        }
        for _ in 0..total {
            changes.next().await.unwrap();
        }
        for t in tasks {
            t.await.unwrap();
        }
        rates.push(total as f64 / t.elapsed().as_secs_f64());
    }
    let med = |v: &mut Vec<f64>| pct(v, 0.5);
    let range = |v: &Vec<f64>| {
        let lo = v.iter().cloned().fold(f64::MAX, f64::min);
        let hi = v.iter().cloned().fold(0.0, f64::max);
        format!("{lo:.0}–{hi:.0}")
    };
    println!("| path | p50 µs (median, range) | p99 µs (median, range) | p50 vs single |");
    println!("|---|---|---|---|");
    let floor = med(&mut rows[0].1.clone());
    for (name, p50, p99) in &mut rows {
        let r50 = range(p50);
        let r99 = range(p99);
        let m50 = med(p50);
        println!(
            "| {name} | {m50:.0} ({r50}) | {:.0} ({r99}) | {:.2}× |",
            med(p99),
            m50 / floor
        );
    }
    let r = range(&rates);
    println!(
        "pushes/s through another node, 8 pushers: median {:.0} (range {r})",
        med(&mut rates)
    );
    let mut resumes = Vec::new();
    for _ in 0..runs {
        resumes.push(resume_elsewhere_ms(&url).await);
    }
    let r = {
        let lo = resumes.iter().cloned().fold(f64::MAX, f64::min);
        let hi = resumes.iter().cloned().fold(0.0, f64::max);
        format!("{lo:.0}–{hi:.0}")
    };
    println!(
        "SIGKILL of the owner → resumed on another node, queued push delivered: median {:.0} ms (range {r})",
        med(&mut resumes)
    );
    let mut single_mem = Vec::new();
    let mut cluster_mem = Vec::new();
    for _ in 0..runs {
        single_mem.push(memory_per_conn(None, 500).await);
        cluster_mem.push(memory_per_conn(Some(&url), 500).await);
    }
    let ratios: Vec<f64> = cluster_mem
        .iter()
        .zip(&single_mem)
        .map(|(c, s)| c / s)
        .collect();
    println!(
        "memory per idle connection, KiB: single {:.1} (range {:.1}–{:.1}), cluster {:.1} (range {:.1}–{:.1}), cluster/single median {:.2}×",
        med(&mut single_mem.clone()),
        single_mem.iter().cloned().fold(f64::MAX, f64::min),
        single_mem.iter().cloned().fold(0.0, f64::max),
        med(&mut cluster_mem.clone()),
        cluster_mem.iter().cloned().fold(f64::MAX, f64::min),
        cluster_mem.iter().cloned().fold(0.0, f64::max),
        med(&mut ratios.clone()),
    );
}
