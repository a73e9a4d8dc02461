//! Errors of the async API.

use std::fmt;

use asp_proto::frame::ErrorFrame;
use asp_proto::{CloseReason, SendError};

use crate::tls::TlsError;

/// An error from the client or server API.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// The URL could not be parsed or used.
    InvalidUrl(String),
    /// TCP connect or socket IO failed.
    Io(String),
    /// The server refused the WebSocket upgrade with this HTTP status (401, 403, 400…).
    Rejected {
        /// HTTP status code.
        status: u16,
        /// Response body, if any.
        body: String,
    },
    /// The server did not select the `asp-v1` subprotocol.
    Subprotocol,
    /// A WebSocket protocol error.
    WebSocket(String),
    /// The local protocol state refused the command.
    Send(SendError),
    /// The peer answered with an ERROR frame.
    Remote(ErrorFrame),
    /// The connection closed before the exchange ended.
    Closed(CloseReason),
    /// Serializing or deserializing a MessagePack value failed.
    Codec(String),
    /// The TLS handshake failed; the variant names the cause (untrusted certificate, name
    /// mismatch, expired, plaintext on a TLS port, TLS to a plaintext port…).
    Tls(TlsError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidUrl(u) => write!(f, "invalid URL: {u}"),
            Error::Io(e) => write!(f, "IO error: {e}"),
            Error::Rejected { status, body } => {
                write!(f, "upgrade rejected with HTTP {status}")?;
                if !body.is_empty() {
                    write!(f, ": {body}")?;
                }
                Ok(())
            }
            Error::Subprotocol => write!(f, "server did not select the asp-v1 subprotocol"),
            Error::WebSocket(e) => write!(f, "WebSocket error: {e}"),
            Error::Send(e) => write!(f, "{e}"),
            Error::Remote(e) => {
                write!(f, "peer error {}", e.code)?;
                if let Some(m) = &e.message {
                    write!(f, ": {m}")?;
                }
                Ok(())
            }
            Error::Closed(r) => write!(f, "connection closed: {r}"),
            Error::Codec(e) => write!(f, "MessagePack error: {e}"),
            Error::Tls(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<SendError> for Error {
    fn from(e: SendError) -> Self {
        Error::Send(e)
    }
}

impl From<tungstenite::Error> for Error {
    fn from(e: tungstenite::Error) -> Self {
        match e {
            tungstenite::Error::Http(resp) => {
                let status = resp.status().as_u16();
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Error::Rejected { status, body }
            }
            tungstenite::Error::Io(e) => Error::Io(e.to_string()),
            tungstenite::Error::Url(e) => Error::InvalidUrl(e.to_string()),
            // tungstenite's client handshake already fails when the server selects no (or
            // another) subprotocol than the one offered, before `ClientBuilder::connect`
            // can check; report that as the documented `Subprotocol` error, not a generic
            // WebSocket one.
            tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::SecWebSocketSubProtocolError(_),
            ) => Error::Subprotocol,
            other => Error::WebSocket(other.to_string()),
        }
    }
}
