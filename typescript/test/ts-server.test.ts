/** Interop: the Rust client (`asp call`, `asp tools`) against this TypeScript Node server; and TS ↔ TS. */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import WebSocket from "ws";
import { AspError, ErrorCode, RequestDeclined, type Server, ToolFailed, connect, serve } from "../src/node.js";
import { aspBin, jsonLines, runAsp } from "./helpers.js";

const TOKENS = "Agent Socket streams each token as its own frame".split(" ");

async function startServer(extra: Parameters<typeof serve>[0] = {}): Promise<Server> {
  return serve({
    tools: [
      { name: "echo", description: "returns its arguments", handler: (args) => args },
      {
        name: "agent",
        description: "streams tokens",
        inputSchema: { type: "object", properties: { delay_ms: { type: "integer" }, repeat: { type: "integer" } } },
        handler: async (args: { delay_ms?: number; repeat?: number } | undefined, ctx) => {
          let n = 0;
          for (let r = 0; r < (args?.repeat ?? 1); r++) {
            for (const t of TOKENS) {
              if (ctx.signal.aborted) return undefined;
              if (args?.delay_ms) await new Promise((res) => setTimeout(res, args.delay_ms));
              await ctx.stream(t + " ");
              n++;
            }
          }
          return { tokens: n };
        },
      },
      {
        name: "clarify",
        description: "asks the client",
        handler: async (args: { question?: string } | undefined, ctx) => {
          if (!ctx.canAsk) throw new ToolFailed("cannot ask");
          try {
            const answer = await ctx.ask("clarify", { question: args?.question ?? "What next?" });
            await ctx.stream(`You answered: ${String(answer)}`);
            return answer;
          } catch (e) {
            if (e instanceof RequestDeclined) throw new ToolFailed({ error: `the client ${e.status}` });
            throw e;
          }
        },
      },
      { name: "fail", handler: (args: { message?: string } | undefined) => Promise.reject(new ToolFailed({ error: args?.message ?? "failed" })) },
      { name: "unavailable", handler: () => Promise.reject(new AspError(ErrorCode.UNAVAILABLE, "backend down")) },
      { name: "crash", handler: () => { throw new Error("bug"); } },
      {
        name: "bytes",
        handler: async (args: { n: number }, ctx) => {
          const b = new Uint8Array(args.n);
          for (let i = 0; i < b.length; i++) b[i] = i & 255;
          await ctx.stream(b);
          return args.n;
        },
      },
    ],
    ...extra,
  });
}

