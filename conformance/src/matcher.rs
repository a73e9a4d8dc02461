//! Comparing what an implementation sent and reported with what a vector expects
//! (README "Matching").

use asp_proto::Frame;
use serde_json::Value;

use crate::hex::Captures;
use crate::model::{self, is_wild, normalize, Obj};

/// A frame as sent, decoded: type name, id and normalized fields.
#[derive(Clone, Debug)]
pub struct Sent {
    /// SPEC type name.
    pub ty: &'static str,
    /// Header request id.
    pub id: u16,
    /// Normalized fields.
    pub fields: Obj,
    /// The fields as sent, defaults included (for an expected frame's `present`).
    pub raw: Obj,
}

impl Sent {
    /// From a decoded frame.
    pub fn of(f: &Frame) -> Sent {
        Sent {
            ty: f.frame_type().name(),
            id: f.request_id().0,
            fields: normalize(&model::frame_fields(f)),
            raw: model::frame_fields(f),
        }
    }
}

impl std::fmt::Display for Sent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} id {} {}",
            self.ty,
            self.id,
            Value::Object(self.fields.clone())
        )
    }
}

/// Does `actual` match `expected` (exact, `"*"` any)?
fn value_matches(expected: &Value, actual: &Value) -> bool {
    if is_wild(expected) {
        return true;
    }
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            e.len() == a.len()
                && e.iter()
                    .all(|(k, ev)| a.get(k).is_some_and(|av| value_matches(ev, av)))
        }
        _ => expected == actual,
    }
}

/// Matches a request id: a number, or `"$name"` (captured on first use, then compared).
pub fn id_matches(expected: &Value, actual: u16, caps: &mut Captures) -> bool {
    match expected {
        Value::String(s) if s.starts_with('$') => match caps.get(s) {
            Some(v) => *v == actual,
            None => {
                caps.insert(s.clone(), actual);
                true
            }
        },
        Value::String(s) if s == "*" => true,
        v => model::uint_of(v) == Some(u64::from(actual)),
    }
}

/// Does one sent frame match one expected frame object? Binds captures on success.
pub fn frame_matches(exp: &Value, sent: &Sent, caps: &mut Captures) -> Result<(), String> {
    let ty = exp.get("type").and_then(Value::as_str).unwrap_or("?");
    if ty != sent.ty {
        return Err(format!("expected {ty}, got {sent}"));
    }
    let mut trial = caps.clone();
    if !id_matches(exp.get("id").unwrap_or(&Value::Null), sent.id, &mut trial) {
        return Err(format!(
            "expected {ty} id {}, got {sent}",
            exp.get("id").unwrap_or(&Value::Null)
        ));
    }
    let empty = Obj::new();
    let fields = normalize(
        exp.get("fields")
            .and_then(Value::as_object)
            .unwrap_or(&empty),
    );
    let may = normalize(exp.get("may").and_then(Value::as_object).unwrap_or(&empty));
    for (k, ev) in &fields {
        match sent.fields.get(k) {
            None => return Err(format!("{ty}: field {k} missing in {sent}")),
            Some(av) if !value_matches(ev, av) => {
                return Err(format!("{ty}: field {k}: expected {ev}, got {sent}"))
            }
            _ => {}
        }
    }
    for (k, av) in &sent.fields {
        if fields.contains_key(k) {
            continue;
        }
        match may.get(k) {
            Some(mv) if value_matches(mv, av) => {}
            Some(mv) => {
                return Err(format!(
                    "{ty}: field {k}: expected {mv} or absent, got {sent}"
                ))
            }
            None => return Err(format!("{ty}: unexpected field {k} in {sent}")),
        }
    }
    // `present`: fields (`a` or `a.b`) that must be on the wire even when they equal the
    // SPEC default, which the comparison above treats as absent (SPEC §5.1: a server's HELLO
    // announces what is in force, defaults included).
    for p in exp
        .get("present")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let mut at = Some(&sent.raw);
        let mut found = None;
        for part in p.split('.') {
            found = at.and_then(|o| o.get(part));
            at = found.and_then(Value::as_object);
        }
        if found.is_none() {
            return Err(format!(
                "{ty}: {p} not sent (it must be, even at its default): {sent}"
            ));
        }
    }
    *caps = trial;
    Ok(())
}

