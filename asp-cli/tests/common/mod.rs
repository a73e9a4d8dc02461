//! What the `asp` binary's test files share.

use std::process::{Command, Stdio};

/// `asp` with `args`, without the caller's `ASP_TOKEN`, its output piped.
pub fn asp_command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_asp"));
    c.args(args)
        .env_remove("ASP_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}
