//! Resume figures for the README (issue 25), with every default but `resume` on both sides:
//!
//! 1. the time from a TCP reset of a streaming connection to the first replayed chunk on
//!    loopback (the client notices the reset, redials, resumes; the server replays), next to
//!    its floor in the same run: a fresh connection, handshake, INVOKE and first chunk;
//! 2. the heap a detached session holds on the server: idle, and with a stream cut while its
//!    replay buffer was full (the worst case with defaults).
//!
//! `cargo run --release -p adapter-tests --example resume_figures [RUNS]`. tokio
//! multi-thread runtime (2 workers), server and client in one process, through the cuttable
//! proxy of `adapter_tests::proxy` (plain threads). Heap is counted by a global allocator
//! (live bytes, all threads).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use adapter_tests::proxy::Proxy;
use asp_async::{
    Args, ClientBuilder, ConnectionHook, Output, ServerBuilder, ServerConnection, Tool,
    ToolContext, ToolError,
};
use asp_tokio::Tokio;
use futures::channel::mpsc;
use futures::StreamExt;
use std::sync::{Arc, Mutex};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout as asked.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` came from `alloc` with `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: as `GlobalAlloc::realloc` requires of its caller.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Gates by run: the tool of a run waits on its gate before chunk `pause_at`.
type Gates = Arc<Mutex<std::collections::HashMap<u32, adapter_tests::Gate>>>;

fn gate(gates: &Gates, run: u32) -> adapter_tests::Gate {
    gates.lock().expect("lock").entry(run).or_default().clone()
}

/// Streams `n` numbered ~1 KiB chunks, reporting (run, chunk) after each; waits for the
/// run's gate before chunk `pause_at`.
fn numbered(progress: mpsc::UnboundedSender<(u32, u32)>, gates: Gates) -> Tool {
    Tool::new("numbered", move |ctx: ToolContext, args: Args| {
        let (progress, gates) = (progress.clone(), gates.clone());
        async move {
            let (run, n, pause_at): (u32, u32, u32) = args.parse()?;
            let pad = "x".repeat(1000);
            for i in 0..n {
                if i == pause_at {
                    gate(&gates, run).wait().await;
                }
                ctx.stream_text(&format!("chunk-{i:05}-{pad}"))
                    .await
                    .map_err(|_| ToolError::Cancelled)?;
                let _ = progress.unbounded_send((run, i));
            }
            Output::value(&n)
        }
    })
}

fn number(c: &asp_async::Chunk) -> u32 {
    c.as_str()
        .and_then(|t| t.get(6..11))
        .and_then(|n| n.parse().ok())
        .expect("numbered chunk")
}

/// Waits until the tool of `run` stops making progress for 300 ms (its output waits for
/// room in the replay buffer: the link delivers nothing), returning the last chunk queued.
async fn wait_stalled(rx: &mut mpsc::UnboundedReceiver<(u32, u32)>, run: u32) -> u32 {
    let mut at = 0;
    while let Ok(Some((r, i))) = tokio::time::timeout(Duration::from_millis(300), rx.next()).await {
        if r == run {
            at = at.max(i);
        }
    }
    at
}

fn stats(name: &str, v: &mut [f64], unit: &str) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let med = v[v.len() / 2];
    println!(
        "{name}: median {med:.2} {unit}, range {:.2}–{:.2} ({} runs)",
        v[0],
        v[v.len() - 1],
        v.len()
    );
    med
}

/// Keeps the server's connection handles, to read the core's buffers.
#[derive(Clone, Default)]
struct Conns(Arc<Mutex<Vec<ServerConnection>>>);

impl ConnectionHook for Conns {
    fn connected(&self, conn: ServerConnection, _: &asp_async::tungstenite::http::HeaderMap) {
        self.0.lock().expect("lock").push(conn);
    }
    fn closed(&self, _: &ServerConnection) {}
}

impl Conns {
    /// (state, replay bytes, queued bytes) of the last connection.
    fn last(&self) -> Option<(asp_proto::State, usize, usize)> {
        let c = self.0.lock().expect("lock").last()?.clone();
        c.with(|l| {
            let c = l.core();
            (c.state(), c.replay_bytes(), c.queued_bytes())
        })
    }
}

/// Chunks read before the link is held: two credit batches of half the default window, so
/// the window is open when the tool, paused there, goes on into the held link.
const READ: u32 = 260;

/// A resuming client through `proxy`.
async fn connect(rt: &Tokio, proxy: &Proxy) -> asp_tokio::Client {
    ClientBuilder::new(rt.clone())
        .resume(true)
        .connect(&proxy.url(asp_async::DEFAULT_PATH))
        .await
        .expect("connect")
}