describe("Rust client ↔ TypeScript server", () => {
  let server: Server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server.close(100);
  });

  it("asp tools lists the tools with their schemas", async () => {
    const r = await runAsp(["tools", server.url, "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const [line] = jsonLines(r.stdout) as { tools: { name: string; description: string; input_schema: unknown }[] }[];
    const names = line!.tools.map((t) => t.name).sort();
    assert.deepEqual(names, ["agent", "bytes", "clarify", "crash", "echo", "fail", "unavailable"]);
    const agent = line!.tools.find((t) => t.name === "agent")!;
    assert.equal(agent.description, "streams tokens");
    assert.deepEqual((agent.input_schema as { type: string }).type, "object");
  });

  it("asp call echo gets its arguments back", async () => {
    const r = await runAsp(["call", server.url, "echo", "--args", '{"a": 1, "b": ["x", true]}', "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const done = jsonLines(r.stdout).find((l) => l["type"] === "complete")!;
    assert.equal(done["status"], "ok");
    assert.deepEqual(done["result"], { a: 1, b: ["x", true] });
  });

  it("asp call agent receives every streamed token", async () => {
    const r = await runAsp(["call", server.url, "agent", "--args", '{"repeat": 3}', "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const lines = jsonLines(r.stdout);
    const text = lines.filter((l) => l["type"] === "chunk").map((l) => l["text"]).join("");
    assert.equal(text, (TOKENS.join(" ") + " ").repeat(3));
    assert.deepEqual(lines.at(-1)!["result"], { tokens: TOKENS.length * 3 });
  });

  it("asp call answers the server's question", async () => {
    const r = await runAsp(["call", server.url, "clarify", "--args", '{"question": "Colour?"}', "--answer", '"green"', "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const lines = jsonLines(r.stdout);
    const req = lines.find((l) => l["type"] === "request")!;
    assert.equal(req["kind"], "clarify");
    assert.deepEqual(req["body"], { question: "Colour?" });
    assert.equal(lines.find((l) => l["type"] === "chunk")!["text"], "You answered: green");
    assert.equal(lines.at(-1)!["result"], "green");
  });

  it("asp call sees failures and error codes", async () => {
    const f = await runAsp(["call", server.url, "fail", "--args", '{"message": "nope"}', "--json"]);
    assert.equal(f.code, 1);
    assert.equal(jsonLines(f.stdout).at(-1)!["status"], "failed");
    const u = await runAsp(["call", server.url, "unavailable", "--json"]);
    assert.equal(u.code, 1);
    assert.match(u.stdout + u.stderr, /UNAVAILABLE/);
    const m = await runAsp(["call", server.url, "missing", "--json"]);
    assert.equal(m.code, 1);
    assert.match(m.stdout + m.stderr, /UNKNOWN_TOOL/);
  });

  it("asp tools --watch sees tool pushes (TOOL_DEF add and remove)", async () => {
    const proc = spawn(aspBin(), ["tools", server.url, "--watch", "--json"], { stdio: ["ignore", "pipe", "pipe"] });
    const lines = createInterface({ input: proc.stdout });
    const seen: Record<string, unknown>[] = [];
    const next = () =>
      new Promise<Record<string, unknown>>((res, rej) => {
        const t = setTimeout(() => rej(new Error("no line from asp tools --watch")), 10000);
        lines.once("line", (l) => {
          clearTimeout(t);
          const v = JSON.parse(l) as Record<string, unknown>;
          seen.push(v);
          res(v);
        });
      });
    try {
      await next(); // the initial set
      server.addTool({ name: "late", description: "added later", handler: () => "late" });
      const added = await next();
      assert.match(JSON.stringify(added), /late/);
      server.removeTool("late");
      const removed = await next();
      assert.match(JSON.stringify(removed), /late/);
      assert.notDeepEqual(added, removed);
    } finally {
      proc.kill("SIGKILL");
    }
  });
});

describe("TypeScript client ↔ TypeScript server", () => {
  let server: Server;
  before(async () => {
    server = await startServer({ resumeWindowMs: 5000 });
  });
  after(async () => {
    await server.close(100);
  });

  it("handler errors become SPEC codes", async () => {
    const client = await connect(server.url);
    await assert.rejects(client.call("unavailable"), (e: unknown) => e instanceof AspError && e.code === ErrorCode.UNAVAILABLE && e.retryable);
    await assert.rejects(client.call("crash"), (e: unknown) => e instanceof AspError && e.code === ErrorCode.INTERNAL && e.retryable);
    await assert.rejects(client.call("fail", { message: "m" }), (e: unknown) => e instanceof ToolFailed && !e.retryable);
    client.close();
  });

  it("a question without a handler: the tool cannot ask", async () => {
    const client = await connect(server.url);
    await assert.rejects(client.call("clarify"), (e: unknown) => e instanceof ToolFailed && e.result === "cannot ask");
    client.close();
  });

  it("tool pushes reach the client as tool-change events", async () => {
    const client = await connect(server.url);
    const changes: string[][] = [];
    const got = new Promise<void>((res) =>
      client.on("tools", (t) => {
        changes.push([...t.keys()].sort());
        if (changes.length === 2) res();
      }),
    );
    server.addTool({ name: "pushed", description: "v1", handler: () => 1 });
    server.removeTool("pushed");
    await got;
    assert.ok(changes[0]!.includes("pushed"));
    assert.ok(!changes[1]!.includes("pushed"));
    client.close();
  });

  it("a stream larger than the window waits for CREDIT and arrives whole", async () => {
    const client = await connect(server.url, { initial_window: 1000, max_chunk: 300 });
    const call = client.invoke("bytes", { n: 100_000 });
    let total = 0;
    for await (const c of call) {
      const b = c as Uint8Array;
      assert.ok(b.length <= 300);
      for (let i = 0; i < b.length; i++) assert.equal(b[i], (total + i) & 255);
      total += b.length;
    }
    assert.equal(total, 100_000);
    assert.equal((await call.result).value, 100_000);
    client.close();
  });

  it("interrupt aborts the handler's signal and ends cancelled", async () => {
    const client = await connect(server.url);
    const call = client.invoke("agent", { delay_ms: 5, repeat: 100 });
    let n = 0;
    for await (const _ of call) if (++n === 2) call.interrupt();
    assert.equal((await call.result).status, "cancelled");
    client.close();
  });

  it("resumes the session after the transport drops, losing no chunk", async () => {
    const client = await connect(server.url);
    const events: string[] = [];
    client.on("detached", () => events.push("detached"));
    client.on("resumed", () => events.push("resumed"));
    const call = client.invoke("agent", { delay_ms: 2, repeat: 4 });
    let text = "";
    let n = 0;
    for await (const c of call) {
      text += c as string;
      if (++n === 5) {
        // Drop the TCP connection under the client's feet.
        const socket = (client as unknown as { driver: { socket: WebSocket } }).driver.socket;
        socket.terminate();
      }
    }
    assert.deepEqual(await call.result.then((r) => r.value), { tokens: TOKENS.length * 4 });
    assert.equal(text, (TOKENS.join(" ") + " ").repeat(4));
    assert.deepEqual(events, ["detached", "resumed"]);
    assert.equal(client.state, "Open");
    client.close();
  });

  it("bad input from a peer gets an ERROR, never an exception", async () => {
    const ws = new WebSocket(server.url, "asp-v1");
    await new Promise((r) => ws.once("open", r));
    const got: Buffer[] = [];
    ws.on("message", (d: Buffer) => got.push(d));
    const closed = new Promise<number>((r) => ws.once("close", (code) => r(code)));
    ws.send(Buffer.from([0x12, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0xc1])); // INVOKE before HELLO
    assert.equal(await closed, 1002);
    // ERROR(PROTOCOL_VIOLATION) with id 0.
    assert.equal(got[0]![0], 0x17);
    assert.equal(got[0]![2] << 8 | got[0]![3], 0);
    // The server still serves.
    const client = await connect(server.url);
    assert.equal(await client.call("echo", "still here"), "still here");
    client.close();
  });

  it("refuses an upgrade without the asp-v1 subprotocol", async () => {
    const ws = new WebSocket(server.url);
    const status = await new Promise<number>((r) => ws.once("unexpected-response", (_req, res) => r(res.statusCode ?? 0)));
    assert.equal(status, 400);
  });
});
