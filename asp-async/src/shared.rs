//! Per-connection state shared by the driver and the application's handles.
//!
//! The bottom layer of the crate's own modules: it depends on `runtime` alone. The driver
//! sits on it, and the client, server and tool modules on both; what differs between a
//! client's and a server's connection (which handlers an event starts, resume) comes in as
//! a [`Role`] they implement, so this module names none of them.
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
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Waker;

use asp_proto::frame::{Invoke, Request, RequestId, Stream};
use asp_proto::{
    CloseReason, Connection, Event, InvocationOutcome, RequestOutcome, Session, ToolChange,
};

use crate::runtime::{BoxFuture, Clock, Notify};

/// Handle to one connection's shared state.
pub(crate) type SharedRef = Arc<Mutex<Shared>>;

/// Locks, recovering from a poisoned mutex (a panicking handler must not wedge the
/// connection: the core's state is consistent between calls).
pub(crate) fn lock(s: &Mutex<Shared>) -> Guard<'_> {
    Guard(Some(s.lock().unwrap_or_else(|e| e.into_inner())))
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

/// What a connection's side (client or server) adds to the routing of the core's events:
/// starting handlers, and resume. Called with the connection locked, from [`Shared::pump`].
pub(crate) trait Role: Send + Sync + 'static {
    /// Server: the peer invoked a tool (`Event::Invoked`).
    fn invoked(&self, s: &mut Shared, inv: Invoke) {
        let _ = (s, inv);
    }
    /// Client: the server sent a REQUEST (`Event::Requested`, SPEC §8).
    fn requested(&self, s: &mut Shared, req: Request) {
        let _ = (s, req);
    }
    /// The session is open (`Event::Connected`; `s.session` is set).
    fn connected(&self, s: &mut Shared) {
        let _ = s;
    }
    /// The transport was lost and the session waits to be resumed (`Event::Detached`).
    fn detached(&self, s: &mut Shared) {
        let _ = s;
    }
    /// The connection closed (`Event::Closed`; `s.closed` is set).
    fn closed(&self, s: &mut Shared) {
        let _ = s;
    }
    /// Server, on a new connection: its first frame was RESUME (`Event::ResumeRequested`).
    /// The default refuses it.
    fn resume_requested(&self, s: &mut Shared, token: &[u8], received: u64) {
        let _ = (token, received);
        let now = s.now();
        s.conn.reject_resume(now);
    }
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
    pub(crate) role: Arc<dyn Role>,
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
    pub(crate) resume_registered: Option<bytes::Bytes>,
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
}

impl Shared {
    pub(crate) fn new(
        conn: Connection,
        clock: Clock,
        role: Arc<dyn Role>,
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
                role,
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
                self.role.clone().connected(self);
                defer_all(&mut self.deferred, &mut self.state_wakers);
            }
            Event::Invoked(inv) => self.role.clone().invoked(self, *inv),
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
            Event::Requested(req) => self.role.clone().requested(self, *req),
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
            Event::ResumeRequested { token, received } => {
                self.role.clone().resume_requested(self, &token, received)
            }
            Event::Detached => {
                tracing::debug!(parent: &self.span, "transport lost, session detached");
                self.role.clone().detached(self);
                defer_all(&mut self.deferred, &mut self.state_wakers);
            }
            Event::Resumed => {
                tracing::debug!(parent: &self.span, "session resumed");
                defer_all(&mut self.deferred, &mut self.state_wakers);
            }
            Event::Closed(reason) => {
                tracing::debug!(parent: &self.span, %reason, "connection closed");
                self.closed = Some(reason);
                self.role.clone().closed(self);
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

    pub(crate) fn cancel(&mut self, id: RequestId, why: Cancel) {
        if let Some(s) = self.served.get_mut(&id.0) {
            s.cancel.get_or_insert(why);
            defer(&mut self.deferred, &mut s.cancel_waker);
            defer(&mut self.deferred, &mut s.writable_waker);
        }
    }

    /// Wakes everything waiting for a change of the connection's state.
    pub(crate) fn wake_state(&mut self) {
        defer_all(&mut self.deferred, &mut self.state_wakers);
    }

    /// Starts a handler task: spawned, or collected for the driver (`collect_starts`), which
    /// polls it once itself (`driver::start_inline`).
    pub(crate) fn start(&mut self, fut: BoxFuture<'static, ()>) {
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

/// Waits for the outcome of an exchange we initiated (client: invocation; server: request),
/// releasing unread chunks: `take` takes the end from the field of its kind, `lost` makes
/// one when the exchange is gone.
pub(crate) async fn wait_outcome<T>(
    shared: &Mutex<Shared>,
    id: RequestId,
    take: impl Fn(&mut Call) -> Option<T>,
    lost: impl Fn(CloseReason) -> T,
) -> T {
    std::future::poll_fn(|cx| {
        let mut s = lock(shared);
        let Some(call) = s.calls.get_mut(&id.0) else {
            return std::task::Poll::Ready(lost(CloseReason::Local));
        };
        let unread: usize = call.chunks.drain(..).map(|c| c.data.len()).sum();
        if let Some(o) = take(call) {
            s.calls.remove(&id.0);
            s.conn.release(id, unread);
            s.pump();
            return std::task::Poll::Ready(o);
        }
        call.waker = Some(cx.waker().clone());
        if unread > 0 {
            s.conn.release(id, unread);
            s.pump();
        }
        std::task::Poll::Pending
    })
    .await
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
