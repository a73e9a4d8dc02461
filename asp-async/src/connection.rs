//! A handle on one server-side connection, for code that acts on a connection from outside
//! its tool handlers: a relay's push API (SPEC §15.5), an admin console. Tool handlers reach
//! theirs with [`ToolContext::connection`](crate::ToolContext::connection); a
//! [`ConnectionHook`] receives every connection as it opens and closes.

use std::sync::{Mutex, Weak};
use std::time::Duration;

use asp_proto::frame::{RawValue, RequestId, Text, ToolDef};
use asp_proto::Bytes;
use asp_proto::{Connection, Instant, RequestOutcome, SendError, Session, StreamOptions};
use tungstenite::http::HeaderMap;

use crate::runtime::BoxFuture;
use crate::shared::{lock, wait_outcome, Call, Guard, Shared};

/// Observes the connections of a server (see `ServerBuilder::on_connection`).
pub trait ConnectionHook: Send + Sync + 'static {
    /// A client connected (the WebSocket upgrade succeeded); `upgrade` holds the headers of
    /// its upgrade request (e.g. `Authorization`, to forward). Called before the connection
    /// reads its first frame, so tools added here (`Locked::add_tool`) are part of
    /// the initial tool set sent after HELLO (SPEC §6.2 step 3). A session another process
    /// held, resumed here from a [`SessionStore`](crate::SessionStore) (SPEC §11.4), arrives
    /// detached, with its tools, and no upgrade headers, just before its RESUME is answered.
    fn connected(&self, conn: ServerConnection, upgrade: &HeaderMap);
    /// Awaited after [`connected`](Self::connected) and before the connection reads its
    /// first frame, for a hook whose per-connection setup is asynchronous: an MCP bridge
    /// opens an MCP session for the client and adds the tools it lists, which then form the
    /// initial tool set (SPEC §6.2 step 3). The client's HELLO waits in the socket
    /// meanwhile, and the handshake timeout (SPEC §6.2) runs from the upgrade. The default
    /// does nothing.
    fn prepare(&self, conn: ServerConnection) -> BoxFuture<'static, ()> {
        let _ = conn;
        Box::pin(std::future::ready(()))
    }
    /// The connection closed; its exchanges have ended.
    fn closed(&self, conn: &ServerConnection);
}

/// A handle on one server connection. Cheap to clone; it does not keep the connection
/// alive, and every method is a no-op (or `None`) once the connection is gone.
#[derive(Clone)]
pub struct ServerConnection {
    shared: Weak<Mutex<Shared>>,
    id: Text,
}

impl std::fmt::Debug for ServerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerConnection({})", self.id)
    }
}

impl ServerConnection {
    pub(crate) fn new(shared: Weak<Mutex<Shared>>, id: Text) -> ServerConnection {
        ServerConnection { shared, id }
    }

    pub(crate) fn from_weak(shared: Weak<Mutex<Shared>>) -> Option<ServerConnection> {
        let id = {
            let s = shared.upgrade()?;
            let g = lock(&s);
            g.session.as_ref()?.connection_id.clone()
        };
        Some(ServerConnection { shared, id })
    }

    /// The connection id (HELLO `connection_id`).
    pub fn id(&self) -> &str {
        self.id.as_str()
    }

    /// The negotiated session, once the handshake is done.
    pub fn session(&self) -> Option<Session> {
        let s = self.shared.upgrade()?;
        let g = lock(&s);
        g.session.clone()
    }

    /// Whether the connection has closed (or is gone).
    pub fn is_closed(&self) -> bool {
        self.shared
            .upgrade()
            .is_none_or(|s| lock(&s).closed.is_some())
    }

