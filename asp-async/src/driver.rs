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
//!
//! Resume (SPEC §11): a session may outlive its transport. Each transport's tasks carry the
//! session's transport generation they started with ([`Shared::new_transport`]) and stop
//! touching the core once it changed. When the transport of a resumable session ends, the
//! session is detached: the reader returns, and the writer drops its sink and keeps only the
//! core's timers running (the resume window) until the session closes or a new transport
//! takes over. On the server, a new connection whose RESUME matched a detached session hands
//! its WebSocket over: the writer gives its sink back to the reader, which reunites the
//! halves and starts a driver for the old session on them.
//!
//! [`Shared::new_transport`]: crate::shared::Shared::new_transport

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use asp_proto::State;
use bytes::BytesMut;
use futures::channel::oneshot;
use futures::future::{select, Either};
use futures::stream::{SplitSink, SplitStream};
use futures::{Sink, SinkExt, Stream, StreamExt};
use tungstenite::Message;

use crate::runtime::{BoxFuture, Clock, Notify, Runtime};
use crate::shared::{lock, Shared, SharedRef};

/// After the connection has closed: how long the writer may take to hand over the last
/// frames and the WebSocket close, and how long the reader keeps reading for the peer's
/// close (reading rather than dropping the socket at once, so that late frames from the peer
/// do not make the kernel reset the connection before the peer has read our last frames).
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// At most this many bytes are taken from the core per write. What the writer holds is
/// outside the core's count (SPEC §13.1, `Config::max_buffered`), so it is kept to a small
/// constant: the rest waits, counted, in the core's queue, and a peer that does not read
/// stops our reading (`Connection::wants_input`) rather than growing a buffer here.
const WRITE_BATCH: usize = 256 << 10;

/// Input bytes the reader hands to the core before it lets the other tasks of its worker
/// run. One connection's burst (a flood of large calls, each answered inline) is then
/// handled a slice at a time, between the other connections' turns, instead of holding
/// the worker for as long as the socket has data (SPEC §13.1: the other connections must
/// not notice).
const READ_BUDGET: usize = 64 << 10;

/// Gives way once: wakes itself and returns `Pending`, so the runtime runs the other ready
/// tasks before polling again.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

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

/// Runs one transport of a connection until it ends: spawns the writer, runs the reader
/// here. `gen` is the transport generation (0 for a connection's first transport, else
/// what [`Shared::new_transport`](crate::shared::Shared::new_transport) returned); a
/// transport already superseded does nothing.
pub(crate) fn run<S: WsStream, R: Runtime>(
    shared: SharedRef,
    ws: S,
    rt: R,
    gen: u64,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let notify = {
            let s = lock(&shared);
            if s.generation != gen {
                return;
            }
            s.notify.clone()
        };
        let (sink, stream) = ws.split();
        // Writer → reader: the connection has closed (or its transport is gone). Without it
        // the reader waited for the peer's next message or close forever, so a peer that went
        // silent without closing its socket kept the connection (and `Server::connections`)
        // alive for good.
        let closing = Arc::new(Notify::default());
        let (give_sink, sink_back) = oneshot::channel();
        rt.spawn(Box::pin(writer(
            shared.clone(),
            sink,
            gen,
            notify,
            closing.clone(),
            give_sink,
            rt.clone(),
        )));
        let Some((stream, target, target_gen)) =
            reader(shared, stream, gen, closing, rt.clone()).await
        else {
            return;
        };
        // Server: this transport resumed a detached session. Take the sink back from the
        // writer (it stops at once: its connection's generation changed), and drive the old
        // session with the whole WebSocket, as a task of its own (this connection is done).
        let Ok(sink) = sink_back.await else { return };
        let Ok(ws) = stream.reunite(sink) else { return };
        let span = lock(&target).span.clone();
        let rt2 = rt.clone();
        rt.spawn(Box::pin(tracing::Instrument::instrument(
            async move { run(target, ws, rt2, target_gen).await },
            span,
        )));
    })
}