fn is_optional(exp: &Value) -> bool {
    exp.get("optional").and_then(Value::as_bool) == Some(true)
}

/// Matches the frames sent during one step against the step's `transmit` list: frames in
/// order, `{"unordered": [...]}` groups in any order among themselves, `optional` frames
/// may be missing; nothing else may be sent.
pub fn transmit_matches(
    expected: &[Value],
    sent: &[Sent],
    caps: &mut Captures,
) -> Result<(), String> {
    let mut i = 0;
    for exp in expected {
        if let Some(group) = exp.get("unordered").and_then(Value::as_array) {
            let n = group.len();
            let slice = sent.get(i..i + n).ok_or_else(|| {
                format!(
                    "expected {n} frames in any order, got {}",
                    sent.len().saturating_sub(i)
                )
            })?;
            let mut used = vec![false; n];
            for g in group {
                let mut found = false;
                for (j, s) in slice.iter().enumerate() {
                    if used.get(j).copied().unwrap_or(true) {
                        continue;
                    }
                    if frame_matches(g, s, caps).is_ok() {
                        if let Some(u) = used.get_mut(j) {
                            *u = true;
                        }
                        found = true;
                        break;
                    }
                }
                if !found {
                    let got: Vec<String> = slice.iter().map(ToString::to_string).collect();
                    return Err(format!("no frame matches {} among [{}]", g, got.join("; ")));
                }
            }
            i += n;
            continue;
        }
        match sent.get(i) {
            Some(s) => match frame_matches(exp, s, caps) {
                Ok(()) => i += 1,
                Err(_) if is_optional(exp) => {}
                Err(e) => return Err(e),
            },
            None if is_optional(exp) => {}
            None => {
                return Err(format!(
                    "expected {} id {}, nothing more was sent",
                    exp.get("type").and_then(Value::as_str).unwrap_or("?"),
                    exp.get("id").unwrap_or(&Value::Null)
                ))
            }
        }
    }
    if let Some(extra) = sent.get(i..).filter(|r| !r.is_empty()) {
        let got: Vec<String> = extra.iter().map(ToString::to_string).collect();
        return Err(format!("unexpected frames sent: {}", got.join("; ")));
    }
    Ok(())
}

/// Number of frames a `transmit` list requires at least (live mode reads that many).
pub fn required_count(expected: &[Value]) -> usize {
    expected
        .iter()
        .map(|e| match e.get("unordered").and_then(Value::as_array) {
            Some(g) => g.len(),
            None if is_optional(e) => 0,
            None => 1,
        })
        .sum()
}

fn event_value_matches(key: &str, expected: &Value, actual: &Value, caps: &mut Captures) -> bool {
    if key == "id" {
        return match model::uint_of(actual).and_then(|n| u16::try_from(n).ok()) {
            Some(a) => id_matches(expected, a, caps),
            None => false,
        };
    }
    if key == "code" {
        return is_wild(expected) || model::code_of(expected) == model::code_of(actual);
    }
    value_matches(expected, actual)
}

/// Matches reported events against a step's `events`: the same number, in order; each
/// expected event's keys must match (other keys of the actual event are not compared).
pub fn events_match(
    expected: &[Value],
    actual: &[Value],
    caps: &mut Captures,
) -> Result<(), String> {
    let show = |v: &[Value]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if expected.len() != actual.len() {
        return Err(format!(
            "expected events [{}], got [{}]",
            show(expected),
            show(actual)
        ));
    }
    for (e, a) in expected.iter().zip(actual) {
        let (Some(eo), Some(ao)) = (e.as_object(), a.as_object()) else {
            return Err(format!("bad event {e}"));
        };
        for (k, ev) in eo {
            let ok = ao
                .get(k)
                .is_some_and(|av| event_value_matches(k, ev, av, caps));
            if !ok {
                return Err(format!("event {e}: {k} differs in {a}"));
            }
        }
    }
    Ok(())
}
