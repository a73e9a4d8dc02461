//! The server: accept WebSocket upgrades (auth, Origin, subprotocol), run tools, push tool
//! changes to every client, shut down gracefully.

use std::collections::{BTreeMap, HashMap};
use std::future::poll_fn;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use asp_proto::frame::Text;
use asp_proto::{CloseReason, Config, Connection, ServerParams, State};
use futures::future::{select, Either};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::{HeaderMap, HeaderValue, StatusCode};

use crate::config::{default_config, server_ws_config, WsConfig, DEFAULT_PATH, SUBPROTOCOL};
use crate::connection::{ConnectionHook, ServerConnection};
use crate::driver;
use crate::resume::{new_token, ResumeTable};
use crate::runtime::{Clock, Notify, Runtime, UpgradeCheck};
use crate::shared::{lock, Hooks, Shared, SharedRef, StartTool, StoreHooks};
use crate::store::SessionStore;
use crate::tls::ServerTls;
use crate::tool::{starter, Handler, Tool, ToolRegistry, YIELD_AT};
use crate::util::constant_time_eq;

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
            path: DEFAULT_PATH.to_owned(),
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
    upgrades: UpgradeLimits,
    ws: Option<WsConfig>,
    resume: bool,
    tls: Option<ServerTls>,
    store: Option<Arc<dyn SessionStore>>,
}

/// Bounds on connections that have not completed the WebSocket upgrade (SPEC §13.1). They
/// are counted apart from established connections, with limits of their own, so that
/// half-open connections (a bare connect, an upgrade request trickled a byte at a time)
/// can never starve established clients or take their slots.
#[derive(Clone, Copy, Debug)]
struct UpgradeLimits {
    timeout: Duration,
    max_pending: usize,
    max_pending_per_address: usize,
}

impl<R: Runtime> ServerBuilder<R> {
    /// Defaults: `127.0.0.1:0`, path `/v1/agent-socket`, no auth, 10 000 connections; at
    /// most 1 024 connections (128 per source address) still in the WebSocket upgrade, each
    /// given 5 s to complete it.
    pub fn new(rt: R) -> Self {
        ServerBuilder {
            rt,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            policy: UpgradePolicy::default(),
            config: default_config(),
            tools: Vec::new(),
            fallback: None,
            hook: None,
            max_connections: 10_000,
            upgrades: UpgradeLimits {
                timeout: Duration::from_secs(5),
                max_pending: 1024,
                max_pending_per_address: 128,
            },
            ws: None,
            resume: false,
            tls: None,
            store: None,
        }
    }

    /// Terminates TLS: clients connect with `wss://`, and [`Server::url`] says so. Keep a
    /// clone of `tls` to [`reload`](crate::ServerTls::reload) the certificate later.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
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

    /// At most this many established connections (upgraded to WebSocket); more get HTTP
    /// 503. Connections still in the upgrade are not counted here
    /// ([`max_pending_upgrades`](Self::max_pending_upgrades)).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Time allowed from accepting a TCP connection to the end of its WebSocket upgrade
    /// (the request read, checked and answered). A connection that takes longer is closed
    /// without an answer. Default 5 s. (The upgrade request's size is bounded by tungstenite:
    /// 64 KiB, and it refuses requests trickled in tiny pieces.)
    pub fn upgrade_timeout(mut self, timeout: Duration) -> Self {
        self.upgrades.timeout = timeout;
        self
    }

