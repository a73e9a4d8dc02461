//! Per-connection state shared by the driver tasks and the application's handles.
//!
//! One `Connection` (the Sans-IO core) sits behind a mutex together with the wakers of the
//! futures waiting on it, as quinn does. Handles lock briefly, call the core, then
//! [`Shared::pump`] routes the core's events to whoever waits for them and wakes the writer
//! task if bytes are queued. No protocol decision is made here.
//!
//! Wake-ups decided under the lock are carried out after it is released ([`Guard`]): a
//! task woken while the lock is still held runs at once on another thread, finds the lock
//! taken and sleeps in the kernel until it is released — two context switches per wake-up
//! for nothing. On the client's stream path (the reader handing a message of many chunks to
//! a waiting `Invocation`) that was most of the multi-thread runtime's scheduler time.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::poll_fn;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Poll, Waker};

use asp_proto::frame::{Invoke, Reply, ReplyStatus, Request, RequestId, Stream};
use asp_proto::{Bytes, Snapshot};
use asp_proto::{
    CloseReason, Connection, ErrorCode, Event, InvocationOutcome, RequestOutcome, Session, State,
    ToolChange,
};
use futures::FutureExt;

use crate::request::RequestHandler;
use crate::resume::ResumeTable;
use crate::runtime::{BoxFuture, Clock, Notify};

/// Handle to one connection's shared state.
pub(crate) type SharedRef = Arc<Mutex<Shared>>;

/// Locks, recovering from a poisoned mutex (a panicking handler must not wedge the
/// connection: the core's state is consistent between calls).
pub(crate) fn lock(s: &Mutex<Shared>) -> Guard<'_> {
    Guard(Some(s.lock().unwrap_or_else(|e| e.into_inner())))
}

/// Waits for the outcome of an exchange we initiated (`take` picks it from the call's field
/// of its kind; `lost` makes one when the call is gone), releasing unread chunks.
pub(crate) async fn wait_outcome<T>(
    shared: &Arc<Mutex<Shared>>,
    id: RequestId,
    take: impl Fn(&mut Call) -> Option<T>,
    lost: impl Fn(CloseReason) -> T,
) -> T {
    poll_fn(|cx| {
        let mut s = lock(shared);
        let Some(call) = s.calls.get_mut(&id.0) else {
            return Poll::Ready(lost(CloseReason::Local));
        };
        let unread: usize = call.chunks.drain(..).map(|c| c.data.len()).sum();
        if let Some(o) = take(call) {
            s.calls.remove(&id.0);
            s.conn.release(id, unread);
            s.pump();
            return Poll::Ready(o);
        }
        call.waker = Some(cx.waker().clone());
        if unread > 0 {
            s.conn.release(id, unread);
            s.pump();
        }
        Poll::Pending
    })
    .await
}

/// The locked connection. Dropping it releases the lock, then wakes the tasks that
/// [`Shared::deferred`] collected meanwhile.
pub(crate) struct Guard<'a>(Option<MutexGuard<'a, Shared>>);

impl Deref for Guard<'_> {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        // Some until drop.
        self.0.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for Guard<'_> {
    fn deref_mut(&mut self) -> &mut Shared {
        self.0.as_deref_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let Some(mut g) = self.0.take() else { return };
        if g.deferred.is_empty() {
            return;
        }
        let wakers = std::mem::take(&mut g.deferred);
        drop(g);
        wakers.wake();
    }
}

/// Why a served exchange stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cancel {
    /// The peer sent INTERRUPT: finish with `cancelled`.
    Interrupted,
    /// The protocol already ended it (deadline, peer ERROR, close): send nothing.
    Aborted,
}

/// An exchange we initiated (client: invocation; server: request): its end arrives in the
/// field of its kind.
#[derive(Default)]
pub(crate) struct Call {
    pub(crate) chunks: VecDeque<Stream>,
    pub(crate) invocation: Option<InvocationOutcome>,
    pub(crate) request: Option<RequestOutcome>,
    pub(crate) waker: Option<Waker>,
}

impl Call {
    /// Whether the exchange has ended.
    pub(crate) fn ended(&self) -> bool {
        self.invocation.is_some() || self.request.is_some()
    }
}

/// An exchange the peer initiated that a task of ours is serving.
#[derive(Default)]
pub(crate) struct Served {
    pub(crate) cancel: Option<Cancel>,
    pub(crate) cancel_waker: Option<Waker>,
    pub(crate) writable_waker: Option<Waker>,
    pub(crate) started: Option<asp_proto::Instant>,
}

