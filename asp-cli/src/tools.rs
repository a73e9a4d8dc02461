//! `asp tools`.

use std::io::IsTerminal;

use asp_tokio::ToolChange;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::connect::{close, connect};
use crate::interrupt::Interrupts;
use crate::output::{emit, fail, outln, tool_json, tool_plain};
use crate::{Global, EXIT_OK};

pub(crate) async fn tools(g: &Global, url: &str, watch: bool) -> i32 {
    let mut sig = match watch.then(Interrupts::new).transpose() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let client = match connect(g, url, None).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // Subscribe before reading the set: this runtime is single-threaded, so no change can
    // slip in between (none is lost, none is printed twice).
    let mut changes = watch.then(|| client.tool_changes());
    let mut set = client.tools();
    set.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    if g.json {
        let list: Vec<Value> = set.iter().map(tool_json).collect();
        emit(&json!({"type": "tools", "tools": list}));
    } else if set.is_empty() {
        outln("(no tools)");
    } else {
        for t in &set {
            outln(&tool_plain("", t));
        }
    }
    let (Some(changes), Some(sig)) = (changes.as_mut(), sig.as_mut()) else {
        close(&client).await;
        return EXIT_OK;
    };
    if !g.json && std::io::stderr().is_terminal() {
        eprintln!("watching for tool changes (Ctrl-C to stop)…");
    }
    loop {
        tokio::select! {
            change = changes.next() => match change {
                Some(c) => print_change(g, &c),
                None => {
                    let reason = client.closed().await;
                    let graceful = client.is_draining();
                    if g.json {
                        emit(&json!({
                            "type": "closed",
                            "graceful": graceful,
                            "reason": reason.to_string(),
                        }));
                    }
                    if graceful {
                        eprintln!("the server closed the connection ({reason})");
                        return EXIT_OK;
                    }
                    return fail(format!("connection lost: {reason}"));
                }
            },
            () = sig.recv() => break,
        }
    }
    close(&client).await;
    EXIT_OK
}

pub(crate) fn print_change(g: &Global, c: &ToolChange) {
    match (c, g.json) {
        (ToolChange::Added(t), true) => emit(&json!({"type": "tool_added", "tool": tool_json(t)})),
        (ToolChange::Updated(t), true) => {
            emit(&json!({"type": "tool_updated", "tool": tool_json(t)}));
        }
        (ToolChange::Removed(name), true) => {
            emit(&json!({"type": "tool_removed", "name": name.as_str()}));
        }
        (ToolChange::Added(t), false) => outln(&tool_plain("added: ", t)),
        (ToolChange::Updated(t), false) => outln(&tool_plain("updated: ", t)),
        (ToolChange::Removed(name), false) => outln(&format!("removed: {}", name.as_str())),
        // A kind of change a later core reports: the tool list is still right after it.
        (other, _) => eprintln!("tool change: {other:?}"),
    }
}
