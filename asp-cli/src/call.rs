//! `asp call`, and the answers to server questions (REQUEST, SPEC §8).

use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use asp_tokio::{Completion, Error, InvokeOptions, RawValue, Reply, ReplyStatus, Request, Status};
use futures::StreamExt;
use serde_json::{json, Map, Value};

use crate::connect::{close, connect};
use crate::interrupt::Interrupts;
use crate::output::{
    emit, fail, hex, metrics_fields, out, outln, put_value, show_plain, status_name,
};
use crate::{Global, EXIT_INTERRUPTED, EXIT_OK, EXIT_OUTCOME};

pub(crate) struct CallOpts {
    pub(crate) url: String,
    pub(crate) tool: String,
    pub(crate) args: Option<String>,
    pub(crate) args_file: Option<PathBuf>,
    pub(crate) out: Option<PathBuf>,
    pub(crate) answer: Option<String>,
    pub(crate) deadline_ms: Option<u32>,
}

/// JSON text → MessagePack.
pub(crate) fn json_to_msgpack(text: &str, what: &str) -> Result<RawValue, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("{what} is not valid JSON: {e}"))?;
    asp_tokio::to_value(&v).map_err(|e| format!("{what}: {e}"))
}

/// `--answer`: JSON if it parses, else the text as a string.
pub(crate) fn parse_answer(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

pub(crate) async fn call(g: &Global, o: CallOpts) -> i32 {
    let mut stdin_used = false;
    let args = match (&o.args, &o.args_file) {
        (Some(a), _) => Some(json_to_msgpack(a, "--args")),
        (None, Some(path)) => {
            let mut text = String::new();
            let read = if path.as_os_str() == "-" {
                stdin_used = true;
                std::io::stdin().read_to_string(&mut text).map(|_| ())
            } else {
                std::fs::read_to_string(path).map(|t| text = t)
            };
            match read {
                Ok(()) => Some(json_to_msgpack(
                    &text,
                    &format!("--args-file {}", path.display()),
                )),
                Err(e) => return fail(format!("cannot read {}: {e}", path.display())),
            }
        }
        (None, None) => None,
    };
    let args = match args.transpose() {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let mut file = match &o.out {
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Some((p.clone(), std::io::BufWriter::new(f), 0u64)),
            Err(e) => return fail(format!("cannot create {}: {e}", p.display())),
        },
        None => None,
    };
    let mode = if let Some(a) = &o.answer {
        AnswerMode::Fixed(parse_answer(a))
    } else if stdin_used {
        AnswerMode::Decline("stdin was read for --args-file -")
    } else if std::io::stdin().is_terminal() {
        AnswerMode::Terminal
    } else {
        AnswerMode::Decline("stdin is not a terminal")
    };
    let asker = Arc::new(Asker {
        mode,
        json: g.json,
        prompt: tokio::sync::Mutex::new(()),
    });

    // Listen for Ctrl-C before anything is sent, so that it always means INTERRUPT.
    let mut sig = match Interrupts::new() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let client = tokio::select! {
        c = connect(g, &o.url, Some(asker)) => match c {
            Ok(c) => c,
            Err(e) => return fail(e),
        },
        () = sig.recv() => return EXIT_INTERRUPTED,
    };
    let opts = InvokeOptions::default().deadline_ms(o.deadline_ms.unwrap_or(0));
    let mut inv = match client.invoke_raw(&o.tool, args, opts) {
        Ok(i) => i,
        Err(e) => return fail(format!("cannot invoke {}: {e}", o.tool)),
    };

    let mut at_line_start = true;
    let mut interrupted = false;
    loop {
        let chunk = tokio::select! {
            c = inv.next() => c,
            () = sig.recv() => {
                if interrupted {
                    eprintln!("stopped without waiting for the end");
                    return EXIT_INTERRUPTED;
                }
                interrupted = true;
                inv.interrupt();
                let nl = if at_line_start { "" } else { "\n" };
                eprintln!(
                    "{nl}interrupt: sent INTERRUPT, waiting for the cancelled COMPLETE \
                     (Ctrl-C again to quit at once)"
                );
                continue;
            }
        };
        let Some(chunk) = chunk else { break };
        let fin = chunk.fin;
        match (chunk.as_str(), &mut file) {
            (Some(text), _) => {
                if g.json {
                    let mut v = json!({"type": "chunk", "text": text});
                    if fin {
                        v["fin"] = true.into();
                    }
                    emit(&v);
                } else {
                    out(text);
                    if !text.is_empty() {
                        at_line_start = text.ends_with('\n');
                    }
                }
            }
            (None, Some((path, w, n))) => {
                if let Err(e) = w.write_all(&chunk.data) {
                    return fail(format!("cannot write {}: {e}", path.display()));
                }
                *n += chunk.data.len() as u64;
                if g.json {
                    let mut v = json!({
                        "type": "chunk",
                        "bytes": chunk.data.len(),
                        "file": path.display().to_string(),
                    });
                    if fin {
                        v["fin"] = true.into();
                    }
                    emit(&v);
                }
            }
            (None, None) => {
                if g.json {
                    let mut v = json!({"type": "chunk", "hex": hex(&chunk.data)});
                    if fin {
                        v["fin"] = true.into();
                    }
                    emit(&v);
                } else if !chunk.data.is_empty() {
                    if !at_line_start {
                        out("\n");
                    }
                    outln(&hex(&chunk.data));
                    at_line_start = true;
                }
            }
        }
    }
    let done = inv.completion().await;
    if !g.json && !at_line_start {
        out("\n");
    }
    if let Some((path, mut w, n)) = file {
        if let Err(e) = w.flush() {
            return fail(format!("cannot write {}: {e}", path.display()));
        }
        if !g.json {
            eprintln!("wrote {n} bytes of binary output to {}", path.display());
        }
    }
    let code = match done {
        Ok(c) => {
            print_completion(g, &c);
            if c.status == Status::Ok {
                EXIT_OK
            } else {
                EXIT_OUTCOME
            }
        }
        Err(Error::Remote(e)) => {
            let code_name = code_name(e.code);
            let message = e.message.as_ref().map(|m| m.as_str().to_owned());
            if g.json {
                emit(&json!({
                    "type": "error",
                    "code": code_name,
                    "code_num": e.code.0,
                    "message": message,
                    "retryable": e.retryable,
                }));
            } else {
                let mut s = format!("error: {}", remote_error_text(&e));
                if e.code == asp_tokio::ErrorCode::UNKNOWN_TOOL {
                    let mut names: Vec<String> =
                        client.tools().iter().map(|t| t.name.to_string()).collect();
                    names.sort();
                    let _ = write!(s, " — the server offers: {}", names.join(", "));
                }
                eprintln!("{s}");
            }
            EXIT_OUTCOME
        }
        Err(Error::Closed(r)) => fail(format!(
            "the connection closed before the invocation ended: {r}"
        )),
        Err(e) => fail(e),
    };
    close(&client).await;
    code
}

/// An error code's registry name, or `APPLICATION_ERROR_0x…` for codes SPEC §12.2 does not
/// define.
pub(crate) fn code_name(code: asp_tokio::ErrorCode) -> String {
    code.name().map_or_else(
        || format!("APPLICATION_ERROR_0x{:02x}", code.0),
        str::to_owned,
    )
}

/// `the server answered ERROR NAME (0x..): message`.
pub(crate) fn remote_error_text(e: &asp_tokio::asp_proto::frame::ErrorFrame) -> String {
    let mut s = format!(
        "the server answered ERROR {} (0x{:02x})",
        code_name(e.code),
        e.code.0
    );
    if let Some(m) = &e.message {
        let _ = write!(s, ": {m}");
    }
    if e.retryable {
        s.push_str(" (retryable)");
    }
    s
}

pub(crate) fn print_completion(g: &Global, c: &Completion) {
    if g.json {
        let mut o = Map::new();
        o.insert("type".into(), "complete".into());
        o.insert("status".into(), status_name(c.status).into());
        put_value(&mut o, "result", c.result.as_ref());
        let metrics: Map<String, Value> = metrics_fields(&c.metrics)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect();
        o.insert("metrics".into(), Value::Object(metrics));
        emit(&Value::Object(o));
        return;
    }
    outln(&format!("status: {}", status_name(c.status)));
    if let Some(r) = &c.result {
        outln(&format!("result: {}", show_plain(r)));
    }
    let m = metrics_fields(&c.metrics);
    if !m.is_empty() {
        let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
        outln(&format!("metrics: {}", parts.join(" ")));
    }
}

/// How server questions (REQUEST, SPEC §8) are answered.
pub(crate) enum AnswerMode {
    /// `--answer`.
    Fixed(Value),
    /// Prompt on the terminal.
    Terminal,
    /// Decline, for this reason.
    Decline(&'static str),
}

pub(crate) struct Asker {
    mode: AnswerMode,
    json: bool,
    /// One prompt at a time.
    prompt: tokio::sync::Mutex<()>,
}

impl Asker {
    pub(crate) async fn answer(&self, req: Request) -> Reply {
        let kind = req.kind.as_str().to_owned();
        let mut report = Map::new();
        report.insert("type".into(), "request".into());
        report.insert("kind".into(), kind.clone().into());
        put_value(&mut report, "body", req.body.as_ref());
        let body = req
            .body
            .as_ref()
            .map_or_else(|| "(no body)".to_owned(), show_plain);
        let (status, value) = match &self.mode {
            AnswerMode::Fixed(v) => {
                if !self.json {
                    eprintln!("the server asks ({kind}): {body} — answering {v} (--answer)");
                }
                (ReplyStatus::Answered, Some(v.clone()))
            }
            AnswerMode::Decline(why) => {
                eprintln!(
                    "asp: declined the server's question ({kind}): {body} — {why}; run from a \
                     terminal to answer it, or pass --answer JSON"
                );
                report.insert("reason".into(), (*why).into());
                (ReplyStatus::Declined, None)
            }
            AnswerMode::Terminal => {
                let _one = self.prompt.lock().await;
                eprintln!("? the server asks ({kind}): {body}");
                eprint!("  answer (JSON or text; empty line or Ctrl-D declines): ");
                let _ = std::io::stderr().flush();
                match read_line().await {
                    Some(line) if !line.trim().is_empty() => {
                        (ReplyStatus::Answered, Some(parse_answer(line.trim())))
                    }
                    _ => {
                        eprintln!("  declined");
                        (ReplyStatus::Declined, None)
                    }
                }
            }
        };
        let body = match &value {
            Some(v) => match asp_tokio::to_value(v) {
                Ok(raw) => Some(raw),
                Err(e) => {
                    eprintln!("asp: cannot encode the answer ({e}); declining");
                    return asp_tokio::reply(&req, ReplyStatus::Declined, None);
                }
            },
            None => None,
        };
        if self.json {
            let r = match status {
                ReplyStatus::Answered => "answered",
                ReplyStatus::Cancelled => "cancelled",
                ReplyStatus::Declined => "declined",
            };
            report.insert("reply".into(), r.into());
            if let Some(v) = value {
                report.insert("answer".into(), v);
            }
            emit(&Value::Object(report));
        }
        asp_tokio::reply(&req, status, body)
    }
}

/// One line from stdin, read on a thread of its own (`None` at end of input).
pub(crate) async fn read_line() -> Option<String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let r = std::io::stdin().read_line(&mut line);
        let _ = tx.send(match r {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line),
        });
    });
    rx.await.ok().flatten()
}
