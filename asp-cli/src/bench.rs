//! `asp bench`: round trips and streams (here), and the load test (`load.rs`).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use asp_tokio::{Client, Error, InvokeOptions, RawValue, Status};
use futures::StreamExt;
use serde_json::json;

use crate::call::{json_to_msgpack, remote_error_text};
use crate::connect::{close, connect};
use crate::interrupt::Interrupts;
use crate::output::{emit, fail, outln, status_name};
use crate::{floor, load, Global, EXIT_INTERRUPTED, EXIT_OK, EXIT_OUTCOME, EXIT_USAGE};

/// `asp bench --floor`: runs `floor::run` and reports each round and the median ratio.
pub(crate) async fn floor_bench(g: &Global, o: floor::FloorOpts) -> i32 {
    let json = g.json;
    let rounds = match floor::run(o.clone(), |line| {
        if !json {
            eprintln!("{line}");
        }
    })
    .await
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_OUTCOME;
        }
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (ratio, lo, hi) = median(rounds.iter().map(|r| r.asp / r.raw.max(1e-9)).collect());
    let (asp, _, _) = median(rounds.iter().map(|r| r.asp).collect());
    let (raw, _, _) = median(rounds.iter().map(|r| r.raw).collect());
    if json {
        emit(&json!({
            "type": "floor",
            "runtime": o.runtime,
            "connections": o.connections,
            "pipeline": o.pipeline,
            // With --stream: [chunks, bytes per chunk], and the rates are chunks per second.
            "stream": o.stream.map(|(n, size)| [n, size]),
            "asp_calls_per_s": rounds.iter().map(|r| r.asp.round()).collect::<Vec<_>>(),
            "raw_msgs_per_s": rounds.iter().map(|r| r.raw.round()).collect::<Vec<_>>(),
            "ratio_median": (ratio * 1e3).round() / 1e3,
            "ratio_min": (lo * 1e3).round() / 1e3,
            "ratio_max": (hi * 1e3).round() / 1e3,
        }));
    } else {
        // What ran and in which unit: one streaming connection, or many pipelining callers.
        let (shape, asp_unit, raw_unit) = match o.stream {
            Some((n, size)) => (
                format!(
                    "one connection streaming {n} × {size} B, {} streams per side and round",
                    o.reps
                ),
                " chunks/s",
                " msgs/s",
            ),
            None => (
                format!("{} connections × {} in flight", o.connections, o.pipeline),
                "/s",
                "/s",
            ),
        };
        outln(&format!(
            "{} runtime, {shape}, {} rounds: ASP {asp:.0}{asp_unit}, raw WebSocket \
             {raw:.0}{raw_unit} (medians); ASP/raw {:.0} % (range {:.0}–{:.0} %)",
            o.runtime,
            rounds.len(),
            100.0 * ratio,
            100.0 * lo,
            100.0 * hi
        ));
    }
    EXIT_OK
}