/// The handlers the message just read started, with the spawner for those that wait.
type Starts = Option<(
    Vec<BoxFuture<'static, ()>>,
    Arc<dyn Fn(BoxFuture<'static, ()>) + Send + Sync>,
)>;

fn take_starts(s: &mut Shared) -> Starts {
    s.collect_starts = false;
    if s.starts.is_empty() {
        return None;
    }
    Some((std::mem::take(&mut s.starts), s.spawn.clone()))
}

/// Polls each newly started handler once, here on the reader, and spawns those that are not
/// done. A handler that answers at once (an echo, a lookup in memory) then completes without
/// a task of its own, so its round trip saves a spawn and a scheduling hop (README, adapter
/// benchmarks: current_thread median 1.17× → 1.09× the raw echo). A handler that waits is
/// spawned after its first poll; its first poll used a no-op waker, but a spawned task is
/// polled again at once and every future registers the waker of its latest poll, so no
/// wake-up is lost. The cost: the handler's code up to its first `.await` runs on the reader
/// (do long synchronous work after an `.await`, or in `spawn_blocking`).
fn start_inline(starts: Starts) {
    let Some((starts, spawn)) = starts else {
        return;
    };
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    // These futures do not panic: handler panics, also one before a handler returns its
    // future, are caught inside them (`tool::run_handler`, `Shared::start_request_handler`).
    for mut fut in starts {
        if fut.as_mut().poll(&mut cx).is_pending() {
            spawn(fut);
        }
    }
}

/// What the reader hands back when its WebSocket moves to another session: the stream half,
/// that session and the generation of its new transport.
type Handoff<S> = (SplitStream<S>, SharedRef, u64);

async fn reader<S, R>(
    shared: SharedRef,
    mut stream: SplitStream<S>,
    gen: u64,
    closing: Arc<Notify>,
    rt: R,
) -> Option<Handoff<S>>
where
    S: WsStream,
    R: Runtime,
{
    // Input handled since the reader last gave way (READ_BUDGET).
    let mut budget = 0usize;
    'read: loop {
        if budget >= READ_BUDGET {
            budget = 0;
            YieldNow(false).await;
        }
        // SPEC §13.1: while the core's transmit queue is full (the peer does not read what
        // it asked for), stop reading: the peer's writes back up through TCP. The writer
        // wakes us when it has taken bytes from the core.
        loop {
            let input = {
                let mut s = lock(&shared);
                if let Some((target, target_gen)) = s.handoff.take() {
                    return Some((stream, target, target_gen));
                }
                if s.generation != gen || s.conn.state() == State::Detached || s.transport_dropped {
                    return None;
                }
                if s.conn.is_closed() {
                    break 'read;
                }
                if s.conn.wants_input() {
                    break;
                }
                s.input.clone()
            };
            let _ = select(input.notified(), closing.notified()).await;
        }
        let msg = match select(stream.next(), closing.notified()).await {
            Either::Left((msg, _)) => msg,
            Either::Right(_) => {
                let mut s = lock(&shared);
                // Server: a RESUME answered later, from a session store (SPEC §11.4), moved
                // this WebSocket to the session it loaded.
                if let Some((target, target_gen)) = s.handoff.take() {
                    return Some((stream, target, target_gen));
                }
                if s.generation != gen || s.conn.state() == State::Detached || s.transport_dropped {
                    // The session lives on without this transport.
                    return None;
                }
                if s.conn.is_closed() {
                    break;
                }
                continue;
            }
        };
        if let Some(Ok(Message::Binary(b))) = &msg {
            budget += b.len();
        }
        let mut s = lock(&shared);
        if s.generation != gen {
            // A newer transport took the session over: this one is stale.
            return None;
        }
        let now = s.now();
        s.collect_starts = true;
        match msg {
            Some(Ok(Message::Binary(b))) => s.conn.handle_message(now, b),
            Some(Ok(Message::Text(_))) => s.conn.handle_text_message(now),
            Some(Ok(Message::Pong(_))) => s.conn.handle_transport_pong(now),
            // The peer is alive; tungstenite queues the pong itself, so wake the writer to
            // flush it.
            Some(Ok(Message::Ping(_))) => {
                s.conn.handle_transport_pong(now);
                s.notify_writer();
            }
            Some(Ok(Message::Frame(_))) => {}
            // SPEC §11.3: a Close with status 1000, or none, ends the session on purpose;
            // any other end of the transport (another status: a proxy or node going away,
            // an error, EOF without Close) leaves a resumable session to be resumed.
            Some(Ok(Message::Close(frame)))
                if frame.as_ref().is_none_or(|f| {
                    f.code == tungstenite::protocol::frame::coding::CloseCode::Normal
                }) =>
            {
                s.conn.handle_peer_close(now);
                s.pump();
                s.notify_writer();
                let starts = take_starts(&mut s);
                drop(s);
                start_inline(starts);
                return None;
            }
            // SPEC §13.1: buffered input is bounded by the WebSocket message limit; a larger
            // message is OVERLOADED, named before the close (no silent cut).
            Some(Err(tungstenite::Error::Capacity(
                tungstenite::error::CapacityError::MessageTooLong { size, .. },
            ))) => s.conn.handle_oversized_message(now, size),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                // Closes the session, or detaches it if it is resumable.
                s.conn.handle_transport_closed(now);
                s.pump();
                s.notify_writer();
                let starts = take_starts(&mut s);
                drop(s);
                start_inline(starts);
                return None;
            }
        }
        s.pump();
        let starts = take_starts(&mut s);
        let handoff = s.handoff.take();
        let closed = s.conn.is_closed();
        drop(s);
        start_inline(starts);
        if let Some((target, target_gen)) = handoff {
            return Some((stream, target, target_gen));
        }
        if closed {
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
            _ => return None,
        }
    }
}

