//! "Can this batch of commands be sent now, all of it?" — for callers that must send a group
//! of frames all or nothing, such as a relay applying a function's push (SPEC §15.5: a
//! refused push sends nothing).
//!
//! [`Connection::check_batch`] runs the admission rules of `add_tool`, `remove_tool`,
//! `stream` and `request` over the batch in order, on a scratch copy of the little state they
//! read (tools announced, window and queue room per invocation, requests in flight, queue
//! size), without touching the connection. So there is one copy of each rule, here and in
//! the commands, and no caller re-derives them.

use std::collections::{BTreeMap, BTreeSet};

use super::{Connection, StreamOptions, CAP_REQUESTS, STREAM_OVERHEAD};
use crate::codec::encoded_len;
use crate::error::SendError;
use crate::exchange::Kind;
use crate::frame::{Frame, RawValue, Request, RequestId, Text, ToolDef, ToolOp};
use crate::{Role, State};

/// One command of a batch checked with [`Connection::check_batch`]: the arguments of the
/// command of the same name.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Command<'a> {
    /// [`Connection::add_tool`] (add, or update a tool of the same name).
    AddTool(&'a ToolDef),
    /// [`Connection::remove_tool`]. In a batch, removing a tool that does not exist (then)
    /// is refused with `InvalidField("name")`: a batch says what it changes.
    RemoveTool(&'a str),
    /// [`Connection::stream`]: one chunk, within the peer's `max_chunk`.
    Stream {
        /// The invocation.
        id: RequestId,
        /// The chunk.
        data: &'a [u8],
        /// Text or binary, final or not.
        options: StreamOptions,
    },
    /// [`Connection::request`].
    Request {
        /// What is asked (1–64 bytes).
        kind: &'a str,
        /// The question.
        body: Option<&'a RawValue>,
        /// The invocation it belongs to.
        invocation: Option<RequestId>,
    },
}

/// Why [`Connection::check_batch`] refused a batch: the first command that could not be
/// sent, and what its own command would have returned.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchError {
    /// Index of the command in the batch.
    pub index: usize,
    /// The error.
    pub error: SendError,
}

impl core::fmt::Display for BatchError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "command {}: {}", self.index, self.error)
    }
}

impl std::error::Error for BatchError {}

/// Window and queue room of one invocation, as the batch uses it up.
struct Room {
    window: u64,
    queued: usize,
    finished: bool,
}

