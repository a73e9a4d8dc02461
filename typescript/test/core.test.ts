/**
 * The Sans-IO core on its own: a client and a server `Connection` wired back to back on
 * virtual time (a `Pair`, as quinn-proto tests do), and hostile input that must never throw.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { encodeComplete, encodeFrame, encodeInvoke } from "../src/codec.js";
import { ErrorCode } from "../src/codes.js";
import { Connection, type ConnectionConfig } from "../src/connection.js";
import type { Event, Metrics } from "../src/event.js";
import { type Frame, Raw } from "../src/frame.js";
import { Writer } from "../src/msgpack.js";
import { repoRoot } from "./helpers.js";

/** Two connections joined by an in-memory transport, on a clock the test moves. */
class Pair {
  now = 0;
  readonly client: Connection;
  readonly server: Connection;
  readonly events = { client: [] as Event[], server: [] as Event[] };

  constructor(client: ConnectionConfig = {}, server: ConnectionConfig = {}) {
    this.client = new Connection("client", client, 0);
    this.server = new Connection("server", { tools: [{ name: "echo" }], ...server }, 0);
    this.server.start(0);
    this.client.start(0);
    this.drive();
  }

  /** Moves bytes both ways until nothing is left; collects events. */
  drive(): void {
    for (let i = 0; i < 1000; i++) {
      let moved = false;
      for (let b = this.client.pollTransmit(); b; b = this.client.pollTransmit()) {
        this.server.handleMessage(b, this.now);
        moved = true;
      }
      for (let b = this.server.pollTransmit(); b; b = this.server.pollTransmit()) {
        this.client.handleMessage(b, this.now);
        moved = true;
      }
      for (let e = this.client.pollEvent(); e; e = this.client.pollEvent()) this.events.client.push(e);
      for (let e = this.server.pollEvent(); e; e = this.server.pollEvent()) this.events.server.push(e);
      if (!moved) return;
    }
    throw new Error("no quiescence");
  }

  /** Advances virtual time to each side's next timer up to `to`. */
  advance(to: number): void {
    for (;;) {
      const next = [this.client.pollTimeout(), this.server.pollTimeout()].filter((t): t is number => t !== undefined && t <= to);
      if (next.length === 0) break;
      this.now = Math.max(this.now, Math.min(...next));
      this.client.handleTimeout(this.now);
      this.server.handleTimeout(this.now);
      this.drive();
    }
    this.now = to;
  }

  take(side: "client" | "server"): Event[] {
    const e = this.events[side];
    this.events[side] = [];
    return e;
  }
}

