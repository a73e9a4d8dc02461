//! TCP middlemen between clients and relay nodes, for the relay tests and
//! `examples/cluster_bench.rs` (which includes this file with `#[path]`): a proxy whose
//! connections the test drops, and a load balancer.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy to `upstream` whose connections the test can drop, both sockets at once, as
/// a network failure would (the client then resumes, SPEC §11).
pub struct DropProxy {
    /// Where clients connect instead of `upstream`.
    pub addr: SocketAddr,
    upstream: SocketAddr,
    carried: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl DropProxy {
    pub async fn start(upstream: SocketAddr) -> DropProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let carried: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let carried2 = carried.clone();
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let Ok(mut up) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let h = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                });
                carried2.lock().unwrap().push(h);
            }
        });
        DropProxy {
            addr,
            upstream,
            carried,
        }
    }

    /// `url` (of the upstream) with the proxy's address in its place.
    pub fn url(&self, url: &str) -> String {
        url.replace(&self.upstream.to_string(), &self.addr.to_string())
    }

    /// Drops every connection carried so far.
    pub fn drop_all(&self) {
        for h in self.carried.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

/// The nodes behind a [`balancer_at`], changeable while it runs (as a deploy changes a
/// balancer's targets).
#[derive(Clone)]
pub struct Backends(Arc<Mutex<Vec<SocketAddr>>>);

impl Backends {
    pub fn new(nodes: Vec<SocketAddr>) -> Backends {
        Backends(Arc::new(Mutex::new(nodes)))
    }

    /// New connections go to `nodes` from now on.
    pub fn set(&self, nodes: Vec<SocketAddr>) {
        *self.0.lock().unwrap() = nodes;
    }
}

/// A load balancer in front of the nodes: each new TCP connection goes to the first node
/// that accepts it (a node that died or stopped accepting is skipped), as a health-checked
/// balancer does. Returns its address.
pub async fn balancer_at(nodes: Backends) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut down, _)) = listener.accept().await {
            let nodes = nodes.0.lock().unwrap().clone();
            tokio::spawn(async move {
                for n in nodes {
                    if let Ok(mut up) = TcpStream::connect(n).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                        return;
                    }
                }
            });
        }
    });
    addr
}