    /// Runs `f` with the connection's core locked, then routes the core's events and wakes
    /// the writer. Several commands in one `f` are atomic with respect to the connection's
    /// other users. `None` if the connection is gone.
    pub fn with<T>(&self, f: impl FnOnce(&mut Locked<'_>) -> T) -> Option<T> {
        let s = self.shared.upgrade()?;
        let mut locked = Locked { s: lock(&s) };
        let r = f(&mut locked);
        locked.s.pump();
        Some(r)
    }

    /// The store holds the snapshot with this `mark` (or gave up storing it): the output it
    /// covers may go (SPEC §11.4, [`SessionStore::store`](crate::SessionStore::store)).
    pub fn persisted(&self, mark: u64) {
        if let Some(s) = self.shared.upgrade() {
            let mut g = lock(&s);
            g.storing = false;
            g.conn.handle_persisted(mark);
            g.pump();
        }
    }

    /// Ends the transport without ending the session (SPEC §11.3: like a transport lost):
    /// a resumable session detaches, and its client resumes — here, or on another server
    /// sharing the [`SessionStore`](crate::SessionStore) (a draining relay node, §15.6). A
    /// session that is not resumable closes.
    pub fn detach(&self) {
        if let Some(s) = self.shared.upgrade() {
            let mut g = lock(&s);
            let now = g.now();
            g.conn.handle_transport_closed(now);
            // The transport's tasks stop without writing (a Close 1000 would end the
            // session at the client, SPEC §11.3), whatever happens to the session next.
            g.transport_dropped = g.conn.state() == asp_proto::State::Detached;
            g.pump();
            // Wake the driver even if it is running (it then sees the flag at its next look).
            if let Some(w) = g.notify.set() {
                g.deferred.push(w);
            }
        }
    }

    /// Waits until the session has a transport (open or draining: connected, or resumed
    /// after a transport loss, SPEC §11); `false` if it closed first (or is gone).
    pub async fn attached(&self) -> bool {
        let Some(s) = self.shared.upgrade() else {
            return false;
        };
        std::future::poll_fn(|cx| {
            let mut g = lock(&s);
            match g.conn.state() {
                asp_proto::State::Open | asp_proto::State::Draining => std::task::Poll::Ready(true),
                asp_proto::State::Closed => std::task::Poll::Ready(false),
                _ => {
                    g.state_wakers.push(cx.waker().clone());
                    std::task::Poll::Pending
                }
            }
        })
        .await
    }

    /// Waits for the outcome of a request sent with [`Locked::request`]: the client's REPLY or
    /// ERROR, or `Lost` if the connection closed first.
    pub async fn outcome(&self, id: RequestId) -> RequestOutcome {
        match self.shared.upgrade() {
            Some(s) => wait_outcome(&s, id, |c| c.request.take(), RequestOutcome::Lost).await,
            None => RequestOutcome::Lost(asp_proto::CloseReason::TransportClosed),
        }
    }
}

/// A connection's core, locked (see [`ServerConnection::with`]).
pub struct Locked<'a> {
    s: Guard<'a>,
}

impl Locked<'_> {
    /// The Sans-IO core, to look at (`session`, `tools`, `in_flight`, `check_batch`…). It is
    /// driven by this crate, so commands go through the methods below, never through a
    /// `&mut Connection` of a connection the driver is running.
    pub fn core(&self) -> &Connection {
        &self.s.conn
    }

    /// [`Connection::stream`]: a chunk of an invocation in flight.
    pub fn stream(
        &mut self,
        id: RequestId,
        data: Bytes,
        options: StreamOptions,
    ) -> Result<(), SendError> {
        self.s.conn.stream(id, data, options)
    }

    /// [`Connection::add_tool`]: adds or replaces a tool, pushing TOOL_DEF (SPEC §9).
    pub fn add_tool(&mut self, def: ToolDef) -> Result<(), SendError> {
        self.s.conn.add_tool(def)
    }

    /// [`Connection::remove_tool`]: removes a tool; whether it existed.
    pub fn remove_tool(&mut self, name: &str) -> Result<bool, SendError> {
        self.s.conn.remove_tool(name)
    }

    /// [`Connection::fail`]: ends an invocation in flight with ERROR (SPEC §5.7), e.g. one
    /// a session restored from a store (SPEC §11.4) can no longer run.
    pub fn fail(
        &mut self,
        id: RequestId,
        code: asp_proto::ErrorCode,
        message: impl Into<Text>,
        retryable: bool,
    ) -> Result<(), SendError> {
        self.s.conn.fail(id, code, message, retryable)
    }

    /// [`Connection::goaway`] now: GOAWAY, then close once idle or after `timeout`
    /// (SPEC §6.5).
    pub fn goaway(&mut self, reason: Option<Text>, timeout: Duration) {
        let now = self.s.now();
        self.s.conn.goaway(now, reason, timeout);
    }

    /// The connection's clock, for the core's time arguments.
    pub fn now(&self) -> Instant {
        self.s.now()
    }

    /// Sends a REQUEST (SPEC §8) whose outcome [`ServerConnection::outcome`] then returns.
    pub fn request(
        &mut self,
        kind: impl Into<Text>,
        body: Option<RawValue>,
        invocation: Option<RequestId>,
    ) -> Result<RequestId, SendError> {
        let id = self.s.conn.request(kind, body, invocation)?;
        self.s.calls.insert(id.0, Call::default());
        Ok(id)
    }
}
