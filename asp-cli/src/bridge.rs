//! `asp bridge …`: the MCP bridge (`asp-mcp/README.md`).
//!
//! The bridge is the `asp-mcp` binary of the `asp-mcp` crate, and `asp bridge ARGS` runs
//! `asp-mcp ARGS` with the token in `ASP_TOKEN`, as `git` and `cargo` run their external
//! subcommands. So `asp` does not link rmcp's dependency tree, and asp-cli depends on no
//! unpublished crate (it packages on its own). The binary is looked up as `ASP_MCP_BIN`
//! names it, else next to this executable, else on `PATH`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

use crate::output::fail;
#[cfg(not(unix))]
use crate::EXIT_INTERRUPTED;

/// Where `asp-mcp` is: `ASP_MCP_BIN`, else beside `asp`, else the bare name (`PATH`).
fn locate() -> PathBuf {
    if let Some(p) = std::env::var_os("ASP_MCP_BIN") {
        return PathBuf::from(p);
    }
    let name = format!("asp-mcp{}", std::env::consts::EXE_SUFFIX);
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(&name)))
        .filter(|p| p.is_file());
    beside.unwrap_or_else(|| PathBuf::from(name))
}

/// Runs the bridge with `args`; returns its exit status (on Unix the bridge replaces this
/// process, so that signals and stdio are its own: `to-mcp` speaks MCP over stdio).
pub(crate) fn run(token: Option<String>, args: Vec<OsString>) -> i32 {
    let bin = locate();
    let mut cmd = Command::new(&bin);
    cmd.args(&args);
    if let Some(t) = token {
        cmd.env("ASP_TOKEN", t);
    }
    #[cfg(unix)]
    let err = {
        use std::os::unix::process::CommandExt;
        // Returns only if the exec failed.
        cmd.exec()
    };
    #[cfg(not(unix))]
    let err = match cmd.status() {
        Ok(status) => return status.code().unwrap_or(EXIT_INTERRUPTED),
        Err(e) => e,
    };
    if err.kind() == std::io::ErrorKind::NotFound {
        return fail(format!(
            "`asp bridge` runs the MCP bridge binary `asp-mcp`, which was not found ({}): \
             install it with `cargo install --path asp-mcp`, or name it in ASP_MCP_BIN",
            bin.display()
        ));
    }
    fail(format!("cannot run {}: {err}", bin.display()))
}
