//! `asp bench` at scale: many connections, pipelined calls, a time limit, a `--check` that
//! every call ends exactly once with its own result, and the hostile loads of issue 16 —
//! idle connections held open, slow consumers, disconnect storms, and floods that never
//! read (SPEC §13.1). The server's memory is measured from outside (its RSS), so the idle
//! connections stay open for `--hold` after they are up.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asp_tokio::asp_proto::codec;
use asp_tokio::asp_proto::frame::{Frame, Hello, Invoke, RequestId, Versions};
use asp_tokio::tungstenite::client::IntoClientRequest;
use asp_tokio::tungstenite::http::HeaderValue;
use asp_tokio::tungstenite::Message;
use asp_tokio::{Client, Error, InvokeOptions, RawValue, Runtime, Status, Tokio};
use bytes::BytesMut;
use futures::{SinkExt, StreamExt};

/// What to run (from `asp bench`'s flags).
pub struct LoadOpts {
    pub url: String,
    pub token: Option<String>,
    /// Connections making round trips.
    pub connections: usize,
    /// Calls in flight per connection.
    pub pipeline: usize,
    /// Calls per connection (when no `duration`).
    pub calls: u64,
    /// Run for this long instead of a call count.
    pub duration: Option<Duration>,
    /// Verify each result and that each call ended exactly once.
    pub check: bool,
    /// Size of each call's argument.
    pub size: usize,
    /// Idle connections opened first and held (for memory per connection).
    pub idle: usize,
    /// How long to hold the idle connections once they are all up (before the load).
    pub hold: Duration,
    /// Connections streaming `blob` and reading one chunk per 10 ms.
    pub slow: usize,
    /// Tasks that connect, start a stream and drop the connection mid-call, repeatedly.
    pub storm: usize,
    /// Raw connections that send 32 KiB `echo` calls and never read.
    pub flood: usize,
}

/// What happened.
#[derive(Default, Debug)]
pub struct LoadReport {
    pub calls_ok: u64,
    pub calls_failed: u64,
    pub check_failures: u64,
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
    pub idle_open: usize,
    pub idle_lost: usize,
    pub slow_bytes: u64,
    pub storm_cycles: u64,
    pub flood_bytes_sent: u64,
    pub flood_cut_silently: u64,
    pub flood_overloaded: u64,
    pub errors: Vec<String>,
}

/// A side load (slow consumer, storm, flood) on the server at `url` with `token`, until
/// `stop`, adding to `report`.
type SideLoad = fn(
    String,
    Option<String>,
    Arc<AtomicBool>,
    Arc<Mutex<LoadReport>>,
) -> futures::future::BoxFuture<'static, ()>;

async fn connect(o: &LoadOpts) -> Result<Client, Error> {
    let mut b = asp_tokio::client();
    if let Some(t) = &o.token {
        b = b.token(t.clone());
    }
    b.connect(&o.url).await
}

/// Runs the whole load; `progress` gets one line per phase.
pub async fn run(o: &LoadOpts, progress: impl Fn(&str)) -> LoadReport {
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let mut idle = Vec::with_capacity(o.idle);
    if o.idle > 0 {
        // Opened with bounded parallelism: a burst of 10 000 SYNs overflows the backlog, and
        // a server admits at most 128 upgrades in progress per source address (SPEC §13.1).
        let opened = futures::stream::iter(0..o.idle)
            .map(|_| connect(o))
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        for c in opened {
            match c {
                Ok(c) => idle.push(c),
                Err(e) => note(&report, format!("idle connect: {e}")),
            }
        }
        progress(&format!("{} idle connections open", idle.len()));
        tokio::time::sleep(o.hold).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = o.duration.map(|d| Instant::now() + d);
    // The side loads (slow consumers, storms, floods) run on a thread of their own, with
    // their own runtime: they stand for other clients, and on the generator's thread their
    // own work (encoding megabytes of floods) would add to the neighbours' measured latency
    // what the server never caused.
    let mut side: Vec<futures::future::BoxFuture<'static, ()>> = Vec::new();
    let mut add = |n: usize, load: SideLoad| {
        for _ in 0..n {
            side.push(load(
                o.url.clone(),
                o.token.clone(),
                stop.clone(),
                report.clone(),
            ));
        }
    };
    add(o.slow, |u, t, s, r| Box::pin(slow_consumer(u, t, s, r)));
    add(o.storm, |u, t, s, r| Box::pin(storm(u, t, s, r)));
    add(o.flood, |u, t, s, r| Box::pin(flood(u, t, s, r)));
    let side = (!side.is_empty()).then(|| {
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let tasks: Vec<_> = side.into_iter().map(tokio::spawn).collect();
                for t in tasks {
                    let _ = t.await;
                }
            });
        })
    });
    let start = Instant::now();
    let conns = futures::stream::iter(0..o.connections)
        .map(|_| connect(o))
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let mut workers = Vec::new();
    for (i, c) in conns.into_iter().enumerate() {
        match c {
            Ok(c) => {
                let c = Arc::new(c);
                for p in 0..o.pipeline.max(1) {
                    workers.push(tokio::spawn(round_trips(
                        c.clone(),
                        i,
                        p,
                        o.calls.div_ceil(o.pipeline.max(1) as u64),
                        deadline,
                        o.check,
                        o.size,
                        report.clone(),
                    )));
                }
            }
            Err(e) => note(&report, format!("connect: {e}")),
        }
    }
    progress(&format!("{} workers calling", workers.len()));
    for w in workers {
        let _ = w.await;
    }
    let elapsed = start.elapsed();
    if let Some(d) = deadline {
        // Side loads run as long as the round trips, at least until the deadline.
        tokio::time::sleep_until(d.into()).await;
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(side) = side {
        let _ = tokio::task::spawn_blocking(move || side.join()).await;
    }
    let mut lost = 0;
    for c in &idle {
        if c.session().is_none() {
            lost += 1;
        }
    }
    let mut r = std::mem::take(&mut *report.lock().unwrap_or_else(|e| e.into_inner()));
    r.elapsed = elapsed;
    r.idle_open = idle.len();
    r.idle_lost = lost;
    drop(idle);
    r
}

