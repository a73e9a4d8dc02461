//! Memory cost of a connection: `size_of::<Connection>()`, the heap an idle connection
//! keeps after the handshake, and the heap each in-flight invocation adds, measured with a
//! counting global allocator (this file is its own test binary, so the allocator affects
//! nothing else). Counting is per thread, so parallel tests do not disturb each other.
//!
//! Run with `--nocapture` to see the numbers.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use asp_proto::{Config, Connection, Instant, ServerParams};
use bytes::BytesMut;

struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    let _ = ON.try_with(|on| {
        if on.get() {
            let _ = LIVE.try_with(|l| l.set(l.get() + n));
        }
    });
}

// SAFETY: every method forwards to `System` unchanged; the counting touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.with(|l| l.get())
}

fn counting<T>(f: impl FnOnce() -> T) -> T {
    ON.with(|on| on.set(true));
    let r = f();
    ON.with(|on| on.set(false));
    r
}

fn config() -> Config {
    let mut config = Config::default();
    config.heartbeat = None;
    config.agent = None;
    config
}

/// Moves bytes both ways (as WebSocket messages, copied into fresh buffers the way a
/// transport would read them) and drops every event, until both sides are quiet.
fn shuttle(client: &mut Connection, server: &mut Connection, now: Instant) {
    let mut buf = BytesMut::new();
    loop {
        let mut moved = false;
        while client.poll_transmit(&mut buf) > 0 {
            let msg = bytes::Bytes::copy_from_slice(&buf.split());
            server.handle_message(now, msg);
            moved = true;
        }
        while server.poll_transmit(&mut buf) > 0 {
            let msg = bytes::Bytes::copy_from_slice(&buf.split());
            client.handle_message(now, msg);
            moved = true;
        }
        while let Some(e) = client.poll_event() {
            drop(e);
            moved = true;
        }
        while let Some(e) = server.poll_event() {
            drop(e);
            moved = true;
        }
        if !moved {
            break;
        }
    }
}

fn connected_pair(now: Instant) -> (Connection, Connection) {
    connected_pair_with(now, 1)
}

fn connected_pair_with(now: Instant, tools: usize) -> (Connection, Connection) {
    let mut c = Connection::client(config(), now);
    let mut s = Connection::server(config(), ServerParams::new("c1"), now);
    for name in ["echo", "t1", "t2", "t3"].into_iter().take(tools) {
        s.add_tool(asp_proto::frame::ToolDef {
            op: asp_proto::frame::ToolOp::Add,
            name: name.into(),
            description: "".into(),
            input_schema: None,
            annotations: None,
        })
        .unwrap();
    }
    shuttle(&mut c, &mut s, now);
    (c, s)
}

#[test]
fn idle_connection_is_at_most_1_kib() {
    let size = std::mem::size_of::<Connection>();
    println!("size_of::<Connection>() = {size} bytes");
    assert!(size <= 1024, "Connection is {size} bytes");
}

#[test]
fn heap_of_idle_connections_and_of_invocations() {
    let now = Instant::ZERO;
    // Idle client: everything but the client is dropped.
    let base = live();
    let client = counting(|| {
        let (c, s) = connected_pair(now);
        drop(s);
        c
    });
    let idle_client = live() - base;
    // Idle server.
    let base = live();
    let server = counting(|| {
        let (c, s) = connected_pair(now);
        drop(c);
        s
    });
    let idle_server = live() - base;
    drop((client, server));

    // N invocations in flight. Both sides together…
    const N: usize = 100;
    let (mut c, mut s) = connected_pair(now);
    let pair_growth = counting(|| {
        let b = live();
        for _ in 0..N {
            c.invoke("echo", None, Default::default()).unwrap();
        }
        shuttle(&mut c, &mut s, now);
        assert_eq!(c.in_flight(), N);
        assert_eq!(s.in_flight(), N);
        live() - b
    });
    // …and the client alone (INVOKEs sent, never delivered).
    let (mut c2, _s2) = connected_pair(now);
    let client_growth = counting(|| {
        let b = live();
        for _ in 0..N {
            c2.invoke("echo", None, Default::default()).unwrap();
        }
        let mut buf = BytesMut::new();
        while c2.poll_transmit(&mut buf) > 0 {
            buf.clear();
        }
        drop(buf);
        live() - b
    });
    // Steady state: one INVOKE at a time, so the transmit queue never grows; this is the
    // cost of the exchange entries themselves.
    let (mut c3, mut s3) = connected_pair(now);
    let steady = counting(|| {
        let b = live();
        for _ in 0..N {
            c3.invoke("echo", None, Default::default()).unwrap();
            shuttle(&mut c3, &mut s3, now);
        }
        live() - b
    });
    // Idle without tools.
    let base = live();
    let bare = counting(|| {
        let (c, s) = connected_pair_with(now, 0);
        drop(s);
        c
    });
    let idle_bare = live() - base;
    drop(bare);
    let per_pair = pair_growth as f64 / N as f64;
    let per_client = client_growth as f64 / N as f64;
    println!("idle client after handshake: {idle_client} heap bytes");
    println!("idle server after handshake: {idle_server} heap bytes");
    println!(
        "{N} invocations in flight: client {per_client:.0} B/invocation, \
         server {:.0} B/invocation",
        per_pair - per_client
    );
    println!(
        "steady state (one INVOKE queued at a time): client+server {:.0} B/invocation",
        steady as f64 / N as f64
    );
    println!("idle client with no tools: {idle_bare} heap bytes");
    // Generous bounds that catch a regression (e.g. a per-invocation buffer).
    assert!(
        idle_client < 8 << 10,
        "idle client keeps {idle_client} bytes"
    );
    assert!(
        idle_server < 8 << 10,
        "idle server keeps {idle_server} bytes"
    );
    assert!(per_pair < 1024.0, "{per_pair} bytes per invocation");
}
