//! Tools: a definition plus an async handler, and the context a handler runs with.

use std::collections::BTreeMap;
use std::future::{poll_fn, Future};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::task::Poll;

use asp_proto::frame::{
    Invoke, Metrics, RawValue, Reply, ReplyStatus, Request, RequestId, Status, Text, ToolDef,
    ToolOp,
};
use asp_proto::{ErrorCode, RequestOutcome, SendError, StreamOptions};
use bytes::Bytes;
use futures::future::{select, Either};
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use crate::connection::ServerConnection;
use crate::error::Error;
use crate::runtime::BoxFuture;
use crate::shared::{lock, wait_outcome, Call, Cancel, Shared, StartTool};

/// Encodes any serde value as a MessagePack [`RawValue`] (maps with string keys, as JSON).
pub fn to_value<T: Serialize + ?Sized>(v: &T) -> Result<RawValue, Error> {
    let bytes = rmp_serde::to_vec_named(v).map_err(|e| Error::Codec(e.to_string()))?;
    RawValue::new(Bytes::from(bytes)).map_err(|e| Error::Codec(format!("{e:?}")))
}

/// Decodes a MessagePack [`RawValue`] into any serde type.
pub fn from_value<T: DeserializeOwned>(v: &RawValue) -> Result<T, Error> {
    rmp_serde::from_slice(v.as_bytes()).map_err(|e| Error::Codec(e.to_string()))
}

/// The arguments of an invocation, still encoded.
#[derive(Clone, Debug, Default)]
pub struct Args(pub Option<RawValue>);

impl Args {
    /// The raw MessagePack value, if any.
    pub fn raw(&self) -> Option<&RawValue> {
        self.0.as_ref()
    }

    /// Decodes the arguments into `T` (nil when absent).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ToolError> {
        let nil = RawValue::nil();
        from_value(self.0.as_ref().unwrap_or(&nil))
            .map_err(|e| ToolError::invalid_arguments(e.to_string()))
    }
}

/// How a handler fails.
#[derive(Clone, Debug)]
pub enum ToolError {
    /// End with ERROR carrying this code (SPEC §12: use application codes ≥ 0x40).
    Error {
        /// Wire code.
        code: ErrorCode,
        /// Detail for the client.
        message: String,
        /// Whether retrying may help.
        retryable: bool,
    },
    /// End with COMPLETE(failed) and this result.
    Failed(Option<RawValue>),
    /// End with COMPLETE(cancelled).
    Cancelled,
    /// End with COMPLETE of this status, result and metrics (e.g. a relay passing on a
    /// function's own COMPLETE(failed) with its metrics). `wall_us` is filled in if empty.
    Complete {
        /// ok, cancelled or failed.
        status: Status,
        /// The result and metrics.
        output: Output,
    },
}

impl ToolError {
    /// INVALID_ARGUMENTS with a message.
    pub fn invalid_arguments(message: impl Into<String>) -> ToolError {
        ToolError::Error {
            code: ErrorCode::INVALID_ARGUMENTS,
            message: message.into(),
            retryable: false,
        }
    }

    /// TOOL_FAILED with a message.
    pub fn failed(message: impl Into<String>) -> ToolError {
        ToolError::Error {
            code: ErrorCode::TOOL_FAILED,
            message: message.into(),
            retryable: false,
        }
    }
}

/// What a handler returns on success: the COMPLETE result and metrics.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// The result value.
    pub result: Option<RawValue>,
    /// Token counts and the like; wall time is filled in if left empty.
    pub metrics: Metrics,
}

impl Output {
    /// A result from any serde value.
    pub fn value<T: Serialize + ?Sized>(v: &T) -> Result<Output, ToolError> {
        Ok(Output {
            result: Some(to_value(v).map_err(|e| ToolError::failed(e.to_string()))?),
            metrics: Metrics::default(),
        })
    }
}

impl From<RawValue> for Output {
    fn from(v: RawValue) -> Self {
        Output {
            result: Some(v),
            metrics: Metrics::default(),
        }
    }
}

/// A tool implementation.
pub trait Handler: Send + Sync + 'static {
    /// Runs one invocation.
    fn call(&self, ctx: ToolContext, args: Args) -> BoxFuture<'static, Result<Output, ToolError>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(ToolContext, Args) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Output, ToolError>> + Send + 'static,
{
    fn call(&self, ctx: ToolContext, args: Args) -> BoxFuture<'static, Result<Output, ToolError>> {
        Box::pin(self(ctx, args))
    }
}

