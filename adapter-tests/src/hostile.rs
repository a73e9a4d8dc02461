//! Hostile peers (SPEC §13.1): what one connection can make the server hold, connections
//! that never finish the WebSocket upgrade, and closes the server decides, which always
//! carry their ERROR first.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asp_async::asp_proto::frame::{Frame, Invoke, RawValue, RequestId};
use asp_async::{
    Args, Config, ConnectionHook, ErrorCode, Output, Runtime, ServerBuilder, ServerConnection,
    Tool, ToolContext,
};
use futures::channel::mpsc;
use futures::future::{select, Either};
use futures::StreamExt;

use crate::raw::{ws_connect, RawPeer};
use crate::util::{poll_until, Gate};
use crate::{connect, finish, greet_ok, greet_tool, start};

/// Keeps every server connection, in the order they opened.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<ServerConnection>>>);

impl ConnectionHook for Collect {
    fn connected(
        &self,
        conn: ServerConnection,
        _upgrade: &asp_async::tungstenite::http::HeaderMap,
    ) {
        self.0.lock().unwrap().push(conn);
    }
    fn closed(&self, _conn: &ServerConnection) {}
}

impl Collect {
    fn get(&self, i: usize) -> ServerConnection {
        self.0.lock().unwrap()[i].clone()
    }
}

fn echo_tool() -> Tool {
    Tool::new("echo", |_ctx: ToolContext, args: Args| async move {
        Ok(Output {
            result: args.0,
            metrics: Default::default(),
        })
    })
}

fn invoke(id: u16, tool: &str, args: Option<RawValue>) -> Frame {
    Frame::Invoke(Invoke {
        id: RequestId(id),
        tool: tool.into(),
        args,
        deadline_ms: 0,
        meta: None,
    })
}

/// Bounds small enough that a test reaches them quickly.
fn bounded_config() -> Config {
    let mut config = asp_async::default_config();
    config.max_queued_bytes = 64 << 10;
    config.max_buffered = 1 << 20;
    config
}

/// A client sends `echo` calls with 32 KiB arguments and never reads a reply (issue 16's
/// attack). The server stops reading it once its queue for that connection is full, so
/// the flood's own writes back up (TCP backpressure): its queue never passes the bound, it
/// is not cut, the flood of 1 GiB is never read in full, and another client meanwhile
/// connects and calls as usual.
pub async fn flood_that_never_reads<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let hook = Collect::default();
    let server = start(
        ServerBuilder::new(srv)
            .config(bounded_config())
            .tool(echo_tool())
            .tool(greet_tool())
            .on_connection(hook.clone()),
    )
    .await;
    let (mut flood, _) = RawPeer::<C::Ws>::connect(&cli, &server.url()).await;
    let flood_conn = hook.get(0);
    let arg = RawValue::string(&"x".repeat(32 << 10));
    let sent = AtomicUsize::new(0);
    const MESSAGES: usize = 4096;
    const PER_MESSAGE: usize = 8;
    let flooding = async {
        for m in 0..MESSAGES {
            let frames: Vec<Frame> = (0..PER_MESSAGE)
                .map(|k| {
                    invoke(
                        ((m * PER_MESSAGE + k) % 0x7000 + 1) as u16,
                        "echo",
                        Some(arg.clone()),
                    )
                })
                .collect();
            flood.send(&frames).await;
            sent.fetch_add(1, Ordering::Relaxed);
        }
    };
    let bound = bounded_config().max_buffered;
    let check = |what: &str| {
        let queued = flood_conn
            .with(|l| l.core().queued_bytes())
            .expect("the flood's connection is alive");
        assert!(
            queued <= bound,
            "{what}: {queued} bytes queued for the flood, above its bound {bound}"
        );
        assert!(
            !flood_conn.is_closed(),
            "{what}: the flood was cut, not held back"
        );
    };
    let work = async {
        // The flood is under way: the server has read a good part of it.
        poll_until(&cli, Duration::from_secs(10), "flood under way", || {
            sent.load(Ordering::Relaxed) >= 16
        })
        .await;
        check("flood under way");
        let client = connect(&cli, &server.url()).await;
        for i in 0..10 {
            greet_ok(&client, &format!("neighbour {i}")).await;
            check("during the flood");
        }
        client
    };
    let client = match select(pin!(flooding), pin!(work)).await {
        Either::Right((client, _flood)) => client,
        Either::Left(_) => panic!("the whole 1 GiB flood was read: no backpressure"),
    };
    assert!(sent.load(Ordering::Relaxed) < MESSAGES);
    check("after the neighbour's calls");
    drop(flood);
    finish(client, server).await;
}

