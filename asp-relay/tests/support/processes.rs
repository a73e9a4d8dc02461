//! The processes the relay cluster tests and `examples/cluster_bench.rs` start: `redis-server`
//! (one, or three joined into a Redis Cluster) on free loopback ports, and what an
//! `asp-relay` process prints when it listens.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

/// How long any one wait may take.
pub const LIMIT: Duration = Duration::from_secs(20);

/// A child process, killed (SIGKILL) when dropped.
pub struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads `child`'s stdout on a thread until a line contains `marker`; returns that line.
pub fn wait_line(child: &mut Child, marker: &'static str) -> String {
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
pub struct RedisServer {
    port: u16,
    child: Option<Killed>,
}

/// What the relays are given as `--redis`.
pub trait Redis {
    fn url(&self) -> String;
}

/// A free loopback port (another process may take it before it is used; good enough here).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = free_port();
        let mut r = RedisServer { port, child: None };
        r.spawn();
        r
    }

    pub fn spawn(&mut self) {
        self.child = Some(redis_server(self.port, &[]));
    }

    pub fn kill(&mut self) {
        self.child = None;
    }
}

impl Redis for RedisServer {
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

/// `redis-server` on `port` without persistence, with `extra` arguments, once it accepts
/// connections.
fn redis_server(port: u16, extra: &[&str]) -> Killed {
    let mut child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    wait_line(&mut child, "Ready to accept connections");
    Killed(child)
}

/// A Redis Cluster of three masters without replicas on free loopback ports, joined with
/// `redis-cli --cluster create` (package redis-tools, a dependency of redis-server).
pub struct RedisCluster {
    ports: Vec<u16>,
    nodes: Vec<Killed>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let dir = std::env::temp_dir().join(format!(
            "asp-redis-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let nodes = ports
            .iter()
            .map(|port| {
                // The bus port too: the default, port + 10000, may be past 65535.
                let bus = free_port().to_string();
                let conf = dir.join(format!("nodes-{port}.conf"));
                let dir = dir.to_string_lossy();
                let conf = conf.to_string_lossy();
                redis_server(
                    *port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-port",
                        &bus,
                        "--cluster-config-file",
                        &conf,
                        "--dir",
                        &dir,
                    ],
                )
            })
            .collect();
        let cluster = RedisCluster { ports, nodes, dir };
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli (apt-get install redis-tools)");
        assert!(created.success(), "redis-cli --cluster create: {created}");
        // Every node agrees that all slots are served (bounded: LIMIT).
        let deadline = std::time::Instant::now() + LIMIT;
        for port in &cluster.ports {
            loop {
                let info = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .expect("redis-cli");
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "cluster_state:ok on {port}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// The ports of the nodes that hold `key` (a node answers `EXISTS` for the keys of its
    /// own slots only; for another slot it answers a `MOVED` error).
    pub fn holders(&self, key: &str) -> Vec<u16> {
        self.ports
            .iter()
            .copied()
            .filter(|port| {
                let out = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "exists", key])
                    .output()
                    .expect("redis-cli");
                String::from_utf8_lossy(&out.stdout).trim() == "1"
            })
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Redis for RedisCluster {
    fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }
}

/// `tests/relay_upstream.py`, a function written in Python, started with `args`: (the
/// process, the port it prints first and listens on). Err when python3 cannot be started.
pub fn python_function(args: &[&std::ffi::OsStr]) -> std::io::Result<(Killed, u16)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/relay_upstream.py");
    let mut child = Killed(
        Command::new("python3")
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let line = wait_line(&mut child.0, "PORT ");
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad first line {line:?}"));
    Ok((child, port))
}

/// The client address of a node's `ws://host:port/path` URL.
pub fn ws_addr(url: &str) -> SocketAddr {
    url.trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The client URL and admin address (if it has one) an `asp-relay` process prints when it
/// listens.
pub fn listening(child: &mut Child) -> (String, Option<SocketAddr>) {
    let line = wait_line(child, "listening");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .expect("url")
        .to_owned();
    let admin = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .map(|a| a.trim_end_matches(')').parse().expect("admin address"));
    (url, admin)
}
