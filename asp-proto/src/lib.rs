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
//! - [`codec`]: frames ↔ bytes ([`codec::encode`], [`codec::decode_frame`], [`Decoder`]).
//! - [`frame`]: one type per frame.
//! - [`error`]: wire error codes and decode errors.
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
pub mod error;
pub mod frame;
mod msgpack;

pub use bytes::Bytes;
pub use codec::Decoder;
pub use error::{DecodeError, DecodeErrorKind, ErrorCode, ErrorScope};
pub use frame::{Frame, FrameType, RawValue, RequestId, Text};
