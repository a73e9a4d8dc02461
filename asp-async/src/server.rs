//! The server: accept WebSocket upgrades (auth, Origin, subprotocol), run tools, push tool
//! changes to every client, shut down gracefully.

use std::collections::{BTreeMap, HashMap};
use std::future::poll_fn;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Poll, Waker};
use std::time::Duration;

use asp_proto::frame::Text;
use asp_proto::{CloseReason, Config, Connection, ServerParams, State};
use futures::future::{select, Either};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::{HeaderMap, HeaderValue, StatusCode};

use crate::connection::{ConnectionHook, ServerConnection};
use crate::driver;
use crate::resume::ResumeTable;
use crate::runtime::{Clock, Notify, Runtime};
use crate::shared::{lock, Hooks, Shared, SharedRef};
use crate::tool::{Handler, Tool};
use crate::{WsConfig, SUBPROTOCOL};

/// The tools a server offers, shared by all its connections.
#[derive(Default)]
pub struct ToolRegistry {
    tools: RwLock<BTreeMap<String, Arc<Tool>>>,
}

impl ToolRegistry {
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Tool>> {
        self.tools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    fn insert(&self, tool: Tool) {
        self.tools
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tool.def.name.as_str().to_owned(), Arc::new(tool));
    }

    fn remove(&self, name: &str) -> bool {
        self.tools
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .is_some()
    }

    fn defs(&self) -> Vec<asp_proto::frame::ToolDef> {
        self.tools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|t| t.def.clone())
            .collect()
    }
}

/// Checks a bearer token; receives the upgrade request.
pub type AuthHook = Arc<dyn Fn(&Request) -> bool + Send + Sync>;

/// Who may upgrade, and how (SPEC §2.1, §13.1).
#[derive(Clone)]
pub struct UpgradePolicy {
    /// The ASP path. Default `/v1/agent-socket`.
    pub path: String,
    /// Allowed `Origin` values for browser clients; `None` allows any (and requests without
    /// an `Origin` header, i.e. non-browser clients, are always allowed).
    pub origins: Option<Vec<String>>,
    /// Authentication: `None` accepts everyone.
    pub auth: Option<AuthHook>,
}

impl Default for UpgradePolicy {
    fn default() -> Self {
        UpgradePolicy {
            path: crate::DEFAULT_PATH.to_owned(),
            origins: None,
            auth: None,
        }
    }
}

fn refuse(status: StatusCode, body: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(body.to_owned()));
    *r.status_mut() = status;
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert("WWW-Authenticate", HeaderValue::from_static("Bearer"));
    }
    r
}

impl UpgradePolicy {
    /// Decides an upgrade (the signature is tungstenite's handshake callback): 404 wrong path, 403 Origin not allowed, 401 authentication
    /// failed, 400 `asp-v1` not offered; otherwise selects `asp-v1`.
    #[allow(clippy::result_large_err)] // tungstenite's `Callback` fixes this error type
    pub fn check(&self, req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
        if req.uri().path() != self.path {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                "no ASP endpoint at this path",
            ));
        }
        if let (Some(allowed), Some(origin)) = (&self.origins, req.headers().get("Origin")) {
            let ok = origin
                .to_str()
                .is_ok_and(|o| allowed.iter().any(|a| a == o));
            if !ok {
                return Err(refuse(StatusCode::FORBIDDEN, "Origin not allowed"));
            }
        }
        if let Some(auth) = &self.auth {
            if !auth(req) {
                return Err(refuse(StatusCode::UNAUTHORIZED, "authentication required"));
            }
        }
        let offered = req
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == SUBPROTOCOL);
        if !offered {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "ASP requires the WebSocket subprotocol asp-v1 (Sec-WebSocket-Protocol: asp-v1)",
            ));
        }
        resp.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        Ok(resp)
    }
}