describe("Connection pair on virtual time", () => {
  it("handshake, invoke, stream within the window, complete", () => {
    const p = new Pair({ initial_window: 10, max_chunk: 4 });
    assert.equal(p.client.state, "Open");
    assert.deepEqual(p.take("client").map((e) => e.type), ["ToolAdded", "Connected"]);
    const id = p.client.invoke("echo", new Raw(new Uint8Array([0x05])));
    p.drive();
    const invoked = p.take("server");
    assert.equal(invoked[invoked.length - 1]!.type, "Invoked");
    // The server sees the client's max_chunk and window.
    assert.equal(p.server.streamCapacity(id), 4);
    p.server.stream(id, "abcd");
    p.server.stream(id, "efgh");
    assert.equal(p.server.streamCapacity(id), 2);
    assert.throws(() => p.server.stream(id, "ijk"), /window/);
    p.drive();
    // Auto-credit (half the window consumed) reopens it.
    assert.equal(p.server.streamCapacity(id), 4);
    p.server.complete(id, 0, new Raw(new Uint8Array([0x2a])));
    p.drive();
    const ev = p.take("client");
    assert.deepEqual(ev.map((e) => e.type), ["Chunk", "Chunk", "Ended"]);
    assert.equal(p.client.inFlight, 0);
  });

  it("heartbeat: PINGs keep a quiet pair alive; a silent peer times out at 3H", () => {
    const p = new Pair({ heartbeatMs: 1000 }, { heartbeatMs: 1000 });
    p.take("client");
    p.advance(10_000);
    assert.equal(p.client.state, "Open");
    assert.equal(p.server.state, "Open");
    // Cut the wire: the server hears nothing more.
    const q = new Pair({ heartbeatMs: 1000 }, { heartbeatMs: 1000 });
    q.server.handleTimeout(3001);
    assert.equal(q.server.state, "Closed");
  });

  it("resume: frames sent while detached are replayed on the new transport", () => {
    const p = new Pair({ resume: true, heartbeatMs: 0 }, { resume: true, heartbeatMs: 0 });
    const id = p.client.invoke("echo");
    p.drive();
    p.take("client");
    p.take("server");
    p.client.handleTransportClosed(p.now);
    p.server.handleTransportClosed(p.now);
    assert.deepEqual([p.client.pollEvent()?.type, p.server.pollEvent()?.type], ["Detached", "Detached"]);
    assert.equal(p.client.state, "Detached");
    assert.equal(p.server.state, "Detached");
    // The server streams while detached: kept for replay.
    p.server.stream(id, "late");
    p.server.complete(id, 0);
    // Nothing goes to the dead transport: it waits in the replay buffer (§11.3).
    assert.equal(p.server.pollTransmit(), undefined);
    // New transport: the client's RESUME goes to a fresh server connection, which asks the app…
    p.client.resume(p.now);
    const fresh = new Connection("server", { resume: true }, p.now);
    fresh.start(p.now);
    fresh.handleMessage(p.client.pollTransmit()!, p.now);
    const req = fresh.pollEvent();
    assert.equal(req?.type, "ResumeRequested");
    // …and the app resumes the detached session by its token.
    assert.deepEqual(req.type === "ResumeRequested" && req.token, p.server.sessionToken);
    assert.equal(p.server.resumeSession(req.type === "ResumeRequested" ? req.received : 0, p.now), true);
    p.drive();
    const ev = p.take("client");
    assert.deepEqual(ev.map((e) => e.type), ["Resumed", "Chunk", "Ended"]);
    assert.equal(p.client.state, "Open");
  });

  it("resume: acknowledgements keep the replay buffer bounded through a long stream (§11.1)", () => {
    const replay = 16384;
    const p = new Pair({ resume: true, heartbeatMs: 0, replayBuffer: replay }, { resume: true, heartbeatMs: 0, replayBuffer: replay });
    const id = p.client.invoke("echo");
    p.drive();
    let sent = 0;
    let waits = 0;
    let most = 0;
    const chunk = "x".repeat(1000);
    while (sent < 2_000_000) {
      const cap = p.server.streamCapacity(id);
      if (cap >= chunk.length) {
        p.server.stream(id, chunk);
        sent += chunk.length;
      } else {
        // Full (window or replay room): the client's CREDIT and PING(received) make room.
        waits++;
        p.drive();
        assert.ok(p.server.streamCapacity(id) >= chunk.length, "no room after the peer caught up");
      }
      most = Math.max(most, p.server.replayBuffered);
    }
    p.server.complete(id, 0);
    p.drive();
    assert.ok(most <= replay, `replay buffer held ${most} bytes`);
    assert.ok(waits > 0);
    const got = p.take("client").filter((e) => e.type === "Chunk").length;
    assert.equal(got, 2000);
    // Every counted frame the client received was acknowledged or is within a quarter of the buffer.
    assert.ok(p.server.replayBuffered <= replay);
  });

  it("resume: a STREAM waits for replay room, and the ack wakes it (Writable)", () => {
    const p = new Pair({ resume: true, heartbeatMs: 0, initial_window: 1 << 20, max_chunk: 1 << 16 }, { resume: true, heartbeatMs: 0, replayBuffer: 256 });
    const id = p.client.invoke("echo");
    p.drive();
    p.take("server");
    p.server.stream(id, "a".repeat(200));
    assert.equal(p.server.streamCapacity(id), 256 - p.server.replayBuffered - 21);
    assert.throws(() => p.server.stream(id, "b".repeat(200)), /replay buffer/);
    p.drive(); // the client acknowledges a quarter of 256 bytes at once
    assert.ok(p.take("server").some((e) => e.type === "Writable" && e.id === id));
    assert.equal(p.server.replayBuffered, 0);
    p.server.stream(id, "b".repeat(200));
  });

  it("resume: take-over of a session whose old transport still looks alive (§11.3)", () => {
    const p = new Pair({ resume: true, heartbeatMs: 0 }, { resume: true, heartbeatMs: 0 });
    const id = p.client.invoke("echo");
    p.drive();
    // Only the client saw its transport die (half-open TCP).
    p.client.handleTransportClosed(p.now);
    p.server.stream(id, "during");
    p.server.pollTransmit(); // lost on the half-open transport
    p.client.resume(p.now);
    const fresh = new Connection("server", { resume: true }, p.now);
    fresh.start(p.now);
    fresh.handleMessage(p.client.pollTransmit()!, p.now);
    const req = fresh.pollEvent();
    assert.equal(req?.type, "ResumeRequested");
    assert.equal(p.server.state, "Open");
    assert.equal(p.server.resumeSession(req.type === "ResumeRequested" ? req.received : 0, p.now), true);
    p.server.complete(id, 0);
    p.drive();
    const types = p.take("client").map((e) => e.type);
    assert.deepEqual(types.slice(-4), ["Detached", "Resumed", "Chunk", "Ended"]);
    assert.deepEqual(p.take("server").map((e) => e.type).slice(-2), ["Detached", "Resumed"]);
  });

  it("resume: a deliberate close (WebSocket 1000) ends the session, the invocation is lost", () => {
    const p = new Pair({ resume: true, heartbeatMs: 0 }, { resume: true, heartbeatMs: 0 });
    p.client.invoke("echo");
    p.drive();
    p.take("client");
    p.client.handleTransportClosed(p.now, true);
    assert.deepEqual(p.take("client").length, 0);
    const types: string[] = [];
    for (let e = p.client.pollEvent(); e; e = p.client.pollEvent()) types.push(e.type);
    assert.deepEqual(types, ["Ended", "Closed"]);
    assert.equal(p.client.state, "Closed");
  });

  it("a resume the server cannot serve: RESUME_FAILED, a new session starts", () => {
    const p = new Pair({ resume: true, heartbeatMs: 0 }, { resume: true, heartbeatMs: 0 });
    p.client.invoke("echo");
    p.drive();
    p.take("client");
    p.client.handleTransportClosed(p.now);
    assert.equal(p.client.pollEvent()?.type, "Detached");
    p.client.resume(p.now);
    const fresh = new Connection("server", { resume: true, tools: [{ name: "echo" }] }, p.now);
    fresh.start(p.now);
    fresh.handleMessage(p.client.pollTransmit()!, p.now);
    assert.equal(fresh.pollEvent()?.type, "ResumeRequested");
    fresh.refuseResume();
    p.client.handleMessage(fresh.pollTransmit()!, p.now);
    // The client lost the call, then sent HELLO on the same transport.
    const hello = p.client.pollTransmit()!;
    assert.equal(hello[0], 0x11);
    fresh.handleMessage(hello, p.now);
    p.client.handleMessage(fresh.pollTransmit()!, p.now);
    const types: string[] = [];
    for (let e = p.client.pollEvent(); e; e = p.client.pollEvent()) types.push(e.type);
    assert.deepEqual(types, ["Ended", "PeerError", "ToolAdded", "Connected"]);
    assert.equal(p.client.state, "Open");
  });
});

