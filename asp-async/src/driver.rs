//! The driver: moves bytes between a WebSocket and the core, and runs its timer.
//!
//! One future per transport both reads and writes, as quinn's `ConnectionDriver` does: each
//! pass takes what the core has to send (`poll_transmit`, at most [`WRITE_BATCH`] bytes),
//! feeds it to the WebSocket, reads one message into `handle_message` (SPEC §2.1) if the core
//! wants input, and runs the core's timer (`poll_timeout`). It flushes once a read finds
//! nothing (or reading is not wanted): the answers to everything that arrived leave in one
//! write (coalesced writes). Reading never waits on writing: a write the socket does not take yet
//! and a read with nothing to read are both polled, so two peers both blocked writing to full
//! sockets still read each other's bytes. Before, reading and writing were two tasks, and on
//! a multi-thread runtime every frame crossed from one to the other, often to another
//! worker thread: a round trip paid several cross-thread wake-ups the raw WebSocket echo
//! does not (README, adapter benchmarks). Now the server's answer to a handler that
//! completes at once is written by the pass that read its INVOKE, waking nothing.
//!
//! While a pass runs (`Shared::driving`), handles that change the core do not wake the
//! driver: it looks at the core again before it sleeps, under the lock. A task woken while
//! it runs would be polled once more for nothing, and tokio's multi-thread scheduler hands
//! such a task to another worker.
//!
//! Nothing may depend on the peer to end: a dead peer neither reads (so writes block once
//! the socket buffers are full) nor answers the WebSocket close. The core's timers run while
//! a write is stuck, so the heartbeat still detects it, and after the connection closes the
//! driver waits for the peer at most [`CLOSE_LINGER`].
//!
//! Resume (SPEC §11): a session may outlive its transport. Each transport's driver carries
//! the session's transport generation it started with ([`Shared::new_transport`]) and stops
//! touching the core once it changed. When the transport of a resumable session ends, the
//! session is detached: the driver drops the WebSocket and keeps only the core's timers
//! running (the resume window) until the session closes or a new transport takes over. On
//! the server, a new connection whose RESUME matched a detached session hands its WebSocket
//! over: its driver starts a driver for the old session on it.
//!
//! [`Shared::new_transport`]: crate::shared::Shared::new_transport

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use asp_proto::State;
use bytes::BytesMut;
use tungstenite::Message;

use crate::runtime::{AsyncTimer, BoxFuture, Notify, Runtime, WsStream};
use crate::shared::{lock, Shared, SharedRef};

/// After the connection has closed: how long the driver may take to hand over the last
/// frames and the WebSocket close, and keeps reading for the peer's close (reading rather
/// than dropping the socket at once, so that late frames from the peer do not make the
/// kernel reset the connection before the peer has read our last frames).
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// At most this many bytes are taken from the core per write. What the driver holds is
/// outside the core's count (SPEC §13.1, `Config::max_buffered`), so it is kept to a small
/// constant: the rest waits, counted, in the core's queue, and a peer that does not read
/// stops our reading (`Connection::wants_input`) rather than growing a buffer here.
const WRITE_BATCH: usize = 256 << 10;

/// Passes (a read, or a write of a full batch) in one poll before the driver gives way to
/// other tasks: a peer that keeps sending, or a handler that keeps streaming, must not hold
/// a worker thread (tokio's cooperative budget does the same for its sockets; smol has none).
const PASSES_PER_POLL: usize = 32;

/// Input bytes the driver hands to the core before it lets the other tasks of its worker
/// run. One connection's burst (a flood of large calls, each answered inline) is then
/// handled a slice at a time, between the other connections' turns, instead of holding
/// the worker for as long as the socket has data (SPEC §13.1: the other connections must
/// not notice).
const READ_BUDGET: usize = 64 << 10;