/// A tool: its definition (SPEC §5.5) and its handler.
#[derive(Clone)]
pub struct Tool {
    pub(crate) def: ToolDef,
    pub(crate) handler: Arc<dyn Handler>,
}

impl std::fmt::Debug for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tool").field("def", &self.def).finish()
    }
}

impl Tool {
    /// A tool named `name` run by `handler`.
    ///
    /// Each invocation runs the handler's future as a task of its own, except that its first
    /// poll happens on the connection's reader, so a handler that answers without waiting
    /// needs no task at all. Code before the handler's first `.await` that does not wait
    /// therefore delays the connection's other frames: put long synchronous work after an
    /// `.await` or in the runtime's blocking pool.
    pub fn new(name: impl Into<String>, handler: impl Handler) -> Tool {
        Tool {
            def: ToolDef {
                op: ToolOp::Add,
                name: Text::from(name.into()),
                description: Text::default(),
                input_schema: None,
                annotations: None,
            },
            handler: Arc::new(handler),
        }
    }

    /// Sets the description.
    pub fn description(mut self, d: impl Into<String>) -> Tool {
        self.def.description = Text::from(d.into());
        self
    }

    /// Sets the input schema from any serde value (a `serde_json::Value` works).
    pub fn input_schema<T: Serialize + ?Sized>(mut self, schema: &T) -> Result<Tool, Error> {
        self.def.input_schema = Some(to_value(schema)?);
        Ok(self)
    }

    /// Sets the input schema from an encoded value.
    pub fn input_schema_raw(mut self, schema: RawValue) -> Tool {
        self.def.input_schema = Some(schema);
        self
    }

    /// The definition sent to clients.
    pub fn def(&self) -> &ToolDef {
        &self.def
    }
}

/// The tools a server offers, shared by all its connections.
#[derive(Default)]
pub struct ToolRegistry {
    tools: RwLock<BTreeMap<String, Arc<Tool>>>,
}

impl ToolRegistry {
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Tool>> {
        self.tools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub(crate) fn insert(&self, tool: Tool) {
        self.tools
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tool.def.name.as_str().to_owned(), Arc::new(tool));
    }

    pub(crate) fn remove(&self, name: &str) -> bool {
        self.tools
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .is_some()
    }

    pub(crate) fn defs(&self) -> Vec<asp_proto::frame::ToolDef> {
        self.tools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|t| t.def.clone())
            .collect()
    }
}

/// What a handler can do while it runs: stream output, watch for interrupts, ask the
/// client a question.
#[derive(Clone)]
pub struct ToolContext {
    id: RequestId,
    tool: Text,
    deadline_ms: u32,
    meta: Option<RawValue>,
    /// Largest chunk to send (the client's limits are fixed for the session): worked out
    /// once, so streaming takes the connection lock once per chunk.
    max_chunk: usize,
    shared: Weak<Mutex<Shared>>,
}

impl std::fmt::Debug for ToolContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ToolContext({:?}, {})", self.id, self.tool)
    }
}

/// Why streaming stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamError {
    /// The invocation was interrupted, aborted or the connection closed.
    Cancelled,
    /// The chunk breaks a limit (e.g. invalid UTF-8 for text).
    Invalid(SendError),
}

impl ToolContext {
    /// The invocation id.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// The tool name.
    pub fn tool(&self) -> &str {
        self.tool.as_str()
    }

    /// The INVOKE's `deadline_ms` (0 = none). The core enforces it (SPEC §7.4); a handler
    /// that forwards the call elsewhere passes it on.
    pub fn deadline_ms(&self) -> u32 {
        self.deadline_ms
    }

    /// The INVOKE's `meta`, if any.
    pub fn meta(&self) -> Option<&RawValue> {
        self.meta.as_ref()
    }

    /// The connection this invocation runs on (its id, session, a handle for pushes).
    pub fn connection(&self) -> Option<ServerConnection> {
        ServerConnection::from_weak(self.shared.clone())
    }

    /// Streams text; long text is split into chunks the client accepts. Waits while the
    /// flow-control window or send queue is full.
    pub async fn stream_text(&self, text: &str) -> Result<(), StreamError> {
        self.stream(Bytes::copy_from_slice(text.as_bytes()), StreamOptions::TEXT)
            .await
    }

