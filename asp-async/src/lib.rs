//! # asp-async — the runtime-agnostic async API of the Agent Socket Protocol
//!
//! The client, server, tool and driver logic shared by `asp-tokio` and `asp-smol`, written
//! once over a small [`Runtime`] trait (spawn, timers, sockets). Protocol decisions all live
//! in `asp-proto`'s [`Connection`](asp_proto::Connection); this crate moves bytes between it
//! and a WebSocket, runs its timers and turns its events into futures and streams.
//!
//! Users normally depend on `asp-tokio` or `asp-smol`, which re-export this API with the
//! runtime filled in.
//!
//! The modules are layered: each imports only modules of earlier layers, never a later
//! one, so a module can be read with only what comes before it in mind.
//!
//! 1. `config` (names, default settings), `util` (helpers), `tls`, `adapter` (the macros
//!    the runtime adapters share): nothing from the crate;
//! 2. `error`, `runtime` (the trait an adapter implements), `resume` (the token table,
//!    generic over the session it finds);
//! 3. `request` (the client's request handler trait);
//! 4. `shared`: one connection's state behind its mutex. What it starts higher up (a
//!    server's tools, its session store) it holds as closures those layers make;
//! 5. `driver` (moves bytes between the state and a WebSocket), `connection` (the server
//!    connection handle);
//! 6. `tool` (tools, their context and runner), `store` (the session store);
//! 7. `client`, `server`; this file re-exports the public items.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod adapter;
mod client;
mod config;
mod connection;
mod driver;
mod error;
mod request;
mod resume;
mod runtime;
mod server;
mod shared;
mod store;
pub mod tls;
mod tool;
mod util;

pub use asp_proto;
pub use asp_proto::frame::{
    Metrics, RawValue, Reply, ReplyStatus, Request, RequestId, Status, ToolDef,
};
pub use asp_proto::{
    CloseReason, Config, ErrorCode, InvokeOptions, Limits, Session, StreamOptions, ToolChange,
};
pub use client::{Chunk, Client, ClientBuilder, Completion, Invocation, ToolChanges};
pub use config::{
    default_config, default_ws_config, host_port, server_ws_config, WsConfig, DEFAULT_PATH,
    SUBPROTOCOL,
};
pub use connection::{ConnectionHook, Locked, ServerConnection};
pub use error::Error;
pub use request::RequestHandler;
pub use runtime::{AsyncTimer, BoxFuture, Clock, Runtime, UpgradeCheck, WsStream};
pub use rustls;
pub use server::{bearer_token, AuthHook, Server, ServerBuilder, UpgradePolicy};
pub use store::SessionStore;
pub use tls::{ClientTls, Roots, ServerTls, TlsError};
pub use tool::{
    from_value, reply, to_value, Args, Handler, Output, StreamError, StreamSend, Tool, ToolContext,
    ToolError, ToolRegistry,
};
pub use tungstenite;
