//! # asp-relay — relay mode of the Agent Socket Protocol (SPEC §15)
//!
//! ASP sockets at the edge, serverless functions behind HTTP.
//!
//! The relay is an ordinary ASP server (the `asp-async` machinery over tokio) whose every
//! tool is served by one generic handler that forwards the INVOKE as `POST {upstream}/invoke`
//! and streams the function's response back (`upstream.rs`). An admin HTTP API on a separate
//! listener lets functions push frames to a connection later (`admin.rs`, SPEC §15.5):
//!
//! | request | answer |
//! |---|---|
//! | `POST /connections/{id}/frames` (body: ASP frames) | `202 {"accepted", "request_ids"}`, `400`, `404`, `409` |
//! | `GET /connections/{id}` | `200 {"connection_id", "connected_ms", "in_flight", "state_bytes", "tools"}`, `404` |
//! | `DELETE /connections/{id}[?timeout_ms=N]` | `204` (GOAWAY, close when idle), `404` |
//!
//! Every admin request needs `Authorization: Bearer <admin secret>`. A push is all or nothing:
//! `asp-proto`'s [`Connection::check_batch`](asp_proto::Connection::check_batch) decides
//! whether every frame can be sent now, else nothing is sent (409).
//!
//! What goes on the wire and how a response maps to STREAM / COMPLETE / ERROR is decided by
//! the Sans-IO binding (`binding.rs`); the rest of this crate only moves bytes and runs
//! timers. The `asp-relay` binary (`src/main.rs`) runs a [`Relay`] from flags or a JSON file.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use asp_relay::{Relay, RelayConfig};
//! let relay = Relay::start(RelayConfig {
//!     admin_listen: Some("127.0.0.1:0".parse().unwrap()),
//!     admin_secret: Some("s3cret".into()),
//!     ..RelayConfig::new("http://127.0.0.1:9000".parse().unwrap())
//! })
//! .await?;
//! println!("clients connect to {}", relay.url());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod admin;
mod binding;
pub mod cluster;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod msgpack;
mod tls;
mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::binding::{BodyFormat, Timeouts};
use asp_async::tungstenite::http::HeaderMap;
use asp_async::{ConnectionHook, ServerConnection, ToolDef};
use asp_proto::Bytes;
use hyper::Uri;

use asp_tokio::{Server, Tokio};

