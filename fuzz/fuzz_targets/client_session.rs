#![no_main]
//! See `asp_proto::fuzzing::session` for the input layout and the invariants.
use asp_proto::Role;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| asp_proto::fuzzing::session(Role::Client, data));