/// A client starts 128 calls whose results are 256 KiB each and does not read them: once
/// the results back up past the connection's bound (socket buffers full), the server ends
/// the connection with ERROR(OVERLOADED) — and that ERROR is the last frame the client
/// gets when it finally reads (SPEC §13.1: no silent cut).
pub async fn overloaded_results_end_with_error<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let hook = Collect::default();
    let (started_tx, mut started) = mpsc::unbounded();
    let gate = Gate::new();
    let big = {
        let gate = gate.clone();
        Tool::new("big", move |_ctx: ToolContext, _args: Args| {
            let started = started_tx.clone();
            let gate = gate.clone();
            async move {
                let _ = started.unbounded_send(());
                gate.wait().await;
                Output::value(&"y".repeat(256 << 10))
            }
        })
    };
    let server = start(
        ServerBuilder::new(srv)
            .config(bounded_config())
            .tool(big)
            .on_connection(hook.clone()),
    )
    .await;
    let (mut peer, _) = RawPeer::<C::Ws>::connect(&cli, &server.url()).await;
    let conn = hook.get(0);
    let frames: Vec<Frame> = (1..=128).map(|id| invoke(id, "big", None)).collect();
    peer.send(&frames).await;
    for _ in 0..128 {
        started.next().await.expect("call started");
    }
    gate.open();
    poll_until(
        &cli,
        Duration::from_secs(10),
        "overloaded connection closed",
        || conn.is_closed(),
    )
    .await;
    let mut last = None;
    let mut completes = 0;
    while let Some(f) = peer.next_frame().await {
        if matches!(f, Frame::Complete(_)) {
            completes += 1;
        }
        last = Some(f);
    }
    assert!(completes < 128, "every result was delivered: no overload");
    match last {
        Some(Frame::Error(e)) => {
            assert_eq!(e.code, ErrorCode::OVERLOADED, "{e:?}");
            assert_eq!(e.id, RequestId(0));
        }
        other => panic!(
            "the connection ended without ERROR(OVERLOADED); last frame {:?}",
            other.map(|f| f.frame_type())
        ),
    }
    // SPEC §2.1: after OVERLOADED the WebSocket close code is 1008.
    assert_eq!(peer.close_code, Some(1008), "close code after OVERLOADED");
    server.shutdown(Duration::from_secs(1)).await;
}

/// A WebSocket message above the server's message limit (`65 536 + 2 × (8 +
/// max_frame_payload)`, `server_ws_config`, SPEC §2.1), which bounds the input one connection makes it buffer, is
/// ERROR(OVERLOADED) and a close — not a silent drop of the connection.
pub async fn oversized_message_is_overloaded<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let mut config = asp_async::default_config();
    config.limits.max_frame_payload = 1024;
    let server = start(ServerBuilder::new(srv).config(config).tool(greet_tool())).await;
    let (ws, _) = ws_connect(&cli, &server.url(), &[("Sec-WebSocket-Protocol", "asp-v1")])
        .await
        .expect("raw connect");
    let mut peer = RawPeer::new(ws);
    peer.hello().await;
    // 72 KiB of PINGs in one message: every frame is small, the message is not.
    peer.send(&vec![Frame::PING; 9 << 10]).await;
    let mut last = None;
    while let Some(f) = peer.next_frame().await {
        last = Some(f);
    }
    match last {
        Some(Frame::Error(e)) => assert_eq!(e.code, ErrorCode::OVERLOADED, "{e:?}"),
        other => panic!(
            "expected ERROR(OVERLOADED) before the close, got {:?}",
            other.map(|f| f.frame_type())
        ),
    }
    assert_eq!(peer.close_code, Some(1008), "close code after OVERLOADED");
    server.shutdown(Duration::from_secs(1)).await;
}

