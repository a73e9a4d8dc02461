//! The driver: moves bytes between a WebSocket and the core, and runs its timer.
//!
//! Two tasks per connection so that reading never waits on writing (two peers both blocked
//! writing to full sockets would otherwise deadlock):
//! - the reader feeds each binary message to `handle_message` (SPEC §2.1);
//! - the writer drains `poll_transmit` into WebSocket messages, feeding all of them and
//!   flushing once (coalesced writes), sends transport pings on `poll_ping`, and sleeps until
//!   the next `poll_timeout` or a notification.

use std::sync::Arc;

use bytes::BytesMut;
use futures::future::{select, Either};
use futures::{Sink, SinkExt, Stream, StreamExt};
use tungstenite::Message;

use crate::runtime::{Notify, Runtime};
use crate::shared::{lock, SharedRef};

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
    rt.spawn(Box::pin(writer(shared.clone(), sink, notify, rt.clone())));
    reader(shared, stream).await;
}

async fn reader<St>(shared: SharedRef, mut stream: St)
where
    St: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        let msg = stream.next().await;
        let mut s = lock(&shared);
        let now = s.now();
        match msg {
            Some(Ok(Message::Binary(b))) => s.conn.handle_message(now, b),
            Some(Ok(Message::Text(_))) => s.conn.handle_text_message(now),
            Some(Ok(Message::Pong(_))) => s.conn.handle_transport_pong(now),
            // tungstenite queues the pong itself; wake the writer so it is flushed.
            Some(Ok(Message::Ping(_))) => s.notify.notify(),
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
            return;
        }
    }
}

async fn writer<Si, R>(shared: SharedRef, mut sink: Si, notify: Arc<Notify>, rt: R)
where
    Si: Sink<Message, Error = tungstenite::Error> + Unpin,
    R: Runtime,
{
    let mut buf = BytesMut::with_capacity(16 << 10);
    let mut batches = Vec::new();
    loop {
        let (ping, deadline, closed, clock) = {
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
            (ping, s.conn.poll_timeout(), s.conn.is_closed(), s.clock)
        };
        let mut failed = false;
        for m in batches.drain(..) {
            if sink.feed(m).await.is_err() {
                failed = true;
                break;
            }
        }
        if ping && !failed {
            failed = sink.feed(Message::Ping(Default::default())).await.is_err();
        }
        if !failed {
            failed = sink.flush().await.is_err();
        }
        if closed || failed {
            let _ = sink.close().await;
            if failed {
                let mut s = lock(&shared);
                let now = s.now();
                s.conn.handle_transport_closed(now);
                s.pump();
            }
            return;
        }
        let wake = notify.notified();
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
