//! Values, tool definitions, results and errors, translated between MCP (JSON) and ASP
//! (MessagePack). Both directions of the bridge use these, so one table decides each mapping.
//!
//! | MCP | ASP |
//! |---|---|
//! | JSON value | MessagePack value (objects as maps with string keys, SPEC §5.5) |
//! | base64 `data` / `blob` of image, audio and blob-resource content | `bin` (no base64 on ASP) |
//! | `Tool {name, description, inputSchema, …}` | TOOL_DEF `name`, `description`, `input_schema`; the rest (`title`, `outputSchema`, `annotations`, `icons`, `_meta`) in `annotations` |
//! | `CallToolResult` | COMPLETE `result` = `{content: [...], structuredContent?}`; `isError: true` → status `failed` |
//! | JSON-RPC error / transport failure | ERROR with the code of [`service_error`] |

use asp_tokio::asp_proto::frame::{RawValue, Status, Text, ToolDef, ToolOp};
use asp_tokio::{ErrorCode, ToolError};
use base64::Engine;
use bytes::Bytes;
use rmcp::model::{CallToolResult, Tool};
use rmcp::service::ServiceError;
use serde_json::{Map, Value};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Content fields that hold base64 in MCP and raw bytes on ASP.
fn binary_field(kind: &str) -> Option<&'static str> {
    match kind {
        "image" | "audio" => Some("data"),
        _ => None,
    }
}

/// A JSON value as MessagePack.
pub fn json_to_raw(v: &Value) -> RawValue {
    encode(&json_to_mp(v))
}

fn encode(v: &rmpv::Value) -> RawValue {
    let mut buf = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut buf, v);
    RawValue::new(Bytes::from(buf)).unwrap_or_else(|_| RawValue::nil())
}

fn json_to_mp(v: &Value) -> rmpv::Value {
    match v {
        Value::Null => rmpv::Value::Nil,
        Value::Bool(b) => rmpv::Value::Boolean(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                rmpv::Value::from(u)
            } else if let Some(i) = n.as_i64() {
                rmpv::Value::from(i)
            } else {
                rmpv::Value::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => rmpv::Value::from(s.as_str()),
        Value::Array(a) => rmpv::Value::Array(a.iter().map(json_to_mp).collect()),
        Value::Object(o) => rmpv::Value::Map(
            o.iter()
                .map(|(k, v)| (rmpv::Value::from(k.as_str()), json_to_mp(v)))
                .collect(),
        ),
    }
}

/// A MessagePack value as JSON: `bin` becomes a base64 string, map keys that are not strings
/// are written as their JSON text, extension types become `null`. `None` if the bytes are
/// not one MessagePack value.
pub fn raw_to_json(v: &RawValue) -> Option<Value> {
    let mut bytes: &[u8] = v.as_bytes();
    let mp = rmpv::decode::read_value(&mut bytes).ok()?;
    Some(mp_to_json(&mp))
}

fn mp_to_json(v: &rmpv::Value) -> Value {
    match v {
        rmpv::Value::Nil | rmpv::Value::Ext(..) => Value::Null,
        rmpv::Value::Boolean(b) => Value::Bool(*b),
        rmpv::Value::Integer(i) => i
            .as_u64()
            .map(Value::from)
            .or_else(|| i.as_i64().map(Value::from))
            .unwrap_or(Value::Null),
        rmpv::Value::F32(f) => serde_json::Number::from_f64(f64::from(*f))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        rmpv::Value::F64(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        rmpv::Value::String(s) => Value::String(s.as_str().map_or_else(
            || String::from_utf8_lossy(s.as_bytes()).into_owned(),
            str::to_owned,
        )),
        rmpv::Value::Binary(b) => Value::String(B64.encode(b)),
        rmpv::Value::Array(a) => Value::Array(a.iter().map(mp_to_json).collect()),
        rmpv::Value::Map(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        rmpv::Value::String(s) => s.as_str().unwrap_or_default().to_owned(),
                        other => mp_to_json(other).to_string(),
                    };
                    (key, mp_to_json(v))
                })
                .collect(),
        ),
    }
}

