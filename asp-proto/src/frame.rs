//! Typed frames (SPEC §3, §5). One struct per frame type; payload data are [`Bytes`]
//! slices of the received buffer, never copies.

use bytes::Bytes;
use core::fmt;

use crate::error::Malformed;
use crate::msgpack::Reader;

/// Frame type codes (SPEC §3.3). `0x0` and `0xF` are reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// `0x1`, SPEC §5.1.
    Hello = 0x1,
    /// `0x2`, SPEC §5.2.
    Invoke = 0x2,
    /// `0x3`, SPEC §5.3.
    Stream = 0x3,
    /// `0x4`, SPEC §5.4.
    Interrupt = 0x4,
    /// `0x5`, SPEC §5.5.
    ToolDef = 0x5,
    /// `0x6`, SPEC §5.6.
    Complete = 0x6,
    /// `0x7`, SPEC §5.7.
    Error = 0x7,
    /// `0x8`, SPEC §5.8.
    Ping = 0x8,
    /// `0x9`, SPEC §5.8.
    Pong = 0x9,
    /// `0xA`, SPEC §5.9.
    Request = 0xA,
    /// `0xB`, SPEC §5.10.
    Reply = 0xB,
    /// `0xC`, SPEC §5.11.
    Credit = 0xC,
    /// `0xD`, SPEC §5.12.
    GoAway = 0xD,
    /// `0xE`, SPEC §5.13.
    Resume = 0xE,
}

impl FrameType {
    /// All defined types, in code order.
    pub const ALL: [FrameType; 14] = [
        FrameType::Hello,
        FrameType::Invoke,
        FrameType::Stream,
        FrameType::Interrupt,
        FrameType::ToolDef,
        FrameType::Complete,
        FrameType::Error,
        FrameType::Ping,
        FrameType::Pong,
        FrameType::Request,
        FrameType::Reply,
        FrameType::Credit,
        FrameType::GoAway,
        FrameType::Resume,
    ];

    /// The type for a header nibble, or `None` for the reserved codes.
    pub fn from_nibble(n: u8) -> Option<FrameType> {
        FrameType::ALL.get(usize::from(n).wrapping_sub(1)).copied()
    }

    /// The SPEC name (`"TOOL_DEF"`).
    pub fn name(self) -> &'static str {
        match self {
            FrameType::Hello => "HELLO",
            FrameType::Invoke => "INVOKE",
            FrameType::Stream => "STREAM",
            FrameType::Interrupt => "INTERRUPT",
            FrameType::ToolDef => "TOOL_DEF",
            FrameType::Complete => "COMPLETE",
            FrameType::Error => "ERROR",
            FrameType::Ping => "PING",
            FrameType::Pong => "PONG",
            FrameType::Request => "REQUEST",
            FrameType::Reply => "REPLY",
            FrameType::Credit => "CREDIT",
            FrameType::GoAway => "GOAWAY",
            FrameType::Resume => "RESUME",
        }
    }

    /// Which request ids this type may carry (SPEC §3.5).
    pub fn id_rule(self) -> IdRule {
        match self {
            FrameType::Hello
            | FrameType::ToolDef
            | FrameType::Ping
            | FrameType::Pong
            | FrameType::GoAway
            | FrameType::Resume => IdRule::Zero,
            FrameType::Invoke | FrameType::Stream | FrameType::Complete | FrameType::Credit => {
                IdRule::Client
            }
            FrameType::Request | FrameType::Reply => IdRule::Server,
            FrameType::Interrupt => IdRule::NonZero,
            FrameType::Error => IdRule::Any,
        }
    }
}

/// The request ids a frame type allows (SPEC §3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdRule {
    /// Only 0.
    Zero,
    /// `0x0001`–`0x7FFF`.
    Client,
    /// `0x8000`–`0xFFFF`.
    Server,
    /// Any id but 0.
    NonZero,
    /// Any id.
    Any,
}

impl IdRule {
    /// Whether `id` satisfies the rule.
    pub fn allows(self, id: RequestId) -> bool {
        match self {
            IdRule::Zero => id.is_connection(),
            IdRule::Client => id.is_client(),
            IdRule::Server => id.is_server(),
            IdRule::NonZero => !id.is_connection(),
            IdRule::Any => true,
        }
    }
}

/// A 16-bit request id (SPEC §3.5): 0 is the connection, `0x0001`–`0x7FFF` the client's
/// invocations, `0x8000`–`0xFFFF` the server's requests.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RequestId(pub u16);

