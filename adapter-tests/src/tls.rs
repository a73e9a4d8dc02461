//! `wss://` scenarios: real TLS on loopback with certificates made at test time
//! ([`crate::pki`]). Round trips, streaming, interrupt and resume over TLS; every failure a
//! user can act on gives its named [`TlsError`]; mutual TLS; certificate reload without
//! dropping connections; TLS session resumption across clients sharing their settings.

use std::time::Duration;

use asp_async::{
    Args, ClientBuilder, ClientTls, Error, Runtime, ServerBuilder, Status, TlsError, Tool,
    ToolContext, ToolError,
};
use futures::future::join_all;
use futures::StreamExt;

use crate::pki::{temp_dir, Ca, CountingSessions};
use crate::{finish, greet_ok, greet_tool, sleep, start, GreetArgs};

/// The names test server certificates hold: the URL says `127.0.0.1`.
const NAMES: &[&str] = &["localhost", "127.0.0.1"];

/// Streams a tick every 2 ms until interrupted.
fn forever_tool<S: Runtime>(rt: S) -> Tool {
    Tool::new("forever", move |ctx: ToolContext, _args: Args| {
        let rt = rt.clone();
        async move {
            let mut i = 0u64;
            loop {
                ctx.stream_text(&format!("tick {i}"))
                    .await
                    .map_err(|_| ToolError::Cancelled)?;
                i += 1;
                sleep(&rt, Duration::from_millis(2)).await;
            }
        }
    })
}

/// A client of `url` with these TLS settings.
async fn connect_wss<C: Runtime>(
    cli: &C,
    tls: ClientTls,
    url: &str,
) -> Result<asp_async::Client<C>, Error> {
    ClientBuilder::new(cli.clone()).tls(tls).connect(url).await
}

fn tls_error<T: std::fmt::Debug>(r: Result<T, Error>) -> TlsError {
    match r {
        Err(Error::Tls(e)) => e,
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

/// Over `wss://`: the URL says so, a typed call streams its chunks in order and completes,
/// 20 concurrent invocations each complete, and an interrupt mid-stream ends the
/// invocation `cancelled` with the connection still usable.
pub async fn wss_invoke_stream_interrupt<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let ca = Ca::new("ASP test CA");
    let server = start(
        ServerBuilder::new(srv.clone())
            .tls(ca.server(NAMES).server_tls())
            .tool(greet_tool())
            .tool(forever_tool(srv)),
    )
    .await;
    let url = server.url();
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
    let client = connect_wss(&cli, ca.client_tls(), &url)
        .await
        .expect("wss connect");
    greet_ok(&client, "tls").await;

    let calls = (0..20u32).map(|i| {
        let inv = client.invoke(
            "greet",
            &GreetArgs {
                name: format!("n{i}"),
                times: 3,
            },
        );
        async move {
            let mut inv = inv.expect("invoke");
            let mut n = 0;
            while let Some(c) = inv.next().await {
                assert_eq!(c.as_str(), Some(format!("hello n{i} #{n}\n").as_str()));
                n += 1;
            }
            assert_eq!(n, 3);
            inv.completion().await.expect("completion").status
        }
    });
    for status in join_all(calls).await {
        assert_eq!(status, Status::Ok);
    }

    let mut inv = client.invoke("forever", &()).expect("invoke forever");
    for i in 0..3 {
        let c = inv.next().await.expect("a tick");
        assert_eq!(c.as_str(), Some(format!("tick {i}").as_str()));
    }
    inv.interrupt();
    let done = inv.completion().await.expect("completion after interrupt");
    assert_eq!(done.status, Status::Cancelled);
    greet_ok(&client, "after interrupt").await;
    finish(client, server).await;
}

/// The session resumes over TLS after the connection drops mid-stream (the scenario of
/// [`crate::resume_mid_stream`], through the same TCP proxy, TLS end to end).
pub async fn wss_resume_mid_stream<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let ca = Ca::new("ASP test CA");
    let tls = (ca.server(NAMES).server_tls(), ca.client_tls());
    crate::resume::resume_mid_stream_over(srv, cli, Some(tls)).await;
}