/// Reads from each socket (blocking, on a thread of its own) until EOF, reset or
/// `limit`; sends `true` for each socket the server closed.
fn watch_closed(socks: Vec<TcpStream>, limit: Duration) -> mpsc::UnboundedReceiver<bool> {
    let (tx, rx) = mpsc::unbounded();
    std::thread::spawn(move || {
        for mut s in socks {
            s.set_read_timeout(Some(limit)).expect("read timeout");
            let mut buf = [0u8; 256];
            let closed = loop {
                match s.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(_) => continue,
                    Err(e) => {
                        break !matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        )
                    }
                }
            };
            let _ = tx.unbounded_send(closed);
        }
    });
    rx
}

/// A bare TCP connection from `source` (an address on the loopback interface).
fn bare_connect(source: std::net::IpAddr, to: SocketAddr) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.bind(&SocketAddr::new(source, 0).into())
        .expect("bind source");
    sock.connect(&to.into()).expect("connect");
    sock.into()
}

/// Half-open connections — bare connects and an upgrade request that never ends — are
/// counted apart from established ones: with room for one established connection and 20
/// half-open ones holding the server, a real client still connects and calls; the
/// half-open ones are closed once the upgrade timeout passes. And one source address
/// cannot take every pending slot: 20 bare connects from 127.0.0.2 against a limit of 4
/// per address leave room for a client from 127.0.0.1.
pub async fn half_open_connections<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let server = start(
        ServerBuilder::new(srv.clone())
            .max_connections(1)
            .upgrade_timeout(Duration::from_millis(300))
            .max_pending_upgrades(64, 64)
            .tool(greet_tool()),
    )
    .await;
    let local: std::net::IpAddr = [127, 0, 0, 1].into();
    let mut half_open: Vec<TcpStream> = (0..20)
        .map(|_| bare_connect(local, server.local_addr()))
        .collect();
    // One more sends the start of an upgrade request and then nothing.
    let mut trickle = bare_connect(local, server.local_addr());
    std::io::Write::write_all(
        &mut trickle,
        b"GET /v1/agent-socket HTTP/1.1\r\nHost: x\r\n",
    )
    .expect("write");
    half_open.push(trickle);
    let client = connect(&cli, &server.url()).await;
    greet_ok(&client, "through the half-open crowd").await;
    let mut closed = watch_closed(half_open, Duration::from_secs(10));
    for _ in 0..21 {
        assert_eq!(
            closed.next().await,
            Some(true),
            "a half-open connection outlived the upgrade timeout"
        );
    }
    finish(client, server).await;

    // Per source address.
    let server = start(
        ServerBuilder::new(srv.clone())
            .upgrade_timeout(Duration::from_secs(60))
            .max_pending_upgrades(8, 4)
            .tool(greet_tool()),
    )
    .await;
    let other: std::net::IpAddr = [127, 0, 0, 2].into();
    let crowd: Vec<TcpStream> = (0..20)
        .map(|_| bare_connect(other, server.local_addr()))
        .collect();
    let client = connect(&cli, &server.url()).await;
    greet_ok(&client, "from another address").await;
    drop(crowd);
    finish(client, server).await;

    // From the client's own address (a NAT): the crowd holds every slot of that address,
    // and the client takes the place of the oldest instead of being refused. The server
    // accepts in arrival order, so the evicted ones are exactly the oldest 17: 16 while
    // the crowd arrived, one for the client; the newest 3 are still waiting.
    let server = start(
        ServerBuilder::new(srv.clone())
            .upgrade_timeout(Duration::from_secs(60))
            .max_pending_upgrades(64, 4)
            .tool(greet_tool()),
    )
    .await;
    let crowd: Vec<TcpStream> = (0..20)
        .map(|_| bare_connect(local, server.local_addr()))
        .collect();
    let client = connect(&cli, &server.url()).await;
    greet_ok(&client, "from the crowd's own address").await;
    let mut crowd = crowd.into_iter();
    let oldest: Vec<TcpStream> = crowd.by_ref().take(17).collect();
    let mut closed = watch_closed(oldest, Duration::from_secs(10));
    for i in 0..17 {
        assert_eq!(
            closed.next().await,
            Some(true),
            "half-open connection {i} was not evicted"
        );
    }
    for (i, mut s) in crowd.enumerate() {
        s.set_nonblocking(true).expect("nonblocking");
        let r = s.read(&mut [0u8; 16]);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "one of the newest half-open connections ({}) was closed: {r:?}",
            17 + i
        );
    }
    finish(client, server).await;

    // The limit in all: 20 half-open connections from two other addresses fill it, and a
    // client from a third takes the place of the oldest.
    let server = start(
        ServerBuilder::new(srv)
            .upgrade_timeout(Duration::from_secs(60))
            .max_pending_upgrades(6, 4)
            .tool(greet_tool()),
    )
    .await;
    let third: std::net::IpAddr = [127, 0, 0, 3].into();
    let crowd: Vec<TcpStream> = (0..20)
        .map(|i| bare_connect(if i % 2 == 0 { other } else { third }, server.local_addr()))
        .collect();
    let client = connect(&cli, &server.url()).await;
    greet_ok(&client, "past a full upgrade limit").await;
    drop(crowd);
    finish(client, server).await;
}

