//! Session snapshots (SPEC §11.4): a resumable server session as bytes, so that another
//! process — a relay node, SPEC §15.6 — can answer the client's RESUME when the process that
//! held the session is gone.
//!
//! A snapshot holds what SPEC §11.3 says a resumed session keeps (its `connection_id`,
//! negotiated limits, heartbeat and capabilities, tool set, exchanges and id allocation) and
//! what §11.2 needs to answer a RESUME (the frame counts and the counted frames the client
//! may not have received). It is encoded with the codec's own pieces: the session as the
//! client's HELLO would announce it, the tool set as TOOL_DEF frames, the replay buffer as
//! the frames themselves.
//!
//! **Holding output until it is stored.** A snapshot can only answer a RESUME exactly if
//! the client never saw more than it records: no frame beyond its sent count, no
//! acknowledgement beyond its received count (§11.1). [`Connection::hold_until_persisted`]
//! makes the connection transmit only frames queued before the last snapshot the
//! application reported stored ([`Connection::handle_persisted`]); PING and PONG carry the
//! `received` count of when they were queued, so that rule covers acknowledgements too.

use bytes::{Bytes, BytesMut};
use core::time::Duration;

use super::{counted, Connection, CAP_RESUME};
use crate::codec::{self, Header, HEADER_LEN};
use crate::config::{Config, Limits};
use crate::event::Session;
use crate::exchange::{Exchange, Kind};
use crate::frame::{
    Frame, FrameType, Hello, HelloLimits, RequestId, Text, ToolDef, ToolOp, Versions,
};
use crate::msgpack::{Reader, Writer};
use crate::time::Instant;
use crate::{Role, State};

/// The snapshot encoding's version (key 0); another value is refused.
const FORMAT: u64 = 1;

/// A resumable server session as bytes ([`Connection::snapshot`], SPEC §11.4).
///
/// Made by [`Connection::snapshot`] only: `#[non_exhaustive]` so that it can say more
/// about what it covers later without breaking the stores that read it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The encoded session: opaque, store it as it is.
    pub bytes: Bytes,
    /// What the snapshot covers: pass it to [`Connection::handle_persisted`] once `bytes`
    /// is stored.
    pub mark: u64,
    /// The session's resume token, which a RESUME names it by: the key to find `bytes`
    /// under (a secret, SPEC §13.1: store a hash of it).
    pub token: Bytes,
}

/// Why a snapshot could not be taken or restored.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Only a resumable session of a server, open, draining or detached, has a snapshot;
    /// only a server configured for resume can restore one.
    NotResumable,
    /// The bytes are not a snapshot of this format; names what is wrong.
    Invalid(&'static str),
}