    /// Streams bytes (see [`ToolContext::stream_text`]).
    pub async fn stream_bytes(&self, data: Bytes) -> Result<(), StreamError> {
        self.stream(data, StreamOptions::BINARY).await
    }

    /// Streams a chunk (SPEC §5.3): text or binary, and whether it is the last, as
    /// `options` says (`StreamOptions::TEXT.fin(true)`: the last chunk, text), the same
    /// options as the core's `Connection::stream`. Data longer than the client accepts per
    /// chunk is split (text on a character boundary; only the last piece carries `fin`); the
    /// future waits while the flow-control window or the send queue is full.
    pub fn stream(&self, data: Bytes, options: StreamOptions) -> StreamSend<'_> {
        StreamSend {
            ctx: self,
            max: self.max_chunk,
            data,
            options,
            done: false,
            yielded: false,
        }
    }

    /// Has the invocation been interrupted or ended by the protocol?
    pub fn is_cancelled(&self) -> bool {
        self.shared.upgrade().is_none_or(|s| {
            lock(&s)
                .served
                .get(&self.id.0)
                .is_none_or(|x| x.cancel.is_some())
        })
    }

    /// Resolves when the invocation is interrupted or ended by the protocol. The runtime
    /// also drops the handler then, so awaiting this is only needed for cleanup work.
    pub async fn cancelled(&self) {
        self.cancel_cause().await;
    }

    pub(crate) async fn cancel_cause(&self) -> Cancel {
        poll_fn(|cx| {
            let Some(shared) = self.shared.upgrade() else {
                return Poll::Ready(Cancel::Aborted);
            };
            let mut s = lock(&shared);
            match s.served.get_mut(&self.id.0) {
                None => Poll::Ready(Cancel::Aborted),
                Some(x) => match x.cancel {
                    Some(c) => Poll::Ready(c),
                    None => {
                        x.cancel_waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                },
            }
        })
        .await
    }

    /// Asks the client a question (SPEC §8) and waits for the reply.
    pub async fn ask(&self, kind: &str, body: Option<RawValue>) -> Result<Reply, Error> {
        let shared = self
            .shared
            .upgrade()
            .ok_or(Error::Closed(asp_proto::CloseReason::Local))?;
        let id = {
            let mut s = lock(&shared);
            let id = s.conn.request(kind, body, Some(self.id))?;
            s.calls.insert(id.0, Call::default());
            s.pump();
            id
        };
        let outcome = wait_outcome(&shared, id, |c| c.request.take(), RequestOutcome::Lost).await;
        match outcome {
            RequestOutcome::Reply(r) => Ok(r),
            RequestOutcome::Error(e) => Err(Error::Remote(e)),
            RequestOutcome::Lost(r) => Err(Error::Closed(r)),
            // A way to end that a later core adds.
            _ => Err(Error::Closed(asp_proto::CloseReason::Local)),
        }
    }
}

/// The future of [`ToolContext::stream`]: a plain struct rather than an `async fn`, because
/// a token stream creates one per chunk and the state machine of the nested `async fn`s it
/// replaced was several times larger (moved on every call).
#[must_use = "futures do nothing unless polled"]
pub struct StreamSend<'a> {
    ctx: &'a ToolContext,
    /// Largest piece: the client's `max_chunk`, lowered if the core reports a smaller frame
    /// limit.
    max: usize,
    /// What is still to be sent.
    data: Bytes,
    /// Text or binary, and whether the whole is the last chunk.
    options: StreamOptions,
    /// Everything was queued: polling again must not send it twice.
    done: bool,
    /// This send already gave way to the writer once (see [`YIELD_AT`]).
    yielded: bool,
}

/// Queued bytes at which a send gives way to the writer before adding more, on runtimes that
/// ask for it ([`crate::Runtime::yield_to_writer`]). A handler that streams without ever
/// waiting would otherwise run until the window or queue is full while the writer it woke
/// cannot run: tokio puts a task woken from a worker in that worker's LIFO slot, which other
/// workers do not steal, so the writer waited for the handler to block and the two never
/// ran in parallel. Yielding (wake ourselves, return `Pending`) requeues the handler at the
/// back, where an idle worker takes it, and lets the writer run. A writer that keeps up
/// keeps the queue below this, and no send yields. (README, adapter benchmarks: 32 and
/// 64 KiB did best; 8 KiB yields too often, 256 KiB waits for the queue to fill.)
pub(crate) const YIELD_AT: usize = 32 << 10;