fn note(report: &Mutex<LoadReport>, e: String) {
    let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
    if r.errors.len() < 20 {
        r.errors.push(e);
    }
}

/// One worker: calls `echo` one at a time (a connection runs `pipeline` of these), each with
/// an argument naming the call, and checks the result is exactly that argument.
#[allow(clippy::too_many_arguments)]
async fn round_trips(
    client: Arc<Client>,
    conn: usize,
    lane: usize,
    calls: u64,
    deadline: Option<Instant>,
    check: bool,
    size: usize,
    report: Arc<Mutex<LoadReport>>,
) {
    let mut lat = Vec::new();
    let (mut ok, mut failed, mut bad) = (0u64, 0u64, 0u64);
    // Tags of calls started and not yet ended: each must end exactly once.
    let mut open: HashSet<u64> = HashSet::new();
    let mut i = 0u64;
    loop {
        match deadline {
            Some(d) if Instant::now() >= d => break,
            None if i >= calls => break,
            _ => {}
        }
        let tag = ((conn as u64) << 32) | ((lane as u64) << 24) | i;
        i += 1;
        let text = format!("{tag:016x}");
        let padded = format!("{text}{}", "x".repeat(size.saturating_sub(text.len())));
        let Ok(args) = asp_tokio::to_value(&padded) else {
            failed += 1;
            continue;
        };
        let sent = args.clone();
        let t0 = Instant::now();
        let inv = match client.invoke_raw("echo", Some(args), InvokeOptions::default()) {
            Ok(inv) => inv,
            Err(e) => {
                failed += 1;
                note(&report, format!("invoke: {e}"));
                break;
            }
        };
        open.insert(tag);
        match inv.completion().await {
            Ok(c) if c.status == Status::Ok => {
                lat.push(t0.elapsed());
                if !open.remove(&tag) {
                    bad += 1; // ended twice
                }
                if check && c.result.as_ref().map(RawValue::as_bytes) != Some(sent.as_bytes()) {
                    bad += 1;
                    note(&report, format!("call {tag:x}: wrong result"));
                }
                ok += 1;
            }
            Ok(c) => {
                open.remove(&tag);
                failed += 1;
                note(&report, format!("call {tag:x}: status {:?}", c.status));
            }
            Err(e) => {
                open.remove(&tag);
                failed += 1;
                note(&report, format!("call {tag:x}: {e}"));
            }
        }
    }
    // Calls that never ended.
    bad += open.len() as u64;
    let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
    r.calls_ok += ok;
    r.calls_failed += failed;
    r.check_failures += bad;
    r.latencies.extend(lat);
}

/// Streams `blob` (1 MiB) over and over, reading one chunk every 10 ms: flow control must
/// hold the server back, not its memory.
async fn slow_consumer(
    url: String,
    token: Option<String>,
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<LoadReport>>,
) {
    let o = opts_for(url, token);
    let Ok(client) = connect(&o).await else {
        note(&report, "slow consumer: connect failed".into());
        return;
    };
    let args = asp_tokio::to_value(&serde_json::json!({"bytes": 1 << 20, "chunk": 4096})).ok();
    let mut bytes = 0;
    'outer: while !stop.load(Ordering::Relaxed) {
        let Ok(mut inv) = client.invoke_raw("blob", args.clone(), InvokeOptions::default()) else {
            break;
        };
        while let Some(c) = inv.next().await {
            bytes += c.data.len() as u64;
            tokio::time::sleep(Duration::from_millis(10)).await;
            if stop.load(Ordering::Relaxed) {
                break 'outer;
            }
        }
    }
    report.lock().unwrap_or_else(|e| e.into_inner()).slow_bytes += bytes;
}