/// A certificate from a CA the client does not trust, one for another name, and an expired
/// one: each fails the connect with its own named error, and the server keeps serving.
pub async fn wss_bad_certificates<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let ca = Ca::new("ASP test CA");
    let stranger = Ca::new("someone else's CA");
    let cases: [(&str, crate::pki::Leaf); 3] = [
        ("untrusted", stranger.server(NAMES)),
        ("name", ca.server(&["other.example"])),
        ("expired", ca.expired_server(NAMES)),
    ];
    for (case, leaf) in cases {
        let server = start(
            ServerBuilder::new(srv.clone())
                .tls(leaf.server_tls())
                .tool(greet_tool()),
        )
        .await;
        let r = connect_wss(&cli, ca.client_tls(), &server.url()).await;
        let e = tls_error(r);
        match (case, &e) {
            ("untrusted", TlsError::UntrustedCertificate(_)) => {}
            (
                "name",
                TlsError::NameMismatch {
                    expected,
                    presented,
                },
            ) => {
                assert_eq!(expected, "127.0.0.1");
                assert_eq!(presented, &vec!["other.example".to_string()]);
            }
            ("expired", TlsError::Expired(_)) => {}
            _ => panic!("{case}: wrong error {e:?}"),
        }
        let text = e.to_string();
        assert!(
            text.contains(match case {
                "untrusted" => "not trusted",
                "name" => "not valid for",
                _ => "expired",
            }),
            "{case}: message names the cause: {text}"
        );
        server.shutdown(Duration::from_secs(1)).await;
    }
}

/// `ws://` to a TLS port and `wss://` to a plaintext port: each a named error, no hang.
/// A TLS server that never answers the handshake: a timeout, no hang.
pub async fn wss_plaintext_mismatch<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let ca = Ca::new("ASP test CA");
    let tls_server = start(
        ServerBuilder::new(srv.clone())
            .tls(ca.server(NAMES).server_tls())
            .tool(greet_tool()),
    )
    .await;
    let plain_url = tls_server.url().replacen("wss://", "ws://", 1);
    let e = tls_error(ClientBuilder::new(cli.clone()).connect(&plain_url).await);
    assert_eq!(e, TlsError::PlaintextToTlsPort);
    assert!(e.to_string().contains("use wss://"), "{e}");
    // The TLS server still serves TLS clients.
    let client = connect_wss(&cli, ca.client_tls(), &tls_server.url())
        .await
        .expect("wss connect");
    greet_ok(&client, "still").await;
    finish(client, tls_server).await;

    let plain_server = start(ServerBuilder::new(srv.clone()).tool(greet_tool())).await;
    let tls_url = plain_server.url().replacen("ws://", "wss://", 1);
    let e = tls_error(connect_wss(&cli, ca.client_tls(), &tls_url).await);
    assert!(matches!(e, TlsError::NotTls(_)), "{e:?}");
    assert!(e.to_string().contains("does not speak TLS"), "{e}");
    plain_server.shutdown(Duration::from_secs(1)).await;

    // A listener that accepts and never says a word.
    let listener = cli
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = cli.local_addr(&listener).expect("addr");
    let (held_tx, held) = futures::channel::oneshot::channel::<()>();
    let rt = cli.clone();
    cli.spawn(Box::pin(async move {
        let conn = rt.accept(&listener).await;
        let _ = held.await; // keep the connection open and silent until the test is done
        drop(conn);
    }));
    let e = tls_error(
        ClientBuilder::new(cli.clone())
            .tls(
                ca.client_tls()
                    .handshake_timeout(Duration::from_millis(300)),
            )
            .connect(&format!("wss://{addr}/v1/agent-socket"))
            .await,
    );
    assert_eq!(e, TlsError::HandshakeTimeout(Duration::from_millis(300)));
    drop(held_tx);
}