/// Runs one transport of a connection until it ends (and, if the session is detached, its
/// timers until it is resumed or closes). `gen` is the transport generation (0 for a
/// connection's first transport, else what
/// [`Shared::new_transport`](crate::shared::Shared::new_transport) returned); a transport
/// already superseded does nothing.
pub(crate) fn run<S: WsStream, R: Runtime>(
    shared: SharedRef,
    ws: S,
    rt: R,
    gen: u64,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let notify = {
            let mut s = lock(&shared);
            if s.generation != gen {
                return;
            }
            s.driving = true;
            s.notify.clone()
        };
        let rt_lifo = rt.yield_to_writer();
        let mut d = Driver {
            ws,
            gen,
            notify,
            rt,
            buf: BytesMut::new(),
            out: VecDeque::new(),
            unflushed: false,
            read_done: false,
            read: ReadSide::new(),
            timer: Timer::new(),
            yielding: None,
            yielded: false,
            lifo: rt_lifo,
            close_code: asp_proto::error::close_code::NORMAL,
        };
        match poll_fn(|cx| d.poll_open(&shared, cx)).await {
            End::Closed => d.close(&shared).await,
            End::Superseded => {}
            End::Detached => {
                drop(d.ws);
                detached_timers(&shared, gen, &d.notify, &d.rt, &mut d.timer).await;
            }
            End::Lost => {
                let detached = {
                    let mut s = lock(&shared);
                    if s.generation != gen {
                        return;
                    }
                    let now = s.now();
                    // Closes the session, or detaches it if it is resumable.
                    s.conn.handle_transport_closed(now);
                    s.driving = false;
                    s.pump();
                    s.conn.state() == State::Detached
                };
                drop(d.ws);
                if detached {
                    detached_timers(&shared, gen, &d.notify, &d.rt, &mut d.timer).await;
                }
            }
            // Server: this transport resumed a detached session. Drive the old session with
            // the WebSocket, as a task of its own (this connection is done).
            End::Handoff { target, gen } => {
                let span = lock(&target).span.clone();
                let rt = d.rt.clone();
                let ws = d.ws;
                d.rt.spawn(Box::pin(tracing::Instrument::instrument(
                    async move { run(target, ws, rt, gen).await },
                    span,
                )));
            }
        }
    })
}

/// Why the open phase of a transport ended.
enum End {
    /// The connection closed: send what is left and the WebSocket close.
    Closed,
    /// A newer transport owns the session.
    Superseded,
    /// The session is detached: only its timers run.
    Detached,
    /// The WebSocket failed under a write.
    Lost,
    /// Server: this connection's RESUME matched a detached session, which takes the
    /// WebSocket over as its transport `gen`.
    Handoff {
        /// The resumed session.
        target: SharedRef,
        /// Its new transport generation.
        gen: u64,
    },
}

/// One transport's driving state (the connection's is in [`Shared`]).
struct Driver<S, R> {
    ws: S,
    gen: u64,
    notify: Arc<Notify>,
    rt: R,
    /// Empty: `poll_transmit` hands the core's bytes over without a copy when the buffer is
    /// empty (always, here), so a capacity reserved up front was only idle memory per
    /// connection (SPEC §13.1, README: idle connections).
    buf: BytesMut,
    /// Messages taken from the core and not yet given to the WebSocket.
    out: VecDeque<Message>,
    /// Messages were given to the WebSocket since its last flush.
    unflushed: bool,
    /// The WebSocket's reading side has ended.
    read_done: bool,
    /// Whether reading can make progress (see [`ReadSide`]).
    read: ReadSide,
    /// The connection's timer, set to the core's next deadline (see [`Timer`]).
    timer: Timer,
    /// The WebSocket close code to send once the connection has closed (SPEC §2.1): the
    /// core says which, from why it closed.
    close_code: u16,
    /// Waiting for the other ready tasks before writing what handles queued
    /// ([`Runtime::yield_now`]).
    yielding: Option<BoxFuture<'static, ()>>,
    /// Yielded since the last flush: the next pass writes.
    yielded: bool,
    /// The runtime runs a task woken by a running task next, before the other ready tasks
    /// ([`Runtime::yield_to_writer`]: tokio's multi-thread scheduler). Elsewhere the driver
    /// woken by a handle already runs after the other ready tasks, and a yield only costs.
    lifo: bool,
}

