//! The bodies of the `fuzz/` targets (compiled only under `cfg(fuzzing)`, which cargo-fuzz
//! sets, with the feature `arbitrary`; hidden from the docs). The seed-replay test
//! `tests/fuzz_regressions.rs` runs the very same code:
//! `RUSTFLAGS="--cfg fuzzing" cargo test -p asp-proto --features arbitrary --test fuzz_regressions`.
//!
//! The harnesses panic (with a message naming the broken invariant) on any violation:
//!
//! - [`decode`]: raw bytes through [`Decoder`](crate::Decoder) in fuzzer-chosen chunks and
//!   through [`codec::decode_frame`](crate::codec::decode_frame) (`codec.rs`).
//! - [`roundtrip`]: an arbitrary [`Frame`](crate::Frame) through encode and both decoders
//!   (`codec.rs`).
//! - [`session`]: one [`Connection`](crate::Connection) driven by a scripted, partly
//!   malicious peer (`session.rs`).
//! - [`pair`]: a client and a server wired together by the link simulator (`link.rs`, shared
//!   with the scenario tests' `tests/pair`), the fuzzer choosing what is sent, delivered,
//!   polled, and when time passes (`pair.rs`).
//!
//! Input layouts are documented on each function; `fuzz/gen_seeds.py` writes seeds in them.
#![allow(
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod codec;
mod link;
mod pair;
mod session;

// For `link.rs`, which `tests/pair` includes too (where `Instant` is `asp_proto::Instant`).
use crate::Instant;

pub use self::codec::{decode, roundtrip};
pub use self::pair::pair;
pub use self::session::session;
