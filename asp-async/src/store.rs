//! Sessions kept outside the process (SPEC §11.4): a [`SessionStore`] lets a server resume
//! a session that another server process held — a relay cluster node that died or drained
//! (SPEC §15.6).
//!
//! With a store, every resumable session transmits only what a stored snapshot covers
//! ([`asp_proto::Connection::hold_until_persisted`]): whenever output waits, the connection
//! takes a snapshot and hands it to [`SessionStore::store`], and sends once the store
//! reports it stored ([`ServerConnection::persisted`]). A RESUME whose token this process
//! does not hold asks [`SessionStore::load`]; a snapshot found there becomes a session of
//! this server (announced to the [`ConnectionHook`](crate::ConnectionHook), detached) and
//! takes the new transport over.

use std::sync::{Arc, Mutex, Weak};

use asp_proto::{Bytes, Snapshot, State};

use crate::connection::ServerConnection;
use crate::runtime::BoxFuture;
use crate::shared::{lock, Adopt, Hooks, Shared, SharedRef, StoreHooks};
use crate::util::constant_time_eq;

/// Where a server keeps its sessions for other server processes (SPEC §11.4).
///
/// Both methods are called with the connection locked: start the work (spawn a task) and
/// return; never call back into the connection from inside them.
pub trait SessionStore: Send + Sync + 'static {
    /// Store `snapshot` of `conn`'s session (replacing the previous one), then call
    /// [`ServerConnection::persisted`] with `snapshot.mark`, also when storing failed:
    /// output then goes on unstored, and a resume elsewhere of what was not stored fails
    /// cleanly with `RESUME_FAILED` (SPEC §11.2) rather than never.
    fn store(&self, conn: ServerConnection, snapshot: Snapshot);
    /// The stored snapshot of the session whose resume token is `token`, if any. A store
    /// that hands one out makes this process the session's owner (the caller resumes it).
    fn load(&self, token: Bytes) -> BoxFuture<'static, Option<Bytes>>;
}

impl StoreHooks {
    /// A server's `store`, with the way to adopt what it loads.
    pub(crate) fn new(store: Arc<dyn SessionStore>, adopt: Adopt) -> StoreHooks {
        let loader = store.clone();
        StoreHooks {
            store: Arc::new(move |me, id, snapshot| {
                store.store(ServerConnection::new(me, id), snapshot)
            }),
            load: Arc::new(move |token| loader.load(token)),
            adopt,
        }
    }
}

impl Shared {
    fn store_hooks(&self) -> Option<&StoreHooks> {
        match &self.hooks {
            Hooks::Server { store, .. } => store.as_ref(),
            Hooks::Client { .. } => None,
        }
    }

    /// After every change: output waits for a snapshot, and none is being stored.
    pub(crate) fn maybe_store(&mut self) {
        if self.storing || !self.conn.wants_snapshot() {
            return;
        }
        let Some(hooks) = self.store_hooks().cloned() else {
            return;
        };
        match self.conn.snapshot() {
            Ok(snapshot) => {
                let id = self
                    .conn
                    .session()
                    .map(|s| s.connection_id.clone())
                    .unwrap_or_default();
                self.storing = true;
                (hooks.store)(self.me.clone(), id, snapshot);
            }
            // Not resumable (the client did not offer `resume`): nothing to keep, so
            // nothing is held.
            Err(_) => self.conn.handle_persisted(u64::MAX),
        }
    }

    /// Server, RESUME with a token this process does not hold: ask the store. `false` if
    /// there is no store.
    pub(crate) fn resume_from_store(&mut self, token: &[u8], received: u64) -> bool {
        let Some(hooks) = self.store_hooks().cloned() else {
            return false;
        };
        let load = (hooks.load)(Bytes::copy_from_slice(token));
        let me = self.me.clone();
        let token = Bytes::copy_from_slice(token);
        let fut = async move {
            let target = load.await.and_then(|bytes| (hooks.adopt)(&bytes));
            // The store found it by this token; the session must hold the same one
            // (compared in constant time, SPEC §13.1).
            let target = target.filter(|t| {
                lock(t)
                    .conn
                    .resume_token()
                    .is_some_and(|held| constant_time_eq(held, &token))
            });
            finish(me, target, received);
        };
        (self.spawn)(Box::pin(fut));
        true
    }
}

/// The store answered: the connection that asked hands its transport to the adopted session,
/// or refuses the resume.
fn finish(me: Weak<Mutex<Shared>>, target: Option<SharedRef>, received: u64) {
    let Some(me) = me.upgrade() else { return };
    let mut s = lock(&me);
    if s.conn.state() != State::Resuming {
        // Timed out or closed meanwhile.
        return;
    }
    s.take_over(target, received);
    s.pump();
}