/// Connects, starts a 16 MiB stream, and drops the transport at the first chunk, over and
/// over (a raw WebSocket, so that the TCP connection really goes away mid-call; dropping a
/// `Client` leaves its connection open). The server must cancel each handler and free each
/// connection.
async fn storm(
    url: String,
    token: Option<String>,
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<LoadReport>>,
) {
    let args = asp_tokio::to_value(&serde_json::json!({"bytes": 16 << 20, "chunk": 4096})).ok();
    let mut cycles = 0;
    while !stop.load(Ordering::Relaxed) {
        let Some(mut ws) = raw_connect(&url, &token).await else {
            continue;
        };
        let mut buf = BytesMut::new();
        codec::encode(
            &Frame::Invoke(Invoke {
                id: RequestId(1),
                tool: "blob".into(),
                args: args.clone(),
                deadline_ms: 0,
                meta: None,
            }),
            &mut buf,
        );
        if ws.send(Message::Binary(buf.freeze())).await.is_err() {
            continue;
        }
        // Up to the first STREAM, then gone (the unread data makes the kernel reset it).
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(mut b) = m {
                let mut streamed = false;
                while let Some(Ok(f)) = codec::decode_frame(&mut b, u32::MAX) {
                    streamed |= matches!(f, Frame::Stream(_));
                }
                if streamed {
                    break;
                }
            }
        }
        drop(ws);
        cycles += 1;
    }
    report
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .storm_cycles += cycles;
}

type RawWs = <Tokio as Runtime>::Ws;

/// A raw WebSocket with the ASP handshake done (HELLO sent; the server's HELLO and
/// TOOL_DEFs are left unread).
async fn raw_connect(url: &str, token: &Option<String>) -> Option<RawWs> {
    let rt = Tokio::current();
    let mut req = url.into_client_request().ok()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("asp-v1"));
    if let Some(t) = token {
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {t}")) {
            req.headers_mut().insert("Authorization", v);
        }
    }
    let addr = asp_tokio::host_port(&req).ok()?;
    let tcp = rt.tcp_connect(addr).await.ok()?;
    let (mut ws, _) = rt
        .handshake(req, tcp, asp_tokio::default_ws_config())
        .await
        .ok()?;
    let mut buf = BytesMut::new();
    codec::encode(
        &Frame::Hello(Hello {
            versions: Versions::V1,
            ..Hello::default()
        }),
        &mut buf,
    );
    ws.send(Message::Binary(buf.freeze())).await.ok()?;
    Some(ws)
}

/// A raw WebSocket that sends `echo` calls with 32 KiB arguments, 8 per message, and never
/// reads (issue 16's attack). Afterwards it reads what the server sent: the connection must
/// still be open (held back), or end with ERROR(OVERLOADED) — never cut without a word.
async fn flood(
    url: String,
    token: Option<String>,
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<LoadReport>>,
) {
    let Some(mut ws) = raw_connect(&url, &token).await else {
        note(&report, "flood: connect failed".into());
        return;
    };
    let mut buf = BytesMut::new();
    let arg = asp_tokio::to_value(&"x".repeat(32 << 10)).ok();
    let mut sent = 0u64;
    let mut id = 0u16;
    let sending = async {
        loop {
            for _ in 0..8 {
                id = id % 0x7000 + 1;
                codec::encode(
                    &Frame::Invoke(Invoke {
                        id: RequestId(id),
                        tool: "echo".into(),
                        args: arg.clone(),
                        deadline_ms: 0,
                        meta: None,
                    }),
                    &mut buf,
                );
            }
            let m = buf.split().freeze();
            let n = m.len() as u64;
            if ws.send(Message::Binary(m)).await.is_err() {
                return;
            }
            sent += n;
        }
    };
    let stopped = async {
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        () = sending => {}
        () = stopped => {}
    }
    // Now read what the server has for us (bounded: 2 s of reading).
    let mut last = None;
    let drain = async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(mut b) = m {
                while let Some(Ok(f)) = codec::decode_frame(&mut b, u32::MAX) {
                    last = Some(f);
                }
            }
        }
    };
    let ended = tokio::time::timeout(Duration::from_secs(2), drain)
        .await
        .is_ok();
    let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
    r.flood_bytes_sent += sent;
    match (ended, last) {
        (true, Some(Frame::Error(e))) if e.code == asp_tokio::ErrorCode::OVERLOADED => {
            r.flood_overloaded += 1;
        }
        (true, _) => r.flood_cut_silently += 1,
        (false, _) => {} // still open: held back by TCP, as it should be
    }
}

fn opts_for(url: String, token: Option<String>) -> LoadOpts {
    LoadOpts {
        url,
        token,
        connections: 0,
        pipeline: 1,
        calls: 0,
        duration: None,
        check: false,
        size: 0,
        idle: 0,
        hold: Duration::ZERO,
        slow: 0,
        storm: 0,
        flood: 0,
    }
}