impl RequestId {
    /// Id 0: the connection itself.
    pub const CONNECTION: RequestId = RequestId(0);

    /// Id 0?
    pub fn is_connection(self) -> bool {
        self.0 == 0
    }
    /// In the client (invocation) space?
    pub fn is_client(self) -> bool {
        (1..0x8000).contains(&self.0)
    }
    /// In the server (request) space?
    pub fn is_server(self) -> bool {
        self.0 >= 0x8000
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A UTF-8 string held as a [`Bytes`] slice (no copy on decode).
#[derive(Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Text(Bytes);

impl Text {
    /// A text from a static string, without allocating.
    pub const fn from_static(s: &'static str) -> Text {
        Text(Bytes::from_static(s.as_bytes()))
    }

    /// Wraps bytes that must be valid UTF-8.
    pub fn from_utf8(b: Bytes) -> Result<Text, core::str::Utf8Error> {
        core::str::from_utf8(&b)?;
        Ok(Text(b))
    }

    /// Bytes already checked to be UTF-8 by the decoder.
    pub(crate) fn from_checked(b: Bytes) -> Text {
        debug_assert!(core::str::from_utf8(&b).is_ok());
        Text(b)
    }

    /// The string. (Re-checks UTF-8, which the type guarantees, since this crate forbids
    /// `unsafe`; for the short names ASP uses that costs a few nanoseconds.)
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The UTF-8 bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Is it empty?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Bytes::from(s))
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One complete MessagePack value, kept encoded (schema type `any`, SPEC §4.2): tool
/// arguments, results, schemas. ASP never interprets it; applications decode it with the
/// MessagePack library of their choice.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RawValue(Bytes);

impl RawValue {
    /// Wraps bytes after checking they hold exactly one well-formed MessagePack value.
    pub fn new(b: Bytes) -> Result<RawValue, Malformed> {
        let mut r = Reader::new(&b);
        r.skip_value()?;
        if !r.at_end() {
            return Err(Malformed::TrailingBytes);
        }
        Ok(RawValue(b))
    }

    /// Bytes the decoder already checked.
    pub(crate) fn from_checked(b: Bytes) -> RawValue {
        RawValue(b)
    }

    /// MessagePack `nil`.
    pub fn nil() -> RawValue {
        RawValue(Bytes::from_static(&[0xc0]))
    }

    /// A MessagePack string value.
    pub fn string(s: &str) -> RawValue {
        let mut b = bytes::BytesMut::with_capacity(s.len() + 5);
        crate::msgpack::Writer(&mut b).str(s.as_bytes());
        RawValue(b.freeze())
    }

    /// A MessagePack unsigned integer value.
    pub fn uint(v: u64) -> RawValue {
        let mut b = bytes::BytesMut::with_capacity(9);
        crate::msgpack::Writer(&mut b).uint(v);
        RawValue(b.freeze())
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Consumes the value, returning its encoded bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl fmt::Debug for RawValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawValue({:02x?})", &self.0[..])
    }
}

/// A set of protocol versions 1–15, as a bit set (HELLO `versions`, SPEC §5.1).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Versions(u16);

impl Versions {
    /// Only version 1.
    pub const V1: Versions = Versions(1 << 1);

    /// Only versions 1–15 exist (a 4-bit header nibble, 0 is not a version).
    const VALID: u16 = 0xfffe;

    /// A set with exactly `v`; empty if `v` is not 1–15.
    pub fn single(v: u8) -> Versions {
        let mut s = Versions(0);
        s.insert(v);
        s
    }
    /// Adds version `v`; values outside 1–15 are ignored.
    pub fn insert(&mut self, v: u8) {
        if v < 16 {
            self.0 |= (1u16 << v) & Self::VALID;
        }
    }
    /// Contains `v`?
    pub fn contains(self, v: u8) -> bool {
        v < 16 && self.0 & (1 << v) != 0
    }
    /// Versions in both sets.
    pub fn intersect(self, other: Versions) -> Versions {
        Versions(self.0 & other.0)
    }
    /// The highest version, if any.
    pub fn highest(self) -> Option<u8> {
        (1..16).rev().find(|v| self.contains(*v))
    }
    /// Number of versions.
    pub fn len(self) -> u32 {
        self.0.count_ones()
    }
    /// Empty?
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Ascending iterator.
    pub fn iter(self) -> impl Iterator<Item = u8> {
        (1..16).filter(move |v| self.contains(*v))
    }
}

impl fmt::Debug for Versions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// HELLO `limits` (SPEC §5.1, §13): what the sender accepts. `None` = the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HelloLimits {
    /// Key 0: largest payload accepted.
    pub max_frame_payload: Option<u32>,
    /// Key 1: exchanges in flight accepted.
    pub max_inflight: Option<u16>,
    /// Key 2: tool definitions stored (client).
    pub max_tools: Option<u16>,
    /// Key 3: largest STREAM data accepted (client).
    pub max_chunk: Option<u32>,
    /// Key 4: initial per-invocation STREAM window (client).
    pub initial_window: Option<u32>,
    /// Key 5: bytes of sent frames this side keeps for a resume (SPEC §11.1), announced
    /// when it offers `resume`.
    pub replay_buffer: Option<u32>,
    /// Key 6: how long this side keeps a detached session, in ms (SPEC §11.2), announced
    /// when it offers `resume`.
    pub resume_window_ms: Option<u32>,
}

impl HelloLimits {
    pub(crate) fn is_empty(&self) -> bool {
        *self == HelloLimits::default()
    }
}

/// HELLO (SPEC §5.1).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Hello {
    /// Client: versions spoken; server: exactly the one chosen.
    pub versions: Versions,
    /// Optional features (SPEC §6.4).
    pub capabilities: Vec<Text>,
    /// What the sender accepts.
    pub limits: HelloLimits,
    /// Sender's heartbeat interval in ms; `None` = default (30 000), `Some(0)` = none.
    pub heartbeat_ms: Option<u32>,
    /// Server only: the connection id.
    pub connection_id: Option<Text>,
    /// Server only: resume token (SPEC §11).
    pub resume_token: Option<Bytes>,
    /// Server only: number of TOOL_DEF frames that follow.
    pub tools: u16,
    /// Implementation name and version.
    pub agent: Option<Text>,
}