/// SPEC §13.1: the arguments of running invocations count against the server's
/// `max_args_in_flight`. Calls whose arguments would pass it are refused with
/// TOO_MANY_INFLIGHT (retryable) while the connection goes on; once the running calls end,
/// the same calls are taken.
pub async fn arguments_in_flight_are_bounded<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let (started_tx, mut started) = mpsc::unbounded();
    let gate = Gate::new();
    let hold = {
        let gate = gate.clone();
        Tool::new("hold", move |_ctx: ToolContext, args: Args| {
            let started = started_tx.clone();
            let gate = gate.clone();
            async move {
                let _ = started.unbounded_send(());
                gate.wait().await;
                Ok(Output {
                    result: args.0,
                    metrics: Default::default(),
                })
            }
        })
    };
    let mut config = asp_async::default_config();
    config.max_args_in_flight = 100 << 10;
    let server = start(ServerBuilder::new(srv).config(config).tool(hold)).await;
    let (mut peer, _) = RawPeer::<C::Ws>::connect(&cli, &server.url()).await;
    // 32 KiB each: three fit in 100 KiB, the other five are refused.
    let arg = RawValue::string(&"x".repeat(32 << 10));
    let frames: Vec<Frame> = (1..=8)
        .map(|id| invoke(id, "hold", Some(arg.clone())))
        .collect();
    peer.send(&frames).await;
    let mut refused = Vec::new();
    while refused.len() < 5 {
        match peer.next_frame().await {
            Some(Frame::Error(e)) => {
                assert_eq!(e.code, ErrorCode::TOO_MANY_INFLIGHT, "{e:?}");
                assert!(e.retryable);
                refused.push(e.id.0);
            }
            Some(_) => {}
            None => panic!("the connection ended"),
        }
    }
    assert_eq!(refused, [4, 5, 6, 7, 8]);
    for _ in 0..3 {
        started.next().await.expect("call started");
    }
    gate.open();
    let mut done = 0;
    while done < 3 {
        match peer.next_frame().await {
            Some(Frame::Complete(c)) => {
                assert_eq!(c.result, Some(arg.clone()));
                done += 1;
            }
            Some(Frame::Error(e)) => panic!("unexpected {e:?}"),
            Some(_) => {}
            None => panic!("the connection ended"),
        }
    }
    // Room again: the refused calls go through now (the gate stays open).
    peer.send(&frames[3..6]).await;
    let mut done = 0;
    while done < 3 {
        match peer.next_frame().await {
            Some(Frame::Complete(_)) => done += 1,
            Some(Frame::Error(e)) => panic!("unexpected {e:?}"),
            Some(_) => {}
            None => panic!("the connection ended"),
        }
    }
    drop(peer);
    server.shutdown(Duration::from_secs(1)).await;
}