/// Run `run`'s long stream, read up to [`READ`], then the link held and the tool let go
/// until its stream stalls: (the invocation, the last chunk number the tool sent).
async fn stalled_stream(
    client: &asp_tokio::Client,
    proxy: &Proxy,
    gates: &Gates,
    progress: &mut mpsc::UnboundedReceiver<(u32, u32)>,
    run: u32,
) -> (asp_async::Invocation, u32) {
    let mut inv = client
        .invoke("numbered", &(run, 100_000u32, READ))
        .expect("invoke");
    for _ in 0..READ {
        inv.next().await.expect("chunk");
    }
    proxy.hold();
    gate(gates, run).open();
    let sent = wait_stalled(progress, run).await;
    (inv, sent)
}
async fn run(runs: u32) {
    let rt = Tokio::current();
    let (tx, mut progress) = mpsc::unbounded();
    let gates = Gates::default();
    let server = ServerBuilder::new(rt.clone())
        .resume(true)
        .tool(numbered(tx, gates.clone()))
        .start()
        .await
        .expect("server");

    // 1. Reset → first replayed chunk, against a fresh connection's first chunk.
    let (mut resume_ms, mut fresh_ms, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    let mut lost = Vec::new();
    for run in 0..runs {
        let proxy = Proxy::start(server.local_addr());
        let client = connect(&rt, &proxy).await;
        let (mut inv, sent) = stalled_stream(&client, &proxy, &gates, &mut progress, run).await;
        // Take what reached the client before the hold: nothing more arrives until the
        // resume, so the next chunk after the reset is the first replayed one.
        let mut last = READ - 1;
        while let Ok(Some(c)) = tokio::time::timeout(Duration::from_millis(200), inv.next()).await {
            last = number(&c);
        }
        let t0 = Instant::now();
        proxy.reset();
        let c = inv.next().await.expect("the first replayed chunk");
        let resumed = t0.elapsed();
        assert_eq!(number(&c), last + 1, "the first chunk the cut lost");
        assert!(last < sent, "chunks were lost in the cut");
        lost.push(f64::from(sent - last));
        drop(inv);
        client.close().await;

        let t1 = Instant::now();
        let fresh = connect(&rt, &proxy).await;
        let mut inv = fresh
            .invoke("numbered", &(u32::MAX, 1u32, 1u32))
            .expect("invoke");
        inv.next().await.expect("first chunk");
        let floor = t1.elapsed();
        drop(inv);
        fresh.close().await;
        resume_ms.push(resumed.as_secs_f64() * 1e3);
        fresh_ms.push(floor.as_secs_f64() * 1e3);
        ratio.push(resumed.as_secs_f64() / floor.as_secs_f64());
    }
    println!(
        "reset → first replayed chunk (defaults; the stream stalled on a full replay buffer):"
    );
    stats("  chunks of ~1 KiB lost in the cut", &mut lost, "");
    stats("  resume", &mut resume_ms, "ms");
    stats(
        "  floor: fresh connect + HELLO + INVOKE + first chunk",
        &mut fresh_ms,
        "ms",
    );
    stats("  ratio resume / floor", &mut ratio, "×");

    server.shutdown(Duration::from_secs(1)).await;

    // 2. Heap held by a detached session on the server. The client gives up (its proxy
    // forwards nowhere any more, and it is closed), so the server keeps the session for the
    // resume window. A server of its own per measurement, shut down after it.
    let settle = || tokio::time::sleep(Duration::from_millis(1500));
    let (mut idle, mut full, mut full_core) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs.min(7) {
        for streaming in [false, true] {
            let (tx, mut progress) = mpsc::unbounded();
            let conns = Conns::default();
            let gates = Gates::default();
            let server = ServerBuilder::new(rt.clone())
                .resume(true)
                .on_connection(conns.clone())
                .tool(numbered(tx, gates.clone()))
                .start()
                .await
                .expect("server");
            settle().await;
            let before = live();
            let proxy = Proxy::start(server.local_addr());
            let client = connect(&rt, &proxy).await;
            let inv = if streaming {
                let (inv, _) = stalled_stream(&client, &proxy, &gates, &mut progress, run).await;
                Some(inv)
            } else {
                None
            };
            let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            proxy.set_upstream(dead.local_addr().expect("addr"));
            drop(dead);
            proxy.reset();
            drop(inv);
            client.close().await;
            drop(client);
            drop(proxy);
            settle().await;
            assert_eq!(server.connections(), 1, "the detached session is held");
            let held = (live() - before) as f64 / 1024.0;
            let (state, replay, queued) = conns.last().expect("the detached session");
            assert_eq!(state, asp_proto::State::Detached);
            if streaming {
                full.push(held);
                full_core.push((replay + queued) as f64 / 1024.0);
            } else {
                idle.push(held);
            }
            server.shutdown(Duration::from_secs(1)).await;
        }
    }
    println!("heap a detached session holds on the server (client gone, defaults):");
    stats("  idle session", &mut idle, "KiB");
    stats("  stream cut with its replay buffer full", &mut full, "KiB");
    stats(
        "    of which the core's replay buffer and transmit queue",
        &mut full_core,
        "KiB",
    );
}

fn main() {
    let runs = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(15);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(runs));
}