/// A subscriber to tool-set changes.
pub(crate) struct Watcher {
    pub(crate) queue: VecDeque<ToolChange>,
    pub(crate) waker: Option<Waker>,
    pub(crate) lagged: bool,
}

/// Bound on a tool watcher's backlog; older changes are dropped (and `lagged` set).
const WATCH_BACKLOG: usize = 1024;

/// Client: starts the reconnect task of a detached session (SPEC §11.2 step 2). Called
/// with the connection's lock held: it must only spawn.
pub(crate) type Reconnect = Arc<dyn Fn(SharedRef) + Send + Sync>;

/// Server: starts serving an accepted INVOKE: the future that runs its tool, in the span
/// given, or the INVOKE back when no tool has its name. Made by the tool layer above
/// (`tool::starter`, from the server's registry and fallback) and held as a closure, so that
/// this layer names nothing of the tools.
pub(crate) type StartTool = Arc<
    dyn Fn(Weak<Mutex<Shared>>, Invoke, tracing::Span) -> Result<BoxFuture<'static, ()>, Invoke>
        + Send
        + Sync,
>;

/// Rebuilds a session from snapshot bytes as a connection of this server (server.rs).
pub(crate) type Adopt = Arc<dyn Fn(&[u8]) -> Option<SharedRef> + Send + Sync>;

/// Stores a snapshot of a session, named by its connection id (`SessionStore::store`).
pub(crate) type Persist =
    Arc<dyn Fn(Weak<Mutex<Shared>>, asp_proto::frame::Text, Snapshot) + Send + Sync>;

/// A server's session store (SPEC §11.4) as this layer holds it: made by `store` from a
/// [`SessionStore`](crate::SessionStore) (`StoreHooks::new`), as closures, so that this layer
/// names nothing of the connection handles the store's methods take.
#[derive(Clone)]
pub(crate) struct StoreHooks {
    pub(crate) store: Persist,
    /// The stored snapshot of the session holding a token (`SessionStore::load`).
    pub(crate) load: Arc<dyn Fn(Bytes) -> BoxFuture<'static, Option<Bytes>> + Send + Sync>,
    /// Makes what `load` found a connection of this server.
    pub(crate) adopt: Adopt,
}

pub(crate) enum Hooks {
    Client {
        on_request: Option<Arc<dyn RequestHandler>>,
        /// Set when resume is on (`ClientBuilder::resume`).
        reconnect: Option<Reconnect>,
    },
    Server {
        /// Runs the server's tools (its registry, then `ServerBuilder::fallback`).
        start_tool: StartTool,
        /// The server's resumable sessions, when resume is on.
        resume: Option<Arc<ResumeTable<Mutex<Shared>>>>,
        /// Where sessions are kept for other processes (SPEC §11.4), if anywhere.
        store: Option<StoreHooks>,
    },
}

