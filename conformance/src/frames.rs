//! Frame vectors (README "Frame vectors"): decode, decode byte by byte, re-encode.

use asp_proto::codec;
use asp_proto::{Bytes, Decoder};
use bytes::BytesMut;
use serde_json::Value;

use crate::hex;
use crate::model::{self, frame_type_by_name, normalize, Obj};

/// Runs one frame vector.
pub fn run(t: &Value) -> Result<(), String> {
    let wire = hex::parse_plain(t["hex"].as_str().ok_or("no hex")?)?;
    let fr = &t["frame"];
    let ty_name = fr["type"].as_str().ok_or("no frame.type")?;
    let ty = frame_type_by_name(ty_name).ok_or_else(|| format!("unknown type {ty_name}"))?;
    let id = model::uint_of(&fr["id"])
        .and_then(|n| u16::try_from(n).ok())
        .ok_or("bad frame.id")?;
    let empty = Obj::new();
    let fields = fr["fields"].as_object().unwrap_or(&empty);

    // 1. One whole frame, as in a WebSocket message.
    let mut buf = Bytes::from(wire.clone());
    let frame = match codec::decode_frame(&mut buf, u32::MAX) {
        Some(Ok(f)) => f,
        Some(Err(e)) => return Err(format!("decode_frame rejected it: {} ({e})", name(&e))),
        None => return Err("decode_frame: nothing decoded".into()),
    };
    if !buf.is_empty() {
        return Err(format!("{} bytes left after the frame", buf.len()));
    }
    if frame.frame_type() != ty || frame.request_id().0 != id {
        return Err(format!(
            "decoded {} id {}, expected {ty_name} id {id}",
            frame.frame_type().name(),
            frame.request_id().0
        ));
    }
    let got = normalize(&model::frame_fields(&frame));
    let want = normalize(fields);
    if got != want {
        return Err(format!(
            "fields differ: decoded {}, expected {}",
            Value::Object(got),
            Value::Object(want)
        ));
    }

    // 2. The same bytes through the stream decoder, one byte at a time.
    let mut dec = Decoder::new(u32::MAX);
    let mut streamed = Vec::new();
    for b in &wire {
        dec.feed_slice(&[*b]);
        while let Some(r) = dec.next_frame() {
            streamed.push(r);
        }
    }
    match streamed.as_slice() {
        [Ok(f)] if *f == frame => {}
        other => return Err(format!("Decoder (byte by byte) gave {other:?}")),
    }

    // 3. Encoder vectors: the JSON form encodes to exactly these bytes.
    if t["encode"].as_bool() == Some(true) {
        let built = model::frame_from_json(ty, id, fields)?;
        let mut out = BytesMut::new();
        codec::encode(&built, &mut out);
        if out[..] != wire[..] {
            return Err(format!("encode gave {}", hex::format(&out)));
        }
    }
    Ok(())
}

fn name(e: &asp_proto::DecodeError) -> String {
    e.code()
        .name()
        .map_or_else(|| format!("{:?}", e.code()), str::to_owned)
}
