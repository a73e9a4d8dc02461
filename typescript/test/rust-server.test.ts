/** Interop: this TypeScript client against the Rust server (`asp serve`, the demo agent). */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { AspError, ConnectionLost, ErrorCode, Reply, ToolFailed, connect } from "../src/node.js";
import { type AspServe, startAspServe } from "./helpers.js";

describe("TypeScript client ↔ Rust server", () => {
  let server: AspServe;
  before(async () => {
    server = await startAspServe(["--token-delay-ms", "1"]);
  });
  after(async () => {
    await server.stop();
  });

  it("mirrors the tool set with decoded schemas", async () => {
    const client = await connect(server.url);
    assert.deepEqual([...client.tools.keys()].sort(), ["agent", "blob", "clarify", "echo", "fail"]);
    const agent = client.tools.get("agent")!;
    assert.equal(agent.description, "mock LLM: streams a canned answer");
    assert.deepEqual((agent.inputSchema as { required: string[] }).required, ["prompt"]);
    assert.match(client.connectionId, /.+/);
    client.close();
    await client.closed;
  });

  it("echoes arguments as the result", async () => {
    const client = await connect(server.url);
    const args = { text: "héllo", n: 42, list: [1, 2, 3], nested: { ok: true } };
    assert.deepEqual(await client.call("echo", args), args);
    client.close();
  });

  it("streams the agent's tokens in order, then the result", async () => {
    const client = await connect(server.url);
    const call = client.invoke("agent", { prompt: "hi" });
    const chunks: string[] = [];
    for await (const c of call) chunks.push(c as string);
    const done = await call.result;
    assert.equal(done.status, "ok");
    assert.ok(chunks.length > 10, `only ${chunks.length} chunks`);
    assert.ok(chunks.join("").startsWith('You asked: "hi".'), chunks.join(""));
    assert.deepEqual(done.value, { tokens: chunks.length });
    assert.ok(done.metrics?.wall_us !== undefined);
    client.close();
  });

  it("interrupt() ends a stream cancelled", async () => {
    const client = await connect(server.url);
    const call = client.invoke("agent", { prompt: "long", delay_ms: 5, repeat: 50 });
    let n = 0;
    for await (const _ of call) if (++n === 3) call.interrupt("user pressed stop");
    assert.equal((await call.result).status, "cancelled");
    assert.ok(n >= 3 && n < 1000, `${n} chunks`);
    client.close();
  });

  it("an AbortSignal interrupts", async () => {
    const client = await connect(server.url);
    const ac = new AbortController();
    const call = client.invoke("agent", { prompt: "x", delay_ms: 5, repeat: 50 }, { signal: ac.signal });
    let n = 0;
    for await (const _ of call) if (++n === 2) ac.abort();
    assert.equal((await call.result).status, "cancelled");
    client.close();
  });

  it("answers server questions with the request handler", async () => {
    const asked: unknown[] = [];
    const client = await connect(server.url, {
      onRequest: (r) => {
        asked.push([r.kind, r.body, r.invocation]);
        return "blue";
      },
    });
    const call = client.invoke("clarify", { question: "Which colour?" });
    assert.equal(await call.text(), "You answered: blue");
    assert.equal((await call.result).value, "blue");
    assert.deepEqual(asked, [["clarify", { question: "Which colour?" }, call.id]]);
    client.close();
  });

  it("a declined question reaches the tool (the demo tool then fails)", async () => {
    const client = await connect(server.url, { onRequest: () => Reply.declined() });
    await assert.rejects(client.call("clarify", {}), (e: unknown) => {
      assert.ok(e instanceof ToolFailed);
      assert.deepEqual(e.result, { error: "the client declined to answer" });
      return true;
    });
    client.close();
  });

  it("COMPLETE(failed) rejects with ToolFailed", async () => {
    const client = await connect(server.url);
    await assert.rejects(client.call("fail", { message: "boom" }), (e: unknown) => {
      assert.ok(e instanceof ToolFailed);
      assert.equal(e.code, ErrorCode.TOOL_FAILED);
      assert.equal(e.retryable, false);
      assert.deepEqual(e.result, { error: "boom" });
      return true;
    });
    client.close();
  });

  it("errors carry the SPEC code and retryable", async () => {
    const client = await connect(server.url);
    await assert.rejects(client.call("no-such-tool"), (e: unknown) => {
      assert.ok(e instanceof AspError);
      assert.equal(e.codeName, "UNKNOWN_TOOL");
      assert.equal(e.retryable, false);
      return true;
    });
    await assert.rejects(client.call("agent", { prompt: "x", delay_ms: 200, repeat: 5 }, { deadlineMs: 50 }), (e: unknown) => {
      assert.ok(e instanceof AspError);
      assert.equal(e.code, ErrorCode.DEADLINE_EXCEEDED);
      assert.equal(e.retryable, true);
      return true;
    });
    client.close();
  });

  it("binary streams arrive whole under a small flow-control window", async () => {
    const client = await connect(server.url, { initial_window: 4096, max_chunk: 1024 });
    const call = client.invoke("blob", { bytes: 200_000, chunk: 1000 });
    let total = 0;
    let ok = true;
    for await (const c of call) {
      const b = c as Uint8Array;
      assert.ok(b.length <= 1024);
      for (let i = 0; i < b.length; i++) if (b[i] !== ((total + i) & 255)) ok = false;
      total += b.length;
    }
    assert.equal((await call.result).status, "ok");
    assert.equal(total, 200_000);
    assert.ok(ok, "bytes out of order");
    client.close();
  });

  it("many invocations share one connection", async () => {
    const client = await connect(server.url);
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => client.call("echo", { i })));
    assert.deepEqual(results, Array.from({ length: 50 }, (_, i) => ({ i })));
    client.close();
  });

  it("close() ends calls in flight with ConnectionLost", async () => {
    const client = await connect(server.url, { reconnect: false });
    const call = client.invoke("agent", { prompt: "x", delay_ms: 50, repeat: 5 });
    client.close();
    await assert.rejects(call.result, ConnectionLost);
    assert.throws(() => client.invoke("echo"));
  });
});

describe("TypeScript client ↔ Rust server with a token", () => {
  let server: AspServe;
  before(async () => {
    server = await startAspServe(["--token", "s3cret"]);
  });
  after(async () => {
    await server.stop();
  });

  it("sends the bearer token on the upgrade", async () => {
    const client = await connect(server.url, { token: "s3cret" });
    assert.deepEqual(await client.call("echo", 1), 1);
    client.close();
  });

  it("fails to connect with a wrong token, without throwing out of the event loop", async () => {
    await assert.rejects(connect(server.url, { token: "wrong" }), ConnectionLost);
    await assert.rejects(connect(server.url), ConnectionLost);
  });
});
