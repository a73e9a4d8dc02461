//! # asp-proto — the Sans-IO core of the Agent Socket Protocol
//!
//! ASP carries tool invocations between AI-agent clients and servers over one full-duplex
//! connection: an 8-byte header plus a MessagePack payload per frame, over WebSocket or any
//! byte stream. The wire format is specified in `SPEC.md` at the repository root; this
//! crate's comments cite its sections (`SPEC §3.6`).
//!
//! This crate does no IO, reads no clock and spawns nothing: bytes and time go in, frames,
//! events and deadlines come out. Runtime adapters (`asp-tokio`, `asp-smol`) move the bytes; the relay binding
//! (SPEC §15) lives in `asp-relay`.
//!
//! - [`codec`]: frames ↔ bytes ([`codec::encode`], [`codec::decode_frame`], [`Decoder`]).
//! - [`frame`]: one type per frame.
//! - [`error`]: wire error codes and decode errors.
//! - [`Connection`]: the state machine; drive it with `handle_*`, command it with `invoke`,
//!   `stream`, `complete`…, and drain `poll_transmit`, `poll_ping`, `poll_event`, then
//!   `poll_timeout`, after every input.
//! - `fuzzing` (feature `arbitrary`): `arbitrary::Arbitrary` for frames and the bodies of
//!   the `fuzz/` targets.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod codec;
mod config;
mod conn;
pub mod error;
mod event;
mod exchange;
pub mod frame;
#[cfg(feature = "arbitrary")]
pub mod fuzzing;
mod msgpack;
mod outbox;
mod rate;
mod replay;
mod time;

pub use bytes::Bytes;
pub use codec::Decoder;
pub use config::{Config, HeartbeatMode, Limits};
pub use conn::{BatchError, Command, Connection, InvokeOptions, Role, ServerParams, State};
pub use error::{CloseReason, DecodeError, DecodeErrorKind, ErrorCode, ErrorScope, SendError};
pub use event::{Event, Outcome, Session, ToolChange};
pub use frame::{Frame, FrameType, RawValue, RequestId, Text};
pub use time::Instant;
