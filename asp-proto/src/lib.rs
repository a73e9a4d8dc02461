//! # asp-proto — the Sans-IO core of the Agent Socket Protocol
//!
//! ASP carries tool invocations between AI-agent clients and servers over one full-duplex
//! connection: an 8-byte header plus a MessagePack payload per frame, over WebSocket or any
//! byte stream. The wire format is specified in `SPEC.md` at the repository root; this
//! crate's comments cite its sections (`SPEC §3.6`).
//!
//! This crate does no IO, reads no clock and spawns nothing: bytes and time go in, frames,
//! events and deadlines come out. Runtime adapters (`asp-tokio`, `asp-smol`) move the bytes.
//!
//! # Map of the public API
//!
//! | item | what it is |
//! |---|---|
//! | [`Connection`] | the state machine, client or server; its doc states the driving contract (getters, `handle_*`, commands, `poll_*` in order) with a compiled loop |
//! | [`Config`], [`Limits`], [`HeartbeatMode`], [`ServerParams`], [`InvokeOptions`], [`StreamOptions`] | what a connection is created and commanded with |
//! | [`Event`], [`InvocationOutcome`], [`RequestOutcome`], [`Session`], [`ToolChange`] | what `poll_event` reports |
//! | [`SendError`], [`CloseReason`], [`State`], [`Role`] | local misuse, why it closed, where it is |
//! | [`Command`], [`BatchError`] | "can this batch be sent now, all of it?" ([`Connection::check_batch`]) |
//! | [`Instant`] | the crate's own time: microseconds from an origin the caller picks |
//! | [`frame`] | one type per frame ([`Frame`], [`RequestId`], [`Text`], [`RawValue`], …) |
//! | [`codec`] | frames ↔ bytes: [`codec::encode`], [`codec::decode_frame`] (message mode), [`Decoder`] (byte stream) |
//! | [`error`] | wire error codes ([`ErrorCode`], [`ErrorScope`]) and decode errors ([`DecodeError`], [`DecodeErrorKind`]) |
//! | (feature `arbitrary`) | `arbitrary::Arbitrary` for every frame type, for structured fuzzing |
//!
//! The relay binding (SPEC §15) is not here: it lives in the `asp-relay` crate.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

#[cfg(feature = "arbitrary")]
mod arbitrary;
pub mod codec;
mod config;
mod conn;
pub mod error;
mod event;
mod exchange;
pub mod frame;
#[cfg(all(fuzzing, feature = "arbitrary"))]
#[doc(hidden)]
pub mod fuzzing;
mod msgpack;
mod outbox;
mod rate;
mod replay;
mod time;

pub use bytes::Bytes;
pub use codec::Decoder;
pub use config::{Config, HeartbeatMode, Limits};
pub use conn::{
    BatchError, Command, Connection, InvokeOptions, Role, ServerParams, Snapshot, SnapshotError,
    State, StreamOptions,
};
pub use error::{CloseReason, DecodeError, DecodeErrorKind, ErrorCode, ErrorScope, SendError};
pub use event::{Event, InvocationOutcome, RequestOutcome, Session, ToolChange};
pub use frame::{Frame, FrameType, RawValue, RequestId, Text};
pub use time::Instant;
