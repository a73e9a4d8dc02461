//! Error types: wire error codes (SPEC §12), decode errors (peer sent bad bytes) and the
//! split between local misuse and peer violations.

use core::fmt;

/// A wire error code, carried in ERROR frames (SPEC §12.2).
///
/// Codes are plain numbers so that codes this version does not know still round-trip; the
/// constants name every code the specification defines, and [`ErrorCode::scope`] classifies
/// any code by its range (SPEC §12.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u16);

/// What an ERROR with a given code ends (SPEC §12.1). Exhaustive on purpose: its five
/// ranges cover every `u16`, so a new code always falls into one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorScope {
    /// `0x01`–`0x0F`: the whole connection; the sender closes after sending.
    Connection,
    /// `0x10`–`0x1F`: one frame was discarded; ends the id named if it is in flight.
    Frame,
    /// `0x20`–`0x3F`: one exchange (or, with id 0, the tool set or a warning).
    Exchange,
    /// `0x40` and above: raised by applications; ends the id named.
    Application,
    /// Code 0, which is invalid on the wire.
    Invalid,
}

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $val:expr;)*) => {
        impl ErrorCode {
            $($(#[$doc])* pub const $name: ErrorCode = ErrorCode($val);)*

            /// The registry name (`"FRAME_TOO_LARGE"`), or `None` for a code SPEC §12.2 does
            /// not define.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            /// Looks a code up by its registry name.
            pub fn from_name(name: &str) -> Option<ErrorCode> {
                match name {
                    $(stringify!($name) => Some(ErrorCode::$name),)*
                    _ => None,
                }
            }

            /// Every code SPEC §12.2 defines, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];
        }
    };
}

codes! {
    /// A frame not allowed in the connection's state or direction.
    PROTOCOL_VIOLATION = 0x01;
    /// Header version ≠ 1, or no common protocol version.
    UNSUPPORTED_VERSION = 0x02;
    /// No HELLO within the handshake timeout.
    HANDSHAKE_TIMEOUT = 0x03;
    /// The peer was silent for three heartbeat intervals.
    HEARTBEAT_TIMEOUT = 0x04;
    /// Inbound frames beyond the hard rate limit.
    FLOOD = 0x05;
    /// Drain timeout elapsed with exchanges still in flight.
    GOING_AWAY = 0x06;
    /// A text WebSocket message, or a message that ends inside a frame.
    FRAMING_ERROR = 0x07;
    /// A session could not be resumed.
    RESUME_FAILED = 0x08;
    /// The peer made this side hold more than its per-connection bound (SPEC §13.1):
    /// replies it does not read, or a WebSocket message above the receiver's limit.
    OVERLOADED = 0x09;
    /// Frame type `0x0` or `0xF`.
    UNKNOWN_FRAME_TYPE = 0x10;
    /// A reserved flag bit was set.
    RESERVED_FLAGS = 0x11;
    /// Declared payload length above the receiver's `max_frame_payload`.
    FRAME_TOO_LARGE = 0x12;
    /// Payload is not one well-formed map with integer keys.
    MALFORMED_PAYLOAD = 0x13;
    /// A required field is absent or nil.
    MISSING_FIELD = 0x14;
    /// A field has the wrong type, is out of range or is not UTF-8.
    INVALID_FIELD = 0x15;
    /// The request id is not allowed for the frame type.
    INVALID_ID = 0x16;
    /// INVOKE of a tool the server does not have.
    UNKNOWN_TOOL = 0x20;
    /// An opening frame for an id already in flight.
    DUPLICATE_ID = 0x21;
    /// STREAM, COMPLETE or REPLY for an id not in flight.
    UNKNOWN_ID = 0x22;
    /// Above `max_inflight`.
    TOO_MANY_INFLIGHT = 0x23;
    /// STREAM data above `max_chunk`.
    CHUNK_TOO_LARGE = 0x24;
    /// STREAM beyond the flow-control window.
    FLOW_CONTROL = 0x25;
    /// Wrong STREAM `seq`, or STREAM after `final`.
    BAD_SEQUENCE = 0x26;
    /// The invocation's deadline passed.
    DEADLINE_EXCEEDED = 0x27;
    /// A new exchange after GOAWAY.
    DRAINING = 0x28;
    /// Over the inbound rate limit.
    RATE_LIMITED = 0x29;
    /// A REQUEST to a client that did not list the `requests` capability.
    UNSUPPORTED = 0x2A;
    /// The terminal frame (a COMPLETE's result, a REPLY's body) would exceed the peer's
    /// `max_frame_payload`; this ERROR replaces it (SPEC §3.6, §7.1).
    RESULT_TOO_LARGE = 0x2B;
    /// A TOOL_DEF add beyond the client's `max_tools`.
    TOO_MANY_TOOLS = 0x30;
    /// TOOL_DEF add of a known name, or update/remove of an unknown one.
    TOOL_STATE = 0x31;
    /// The tool rejected its arguments.
    INVALID_ARGUMENTS = 0x40;
    /// The tool failed.
    TOOL_FAILED = 0x41;
    /// A bug or crash in the handler.
    INTERNAL = 0x42;
    /// The backend cannot be reached.
    UNAVAILABLE = 0x43;
    /// The backend did not answer in time.
    UPSTREAM_TIMEOUT = 0x44;
}

impl ErrorCode {
    /// The scope of this code, from its range (SPEC §12.1).
    pub fn scope(self) -> ErrorScope {
        match self.0 {
            0 => ErrorScope::Invalid,
            0x01..=0x0F => ErrorScope::Connection,
            0x10..=0x1F => ErrorScope::Frame,
            0x20..=0x3F => ErrorScope::Exchange,
            _ => ErrorScope::Application,
        }
    }

    /// Whether the registry marks this code retryable (SPEC §12.2).
    pub fn default_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::HANDSHAKE_TIMEOUT
                | ErrorCode::HEARTBEAT_TIMEOUT
                | ErrorCode::OVERLOADED
                | ErrorCode::GOING_AWAY
                | ErrorCode::TOO_MANY_INFLIGHT
                | ErrorCode::DEADLINE_EXCEEDED
                | ErrorCode::DRAINING
                | ErrorCode::RATE_LIMITED
                | ErrorCode::INTERNAL
                | ErrorCode::UNAVAILABLE
                | ErrorCode::UPSTREAM_TIMEOUT
        )
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}(0x{:02x})", self.0),
            None => write!(f, "ErrorCode(0x{:02x})", self.0),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a payload is not well-formed MessagePack of the required shape (SPEC §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    /// The payload is not a map.
    NotAMap,
    /// The payload ends inside a value.
    Truncated,
    /// The byte `0xc1`, which MessagePack never uses.
    InvalidMarker,
    /// A map key that is not an unsigned integer.
    NonIntegerKey,
    /// A defined key appears twice.
    DuplicateKey(u8),
    /// Bytes after the map.
    TrailingBytes,
}

