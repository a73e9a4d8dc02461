//! # asp-mcp — a bridge between MCP and the Agent Socket Protocol, both ways
//!
//! - **MCP → ASP** ([`mcp_to_asp::serve`]): the tools of an MCP server (a child process over
//!   stdio, or a Streamable HTTP URL) served as an ASP server. Each ASP client gets its own
//!   MCP session; `tools/list` is the initial TOOL_DEF set and list changes are pushed;
//!   progress is STREAM, the result COMPLETE, INTERRUPT is `notifications/cancelled`,
//!   elicitation (2025 server requests and 2026-07-28 `input_required` results) is
//!   REQUEST/REPLY; a crashed or hung server is restarted.
//! - **ASP → MCP** ([`asp_to_mcp`]): an ASP server's tools served to MCP hosts over stdio or
//!   Streamable HTTP, both MCP generations `rmcp` speaks (2025-11-25 and 2026-07-28).
//!
//! The mappings are in [`convert`]. The `asp-mcp` binary (and `asp bridge`) runs either
//! direction from the command line.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod asp_to_mcp;
pub mod cli;
pub mod convert;
pub mod mcp_to_asp;
pub mod upstream;

pub use asp_to_mcp::AspTools;
pub use mcp_to_asp::{serve as serve_mcp_as_asp, McpToAspConfig};
pub use upstream::{Generation, Upstream};
