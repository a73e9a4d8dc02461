//! The measurement loop shared by every transport: latency (N sequential round trips after a
//! warm-up), bytes per call (through the counting proxy or a counting pipe), and the
//! 1,000-chunk streaming test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use crate::count::{Counters, Proxy, Snapshot};

/// The 64-byte string every transport echoes.
pub const PAYLOAD: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// One streamed chunk: 32 bytes.
pub const CHUNK: &str = "0123456789abcdef0123456789abcdef";

/// One connected client of some transport.
pub trait Bench: Send + Sync {
    /// One echo round trip of [`PAYLOAD`] (panics on a wrong answer).
    fn call(&self) -> BoxFuture<'_, ()>;
    /// Asks for `n` chunks of [`CHUNK`] and waits until all have arrived and the call has
    /// ended. Returns the number of chunks received.
    fn stream(&self, n: usize) -> BoxFuture<'_, usize>;
    /// Counters of a self-counting transport (the in-process pipe); `None` for TCP.
    fn counters(&self) -> Option<Arc<Counters>> {
        None
    }
}

/// How to reach a transport: a TCP address to dial (directly, or through the proxy), or a
/// factory of self-contained clients (the in-process pipe).
pub type Connect =
    Arc<dyn Fn(Option<SocketAddr>) -> BoxFuture<'static, Box<dyn Bench>> + Send + Sync>;

/// Wraps an async fn as a [`Connect`].
pub fn connector<F, Fut>(f: F) -> Connect
where
    F: Fn(Option<SocketAddr>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Box<dyn Bench>> + Send + 'static,
{
    Arc::new(move |addr| Box::pin(f(addr)) as BoxFuture<'static, Box<dyn Bench>>)
}

#[derive(Clone, Debug)]
pub struct Opts {
    pub n: usize,
    pub warmup: usize,
    pub byte_calls: usize,
    pub chunks: usize,
    pub stream_reps: usize,
    pub max_secs: f64,
}

#[derive(Clone, Debug, Default)]
pub struct Row {
    pub runtime: String,
    pub transport: String,
    pub samples: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    pub up_per_call: f64,
    pub down_per_call: f64,
    pub conns_per_1k: f64,
    pub stream_ms: Option<f64>,
    pub stream_bytes: Option<f64>,
    pub note: String,
    /// Raw samples, for merging rounds.
    pub lat: Vec<Duration>,
    pub streams: Vec<Duration>,
}

impl Row {
    pub fn bytes_per_call(&self) -> f64 {
        self.up_per_call + self.down_per_call
    }
}

/// A timer usable from any runtime (async-io runs its own reactor thread when needed).
pub async fn sleep(d: Duration) {
    smol::Timer::after(d).await;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Runs the whole measurement for one transport on the current runtime.
pub async fn measure(
    opts: &Opts,
    runtime: &str,
    transport: &str,
    target: Option<SocketAddr>,
    connect: Connect,
) -> Row {
    let mut row = Row {
        runtime: runtime.into(),
        transport: transport.into(),
        ..Row::default()
    };

    // 1. Latency, direct (no proxy).
    let bench = connect(target).await;
    for _ in 0..opts.warmup {
        bench.call().await;
    }
    let cap = Duration::from_secs_f64(opts.max_secs);
    let mut samples = Vec::with_capacity(opts.n);
    let started = Instant::now();
    for _ in 0..opts.n {
        let t = Instant::now();
        bench.call().await;
        samples.push(t.elapsed());
        if started.elapsed() > cap && samples.len() >= 100 {
            row.note = format!("time cap: {} of {} calls", samples.len(), opts.n);
            break;
        }
    }
    row.lat = samples;

    // 2. Streaming time, direct.
    if opts.stream_reps > 0 {
        let got = bench.stream(opts.chunks).await; // warm-up
        assert_eq!(got, opts.chunks, "{transport}: chunks lost");
        let mut times = Vec::new();
        for _ in 0..opts.stream_reps {
            let t = Instant::now();
            let got = bench.stream(opts.chunks).await;
            times.push(t.elapsed());
            assert_eq!(got, opts.chunks, "{transport}: chunks lost");
        }
        row.streams = times;
    }
    let own = bench.counters();
    drop(bench);

    // 3. Bytes: a fresh client through the counting proxy (or the pipe's own counters).
    let proxy;
    let (bench, counters) = match own {
        Some(_) => {
            let b = connect(None).await;
            let c = b.counters().expect("self-counting");
            (b, c)
        }
        None => {
            proxy = Proxy::start(target.expect("a TCP transport has an address"));
            (connect(Some(proxy.addr)).await, proxy.counters.clone())
        }
    };
    for _ in 0..20 {
        bench.call().await;
    }
    if opts.stream_reps > 0 {
        bench.stream(opts.chunks).await;
    }
    let settle = Duration::from_millis(100);
    sleep(settle).await;
    let s0: Snapshot = counters.snapshot();
    for _ in 0..opts.byte_calls {
        bench.call().await;
    }
    sleep(settle).await;
    let s1 = counters.snapshot();
    let d = s1 - s0;
    let n = opts.byte_calls as f64;
    row.up_per_call = d.up as f64 / n;
    row.down_per_call = d.down as f64 / n;
    row.conns_per_1k = d.conns as f64 * 1000.0 / n;
    if opts.stream_reps > 0 {
        let reps = 3;
        for _ in 0..reps {
            bench.stream(opts.chunks).await;
        }
        sleep(settle).await;
        let s2 = counters.snapshot();
        let d = s2 - s1;
        row.stream_bytes = Some((d.up + d.down) as f64 / reps as f64);
    }
    drop(bench);
    row
}

/// Merges the rounds of one transport: percentiles over all samples of all rounds, bytes
/// averaged (they are deterministic; averaging shows it if not).
pub fn merge(rounds: Vec<Row>) -> Row {
    let k = rounds.len() as f64;
    let mut out = Row {
        runtime: rounds[0].runtime.clone(),
        transport: rounds[0].transport.clone(),
        ..Row::default()
    };
    let mut lat: Vec<Duration> = Vec::new();
    let mut streams: Vec<Duration> = Vec::new();
    let mut stream_bytes = 0.0;
    let mut notes = Vec::new();
    for r in rounds {
        lat.extend(r.lat);
        streams.extend(r.streams);
        out.up_per_call += r.up_per_call / k;
        out.down_per_call += r.down_per_call / k;
        out.conns_per_1k += r.conns_per_1k / k;
        stream_bytes += r.stream_bytes.unwrap_or(0.0) / k;
        if !r.note.is_empty() {
            notes.push(r.note);
        }
    }
    out.note = notes.join("; ");
    out.samples = lat.len();
    out.mean_us = us(lat.iter().sum::<Duration>()) / lat.len() as f64;
    lat.sort_unstable();
    out.p50_us = us(percentile(&lat, 0.50));
    out.p99_us = us(percentile(&lat, 0.99));
    if !streams.is_empty() {
        streams.sort_unstable();
        out.stream_ms = Some(percentile(&streams, 0.5).as_secs_f64() * 1e3);
        out.stream_bytes = Some(stream_bytes);
    }
    out
}