impl std::fmt::Debug for StreamSend<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StreamSend({:?}, {} bytes)",
            self.ctx.id,
            self.data.len()
        )
    }
}

impl Future for StreamSend<'_> {
    type Output = Result<(), StreamError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(Ok(()));
        }
        let id = this.ctx.id;
        let Some(shared) = this.ctx.shared.upgrade() else {
            return Poll::Ready(Err(StreamError::Cancelled));
        };
        let mut s = lock(&shared);
        if !this.yielded && s.conn.queued_bytes() >= s.yield_at {
            this.yielded = true;
            drop(s);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        loop {
            if s.served.get(&id.0).is_none_or(|x| x.cancel.is_some()) {
                return Poll::Ready(Err(StreamError::Cancelled));
            }
            let cut = piece_len(&this.data, this.max, this.options.text);
            let last = cut == this.data.len();
            let piece = if last {
                this.data.clone()
            } else {
                this.data.slice(..cut)
            };
            let options = this.options.fin(this.options.fin && last);
            match s.conn.stream(id, piece, options) {
                Ok(()) => {
                    if last {
                        this.done = true;
                        s.pump_sent();
                        return Poll::Ready(Ok(()));
                    }
                    bytes::Buf::advance(&mut this.data, cut);
                }
                Err(SendError::Full) => {
                    // What was queued so far must reach the writer before we wait.
                    s.pump_sent();
                    if let Some(x) = s.served.get_mut(&id.0) {
                        x.writable_waker = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                // The core also fits the whole STREAM frame into the client's
                // `max_frame_payload`, which `max_chunk` does not account for; a client with
                // a small frame limit made every larger chunk fail. Split to the core's
                // limit instead.
                Err(SendError::TooLarge { max: m, .. }) if m > 0 && m < cut => this.max = m,
                Err(SendError::NotInFlight | SendError::Closed) => {
                    return Poll::Ready(Err(StreamError::Cancelled));
                }
                Err(e) => return Poll::Ready(Err(StreamError::Invalid(e))),
            }
        }
    }
}

/// How much of `data` the next STREAM carries: all of it if it fits `max`, else `max`
/// bytes, for text cut back to a character boundary.
fn piece_len(data: &[u8], max: usize, text: bool) -> usize {
    if data.len() <= max {
        return data.len();
    }
    if text {
        // Back off to the start of the character at `max` (UTF-8 continuation bytes are
        // 0b10xxxxxx); data that is not UTF-8 after all is cut at `max` and the core refuses it.
        let start = (1..=max).rev().find(|&i| data[i] & 0xC0 != 0x80);
        start.unwrap_or(max)
    } else {
        max
    }
}

/// The server's [`StartTool`]: runs the tool of `registry` an INVOKE names, else `fallback`.
pub(crate) fn starter(registry: Arc<ToolRegistry>, fallback: Option<Arc<Tool>>) -> StartTool {
    Arc::new(move |me, inv, span| {
        let Some(tool) = registry.get(inv.tool.as_str()).or_else(|| fallback.clone()) else {
            return Err(inv);
        };
        Ok(Box::pin(run_handler(me, tool, inv).instrument(span)))
    })
}

/// Runs a handler for one invocation and ends it: COMPLETE or ERROR from the handler's
/// result, COMPLETE(cancelled) when interrupted (the handler future is dropped), nothing when
/// the protocol already ended it. A panicking handler gives ERROR(INTERNAL).
async fn run_handler(shared: Weak<Mutex<Shared>>, tool: Arc<Tool>, inv: Invoke) {
    let max_chunk = shared
        .upgrade()
        .and_then(|s| {
            let g = lock(&s);
            // The core's chunk cap (SPEC §7.5: `max_chunk`, half the initial window, the
            // frame limit), once the session is open.
            g.session.as_ref().map(|_| g.conn.chunk_cap())
        })
        .unwrap_or(64 << 10)
        .clamp(1, 1 << 20);
    let ctx = ToolContext {
        id: inv.id,
        tool: inv.tool.clone(),
        deadline_ms: inv.deadline_ms,
        meta: inv.meta.clone(),
        max_chunk,
        shared: shared.clone(),
    };
    // A handler function may also panic before it returns its future; that is the same
    // failure (INTERNAL), and must not unwind into whoever polls this (the reader, for the
    // first poll: `driver::start_inline`).
    let call = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tool.handler.call(ctx.clone(), Args(inv.args))
    }));
    let work = async move {
        match call {
            Ok(fut) => std::panic::AssertUnwindSafe(fut).catch_unwind().await,
            Err(panic) => Err(panic),
        }
    };
    let cancel = ctx.cancel_cause();
    let result = match select(Box::pin(work), Box::pin(cancel)).await {
        Either::Left((r, _)) => Some(r),
        Either::Right((Cancel::Interrupted, _)) => Some(Ok(Err(ToolError::Cancelled))),
        Either::Right((Cancel::Aborted, _)) => None,
    };
    let Some(shared) = shared.upgrade() else {
        return;
    };
    let mut s = lock(&shared);
    let served = s.served.remove(&inv.id.0);
    let wall_us = served
        .and_then(|x| x.started)
        .map(|t| s.now().saturating_duration_since(t).as_micros() as u64);
    // Errors below are NotInFlight when the protocol ended the invocation meanwhile.
    let _ = match result {
        None => Ok(()),
        Some(Ok(Ok(mut out))) => {
            out.metrics.wall_us = out.metrics.wall_us.or(wall_us);
            s.conn.complete(inv.id, Status::Ok, out.result, out.metrics)
        }
        Some(Ok(Err(ToolError::Cancelled))) => s.conn.complete(
            inv.id,
            Status::Cancelled,
            None,
            Metrics {
                wall_us,
                ..Metrics::default()
            },
        ),
        Some(Ok(Err(ToolError::Complete { status, mut output }))) => {
            output.metrics.wall_us = output.metrics.wall_us.or(wall_us);
            s.conn
                .complete(inv.id, status, output.result, output.metrics)
        }
        Some(Ok(Err(ToolError::Failed(result)))) => s.conn.complete(
            inv.id,
            Status::Failed,
            result,
            Metrics {
                wall_us,
                ..Metrics::default()
            },
        ),
        Some(Ok(Err(ToolError::Error {
            code,
            message,
            retryable,
        }))) => s.conn.fail(inv.id, code, message, retryable),
        Some(Err(_panic)) => s
            .conn
            .fail(inv.id, ErrorCode::INTERNAL, "handler panicked", true),
    };
    s.pump();
}