impl core::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SnapshotError::NotResumable => f.write_str("not a resumable server session"),
            SnapshotError::Invalid(what) => write!(f, "invalid session snapshot: {what}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Connection {
    /// Server: the session as bytes, for [`Connection::restore`] in another process (SPEC
    /// §11.4). Frames queued but not yet transmitted count as sent: they are in the
    /// snapshot's replay buffer.
    pub fn snapshot(&self) -> Result<Snapshot, SnapshotError> {
        let open = matches!(self.state, State::Open | State::Draining | State::Detached);
        let (Some(session), Some(token)) = (&self.session, &self.resume_token) else {
            return Err(SnapshotError::NotResumable);
        };
        if self.role != Role::Server || !self.resumable || !open {
            return Err(SnapshotError::NotResumable);
        }
        let mut b = BytesMut::new();
        // The session as the client's HELLO announced it (what `on_client_hello` read).
        let l = &self.peer_limits;
        let hello = Frame::Hello(Hello {
            versions: Versions::single(session.version),
            capabilities: session.peer_capabilities.clone(),
            limits: HelloLimits {
                max_frame_payload: Some(l.max_frame_payload),
                max_inflight: Some(l.max_inflight),
                max_tools: Some(l.max_tools),
                max_chunk: Some(l.max_chunk),
                initial_window: Some(l.initial_window),
                replay_buffer: Some(u32::try_from(self.peer_replay_buffer).unwrap_or(u32::MAX)),
                resume_window_ms: self
                    .peer_resume_window
                    .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
            },
            heartbeat_ms: Some(session.heartbeat_ms),
            connection_id: None,
            resume_token: None,
            tools: 0,
            agent: session.peer_agent.clone(),
        });
        let mut hello_bytes = BytesMut::new();
        codec::encode(&hello, &mut hello_bytes);
        let mut tools = BytesMut::new();
        for d in self.tools.values() {
            codec::encode(
                &Frame::ToolDef(ToolDef {
                    op: ToolOp::Add,
                    ..(**d).clone()
                }),
                &mut tools,
            );
        }
        // Sent frames the client may lack, oldest first: the replay buffer, then the
        // counted frames still queued (sent as far as the snapshot is concerned).
        let mut replay = BytesMut::new();
        let mut queued_counted = 0u64;
        for f in self.replay.frames() {
            replay.extend_from_slice(f);
        }
        for (f, ty) in self.out.encoded() {
            if counted(ty as u8) {
                replay.extend_from_slice(f);
                queued_counted += 1;
            }
        }
        let now = self.now;
        let remaining = |t: Option<Instant>| t.map(|t| ms(t.saturating_duration_since(now)));

        let mut w = Writer(&mut b);
        w.map_len(13);
        w.key(0);
        w.uint(FORMAT);
        w.key(1);
        w.bin(&hello_bytes);
        w.key(2);
        w.str(session.connection_id.as_bytes());
        w.key(3);
        w.bin(token);
        w.key(4);
        w.bin(&tools);
        w.key(5);
        w.array_len(u32::try_from(self.unannounced.len()).unwrap_or(u32::MAX));
        for name in &self.unannounced {
            w.str(name.as_bytes());
        }
        w.key(6);
        w.array_len(u32::try_from(self.exchanges.len()).unwrap_or(u32::MAX));
        for (id, e) in &self.exchanges {
            w.array_len(8);
            w.uint(u64::from(*id));
            w.bool(e.kind == Kind::Request);
            w.bool(e.finished);
            w.bool(e.interrupted);
            w.uint(e.window);
            w.uint(u64::from(e.next_seq));
            w.uint(u64::from(e.parent));
            // 0: no deadline; else 1 + the milliseconds left.
            w.uint(remaining(e.deadline).map_or(0, |m| m.saturating_add(1)));
        }
        w.key(7);
        w.uint(u64::from(self.next_id));
        w.key(8);
        w.uint(u64::from(self.goaway_sent) | u64::from(self.goaway_received) << 1);
        w.key(9);
        w.uint(remaining(self.drain_deadline).map_or(0, |m| m.saturating_add(1)));
        w.key(10);
        w.uint(self.sent_count + queued_counted);
        w.key(11);
        w.uint(self.recv_count);
        w.key(12);
        w.bin(&replay);
        Ok(Snapshot {
            bytes: b.freeze(),
            mark: self.out.pushed(),
            token: token.clone(),
        })
    }

    /// Server: from now on transmit only frames a stored snapshot covers (SPEC §11.4).
    /// Everything queued so far may still go; what is queued later waits for
    /// [`Connection::handle_persisted`] with the mark of a snapshot taken after it.
    pub fn hold_until_persisted(&mut self) {
        if self.role == Role::Server && self.persisted.is_none() {
            self.persisted = Some(self.out.pushed());
        }
    }

    /// Server: the snapshot with this `mark` is stored; the frames it covers may go.
    pub fn handle_persisted(&mut self, mark: u64) {
        if let Some(p) = &mut self.persisted {
            *p = (*p).max(mark);
        }
    }

    /// Server, holding output ([`Connection::hold_until_persisted`]): frames wait for a
    /// snapshot to be stored.
    pub fn wants_snapshot(&self) -> bool {
        self.held() > 0 && !matches!(self.state, State::Closed)
    }

    /// Frames at the back of the queue that wait for a stored snapshot.
    pub(super) fn held(&self) -> usize {
        match self.persisted {
            Some(p) if self.state != State::Closed => {
                let n = self.out.pushed().saturating_sub(p);
                usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .min(self.out.frames())
            }
            _ => 0,
        }
    }

    /// The ids of the exchanges in flight: invocations (client space) and requests (server
    /// space). After [`Connection::restore`] these are the exchanges the previous process
    /// had in flight; SPEC §15.6 says how a relay ends the invocations it cannot continue.
    pub fn in_flight_ids(&self) -> impl Iterator<Item = RequestId> + '_ {
        self.exchanges.keys().map(|id| RequestId(*id))
    }

    /// Server: a detached session rebuilt from [`Connection::snapshot`] bytes taken by
    /// another process (SPEC §11.4), ready for [`Connection::accept_resume`]. `config`
    /// must offer resume and should be the one the snapshot's process had. The resume
    /// window counts from `now`.
    pub fn restore(
        config: Config,
        bytes: &[u8],
        now: Instant,
    ) -> Result<Connection, SnapshotError> {
        if !config.resume {
            return Err(SnapshotError::NotResumable);
        }
        let mut c = Connection::new(Role::Server, config, now);
        let bad = SnapshotError::Invalid;
        let mut r = Reader::new(bytes);
        let n = r.map_len().map_err(|_| bad("not a map"))?;
        if n != 13 {
            return Err(bad("wrong number of fields"));
        }
        let uint = |r: &mut Reader<'_>, what| r.uint().map_err(|_| bad(what));
        let bin = |r: &mut Reader<'_>, what| -> Result<Bytes, SnapshotError> {
            let (a, z) = r.bin_range().map_err(|_| bad(what))?;
            Ok(Bytes::copy_from_slice(bytes.get(a..z).ok_or(bad(what))?))
        };
        let text = |r: &mut Reader<'_>, what| -> Result<Text, SnapshotError> {
            let (a, z) = r.str_range().map_err(|_| bad(what))?;
            let s =
                core::str::from_utf8(bytes.get(a..z).ok_or(bad(what))?).map_err(|_| bad(what))?;
            Ok(Text::from(s))
        };
        let key = |r: &mut Reader<'_>, k: u64| -> Result<(), SnapshotError> {
            match r.key() {
                Ok(got) if got == k => Ok(()),
                _ => Err(bad("fields out of order")),
            }
        };
        key(&mut r, 0)?;
        if uint(&mut r, "format")? != FORMAT {
            return Err(bad("unknown format"));
        }
        key(&mut r, 1)?;
        let mut hello = bin(&mut r, "hello")?;
        let Some(Ok(Frame::Hello(h))) = codec::decode_frame(&mut hello, u32::MAX) else {
            return Err(bad("hello"));
        };
        key(&mut r, 2)?;
        let connection_id = text(&mut r, "connection_id")?;
        key(&mut r, 3)?;
        let token = bin(&mut r, "token")?;
        key(&mut r, 4)?;
        let mut tools = bin(&mut r, "tools")?;
        while !tools.is_empty() {
            match codec::decode_frame(&mut tools, u32::MAX) {
                Some(Ok(Frame::ToolDef(d))) => {
                    c.tools.insert(d.name.clone(), Box::new(d));
                }
                _ => return Err(bad("tools")),
            }
        }
        key(&mut r, 5)?;
        let n = r.array_len().map_err(|_| bad("unannounced"))?;
        for _ in 0..n {
            c.unannounced.insert(text(&mut r, "unannounced")?);
        }
        key(&mut r, 6)?;
        let n = r.array_len().map_err(|_| bad("exchanges"))?;
        for _ in 0..n {
            if r.array_len().ok() != Some(8) {
                return Err(bad("exchange"));
            }
            let id = u16::try_from(uint(&mut r, "exchange id")?).map_err(|_| bad("exchange id"))?;
            let flag = |r: &mut Reader<'_>| r.bool().map_err(|_| bad("exchange flag"));
            let request = flag(&mut r)?;
            let mut e = Exchange::new(
                if request {
                    Kind::Request
                } else {
                    Kind::Invocation
                },
                0,
            );
            // The id space must match the kind (SPEC §3.5), as a live session keeps it.
            if id == 0 || RequestId(id).is_server() != request {
                return Err(bad("exchange id"));
            }
            e.finished = flag(&mut r)?;
            e.interrupted = flag(&mut r)?;
            e.window = uint(&mut r, "window")?.min(u64::from(u32::MAX));
            e.next_seq = u32::try_from(uint(&mut r, "seq")?).map_err(|_| bad("seq"))?;
            e.parent = u16::try_from(uint(&mut r, "parent")?).map_err(|_| bad("parent"))?;
            let deadline = uint(&mut r, "deadline")?;
            if deadline > 0 {
                e.deadline = Some(now + Duration::from_millis(deadline - 1));
                c.with_deadline += 1;
            }
            match e.kind {
                Kind::Invocation => c.invocations += 1,
                Kind::Request => c.requests += 1,
            }
            c.exchanges.insert(id, e);
        }
        key(&mut r, 7)?;
        c.next_id = u16::try_from(uint(&mut r, "next_id")?).map_err(|_| bad("next_id"))?;
        key(&mut r, 8)?;
        let goaway = uint(&mut r, "goaway")?;
        c.goaway_sent = goaway & 1 != 0;
        c.goaway_received = goaway & 2 != 0;
        key(&mut r, 9)?;
        let drain = uint(&mut r, "drain")?;
        if drain > 0 {
            c.drain_deadline = Some(now + Duration::from_millis(drain - 1));
        }
        key(&mut r, 10)?;
        let sent = uint(&mut r, "sent")?;
        key(&mut r, 11)?;
        c.recv_count = uint(&mut r, "received")?;
        key(&mut r, 12)?;
        let replay = bin(&mut r, "replay")?;
        if !r.at_end() {
            return Err(bad("trailing bytes"));
        }
        // The replay buffer: whole counted frames, the last one being frame `sent − 1`.
        let mut frames = Vec::new();
        let mut at = 0usize;
        while at < replay.len() {
            let h = replay
                .get(at..)
                .and_then(Header::parse)
                .ok_or(bad("replay"))?;
            let ty = FrameType::from_nibble(h.frame_type)
                .filter(|t| counted(*t as u8))
                .ok_or(bad("replay"))?;
            let end = at
                .checked_add(HEADER_LEN + h.len as usize)
                .filter(|e| *e <= replay.len())
                .ok_or(bad("replay"))?;
            frames.push((replay.slice(at..end), ty));
            at = end;
        }
        let first = sent
            .checked_sub(frames.len() as u64)
            .ok_or(bad("replay longer than sent"))?;
        c.replay.restore(first, frames);
        c.sent_count = sent;

        // The session as `on_client_hello` derived it (SPEC §6.4), with this config.
        c.connection_id = Some(connection_id.clone());
        c.resume_token = Some(token);
        c.resumable = true;
        c.peer_limits = Limits::from_hello(&h.limits);
        c.note_peer_resume(&h.limits);
        c.peer_requests = super::has_cap(&h.capabilities, super::CAP_REQUESTS);
        let heartbeat_ms = h.heartbeat_ms.unwrap_or(0);
        c.heartbeat = (heartbeat_ms > 0).then(|| Duration::from_millis(u64::from(heartbeat_ms)));
        if !super::has_cap(&h.capabilities, CAP_RESUME) {
            return Err(bad("session not resumable"));
        }
        let window = c
            .peer_resume_window
            .map_or(c.config.resume_window, |p| p.min(c.config.resume_window));
        c.session = Some(Session {
            connection_id,
            version: h.versions.highest().unwrap_or(1),
            peer_limits: c.peer_limits,
            peer_capabilities: h.capabilities,
            heartbeat_ms,
            resumable: true,
            resume_window_ms: u32::try_from(window.as_millis()).unwrap_or(u32::MAX),
            peer_agent: h.agent,
        });
        c.handshake_deadline = None;
        c.state = State::Detached;
        c.detached_until = Some(now + window);
        Ok(c)
    }
}
