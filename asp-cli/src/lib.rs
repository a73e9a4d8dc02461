//! # asp-cli — the `asp` command-line tool
//!
//! The binary (`asp tools`, `asp call`, `asp serve`, `asp bench`; see `asp --help`) is this
//! crate's point. The library part holds only the demo agent's tools that `asp serve` runs,
//! so that the example and the tests start the same agent in process.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod demo;
