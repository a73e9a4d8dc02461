//! Output: stdout writing that survives a closed pipe, values as JSON or hex, tools and
//! metrics as text or JSON.

use std::fmt::Write as _;
use std::io::Write;

use asp_tokio::{Metrics, RawValue, Status, ToolDef};
use serde_json::{Map, Value};

use crate::EXIT_USAGE;

/// Writes to stdout and flushes. A closed pipe (`asp … | head`) ends the program quietly.
pub(crate) fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    if o.write_all(s.as_bytes()).and_then(|()| o.flush()).is_err() {
        std::process::exit(141);
    }
}

pub(crate) fn outln(s: &str) {
    out(&format!("{s}\n"));
}

pub(crate) fn emit(v: &Value) {
    outln(&v.to_string());
}

/// Prints `error: …` and returns the usage/connection exit status.
pub(crate) fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("error: {msg}");
    EXIT_USAGE
}

pub(crate) fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// A MessagePack value as JSON, or as hex when JSON cannot represent it (binary, non-string
/// map keys, extension types).
pub(crate) enum Shown {
    Json(Value),
    Hex(String),
}

pub(crate) fn show(v: &RawValue) -> Shown {
    match asp_tokio::from_value::<Value>(v) {
        Ok(j) => Shown::Json(j),
        Err(_) => Shown::Hex(hex(v.as_bytes())),
    }
}

/// Puts `key: value` into a JSON object, or `key_msgpack_hex: "…"` when not representable.
pub(crate) fn put_value(obj: &mut Map<String, Value>, key: &str, v: Option<&RawValue>) {
    match v.map(show) {
        None => {
            obj.insert(key.to_owned(), Value::Null);
        }
        Some(Shown::Json(j)) => {
            obj.insert(key.to_owned(), j);
        }
        Some(Shown::Hex(h)) => {
            obj.insert(format!("{key}_msgpack_hex"), Value::String(h));
        }
    }
}

/// A value for a line of text.
pub(crate) fn show_plain(v: &RawValue) -> String {
    match show(v) {
        Shown::Json(j) => j.to_string(),
        Shown::Hex(h) => format!("(MessagePack, not representable as JSON) {h}"),
    }
}

pub(crate) fn status_name(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Cancelled => "cancelled",
        Status::Failed => "failed",
    }
}

pub(crate) fn metrics_fields(m: &Metrics) -> Vec<(&'static str, u64)> {
    [
        ("wall_us", m.wall_us),
        ("cpu_us", m.cpu_us),
        ("input_tokens", m.input_tokens),
        ("output_tokens", m.output_tokens),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect()
}

pub(crate) fn tool_json(t: &ToolDef) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), t.name.as_str().into());
    o.insert("description".into(), t.description.as_str().into());
    put_value(&mut o, "input_schema", t.input_schema.as_ref());
    if t.annotations.is_some() {
        put_value(&mut o, "annotations", t.annotations.as_ref());
    }
    Value::Object(o)
}

pub(crate) fn tool_plain(prefix: &str, t: &ToolDef) -> String {
    let mut s = format!("{prefix}{}", t.name.as_str());
    if !t.description.as_str().is_empty() {
        let _ = write!(s, " — {}", t.description.as_str());
    }
    if let Some(schema) = &t.input_schema {
        let _ = write!(s, "\n    input: {}", show_plain(schema));
    }
    if let Some(a) = &t.annotations {
        let _ = write!(s, "\n    annotations: {}", show_plain(a));
    }
    s
}
