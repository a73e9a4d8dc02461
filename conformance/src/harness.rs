//! Driving an `asp_proto::Connection` from vector data: configuration, input in either
//! binding, and collecting what it sends and reports.

use core::time::Duration;

use asp_proto::frame::{RawValue, Text, ToolDef, ToolOp};
use asp_proto::{codec, Bytes, Config, Connection, Instant, ServerParams, State};
use bytes::BytesMut;
use serde_json::Value;

use crate::hex;
use crate::matcher::Sent;
use crate::model::{self, Obj};

/// How received bytes reach the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// Each `recv` is one WebSocket binary message (`handle_message`, SPEC §2.1).
    Message,
    /// A byte stream, fed one byte at a time (`handle_bytes`, SPEC §2.2).
    Bytes,
    /// A byte stream where each `recv` arrives as one read (`handle_bytes` with all of it):
    /// whole frames, and several of them, in one call (a fuzzing crash lived only here).
    Reads,
}

impl Binding {
    /// Every binding, in the order the runner tries them.
    pub const ALL: [Binding; 3] = [Binding::Message, Binding::Bytes, Binding::Reads];

    /// Whether this binding is a byte stream (SPEC §2.2) rather than WebSocket messages.
    pub fn is_stream(self) -> bool {
        self != Binding::Message
    }
}

impl Binding {
    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Binding::Message => "websocket",
            Binding::Bytes => "byte-stream",
            Binding::Reads => "byte-stream-reads",
        }
    }
}

/// The role of the implementation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleName {
    /// A client.
    Client,
    /// A server.
    Server,
}

impl RoleName {
    /// From `"client"` / `"server"`.
    pub fn parse(s: &str) -> Result<RoleName, String> {
        match s {
            "client" => Ok(RoleName::Client),
            "server" => Ok(RoleName::Server),
            _ => Err(format!("unknown role {s:?}")),
        }
    }
}

fn uint(c: &Obj, k: &str) -> Result<Option<u64>, String> {
    c.get(k)
        .map(|v| model::uint_of(v).ok_or_else(|| format!("config {k}: not a uint")))
        .transpose()
}

fn narrow<T: TryFrom<u64>>(c: &Obj, k: &str) -> Result<Option<T>, String> {
    uint(c, k)?
        .map(|v| T::try_from(v).map_err(|_| format!("config {k}: out of range")))
        .transpose()
}

fn flag(c: &Obj, k: &str, default: bool) -> bool {
    c.get(k).and_then(Value::as_bool).unwrap_or(default)
}

/// A `Config` from a vector's `config` (README "Session vectors"); absent keys take the
/// SPEC §13 defaults.
pub fn config_of(c: &Obj) -> Result<Config, String> {
    let mut cfg = Config::default();
    let l = &mut cfg.limits;
    if let Some(v) = narrow(c, "max_frame_payload")? {
        l.max_frame_payload = v;
    }
    if let Some(v) = narrow(c, "max_inflight")? {
        l.max_inflight = v;
    }
    if let Some(v) = narrow(c, "max_tools")? {
        l.max_tools = v;
    }
    if let Some(v) = narrow(c, "max_chunk")? {
        l.max_chunk = v;
    }
    if let Some(v) = narrow(c, "initial_window")? {
        l.initial_window = v;
    }
    if let Some(ms) = uint(c, "heartbeat_ms")? {
        cfg.heartbeat = (ms > 0).then(|| Duration::from_millis(ms));
    }
    if let Some(ms) = uint(c, "handshake_timeout_ms")? {
        cfg.handshake_timeout = Duration::from_millis(ms);
    }
    if let Some(v) = narrow(c, "rate_limit")? {
        cfg.rate_limit = v;
    }
    if let Some(v) = narrow(c, "flood_limit")? {
        cfg.flood_limit = v;
    }
    if let Some(v) = narrow(c, "max_args_in_flight")? {
        cfg.max_args_in_flight = v;
    }
    if let Some(v) = narrow(c, "max_buffered")? {
        cfg.max_buffered = v;
    }
    if let Some(v) = narrow(c, "replay_buffer")? {
        cfg.replay_buffer = v;
    }
    if let Some(ms) = uint(c, "resume_window_ms")? {
        cfg.resume_window = Duration::from_millis(ms);
    }
    cfg.accept_requests = flag(c, "requests", true);
    cfg.resume = flag(c, "resume", false);
    cfg.auto_credit = flag(c, "auto_credit", true);
    Ok(cfg)
}

/// A tool definition from `{"name", "description"?, "input_schema"?, "annotations"?}`.
pub fn tool_def_of(t: &Value) -> Result<ToolDef, String> {
    let name = t["name"].as_str().ok_or("tool without name")?;
    let opt_any =
        |k: &str| -> Result<Option<RawValue>, String> { t.get(k).map(model::raw_of).transpose() };
    Ok(ToolDef {
        op: ToolOp::Add,
        name: Text::from(name),
        description: Text::from(t["description"].as_str().unwrap_or("")),
        input_schema: opt_any("input_schema")?,
        annotations: opt_any("annotations")?,
    })
}

