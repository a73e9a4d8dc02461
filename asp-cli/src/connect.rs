//! Connecting: URL normalisation, the client configuration, connection errors explained.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use asp_tokio::asp_proto::frame::Text;
use asp_tokio::{Client, Config, Error, Request};

use crate::bench::human;
use crate::call::Asker;
use crate::Global;

/// `host:port` → `ws://host:port/v1/agent-socket`; `ws://host:port` gets the default path.
pub(crate) fn normalize_url(url: &str) -> String {
    let url = if url.contains("://") {
        url.to_owned()
    } else {
        format!("ws://{url}")
    };
    let after_scheme = url.split_once("://").map_or("", |(_, rest)| rest);
    if after_scheme.contains('/') {
        url
    } else {
        format!("{url}{}", asp_tokio::DEFAULT_PATH)
    }
}

pub(crate) fn client_config() -> Config {
    let mut config = Config::default();
    config.agent = Some(Text::from(format!("asp-cli/{}", env!("CARGO_PKG_VERSION"))));
    config
}

pub(crate) async fn connect(
    g: &Global,
    url: &str,
    asker: Option<Arc<Asker>>,
) -> Result<Client, String> {
    let mut b = asp_tokio::client().config(client_config()).resume(g.resume);
    if url
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("wss://"))
    {
        b = b.tls(g.tls.client_tls()?);
    }
    if let Some(t) = &g.token {
        b = b.token(t.clone());
    }
    if let Some(asker) = asker {
        b = b.on_request(move |req: Request| {
            let asker = asker.clone();
            async move { asker.answer(req).await }
        });
    }
    match tokio::time::timeout(g.connect_timeout, b.connect(url)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(describe_connect_error(&e, url, g.token.is_some())),
        Err(_) => Err(format!(
            "timed out after {} connecting to {url} (--connect-timeout)",
            human(g.connect_timeout)
        )),
    }
}

/// A one-line explanation of why connecting failed, with a hint where one helps.
pub(crate) fn describe_connect_error(e: &Error, url: &str, have_token: bool) -> String {
    match e {
        Error::Io(io) if io.to_ascii_lowercase().contains("refused") => {
            format!("connection refused by {url} — is an ASP server listening there? ({io})")
        }
        Error::Io(io) => format!("cannot connect to {url}: {io}"),
        Error::Rejected { status, body } => {
            let what = match status {
                400 => "bad request",
                401 => "authentication required",
                403 => "forbidden",
                404 => "not found",
                503 => "unavailable",
                _ => "",
            };
            let mut s = format!("server refused the upgrade: HTTP {status}");
            if !what.is_empty() {
                let _ = write!(s, " ({what})");
            }
            let body = body.trim();
            if !body.is_empty() && body.len() <= 200 && !body.contains('\n') && body != what {
                let _ = write!(s, ": {body}");
            }
            let hint = match (status, have_token) {
                (401, false) => " — pass --token",
                (401, true) => " — the server did not accept the --token given",
                (403, _) => " — the server does not allow this client (token or Origin policy)",
                (404, _) => " — check the path (the default is /v1/agent-socket)",
                (503, _) => " — the server is at its connection limit; retry later",
                _ => "",
            };
            s + hint
        }
        Error::Subprotocol => subprotocol_message(url),
        Error::WebSocket(w) if w.to_ascii_lowercase().contains("subprotocol") => {
            subprotocol_message(url)
        }
        Error::WebSocket(w) => {
            format!("WebSocket handshake with {url} failed: {w} — is this an ASP server?")
        }
        Error::InvalidUrl(u) => {
            format!("invalid URL {url}: {u} — use ws://host:port/path or wss://host:port/path")
        }
        Error::Tls(t) => format!("cannot connect to {url}: {t}"),
        Error::Closed(r) => {
            format!("the server closed the connection during the ASP handshake: {r}")
        }
        other => format!("cannot connect to {url}: {other}"),
    }
}

pub(crate) fn subprotocol_message(url: &str) -> String {
    format!(
        "{url} accepted the WebSocket upgrade but did not select the asp-v1 subprotocol — \
         it is not an ASP endpoint (or speaks another protocol version)"
    )
}

/// Closes the connection politely, without hanging on a silent server.
pub(crate) async fn close(client: &Client) {
    let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
}