impl Connection {
    /// Server: whether every command of `batch`, issued in order right after this call,
    /// would be accepted — so either all of them are sent or, on `Err`, none. The
    /// connection must be open (or draining, for streams and tools): a batch is for frames
    /// that go out now, not for a connection still in its handshake or resuming.
    ///
    /// Streams and queue room add up over the batch: two chunks for one invocation need the
    /// window for both. Nothing changes until the caller issues the commands; issued at
    /// once, with no input in between, each succeeds.
    pub fn check_batch(&self, batch: &[Command<'_>]) -> Result<(), BatchError> {
        let at = |index: usize| move |error: SendError| BatchError { index, error };
        self.require(Role::Server).map_err(at(0))?;
        match self.state {
            State::Open | State::Draining => {}
            State::Closed => return Err(at(0)(SendError::Closed)),
            State::Handshaking | State::Resuming | State::Detached => {
                return Err(at(0)(SendError::NotOpen))
            }
        }
        let mut queued = self.out.len();
        let mut tools: BTreeSet<&str> = self.tools.keys().map(Text::as_str).collect();
        let mut announced: BTreeSet<&str> = tools
            .iter()
            .copied()
            .filter(|t| !self.unannounced.iter().any(|u| u.as_str() == *t))
            .collect();
        let mut rooms: BTreeMap<u16, Room> = BTreeMap::new();
        let mut requests = self.requests;
        for (i, command) in batch.iter().enumerate() {
            match *command {
                Command::AddTool(def) => {
                    let len = self.check_tool(def, &announced).map_err(at(i))?;
                    tools.insert(def.name.as_str());
                    announced.insert(def.name.as_str());
                    queued += len;
                }
                Command::RemoveTool(name) => {
                    if !tools.remove(name) {
                        return Err(at(i)(SendError::InvalidField("name")));
                    }
                    if announced.remove(name) {
                        queued += encoded_len(&Frame::ToolDef(ToolDef {
                            op: ToolOp::Remove,
                            name: Text::from(name),
                            description: Text::default(),
                            input_schema: None,
                            annotations: None,
                        }));
                    }
                }
                Command::Stream { id, data, options } => {
                    let StreamOptions { text, fin } = options;
                    self.check_chunk(data, text, fin).map_err(at(i))?;
                    let room = match rooms.entry(id.0) {
                        std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                        std::collections::btree_map::Entry::Vacant(v) => {
                            let e = match self.exchanges.get(&id.0) {
                                Some(e) if e.kind == Kind::Invocation => e,
                                _ => return Err(at(i)(SendError::NotInFlight)),
                            };
                            v.insert(Room {
                                window: e.window,
                                queued: e.queued,
                                finished: e.finished,
                            })
                        }
                    };
                    if room.finished {
                        return Err(at(i)(SendError::StreamFinished));
                    }
                    let frame_len = data.len() + STREAM_OVERHEAD;
                    if queued + frame_len > self.config.max_queued_bytes
                        || data.len() as u64 > room.window
                        || room.queued + data.len() > self.config.max_queued_per_invocation
                    {
                        return Err(at(i)(SendError::Full));
                    }
                    room.window -= data.len() as u64;
                    room.queued += data.len();
                    room.finished = fin;
                    queued += frame_len;
                }
                Command::Request {
                    kind,
                    body,
                    invocation,
                } => {
                    let len = self
                        .check_request(kind, body, invocation, requests)
                        .map_err(at(i))?;
                    requests += 1;
                    queued += len;
                }
            }
        }
        Ok(())
    }

    /// `add_tool`'s rules against the names the client knows; the frame's encoded size.
    fn check_tool(&self, def: &ToolDef, announced: &BTreeSet<&str>) -> Result<usize, SendError> {
        if def.name.is_empty() || def.name.len() > 128 {
            return Err(SendError::InvalidField("name"));
        }
        if def.description.len() > 65535 {
            return Err(SendError::InvalidField("description"));
        }
        let known = announced.contains(def.name.as_str());
        let limit = usize::from(self.peer_limits.max_tools);
        if !known && announced.len() >= limit {
            return Err(SendError::TooLarge {
                len: announced.len() + 1,
                max: limit,
            });
        }
        let op = if known { ToolOp::Update } else { ToolOp::Add };
        let frame = Frame::ToolDef(ToolDef { op, ..def.clone() });
        self.check_frame_size(&frame)?;
        Ok(encoded_len(&frame))
    }

    /// `stream`'s rules for the chunk itself (SPEC §5.3, the peer's `max_chunk`).
    pub(super) fn check_chunk(&self, data: &[u8], text: bool, fin: bool) -> Result<(), SendError> {
        if (text && core::str::from_utf8(data).is_err()) || (data.is_empty() && !fin) {
            // SPEC §5.3: text is UTF-8; only the final chunk may be empty.
            return Err(SendError::InvalidField("data"));
        }
        let max_chunk = self.chunk_cap();
        if data.len() > max_chunk {
            return Err(SendError::TooLarge {
                len: data.len(),
                max: max_chunk,
            });
        }
        Ok(())
    }

    /// `request`'s rules with `requests` already in flight; the frame's encoded size.
    fn check_request(
        &self,
        kind: &str,
        body: Option<&RawValue>,
        invocation: Option<RequestId>,
        requests: usize,
    ) -> Result<usize, SendError> {
        if self.goaway_received || self.goaway_sent {
            return Err(SendError::Draining);
        }
        if !self.peer_requests {
            return Err(SendError::Unsupported(CAP_REQUESTS));
        }
        if kind.is_empty() || kind.len() > 64 {
            return Err(SendError::InvalidField("kind"));
        }
        // SPEC §3.5: server request ids are 0x8000..=0xffff.
        if requests >= usize::from(self.peer_limits.max_inflight) || requests >= 0x8000 {
            return Err(SendError::TooManyInflight);
        }
        let frame = Frame::Request(Request {
            id: RequestId(0xffff),
            kind: Text::from(kind),
            body: body.cloned(),
            invocation,
        });
        self.check_frame_size(&frame)?;
        Ok(encoded_len(&frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Event, Instant, ServerParams};
    use bytes::{Bytes, BytesMut};

    /// A connected server/client pair with the client's `requests` capability, and one
    /// invocation `id` in flight on the server.
    fn connected(window: u32) -> (Connection, Connection, RequestId) {
        let now = Instant::ZERO;
        let mut cc = Config::default();
        cc.limits.initial_window = window;
        cc.limits.max_tools = 2;
        let mut client = Connection::client(cc, now);
        // The invocation's tool need not exist: the batch is about what follows.
        let sc = Config {
            check_tools: false,
            ..Config::default()
        };
        let mut server = Connection::server(
            sc,
            ServerParams {
                connection_id: "c".into(),
                ..Default::default()
            },
            now,
        );
        let mut buf = BytesMut::new();
        let mut shuttle = |a: &mut Connection, b: &mut Connection| {
            for _ in 0..4 {
                while a.poll_transmit(&mut buf) > 0 {
                    b.handle_bytes(now, buf.split().freeze());
                }
                while b.poll_transmit(&mut buf) > 0 {
                    a.handle_bytes(now, buf.split().freeze());
                }
            }
        };
        shuttle(&mut client, &mut server);
        let id = client.invoke("t", None, Default::default()).unwrap();
        shuttle(&mut client, &mut server);
        assert!(std::iter::from_fn(|| server.poll_event()).any(|e| matches!(e, Event::Invoked(_))));
        (server, client, id)
    }

    fn def(name: &str) -> ToolDef {
        ToolDef {
            op: ToolOp::Add,
            name: name.into(),
            description: Text::default(),
            input_schema: None,
            annotations: None,
        }
    }

    #[test]
    fn streams_add_up_against_the_window() {
        // A window of 8 (the SPEC §5.1 minimum): chunks of at most half of it (§7.5).
        let (mut server, _client, id) = connected(8);
        let four = [b'x'; 4];
        let one = Command::Stream {
            id,
            data: &four,
            options: StreamOptions::TEXT,
        };
        assert_eq!(server.check_batch(&[one, one]), Ok(()));
        let err = server.check_batch(&[one, one, one]).unwrap_err();
        assert_eq!((err.index, err.error), (2, SendError::Full));
        // What the check accepts, the commands accept.
        server.check_batch(&[one, one]).unwrap();
        for _ in 0..2 {
            server
                .stream(id, Bytes::copy_from_slice(&four), StreamOptions::TEXT)
                .unwrap();
        }
        assert_eq!(
            server.check_batch(&[one]).unwrap_err().error,
            SendError::Full
        );
    }

    #[test]
    fn each_rule_of_the_commands_applies() {
        let (server, _client, id) = connected(1 << 16);
        let x = Command::Stream {
            id,
            data: b"x",
            options: StreamOptions::BINARY.fin(true),
        };
        // A chunk after the final one, an id not in flight, text that is not UTF-8.
        assert_eq!(
            server.check_batch(&[x, x]).unwrap_err().error,
            SendError::StreamFinished
        );
        let stale = Command::Stream {
            id: RequestId(99),
            data: b"x",
            options: StreamOptions::BINARY,
        };
        assert_eq!(
            server.check_batch(&[stale]).unwrap_err().error,
            SendError::NotInFlight
        );
        let bad = Command::Stream {
            id,
            data: &[0xff],
            options: StreamOptions::TEXT,
        };
        assert_eq!(
            server.check_batch(&[bad]).unwrap_err().error,
            SendError::InvalidField("data")
        );
        // The client holds at most two tools; removing one makes room within the batch.
        let (a, b, c) = (def("a"), def("b"), def("c"));
        let three = [
            Command::AddTool(&a),
            Command::AddTool(&b),
            Command::AddTool(&c),
        ];
        let err = server.check_batch(&three).unwrap_err();
        assert_eq!(err.index, 2);
        assert!(matches!(err.error, SendError::TooLarge { len: 3, max: 2 }));
        let swap = [
            Command::AddTool(&a),
            Command::AddTool(&b),
            Command::RemoveTool("a"),
            Command::AddTool(&c),
        ];
        assert_eq!(server.check_batch(&swap), Ok(()));
        assert_eq!(
            server
                .check_batch(&[Command::RemoveTool("a")])
                .unwrap_err()
                .error,
            SendError::InvalidField("name")
        );
        // The client accepts requests (this crate's client announces `requests`): the
        // request's own fields are checked.
        let ask = Command::Request {
            kind: "",
            body: None,
            invocation: None,
        };
        assert_eq!(
            server.check_batch(&[ask]).unwrap_err().error,
            SendError::InvalidField("kind")
        );
    }

    #[test]
    fn a_client_or_an_unopened_connection_is_refused() {
        let (_server, client, _id) = connected(16);
        assert_eq!(
            client.check_batch(&[]).unwrap_err().error,
            SendError::WrongRole
        );
        let fresh = Connection::server(Config::default(), ServerParams::default(), Instant::ZERO);
        assert_eq!(
            fresh.check_batch(&[]).unwrap_err().error,
            SendError::NotOpen
        );
    }
}