/// A connection under test plus the binding its input uses.
pub struct Harness {
    /// The connection.
    pub conn: Connection,
    binding: Binding,
    /// The largest payload the peer (the vector) accepts: the SPEC §13 default until a HELLO
    /// among the received bytes announces another. Everything the connection sends is decoded
    /// against it, so a frame over the peer's limit (SPEC §3.6) fails the vector.
    peer_max_payload: u32,
    /// The WebSocket close code the connection's close calls for (SPEC §2.1), once it closed.
    pub close_code: Option<u16>,
}

impl Harness {
    /// Creates the connection at `now` (a client queues its HELLO at once).
    pub fn start(
        role: RoleName,
        c: &Obj,
        binding: Binding,
        now: Instant,
    ) -> Result<Harness, String> {
        let cfg = config_of(c)?;
        let conn = match role {
            RoleName::Client => Connection::client(cfg, now),
            RoleName::Server => {
                let mut params = ServerParams::default();
                params.connection_id = Text::from(
                    c.get("connection_id")
                        .and_then(Value::as_str)
                        .unwrap_or("c1"),
                );
                params.resume_token = c
                    .get("resume_token")
                    .map(|v| v.as_str().ok_or("resume_token: hex").map(hex::parse_plain))
                    .transpose()?
                    .transpose()?
                    .map(Bytes::from);
                let mut conn = Connection::server(cfg, params, now);
                if let Some(Value::Array(tools)) = c.get("tools") {
                    for t in tools {
                        conn.add_tool(tool_def_of(t)?)
                            .map_err(|e| format!("add_tool: {e}"))?;
                    }
                }
                conn
            }
        };
        Ok(Harness {
            conn,
            binding,
            peer_max_payload: asp_proto::Limits::default().max_frame_payload,
            close_code: None,
        })
    }

    /// Received bytes: one message, or a byte stream fed byte by byte.
    pub fn feed(&mut self, now: Instant, data: &[u8]) {
        self.note_peer_hello(data);
        match self.binding {
            Binding::Message => self.conn.handle_message(now, Bytes::copy_from_slice(data)),
            Binding::Bytes => {
                for b in data {
                    self.conn.handle_bytes(now, Bytes::copy_from_slice(&[*b]));
                }
            }
            Binding::Reads => self.conn.handle_bytes(now, Bytes::copy_from_slice(data)),
        }
    }

    /// Records the `max_frame_payload` of a HELLO the peer sends (SPEC §6.4), read from the
    /// vector's own bytes rather than asked of the implementation under test.
    fn note_peer_hello(&mut self, data: &[u8]) {
        let mut rest = Bytes::copy_from_slice(data);
        while let Some(Ok(f)) = codec::decode_frame(&mut rest, u32::MAX) {
            if let asp_proto::Frame::Hello(h) = f {
                self.peer_max_payload = h
                    .limits
                    .max_frame_payload
                    .unwrap_or(asp_proto::Limits::default().max_frame_payload);
            }
        }
    }

    /// Everything the connection has to say now: its events (the application consumes
    /// them), then the frames it transmits, until both are exhausted.
    pub fn drain(&mut self) -> Result<(Vec<Sent>, Vec<Value>), String> {
        let mut sent = Vec::new();
        let mut events = Vec::new();
        loop {
            let mut any = false;
            while let Some(ev) = self.conn.poll_event() {
                any = true;
                if let asp_proto::Event::Closed(r) = &ev {
                    self.close_code = Some(r.websocket_close_code());
                }
                if let Some(j) = model::event_json(&ev) {
                    events.push(j);
                }
            }
            let mut buf = BytesMut::new();
            while self.conn.poll_transmit(&mut buf) > 0 {
                any = true;
                let mut msg = buf.split().freeze();
                while let Some(r) = codec::decode_frame(&mut msg, self.peer_max_payload) {
                    match r {
                        Ok(f) => sent.push(Sent::of(&f)),
                        Err(e) => return Err(format!("sent an invalid frame: {e}")),
                    }
                }
            }
            if !any {
                return Ok((sent, events));
            }
        }
    }

    /// The state by its SPEC §6.1 name.
    pub fn state_name(&self) -> &'static str {
        match self.conn.state() {
            State::Handshaking | State::Resuming => "Handshaking",
            State::Open => "Open",
            State::Draining => "Draining",
            State::Detached => "Detached",
            State::Closed => "Closed",
            other => unreachable!("a state SPEC §6.1 does not name: {other:?}"),
        }
    }
}