async fn writer<S, R>(
    shared: SharedRef,
    mut sink: SplitSink<S, Message>,
    gen: u64,
    notify: Arc<Notify>,
    closing: Arc<Notify>,
    give_sink: oneshot::Sender<SplitSink<S, Message>>,
    rt: R,
) where
    S: WsStream,
    R: Runtime,
{
    // Empty: `poll_transmit` hands the core's bytes over without a copy when the buffer is
    // empty (always, here), so a capacity reserved up front was only idle memory per
    // connection (SPEC §13.1, README: idle connections).
    let mut buf = BytesMut::new();
    let mut batches = Vec::new();
    // The sleep the writer last waited on, with its deadline, kept while it has not fired.
    let mut timer: Option<(asp_proto::Instant, BoxFuture<'static, ()>)> = None;
    // The core still had bytes after a full WRITE_BATCH: take more without waiting.
    let mut more;
    // The WebSocket close code to send once the connection has closed (SPEC §2.1): the core
    // says which, from why it closed.
    let mut close_code = asp_proto::error::close_code::NORMAL;
    loop {
        more = false;
        let step = {
            let mut s = lock(&shared);
            if s.generation != gen {
                Step::Superseded
            } else if s.conn.state() == State::Detached || s.transport_dropped {
                Step::Detached
            } else {
                let now = s.now();
                if s.conn.poll_timeout().is_some_and(|t| now >= t) {
                    // Compare with the clock rather than trusting the sleep alone (quinn's
                    // note: a runtime's timer may report late or early under load).
                    s.conn.handle_timeout(now);
                }
                if s.conn.state() == State::Detached {
                    // The heartbeat found a resumable session's peer silent (SPEC §11.3):
                    // this transport is given up.
                    s.pump();
                    Step::Detached
                } else {
                    let mut taken = 0;
                    while taken < WRITE_BATCH {
                        let n = s.conn.poll_transmit(&mut buf);
                        if n == 0 {
                            break;
                        }
                        taken += n;
                        // Taken whole, not split: a split would leave `buf` sharing the
                        // core's allocation, kept alive by its spare capacity while the
                        // connection idles (README: memory per idle connection).
                        batches.push(Message::Binary(std::mem::take(&mut buf).freeze()));
                    }
                    if taken > 0 {
                        s.notify_reader();
                    }
                    let ping = s.conn.poll_ping();
                    s.pump();
                    more = s.conn.wants_transmit();
                    if let Some(r) = &s.closed {
                        close_code = r.websocket_close_code();
                    }
                    Step::Write(ping, s.conn.is_closed(), s.clock)
                }
            }
        };
        let (ping, closed, clock) = match step {
            Step::Write(ping, closed, clock) => (ping, closed, clock),
            // Another transport owns the session now (or, on a server connection that
            // resumed another session, this WebSocket moves there): give the sink back to
            // the reader, which drops it or hands it over.
            Step::Superseded => {
                let _ = give_sink.send(sink);
                closing.notify();
                return;
            }
            // The reader saw the transport end and the session is resumable.
            Step::Detached => {
                drop(sink);
                closing.notify();
                detached_timers(&shared, gen, &notify, &rt).await;
                return;
            }
        };
        if closed {
            closing.notify();
        }
        let write = send_all(&mut sink, &mut batches, ping);
        let sent = drive_write(&shared, &rt, clock, closed, gen, &notify, write).await;
        if closed || !sent {
            if sent {
                let close = close_with(&mut sink, close_code);
                let expiry = rt.sleep_until(std::time::Instant::now() + CLOSE_LINGER);
                let _ = select(pin!(close), expiry).await;
            } else {
                let step = {
                    let mut s = lock(&shared);
                    if s.generation != gen {
                        Step::Superseded
                    } else {
                        let now = s.now();
                        // Closes the session, or detaches it if it is resumable.
                        s.conn.handle_transport_closed(now);
                        s.pump();
                        if s.conn.state() == State::Detached {
                            Step::Detached
                        } else {
                            Step::Write(false, true, s.clock)
                        }
                    }
                };
                match step {
                    Step::Superseded => {
                        let _ = give_sink.send(sink);
                        closing.notify();
                        return;
                    }
                    Step::Detached => {
                        drop(sink);
                        closing.notify();
                        detached_timers(&shared, gen, &notify, &rt).await;
                        return;
                    }
                    Step::Write(..) => {}
                }
            }
            closing.notify();
            return;
        }
        if more {
            continue;
        }
        let wake = notify.notified();
        // Read after the write: a timeout handled meanwhile moved it. Recorded so that
        // `Shared::pump` wakes us if the core later wants an earlier one.
        //
        // A sleep that has not fired is kept while it is due no later than the core's
        // deadline: the heartbeat's deadline moves with every frame received, and a new
        // sleep per wake-up (an allocation, a timer-wheel insertion and a removal under
        // the driver's lock) was a measurable part of a round trip. Firing early only
        // costs a pass through the loop, which handles the timeout only once it is due
        // (the `now >= t` check above) and then sleeps until the deadline as it now is.
        let (deadline, keep) = {
            let mut s = lock(&shared);
            let want = s.conn.poll_timeout();
            let keep = matches!((&timer, want), (Some((at, _)), Some(t)) if *at <= t);
            s.armed_timeout = if keep {
                timer.as_ref().map(|(at, _)| *at)
            } else {
                want
            };
            (s.armed_timeout, keep)
        };
        if !keep {
            timer = deadline.map(|t| (t, rt.sleep_until(clock.to_std(t))));
        }
        match &mut timer {
            Some((_, sleep)) => {
                if let Either::Right(_) = select(pin!(wake), sleep.as_mut()).await {
                    timer = None;
                }
            }
            None => wake.await,
        }
    }
}

/// What the writer does next, decided under the lock (and done after releasing it).
enum Step {
    /// Write what was taken from the core: (transport ping, closed, clock).
    Write(bool, bool, Clock),
    /// A newer transport owns the session.
    Superseded,
    /// The session is detached: only its timers run.
    Detached,
}

/// A detached session's timers (the resume window, SPEC §11.2), run by the writer of the
/// transport that was lost, without writing anything, until the session closes or a new
/// transport takes over (and runs them from then on).
pub(crate) async fn detached_timers<R: Runtime>(
    shared: &SharedRef,
    gen: u64,
    notify: &Notify,
    rt: &R,
) {
    loop {
        let (deadline, clock) = {
            let mut s = lock(shared);
            if s.generation != gen || s.conn.is_closed() {
                return;
            }
            let now = s.now();
            if s.conn.poll_timeout().is_some_and(|t| now >= t) {
                s.conn.handle_timeout(now);
                s.pump();
                if s.conn.is_closed() {
                    return;
                }
            }
            s.armed_timeout = s.conn.poll_timeout();
            (s.armed_timeout, s.clock)
        };
        let wake = notify.notified();
        match deadline {
            Some(t) => {
                let sleep = rt.sleep_until(clock.to_std(t));
                let _ = select(Box::pin(wake), sleep).await;
            }
            None => wake.await,
        }
    }
}

/// Starts the WebSocket closing handshake with `code` (SPEC §2.1; tungstenite's plain
/// `close` sends a Close frame without a code, which the peer sees as 1005), then flushes.
async fn close_with<Si>(sink: &mut Si, code: u16) -> Result<(), tungstenite::Error>
where
    Si: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let frame = tungstenite::protocol::CloseFrame {
        code: code.into(),
        reason: Default::default(),
    };
    sink.send(Message::Close(Some(frame))).await?;
    sink.close().await
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
/// abandoned. A connection the core closes meanwhile (say, OVERLOADED because the peer
/// does not read, SPEC §13.1) is seen at the writer's next notification, not only at the
/// next timer.
async fn drive_write<R: Runtime>(
    shared: &SharedRef,
    rt: &R,
    clock: Clock,
    closed: bool,
    gen: u64,
    notify: &Notify,
    write: impl Future<Output = Result<(), tungstenite::Error>>,
) -> bool {
    let mut write = pin!(write);
    // Fast path: a write that does not wait needs no timer.
    if let Poll::Ready(r) = futures::poll!(write.as_mut()) {
        return r.is_ok();
    }
    let linger = || std::time::Instant::now() + CLOSE_LINGER;
    let mut give_up = closed.then(linger);
    // Whether a notification was taken here; it is given back on return, so that the
    // writer's loop still sees it (more queued meanwhile, or the close) instead of sleeping.
    let mut woke = false;
    let sent = loop {
        let timer = give_up.or_else(|| lock(shared).conn.poll_timeout().map(|t| clock.to_std(t)));
        let Some(t) = timer else {
            break write.await.is_ok();
        };
        let wait = select(rt.sleep_until(t), Box::pin(notify.notified()));
        match select(write.as_mut(), wait).await {
            Either::Left((r, _)) => break r.is_ok(),
            Either::Right((Either::Right(_), _)) => {
                woke = true;
                if give_up.is_none() && lock(shared).conn.is_closed() {
                    give_up = Some(linger());
                }
            }
            Either::Right(_) if give_up.is_some() => break false,
            Either::Right(_) => {
                let mut s = lock(shared);
                if s.generation != gen || s.conn.state() == State::Detached {
                    // Superseded or detached: this transport has nothing left to write.
                    break false;
                }
                let now = s.now();
                s.conn.handle_timeout(now);
                s.pump();
                if s.conn.state() == State::Detached {
                    // Detached by the heartbeat while the write was stuck (SPEC §11.3).
                    return false;
                }
                if s.conn.is_closed() {
                    give_up = Some(linger());
                }
            }
        }
    };
    if woke {
        notify.notify();
    }
    sent
}