/** A MessagePack bin of `n` bytes (n < 256): 2 + n bytes as an `args`, `body` or `meta`. */
function bin(n: number): Raw {
  const b = new Uint8Array(2 + n);
  b[0] = 0xc4;
  b[1] = n;
  return new Raw(b);
}

/** The `Ended` outcomes of a side's events, by id. */
function ended(events: Event[]): Map<number, Event> {
  return new Map(events.filter((e) => e.type === "Ended").map((e) => [(e as { id: number }).id, e]));
}

/** The exchange ended with ERROR(TOO_MANY_INFLIGHT), retryable (§7.2 step 3, §12). */
function assertTooMany(e: Event | undefined): void {
  const x = e as { outcome?: string; code?: number; retryable?: boolean } | undefined;
  assert.deepEqual([x?.outcome, x?.code, x?.retryable], ["error", ErrorCode.TOO_MANY_INFLIGHT, true]);
}

describe("arguments in flight are bounded (SPEC §7.2, §8, §13.1 step 3)", () => {
  // Each INVOKE of `echo` with bin(96) holds 4 (tool) + 98 (args) = 102 bytes.
  it("server: an INVOKE past max_args_in_flight is refused, retryable; ending one makes room", () => {
    const p = new Pair({}, { maxArgsInFlight: 250 });
    p.take("client");
    p.take("server");
    const a = p.client.invoke("echo", bin(96));
    const b = p.client.invoke("echo", bin(96));
    const c = p.client.invoke("echo", bin(96));
    p.drive();
    assert.deepEqual(p.take("server").map((e) => [e.type, (e as { id?: number }).id]), [["Invoked", a], ["Invoked", b]]);
    assertTooMany(ended(p.take("client")).get(c));
    // The connection goes on: once `a` ends, the retry runs.
    p.server.complete(a, 0);
    const d = p.client.invoke("echo", bin(96));
    p.drive();
    assert.deepEqual(p.take("server").map((e) => [e.type, (e as { id?: number }).id]), [["Invoked", d]]);
    assert.equal(p.client.state, "Open");
    assert.equal(p.server.state, "Open");
  });

  it("server: meta counts; failed and expired invocations give their bytes back", () => {
    const p = new Pair({}, { maxArgsInFlight: 250 });
    p.take("client");
    const a = p.client.invoke("echo", bin(96));
    // 102 + (4 + 98 + 50) = 254 > 250: refused because of its meta.
    const b = p.client.invoke("echo", bin(96), { meta: bin(48) });
    p.drive();
    assertTooMany(ended(p.take("client")).get(b));
    // Without it, 204 fits.
    const c = p.client.invoke("echo", bin(96), { deadlineMs: 10 });
    p.drive();
    assert.equal(p.take("server").filter((e) => e.type === "Invoked").length, 2);
    // `a` failed by the handler, `c` past its deadline (§7.4): both release what they held.
    p.server.fail(a, 0x100, "handler failed");
    p.advance(10);
    const ends = ended(p.take("client"));
    assert.equal((ends.get(a) as { code: number }).code, 0x100);
    assert.equal((ends.get(c) as { code: number }).code, ErrorCode.DEADLINE_EXCEEDED);
    const e = p.client.invoke("echo", bin(96));
    const f = p.client.invoke("echo", bin(96));
    p.drive();
    assert.equal(p.take("server").filter((x) => x.type === "Invoked").length, 2, `${e} and ${f} both run`);
  });

  it("server: with nothing running one INVOKE is always taken, however large", () => {
    const p = new Pair({}, { maxArgsInFlight: 50 });
    p.take("client");
    p.take("server");
    const big = p.client.invoke("echo", bin(200));
    const small = p.client.invoke("echo");
    p.drive();
    assert.deepEqual(p.take("server").map((e) => [e.type, (e as { id?: number }).id]), [["Invoked", big]]);
    assertTooMany(ended(p.take("client")).get(small));
    // An interrupt is not an end: the bytes stay held until the terminal frame.
    p.client.interrupt(big);
    p.drive();
    const again = p.client.invoke("echo");
    p.drive();
    assertTooMany(ended(p.take("client")).get(again));
    p.server.complete(big, 1);
    p.drive();
    const last = p.client.invoke("echo");
    p.drive();
    assert.deepEqual(p.take("server").filter((e) => e.type === "Invoked").map((e) => (e as { id: number }).id), [last]);
  });

  it("client: a REQUEST past its max_args_in_flight is refused; a REPLY makes room", () => {
    // Each REQUEST of kind `ask` with bin(96) holds 3 + 98 = 101 bytes.
    const p = new Pair({ maxArgsInFlight: 210 });
    p.take("client");
    p.take("server");
    const r1 = p.server.request("ask", bin(96));
    const r2 = p.server.request("ask", bin(96));
    const r3 = p.server.request("ask", bin(96));
    p.drive();
    assert.deepEqual(p.take("client").map((e) => [e.type, (e as { id?: number }).id]), [["Requested", r1], ["Requested", r2]]);
    assertTooMany(ended(p.take("server")).get(r3));
    p.client.reply(r1, 0);
    const r4 = p.server.request("ask", bin(96));
    p.drive();
    assert.deepEqual(p.take("client").map((e) => [e.type, (e as { id?: number }).id]), [["Requested", r4]]);
  });
});