/// `asp bench` with the load flags: runs `load::run` and reports.
pub(crate) async fn load_bench(g: &Global, o: load::LoadOpts) -> i32 {
    let json = g.json;
    let r = load::run(&o, |line| {
        if !json {
            eprintln!("{line}");
        }
    })
    .await;
    let mut lat = r.latencies.clone();
    lat.sort();
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let total = r.calls_ok + r.calls_failed;
    if g.json {
        emit(&json!({
            "type": "load",
            "url": o.url,
            "connections": o.connections,
            "pipeline": o.pipeline,
            "calls_ok": r.calls_ok,
            "calls_failed": r.calls_failed,
            "check_failures": r.check_failures,
            "elapsed_s": (secs * 1e3).round() / 1e3,
            "calls_per_s": (r.calls_ok as f64 / secs).round(),
            "p50_us": micros(quantile(&lat, 0.50)),
            "p99_us": micros(quantile(&lat, 0.99)),
            "max_us": micros(quantile(&lat, 1.0)),
            "idle_open": r.idle_open,
            "idle_lost": r.idle_lost,
            "slow_bytes": r.slow_bytes,
            "storm_cycles": r.storm_cycles,
            "flood_bytes_sent": r.flood_bytes_sent,
            "flood_overloaded": r.flood_overloaded,
            "flood_cut_silently": r.flood_cut_silently,
            "errors": r.errors,
        }));
    } else {
        outln(&format!(
            "{total} calls on {} connections × {} in flight in {}: {} ok, {} failed{}",
            o.connections,
            o.pipeline,
            human(r.elapsed),
            r.calls_ok,
            r.calls_failed,
            if o.check {
                format!(", {} check failures", r.check_failures)
            } else {
                String::new()
            }
        ));
        outln(&format!(
            "  {:.0} calls/s   latency p50 {}  p99 {}  max {}",
            r.calls_ok as f64 / secs,
            human(quantile(&lat, 0.50)),
            human(quantile(&lat, 0.99)),
            human(quantile(&lat, 1.0)),
        ));
        if o.idle > 0 {
            outln(&format!(
                "  idle: {} open, {} lost by the end",
                r.idle_open, r.idle_lost
            ));
        }
        if o.slow > 0 {
            outln(&format!(
                "  slow consumers read {}",
                human_bytes(r.slow_bytes as f64)
            ));
        }
        if o.storm > 0 {
            outln(&format!("  disconnect storm: {} cycles", r.storm_cycles));
        }
        if o.flood > 0 {
            outln(&format!(
                "  floods sent {} without reading; ended with OVERLOADED: {}, cut silently: {}",
                human_bytes(r.flood_bytes_sent as f64),
                r.flood_overloaded,
                r.flood_cut_silently
            ));
        }
        for e in &r.errors {
            eprintln!("  error: {e}");
        }
    }
    let bad = r.calls_failed > 0
        || r.check_failures > 0
        || r.idle_lost > 0
        || r.flood_cut_silently > 0
        || r.calls_ok == 0 && o.connections > 0;
    if bad {
        EXIT_OUTCOME
    } else {
        EXIT_OK
    }
}

pub(crate) struct BenchOpts {
    pub(crate) url: String,
    pub(crate) count: Option<u64>,
    pub(crate) warmup: Option<u64>,
    pub(crate) concurrency: usize,
    pub(crate) tool: Option<String>,
    pub(crate) args: Option<String>,
    pub(crate) size: u64,
    pub(crate) stream: Option<u64>,
    pub(crate) chunk: u64,
    pub(crate) no_progress: bool,
}

/// One measured invocation.
#[derive(Clone, Copy)]
pub(crate) struct Sample {
    total: Duration,
    first_chunk: Option<Duration>,
    bytes: u64,
    chunks: u64,
}

/// Why a bench invocation failed, with its exit status.
pub(crate) struct BenchFailure {
    code: i32,
    message: String,
}

pub(crate) async fn run_one(
    client: &Client,
    tool: &str,
    args: &Option<RawValue>,
    read_chunks: bool,
) -> Result<Sample, BenchFailure> {
    let start = Instant::now();
    let mut inv = client
        .invoke_raw(tool, args.clone(), InvokeOptions::default())
        .map_err(|e| BenchFailure {
            code: EXIT_USAGE,
            message: format!("cannot invoke {tool}: {e}"),
        })?;
    let (mut first_chunk, mut bytes, mut chunks) = (None, 0, 0);
    if read_chunks {
        while let Some(c) = inv.next().await {
            first_chunk.get_or_insert_with(|| start.elapsed());
            bytes += c.data.len() as u64;
            chunks += 1;
        }
    }
    match inv.completion().await {
        Ok(c) if c.status == Status::Ok => Ok(Sample {
            total: start.elapsed(),
            first_chunk,
            bytes,
            chunks,
        }),
        Ok(c) => Err(BenchFailure {
            code: EXIT_OUTCOME,
            message: format!("{tool} completed with status {}", status_name(c.status)),
        }),
        Err(Error::Remote(e)) => Err(BenchFailure {
            code: EXIT_OUTCOME,
            message: remote_error_text(&e),
        }),
        Err(e) => Err(BenchFailure {
            code: EXIT_USAGE,
            message: format!("invocation failed: {e}"),
        }),
    }
}