/// Lets a handler write `ctx.stream_text(..).await?`: a stream that stopped because the
/// invocation was interrupted ends it as cancelled; a refused chunk fails it.
impl From<StreamError> for ToolError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Cancelled => ToolError::Cancelled,
            StreamError::Invalid(e) => ToolError::failed(e.to_string()),
        }
    }
}

/// Builds a REPLY answering `req`.
pub fn reply(req: &Request, status: ReplyStatus, body: Option<RawValue>) -> Reply {
    Reply {
        id: req.id,
        status,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::piece_len;

    #[test]
    fn pieces_fit_and_text_splits_on_character_boundaries() {
        assert_eq!(piece_len(b"abc", 3, true), 3);
        assert_eq!(piece_len(b"abcdef", 4, false), 4);
        // "aé€" = 61 | c3 a9 | e2 82 ac: a cut at 2 or 4 would split a character.
        let s = "aé€".as_bytes();
        assert_eq!(piece_len(s, 2, true), 1);
        assert_eq!(piece_len(s, 3, true), 3);
        assert_eq!(piece_len(s, 4, true), 3);
        assert_eq!(piece_len(s, 5, true), 3);
        assert_eq!(piece_len(s, 4, false), 4);
        // Every cut of a long text is a prefix that is valid UTF-8.
        let long = "日本語のテキスト、ascii, and ünïcödé ".repeat(20);
        for max in 4..40 {
            let mut rest = long.as_bytes();
            while !rest.is_empty() {
                let n = piece_len(rest, max, true);
                assert!(n > 0 && n <= max.max(1));
                assert!(std::str::from_utf8(&rest[..n]).is_ok(), "max {max}");
                rest = &rest[n..];
            }
        }
    }
}