    /// At most `total` connections may be in the WebSocket upgrade at once, and at most
    /// `per_address` from one source IP address; a connection beyond either takes the
    /// place of the oldest one still in the upgrade (of its address, or of all), which is
    /// closed, so that half-open connections cannot keep a real client out, even from
    /// their own address. Defaults 1 024 and 128 (0 refuses every connection). Established connections never count
    /// against these limits, and these connections never against `max_connections`.
    pub fn max_pending_upgrades(mut self, total: usize, per_address: usize) -> Self {
        self.upgrades.max_pending = total;
        self.upgrades.max_pending_per_address = per_address;
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

    /// Keeps every resumable session in `store` too, so that a client whose server process
    /// is gone can resume on another one sharing the store (SPEC §11.4; a relay cluster,
    /// §15.6). Turns resume on. Output waits for each snapshot to be stored (see
    /// [`SessionStore`](crate::SessionStore)).
    pub fn session_store(mut self, store: impl SessionStore) -> Self {
        self.store = Some(Arc::new(store));
        self.resume = true;
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
    /// [`server_ws_config`](crate::server_ws_config) of the protocol configuration: small
    /// buffers that grow on demand, and a message limit that bounds buffered input.
    pub fn ws_config(mut self, ws: WsConfig) -> Self {
        self.ws = Some(ws);
        self
    }

    /// Binds and starts accepting connections in the background.
    pub async fn start(self) -> std::io::Result<Server<R>> {
        let tls = match &self.tls {
            Some(t) => Some((
                t.build()
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
                t.timeout(),
            )),
            None => None,
        };
        let listener = self.rt.bind(self.addr).await?;
        let addr = self.rt.local_addr(&listener)?;
        let registry = Arc::new(ToolRegistry::default());
        for t in self.tools {
            registry.insert(t);
        }
        let mut config = self.config;
        config.resume |= self.resume;
        let ws = self.ws.unwrap_or_else(|| server_ws_config(&config));
        let resume = config.resume.then(|| Arc::new(ResumeTable::new()));
        let inner = Arc::new(Inner {
            rt: self.rt.clone(),
            start_tool: starter(registry.clone(), self.fallback),
            tools: registry,
            hook: self.hook,
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            live: AtomicUsize::new(0),
            max_connections: self.max_connections,
            upgrades: self.upgrades,
            pending: Mutex::new(Pending::default()),
            policy: self.policy,
            config,
            resume,
            ws,
            tls,
            store: self.store,
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
    /// Runs the tools of `tools`, then the fallback (`ServerBuilder::fallback`).
    start_tool: StartTool,
    hook: Option<Arc<dyn ConnectionHook>>,
    conns: Mutex<HashMap<u64, SharedRef>>,
    next_conn: AtomicU64,
    /// Established connections (upgraded), and those admitted by the upgrade check whose
    /// upgrade is being answered.
    live: AtomicUsize,
    max_connections: usize,
    upgrades: UpgradeLimits,
    pending: Mutex<Pending>,
    policy: UpgradePolicy,
    config: Config,
    resume: Option<Arc<ResumeTable<Mutex<Shared>>>>,
    ws: WsConfig,
    tls: Option<(Arc<rustls::ServerConfig>, Duration)>,
    store: Option<Arc<dyn SessionStore>>,
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

    /// `ws://addr/path` (`wss://` with TLS) for clients.
    pub fn url(&self) -> String {
        let scheme = if self.inner.tls.is_some() {
            "wss"
        } else {
            "ws"
        };
        format!("{scheme}://{}{}", self.addr, self.inner.policy.path)
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

    /// Stops accepting connections (the listener closes); open connections go on. A later
    /// [`shutdown`](Self::shutdown) drains them. A server sharing a
    /// [`SessionStore`](crate::SessionStore) stops adopting sessions too, so a draining
    /// process can move its sessions to the others (SPEC §15.6).
    pub fn stop_accepting(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        self.inner.stop.notify();
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
        let deadline = self.inner.rt.now() + timeout + Duration::from_secs(1);
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
        // SPEC §13.1: connections still in the upgrade have limits of their own.
        let Some(slot) = PendingSlot::take(&inner, peer.ip()) else {
            tracing::debug!(%peer, "too many connections in the WebSocket upgrade: closed");
            continue;
        };
        let inner2 = inner.clone();
        inner.rt.spawn(Box::pin(async move {
            // The upgrade and the connection are two tasks: the upgrade's state (handshake,
            // its timer) is freed once it is done, instead of staying in the one future an
            // established connection lives in for hours (README: memory per idle
            // connection).
            if let Some((ws, headers)) = upgrade(&inner2, tcp, peer, slot).await {
                let serving = serve(&inner2, ws, peer, headers);
                let inner3 = inner2.clone();
                inner2.rt.spawn(Box::pin(async move {
                    serving.await;
                    release_live(&inner3);
                }));
            }
        }));
    }
}

/// An established connection (counted in `live`) has ended.
fn release_live<R: Runtime>(inner: &Inner<R>) {
    if inner.live.fetch_sub(1, Ordering::AcqRel) == 1 {
        for w in inner
            .idle_wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            w.wake();
        }
    }
}

/// Connections in the WebSocket upgrade, in all and per source address, each with the
/// signal that evicts it, oldest first (ids grow with acceptance).
#[derive(Default)]
struct Pending {
    next_id: u64,
    all: BTreeMap<u64, (IpAddr, Arc<Notify>)>,
    by_address: HashMap<IpAddr, std::collections::VecDeque<u64>>,
}

impl Pending {
    /// Takes connection `id` out; `false` if it was not there (already evicted).
    fn remove(&mut self, id: u64) -> bool {
        let Some((ip, _)) = self.all.remove(&id) else {
            return false;
        };
        if let std::collections::hash_map::Entry::Occupied(mut e) = self.by_address.entry(ip) {
            e.get_mut().retain(|&x| x != id);
            if e.get().is_empty() {
                e.remove();
            }
        }
        true
    }

    /// Evicts connection `id`: its slot is free at once, and its upgrade task drops the
    /// socket when it next runs.
    fn evict(&mut self, id: u64) {
        if let Some((_, evicted)) = self.all.get(&id) {
            evicted.notify();
        }
        self.remove(id);
    }
}

/// One connection's place among those in the upgrade; given back when dropped.
struct PendingSlot<R: Runtime> {
    inner: Arc<Inner<R>>,
    id: u64,
    /// Set when a newer connection took this one's place.
    evicted: Arc<Notify>,
}

impl<R: Runtime> PendingSlot<R> {
    /// SPEC §13.1: a place among the connections in the upgrade. When the limit in all or
    /// for this source address is reached, the oldest connection still in the upgrade
    /// (of this address, or of all) is closed to make room, rather than the new one
    /// refused: a real client completes its upgrade within a round trip, while half-open
    /// connections only ever wait, so a flood of them from the client's own address (a
    /// NAT, a proxy) or from many addresses cannot keep it out; it only turns over the
    /// flood's own connections faster.
    fn take(inner: &Arc<Inner<R>>, ip: IpAddr) -> Option<PendingSlot<R>> {
        let limits = inner.upgrades;
        if limits.max_pending == 0 || limits.max_pending_per_address == 0 {
            return None;
        }
        let mut p = inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        let from_ip = p.by_address.get(&ip).map_or(0, |q| q.len());
        if from_ip >= limits.max_pending_per_address {
            if let Some(&oldest) = p.by_address.get(&ip).and_then(|q| q.front()) {
                p.evict(oldest);
            }
        }
        if p.all.len() >= limits.max_pending {
            if let Some(oldest) = p.all.keys().next().copied() {
                p.evict(oldest);
            }
        }
        let id = p.next_id;
        p.next_id += 1;
        let evicted = Arc::new(Notify::default());
        p.all.insert(id, (ip, evicted.clone()));
        p.by_address.entry(ip).or_default().push_back(id);
        Some(PendingSlot {
            inner: inner.clone(),
            id,
            evicted,
        })
    }
}

impl<R: Runtime> Drop for PendingSlot<R> {
    fn drop(&mut self) {
        let mut p = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.remove(self.id);
    }
}

/// Runs the upgrade within its time limit and gives its pending slot back. Returns the
/// WebSocket and the upgrade request's headers once the connection is established (and
/// counted in `live`).
async fn upgrade<R: Runtime>(
    inner: &Arc<Inner<R>>,
    tcp: R::Tcp,
    peer: SocketAddr,
    slot: PendingSlot<R>,
) -> Option<(R::Ws, HeaderMap)> {
    let policy = inner.policy.clone();
    // The upgrade request's headers, for the connection hook.
    let upgrade = Arc::new(Mutex::new(HeaderMap::new()));
    let keep = inner.hook.is_some().then(|| upgrade.clone());
    // Set by the check once the connection has a place among the established ones.
    let admitted = Arc::new(AtomicBool::new(false));
    let admitted2 = admitted.clone();
    let inner2 = inner.clone();
    #[allow(clippy::result_large_err)] // tungstenite's `Callback` fixes this error type
    let check: UpgradeCheck = Box::new(move |req, resp| {
        let resp = policy.check(req, resp)?;
        // Counted here, when the request is whole and acceptable: an upgrade still being
        // read takes no place among the established connections.
        let max = inner2.max_connections;
        let took = inner2
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !took {
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections",
            ));
        }
        admitted2.store(true, Ordering::Release);
        if let Some(keep) = keep {
            *keep.lock().unwrap_or_else(|e| e.into_inner()) = req.headers().clone();
        }
        Ok(resp)
    });
    let deadline = inner.rt.now() + inner.upgrades.timeout;
    // The TLS handshake, if any, and the upgrade share the upgrade's time limit and pending
    // slot: a connection that never finishes either never holds a place for long.
    let handshake_and_upgrade = async {
        match tls_handshake(inner, tcp, peer).await {
            Some(tcp) => inner.rt.upgrade(tcp, check, inner.ws).await,
            None => Err(tungstenite::Error::ConnectionClosed),
        }
    };
    // Ends the upgrade: its time is up, or a newer connection took its pending slot.
    let evicted = slot.evicted.clone();
    let sleep = inner.rt.sleep_until(deadline);
    let stop = Box::pin(async move {
        let _ = select(sleep, evicted.notified()).await;
    });
    let upgraded = select(Box::pin(handshake_and_upgrade), stop).await;
    drop(slot);
    let live = admitted.load(Ordering::Acquire);
    match upgraded {
        Either::Left((Ok(ws), _)) if live => {
            let headers = std::mem::take(&mut *upgrade.lock().unwrap_or_else(|e| e.into_inner()));
            return Some((ws, headers));
        }
        Either::Left((Ok(_), _)) => {}
        Either::Left((Err(e), _)) => {
            tracing::debug!(%peer, error = %e, "upgrade refused or failed")
        }
        Either::Right(_) => {
            tracing::debug!(%peer, "upgrade not completed in time, or evicted: closed")
        }
    }
    if live {
        // Admitted by the check, but the upgrade did not complete.
        release_live(inner);
    }
    None
}

/// The TLS handshake of a TLS server (bounded by its timeout), or the connection as is.
/// `None` when it failed (logged here).
async fn tls_handshake<R: Runtime>(
    inner: &Inner<R>,
    tcp: R::Tcp,
    peer: SocketAddr,
) -> Option<R::Tcp> {
    let Some((config, timeout)) = &inner.tls else {
        return Some(tcp);
    };
    let deadline = inner.rt.now() + *timeout;
    match select(
        inner.rt.tls_accept(tcp, config.clone()),
        inner.rt.sleep_until(deadline),
    )
    .await
    {
        Either::Left((Ok(tcp), _)) => Some(tcp),
        Either::Left((Err(e), _)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Either::Right(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

fn server_hooks<R: Runtime>(inner: &Arc<Inner<R>>) -> Hooks {
    Hooks::Server {
        start_tool: inner.start_tool.clone(),
        resume: inner.resume.clone(),
        store: inner.store.clone().map(|store| {
            let weak = Arc::downgrade(inner);
            StoreHooks::new(
                store,
                Arc::new(move |bytes: &[u8]| adopt(&weak.upgrade()?, bytes)),
            )
        }),
    }
}

/// SPEC §11.4: a session another process held, loaded from the session store, becomes a
/// detached connection of this server (counted, announced to the hook, findable by its
/// token), ready for the RESUME that asked for it.
fn adopt<R: Runtime>(inner: &Arc<Inner<R>>, bytes: &[u8]) -> Option<SharedRef> {
    if inner.stopping.load(Ordering::Acquire) {
        return None;
    }
    let clock = Clock::new(&inner.rt);
    let mut conn = match Connection::restore(inner.config.clone(), bytes, clock.now()) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "stored session not restored");
            return None;
        }
    };
    conn.hold_until_persisted();
    let session = conn.session().cloned()?;
    let id = session.connection_id.clone();
    let n = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    let rt = inner.rt.clone();
    let spawn = Arc::new(move |f| rt.spawn(f));
    let span = tracing::info_span!("asp.conn", role = "server", id = %id, restored = true);
    let shared = Shared::new(conn, clock, server_hooks(inner), spawn, span.clone());
    let notify = {
        let mut s = lock(&shared);
        s.session = Some(session);
        s.register_resumable();
        s.notify.clone()
    };
    inner.live.fetch_add(1, Ordering::AcqRel);
    inner
        .conns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(n, shared.clone());
    let handle = ServerConnection::new(Arc::downgrade(&shared), id);
    if let Some(hook) = &inner.hook {
        hook.connected(handle.clone(), &HeaderMap::new());
    }
    // The resume window runs until a transport takes the session (a detached session's
    // timers, as after a transport loss); then the lifecycle of any connection.
    let (inner2, shared2, rt) = (inner.clone(), shared.clone(), inner.rt.clone());
    let life = async move {
        driver::detached_timers(&shared2, 0, &notify, &rt, &mut driver::Timer::new()).await;
        forget_when_closed(&inner2, &shared2, &handle, n).await;
        release_live(&inner2);
    };
    inner
        .rt
        .spawn(Box::pin(tracing::Instrument::instrument(life, span)));
    Some(shared)
}

/// Sets an established connection up and returns the future that runs it. The setup is
/// done here, not in that future, so that the future (which lives as long as the
/// connection) keeps only what it needs: the WebSocket goes straight into the driver's.
fn serve<R: Runtime>(
    inner: &Arc<Inner<R>>,
    ws: R::Ws,
    peer: SocketAddr,
    upgrade: HeaderMap,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let n = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    let mut h = inner.id_seed.build_hasher();
    h.write_u64(n);
    let connection_id = format!("{:016x}", h.finish());
    let clock = Clock::new(&inner.rt);
    let mut conn = Connection::server(
        inner.config.clone(),
        {
            let mut params = ServerParams::default();
            params.connection_id = Text::from(connection_id.as_str());
            params.resume_token = inner.resume.as_ref().and_then(|_| new_token());
            params
        },
        clock.now(),
    );
    for def in inner.tools.defs() {
        let _ = conn.add_tool(def);
    }
    if inner.store.is_some() {
        // SPEC §11.4: output waits for a stored snapshot (`crate::store`).
        conn.hold_until_persisted();
    }
    let rt = inner.rt.clone();
    let spawn = Arc::new(move |f| rt.spawn(f));
    let span = tracing::info_span!("asp.conn", role = "server", id = %connection_id, %peer);
    let shared = Shared::new(conn, clock, server_hooks(inner), spawn, span.clone());
    if inner.rt.yield_to_writer() {
        lock(&shared).yield_at = YIELD_AT;
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
    let driver =
        tracing::Instrument::instrument(driver::run(shared.clone(), ws, inner.rt.clone(), 0), span);
    let inner = inner.clone();
    async move {
        if let Some(hook) = &inner.hook {
            hook.prepare(handle.clone()).await;
        }
        driver.await;
        // The reader ended: wait for the writer to send the last frames and close. A resumable
        // session waits here while detached (the timers run on), and while a later transport
        // that resumed it runs. A connection whose RESUME moved its transport to another session
        // counts as closed at once.
        forget_when_closed(&inner, &shared, &handle, n).await;
    }
}

/// Waits until the connection has closed, tells the hook, and forgets the connection.
async fn forget_when_closed<R: Runtime>(
    inner: &Inner<R>,
    shared: &SharedRef,
    handle: &ServerConnection,
    n: u64,
) {
    poll_fn(|cx| {
        let mut s = lock(shared);
        if s.closed.is_some() {
            Poll::Ready(())
        } else {
            s.state_wakers.push(cx.waker().clone());
            Poll::Pending
        }
    })
    .await;
    if let Some(hook) = &inner.hook {
        hook.closed(handle);
    }
    inner
        .conns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&n);
}