/// Everything the relay needs to run. [`RelayConfig::new`] gives the SPEC defaults.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Where clients connect (WebSocket, SPEC §2.1). Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// The WebSocket path. Default `/v1/agent-socket`.
    pub path: String,
    /// The admin (push) API's listener; `None` disables the API. Default `None`.
    pub admin_listen: Option<SocketAddr>,
    /// The admin API's bearer secret; required when `admin_listen` is set.
    pub admin_secret: Option<String>,
    /// The function's base URL: the relay calls `{upstream}/invoke` and `{upstream}/reply`.
    pub upstream: Uri,
    /// Body encoding towards the function. Default MessagePack.
    pub format: BodyFormat,
    /// Forward the client's upgrade `Authorization` header to the function. Default false.
    pub forward_auth: bool,
    /// Require `Authorization: Bearer <token>` from clients (HTTP 401 otherwise, SPEC §2.1).
    /// Default `None`: the relay accepts every client and leaves authentication to the
    /// function (with `forward_auth`).
    pub client_token: Option<String>,
    /// Client connections at most (more get HTTP 503). Default 10 000.
    pub max_connections: usize,
    /// Upstream calls in flight per connection (the `max_inflight` announced to clients;
    /// more are refused with TOO_MANY_INFLIGHT). Default 32.
    pub max_inflight: u16,
    /// Largest per-connection state blob (SPEC §15.4). Default 64 KiB.
    pub max_state: usize,
    /// Upstream timeouts (SPEC §15.3). Defaults 300 s / 60 s.
    pub timeouts: Timeouts,
    /// Idle upstream connections kept per host for reuse. Default 256.
    pub pool_max_idle: usize,
    /// The initial tool set every client receives (SPEC §15.1). Default empty.
    pub tools: Vec<ToolDef>,
    /// Protocol settings towards clients (limits, heartbeat, resume…); `check_tools` is
    /// forced off (the function decides, SPEC §15.1) and `limits.max_inflight` is
    /// `max_inflight`. Resume (SPEC §11) is on by default: a detached session keeps its
    /// upstream calls running and its output waiting for the resume window.
    pub asp: asp_async::Config,
    /// WebSocket buffer sizes and message limit. Default: `asp_async::server_ws_config` of
    /// the default `asp` settings — a 4 KiB read buffer that grows only for a larger message
    /// (tungstenite zero-fills its whole read buffer, so its 128 KiB default would cost
    /// 128 KiB of RSS per idle client), and a message limit that bounds buffered input (SPEC
    /// §2.1, §13.1). Set it again after raising `asp.limits.max_frame_payload`.
    pub ws: asp_async::WsConfig,
    /// Terminate TLS on the client listener (`wss://`). Default `None`. Keep a clone to
    /// [`reload`](asp_async::ServerTls::reload) the certificate (the binary does on SIGHUP).
    pub tls: Option<asp_async::ServerTls>,
    /// Terminate TLS on the admin (push) API listener (`https://`). Default `None`; may be a
    /// clone of `tls` (one reload then covers both).
    pub admin_tls: Option<asp_async::ServerTls>,
    /// Trust for `https://` upstreams: roots, extra CAs (`--upstream-ca`), a client
    /// certificate for functions that require one. Default: the platform's roots.
    pub upstream_tls: asp_async::ClientTls,
    /// Join a relay cluster through this Redis (`redis://host:port/db`, SPEC §15.6). Default
    /// `None`: the relay runs alone.
    pub redis: Option<String>,
    /// This node's id in the cluster. Default: random.
    pub node_id: Option<String>,
}

impl RelayConfig {
    /// Defaults, forwarding to `upstream`.
    pub fn new(upstream: Uri) -> RelayConfig {
        RelayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            path: asp_async::DEFAULT_PATH.to_owned(),
            admin_listen: None,
            admin_secret: None,
            upstream,
            format: BodyFormat::MsgPack,
            forward_auth: false,
            client_token: None,
            max_connections: 10_000,
            max_inflight: 32,
            max_state: 64 << 10,
            timeouts: Timeouts::default(),
            pool_max_idle: 256,
            tools: Vec::new(),
            // Issue 25: resume on by default (SPEC §11), single node: a client whose
            // connection drops continues its session, invocations and all, on a new one.
            asp: {
                let mut config = asp_async::default_config();
                config.resume = true;
                config
            },
            ws: asp_async::server_ws_config(&asp_async::default_config()),
            tls: None,
            admin_tls: None,
            upstream_tls: asp_async::ClientTls::new(),
            redis: None,
            node_id: None,
        }
    }

    /// `{upstream}{path}`, keeping any base path of the upstream URL.
    pub(crate) fn upstream_uri(&self, path: &str) -> std::io::Result<Uri> {
        let base = self.upstream.to_string();
        format!("{}{path}", base.trim_end_matches('/'))
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    }
}

/// What the relay keeps per client connection.
pub(crate) struct RelayConn {
    pub(crate) handle: ServerConnection,
    /// The upgrade's `Authorization`, if forwarded.
    pub(crate) auth: Option<hyper::header::HeaderValue>,
    /// The opaque state blob (SPEC §15.4); empty = not set.
    pub(crate) state: Mutex<Bytes>,
    pub(crate) connected: std::time::Instant,
    /// Pushed REQUESTs awaiting the client's answer (bounded by the client's `max_inflight`).
    pub(crate) pending_requests: AtomicUsize,
}

/// Shared by the relay's tasks.
pub(crate) struct RelayInner {
    pub(crate) config: RelayConfig,
    pub(crate) invoke_uri: Uri,
    pub(crate) reply_uri: Uri,
    pub(crate) client: upstream::HttpClient,
    pub(crate) conns: Mutex<HashMap<Box<str>, Arc<RelayConn>>>,
    /// This node's cluster membership (SPEC §15.6), if `--redis`.
    pub(crate) cluster: Option<Arc<cluster::Cluster>>,
}

