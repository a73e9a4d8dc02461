//! Runtime-agnostic helpers for the scenarios: bounded waits, signals, yielding.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use asp_async::Runtime;
use futures::channel::{mpsc, oneshot};
use futures::future::{select, Either, FutureExt, Shared};

/// Every scenario runs under this bound (see [`with_timeout`]).
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `fut`, panicking if it has not finished after `limit` on `rt`'s timer. Every wait in
/// the suite is bounded by wrapping the whole scenario in this.
pub async fn with_timeout<R: Runtime, F: Future>(rt: &R, limit: Duration, fut: F) -> F::Output {
    let expiry = rt.sleep_until(rt.now() + limit);
    match select(pin!(fut), expiry).await {
        Either::Left((out, _)) => out,
        Either::Right(_) => panic!("scenario did not finish within {limit:?}"),
    }
}

/// Sleeps on `rt`'s timer. Used only where time itself is what is tested (idle periods,
/// a slowly ticking tool), never to wait for a condition.
pub async fn sleep<R: Runtime>(rt: &R, d: Duration) {
    rt.sleep_until(rt.now() + d).await;
}

/// Yields once to the executor (a runtime-agnostic `yield_now`).
pub async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

/// Polls `cond` every 20 ms on `rt`'s timer, at most `limit` long; panics with `what` if it
/// never holds. Only for conditions the API offers no signal for (the server's connection
/// count).
pub async fn poll_until<R: Runtime>(
    rt: &R,
    limit: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) {
    let step = Duration::from_millis(20);
    let rounds = limit.as_millis() / step.as_millis() + 1;
    for _ in 0..rounds {
        if cond() {
            return;
        }
        sleep(rt, step).await;
    }
    assert!(cond(), "{what}: still false after {limit:?}");
}

/// A one-shot latch: any number of waiters, opened once by the test.
#[derive(Clone)]
pub struct Gate {
    rx: Shared<oneshot::Receiver<()>>,
    tx: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        let (tx, rx) = oneshot::channel();
        Gate {
            rx: rx.shared(),
            tx: Arc::new(Mutex::new(Some(tx))),
        }
    }

    /// Opens the gate; later calls do nothing.
    pub fn open(&self) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(());
        }
    }

    /// Waits until the gate is open.
    pub async fn wait(&self) {
        let _ = self.rx.clone().await;
    }
}

/// Sends a value on drop: how a test learns that the runtime dropped a tool handler.
pub struct DropSignal<T: Send + 'static> {
    tx: mpsc::UnboundedSender<T>,
    value: Option<Box<dyn FnOnce() -> T + Send>>,
}

impl<T: Send + 'static> DropSignal<T> {
    /// On drop, sends `value()` (evaluated at drop time) on `tx`.
    pub fn new(tx: mpsc::UnboundedSender<T>, value: impl FnOnce() -> T + Send + 'static) -> Self {
        DropSignal {
            tx,
            value: Some(Box::new(value)),
        }
    }
}

impl<T: Send + 'static> Drop for DropSignal<T> {
    fn drop(&mut self) {
        if let Some(v) = self.value.take() {
            let _ = self.tx.unbounded_send(v());
        }
    }
}
