//! Server-side session resume (SPEC §11): resume tokens and the table that finds a detached
//! session by its token.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

use crate::util::constant_time_eq;

/// Resume tokens are 16 random bytes (SPEC §13.1: at least 16, from a secure source).
const TOKEN_LEN: usize = 16;

/// A fresh resume token from the operating system's secure random source, or `None` (the
/// connection then does not offer resume) if that source fails.
pub(crate) fn new_token() -> Option<Bytes> {
    let mut t = [0u8; TOKEN_LEN];
    match getrandom::fill(&mut t) {
        Ok(()) => Some(Bytes::copy_from_slice(&t)),
        Err(e) => {
            tracing::warn!(error = %e, "no secure random source: resume not offered");
            None
        }
    }
}

/// The resumable sessions of one server, by token.
///
/// Tokens are secrets, so they are never used as map keys directly (a map lookup compares
/// keys with an early-exit `==`): the key is a SipHash of the token under the server's
/// random key, unknown to clients, and the stored token is then compared in constant time
/// (SPEC §13.1). Two live tokens with the same 64-bit keyed hash are astronomically unlikely;
/// if it happened, the older session would only lose its ability to resume.
///
/// Generic over the session (a connection's shared state, `shared::Shared` behind its mutex),
/// so that this module sits below the state layer that holds the table.
pub(crate) struct ResumeTable<S> {
    seed: std::collections::hash_map::RandomState,
    sessions: Mutex<Sessions<S>>,
}

/// Keyed hash of the token → (token, session).
type Sessions<S> = HashMap<u64, (Bytes, Weak<S>)>;

impl<S> ResumeTable<S> {
    pub(crate) fn new() -> ResumeTable<S> {
        ResumeTable {
            seed: std::collections::hash_map::RandomState::new(),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, token: &[u8]) -> u64 {
        self.seed.hash_one(token)
    }

    fn map(&self) -> std::sync::MutexGuard<'_, Sessions<S>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session that became resumable.
    pub(crate) fn register(&self, token: &Bytes, session: Weak<S>) {
        let key = self.key(token);
        self.map().insert(key, (token.clone(), session));
    }

    /// Forgets a session (it closed), if the entry is still its own.
    pub(crate) fn remove(&self, token: &Bytes, session: &Weak<S>) {
        let key = self.key(token);
        let mut map = self.map();
        if map.get(&key).is_some_and(|(_, s)| s.ptr_eq(session)) {
            map.remove(&key);
        }
    }

    /// The live session holding `token`. The table's lock is released before returning, so
    /// the caller may lock the session (lock order: a `Shared`, then the table, never the
    /// other way round).
    pub(crate) fn find(&self, token: &[u8]) -> Option<Arc<S>> {
        let key = self.key(token);
        let map = self.map();
        let (stored, session) = map.get(&key)?;
        if !constant_time_eq(stored, token) {
            return None;
        }
        session.upgrade()
    }
}