describe("hostile input never throws", () => {
  /** xorshift32: deterministic. */
  function rng(seed: number): () => number {
    let x = seed;
    return () => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return (x >>> 0) / 4294967296;
    };
  }

  const vectors = JSON.parse(readFileSync(join(repoRoot, "conformance", "vectors", "frames.json"), "utf8")) as {
    tests: { hex: string }[];
  };
  const seeds = vectors.tests.map((t) => Uint8Array.from(t.hex.split(" ").map((h) => parseInt(h, 16))));

  for (const role of ["client", "server"] as const) {
    it(`${role}: 20,000 mutated and random messages`, () => {
      const rand = rng(role === "client" ? 0x1234567 : 0x7654321);
      let closed = 0;
      let errors = 0;
      for (let round = 0; round < 400; round++) {
        const conn = new Connection(role, { rateLimit: 1e9, floodLimit: 1e9, max_frame_payload: 4096 }, 0);
        conn.start(0);
        const peerHello =
          role === "server" ? seeds[0]! : Uint8Array.from([0x11, 0, 0, 0, 0, 0, 0, 8, 0x82, 0x00, 0x91, 0x01, 0x04, 0xa2, 0x63, 0x31]);
        conn.handleMessage(peerHello, 0);
        for (let i = 0; i < 50 && !conn.isClosed; i++) {
          const base = seeds[Math.floor(rand() * seeds.length)]!;
          let msg: Uint8Array;
          if (rand() < 0.2) {
            msg = new Uint8Array(Math.floor(rand() * 40));
            for (let k = 0; k < msg.length; k++) msg[k] = Math.floor(rand() * 256);
          } else {
            msg = base.slice();
            const flips = 1 + Math.floor(rand() * 4);
            for (let f = 0; f < flips; f++) msg[Math.floor(rand() * msg.length)] = Math.floor(rand() * 256);
          }
          conn.handleMessage(msg, i);
          conn.handleTimeout(i * 100);
          while (conn.pollEvent() !== undefined);
          for (let b = conn.pollTransmit(); b; b = conn.pollTransmit()) if (b.includes(0x17)) errors++;
        }
        if (conn.isClosed) closed++;
      }
      // Nothing threw; the sweep drew ERROR replies and closed sessions.
      assert.ok(errors > 400 && closed > 0, `${errors} error replies, ${closed} of 400 closed`);
    });
  }
});

