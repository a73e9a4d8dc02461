//! Replays the fuzz seeds through the same harness bodies `cargo fuzz` runs
//! (`asp_proto::fuzzing`, compiled only under `cfg(fuzzing)`), on plain stable, with no
//! fuzzing tools (a target directory of its own keeps the main one's build):
//!
//! ```sh
//! RUSTFLAGS="--cfg fuzzing" CARGO_TARGET_DIR=target/fuzzing \
//!     cargo test -p asp-proto --features arbitrary --test fuzz_regressions
//! ```
//!
//! `fuzz/seeds/<target>/` holds the seeds made from the conformance vectors
//! (`fuzz/gen_seeds.py`) and one `regress-*.bin` per crash the fuzzers found. Each crash also
//! has a named test below, so a failure names the bug.
#![cfg(all(fuzzing, feature = "arbitrary"))]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use asp_proto::{fuzzing, Role};

fn seed_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target)
}

/// Runs `run` on every seed of `target`; fails listing every seed that panicked.
fn replay(target: &str, run: fn(&[u8])) {
    let dir = seed_dir(target);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    entries.sort();
    assert!(!entries.is_empty(), "no seeds in {}", dir.display());
    let mut failed = Vec::new();
    for path in &entries {
        let data = std::fs::read(path).unwrap();
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failed.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} seeds panic: {failed:?}",
        failed.len(),
        entries.len()
    );
}

fn server(data: &[u8]) {
    fuzzing::session(Role::Server, data);
}

fn client(data: &[u8]) {
    fuzzing::session(Role::Client, data);
}

#[test]
fn seeds_decode() {
    replay("decode", fuzzing::decode);
}

#[test]
fn seeds_roundtrip() {
    replay("roundtrip", fuzzing::roundtrip);
}

#[test]
fn seeds_server_session() {
    replay("server_session", server);
}

#[test]
fn seeds_client_session() {
    replay("client_session", client);
}

#[test]
fn seeds_pair() {
    replay("pair", fuzzing::pair);
}

// ── one test per crash found (input in fuzz/seeds/<target>/regress-<name>.bin) ──

/// A header with version ≠ 1 in stream mode: `Decoder::next_frame` cleared `input` on the
/// fatal error, then advanced it by 8 bytes (`Bytes::advance` panics).
#[test]
fn regress_decoder_fatal_header_advance() {
    fuzzing::decode(include_bytes!(
        "../../fuzz/seeds/decode/regress-decoder-fatal-header-advance.bin"
    ));
    server(include_bytes!(
        "../../fuzz/seeds/server_session/regress-decoder-fatal-header-advance.bin"
    ));
}

/// `goaway` queues a reason longer than SPEC §5.12's 1024 bytes: the frame we send does
/// not decode at the peer.
#[test]
fn regress_goaway_reason_too_long() {
    server(include_bytes!(
        "../../fuzz/seeds/server_session/regress-goaway-reason-too-long.bin"
    ));
    client(include_bytes!(
        "../../fuzz/seeds/client_session/regress-goaway-reason-too-long.bin"
    ));
}

/// A tool cut from the initial set (client `max_tools` 0) stays in the server registry;
/// `remove_tool` then sends TOOL_DEF(remove) for a name the client never received, and the
/// honest client reports TOOL_STATE.
#[test]
fn regress_remove_tool_cut_from_initial_set() {
    fuzzing::pair(include_bytes!(
        "../../fuzz/seeds/pair/regress-remove-tool-cut-from-initial-set.bin"
    ));
}

/// A tool registered before the handshake is checked against the default
/// `max_frame_payload` (1 MiB), then sent in the initial set whatever the client announced:
/// the client rejects the TOOL_DEF (FRAME_TOO_LARGE) and, still waiting for it, never
/// reports `Connected`.
#[test]
fn regress_initial_tool_over_client_max_frame_payload() {
    fuzzing::pair(include_bytes!(
        "../../fuzz/seeds/pair/regress-initial-tool-over-client-max-frame-payload.bin"
    ));
}

/// The overload flag is never cleared: the application queues one large TOOL_DEF (past
/// `2 × max_queued_bytes + 8`), everything is transmitted, and the next inbound PING closes
/// the healthy connection as `Overloaded`.
#[test]
fn regress_stale_overload_flag() {
    server(include_bytes!(
        "../../fuzz/seeds/server_session/regress-stale-overload-flag.bin"
    ));
}

/// `interrupt` checks its reason against SPEC §5.4's 1024 bytes but not the frame against
/// the peer's `max_frame_payload` (SPEC minimum 64): a 57-byte reason makes a 65-byte
/// payload the honest server rejects (FRAME_TOO_LARGE). `goaway`, `fail` and the core's own
/// ERROR frames have the same gap.
#[test]
fn regress_interrupt_over_peer_max_frame_payload() {
    fuzzing::pair(include_bytes!(
        "../../fuzz/seeds/pair/regress-interrupt-over-peer-max-frame-payload.bin"
    ));
}

/// SPEC §6.2 step 1 (pipelining): a client interrupted an invocation it pipelined before
/// the server's HELLO; the INTERRUPT went out under the default limits and its reason broke
/// the server's `max_frame_payload` of 64. The INTERRUPT now waits for the server's HELLO.
#[test]
fn regress_pipelined_interrupt_before_server_hello() {
    fuzzing::pair(include_bytes!(
        "../../fuzz/seeds/pair/regress-pipelined-interrupt-before-server-hello.bin"
    ));
}

/// SPEC §6.2 step 1 (pipelining): three INVOKEs pipelined under the default `max_inflight`
/// meet a server that announces 2; the third is refused with TOO_MANY_INFLIGHT, the risk the
/// SPEC gives a pipelining client (the harness had counted it as a misbehaving server).
#[test]
fn regress_pipelined_invokes_over_max_inflight() {
    fuzzing::pair(include_bytes!(
        "../../fuzz/seeds/pair/regress-pipelined-invokes-over-max-inflight.bin"
    ));
}