/// INVOKE (SPEC §5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invoke {
    /// Invocation id (client space).
    pub id: RequestId,
    /// Tool name, 1–128 bytes.
    pub tool: Text,
    /// Arguments; `None` = nil.
    pub args: Option<RawValue>,
    /// Deadline in ms from receipt; 0 = none.
    pub deadline_ms: u32,
    /// Opaque context.
    pub meta: Option<RawValue>,
}

/// STREAM (SPEC §5.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    /// Invocation id.
    pub id: RequestId,
    /// The chunk.
    pub data: Bytes,
    /// `true` if sent as MessagePack `str` (checked UTF-8), `false` for `bin`.
    pub text: bool,
    /// Sequence number (SPEC §7.6).
    pub seq: u32,
    /// Last STREAM of the invocation.
    pub fin: bool,
}

/// INTERRUPT (SPEC §5.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interrupt {
    /// The invocation or request to interrupt.
    pub id: RequestId,
    /// Why.
    pub reason: Option<Text>,
}

/// TOOL_DEF operation (SPEC §5.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolOp {
    /// 0: a new tool.
    Add = 0,
    /// 1: replace a tool's definition.
    Update = 1,
    /// 2: remove a tool.
    Remove = 2,
}

/// TOOL_DEF (SPEC §5.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolDef {
    /// Add, update or remove.
    pub op: ToolOp,
    /// Tool name, 1–128 bytes.
    pub name: Text,
    /// Description (empty if absent).
    pub description: Text,
    /// JSON Schema of the arguments, as MessagePack.
    pub input_schema: Option<RawValue>,
    /// Opaque hints.
    pub annotations: Option<RawValue>,
}

/// COMPLETE status (SPEC §5.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// 0: finished normally.
    Ok = 0,
    /// 1: stopped because of an INTERRUPT.
    Cancelled = 1,
    /// 2: the tool failed.
    Failed = 2,
}

/// COMPLETE `metrics` (SPEC §5.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Metrics {
    /// Wall time from INVOKE receipt to COMPLETE, µs.
    pub wall_us: Option<u64>,
    /// CPU time, µs.
    pub cpu_us: Option<u64>,
    /// Input tokens.
    pub input_tokens: Option<u64>,
    /// Output tokens.
    pub output_tokens: Option<u64>,
}

impl Metrics {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Metrics::default()
    }
}

/// COMPLETE (SPEC §5.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Complete {
    /// Invocation id.
    pub id: RequestId,
    /// Outcome.
    pub status: Status,
    /// Result value.
    pub result: Option<RawValue>,
    /// Execution metrics.
    pub metrics: Metrics,
}

