//! The driver: moves bytes between a WebSocket and the core, and runs its timer.
//!
//! Two tasks per connection so that reading never waits on writing (two peers both blocked
//! writing to full sockets would otherwise deadlock):
//! - the reader feeds each binary message to `handle_message` (SPEC §2.1);
//! - the writer drains `poll_transmit` into WebSocket messages, feeding all of them and
//!   flushing once (coalesced writes), sends transport pings on `poll_ping`, and sleeps until
//!   the next `poll_timeout` or a notification.
//!
//! Neither task may depend on the peer to end: a dead peer neither reads (so writes block
//! once the socket buffers are full) nor answers the WebSocket close. The writer keeps the
//! core's timers running while a write is stuck, so the heartbeat still detects it, and
//! after the connection closes both tasks wait for the peer at most [`CLOSE_LINGER`].

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use futures::future::{select, Either};
use futures::{Sink, SinkExt, Stream, StreamExt};
use tungstenite::Message;

use crate::runtime::{Clock, Notify, Runtime};
use crate::shared::{lock, SharedRef};

/// After the connection has closed: how long the writer may take to hand over the last
/// frames and the WebSocket close, and how long the reader keeps reading for the peer's
/// close (reading rather than dropping the socket at once, so that late frames from the peer
/// do not make the kernel reset the connection before the peer has read our last frames).
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Any WebSocket stream of tungstenite messages: tokio-tungstenite's and
/// async-tungstenite's `WebSocketStream` both qualify.
pub trait WsStream:
    Stream<Item = Result<Message, tungstenite::Error>>
    + Sink<Message, Error = tungstenite::Error>
    + Send
    + Unpin
    + 'static
{
}

impl<T> WsStream for T where
    T: Stream<Item = Result<Message, tungstenite::Error>>
        + Sink<Message, Error = tungstenite::Error>
        + Send
        + Unpin
        + 'static
{
}

/// Runs a connection until it closes: spawns the writer, runs the reader here.
pub(crate) async fn run<S: WsStream, R: Runtime>(shared: SharedRef, ws: S, rt: R) {
    let (sink, stream) = ws.split();
    let notify = lock(&shared).notify.clone();
    // Writer → reader: the connection has closed. Without it the reader waited for the
    // peer's next message or close forever, so a peer that went silent without closing
    // its socket kept the connection (and `Server::connections`) alive for good.
    let closing = Arc::new(Notify::default());
    rt.spawn(Box::pin(writer(
        shared.clone(),
        sink,
        notify,
        closing.clone(),
        rt.clone(),
    )));
    reader(shared, stream, closing, rt).await;
}

async fn reader<St, R>(shared: SharedRef, mut stream: St, closing: Arc<Notify>, rt: R)
where
    St: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
    R: Runtime,
{
    loop {
        let msg = match select(stream.next(), closing.notified()).await {
            Either::Left((msg, _)) => msg,
            Either::Right(_) => {
                if lock(&shared).conn.is_closed() {
                    break;
                }
                continue;
            }
        };
        let mut s = lock(&shared);
        let now = s.now();
        match msg {
            Some(Ok(Message::Binary(b))) => s.conn.handle_message(now, b),
            Some(Ok(Message::Text(_))) => s.conn.handle_text_message(now),
            Some(Ok(Message::Pong(_))) => s.conn.handle_transport_pong(now),
            // The peer is alive; tungstenite queues the pong itself, so wake the writer to
            // flush it.
            Some(Ok(Message::Ping(_))) => {
                s.conn.handle_transport_pong(now);
                s.notify.notify();
            }
            Some(Ok(Message::Frame(_))) => {}
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                s.conn.handle_transport_closed(now);
                s.pump();
                s.notify.notify();
                return;
            }
        }
        s.pump();
        if s.conn.is_closed() {
            break;
        }
    }
    // Closed on our side: read (and discard) until the peer ends the WebSocket, for at
    // most CLOSE_LINGER.
    let give_up = std::time::Instant::now() + CLOSE_LINGER;
    let mut expiry = rt.sleep_until(give_up);
    loop {
        match select(stream.next(), expiry).await {
            Either::Left((Some(Ok(_)), rest)) => expiry = rest,
            _ => return,
        }
    }
}