/// Why a field is invalid (SPEC §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalid {
    /// The value has another MessagePack type than the schema requires.
    WrongType,
    /// An integer outside the field's range, or an unknown enum value.
    OutOfRange,
    /// A string that is not valid UTF-8.
    Utf8,
    /// A string, binary or array longer than the field allows.
    TooLong,
    /// An empty string where at least one byte is required.
    Empty,
}

/// What was wrong with an inbound frame. Each variant maps to one wire code
/// ([`DecodeErrorKind::code`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// Header version nibble is not 1 (SPEC §3.2). Fatal: framing cannot be trusted.
    UnsupportedVersion {
        /// The version nibble received.
        version: u8,
    },
    /// Declared payload length above the limit (SPEC §3.6). The payload is skipped.
    FrameTooLarge {
        /// Declared length.
        len: u32,
        /// The receiver's `max_frame_payload`.
        max: u32,
    },
    /// Type nibble `0x0` or `0xF` (SPEC §3.3).
    UnknownFrameType,
    /// A reserved flag bit was set (SPEC §3.4).
    ReservedFlags {
        /// The flags byte received.
        flags: u8,
    },
    /// The request id is not allowed for the frame type (SPEC §3.5).
    InvalidId,
    /// The payload is not well-formed (SPEC §4.3).
    Malformed(Malformed),
    /// A required field is absent or nil (SPEC §4.2).
    MissingField {
        /// The SPEC name of the field.
        field: &'static str,
    },
    /// A field is mistyped, out of range or not UTF-8 (SPEC §4.2).
    InvalidField {
        /// The SPEC name of the field.
        field: &'static str,
        /// What is wrong with it.
        reason: Invalid,
    },
    /// A WebSocket message ended inside a frame (SPEC §2.1). Fatal.
    Truncated,
}