/// ERROR (SPEC §5.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorFrame {
    /// 0 for the connection, else the exchange it concerns.
    pub id: RequestId,
    /// The code (SPEC §12).
    pub code: crate::ErrorCode,
    /// Detail.
    pub message: Option<Text>,
    /// May succeed if retried.
    pub retryable: bool,
    /// Type nibble of the frame that caused it.
    pub frame_type: Option<u8>,
}

/// REQUEST (SPEC §5.9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Request id (server space).
    pub id: RequestId,
    /// What is asked.
    pub kind: Text,
    /// The question.
    pub body: Option<RawValue>,
    /// The invocation it belongs to.
    pub invocation: Option<RequestId>,
}

/// REPLY status (SPEC §5.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyStatus {
    /// 0: answered.
    Answered = 0,
    /// 1: cancelled (after an INTERRUPT).
    Cancelled = 1,
    /// 2: the user declined.
    Declined = 2,
}

/// REPLY (SPEC §5.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Request id.
    pub id: RequestId,
    /// Outcome.
    pub status: ReplyStatus,
    /// The answer.
    pub body: Option<RawValue>,
}

/// CREDIT (SPEC §5.11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credit {
    /// Invocation id.
    pub id: RequestId,
    /// Window increase in bytes, ≥ 1.
    pub bytes: u32,
}

/// GOAWAY (SPEC §5.12).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GoAway {
    /// Why.
    pub reason: Option<Text>,
    /// How long the sender waits before closing, ms; 0 = unspecified.
    pub timeout_ms: u32,
}

/// RESUME (SPEC §5.13).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    /// Client only: the session's resume token.
    pub token: Option<Bytes>,
    /// Counted frames the sender received in the session.
    pub received: u64,
}

/// PING and PONG (SPEC §5.8): empty, except in a resumable session, where either may carry
/// the sender's `received` count as an acknowledgement (SPEC §11.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Heartbeat {
    /// Key 0: counted frames the sender has received (processed) in the session.
    pub received: Option<u64>,
}

impl Heartbeat {
    /// No fields: the empty payload.
    pub const NONE: Heartbeat = Heartbeat { received: None };
}

/// Any ASP frame.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Frame {
    Hello(Hello),
    Invoke(Invoke),
    Stream(Stream),
    Interrupt(Interrupt),
    ToolDef(ToolDef),
    Complete(Complete),
    Error(ErrorFrame),
    Ping(Heartbeat),
    Pong(Heartbeat),
    Request(Request),
    Reply(Reply),
    Credit(Credit),
    GoAway(GoAway),
    Resume(Resume),
}

impl Frame {
    /// A PING without fields.
    pub const PING: Frame = Frame::Ping(Heartbeat::NONE);
    /// A PONG without fields.
    pub const PONG: Frame = Frame::Pong(Heartbeat::NONE);

    /// The frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Hello(_) => FrameType::Hello,
            Frame::Invoke(_) => FrameType::Invoke,
            Frame::Stream(_) => FrameType::Stream,
            Frame::Interrupt(_) => FrameType::Interrupt,
            Frame::ToolDef(_) => FrameType::ToolDef,
            Frame::Complete(_) => FrameType::Complete,
            Frame::Error(_) => FrameType::Error,
            Frame::Ping(_) => FrameType::Ping,
            Frame::Pong(_) => FrameType::Pong,
            Frame::Request(_) => FrameType::Request,
            Frame::Reply(_) => FrameType::Reply,
            Frame::Credit(_) => FrameType::Credit,
            Frame::GoAway(_) => FrameType::GoAway,
            Frame::Resume(_) => FrameType::Resume,
        }
    }

    /// The header's request id.
    pub fn request_id(&self) -> RequestId {
        match self {
            Frame::Invoke(f) => f.id,
            Frame::Stream(f) => f.id,
            Frame::Interrupt(f) => f.id,
            Frame::Complete(f) => f.id,
            Frame::Error(f) => f.id,
            Frame::Request(f) => f.id,
            Frame::Reply(f) => f.id,
            Frame::Credit(f) => f.id,
            Frame::Hello(_)
            | Frame::ToolDef(_)
            | Frame::Ping(_)
            | Frame::Pong(_)
            | Frame::GoAway(_)
            | Frame::Resume(_) => RequestId::CONNECTION,
        }
    }
}
