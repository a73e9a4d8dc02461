//! The client: connect, invoke tools, stream their output, mirror the tool set.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use asp_proto::frame::{
    Complete, Metrics, RawValue, RequestId, Status, Stream as StreamFrame, ToolDef,
};
use asp_proto::{
    CloseReason, Config, Connection, InvocationOutcome, InvokeOptions, Session, State, ToolChange,
};
use bytes::Bytes;
use futures::future::{select, Either};
use futures::Stream;
use serde::Serialize;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;

use crate::config::{default_config, default_ws_config, host_port, WsConfig, SUBPROTOCOL};
use crate::driver;
use crate::error::Error;
use crate::request::RequestHandler;
use crate::runtime::{BoxFuture, Clock, Runtime, WsStream};
use crate::shared::{lock, wait_outcome, wake, Call, Hooks, Reconnect, Shared, SharedRef};
use crate::tls::{server_name, ClientTls, TlsError, PLAINTEXT_TO_TLS_BODY};
use crate::tool::to_value;

/// Builds a [`Client`].
pub struct ClientBuilder<R: Runtime> {
    rt: R,
    token: Option<String>,
    config: Config,
    on_request: Option<Arc<dyn RequestHandler>>,
    ws: WsConfig,
    resume: bool,
    tls: Option<ClientTls>,
}

/// The TLS side of dialing a `wss://` URL: built once per client, so reconnects reuse the
/// rustls session cache (TLS session resumption).
struct TlsDial {
    config: Arc<rustls::ClientConfig>,
    name: Option<String>,
    timeout: std::time::Duration,
}

/// Opens a new WebSocket to the server the client first connected to.
type Dial<R> = Arc<dyn Fn() -> BoxFuture<'static, Result<<R as Runtime>::Ws, Error>> + Send + Sync>;

/// Reconnect backoff: the first retry after this, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: std::time::Duration = std::time::Duration::from_millis(20);
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);

impl<R: Runtime> ClientBuilder<R> {
    /// A builder on runtime `rt` with default configuration.
    pub fn new(rt: R) -> Self {
        ClientBuilder {
            rt,
            token: None,
            config: default_config(),
            on_request: None,
            ws: default_ws_config(),
            resume: false,
            tls: None,
        }
    }

    /// TLS settings for `wss://` URLs (roots, extra CAs, client certificate, SNI name).
    /// Without them a `wss://` URL uses [`ClientTls::new`](crate::ClientTls::new)'s
    /// defaults: the platform's roots.
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sends `Authorization: Bearer <token>` on the upgrade.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The protocol configuration (limits, heartbeat…).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Answers server requests (SPEC §8). Without one, requests are declined (and with
    /// [`Config::accept_requests`] off, the server is told not to send any).
    pub fn on_request(mut self, handler: impl RequestHandler) -> Self {
        self.on_request = Some(Arc::new(handler));
        self
    }

    /// Resumes the session when the connection drops (SPEC §11; the same as
    /// [`Config::resume`], which [`config`](Self::config) may also set), if the server
    /// offers it. The client then redials the same URL (retrying with a short backoff,
    /// 20 ms doubling to 1 s) until [`Config::resume_window`] has passed, and continues the
    /// session: invocations in flight lose no chunk. If the server no longer knows the
    /// session, a new one starts on the new connection: invocations of the old one end with
    /// [`Error::Closed`], and [`Client::ready`] tells when the new one is usable. If the
    /// window passes, the client closes as without resume.
    pub fn resume(mut self, on: bool) -> Self {
        self.resume = on;
        self
    }

    /// Connects to `url` (`ws://host:port/path`, or `wss://…` over TLS) and completes the
    /// ASP handshake, including the initial tool set.
    pub async fn connect(self, url: &str) -> Result<Client<R>, Error> {
        let mut config = self.config;
        config.resume |= self.resume;
        let tls = if is_wss(url) {
            let settings = self.tls.unwrap_or_default();
            Some(Arc::new(TlsDial {
                config: settings.build().map_err(Error::Tls)?,
                name: settings.name_override().map(str::to_string),
                timeout: settings.timeout(),
            }))
        } else {
            None
        };
        let url: Arc<str> = url.into();
        let token: Option<Arc<str>> = self.token.map(Into::into);
        let ws = dial(
            self.rt.clone(),
            url.clone(),
            token.clone(),
            self.ws,
            tls.clone(),
        )
        .await?;
        let redial = config.resume.then(|| {
            let (rt, wsc) = (self.rt.clone(), self.ws);
            let dial: Dial<R> = Arc::new(move || {
                Box::pin(dial(
                    rt.clone(),
                    url.clone(),
                    token.clone(),
                    wsc,
                    tls.clone(),
                )) as BoxFuture<'static, Result<R::Ws, Error>>
            });
            dial
        });
        Client::start(self.rt, ws, config, self.on_request, redial).await
    }
}

fn is_wss(url: &str) -> bool {
    url.get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("wss://"))
}