/// What a pass over the core found, decided under the lock.
enum Look {
    /// Carry on with the transport.
    Open {
        /// Read a message if one is there.
        wants_input: bool,
        /// The core still had bytes after a full WRITE_BATCH.
        more: bool,
        /// Other exchanges are in flight: their tasks may be about to queue frames too.
        batch: bool,
    },
    /// Leave the open phase.
    End(End),
}

impl<S: WsStream, R: Runtime> Driver<S, R> {
    /// The open phase: until the connection closes or the transport ends.
    fn poll_open(&mut self, shared: &SharedRef, cx: &mut Context<'_>) -> Poll<End> {
        if let Some(y) = &mut self.yielding {
            if y.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.yielding = None;
        }
        let mut passes = 0;
        // Input bytes handed to the core in this poll (READ_BUDGET).
        let mut read = 0usize;
        loop {
            if passes == PASSES_PER_POLL {
                // Give way (what was answered so far leaves first); the waker makes the
                // runtime poll us again soon.
                if let Poll::Ready(Err(_)) = self.poll_write(cx, true) {
                    return Poll::Ready(End::Lost);
                }
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            passes += 1;
            let (wants_input, more, batch) = match self.look(&mut lock(shared)) {
                Look::Open {
                    wants_input,
                    more,
                    batch,
                } => (wants_input, more, batch),
                Look::End(end) => return Poll::Ready(end),
            };
            // While more input may be waiting, answers are queued in the WebSocket but not
            // flushed: the answers to everything that has arrived leave in one write, as a
            // raw echo that reads all it can before it flushes does (README, throughput).
            let may_read = wants_input && !self.read_done && self.read.should_poll(cx);
            // Woken to write what a handle queued (an INVOKE, a handler's answer) while other
            // exchanges are in flight: their tasks are likely ready too (the answers to a
            // message of several COMPLETEs woke them all), and tokio's multi-thread scheduler
            // runs the task a running one wakes next (its LIFO slot), so writing now sent one
            // INVOKE per write (A/B on current_thread, where the driver already runs after
            // them: the yield only cost).
            // Yield once so that they queue theirs first; all leave in one write, as a raw
            // client that reads all answers before it flushes does (README, issue 19).
            // `driving` stays set meanwhile: they need not wake us.
            if self.lifo
                && batch
                && !may_read
                && !self.unflushed
                && !self.yielded
                && !self.out.is_empty()
            {
                let mut y = self.rt.yield_now();
                if y.as_mut().poll(cx).is_pending() {
                    self.yielded = true;
                    self.yielding = Some(y);
                    return Poll::Pending;
                }
            }
            match self.poll_write(cx, !may_read) {
                Poll::Ready(Ok(())) if more => continue,
                Poll::Ready(Ok(())) | Poll::Pending => {}
                Poll::Ready(Err(_)) => return Poll::Ready(End::Lost),
            }
            if may_read {
                let waker = self.read.waker();
                let mut rcx = Context::from_waker(&waker);
                match Pin::new(&mut self.ws).poll_next(&mut rcx) {
                    Poll::Ready(msg) => {
                        if let Some(Ok(Message::Binary(b))) = &msg {
                            read += b.len();
                        }
                        if let Some(end) = self.handle_read(shared, msg) {
                            return Poll::Ready(end);
                        }
                        if read >= READ_BUDGET {
                            // Give way at the top of the loop.
                            passes = PASSES_PER_POLL;
                        }
                        continue;
                    }
                    Poll::Pending => {
                        self.read.pending();
                        if self.unflushed {
                            // Nothing more to read: flush now.
                            continue;
                        }
                    }
                }
            }
            // The timer, set by `look` to the core's next deadline.
            if self.timer.poll(cx).is_ready() {
                continue;
            }
            // About to sleep: from here on handles wake the driver again. Anything they did
            // while it ran is looked at now, under the lock.
            let mut s = lock(shared);
            if s.generation != self.gen && s.handoff.is_none() {
                return Poll::Ready(End::Superseded);
            }
            s.driving = false;
            let wanted = (self.out.is_empty() && s.conn.wants_transmit())
                || s.conn.is_closed()
                || s.conn.state() == State::Detached
                || s.transport_dropped
                || s.handoff.is_some()
                || s.conn.poll_timeout() != s.armed_timeout
                || (!wants_input && s.conn.wants_input());
            // Clear the flag: what it announced is what was just looked at.
            let _ = self.notify.take();
            if wanted {
                s.driving = true;
                continue;
            }
            self.notify.register(cx.waker());
            drop(s);
            if self.notify.take() {
                // Set between the check and the registration.
                lock(shared).driving = true;
                continue;
            }
            return Poll::Pending;
        }
    }

    /// Under the lock: runs a due timeout, takes what the core has to send, and decides
    /// whether the transport goes on.
    fn look(&mut self, s: &mut Shared) -> Look {
        // Server: a RESUME answered later, from a session store (SPEC §11.4), moved this
        // WebSocket to the session it loaded (this connection's generation changed too).
        if let Some((target, gen)) = s.handoff.take() {
            return Look::End(End::Handoff { target, gen });
        }
        if s.generation != self.gen {
            return Look::End(End::Superseded);
        }
        s.driving = true;
        // `ServerConnection::detach` gave the transport up: nothing more is written, not
        // even a Close (a Close 1000 would end the session at the client, SPEC §11.3).
        if s.conn.state() == State::Detached || s.transport_dropped {
            s.driving = false;
            return Look::End(End::Detached);
        }
        let now = s.now();
        if s.conn.poll_timeout().is_some_and(|t| now >= t) {
            // Compare with the clock rather than trusting the timer alone (quinn's note: a
            // runtime's timer may report late or early under load).
            s.conn.handle_timeout(now);
        }
        if s.conn.state() == State::Detached {
            // The heartbeat found a resumable session's peer silent (SPEC §11.3): this
            // transport is given up.
            s.driving = false;
            s.pump();
            return Look::End(End::Detached);
        }
        let more = self.out.is_empty() && self.take(s);
        if s.conn.poll_ping() {
            self.out.push_back(Message::Ping(Default::default()));
        }
        s.pump();
        if let Some(r) = &s.closed {
            self.close_code = r.websocket_close_code();
        }
        if s.conn.is_closed() {
            s.driving = false;
            return Look::End(End::Closed);
        }
        self.arm(s);
        Look::Open {
            wants_input: s.conn.wants_input(),
            more,
            batch: s.conn.in_flight() > 1,
        }
    }

    /// Takes up to [`WRITE_BATCH`] bytes from the core; whether it has more.
    fn take(&mut self, s: &mut Shared) -> bool {
        let mut taken = 0;
        while taken < WRITE_BATCH {
            let n = s.conn.poll_transmit(&mut self.buf);
            if n == 0 {
                return false;
            }
            taken += n;
            // Taken whole, not split: a split would leave `buf` sharing the core's
            // allocation, kept alive by its spare capacity while the connection idles
            // (README: memory per idle connection).
            self.out
                .push_back(Message::Binary(std::mem::take(&mut self.buf).freeze()));
        }
        s.conn.wants_transmit()
    }

    /// Sets the timer to the core's next deadline (disarms it when there is none).
    fn arm(&mut self, s: &mut Shared) {
        let want = s.conn.poll_timeout();
        self.timer.set(&self.rt, want.map(|t| s.clock.to_std(t)));
        // Recorded so that `Shared::pump` wakes the driver if the core later wants an
        // earlier timeout.
        s.armed_timeout = want;
    }

    /// Gives the taken messages to the WebSocket and, with `flush`, flushes once; `Ready(Ok)`
    /// when all is given (and written).
    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        flush: bool,
    ) -> Poll<Result<(), tungstenite::Error>> {
        while !self.out.is_empty() {
            std::task::ready!(Pin::new(&mut self.ws).poll_ready(cx))?;
            if let Some(m) = self.out.pop_front() {
                Pin::new(&mut self.ws).start_send(m)?;
                self.unflushed = true;
            }
        }
        if self.unflushed && flush {
            std::task::ready!(Pin::new(&mut self.ws).poll_flush(cx))?;
            self.unflushed = false;
            self.yielded = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Hands one read result to the core; `Some` if the open phase ends.
    fn handle_read(
        &mut self,
        shared: &SharedRef,
        msg: Option<Result<Message, tungstenite::Error>>,
    ) -> Option<End> {
        let mut s = lock(shared);
        if s.generation != self.gen {
            // A newer transport took the session over: this one is stale.
            return Some(End::Superseded);
        }
        let now = s.now();
        s.collect_starts = true;
        match msg {
            Some(Ok(Message::Binary(b))) => s.conn.handle_message(now, b),
            Some(Ok(Message::Text(_))) => s.conn.handle_text_message(now),
            Some(Ok(Message::Pong(_))) => s.conn.handle_transport_pong(now),
            // The peer is alive; tungstenite queues the pong itself: flush it.
            Some(Ok(Message::Ping(_))) => {
                s.conn.handle_transport_pong(now);
                self.unflushed = true;
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
                self.read_done = true;
            }
            // SPEC §13.1: buffered input is bounded by the WebSocket message limit; a larger
            // message is OVERLOADED, named before the close (no silent cut).
            Some(Err(tungstenite::Error::Capacity(
                tungstenite::error::CapacityError::MessageTooLong { size, .. },
            ))) => s.conn.handle_oversized_message(now, size),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                // Closes the session, or detaches it if it is resumable.
                s.conn.handle_transport_closed(now);
                self.read_done = true;
            }
        }
        s.pump();
        let starts = take_starts(&mut s);
        let handoff = s.handoff.take();
        drop(s);
        start_inline(starts);
        handoff.map(|(target, gen)| End::Handoff { target, gen })
    }

    /// The connection has closed: sends what the core still has, then the WebSocket close
    /// (SPEC §2.1), and reads (discarding) until the peer ends the WebSocket, all within
    /// [`CLOSE_LINGER`].
    async fn close(mut self, shared: &SharedRef) {
        {
            let mut s = lock(shared);
            if s.generation == self.gen {
                while self.take(&mut s) {}
                s.pump();
            }
        }
        // The connection's timer, now for the linger: the core has no deadline left.
        self.timer.set(&self.rt, Some(self.rt.now() + CLOSE_LINGER));
        let mut close_sent = false;
        let mut write_done = false;
        poll_fn(|cx| {
            if self.timer.poll(cx).is_ready() {
                return Poll::Ready(());
            }
            while !write_done {
                match self.poll_write(cx, true) {
                    Poll::Pending => break,
                    Poll::Ready(Err(_)) => write_done = true,
                    Poll::Ready(Ok(())) if close_sent => {
                        match Pin::new(&mut self.ws).poll_close(cx) {
                            Poll::Pending => break,
                            Poll::Ready(_) => write_done = true,
                        }
                    }
                    Poll::Ready(Ok(())) => {
                        // tungstenite's plain `close` sends a Close frame without a code,
                        // which the peer sees as 1005.
                        let frame = tungstenite::protocol::CloseFrame {
                            code: self.close_code.into(),
                            reason: Default::default(),
                        };
                        self.out.push_back(Message::Close(Some(frame)));
                        close_sent = true;
                    }
                }
            }
            while !self.read_done {
                match Pin::new(&mut self.ws).poll_next(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(_) => self.read_done = true,
                }
            }
            if write_done && self.read_done {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// Tells the driver whether to try reading. A pass woken to write (a caller's INVOKE, a
/// handler's chunk) need not read: the socket has nothing new unless its readiness woke us.
/// Each read attempt costs more than a readiness check, since tungstenite zero-fills its read
/// buffer's free space (`read_buffer_size`, 128 KiB by default) before every read, also one
/// that finds nothing (README, issue 19). So the read side gets a waker of its own that
/// records that it fired; the driver reads when it did, and after a read that returned a
/// message (more may be buffered), until a read finds nothing.
struct ReadSide {
    woken: Arc<ReadWoken>,
    /// A read may make progress: at the start, after a message, after the read waker fired.
    ready: bool,
}

#[derive(Default)]
struct ReadWoken {
    flag: std::sync::atomic::AtomicBool,
    task: futures::task::AtomicWaker,
}

impl std::task::Wake for ReadWoken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.flag.store(true, std::sync::atomic::Ordering::Release);
        self.task.wake();
    }
}

impl ReadSide {
    fn new() -> ReadSide {
        ReadSide {
            woken: Arc::new(ReadWoken::default()),
            ready: true,
        }
    }

    /// Whether to read now; keeps the task's current waker for the read side's wake-ups.
    fn should_poll(&mut self, cx: &Context<'_>) -> bool {
        self.woken.task.register(cx.waker());
        if self
            .woken
            .flag
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            self.ready = true;
        }
        self.ready
    }

    /// The waker to read with.
    fn waker(&self) -> std::task::Waker {
        std::task::Waker::from(self.woken.clone())
    }

    /// The read found nothing: its waker is registered with the socket, which wakes it when
    /// there is more.
    fn pending(&mut self) {
        self.ready = false;
    }
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

/// Polls each newly started handler once, here in the driver, and spawns those that are not
/// done. A handler that answers at once (an echo, a lookup in memory) then completes without
/// a task of its own, and its answer leaves in the same pass that read the INVOKE, so its
/// round trip saves a spawn and a scheduling hop (README, adapter benchmarks). A handler
/// that waits is spawned after its first poll; its first poll used a no-op waker, but a
/// spawned task is polled again at once and every future registers the waker of its latest
/// poll, so no wake-up is lost. The cost: the handler's code up to its first `.await` runs
/// in the driver (do long synchronous work after an `.await`, or in `spawn_blocking`).
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

/// A detached session's timers (the resume window, SPEC §11.2), run by the driver of the
/// transport that was lost, without writing anything, until the session closes or a new
/// transport takes over (and runs them from then on). `timer` is the lost transport's (or a
/// new one, for a session restored from a store).
pub(crate) async fn detached_timers<R: Runtime>(
    shared: &SharedRef,
    gen: u64,
    notify: &Notify,
    rt: &R,
    timer: &mut Timer,
) {
    loop {
        {
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
            timer.set(rt, s.armed_timeout.map(|t| s.clock.to_std(t)));
        }
        // Until the deadline, or a handle changed the session (`Shared::pump` notifies when
        // the core wants an earlier timeout than `armed_timeout`, or it closed).
        let mut wake = std::pin::pin!(notify.notified());
        poll_fn(|cx| {
            if wake.as_mut().poll(cx).is_ready() || timer.poll(cx).is_ready() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

/// A connection's one timer ([`Runtime::new_timer`]), made at its first deadline and then
/// moved ([`AsyncTimer::reset`]) whenever the deadline changes, for the connection's whole
/// life: open, detached, lingering after the close. It replaces a sleep per deadline, which
/// the driver used to keep while due no later than the core's deadline (a new sleep per
/// pass was a measurable part of a round trip); moving a timer later is what the runtimes
/// make cheap (tokio's `Sleep::reset` only records a later deadline; `asp-smol` does the same).
pub(crate) struct Timer {
    timer: Option<Pin<Box<dyn AsyncTimer>>>,
    /// The deadline the timer is set to. `None`: disarmed (no deadline, or it fired); the
    /// timer is then not polled, so a registration left from an earlier deadline never
    /// reports `Ready`.
    at: Option<std::time::Instant>,
}

impl Timer {
    pub(crate) fn new() -> Timer {
        Timer {
            timer: None,
            at: None,
        }
    }

    /// Sets the deadline; `None` disarms the timer.
    pub(crate) fn set<R: Runtime>(&mut self, rt: &R, at: Option<std::time::Instant>) {
        if at == self.at {
            return;
        }
        self.at = at;
        if let Some(t) = at {
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(t),
                None => self.timer = Some(rt.new_timer(t)),
            }
        }
    }

    /// `Ready` once the deadline has passed, which disarms the timer until the next `set`.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match (&self.at, &mut self.timer) {
            (Some(_), Some(timer)) => {
                std::task::ready!(timer.as_mut().poll(cx));
                self.at = None;
                Poll::Ready(())
            }
            _ => Poll::Pending,
        }
    }
}
