/**
 * Reconnect with resume (SPEC §11), live: the TypeScript client talks to a real Rust
 * `asp serve` (resume is on by default) and to the TypeScript server through a TCP proxy
 * that the test cuts mid-stream, either both ways (a reset) or only on the client's side (a
 * half-open connection the server still believes alive: take-over, §11.3).
 */
import assert from "node:assert/strict";
import { type AddressInfo, type Server as NetServer, type Socket, createConnection, createServer } from "node:net";
import { after, before, describe, it } from "node:test";
import { type Client, ConnectionLost, type ToolContext, connect, serve } from "../src/node.js";
import { type AspServe, startAspServe } from "./helpers.js";

/**
 * Drops one side of a proxied TCP connection. (Not resetAndDestroy: a socket reset that way
 * sometimes kept its handle, and the test process, alive after the test.) The WebSocket on
 * the other end sees its TCP connection end without a Close frame (1006), which detaches a
 * resumable session (SPEC §11.3), exactly as a reset does.
 */
function reset(s: Socket): void {
  s.destroy();
}

/** A TCP proxy on 127.0.0.1 whose connections the test can cut. */
class CutProxy {
  private server: NetServer;
  private pairs: { down: Socket; up: Socket }[] = [];
  port = 0;

  constructor(public upstreamPort: number) {
    this.server = createServer((down) => {
      const up = createConnection({ host: "127.0.0.1", port: this.upstreamPort });
      const pair = { down, up };
      this.pairs.push(pair);
      down.pipe(up);
      up.pipe(down);
      const drop = () => (this.pairs = this.pairs.filter((p) => p !== pair));
      // One side gone (and not cut on purpose by `cutClientSide`): the other goes too.
      down.on("error", () => up.destroy());
      up.on("error", () => down.destroy());
      up.on("close", () => {
        if (this.pairs.includes(pair)) down.destroy();
      });
      down.on("close", () => {
        if (this.pairs.includes(pair)) up.destroy();
        drop();
      });
    });
  }

  listen(): Promise<void> {
    return new Promise((r) =>
      this.server.listen(0, "127.0.0.1", () => {
        this.port = (this.server.address() as AddressInfo).port;
        r();
      }),
    );
  }

  /** Drops every connection, both ways (the client and the server both see the loss). */
  cut(): void {
    for (const { down, up } of this.pairs) {
      reset(down);
      reset(up);
    }
    this.pairs = [];
  }

  /** Drops only the client's side; the server's connection stays open and silent (half-open). */
  cutClientSide(): Socket[] {
    const ups: Socket[] = [];
    for (const { down, up } of this.pairs) {
      down.unpipe(up);
      up.unpipe(down);
      reset(down);
      up.resume(); // keep reading, so its end and close are seen
      ups.push(up);
    }
    this.pairs = [];
    return ups;
  }

  url(path = "/v1/agent-socket"): string {
    return `ws://127.0.0.1:${this.port}${path}`;
  }

  close(): Promise<void> {
    this.cut();
    return new Promise<void>((r) => this.server.close(() => r()));
  }
}

function portOf(url: string): number {
  return Number(new URL(url).port);
}

/** The agent's whole answer and result, from an uncut call on a fresh connection. */
async function reference(url: string, args: object): Promise<{ text: string; value: unknown }> {
  const client = await connect(url, { reconnect: false });
  const call = client.invoke("agent", args);
  const text = await call.text();
  const { value } = await call.result;
  client.close();
  return { text, value };
}

/** Resolves on the client's next event of that name. */
function next(client: Client, event: "detached" | "resumed" | "tools"): Promise<void> {
  return new Promise((r) => {
    const off = client.on(event, () => {
      off();
      r();
    });
  });
}

