#![no_main]
//! See `asp_relay::fuzzing::head_and_trailers` for the input layout and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| asp_relay::fuzzing::head_and_trailers(data));
