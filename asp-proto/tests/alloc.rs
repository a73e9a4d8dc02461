//! Decoding allocates nothing: STREAM and INVOKE fields are `Bytes` slices of the input
//! (`codec` module docs). Measured with a counting global allocator; this file is its own
//! test binary, so the allocator affects nothing else.
//!
//! Allocations are counted only on a thread while it has counting switched on (a
//! thread-local flag), so tests running in parallel do not disturb each other.
//!
//! Note on `bytes`: a `Bytes` that still owns a plain `Vec` (`Bytes::from(vec)`, or
//! `BytesMut::freeze` of a buffer that was never split) allocates one small shared header
//! the first time it is sliced or cloned. That is once per *buffer*, not per frame, and a
//! buffer split off a `BytesMut` (as a reader does: `buf.split().freeze()`) is already
//! shared. `vec_backed_buffer_costs_one_allocation_per_buffer` pins this down.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use asp_proto::codec::{self, decode_frame};
use asp_proto::frame::{Invoke, Stream};
use asp_proto::{Decoder, Frame, RawValue, RequestId};
use bytes::{Bytes, BytesMut};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the allocator may run during thread teardown, after the TLS is gone.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: every method forwards to `System` unchanged; the counting touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result and the number of allocations it made on this thread.
fn allocations<T>(f: impl FnOnce() -> T) -> (T, usize) {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|on| on.set(true));
    let out = f();
    COUNTING.with(|on| on.set(false));
    (out, COUNT.with(Cell::get))
}

/// A `Bytes` in the state a reader produces (split off a `BytesMut`, so already shared).
fn shared(b: BytesMut) -> Bytes {
    let mut b = b;
    b.split().freeze()
}

fn stream(text: bool, seq: u32) -> Frame {
    Frame::Stream(Stream {
        id: RequestId(1),
        data: Bytes::from_static(b"0123456789abcdef0123456789abcdef"), // 32 bytes
        text,
        seq,
        fin: false,
    })
}

fn invoke() -> Frame {
    // args: {"q": "rust", "n": 10}; meta: ["trace", 42]
    let args = [
        0x82, 0xa1, b'q', 0xa4, b'r', b'u', b's', b't', 0xa1, b'n', 0x0a,
    ];
    let meta = [0x92, 0xa5, b't', b'r', b'a', b'c', b'e', 0x2a];
    Frame::Invoke(Invoke {
        id: RequestId(7),
        tool: "web_search".into(),
        args: Some(RawValue::new(Bytes::copy_from_slice(&args)).expect("valid")),
        deadline_ms: 30_000,
        meta: Some(RawValue::new(Bytes::copy_from_slice(&meta)).expect("valid")),
    })
}

#[test]
fn counter_sees_allocations() {
    // The harness itself works: an allocation inside the region is counted.
    let (v, n) = allocations(|| Vec::<u8>::with_capacity(10));
    assert_eq!(n, 1);
    drop(v);
}

#[test]
fn stream_decode_allocates_nothing() {
    for text in [true, false] {
        let f = stream(text, 3);
        let mut b = BytesMut::new();
        codec::encode(&f, &mut b);
        let buf = shared(b);

        let ((got, rest_empty), n) = allocations(|| {
            let mut m = buf.clone();
            let got = decode_frame(&mut m, 1 << 20);
            (got, m.is_empty())
        });
        assert_eq!(n, 0, "STREAM (text: {text}) decode allocated {n} times");
        assert_eq!(got, Some(Ok(f)));
        assert!(rest_empty);

        // The data is a slice of the input, not a copy.
        let Some(Ok(Frame::Stream(s))) = decode_frame(&mut buf.clone(), 1 << 20) else {
            panic!("STREAM")
        };
        let inside = buf.as_ptr_range();
        assert!(inside.contains(&s.data.as_ptr()), "data was copied");
    }
}

#[test]
fn invoke_decode_allocates_nothing() {
    let f = invoke();
    let mut b = BytesMut::new();
    codec::encode(&f, &mut b);
    let buf = shared(b);
    let (got, n) = allocations(|| {
        let got = decode_frame(&mut buf.clone(), 1 << 20);
        // Reading the fields does not allocate either.
        if let Some(Ok(Frame::Invoke(i))) = &got {
            assert_eq!(i.tool.as_str(), "web_search");
        }
        got
    });
    assert_eq!(n, 0, "INVOKE decode allocated {n} times");
    assert_eq!(got, Some(Ok(f)));
}

#[test]
fn decoder_batch_of_1000_streams_allocates_nothing() {
    let mut b = BytesMut::new();
    for seq in 0..1000 {
        codec::encode(&stream(seq % 2 == 0, seq), &mut b);
    }
    let buf = shared(b);
    let mut dec = Decoder::new(1 << 20);

    // Feeding whole frames as `Bytes` into an empty decoder takes them as they are.
    let ((), n_feed) = allocations(|| dec.feed(buf.clone()));
    assert_eq!(n_feed, 0, "feed allocated");

    let ((count, all_ok), n) = allocations(|| {
        let mut count = 0u32;
        let mut all_ok = true;
        while let Some(r) = dec.next_frame() {
            all_ok &= matches!(r, Ok(Frame::Stream(Stream { seq, data, .. })) if seq == count && data.len() == 32);
            count += 1;
        }
        (count, all_ok)
    });
    assert_eq!(n, 0, "decoding 1000 STREAM frames allocated {n} times");
    assert_eq!(count, 1000);
    assert!(all_ok);
    assert_eq!(dec.buffered(), 0);
}

#[test]
fn vec_backed_buffer_costs_one_allocation_per_buffer() {
    // A `Bytes` that still owns its `Vec` is promoted to shared storage by `bytes` on the
    // first slice: one allocation for the whole batch, none per frame.
    let mut b = BytesMut::new();
    for seq in 0..100 {
        codec::encode(&stream(true, seq), &mut b);
    }
    let buf = Bytes::from(b.to_vec());
    let (count, n) = allocations(|| {
        let mut m = buf;
        let mut count = 0;
        while let Some(Ok(_)) = decode_frame(&mut m, 1 << 20) {
            count += 1;
        }
        count
    });
    assert_eq!(count, 100);
    assert!(
        n <= 1,
        "{n} allocations for one Vec-backed buffer of 100 frames"
    );
}

#[test]
fn encode_into_a_reserved_buffer_allocates_nothing() {
    // Not required by the codec docs, but cheap to keep: encoding writes into the caller's
    // buffer and needs no scratch memory.
    let frames = [stream(true, 0), stream(false, 1), invoke(), Frame::PING];
    let mut b = BytesMut::with_capacity(4096);
    let ((), n) = allocations(|| {
        for f in &frames {
            codec::encode(f, &mut b);
            let _ = codec::encoded_len(f);
        }
    });
    assert_eq!(n, 0, "encode allocated {n} times");
}