describe("outgoing WebSocket messages (SPEC §2.1)", () => {
  it("coalesce frames but stay within 65 536 + 8 + the peer's max_frame_payload", () => {
    const p = new Pair({}, { max_frame_payload: 4096, max_inflight: 1000 });
    const args = new Raw(new Uint8Array([0xc5, 0x01, 0x00, ...new Uint8Array(256)]));
    // 300 INVOKEs of ~270 bytes (~81 KB) queued before the transport reads any.
    for (let i = 0; i < 300; i++) p.client.invoke("echo", args);
    const limit = 65536 + 8 + 4096;
    let messages = 0;
    for (let b = p.client.pollTransmit(); b; b = p.client.pollTransmit()) {
      assert.ok(b.length <= limit, `message of ${b.length} bytes above ${limit}`);
      p.server.handleMessage(b, p.now);
      messages++;
    }
    assert.equal(messages, 2, "coalesced, split only at the bound");
    const invoked = [];
    for (let e = p.server.pollEvent(); e; e = p.server.pollEvent()) if (e.type === "Invoked") invoked.push(e);
    assert.equal(invoked.length, 300, "every frame arrived whole, in order");
    assert.equal(p.server.isClosed, false);
  });
});

describe("direct frame writers", () => {
  // The per-call frames are written without a `Frame` record; they must be the bytes the
  // schema-driven encoder (checked against every conformance vector) writes.
  const bytes = (f: (w: Writer) => void) => {
    const w = new Writer(16);
    f(w);
    return w.finish().slice();
  };
  const args = new Raw(Uint8Array.of(0x81, 0xa1, 0x61, 0x01));
  const big = new Raw(Uint8Array.of(0xc5, 0x01, 0x2c, ...new Uint8Array(300))); // bin 16, 300 bytes

  it("INVOKE: every combination of optional fields", () => {
    for (const a of [undefined, args, big]) {
      for (const deadline of [0, 1, 300, 70000, 0xffffffff]) {
        for (const meta of [undefined, args]) {
          const fields: Record<string, unknown> = { tool: "échο" };
          if (a !== undefined) fields["args"] = a;
          if (deadline > 0) fields["deadline_ms"] = deadline;
          if (meta !== undefined) fields["meta"] = meta;
          assert.deepEqual(
            bytes((w) => encodeInvoke(w, 0x7fff, "échο", a, deadline, meta)),
            bytes((w) => encodeFrame(w, { type: 2, id: 0x7fff, fields: fields as Frame["fields"] })),
          );
        }
      }
    }
  });

  it("COMPLETE: status, result and metrics", () => {
    const metricsCases: (Metrics | undefined)[] = [undefined, {}, { wall_us: 12 }, { wall_us: 2n ** 60n, output_tokens: 7 }, { cpu_us: 1, input_tokens: 65536 }];
    for (const status of [0, 1, 2]) {
      for (const r of [undefined, args]) {
        for (const m of metricsCases) {
          const fields: Record<string, unknown> = { status };
          if (r !== undefined) fields["result"] = r;
          if (m !== undefined && Object.keys(m).length > 0) fields["metrics"] = m;
          assert.deepEqual(
            bytes((w) => encodeComplete(w, 1, status, r, m)),
            bytes((w) => encodeFrame(w, { type: 6, id: 1, fields: fields as Frame["fields"] })),
          );
        }
      }
    }
  });
});
