#![no_main]
//! See `asp_proto::fuzzing::roundtrip` for the input layout and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| asp_proto::fuzzing::roundtrip(data));