impl DecodeErrorKind {
    /// The wire code for this error (SPEC §12.2).
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeErrorKind::UnsupportedVersion { .. } => ErrorCode::UNSUPPORTED_VERSION,
            DecodeErrorKind::FrameTooLarge { .. } => ErrorCode::FRAME_TOO_LARGE,
            DecodeErrorKind::UnknownFrameType => ErrorCode::UNKNOWN_FRAME_TYPE,
            DecodeErrorKind::ReservedFlags { .. } => ErrorCode::RESERVED_FLAGS,
            DecodeErrorKind::InvalidId => ErrorCode::INVALID_ID,
            DecodeErrorKind::Malformed(_) => ErrorCode::MALFORMED_PAYLOAD,
            DecodeErrorKind::MissingField { .. } => ErrorCode::MISSING_FIELD,
            DecodeErrorKind::InvalidField { .. } => ErrorCode::INVALID_FIELD,
            DecodeErrorKind::Truncated => ErrorCode::FRAMING_ERROR,
        }
    }

    /// Whether the connection cannot continue after this error (the framing is lost).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            DecodeErrorKind::UnsupportedVersion { .. } | DecodeErrorKind::Truncated
        )
    }
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeErrorKind::UnsupportedVersion { version } => {
                write!(f, "unsupported frame version {version} (expected 1)")
            }
            DecodeErrorKind::FrameTooLarge { len, max } => {
                write!(f, "payload length {len} exceeds max_frame_payload {max}")
            }
            DecodeErrorKind::UnknownFrameType => write!(f, "unknown frame type"),
            DecodeErrorKind::ReservedFlags { flags } => {
                write!(f, "reserved flag bits set: 0x{flags:02x}")
            }
            DecodeErrorKind::InvalidId => write!(f, "request id not allowed for this frame type"),
            DecodeErrorKind::Malformed(m) => write!(f, "malformed payload: {m:?}"),
            DecodeErrorKind::MissingField { field } => write!(f, "missing field `{field}`"),
            DecodeErrorKind::InvalidField { field, reason } => {
                write!(f, "invalid field `{field}`: {reason:?}")
            }
            DecodeErrorKind::Truncated => write!(f, "message ends inside a frame"),
        }
    }
}

/// A frame the decoder rejected, with the header fields an ERROR reply needs (SPEC §3.7).
///
/// Deliberately not `#[non_exhaustive]`: its fields are exactly what SPEC §3.7 answers
/// with, and tests build expected values of it; what grows is [`DecodeErrorKind`], which is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// The request id from the header (0 if the header was not complete).
    pub request_id: u16,
    /// The raw type nibble from the header.
    pub frame_type: u8,
    /// What was wrong.
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        self.kind.code()
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (frame type 0x{:x}, id {})",
            self.kind, self.frame_type, self.request_id
        )
    }
}

impl std::error::Error for DecodeError {}

/// A local misuse: the application asked for something the protocol does not allow now.
/// Nothing was sent (h11's `LocalProtocolError`). Peer violations never produce this; they
/// produce an ERROR frame and an [`Event`](crate::Event).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The handshake has not finished (e.g. invoking before the server's HELLO).
    NotOpen,
    /// The connection is closed.
    Closed,
    /// The connection is draining after GOAWAY: no new exchanges (SPEC §6.5).
    Draining,
    /// This role cannot send that (a client completing, a server invoking).
    WrongRole,
    /// No exchange with that id is in flight (it may already have ended: a late command
    /// after an interrupt or deadline is expected and harmless).
    NotInFlight,
    /// The peer's `max_inflight` (or our own id space) is exhausted.
    TooManyInflight,
    /// No room right now (flow-control window or transmit queue); wait for
    /// [`Event::Writable`](crate::Event::Writable).
    Full,
    /// The frame or chunk exceeds a limit the peer announced.
    TooLarge {
        /// Size attempted.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A field is outside its SPEC range (e.g. an empty tool name).
    InvalidField(&'static str),
    /// STREAM after the final chunk.
    StreamFinished,
    /// The peer did not advertise the capability this needs (e.g. `requests`).
    Unsupported(&'static str),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NotOpen => write!(f, "handshake not complete"),
            SendError::Closed => write!(f, "connection closed"),
            SendError::Draining => write!(f, "connection draining after GOAWAY"),
            SendError::WrongRole => write!(f, "not allowed for this role"),
            SendError::NotInFlight => write!(f, "no exchange with that id is in flight"),
            SendError::TooManyInflight => write!(f, "too many exchanges in flight"),
            SendError::Full => write!(f, "send window or queue full"),
            SendError::TooLarge { len, max } => write!(f, "{len} bytes exceeds the limit {max}"),
            SendError::InvalidField(n) => write!(f, "invalid field `{n}`"),
            SendError::StreamFinished => write!(f, "stream already finished"),
            SendError::Unsupported(c) => write!(f, "peer does not support `{c}`"),
        }
    }
}