/// What a bench runs.
pub(crate) struct Load<'a> {
    client: &'a Client,
    tool: &'a str,
    args: &'a Option<RawValue>,
    /// Stream test: read every chunk (round trips leave them to `completion`).
    read_chunks: bool,
    concurrency: usize,
}

/// Runs `count` invocations with `concurrency` in flight, until done, a failure or `stop`.
pub(crate) async fn run_phase(
    load: &Load<'_>,
    count: u64,
    stop: &AtomicBool,
    mut on_sample: impl FnMut(Sample),
) -> Result<(), BenchFailure> {
    let Load {
        client,
        tool,
        args,
        read_chunks,
        concurrency,
    } = *load;
    let next = AtomicU64::new(0);
    let samples = Mutex::new(Vec::new());
    let worker = || async {
        loop {
            if stop.load(Ordering::Relaxed) || next.fetch_add(1, Ordering::Relaxed) >= count {
                return Ok(());
            }
            match run_one(client, tool, args, read_chunks).await {
                Ok(s) => samples.lock().unwrap_or_else(|e| e.into_inner()).push(s),
                Err(f) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(f);
                }
            }
        }
    };
    let workers = futures::future::join_all((0..concurrency.max(1)).map(|_| worker()));
    tokio::pin!(workers);
    // Hand samples over as they come (for the progress bar) while the workers run.
    let mut report = tokio::time::interval(Duration::from_millis(100));
    let results = loop {
        tokio::select! {
            r = &mut workers => break r,
            _ = report.tick() => {
                for s in samples.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                    on_sample(s);
                }
            }
        }
    };
    for s in samples.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        on_sample(s);
    }
    results.into_iter().collect()
}

/// The `q` quantile (nearest rank) of sorted samples.
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Microseconds, to 0.1 µs.
pub(crate) fn micros(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e7).round() / 10.0
}

pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

pub(crate) fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub(crate) async fn bench(g: &Global, o: BenchOpts) -> i32 {
    let streaming = o.stream.is_some();
    let count = o.count.unwrap_or(if streaming { 20 } else { 1000 });
    if count == 0 {
        return fail("-n must be at least 1");
    }
    let warmup = o.warmup.unwrap_or((count / 10).min(100));
    let tool = o
        .tool
        .clone()
        .unwrap_or_else(|| if streaming { "blob" } else { "echo" }.to_owned());
    let args = match (&o.args, o.stream) {
        (Some(a), _) => json_to_msgpack(a, "--args"),
        (None, Some(bytes)) => asp_tokio::to_value(&json!({"bytes": bytes, "chunk": o.chunk}))
            .map_err(|e| e.to_string()),
        (None, None) => match usize::try_from(o.size) {
            Ok(n) => asp_tokio::to_value(&"x".repeat(n)).map_err(|e| e.to_string()),
            Err(_) => Err("--size is too large".to_owned()),
        },
    };
    let args = match args {
        Ok(a) => Some(a),
        Err(e) => return fail(e),
    };
    let mut sig = match Interrupts::new() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let client = tokio::select! {
        c = connect(g, &o.url, None) => match c {
            Ok(c) => c,
            Err(e) => return fail(e),
        },
        () = sig.recv() => return EXIT_INTERRUPTED,
    };
    let mut concurrency = o.concurrency.max(1);
    if let Some(session) = client.session() {
        let max = usize::from(session.peer_limits.max_inflight).max(1);
        if concurrency > max {
            eprintln!("note: the server allows {max} invocations in flight; using -c {max}");
            concurrency = max;
        }
    }

    let stop = AtomicBool::new(false);
    let mut interrupted = false;
    // Warm-up, then the measured run; Ctrl-C stops either and reports what was measured.
    let mut samples: Vec<Sample> = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let show_bar = !g.json
        && !o.no_progress
        && std::io::stderr().is_terminal()
        && (count >= 1000 || streaming);
    let bar = if show_bar {
        let b = indicatif::ProgressBar::new(count);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} eta {eta}",
        ) {
            b.set_style(style);
        }
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let load = Load {
        client: &client,
        tool: &tool,
        args: &args,
        read_chunks: streaming,
        concurrency,
    };
    let mut elapsed = Duration::ZERO;
    let mut result = Ok(());
    for (phase, n) in [("warm-up", warmup), ("measure", count)] {
        if n == 0 || interrupted {
            continue;
        }
        let measuring = phase == "measure";
        let start = Instant::now();
        let run = run_phase(&load, n, &stop, |s| {
            if measuring {
                samples.push(s);
                bar.inc(1);
            }
        });
        tokio::pin!(run);
        let r = tokio::select! {
            r = &mut run => r,
            () = sig.recv() => {
                interrupted = true;
                stop.store(true, Ordering::Relaxed);
                run.await
            }
        };
        if measuring {
            elapsed = start.elapsed();
        }
        if r.is_err() {
            result = r;
            break;
        }
    }
    bar.finish_and_clear();
    close(&client).await;
    if let Err(f) = result {
        eprintln!("error: {}", f.message);
        return f.code;
    }
    if interrupted {
        eprintln!(
            "interrupted: reporting {} of {count} invocations",
            samples.len()
        );
    }
    if samples.is_empty() {
        return fail("nothing was measured");
    }
    report_bench(g, &o, &tool, concurrency, &samples, elapsed, interrupted);
    EXIT_OK
}