pub(crate) struct Shared {
    pub(crate) conn: Connection,
    pub(crate) clock: Clock,
    pub(crate) notify: Arc<Notify>,
    /// The driver of the current transport is running: it looks at the core again before it
    /// sleeps, so handles need not wake it (see `driver`).
    pub(crate) driving: bool,
    /// The core deadline the driver sleeps until (set by the driver before it sleeps).
    pub(crate) armed_timeout: Option<asp_proto::Instant>,
    // Keyed by request id; a BTreeMap avoids hashing on every chunk.
    pub(crate) calls: BTreeMap<u16, Call>,
    pub(crate) served: BTreeMap<u16, Served>,
    pub(crate) session: Option<Session>,
    pub(crate) closed: Option<CloseReason>,
    pub(crate) goaway: bool,
    pub(crate) state_wakers: Vec<Waker>,
    pub(crate) watchers: HashMap<u64, Watcher>,
    pub(crate) next_watcher: u64,
    pub(crate) hooks: Hooks,
    pub(crate) spawn: Arc<dyn Fn(BoxFuture<'static, ()>) + Send + Sync>,
    pub(crate) me: Weak<Mutex<Shared>>,
    pub(crate) span: tracing::Span,
    /// Transport generation: bumped whenever a new transport takes the session over
    /// ([`Shared::new_transport`]). Driver tasks remember the generation they started with
    /// and stop touching the connection once it changed, so exactly one transport's tasks
    /// drive the core at any time.
    pub(crate) generation: u64,
    /// Server, on a new connection whose RESUME matched a detached session: that session and
    /// its new transport generation. The reader hands the WebSocket over to it.
    pub(crate) handoff: Option<(SharedRef, u64)>,
    /// Server: the token this session is registered under in the resume table.
    resume_registered: Option<bytes::Bytes>,
    /// Set by the reader while it handles a message: handlers started meanwhile are
    /// collected in `starts` rather than spawned, and the reader polls each once itself
    /// after releasing the lock (see `driver::start_inline`).
    pub(crate) collect_starts: bool,
    pub(crate) starts: Vec<BoxFuture<'static, ()>>,
    /// Client: counts sessions (a refused resume starts a new one); request handlers of an
    /// old session must not answer the new session's requests, whose ids start over.
    pub(crate) session_epoch: u64,
    /// Wake-ups to carry out once the lock is released (see [`Guard`]).
    pub(crate) deferred: Deferred,
    /// Server: queued bytes at which a streaming handler gives way to the writer
    /// (`tool::StreamSend`); `usize::MAX` for never ([`crate::Runtime::yield_to_writer`]).
    pub(crate) yield_at: usize,
    /// Server with a session store: a snapshot is being stored (`crate::store`).
    pub(crate) storing: bool,
    /// `ServerConnection::detach` gave this transport up: its tasks stop without writing
    /// anything more (no Close either, even if the session closes before they notice), as
    /// after a transport loss. Reset by the next transport.
    pub(crate) transport_dropped: bool,
}

impl Shared {
    pub(crate) fn new(
        conn: Connection,
        clock: Clock,
        hooks: Hooks,
        spawn: Arc<dyn Fn(BoxFuture<'static, ()>) + Send + Sync>,
        span: tracing::Span,
    ) -> SharedRef {
        Arc::new_cyclic(|me| {
            Mutex::new(Shared {
                conn,
                clock,
                notify: Arc::new(Notify::default()),
                driving: false,
                armed_timeout: None,
                calls: BTreeMap::new(),
                served: BTreeMap::new(),
                session: None,
                closed: None,
                goaway: false,
                state_wakers: Vec::new(),
                watchers: HashMap::new(),
                next_watcher: 0,
                hooks,
                spawn,
                me: me.clone(),
                span,
                generation: 0,
                handoff: None,
                resume_registered: None,
                collect_starts: false,
                starts: Vec::new(),
                session_epoch: 0,
                deferred: Deferred::default(),
                yield_at: usize::MAX,
                storing: false,
                transport_dropped: false,
            })
        })
    }

    pub(crate) fn now(&self) -> asp_proto::Instant {
        self.clock.now()
    }

    /// Wakes the driver (once the lock is released), unless it is running.
    pub(crate) fn notify_writer(&mut self) {
        if self.driving {
            return;
        }
        if let Some(w) = self.notify.set() {
            self.deferred.push(w);
        }
    }

    /// A new transport takes the session over: returns its generation. The tasks of the
    /// previous transport see the change and stop (a detached session's timer task is woken
    /// for that); the new transport's writer gets a fresh wake-up flag, so that a stale task
    /// can never consume its notifications.
    pub(crate) fn new_transport(&mut self) -> u64 {
        self.generation += 1;
        self.transport_dropped = false;
        // The previous transport's driver may be running: wake it regardless.
        if let Some(w) = self.notify.set() {
            self.deferred.push(w);
        }
        self.driving = false;
        self.notify = Arc::new(Notify::default());
        self.armed_timeout = None;
        self.generation
    }

    /// Routes every pending core event, then wakes the writer if there is output. Call
    /// after every change to `conn`.
    pub(crate) fn pump(&mut self) {
        self.route(true);
    }

    /// [`Shared::pump`] after a command that only queued frames (`stream`): such a command
    /// cannot make the core want an earlier timeout, so the timer comparison, which is most
    /// of a pump's cost on the per-chunk path, is skipped.
    pub(crate) fn pump_sent(&mut self) {
        self.route(false);
    }

    fn route(&mut self, check_timer: bool) {
        while let Some(ev) = self.conn.poll_event() {
            self.dispatch(ev);
        }
        // SPEC §11.4: output waiting for a stored snapshot.
        self.maybe_store();
        // Also wake the writer when the core now wants a timeout earlier than the one the
        // writer sleeps until: an INVOKE with `deadline_ms` produces no output, so before
        // this the writer slept on until the next heartbeat (30 s by default) and the
        // deadline (SPEC §7.4) fired that late.
        let earlier = check_timer
            && match (self.conn.poll_timeout(), self.armed_timeout) {
                (Some(t), Some(armed)) => t < armed,
                (Some(_), None) => true,
                (None, _) => false,
            };
        if self.conn.wants_transmit() || self.conn.is_closed() || earlier {
            self.notify_writer();
        }
    }

    fn dispatch(&mut self, ev: Event) {
        match ev {
            Event::Connected(s) => {
                if self.session.is_some() {
                    // Client: the server refused a resume and a new session started (SPEC
                    // §11.2 step 4). Requests of the old session are gone.
                    for s in self.served.values_mut() {
                        s.cancel.get_or_insert(Cancel::Aborted);
                        defer(&mut self.deferred, &mut s.cancel_waker);
                        defer(&mut self.deferred, &mut s.writable_waker);
                    }
                }
                self.session_epoch += 1;
                self.session = Some(*s);
                self.register_resumable();
                defer_all(&mut self.deferred, &mut self.state_wakers);
            }
            Event::Invoked(inv) => self.start_handler(*inv),
            Event::Interrupted { id, .. } => self.cancel(id, Cancel::Interrupted),
            Event::Aborted { id, error } => {
                tracing::debug!(parent: &self.span, id = id.0, code = %error.code, "exchange aborted");
                self.cancel(id, Cancel::Aborted);
            }
            Event::Chunk(s) => match self.calls.get_mut(&s.id.0) {
                Some(call) => {
                    call.chunks.push_back(s);
                    defer(&mut self.deferred, &mut call.waker);
                }
                // Nobody listens any more (the handle was dropped): credit it back at once.
                None => self.conn.release(s.id, s.data.len()),
            },
            Event::InvocationEnded { id, outcome } => {
                if let Some(call) = self.calls.get_mut(&id.0) {
                    call.invocation = Some(outcome);
                    defer(&mut self.deferred, &mut call.waker);
                }
            }
            Event::RequestEnded { id, outcome } => {
                if let Some(call) = self.calls.get_mut(&id.0) {
                    call.request = Some(outcome);
                    defer(&mut self.deferred, &mut call.waker);
                }
            }
            Event::ToolsChanged(change) => {
                for w in self.watchers.values_mut() {
                    if w.queue.len() >= WATCH_BACKLOG {
                        w.queue.pop_front();
                        w.lagged = true;
                    }
                    w.queue.push_back((*change).clone());
                    defer(&mut self.deferred, &mut w.waker);
                }
            }
            Event::Requested(req) => self.start_request_handler(*req),
            Event::Writable { id } => {
                if let Some(s) = self.served.get_mut(&id.0) {
                    defer(&mut self.deferred, &mut s.writable_waker);
                }
            }
            Event::GoAway(_) => {
                self.goaway = true;
                defer_all(&mut self.deferred, &mut self.state_wakers);
            }
            Event::PeerError(e) => {
                tracing::warn!(parent: &self.span, code = %e.code, message = ?e.message, "peer reported an error");
            }
            Event::Violation(e) => {
                tracing::warn!(parent: &self.span, code = %e.code, message = ?e.message, "peer broke a protocol rule");
            }
            Event::ResumeRequested { token, received } => self.resume_requested(&token, received),
            Event::Detached => {
                tracing::debug!(parent: &self.span, "transport lost, session detached");
                if let Hooks::Client {
                    reconnect: Some(reconnect),
                    ..
                } = &self.hooks
                {
                    if let Some(me) = self.me.upgrade() {
                        reconnect(me);
                    }
                }
                defer_all(&mut self.deferred, &mut self.state_wakers);
            }
            Event::Resumed => {
                tracing::debug!(parent: &self.span, "session resumed");
                defer_all(&mut self.deferred, &mut self.state_wakers);
            }
            Event::Closed(reason) => {
                tracing::debug!(parent: &self.span, %reason, "connection closed");
                self.closed = Some(reason);
                if let (
                    Some(token),
                    Hooks::Server {
                        resume: Some(t), ..
                    },
                ) = (self.resume_registered.take(), &self.hooks)
                {
                    t.remove(&token, &self.me);
                }
                for c in self.calls.values_mut() {
                    defer(&mut self.deferred, &mut c.waker);
                }
                for s in self.served.values_mut() {
                    s.cancel.get_or_insert(Cancel::Aborted);
                    defer(&mut self.deferred, &mut s.cancel_waker);
                    defer(&mut self.deferred, &mut s.writable_waker);
                }
                for w in self.watchers.values_mut() {
                    defer(&mut self.deferred, &mut w.waker);
                }
                defer_all(&mut self.deferred, &mut self.state_wakers);
            }
            _ => {}
        }
    }

    /// Server: a resumable session is findable by its token (SPEC §11.2 step 3).
    pub(crate) fn register_resumable(&mut self) {
        let Hooks::Server {
            resume: Some(table),
            ..
        } = &self.hooks
        else {
            return;
        };
        if let Some(token) = self.conn.resume_token().cloned() {
            table.register(&token, self.me.clone());
            self.resume_registered = Some(token);
        }
    }

    /// Server, on a new connection: its first frame was RESUME. If the token names a live
    /// session of this server that can continue, that session takes this connection's
    /// transport over (`handoff`, carried out by the driver); otherwise the resume is
    /// refused and this connection waits for a HELLO.
    ///
    /// Lock order: this (new) connection is locked, and the old one is locked inside. Nobody
    /// locks them the other way round: this connection is not in the resume table (it never
    /// had a session), so no other connection's RESUME can reach it, and handles lock one
    /// connection at a time.
    fn resume_requested(&mut self, token: &[u8], received: u64) {
        let table = match &self.hooks {
            Hooks::Server {
                resume: Some(t), ..
            } => Some(t.clone()),
            _ => None,
        };
        let old = table.and_then(|t| t.find(token));
        // SPEC §11.4: a session this process does not hold may be in the store; the answer
        // waits for it (this connection stays `Resuming`).
        if old.is_none() && self.resume_from_store(token, received) {
            return;
        }
        self.take_over(old, received);
    }

    /// Server: the RESUME on this new connection found `old` (or nothing): the old session
    /// takes this transport over, or the resume is refused (SPEC §11.2 step 3).
    pub(crate) fn take_over(&mut self, old: Option<SharedRef>, received: u64) {
        let accepted = old.and_then(|old| {
            let mut o = lock(&old);
            // Each connection has its own clock.
            let now = o.now();
            if matches!(o.conn.state(), State::Open | State::Draining) {
                // The client resumes, so its old transport is gone even if we have not seen
                // it end yet (its EOF may still be on the way): detach now.
                o.conn.handle_transport_closed(now);
            }
            if o.conn.state() != State::Detached {
                o.pump();
                return None;
            }
            let r = o.conn.accept_resume(now, received);
            let gen = r.is_ok().then(|| o.new_transport());
            o.pump();
            drop(o);
            gen.map(|g| (old, g))
        });
        match accepted {
            Some(handoff) => {
                tracing::debug!(parent: &self.span, "RESUME accepted: moving the transport to its session");
                self.handoff = Some(handoff);
                // This connection is done: its tasks stop and its transport moves on.
                self.new_transport();
                self.closed = Some(CloseReason::Local);
                defer_all(&mut self.deferred, &mut self.state_wakers);
            }
            None => {
                tracing::debug!(parent: &self.span, "RESUME refused: unknown or expired session");
                let now = self.now();
                self.conn.reject_resume(now);
            }
        }
    }

    fn cancel(&mut self, id: RequestId, why: Cancel) {
        if let Some(s) = self.served.get_mut(&id.0) {
            s.cancel.get_or_insert(why);
            defer(&mut self.deferred, &mut s.cancel_waker);
            defer(&mut self.deferred, &mut s.writable_waker);
        }
    }

    fn start_handler(&mut self, inv: Invoke) {
        let Hooks::Server { start_tool, .. } = &self.hooks else {
            return;
        };
        let span =
            tracing::info_span!(parent: &self.span, "asp.invoke", id = inv.id.0, tool = %inv.tool);
        let id = inv.id;
        let fut = match start_tool(self.me.clone(), inv, span) {
            Ok(fut) => fut,
            Err(inv) => {
                // Removed from the registry after the core accepted the INVOKE.
                let _ = self
                    .conn
                    .fail(inv.id, ErrorCode::UNKNOWN_TOOL, "tool was removed", false);
                return;
            }
        };
        self.served.insert(
            id.0,
            Served {
                started: Some(self.now()),
                ..Served::default()
            },
        );
        self.start(fut);
    }

    fn start_request_handler(&mut self, req: Request) {
        let Hooks::Client { on_request, .. } = &self.hooks else {
            return;
        };
        let Some(handler) = on_request.clone() else {
            let _ = self.conn.reply(req.id, ReplyStatus::Declined, None);
            return;
        };
        self.served.insert(req.id.0, Served::default());
        let me = self.me.clone();
        let id = req.id;
        let epoch = self.session_epoch;
        let fut = async move {
            // As for tools (`tool::run_handler`): a handler that panics, in its future or
            // before returning it, declines, and the panic never reaches whoever polls this.
            // Called here, when first polled, never under the connection's lock.
            let call =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.answer(req)));
            let work = async move {
                match call {
                    Ok(fut) => std::panic::AssertUnwindSafe(fut).catch_unwind().await,
                    Err(panic) => Err(panic),
                }
            };
            // SPEC §8: the server interrupts a request (always when its invocation ended);
            // the handler is dropped (a UI withdraws the question) and the request ends with
            // REPLY(cancelled). Ended by the protocol instead: nothing to send.
            let ended = {
                let me = me.clone();
                futures::future::poll_fn(move |cx| {
                    let Some(shared) = me.upgrade() else {
                        return std::task::Poll::Ready(None);
                    };
                    let mut s = lock(&shared);
                    match s.served.get_mut(&id.0) {
                        None => std::task::Poll::Ready(None),
                        Some(x) => match x.cancel {
                            Some(c) => std::task::Poll::Ready(Some(c)),
                            None => {
                                x.cancel_waker = Some(cx.waker().clone());
                                std::task::Poll::Pending
                            }
                        },
                    }
                })
            };
            let answer = match futures::future::select(Box::pin(work), Box::pin(ended)).await {
                futures::future::Either::Left((answer, _)) => answer.unwrap_or(Reply {
                    id,
                    status: ReplyStatus::Declined,
                    body: None,
                }),
                futures::future::Either::Right((Some(Cancel::Interrupted), _)) => Reply {
                    id,
                    status: ReplyStatus::Cancelled,
                    body: None,
                },
                // Ended by the protocol (or the connection is gone): the core refuses this
                // reply as not in flight; only the bookkeeping below matters.
                futures::future::Either::Right(_) => Reply {
                    id,
                    status: ReplyStatus::Declined,
                    body: None,
                },
            };
            if let Some(shared) = me.upgrade() {
                let mut s = lock(&shared);
                if s.session_epoch != epoch {
                    // The session was replaced meanwhile: the id may now name a request of
                    // the new session.
                    return;
                }
                s.served.remove(&id.0);
                // NotInFlight if the server interrupted and we raced: harmless.
                let _ = s.conn.reply(id, answer.status, answer.body);
                s.pump();
            }
        };
        self.start(Box::pin(fut));
    }