/// An auth hook that accepts exactly `Authorization: Bearer <token>`.
pub fn bearer_token(token: impl Into<String>) -> AuthHook {
    let expected = format!("Bearer {}", token.into());
    Arc::new(move |req: &Request| {
        req.headers()
            .get("Authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| constant_time_eq(v.as_bytes(), expected.as_bytes()))
    })
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Builds and starts a [`Server`].
pub struct ServerBuilder<R: Runtime> {
    rt: R,
    addr: SocketAddr,
    policy: UpgradePolicy,
    config: Config,
    tools: Vec<Tool>,
    fallback: Option<Arc<Tool>>,
    hook: Option<Arc<dyn ConnectionHook>>,
    max_connections: usize,
    ws: WsConfig,
    resume: bool,
}

impl<R: Runtime> ServerBuilder<R> {
    /// Defaults: `127.0.0.1:0`, path `/v1/agent-socket`, no auth, 10 000 connections.
    pub fn new(rt: R) -> Self {
        ServerBuilder {
            rt,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            policy: UpgradePolicy::default(),
            config: crate::default_config(),
            tools: Vec::new(),
            fallback: None,
            hook: None,
            max_connections: 10_000,
            ws: crate::default_ws_config(),
            resume: false,
        }
    }

    /// The address to listen on.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// The WebSocket path.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.policy.path = path.into();
        self
    }

    /// Requires `Authorization: Bearer <token>`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.policy.auth = Some(bearer_token(token));
        self
    }

    /// A custom authentication hook over the upgrade request.
    pub fn auth(mut self, hook: impl Fn(&Request) -> bool + Send + Sync + 'static) -> Self {
        self.policy.auth = Some(Arc::new(hook));
        self
    }

    /// Allows browser clients from `origin` (once any origin is allowed, others get 403).
    pub fn allow_origin(mut self, origin: impl Into<String>) -> Self {
        self.policy
            .origins
            .get_or_insert_with(Vec::new)
            .push(origin.into());
        self
    }

    /// At most this many connections; more get HTTP 503.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Protocol configuration (limits, heartbeat, rate limit…).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Offers session resume (SPEC §11; the same as [`Config::resume`], which
    /// [`config`](Self::config) may also set): each connection gets a random resume token,
    /// and a client whose transport drops may continue its session on a new one within
    /// [`Config::resume_window`] (detached sessions still count as connections meanwhile).
    pub fn resume(mut self, on: bool) -> Self {
        self.resume = on;
        self
    }

    /// Adds a tool.
    pub fn tool(mut self, tool: Tool) -> Self {
        self.tools.push(tool);
        self
    }

    /// Runs INVOKEs of tools that are not in the registry (a relay forwards every tool to
    /// its functions). The core refuses unknown tools with UNKNOWN_TOOL before they get
    /// here unless [`Config::check_tools`] is off.
    pub fn fallback(mut self, handler: impl Handler) -> Self {
        self.fallback = Some(Arc::new(Tool::new("*", handler)));
        self
    }

    /// Tells `hook` about every connection as it opens and closes.
    pub fn on_connection(mut self, hook: impl ConnectionHook) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// WebSocket settings (buffer sizes, message limits). Default
    /// [`default_ws_config`](crate::default_ws_config).
    pub fn ws_config(mut self, ws: WsConfig) -> Self {
        self.ws = ws;
        self
    }

    /// Binds and starts accepting connections in the background.
    pub async fn start(self) -> std::io::Result<Server<R>> {
        let listener = self.rt.bind(self.addr).await?;
        let addr = self.rt.local_addr(&listener)?;
        let registry = Arc::new(ToolRegistry::default());
        for t in self.tools {
            registry.insert(t);
        }
        let mut config = self.config;
        config.resume |= self.resume;
        let resume = config.resume.then(|| Arc::new(ResumeTable::new()));
        let inner = Arc::new(Inner {
            rt: self.rt.clone(),
            tools: registry,
            fallback: self.fallback,
            hook: self.hook,
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            live: AtomicUsize::new(0),
            max_connections: self.max_connections,
            policy: self.policy,
            config,
            resume,
            ws: self.ws,
            stopping: AtomicBool::new(false),
            stop: Notify::default(),
            idle_wakers: Mutex::new(Vec::new()),
            id_seed: std::collections::hash_map::RandomState::new(),
        });
        let accept = accept_loop(inner.clone(), listener);
        self.rt.spawn(Box::pin(accept));
        Ok(Server { inner, addr })
    }
}

