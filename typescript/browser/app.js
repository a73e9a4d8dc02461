// A page without a framework: connect to an ASP server, list its tools, stream the agent's
// tokens into the page, interrupt on demand. The server is given as ?server=ws://…
import { connect } from "/dist/index.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const server = params.get("server") ?? `ws://${location.hostname}:7777/v1/agent-socket`;
const delay = Number(params.get("delay_ms") ?? "40");

function showTools(tools) {
  const ul = $("tools");
  ul.replaceChildren();
  for (const t of [...tools.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    const li = document.createElement("li");
    const code = document.createElement("code");
    code.textContent = t.name;
    li.append(code, ` — ${t.description}`);
    ul.append(li);
  }
}

let call;
try {
  const client = await connect(server, { onRequest: (r) => window.prompt(r.body?.question ?? r.kind) ?? undefined });
  $("status").textContent = `connected to ${server} (connection ${client.connectionId})`;
  $("status").className = "open";
  showTools(client.tools);
  client.on("tools", showTools);
  client.on("close", (c) => {
    $("status").textContent = `closed (${c.reason})`;
    $("status").className = c.error ? "error" : "";
  });
  $("run").disabled = false;
  $("run").onclick = async () => {
    $("out").textContent = "";
    $("result").textContent = "streaming…";
    $("run").disabled = true;
    $("stop").disabled = false;
    call = client.invoke("agent", { prompt: $("prompt").value, delay_ms: delay, repeat: 3 });
    try {
      for await (const token of call) $("out").textContent += token;
      const done = await call.result;
      $("result").textContent = `status: ${done.status}` + (done.value ? ` — ${JSON.stringify(done.value)}` : "");
    } catch (e) {
      $("result").textContent = `error: ${e.codeName ?? e.name}: ${e.message}`;
    } finally {
      $("run").disabled = false;
      $("stop").disabled = true;
    }
  };
  $("stop").onclick = () => call?.interrupt("user pressed stop");
} catch (e) {
  $("status").textContent = `cannot connect: ${e.message}`;
  $("status").className = "error";
}