async fn writer<Si, R>(
    shared: SharedRef,
    mut sink: Si,
    notify: Arc<Notify>,
    closing: Arc<Notify>,
    rt: R,
) where
    Si: Sink<Message, Error = tungstenite::Error> + Unpin,
    R: Runtime,
{
    let mut buf = BytesMut::with_capacity(16 << 10);
    let mut batches = Vec::new();
    loop {
        let (ping, closed, clock) = {
            let mut s = lock(&shared);
            let now = s.now();
            if s.conn.poll_timeout().is_some_and(|t| now >= t) {
                // Compare with the clock rather than trusting the sleep alone (quinn's
                // note: a runtime's timer may report late or early under load).
                s.conn.handle_timeout(now);
            }
            while s.conn.poll_transmit(&mut buf) > 0 {
                batches.push(Message::Binary(buf.split().freeze()));
            }
            let ping = s.conn.poll_ping();
            s.pump();
            (ping, s.conn.is_closed(), s.clock)
        };
        if closed {
            closing.notify();
        }
        let write = send_all(&mut sink, &mut batches, ping);
        let sent = drive_write(&shared, &rt, clock, closed, write).await;
        if closed || !sent {
            if sent {
                let close = sink.close();
                let expiry = rt.sleep_until(std::time::Instant::now() + CLOSE_LINGER);
                let _ = select(pin!(close), expiry).await;
            } else {
                let mut s = lock(&shared);
                let now = s.now();
                s.conn.handle_transport_closed(now);
                s.pump();
            }
            closing.notify();
            return;
        }
        let wake = notify.notified();
        // Read after the write: a timeout handled meanwhile moved it. Recorded so that
        // `Shared::pump` wakes us if the core later wants an earlier one.
        let deadline = {
            let mut s = lock(&shared);
            s.armed_timeout = s.conn.poll_timeout();
            s.armed_timeout
        };
        match deadline {
            Some(t) => {
                let sleep = rt.sleep_until(clock.to_std(t));
                match select(Box::pin(wake), sleep).await {
                    Either::Left(_) | Either::Right(_) => {}
                }
            }
            None => wake.await,
        }
    }
}

/// Feeds the batches (and a transport ping) and flushes once.
async fn send_all<Si>(
    sink: &mut Si,
    batches: &mut Vec<Message>,
    ping: bool,
) -> Result<(), tungstenite::Error>
where
    Si: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    for m in batches.drain(..) {
        sink.feed(m).await?;
    }
    if ping {
        sink.feed(Message::Ping(Default::default())).await?;
    }
    sink.flush().await
}

/// Runs `write` to completion; `false` if it failed or was abandoned. While the socket does
/// not take the bytes (a peer that stopped reading), the core's timers keep running: before,
/// the writer only ran them between writes, so a peer that stopped reading once the socket
/// buffers were full was never found dead by the heartbeat and the connection hung. Once
/// the connection is closed (before or meanwhile), the write gets CLOSE_LINGER, then is
/// abandoned.
async fn drive_write<R: Runtime>(
    shared: &SharedRef,
    rt: &R,
    clock: Clock,
    closed: bool,
    write: impl Future<Output = Result<(), tungstenite::Error>>,
) -> bool {
    let mut write = pin!(write);
    // Fast path: a write that does not wait needs no timer.
    if let Poll::Ready(r) = futures::poll!(write.as_mut()) {
        return r.is_ok();
    }
    let linger = || std::time::Instant::now() + CLOSE_LINGER;
    let mut give_up = closed.then(linger);
    loop {
        let timer = give_up.or_else(|| lock(shared).conn.poll_timeout().map(|t| clock.to_std(t)));
        let Some(t) = timer else {
            return write.await.is_ok();
        };
        match select(write.as_mut(), rt.sleep_until(t)).await {
            Either::Left((r, _)) => return r.is_ok(),
            Either::Right(_) if give_up.is_some() => return false,
            Either::Right(_) => {
                let mut s = lock(shared);
                let now = s.now();
                s.conn.handle_timeout(now);
                s.pump();
                if s.conn.is_closed() {
                    give_up = Some(linger());
                }
            }
        }
    }
}
