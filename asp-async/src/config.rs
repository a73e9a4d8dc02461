//! Settings and names the rest of the crate starts from: the subprotocol and path (SPEC §2.1),
//! the WebSocket layer's configuration and the protocol configuration the builders begin
//! with. The lowest layer of the crate: it imports nothing from it.

use asp_proto::Config;

/// The WebSocket subprotocol (SPEC §2.1).
pub const SUBPROTOCOL: &str = "asp-v1";

/// The default WebSocket path (SPEC §2.1).
pub const DEFAULT_PATH: &str = "/v1/agent-socket";

/// WebSocket settings.
pub type WsConfig = tungstenite::protocol::WebSocketConfig;

/// The WebSocket layer's settings the builders start from (the protocol's are
/// [`default_config`]). Message-size limits: generous, because ASP enforces its own
/// per-frame limit (SPEC §3.6) and can then answer FRAME_TOO_LARGE instead of dropping the
/// whole connection.
pub fn default_ws_config() -> WsConfig {
    WsConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

/// The WebSocket settings a server starts from (SPEC §13.1), derived from its protocol
/// configuration:
/// - a 4 KiB read buffer, which tungstenite grows only while a larger message arrives: an
///   idle connection then holds a few KiB instead of tungstenite's default 128 KiB (README,
///   idle connections);
/// - messages (and WebSocket frames) of at most `65 536 + 2 × (8 + max_frame_payload)` bytes
///   (SPEC §2.1), which bounds the input one connection can make the server buffer. Senders
///   keep messages within `65 536 + 8 + max_frame_payload` (64 KiB of coalesced frames and
///   one more); the rest is room for a frame somewhat above the limit to still be skipped
///   with FRAME_TOO_LARGE (SPEC §3.6). A larger message is the connection error OVERLOADED.
pub fn server_ws_config(config: &Config) -> WsConfig {
    let max = (64 << 10) + 2 * (8 + config.limits.max_frame_payload as usize);
    WsConfig::default()
        .read_buffer_size(4 << 10)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// `host:port` to dial for a `ws://` or `wss://` request (default ports 80 and 443).
pub fn host_port(
    request: &tungstenite::handshake::client::Request,
) -> Result<String, tungstenite::Error> {
    use tungstenite::error::UrlError;
    let uri = request.uri();
    let default_port = match uri.scheme_str() {
        Some("ws") => 80,
        Some("wss") => 443,
        _ => return Err(tungstenite::Error::Url(UrlError::UnsupportedUrlScheme)),
    };
    let host = uri
        .host()
        .ok_or(tungstenite::Error::Url(UrlError::NoHostName))?;
    Ok(format!(
        "{}:{}",
        host,
        uri.port_u16().unwrap_or(default_port)
    ))
}

/// The protocol configuration the builders start from: the core defaults (SPEC §13),
/// heartbeats included as ASP PING frames: SPEC §6.7 makes the PING frame the heartbeat on
/// every binding, since every ASP peer must answer it, while a peer's WebSocket library may
/// not surface or answer WebSocket pings. A `config(..)` call on a builder replaces it
/// whole. (The WebSocket layer's settings are [`default_ws_config`].)
pub fn default_config() -> Config {
    Config::default()
}