/// Dials `url` (with TLS first for `wss://`) and completes the WebSocket upgrade with the
/// `asp-v1` subprotocol.
async fn dial<R: Runtime>(
    rt: R,
    url: Arc<str>,
    token: Option<Arc<str>>,
    ws: WsConfig,
    tls: Option<Arc<TlsDial>>,
) -> Result<R::Ws, Error> {
    let mut req = (*url)
        .into_client_request()
        .map_err(|e| Error::InvalidUrl(e.to_string()))?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    if let Some(t) = &token {
        let v = HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| Error::InvalidUrl("token is not a valid header value".into()))?;
        req.headers_mut().insert("Authorization", v);
    }
    let addr = host_port(&req)?;
    let tcp = rt
        .tcp_connect(addr)
        .await
        .map_err(|e| Error::Io(e.to_string()))?;
    rt.set_nodelay(&tcp).map_err(|e| Error::Io(e.to_string()))?;
    let tcp = match &tls {
        Some(tls) => {
            let host = match &tls.name {
                Some(n) => n.as_str(),
                None => req.uri().host().unwrap_or_default(),
            };
            let name = server_name(host).map_err(Error::Tls)?;
            let deadline = rt.now() + tls.timeout;
            match select(
                rt.tls_connect(tcp, name, tls.config.clone()),
                rt.sleep_until(deadline),
            )
            .await
            {
                Either::Left((Ok(tcp), _)) => tcp,
                Either::Left((Err(e), _)) => return Err(Error::Tls(TlsError::from_handshake(&e))),
                Either::Right(_) => {
                    return Err(Error::Tls(TlsError::HandshakeTimeout(tls.timeout)))
                }
            }
        }
        None => tcp,
    };
    let plaintext = tls.is_none();
    let (ws, resp) = rt
        .handshake(req, tcp, ws)
        .await
        .map_err(|e| upgrade_error(e, plaintext))?;
    let selected = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok());
    if selected != Some(SUBPROTOCOL) {
        return Err(Error::Subprotocol);
    }
    Ok(ws)
}

/// A failed upgrade as an [`Error`]; on a plaintext dial, names a TLS server on the other
/// end (our servers answer 400 with [`PLAINTEXT_TO_TLS_BODY`](crate::tls::PLAINTEXT_TO_TLS_BODY);
/// others answer with a TLS alert, which is no HTTP at all).
fn upgrade_error(e: tungstenite::Error, plaintext: bool) -> Error {
    // TLS 1.3 clients finish their handshake before the server checks a client certificate:
    // a refusal arrives as an alert during the upgrade.
    if let tungstenite::Error::Io(io) = &e {
        if io
            .get_ref()
            .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some())
        {
            return Error::Tls(TlsError::from_handshake(io));
        }
    }
    if plaintext {
        match &e {
            tungstenite::Error::Http(resp)
                if resp.status() == 400
                    && resp.body().as_deref() == Some(PLAINTEXT_TO_TLS_BODY.as_bytes()) =>
            {
                return Error::Tls(TlsError::PlaintextToTlsPort)
            }
            tungstenite::Error::HttpFormat(_) => return Error::Tls(TlsError::PlaintextToTlsPort),
            tungstenite::Error::Protocol(tungstenite::error::ProtocolError::HttparseError(_)) => {
                return Error::Tls(TlsError::PlaintextToTlsPort)
            }
            _ => {}
        }
    }
    Error::from(e)
}