struct Inner<R: Runtime> {
    rt: R,
    tools: Arc<ToolRegistry>,
    fallback: Option<Arc<Tool>>,
    hook: Option<Arc<dyn ConnectionHook>>,
    conns: Mutex<HashMap<u64, SharedRef>>,
    next_conn: AtomicU64,
    live: AtomicUsize,
    max_connections: usize,
    policy: UpgradePolicy,
    config: Config,
    resume: Option<Arc<ResumeTable>>,
    ws: WsConfig,
    stopping: AtomicBool,
    stop: Notify,
    idle_wakers: Mutex<Vec<Waker>>,
    id_seed: std::collections::hash_map::RandomState,
}

/// A running ASP server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server<R: Runtime> {
    inner: Arc<Inner<R>>,
    addr: SocketAddr,
}

impl<R: Runtime> std::fmt::Debug for Server<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

impl<R: Runtime> Server<R> {
    /// A builder on runtime `rt`.
    pub fn builder(rt: R) -> ServerBuilder<R> {
        ServerBuilder::new(rt)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://addr/path` for clients.
    pub fn url(&self) -> String {
        format!("ws://{}{}", self.addr, self.inner.policy.path)
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.inner.live.load(Ordering::Acquire)
    }

    /// Adds (or replaces) a tool; connected clients receive TOOL_DEF at once (SPEC §9).
    pub fn add_tool(&self, tool: Tool) {
        let def = tool.def.clone();
        self.inner.tools.insert(tool);
        self.each_conn(|s| {
            let _ = s.conn.add_tool(def.clone());
        });
    }

    /// Removes a tool; connected clients receive TOOL_DEF(remove).
    pub fn remove_tool(&self, name: &str) -> bool {
        let existed = self.inner.tools.remove(name);
        self.each_conn(|s| {
            let _ = s.conn.remove_tool(name);
        });
        existed
    }

    fn each_conn(&self, mut f: impl FnMut(&mut Shared)) {
        let conns: Vec<SharedRef> = self
            .inner
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for c in conns {
            let mut s = lock(&c);
            f(&mut s);
            s.pump();
        }
    }

    /// Graceful shutdown (SPEC §6.5): stop accepting, send GOAWAY to every client, let
    /// in-flight invocations finish for up to `timeout` (then they end with GOING_AWAY),
    /// and wait until every connection has closed.
    pub async fn shutdown(&self, timeout: Duration) {
        self.inner.stopping.store(true, Ordering::Release);
        self.inner.stop.notify();
        self.each_conn(|s| {
            let now = s.now();
            if s.conn.state() == State::Detached {
                // No new transport will be accepted: it can never resume.
                s.conn.close(CloseReason::Local);
                return;
            }
            s.conn.goaway(
                now,
                Some(Text::from_static("server shutting down")),
                timeout,
            );
        });
        let deadline = std::time::Instant::now() + timeout + Duration::from_secs(1);
        let idle = poll_fn(|cx| {
            if self.inner.live.load(Ordering::Acquire) == 0 {
                return Poll::Ready(());
            }
            self.inner
                .idle_wakers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(cx.waker().clone());
            if self.inner.live.load(Ordering::Acquire) == 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        let _ = select(Box::pin(idle), self.inner.rt.sleep_until(deadline)).await;
    }
}

async fn accept_loop<R: Runtime>(inner: Arc<Inner<R>>, listener: R::Listener) {
    loop {
        let next = match select(inner.rt.accept(&listener), Box::pin(inner.stop.notified())).await {
            Either::Left((r, _)) => r,
            Either::Right(_) => return,
        };
        if inner.stopping.load(Ordering::Acquire) {
            return;
        }
        let (tcp, peer) = match next.and_then(|(tcp, peer)| {
            inner.rt.set_nodelay(&tcp)?;
            Ok((tcp, peer))
        }) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let inner2 = inner.clone();
        #[allow(clippy::result_large_err)] // tungstenite's `Callback` fixes this error type
        inner.rt.spawn(Box::pin(async move {
            let full = inner2.live.fetch_add(1, Ordering::AcqRel) >= inner2.max_connections;
            let policy = inner2.policy.clone();
            // The upgrade request's headers, for the connection hook.
            let upgrade = Arc::new(Mutex::new(HeaderMap::new()));
            let keep = inner2.hook.is_some().then(|| upgrade.clone());
            let check: crate::runtime::UpgradeCheck = Box::new(move |req, resp| {
                if full {
                    return Err(refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many connections",
                    ));
                }
                let resp = policy.check(req, resp)?;
                if let Some(keep) = keep {
                    *keep.lock().unwrap_or_else(|e| e.into_inner()) = req.headers().clone();
                }
                Ok(resp)
            });
            match inner2.rt.upgrade(tcp, check, inner2.ws).await {
                Ok(ws) if !full => {
                    let headers =
                        std::mem::take(&mut *upgrade.lock().unwrap_or_else(|e| e.into_inner()));
                    serve(&inner2, ws, peer, headers).await
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(%peer, error = %e, "upgrade refused or failed"),
            }
            if inner2.live.fetch_sub(1, Ordering::AcqRel) == 1 {
                for w in inner2
                    .idle_wakers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .drain(..)
                {
                    w.wake();
                }
            }
        }));
    }
}

async fn serve<R: Runtime>(inner: &Arc<Inner<R>>, ws: R::Ws, peer: SocketAddr, upgrade: HeaderMap) {
    let n = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    let mut h = inner.id_seed.build_hasher();
    h.write_u64(n);
    let connection_id = format!("{:016x}", h.finish());
    let clock = Clock::new();
    let mut conn = Connection::server(
        inner.config.clone(),
        ServerParams {
            connection_id: Text::from(connection_id.as_str()),
            resume_token: inner
                .resume
                .as_ref()
                .and_then(|_| crate::resume::new_token()),
        },
        clock.now(),
    );
    for def in inner.tools.defs() {
        let _ = conn.add_tool(def);
    }
    let rt = inner.rt.clone();
    let spawn = Arc::new(move |f| rt.spawn(f));
    let span = tracing::info_span!("asp.conn", role = "server", id = %connection_id, %peer);
    let shared = Shared::new(
        conn,
        clock,
        Hooks::Server {
            tools: inner.tools.clone(),
            fallback: inner.fallback.clone(),
            resume: inner.resume.clone(),
        },
        spawn,
        span.clone(),
    );
    if inner.rt.yield_to_writer() {
        lock(&shared).yield_at = crate::tool::YIELD_AT;
    }
    inner
        .conns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(n, shared.clone());
    if inner.stopping.load(Ordering::Acquire) {
        let mut s = lock(&shared);
        let now = s.now();
        s.conn.goaway(now, None, Duration::from_secs(1));
    }
    let handle = ServerConnection::new(Arc::downgrade(&shared), Text::from(connection_id.as_str()));
    if let Some(hook) = &inner.hook {
        hook.connected(handle.clone(), &upgrade);
    }
    drop(upgrade);
    tracing::Instrument::instrument(driver::run(shared.clone(), ws, inner.rt.clone(), 0), span)
        .await;
    // The reader ended: wait for the writer to send the last frames and close. A resumable
    // session waits here while detached (the timers run on), and while a later transport
    // that resumed it runs. A connection whose RESUME moved its transport to another session
    // counts as closed at once.
    poll_fn(|cx| {
        let mut s = lock(&shared);
        if s.closed.is_some() {
            Poll::Ready(())
        } else {
            s.state_wakers.push(cx.waker().clone());
            Poll::Pending
        }
    })
    .await;
    if let Some(hook) = &inner.hook {
        hook.closed(&handle);
    }
    inner
        .conns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&n);
}