describe("reconnect with resume: TypeScript client ↔ Rust server (asp serve)", () => {
  let server: AspServe;
  let proxy: CutProxy;
  before(async () => {
    server = await startAspServe();
    proxy = new CutProxy(portOf(server.url));
    await proxy.listen();
  });
  after(async () => {
    await proxy.close();
    await server.stop();
  });

  it("a connection cut mid-stream resumes: every token arrives once, in order", async () => {
    const client = await connect(proxy.url());
    const id = client.connectionId;
    const events: string[] = [];
    client.on("detached", () => events.push("detached"));
    const resumed = next(client, "resumed").then(() => events.push("resumed"));
    const call = client.invoke("agent", { prompt: "resume me", delay_ms: 2, repeat: 3 });
    const chunks: string[] = [];
    for await (const c of call) {
      chunks.push(c as string);
      if (chunks.length === 5) proxy.cut();
    }
    const done = await call.result;
    await resumed;
    assert.deepEqual(events, ["detached", "resumed"]);
    // The same answer as an uncut call on a fresh connection: nothing lost, nothing twice.
    const whole = await reference(server.url, { prompt: "resume me", repeat: 3 });
    assert.equal(chunks.join(""), whole.text);
    assert.deepEqual(done.value, whole.value);
    // §11.3: a resumed session keeps its connection_id.
    assert.equal(client.connectionId, id);
    assert.equal(client.state, "Open");
    assert.deepEqual(await client.call("echo", { after: "resume" }), { after: "resume" });
    client.close();
  });

  it("take-over: the server still believes the old connection alive (half-open)", async () => {
    const client = await connect(proxy.url());
    const call = client.invoke("agent", { prompt: "half open", delay_ms: 2, repeat: 2 });
    const chunks: string[] = [];
    const resumed = next(client, "resumed");
    let stale: Socket[] = [];
    for await (const c of call) {
      chunks.push(c as string);
      if (chunks.length === 3) stale = proxy.cutClientSide();
    }
    await resumed;
    const whole = await reference(server.url, { prompt: "half open", repeat: 2 });
    assert.equal(chunks.join(""), whole.text);
    assert.deepEqual((await call.result).value, whole.value);
    // The server closed the stale transport when the RESUME took the session over.
    await Promise.all(stale.map((s) => (s.closed ? undefined : new Promise((r) => s.once("close", r)))));
    client.close();
  });

  it("a resume the server cannot serve (another server): RESUME_FAILED, the call is lost, a new session opens", async () => {
    const other = await startAspServe();
    try {
      const client = await connect(proxy.url());
      const first = client.connectionId;
      const call = client.invoke("agent", { prompt: "lost", delay_ms: 20, repeat: 5 });
      const reopened = next(client, "tools");
      let n = 0;
      await assert.rejects(
        (async () => {
          for await (const _ of call) {
            if (++n === 2) {
              proxy.upstreamPort = portOf(other.url);
              proxy.cut();
            }
          }
        })(),
        ConnectionLost,
      );
      await reopened;
      assert.equal(client.state, "Open");
      assert.notEqual(client.connectionId, first);
      assert.deepEqual(await client.call("echo", 7), 7);
      client.close();
    } finally {
      proxy.upstreamPort = portOf(server.url);
      await other.stop();
    }
  });
});

describe("reconnect with resume: TypeScript client ↔ TypeScript server", () => {
  it("cut both ways, then half-open, six times: streams continue where they stopped", async () => {
    const server = await serve({
      tools: [
        {
          name: "count",
          handler: async (args: { n: number }, ctx: ToolContext) => {
            for (let i = 0; i < args.n; i++) {
              await ctx.stream(`${i} `);
              await new Promise((r) => setTimeout(r, 1));
            }
            return args.n;
          },
        },
      ],
    });
    const proxy = new CutProxy(portOf(server.url));
    await proxy.listen();
    try {
      const client = await connect(proxy.url());
      let stale: Socket[] = [];
      // Six losses in a row, more than the 5 attempts a single loss may take: each resume
      // starts the count again.
      const cuts = [() => proxy.cut(), () => (stale = proxy.cutClientSide())];
      for (const cut of [...cuts, ...cuts, ...cuts]) {
        const resumed = next(client, "resumed");
        const call = client.invoke("count", { n: 60 });
        let text = "";
        let n = 0;
        for await (const c of call) {
          text += c as string;
          if (++n === 10) cut();
        }
        await resumed;
        assert.equal((await call.result).value, 60);
        assert.equal(text, Array.from({ length: 60 }, (_, i) => `${i} `).join(""));
      }
      // Take-over dropped the half-open transport the server still held (§11.3).
      assert.equal(stale.length, 1);
      assert.equal(client.state, "Open");
      await Promise.all(stale.map((s) => (s.closed ? undefined : new Promise((r) => s.once("close", r)))));
      client.close();
    } finally {
      await proxy.close();
      await server.close(100);
    }
  });
});