/// A server that requires client certificates: a client without one is refused with a
/// named error; one with a certificate from the right CA (PEM files) is served.
pub async fn wss_mutual_tls<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let ca = Ca::new("ASP test CA");
    let dir = temp_dir("mtls");
    let (ca_file, _) = crate::pki::Leaf {
        cert_pem: ca.cert_pem.clone(),
        key_pem: String::new(),
    }
    .write(&dir, "ca");
    let (cert, key) = ca.server(NAMES).write(&dir, "server");
    let tls = asp_async::ServerTls::from_pem_files(&cert, &key)
        .expect("server PEM files")
        .client_ca_pem_file(&ca_file)
        .expect("client CA");
    let server = start(ServerBuilder::new(srv).tls(tls).tool(greet_tool())).await;

    let e = tls_error(connect_wss(&cli, ca.client_tls(), &server.url()).await);
    assert!(matches!(e, TlsError::ClientCertificateRejected(_)), "{e:?}");

    let (ccert, ckey) = ca.client("agent-7").write(&dir, "client");
    let client = ClientBuilder::new(cli.clone())
        .tls(
            ClientTls::new()
                .roots(asp_async::Roots::Empty)
                .ca_pem_file(&ca_file)
                .expect("CA file")
                .identity_pem_files(&ccert, &ckey)
                .expect("client identity"),
        )
        .connect(&server.url())
        .await
        .expect("mTLS connect");
    greet_ok(&client, "mtls").await;
    finish(client, server).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// `ServerTls::reload` after the PEM files change: the open connection goes on, a new
/// client gets the new certificate (trusted by the new CA only), and one trusting only the
/// old CA is refused.
pub async fn wss_certificate_reload<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let (old, new) = (Ca::new("old CA"), Ca::new("new CA"));
    let dir = temp_dir("reload");
    let (cert, key) = old.server(NAMES).write(&dir, "server");
    let tls = asp_async::ServerTls::from_pem_files(&cert, &key).expect("PEM files");
    let server = start(ServerBuilder::new(srv).tls(tls.clone()).tool(greet_tool())).await;
    let first = connect_wss(&cli, old.client_tls(), &server.url())
        .await
        .expect("connect before reload");
    greet_ok(&first, "before").await;

    new.server(NAMES).write(&dir, "server");
    tls.reload().expect("reload");
    greet_ok(&first, "open across the reload").await;
    let second = connect_wss(&cli, new.client_tls(), &server.url())
        .await
        .expect("connect after reload");
    greet_ok(&second, "after").await;
    let e = tls_error(connect_wss(&cli, old.client_tls(), &server.url()).await);
    assert!(matches!(e, TlsError::UntrustedCertificate(_)), "{e:?}");
    // A broken file keeps the old certificate.
    std::fs::write(&key, "not a key").expect("write");
    assert!(matches!(tls.reload(), Err(TlsError::Config(_))));
    second.close().await;
    finish(first, server).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// TLS session resumption: a client given a clone of the `ClientTls` another client used
/// resumes that client's TLS session (the settings share one rustls session cache), and
/// settings built anew do not. Counted on the server's session store: a first connection
/// resumes nothing, the clone's connection resumes one session.
pub async fn wss_session_resumption<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let ca = Ca::new("ASP test CA");
    let sessions = CountingSessions::new(64);
    let mut config = (*ca
        .server(NAMES)
        .server_tls()
        .build()
        .expect("server config"))
    .clone();
    config.session_storage = sessions.clone();
    let server = start(
        ServerBuilder::new(srv)
            .tls(asp_async::ServerTls::from_rustls(std::sync::Arc::new(
                config,
            )))
            .tool(greet_tool()),
    )
    .await;
    let resumed = || sessions.resumed();
    let tls = ca.client_tls();
    let first = connect_wss(&cli, tls.clone(), &server.url())
        .await
        .expect("first connect");
    // The server's session tickets precede its first reply on the stream: once the call
    // completes, the client has stored them.
    greet_ok(&first, "first").await;
    assert_eq!(resumed(), 0, "a first connection has no session to resume");
    first.close().await;

    let second = connect_wss(&cli, tls.clone(), &server.url())
        .await
        .expect("second connect");
    greet_ok(&second, "second").await;
    assert_eq!(
        resumed(),
        1,
        "a clone of the settings resumes the TLS session"
    );
    second.close().await;

    let third = connect_wss(&cli, ca.client_tls(), &server.url())
        .await
        .expect("third connect");
    greet_ok(&third, "third").await;
    assert_eq!(
        resumed(),
        1,
        "new settings start with an empty session cache"
    );
    finish(third, server).await;
}