impl RelayInner {
    /// A new connection's relay state (empty state blob), kept under its connection id.
    fn track(
        &self,
        conn: &ServerConnection,
        auth: Option<hyper::header::HeaderValue>,
    ) -> Arc<RelayConn> {
        let rc = Arc::new(RelayConn {
            handle: conn.clone(),
            auth,
            state: Mutex::new(Bytes::new()),
            connected: std::time::Instant::now(),
            pending_requests: AtomicUsize::new(0),
        });
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(conn.id().into(), rc.clone());
        rc
    }

    pub(crate) fn conn(&self, id: &str) -> Option<Arc<RelayConn>> {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }
}

/// Keeps the directory of connections and gives each its initial tool set.
struct Directory(Arc<RelayInner>);

impl ConnectionHook for Directory {
    fn connected(&self, conn: ServerConnection, upgrade: &HeaderMap) {
        let inner = &self.0;
        // A session another node held, resumed here from its snapshot (SPEC §15.6): it
        // arrives detached, with its tools, before its RESUME is answered.
        let restored = conn.with(|l| l.core().state() == asp_proto::State::Detached);
        if let (Some(true), Some(c)) = (restored, &inner.cluster) {
            let rc = inner.track(&conn, None);
            cluster::store::adopted(inner, c, &rc);
            return;
        }
        // Called before the connection reads the client's HELLO: these tools form the
        // initial set (SPEC §6.2 step 3, §15.1).
        conn.with(|l| {
            for def in &inner.config.tools {
                if let Err(e) = l.add_tool(def.clone()) {
                    tracing::warn!(tool = %def.name, error = %e, "initial tool refused");
                }
            }
        });
        let auth = inner
            .config
            .forward_auth
            .then(|| upgrade.get(hyper::header::AUTHORIZATION).cloned())
            .flatten();
        inner.track(&conn, auth);
        if let Some(c) = &inner.cluster {
            let (c, id) = (c.clone(), conn.id().to_owned());
            tokio::spawn(async move {
                if let Err(e) = c.register(&id).await {
                    tracing::warn!(connection = %id, error = %e, "registering in the cluster failed");
                }
            });
        }
    }

    fn closed(&self, conn: &ServerConnection) {
        self.0
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(conn.id());
        if let Some(c) = &self.0.cluster {
            let (c, id) = (c.clone(), conn.id().to_owned());
            tokio::spawn(async move { c.unregister(&id).await });
        }
    }
}

/// A running relay: the client listener and, if configured, the admin API.
pub struct Relay {
    server: Server,
    admin: Option<admin::AdminServer>,
    inner: Arc<RelayInner>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("url", &self.url())
            .field("admin", &self.admin_addr())
            .finish()
    }
}