/// An MCP tool as an ASP TOOL_DEF(add).
pub fn tool_to_def(tool: &Tool) -> ToolDef {
    let mut extra = serde_json::to_value(tool)
        .ok()
        .and_then(|v| match v {
            Value::Object(o) => Some(o),
            _ => None,
        })
        .unwrap_or_default();
    extra.remove("name");
    extra.remove("description");
    let schema = extra.remove("inputSchema");
    ToolDef {
        op: ToolOp::Add,
        name: Text::from(tool.name.as_ref()),
        description: Text::from(tool.description.as_deref().unwrap_or("")),
        input_schema: schema.as_ref().map(json_to_raw),
        annotations: (!extra.is_empty()).then(|| json_to_raw(&Value::Object(extra))),
    }
}

/// An ASP TOOL_DEF as an MCP tool: `annotations` that look like the ones [`tool_to_def`]
/// writes are restored; other annotations go to `_meta["asp/annotations"]`.
pub fn def_to_tool(def: &ToolDef) -> Tool {
    let mut obj = Map::new();
    obj.insert("name".into(), Value::String(def.name.as_str().to_owned()));
    if !def.description.as_str().is_empty() {
        obj.insert(
            "description".into(),
            Value::String(def.description.as_str().to_owned()),
        );
    }
    let schema = def
        .input_schema
        .as_ref()
        .and_then(raw_to_json)
        .filter(Value::is_object)
        .unwrap_or_else(|| serde_json::json!({"type": "object"}));
    obj.insert("inputSchema".into(), schema);
    if let Some(Value::Object(ann)) = def.annotations.as_ref().and_then(raw_to_json) {
        let mut candidate = obj.clone();
        for (k, v) in &ann {
            candidate.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if let Ok(t) = serde_json::from_value::<Tool>(Value::Object(candidate)) {
            return t;
        }
        let mut meta = Map::new();
        meta.insert("asp/annotations".into(), Value::Object(ann));
        obj.insert("_meta".into(), Value::Object(meta));
    }
    serde_json::from_value(Value::Object(obj.clone())).unwrap_or_else(|_| {
        Tool::new(
            def.name.as_str().to_owned(),
            def.description.as_str().to_owned(),
            Map::new(),
        )
    })
}

/// An MCP tool result as the COMPLETE it ends with: status `failed` when `isError`, and the
/// result map `{content, structuredContent?}` with base64 payloads as `bin`.
pub fn result_to_complete(result: &CallToolResult) -> (Status, RawValue) {
    let mut map = Vec::new();
    let content = result
        .content
        .iter()
        .map(|c| {
            let v = serde_json::to_value(c).unwrap_or(Value::Null);
            content_to_mp(&v)
        })
        .collect();
    map.push((rmpv::Value::from("content"), rmpv::Value::Array(content)));
    if let Some(s) = &result.structured_content {
        map.push((rmpv::Value::from("structuredContent"), json_to_mp(s)));
    }
    let status = if result.is_error == Some(true) {
        Status::Failed
    } else {
        Status::Ok
    };
    (status, encode(&rmpv::Value::Map(map)))
}

/// One content block: base64 fields (`data` of image/audio, `blob` of an embedded resource)
/// decoded to `bin`.
fn content_to_mp(v: &Value) -> rmpv::Value {
    let Value::Object(o) = v else {
        return json_to_mp(v);
    };
    let kind = o.get("type").and_then(Value::as_str).unwrap_or("");
    let field = binary_field(kind);
    rmpv::Value::Map(
        o.iter()
            .map(|(k, val)| {
                let decoded = match (field, val) {
                    (Some(f), Value::String(s)) if f == k => B64.decode(s).ok(),
                    _ => None,
                };
                let out = match decoded {
                    Some(bytes) => rmpv::Value::Binary(bytes),
                    None if kind == "resource" && k == "resource" => resource_to_mp(val),
                    None => json_to_mp(val),
                };
                (rmpv::Value::from(k.as_str()), out)
            })
            .collect(),
    )
}

fn resource_to_mp(v: &Value) -> rmpv::Value {
    let Value::Object(o) = v else {
        return json_to_mp(v);
    };
    rmpv::Value::Map(
        o.iter()
            .map(|(k, val)| {
                let out = match (k.as_str(), val) {
                    ("blob", Value::String(s)) => B64
                        .decode(s)
                        .map(rmpv::Value::Binary)
                        .unwrap_or_else(|_| json_to_mp(val)),
                    _ => json_to_mp(val),
                };
                (rmpv::Value::from(k.as_str()), out)
            })
            .collect(),
    )
}

/// An ASP COMPLETE as an MCP tool result. A result in the shape [`result_to_complete`]
/// writes (`{content: [...]}`) is passed through (`bin` back to base64); any other value
/// becomes one text block (a string as is, anything else as JSON) and, if it is not a string,
/// also `structuredContent`; raw `bin` becomes an embedded blob resource.
pub fn complete_to_result(status: Status, result: Option<&RawValue>) -> CallToolResult {
    let is_error = status != Status::Ok;
    let mp = result.and_then(|r| {
        let mut b: &[u8] = r.as_bytes();
        rmpv::decode::read_value(&mut b).ok()
    });
    let json = build_result_json(mp.as_ref(), status);
    let mut out: CallToolResult = serde_json::from_value(json)
        .unwrap_or_else(|_| CallToolResult::error(vec![rmcp::model::ContentBlock::text("result")]));
    out.is_error = Some(is_error);
    out
}

fn build_result_json(mp: Option<&rmpv::Value>, status: Status) -> Value {
    let text = |s: String| serde_json::json!({"type": "text", "text": s});
    match mp {
        Some(rmpv::Value::Map(m))
            if m.iter().any(|(k, v)| {
                k.as_str() == Some("content") && matches!(v, rmpv::Value::Array(_))
            }) =>
        {
            mp_to_json(&rmpv::Value::Map(m.clone()))
        }
        Some(rmpv::Value::String(s)) => serde_json::json!({
            "content": [text(s.as_str().unwrap_or_default().to_owned())]
        }),
        Some(rmpv::Value::Binary(b)) => serde_json::json!({
            "content": [{"type": "resource", "resource": {
                "uri": "asp://result",
                "mimeType": "application/octet-stream",
                "blob": B64.encode(b),
            }}]
        }),
        Some(rmpv::Value::Nil) | None => {
            let msg = match status {
                Status::Ok => "",
                Status::Cancelled => "cancelled",
                Status::Failed => "failed",
            };
            serde_json::json!({ "content": if msg.is_empty() { vec![] } else { vec![text(msg.into())] } })
        }
        Some(other) => {
            let v = mp_to_json(other);
            serde_json::json!({"content": [text(v.to_string())], "structuredContent": v})
        }
    }
}

/// How a failed MCP exchange ends the ASP invocation (SPEC §12.2 codes): JSON-RPC errors by
/// code, a lost or broken MCP session as `UNAVAILABLE` (retryable: the bridge restarts it),
/// a timeout as `UPSTREAM_TIMEOUT`.
pub fn service_error(e: &ServiceError) -> ToolError {
    match e {
        ServiceError::McpError(err) => mcp_error(err.code.0, &err.message),
        ServiceError::Timeout { .. } => ToolError::Error {
            code: ErrorCode::UPSTREAM_TIMEOUT,
            message: "the MCP server did not answer in time".into(),
            retryable: true,
        },
        ServiceError::TransportClosed | ServiceError::TransportSend(_) => ToolError::Error {
            code: ErrorCode::UNAVAILABLE,
            message: format!("MCP server unavailable: {e}"),
            retryable: true,
        },
        other => ToolError::Error {
            code: ErrorCode::UNAVAILABLE,
            message: truncate(format!("MCP session failed: {other}")),
            retryable: true,
        },
    }
}

/// A JSON-RPC error code and message as an ASP error.
pub fn mcp_error(code: i32, message: &str) -> ToolError {
    let (asp, retryable) = match code {
        // Invalid params: MCP servers send it for arguments that fail the schema, and for an
        // unknown tool name (which the ASP core already answers with UNKNOWN_TOOL for tools
        // that are not in the set).
        -32602 => (ErrorCode::INVALID_ARGUMENTS, false),
        -32601 => (ErrorCode::UNKNOWN_TOOL, false),
        -32603 => (ErrorCode::INTERNAL, true),
        // -32001 is the request timeout of the TypeScript and Python SDKs.
        -32001 => (ErrorCode::UPSTREAM_TIMEOUT, true),
        _ => (ErrorCode::TOOL_FAILED, false),
    };
    ToolError::Error {
        code: asp,
        message: truncate(format!("MCP error {code}: {message}")),
        retryable,
    }
}

/// ERROR messages are at most 1024 bytes (SPEC §5.7).
pub fn truncate(mut s: String) -> String {
    if s.len() > 1024 {
        let mut cut = 1021;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::ContentBlock;

    #[test]
    fn json_round_trips_through_messagepack() {
        let v = serde_json::json!({"a": [1, -2, 3.5, "x", null, true], "b": {"c": "d"}});
        assert_eq!(raw_to_json(&json_to_raw(&v)), Some(v));
    }

    #[test]
    fn images_travel_as_bin_and_come_back_as_base64() {
        let png = vec![0x89, b'P', b'N', b'G', 0, 1, 2, 255];
        let result = CallToolResult::success(vec![
            ContentBlock::text("hi"),
            ContentBlock::image(B64.encode(&png), "image/png"),
        ]);
        let (status, raw) = result_to_complete(&result);
        assert_eq!(status, Status::Ok);
        let mut b: &[u8] = raw.as_bytes();
        let mp = rmpv::decode::read_value(&mut b).unwrap();
        let content = mp
            .as_map()
            .unwrap()
            .iter()
            .find(|(k, _)| k.as_str() == Some("content"))
            .unwrap()
            .1
            .as_array()
            .unwrap()
            .clone();
        let image = content[1].as_map().unwrap();
        let data = image
            .iter()
            .find(|(k, _)| k.as_str() == Some("data"))
            .unwrap();
        assert_eq!(data.1, rmpv::Value::Binary(png.clone()));
        let back = complete_to_result(status, Some(&raw));
        assert_eq!(back.is_error, Some(false));
        match &back.content[1] {
            ContentBlock::Image(i) => assert_eq!(B64.decode(&i.data).unwrap(), png),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tool_definitions_round_trip() {
        let schema =
            serde_json::json!({"type": "object", "properties": {"x": {"type": "integer"}}});
        let mut tool = Tool::new("t", "does t", schema.as_object().unwrap().clone());
        tool.title = Some("The T".into());
        let def = tool_to_def(&tool);
        assert_eq!(def.name.as_str(), "t");
        assert_eq!(
            raw_to_json(def.input_schema.as_ref().unwrap()),
            Some(schema)
        );
        let back = def_to_tool(&def);
        assert_eq!(back.title.as_deref(), Some("The T"));
        assert_eq!(back, tool);
    }

    #[test]
    fn plain_results_become_text_and_structured_content() {
        let r = complete_to_result(Status::Ok, Some(&RawValue::string("hello")));
        assert_eq!(r.content[0].as_text().unwrap().text, "hello");
        let v = serde_json::json!({"n": 3});
        let r = complete_to_result(Status::Failed, Some(&json_to_raw(&v)));
        assert_eq!(r.structured_content, Some(v));
        assert_eq!(r.is_error, Some(true));
    }

    #[test]
    fn error_codes_map() {
        let code = |e: ToolError| match e {
            ToolError::Error { code, .. } => code,
            _ => panic!(),
        };
        assert_eq!(code(mcp_error(-32602, "bad")), ErrorCode::INVALID_ARGUMENTS);
        assert_eq!(code(mcp_error(-32603, "x")), ErrorCode::INTERNAL);
        assert_eq!(code(mcp_error(-1, "x")), ErrorCode::TOOL_FAILED);
        assert_eq!(
            code(service_error(&ServiceError::TransportClosed)),
            ErrorCode::UNAVAILABLE
        );
        assert!(truncate("é".repeat(600)).len() <= 1024);
    }
}
