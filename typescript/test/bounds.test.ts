/**
 * What the client buffers stays bounded against a flooding server: a hand-written hostile
 * peer (raw frames over `ws`) that streams past the flow-control window, or streams megabytes
 * honestly to a caller that only awaits the result.
 */
import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { WebSocketServer, type WebSocket } from "ws";
import { decodeFrame, encode, readHeader } from "../src/codec.js";
import { AspError, ErrorCode, FrameType, ProtocolMisuse, connect } from "../src/node.js";

const WINDOW = 262144; // the client's default initial_window (SPEC §13)
const CHUNK = "x".repeat(16384);

/** A server speaking just enough ASP by hand, whose tools misbehave on purpose. */
class HostileServer {
  private wss: WebSocketServer;
  url = "";
  /** CREDIT bytes granted per invocation, and ERROR codes received, as seen by the server. */
  errors: number[] = [];
  private errorWaiters: (() => boolean)[] = [];

  /** Resolves once an ERROR with `code` has arrived. */
  errorSeen(code: number): Promise<void> {
    if (this.errors.includes(code)) return Promise.resolve();
    return new Promise<void>((r) =>
      this.errorWaiters.push(() => {
        if (!this.errors.includes(code)) return false;
        r();
        return true;
      }),
    );
  }

  constructor() {
    this.wss = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: () => "asp-v1" });
    this.wss.on("connection", (ws) => this.accept(ws));
  }

  listening(): Promise<void> {
    return new Promise((r) =>
      this.wss.once("listening", () => {
        this.url = `ws://127.0.0.1:${(this.wss.address() as AddressInfo).port}/v1/agent-socket`;
        r();
      }),
    );
  }

  private accept(ws: WebSocket): void {
    const windows = new Map<number, { window: number; wake?: () => void }>();
    ws.on("message", (data: Buffer) => {
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.length);
      for (let pos = 0; pos < bytes.length; ) {
        const h = readHeader(bytes, pos);
        const d = decodeFrame(h, bytes, pos + 8, 1 << 20, "client");
        pos += 8 + h.length;
        if (d.fault !== undefined) continue;
        const f = d.frame;
        if (f.type === FrameType.HELLO) {
          ws.send(encode({ type: FrameType.HELLO, id: 0, fields: { versions: [1], connection_id: "hostile", heartbeat_ms: 0 } }));
        } else if (f.type === FrameType.INVOKE) {
          const w = { window: WINDOW };
          windows.set(f.id, w);
          void this.run(ws, f.id, f.fields["tool"] as string, w);
        } else if (f.type === FrameType.CREDIT) {
          const w = windows.get(f.id);
          if (w !== undefined) {
            w.window += Number(f.fields["bytes"]);
            w.wake?.();
          }
        } else if (f.type === FrameType.ERROR) {
          this.errors.push(Number(f.fields["code"]));
          this.errorWaiters = this.errorWaiters.filter((w) => !w());
        }
        else if (f.type === FrameType.PING) ws.send(encode({ type: FrameType.PONG, id: 0, fields: {} }));
      }
    });
  }

  private async run(ws: WebSocket, id: number, tool: string, w: { window: number; wake?: () => void }): Promise<void> {
    const stream = (seq: number) => encode({ type: FrameType.STREAM, id, fields: { data: CHUNK, seq } });
    if (tool === "flood") {
      // 4 MiB of STREAM in 64 KiB messages, ignoring the window.
      for (let seq = 0; seq < 256; seq += 4) {
        const msg = Buffer.concat([stream(seq), stream(seq + 1), stream(seq + 2), stream(seq + 3)]);
        if (ws.readyState !== ws.OPEN) return;
        ws.send(msg);
      }
      return;
    }
    // "big": 8 MiB honestly, within the window and CREDIT, then COMPLETE.
    for (let seq = 0; seq < 512; seq++) {
      while (w.window < CHUNK.length) await new Promise<void>((r) => (w.wake = r));
      w.window -= CHUNK.length;
      ws.send(stream(seq));
    }
    ws.send(encode({ type: FrameType.COMPLETE, id, fields: { status: 0 } }));
  }

  close(): Promise<void> {
    for (const c of this.wss.clients) c.terminate();
    return new Promise((r) => this.wss.close(() => r()));
  }
}

describe("client buffers are bounded against a flooding server", () => {
  let server: HostileServer;
  before(async () => {
    server = new HostileServer();
    await server.listening();
  });
  after(async () => {
    await server.close();
  });

  it("STREAM past the window: FLOW_CONTROL ends the call, at most one window kept", async () => {
    const client = await connect(server.url, { reconnect: false });
    const call = client.invoke("flood");
    // An iterator that never pulls: credit follows consumption, so none is granted and the
    // window is all the server may send. (Awaiting only the result would credit at once.)
    call[Symbol.asyncIterator]();
    await assert.rejects(call.result, (e: unknown) => e instanceof AspError && e.code === ErrorCode.FLOW_CONTROL);
    assert.ok(call.buffered <= WINDOW, `${call.buffered} bytes kept`);
    assert.ok(client.buffered <= WINDOW);
    // The client told the server (§7.5) and the connection goes on.
    await server.errorSeen(ErrorCode.FLOW_CONTROL);
    assert.equal(client.state, "Open");
    client.close();
  });

  it("8 MiB streamed to a caller that only awaits the result: at most maxBufferedPerCall kept", async () => {
    const client = await connect(server.url, { reconnect: false, maxBufferedPerCall: 256 << 10 });
    const call = client.invoke("big");
    const done = await call.result;
    assert.equal(done.status, "ok");
    assert.ok(call.buffered <= 256 << 10, `${call.buffered} bytes kept`);
    // Iterating afterwards yields what was kept, then says the rest was dropped.
    let got = 0;
    await assert.rejects(
      (async () => {
        for await (const c of call) got += (c as string).length;
      })(),
      ProtocolMisuse,
    );
    assert.equal(got, 256 << 10);
    client.close();
  });

  it("8 MiB streamed to a slow iterator: never more than one window buffered", async () => {
    const client = await connect(server.url, { reconnect: false });
    const call = client.invoke("big");
    let most = 0;
    let total = 0;
    for await (const c of call) {
      most = Math.max(most, call.buffered);
      total += (c as string).length;
      // A slow consumer: the server waits for CREDIT meanwhile.
      if (total % (1 << 20) === 0) await new Promise((r) => setImmediate(r));
    }
    assert.equal(total, 512 * CHUNK.length);
    assert.ok(most <= WINDOW, `${most} bytes buffered`);
    client.close();
  });
});