impl Relay {
    /// Binds both listeners and starts serving on the current tokio runtime.
    pub async fn start(config: RelayConfig) -> std::io::Result<Relay> {
        let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_owned());
        if config.admin_listen.is_some() && config.admin_secret.as_deref().unwrap_or("").is_empty()
        {
            return Err(invalid("the admin API needs a secret (--admin-secret)"));
        }
        if !matches!(config.upstream.scheme_str(), Some("http" | "https")) {
            return Err(invalid("the upstream URL must be http:// or https://"));
        }
        let cluster = match &config.redis {
            Some(url) => {
                let node = config
                    .node_id
                    .clone()
                    .unwrap_or_else(|| format!("{:016x}", std::process::id() as u64 ^ rand_node()));
                // A session outlives its owner for the resume window (SPEC §11, §15.6).
                let ttl = config.asp.resume_window.max(Duration::from_secs(1));
                Some(cluster::Cluster::connect(url, node, ttl, 10_000).await?)
            }
            None => None,
        };
        let inner = Arc::new(RelayInner {
            invoke_uri: config.upstream_uri("/invoke")?,
            reply_uri: config.upstream_uri("/reply")?,
            client: upstream::http_client(&config)?,
            conns: Mutex::new(HashMap::new()),
            cluster,
            config,
        });
        if let Some(c) = &inner.cluster {
            c.start(Arc::downgrade(&inner));
        }
        let mut asp = inner.config.asp.clone();
        // SPEC §15.1: the function decides which tools exist (404 → UNKNOWN_TOOL).
        asp.check_tools = false;
        asp.limits.max_inflight = inner.config.max_inflight.max(1);
        let forward = {
            let inner = inner.clone();
            move |ctx, args| upstream::forward(inner.clone(), ctx, args)
        };
        let mut builder = asp_tokio::ServerBuilder::new(Tokio::current());
        if let Some(t) = &inner.config.client_token {
            builder = builder.token(t.clone());
        }
        if let Some(t) = &inner.config.tls {
            builder = builder.tls(t.clone());
        }
        if let Some(c) = &inner.cluster {
            // Sessions outlive their node (SPEC §11.4, §15.6).
            builder = builder.session_store(cluster::store::Store(c.clone()));
        }
        let server = builder
            .bind(inner.config.listen)
            .path(inner.config.path.clone())
            .max_connections(inner.config.max_connections)
            .config(asp)
            .ws_config(inner.config.ws)
            .fallback(forward)
            .on_connection(Directory(inner.clone()))
            .start()
            .await?;
        let admin = match inner.config.admin_listen {
            Some(addr) => Some(admin::AdminServer::start(inner.clone(), addr).await?),
            None => None,
        };
        Ok(Relay {
            server,
            admin,
            inner,
        })
    }

    /// `ws://addr/path` (`wss://` with TLS) for clients.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The client listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The admin API's address, if it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// This node's cluster membership, if it runs in a cluster.
    pub fn cluster(&self) -> Option<&Arc<cluster::Cluster>> {
        self.inner.cluster.as_ref()
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.server.connections()
    }

    /// Ids of the open client connections.
    pub fn connection_ids(&self) -> Vec<String> {
        self.inner
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .map(|k| k.to_string())
            .collect()
    }

    /// Graceful shutdown: the admin API stops accepting, clients get GOAWAY and in-flight
    /// invocations up to `timeout` to finish (SPEC §6.5). In a cluster, resumable sessions
    /// move to the other nodes instead (SPEC §15.6): each, once idle (or at `timeout`),
    /// has its snapshot stored and its transport ended, and its client resumes elsewhere.
    pub async fn shutdown(&self, timeout: Duration) {
        if let Some(a) = &self.admin {
            a.stop();
        }
        if let Some(c) = &self.inner.cluster {
            // New clients and resumes go to the other nodes from now on.
            self.server.stop_accepting();
            cluster::store::drain(&self.inner, c, timeout).await;
        }
        self.server.shutdown(timeout).await;
    }
}

fn rand_node() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// Parses a tools file (`--tools`): a JSON array of
/// `{"name", "description"?, "input_schema"?, "annotations"?}` (SPEC §5.5).
pub fn parse_tools(json: &str) -> Result<Vec<ToolDef>, String> {
    use asp_async::asp_proto::frame::{Text, ToolOp};
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let list = v
        .as_array()
        .ok_or("the tools file must hold a JSON array")?;
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let name = t
                .get("name")
                .and_then(|n| n.as_str())
                .filter(|n| !n.is_empty() && n.len() <= 128)
                .ok_or_else(|| format!("tool {i}: `name` must be a string of 1-128 bytes"))?;
            let raw = |key: &str| -> Result<_, String> {
                t.get(key)
                    .map(|x| asp_async::to_value(x).map_err(|e| format!("tool {name}: {key}: {e}")))
                    .transpose()
            };
            Ok(ToolDef {
                op: ToolOp::Add,
                name: Text::from(name),
                description: Text::from(
                    t.get("description").and_then(|d| d.as_str()).unwrap_or(""),
                ),
                input_schema: raw("input_schema")?,
                annotations: raw("annotations")?,
            })
        })
        .collect()
}