    /// Starts a handler task: spawned, or collected for the reader (`collect_starts`).
    fn start(&mut self, fut: BoxFuture<'static, ()>) {
        if self.collect_starts {
            self.starts.push(fut);
        } else {
            (self.spawn)(fut);
        }
    }

    /// Registers a tool-change subscriber.
    pub(crate) fn watch(&mut self) -> u64 {
        let id = self.next_watcher;
        self.next_watcher += 1;
        self.watchers.insert(
            id,
            Watcher {
                queue: VecDeque::new(),
                waker: None,
                lagged: false,
            },
        );
        id
    }
}

pub(crate) fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}

/// Wakers to wake once the lock is released ([`Guard`]). A pump wakes one or two tasks, so
/// two are kept inline and only more than that allocates.
#[derive(Default)]
pub(crate) struct Deferred {
    first: [Option<Waker>; 2],
    rest: Vec<Waker>,
}

impl Deferred {
    pub(crate) fn push(&mut self, w: Waker) {
        match self.first.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some(w),
            None => self.rest.push(w),
        }
    }

    /// Slots fill in order and are only emptied all at once.
    fn is_empty(&self) -> bool {
        self.first[0].is_none()
    }

    fn wake(self) {
        for w in self.first.into_iter().flatten().chain(self.rest) {
            w.wake();
        }
    }
}

/// Queues `w`'s waker for after the lock is released.
fn defer(to: &mut Deferred, w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        to.push(w);
    }
}

fn defer_all(to: &mut Deferred, ws: &mut Vec<Waker>) {
    for w in ws.drain(..) {
        to.push(w);
    }
}