pub(crate) fn report_bench(
    g: &Global,
    o: &BenchOpts,
    tool: &str,
    concurrency: usize,
    samples: &[Sample],
    elapsed: Duration,
    interrupted: bool,
) {
    let mut lat: Vec<Duration> = samples.iter().map(|s| s.total).collect();
    lat.sort();
    let mut first: Vec<Duration> = samples.iter().filter_map(|s| s.first_chunk).collect();
    first.sort();
    let n = samples.len();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mean = lat.iter().sum::<Duration>() / n as u32;
    let per_s = n as f64 / secs;
    let bytes: u64 = samples.iter().map(|s| s.bytes).sum();
    let chunks: u64 = samples.iter().map(|s| s.chunks).sum();
    let streaming = o.stream.is_some();
    if g.json {
        let mut v = json!({
            "type": "bench",
            "mode": if streaming { "stream" } else { "round_trip" },
            "url": o.url,
            "tool": tool,
            "n": n,
            "concurrency": concurrency,
            "elapsed_s": (secs * 1e6).round() / 1e6,
            "p50_us": micros(quantile(&lat, 0.50)),
            "p90_us": micros(quantile(&lat, 0.90)),
            "p99_us": micros(quantile(&lat, 0.99)),
            "max_us": micros(quantile(&lat, 1.0)),
            "mean_us": micros(mean),
            "throughput_per_s": (per_s * 10.0).round() / 10.0,
        });
        if interrupted {
            v["interrupted"] = true.into();
        }
        if streaming {
            v["bytes"] = bytes.into();
            v["chunks"] = chunks.into();
            v["bytes_per_s"] = (bytes as f64 / secs).round().into();
            v["first_chunk_p50_us"] = micros(quantile(&first, 0.50)).into();
            v["first_chunk_p99_us"] = micros(quantile(&first, 0.99)).into();
        }
        emit(&v);
        return;
    }
    let what = if streaming {
        format!("streams of {}", human_bytes(bytes as f64 / n as f64))
    } else {
        "round trips".to_owned()
    };
    outln(&format!(
        "{tool}: {n} {what} in {} (concurrency {concurrency})",
        human(elapsed)
    ));
    outln(&format!(
        "  latency      p50 {}  p90 {}  p99 {}  max {}  mean {}",
        human(quantile(&lat, 0.50)),
        human(quantile(&lat, 0.90)),
        human(quantile(&lat, 0.99)),
        human(quantile(&lat, 1.0)),
        human(mean)
    ));
    if streaming {
        outln(&format!(
            "  first chunk  p50 {}  p99 {}",
            human(quantile(&first, 0.50)),
            human(quantile(&first, 0.99))
        ));
        outln(&format!(
            "  throughput   {}/s, {:.0} chunks/s, {per_s:.1} streams/s",
            human_bytes(bytes as f64 / secs),
            chunks as f64 / secs
        ));
    } else {
        outln(&format!("  throughput   {per_s:.0} calls/s"));
    }
}