impl std::error::Error for SendError {}

/// Why a connection closed (in [`Event::Closed`](crate::Event::Closed)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The application called `close`.
    Local,
    /// A graceful GOAWAY drain finished.
    Drained,
    /// The peer sent a connection error (SPEC §12.1) — or closed after it.
    PeerError {
        /// The code received.
        code: ErrorCode,
        /// Its message.
        message: Option<String>,
    },
    /// We detected a connection-level violation and sent this code before closing.
    ProtocolError {
        /// The code sent.
        code: ErrorCode,
        /// What was wrong.
        message: String,
    },
    /// The transport ended (and the session could not be or was not resumed).
    TransportClosed,
}

/// WebSocket close codes (RFC 6455 §7.4.1) that ASP uses (SPEC §2.1).
pub mod close_code {
    /// Normal closure: a graceful shutdown (GOAWAY drained, `close`, the transport ended).
    pub const NORMAL: u16 = 1000;
    /// Going away: a timeout gave up on the peer (handshake, heartbeat, drain).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error: a connection error that breaks the protocol (SPEC §12.2).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Policy violation: `FLOOD` (SPEC §10).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// Internal error: this side cannot go on (`RESUME_FAILED`, a local bound hit).
    pub const INTERNAL_ERROR: u16 = 1011;
}

impl ErrorCode {
    /// The WebSocket close code that follows this connection error (SPEC §2.1): 1008 for
    /// `FLOOD` and `OVERLOADED`, 1001 for the timeouts (`HANDSHAKE_TIMEOUT`, `HEARTBEAT_TIMEOUT`,
    /// `GOING_AWAY`: the peer broke no rule, it was absent or slow), 1011 for
    /// `RESUME_FAILED`, 1002 for every other code (a broken protocol rule).
    pub fn websocket_close_code(self) -> u16 {
        match self {
            // SPEC §2.1: the peer broke a limit the receiver sets (rate, §10; memory, §13.1).
            ErrorCode::FLOOD | ErrorCode::OVERLOADED => close_code::POLICY_VIOLATION,
            ErrorCode::HANDSHAKE_TIMEOUT | ErrorCode::HEARTBEAT_TIMEOUT | ErrorCode::GOING_AWAY => {
                close_code::GOING_AWAY
            }
            ErrorCode::RESUME_FAILED => close_code::INTERNAL_ERROR,
            _ => close_code::PROTOCOL_ERROR,
        }
    }
}

impl CloseReason {
    /// The WebSocket close code a side sends when it closes for this reason (SPEC §2.1):
    /// 1000 after a graceful close, the code's mapping
    /// ([`ErrorCode::websocket_close_code`]) after a connection error sent or received.
    pub fn websocket_close_code(&self) -> u16 {
        match self {
            CloseReason::Local | CloseReason::Drained | CloseReason::TransportClosed => {
                close_code::NORMAL
            }
            CloseReason::PeerError { code, .. } | CloseReason::ProtocolError { code, .. } => {
                code.websocket_close_code()
            }
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => write!(f, "closed locally"),
            CloseReason::Drained => write!(f, "drained after GOAWAY"),
            CloseReason::PeerError { code, message } => {
                write!(f, "peer error {code}: {}", message.as_deref().unwrap_or(""))
            }
            CloseReason::ProtocolError { code, message } => write!(f, "{code}: {message}"),
            CloseReason::TransportClosed => write!(f, "transport closed"),
        }
    }
}