/// The reconnect task of a detached session (SPEC §11.2 steps 2 and 6): redials with a
/// bounded backoff until the resume window has passed; on a new WebSocket, sends RESUME
/// and drives the session on it. The core closes the session itself when the window ends
/// (the lost transport's writer runs its timers meanwhile).
async fn reconnect<R: Runtime>(
    shared: SharedRef,
    rt: R,
    dial: Dial<R>,
    window: std::time::Duration,
) {
    let give_up = rt.now() + window;
    let mut backoff = FIRST_BACKOFF;
    loop {
        if lock(&shared).conn.state() != State::Detached {
            return; // closed meanwhile
        }
        match select(dial(), rt.sleep_until(give_up)).await {
            Either::Left((Ok(ws), _)) => {
                let gen = {
                    let mut s = lock(&shared);
                    if s.conn.state() != State::Detached {
                        return;
                    }
                    let now = s.now();
                    if s.conn.resume(now).is_err() {
                        return;
                    }
                    let gen = s.new_transport();
                    s.pump();
                    gen
                };
                tracing::debug!("reconnected: resuming the session");
                driver::run(shared, ws, rt, gen).await;
                return;
            }
            Either::Left((Err(e), _)) => tracing::debug!(error = %e, "reconnect failed"),
            Either::Right(_) => return,
        }
        let next = (rt.now() + backoff).min(give_up);
        rt.sleep_until(next).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A connected ASP client. Cheap to clone; all clones share the connection.
pub struct Client<R: Runtime> {
    shared: SharedRef,
    _rt: R,
}

impl<R: Runtime> Clone for Client<R> {
    fn clone(&self) -> Self {
        Client {
            shared: self.shared.clone(),
            _rt: self._rt.clone(),
        }
    }
}

impl<R: Runtime> std::fmt::Debug for Client<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl<R: Runtime> Client<R> {
    /// A builder for a client on `rt`.
    pub fn builder(rt: R) -> ClientBuilder<R> {
        ClientBuilder::new(rt)
    }

    /// Runs a client over an already-open WebSocket (any [`WsStream`](crate::WsStream)). Such a
    /// client cannot redial, so [`Config::resume`] is turned off.
    pub async fn over<S: WsStream>(
        rt: R,
        ws: S,
        mut config: Config,
        on_request: Option<Arc<dyn RequestHandler>>,
    ) -> Result<Client<R>, Error> {
        config.resume = false;
        Client::start(rt, ws, config, on_request, None).await
    }

    /// Runs a client over `ws`; with `redial`, a dropped connection is resumed (if
    /// `config.resume`).
    async fn start<S: WsStream>(
        rt: R,
        ws: S,
        mut config: Config,
        on_request: Option<Arc<dyn RequestHandler>>,
        redial: Option<Dial<R>>,
    ) -> Result<Client<R>, Error> {
        // Chunks wait in per-invocation buffers until the application takes them; credit
        // is granted only then, so the window bounds those buffers (SPEC §7.5).
        config.auto_credit = false;
        // A handler needs the `requests` capability. Without one, keep the configured
        // value (default on) so that requests are declined, as `ClientBuilder::on_request`
        // documents (`Hooks::Client` declines when there is no handler); forcing it off here
        // made the server's `ctx.ask` fail with `Unsupported` instead of seeing `Declined`.
        if on_request.is_some() {
            config.accept_requests = true;
        }
        let clock = Clock::new(&rt);
        let spawner = rt.clone();
        let spawn = Arc::new(move |f| spawner.spawn(f));
        let span = tracing::info_span!("asp.conn", role = "client");
        let window = config.resume_window;
        let reconnect = redial.filter(|_| config.resume).map(|dial| {
            let (rt, span) = (rt.clone(), span.clone());
            Arc::new(move |shared: SharedRef| {
                let task = reconnect(shared, rt.clone(), dial.clone(), window);
                rt.spawn(Box::pin(tracing::Instrument::instrument(
                    task,
                    span.clone(),
                )));
            }) as Reconnect
        });
        let conn = Connection::client(config, clock.now());
        let shared = Shared::new(
            conn,
            clock,
            Hooks::Client {
                on_request,
                reconnect,
            },
            spawn,
            span.clone(),
        );
        rt.spawn(Box::pin(tracing::Instrument::instrument(
            driver::run(shared.clone(), ws, rt.clone(), 0),
            span,
        )));
        lock(&shared).notify_writer();
        poll_fn(|cx| {
            let mut s = lock(&shared);
            if s.session.is_some() {
                Poll::Ready(Ok(()))
            } else if let Some(r) = &s.closed {
                Poll::Ready(Err(Error::Closed(r.clone())))
            } else {
                s.state_wakers.push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await?;
        Ok(Client { shared, _rt: rt })
    }

    /// The negotiated session.
    pub fn session(&self) -> Option<Session> {
        lock(&self.shared).session.clone()
    }

    /// The current tool set, as pushed by the server.
    pub fn tools(&self) -> Vec<ToolDef> {
        lock(&self.shared).conn.tools().cloned().collect()
    }

    /// A stream of tool-set changes from now on.
    pub fn tool_changes(&self) -> ToolChanges {
        let id = lock(&self.shared).watch();
        ToolChanges {
            shared: self.shared.clone(),
            id,
        }
    }

    /// Invokes `tool` with arguments from any serde value.
    pub fn invoke<T: Serialize + ?Sized>(&self, tool: &str, args: &T) -> Result<Invocation, Error> {
        self.invoke_raw(tool, Some(to_value(args)?), InvokeOptions::default())
    }

    /// Invokes `tool` with pre-encoded arguments and options.
    pub fn invoke_raw(
        &self,
        tool: &str,
        args: Option<RawValue>,
        opts: InvokeOptions,
    ) -> Result<Invocation, Error> {
        let mut s = lock(&self.shared);
        if let Some(r) = &s.closed {
            return Err(Error::Closed(r.clone()));
        }
        let id = s.conn.invoke(tool, args, opts)?;
        s.calls.insert(id.0, Call::default());
        s.pump();
        Ok(Invocation {
            id,
            shared: self.shared.clone(),
            done: false,
            taken: VecDeque::new(),
            consumed: 0,
        })
    }

    /// Waits until the session is usable on a live connection: the handshake is done, or,
    /// after the connection dropped (with [`ClientBuilder::resume`]), the session was
    /// resumed or a new one started. Fails once the client has closed.
    pub async fn ready(&self) -> Result<(), Error> {
        poll_fn(|cx| {
            let mut s = lock(&self.shared);
            if let Some(r) = &s.closed {
                Poll::Ready(Err(Error::Closed(r.clone())))
            } else if matches!(s.conn.state(), State::Open | State::Draining) {
                Poll::Ready(Ok(()))
            } else {
                s.state_wakers.push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Starts a graceful close (GOAWAY) and waits until the connection has closed. A session
    /// waiting to be resumed closes at once, and so does one that loses its transport while
    /// it drains (it would otherwise wait out the resume window to finish exchanges the
    /// application is done with).
    pub async fn close(&self) {
        {
            let mut s = lock(&self.shared);
            let now = s.now();
            if s.conn.in_flight() == 0 || s.conn.state() == State::Detached {
                s.conn.close(asp_proto::CloseReason::Local);
            } else {
                s.conn.goaway(now, None, std::time::Duration::from_secs(30));
            }
            s.pump();
        }
        poll_fn(|cx| {
            let mut s = lock(&self.shared);
            if s.closed.is_some() {
                return Poll::Ready(());
            }
            if s.conn.state() == State::Detached {
                s.conn.close(asp_proto::CloseReason::Local);
                s.pump();
                return Poll::Ready(());
            }
            s.state_wakers.push(cx.waker().clone());
            Poll::Pending
        })
        .await;
        self.closed().await;
    }

    /// Resolves when the connection has closed, with the reason.
    pub async fn closed(&self) -> asp_proto::CloseReason {
        poll_fn(|cx| {
            let mut s = lock(&self.shared);
            match &s.closed {
                Some(r) => Poll::Ready(r.clone()),
                None => {
                    s.state_wakers.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Whether the server sent GOAWAY (no new invocations on this connection).
    pub fn is_draining(&self) -> bool {
        lock(&self.shared).goaway
    }
}

/// The end of an invocation that completed (SPEC §5.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// ok, cancelled or failed.
    pub status: Status,
    /// The result value.
    pub result: Option<RawValue>,
    /// Metrics reported by the server.
    pub metrics: Metrics,
}

impl From<Complete> for Completion {
    fn from(c: Complete) -> Self {
        Completion {
            status: c.status,
            result: c.result,
            metrics: c.metrics,
        }
    }
}

/// A chunk of output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The data.
    pub data: Bytes,
    /// Sent as text (valid UTF-8).
    pub text: bool,
    /// The last chunk.
    pub fin: bool,
}

impl Chunk {
    /// The data as text, if it was sent as text.
    pub fn as_str(&self) -> Option<&str> {
        self.text
            .then(|| std::str::from_utf8(&self.data).ok())
            .flatten()
    }
}

impl From<StreamFrame> for Chunk {
    fn from(s: StreamFrame) -> Self {
        Chunk {
            data: s.data,
            text: s.text,
            fin: s.fin,
        }
    }
}

/// An invocation in flight: a [`Stream`] of its chunks, then [`Invocation::completion`].
/// Dropping it before the end interrupts the invocation.
pub struct Invocation {
    id: RequestId,
    shared: SharedRef,
    done: bool,
    /// Chunks taken from the connection in one batch (everything that had arrived), handed
    /// out without locking it again: one lock per batch rather than per chunk.
    taken: VecDeque<StreamFrame>,
    /// Bytes handed to the application and not yet credited back to the core (SPEC §7.5);
    /// released at the next lock, which happens before this handle ever waits, so credit
    /// never lags behind what the application has read when it asks for more.
    consumed: usize,
}

impl std::fmt::Debug for Invocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Invocation({:?})", self.id)
    }
}

impl Invocation {
    /// The request id.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// Sends INTERRUPT (SPEC §7.3); the server ends the invocation, normally with
    /// status `cancelled`, which [`Invocation::completion`] then returns.
    pub fn interrupt(&self) {
        let mut s = lock(&self.shared);
        let _ = s.conn.interrupt(self.id, None);
        s.pump();
    }

    /// Waits for the end, discarding chunks not yet read.
    pub async fn completion(mut self) -> Result<Completion, Error> {
        self.release_taken();
        let outcome = wait_outcome(
            &self.shared,
            self.id,
            |c| c.invocation.take(),
            InvocationOutcome::Lost,
        )
        .await;
        self.done = true;
        match outcome {
            InvocationOutcome::Complete(c) => Ok((*c).into()),
            InvocationOutcome::Error(e) => Err(Error::Remote(e)),
            InvocationOutcome::Lost(r) => Err(Error::Closed(r)),
            // A way to end that a later core adds.
            _ => Err(Error::Closed(CloseReason::Local)),
        }
    }
}

impl Stream for Invocation {
    type Item = Chunk;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        let this = self.get_mut();
        if let Some(chunk) = this.taken.pop_front() {
            this.consumed += chunk.data.len();
            return Poll::Ready(Some(chunk.into()));
        }
        let id = this.id;
        let mut s = lock(&this.shared);
        let consumed = std::mem::take(&mut this.consumed);
        let Some(call) = s.calls.get_mut(&id.0) else {
            return Poll::Ready(None);
        };
        // Swap the queues: the connection keeps the (empty) allocation of ours.
        std::mem::swap(&mut call.chunks, &mut this.taken);
        let next = this.taken.pop_front();
        let ended = call.ended();
        if next.is_none() && !ended {
            call.waker = Some(cx.waker().clone());
        }
        if consumed > 0 {
            s.conn.release(id, consumed);
            s.pump();
        }
        match next {
            Some(chunk) => {
                this.consumed += chunk.data.len();
                Poll::Ready(Some(chunk.into()))
            }
            None if ended => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

impl Invocation {
    /// Bytes this handle owes the core credit for: read, or taken but not read.
    fn held(&mut self) -> usize {
        let unread: usize = self.taken.drain(..).map(|c| c.data.len()).sum();
        std::mem::take(&mut self.consumed) + unread
    }

    /// Credits back what this handle holds.
    fn release_taken(&mut self) {
        let n = self.held();
        if n > 0 {
            let mut s = lock(&self.shared);
            s.conn.release(self.id, n);
            s.pump();
        }
    }
}

impl Drop for Invocation {
    fn drop(&mut self) {
        let held = self.held();
        if self.done && held == 0 {
            // `completion` ended the exchange and removed the call (`wait_outcome`), and it
            // released what was held: nothing left to do, so no lock (one of four per call
            // on the round-trip path; README, issue 19).
            return;
        }
        let mut s = lock(&self.shared);
        if let Some(call) = s.calls.remove(&self.id.0) {
            let unread: usize = call.chunks.iter().map(|c| c.data.len()).sum();
            s.conn.release(self.id, held + unread);
            if !call.ended() && !self.done {
                let _ = s.conn.interrupt(self.id, None);
            }
            s.pump();
        }
        // No call left: the exchange is over and credit no longer matters.
    }
}

/// A stream of [`ToolChange`]s (see [`Client::tool_changes`]).
pub struct ToolChanges {
    shared: SharedRef,
    id: u64,
}

impl Stream for ToolChanges {
    type Item = ToolChange;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ToolChange>> {
        let mut s = lock(&self.shared);
        let closed = s.closed.is_some();
        let Some(w) = s.watchers.get_mut(&self.id) else {
            return Poll::Ready(None);
        };
        if let Some(c) = w.queue.pop_front() {
            return Poll::Ready(Some(c));
        }
        if closed {
            return Poll::Ready(None);
        }
        w.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for ToolChanges {
    fn drop(&mut self) {
        let mut s = lock(&self.shared);
        if let Some(mut w) = s.watchers.remove(&self.id) {
            wake(&mut w.waker);
        }
    }
}
