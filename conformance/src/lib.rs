//! # conformance — the ASP conformance runner
//!
//! Runs the language-agnostic vectors of `conformance/vectors/` (format: `README.md`) in
//! process against `asp-proto`, or plays the live session vectors against any ASP endpoint
//! over WebSocket. The expected values come from SPEC.md via an independent generator
//! (`gen/gen_vectors.py`), never from this repository's code.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod frames;
pub mod harness;
pub mod hex;
pub mod live;
pub mod matcher;
pub mod model;
pub mod profile;
pub mod rejections;
pub mod runner;
pub mod sessions;

pub use live::{run_live, LiveOptions};
pub use runner::{
    default_expected_failures, default_vectors_dir, load, run_files, ExpectedFailures, Summary,
};
