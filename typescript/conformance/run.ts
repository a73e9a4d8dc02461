/**
 * The TypeScript conformance runner: every vector of `conformance/vectors` (frames,
 * rejections, sessions; see conformance/README.md) against this package's codec and
 * `Connection`, in three bindings (WebSocket messages; a byte stream fed one byte at a time;
 * a byte stream with each `recv` as one read, SPEC §2.2). Prints one line per failing vector
 * (`-v`: per vector) and ends with exactly `N passed, N failed`; exits non-zero if any failed.
 *
 *     node dist-test/conformance/run.js [-v] [files or folders…]
 *     node dist-test/conformance/run.js --against ws://HOST:PORT/PATH [--timeout-ms N]   # live mode
 *     node dist-test/conformance/run.js --serve 127.0.0.1:0     # a TS server with the live profile
 */
import { readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ErrorCode, codeName } from "../src/codes.js";
import { decodeFrame, encode, readHeader } from "../src/codec.js";
import { Connection, type ConnectionConfig } from "../src/connection.js";
import { ProtocolMisuse } from "../src/errors.js";
import type { Event } from "../src/event.js";
import { FRAME_TYPE_NAMES, type Frame, FrameType, Raw, type Role } from "../src/frame.js";

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, "..", "..", "..");

function fromHex(h: string): Uint8Array {
  const s = h.replace(/\s+/g, "");
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function toHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");
}

function code(v: Json): number {
  return typeof v === "number" ? v : (ErrorCode as Record<string, number>)[v]!;
}

// ------------------------------------------------------------------ JSON ⇄ fields

function uintJson(v: number | bigint): number | string {
  return typeof v === "bigint" || v > Number.MAX_SAFE_INTEGER ? v.toString() : v;
}

/** Our decoded field value in the vectors' JSON form. */
function fieldToJson(name: string, v: unknown): Json {
  if (v instanceof Raw) return { msgpack: toHex(v.bytes) };
  if (v instanceof Uint8Array) return { bin: toHex(v) };
  if (name === "data" && typeof v === "string") return { str: v };
  if (typeof v === "number" || typeof v === "bigint") return uintJson(v);
  if (Array.isArray(v)) return v;
  if (v !== null && typeof v === "object") {
    const out: Json = {};
    for (const [k, x] of Object.entries(v)) out[k] = uintJson(x as number | bigint);
    return out;
  }
  return v;
}

/** A vector's JSON field value as what our encoder takes. */
function jsonToField(name: string, v: Json): unknown {
  if (v !== null && typeof v === "object" && !Array.isArray(v)) {
    if ("msgpack" in v) return new Raw(fromHex(v.msgpack));
    if ("bin" in v) return fromHex(v.bin);
    if ("str" in v) return v.str;
    const out: Json = {};
    for (const [k, x] of Object.entries(v)) out[k] = typeof x === "string" ? BigInt(x) : x;
    return out;
  }
  if (typeof v === "string" && /^\d+$/.test(v) && (name === "received" || name.endsWith("_us") || name.endsWith("_tokens"))) {
    return BigInt(v);
  }
  return v;
}

function jsonFrame(j: Json): Frame {
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(j.fields)) fields[k] = jsonToField(k, v);
  return { type: (FrameType as Record<string, number>)[j.type]!, id: j.id, fields: fields as Frame["fields"] };
}

function same(a: Json, b: Json): boolean {
  return JSON.stringify(canon(a)) === JSON.stringify(canon(b));
}

function canon(v: Json): Json {
  if (Array.isArray(v)) return v.map(canon);
  if (v !== null && typeof v === "object") {
    const out: Json = {};
    for (const k of Object.keys(v).sort()) out[k] = canon(v[k]);
    return out;
  }
  return v;
}

// ------------------------------------------------------------------ frames

function decodeOne(bytes: Uint8Array, maxPayload: number, sender?: Role) {
  const h = readHeader(bytes, 0);
  if (h.version !== 1) return { fault: { code: ErrorCode.UNSUPPORTED_VERSION, frameType: h.type } };
  if (bytes.length !== 8 + h.length) throw new Error("vector hex is not one whole frame");
  return decodeFrame(h, bytes, 8, maxPayload, sender);
}

function frameVector(t: Json): string | undefined {
  const bytes = fromHex(t.hex);
  const sender = t.sender === "either" ? undefined : (t.sender as Role);
  const d = decodeOne(bytes, 1048576, sender);
  if (d.fault !== undefined) return `decode failed: ${codeName(d.fault.code)} (${(d.fault as Json).message ?? ""})`;
  const f = d.frame!;
  if (FRAME_TYPE_NAMES[f.type] !== t.frame.type || f.id !== t.frame.id) return `header: got ${FRAME_TYPE_NAMES[f.type]} #${f.id}`;
  const got: Json = {};
  for (const [k, v] of Object.entries(f.fields)) got[k] = fieldToJson(k, v);
  if (!same(got, t.frame.fields)) return `fields: got ${JSON.stringify(got)}`;
  if (t.encode) {
    const enc = toHex(encode(jsonFrame(t.frame)));
    if (enc !== t.hex) return `encode: got ${enc}`;
  }
  return undefined;
}

// ------------------------------------------------------------------ rejections

function drain(conn: Connection): { frames: Uint8Array; events: Event[] } {
  const parts: Uint8Array[] = [];
  let events: Event[] = [];
  for (;;) {
    const e = conn.pollEvent();
    if (e === undefined) break;
    events.push(e);
  }
  for (;;) {
    const b = conn.pollTransmit();
    if (b === undefined) break;
    parts.push(b);
  }
  events = events.filter((e) => e.type !== "Writable");
  const n = parts.reduce((a, p) => a + p.length, 0);
  const frames = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    frames.set(p, o);
    o += p.length;
  }
  return { frames, events };
}

/** Splits transmitted bytes into frames, each checked to be a valid frame from `sender` (§4, §5). */
function splitFrames(bytes: Uint8Array, sender: Role): Frame[] {
  const out: Frame[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    if (bytes.length - pos < 8) throw new Error("sent a truncated header");
    const h = readHeader(bytes, pos);
    if (h.version !== 1) throw new Error("sent a frame of version " + h.version);
    const frameBytes = bytes.subarray(pos, pos + 8 + h.length);
    if (frameBytes.length !== 8 + h.length) throw new Error("sent a truncated frame");
    const d = decodeFrame(h, frameBytes, 8, 1048576, sender);
    if (d.fault !== undefined) throw new Error(`sent an invalid ${FRAME_TYPE_NAMES[h.type]}: ${codeName(d.fault.code)} ${d.fault.message}`);
    out.push(d.frame);
    pos += 8 + h.length;
  }
  return out;
}

/** How received bytes reach the connection under test. */
type Binding = "websocket" | "bytes-each" | "bytes-read";
const BINDINGS: Binding[] = ["websocket", "bytes-each", "bytes-read"];

/** Feeds `bytes` (one WebSocket message, or one read of a byte stream) in the given binding. */
function feed(conn: Connection, bytes: Uint8Array, now: number, binding: Binding): void {
  if (binding === "websocket") conn.handleMessage(bytes, now);
  else if (binding === "bytes-read") conn.handleBytes(bytes, now);
  else for (let i = 0; i < bytes.length; i++) conn.handleBytes(bytes.subarray(i, i + 1), now);
}

function rejectionVector(t: Json, top: Json): string | undefined {
  for (const b of BINDINGS) {
    const err = rejectionIn(t, top, b);
    if (err !== undefined) return `${b}: ${err}`;
  }
  return undefined;
}

function rejectionIn(t: Json, top: Json, binding: Binding): string | undefined {
  const config = { ...top.config, ...(t.config ?? {}) };
  const bytes = fromHex(t.hex);
  // Decoder.
  const sender: Role | undefined = t.receiver === "server" ? "client" : t.receiver === "client" ? "server" : undefined;
  if (!(t.role_dependent && sender === undefined)) {
    const d = decodeOne(bytes, config.max_frame_payload, sender);
    if (d.fault === undefined) return "decoder accepted it";
    if (d.fault.code !== code(t.error)) return `decoder: ${codeName(d.fault.code)}, expected ${t.error}`;
    if (d.fault.frameType !== t.frame_type) return `decoder: frame_type ${d.fault.frameType}`;
  }
  // Receiver, for each role it applies to.
  const roles: Role[] = t.receiver === "either" ? ["client", "server"] : [t.receiver];
  for (const role of roles) {
    const conn = new Connection(role, { max_frame_payload: config.max_frame_payload, heartbeatMs: 0 }, 0);
    conn.start(0);
    feed(conn, fromHex(top.handshake[role]), 0, binding);
    drain(conn);
    if (conn.state !== "Open") return `${role}: handshake did not open the session`;
    feed(conn, bytes, 1, binding);
    const out = splitFrames(drain(conn).frames, role);
    if (t.reply) {
      if (out.length !== 1) return `${role}: sent ${out.length} frames, expected one ERROR`;
      const e = out[0]!;
      if (e.type !== FrameType.ERROR) return `${role}: sent ${FRAME_TYPE_NAMES[e.type]}`;
      if (e.fields["code"] !== code(t.error)) return `${role}: ERROR code ${codeName(e.fields["code"] as number)}, expected ${t.error}`;
      if (e.id !== t.request_id) return `${role}: ERROR id ${e.id}, expected ${t.request_id}`;
      if (code(t.error) !== ErrorCode.UNSUPPORTED_VERSION && e.fields["frame_type"] !== t.frame_type) {
        return `${role}: ERROR frame_type ${e.fields["frame_type"]}, expected ${t.frame_type}`;
      }
    } else if (out.length !== 0) {
      return `${role}: answered an ERROR with ${out.length} frames`;
    }
    const connectionError = code(t.error) <= 0x0f;
    if (connectionError !== conn.isClosed) return `${role}: closed=${conn.isClosed}, expected ${connectionError}`;
    if (!connectionError) {
      feed(conn, fromHex("18 00 00 00 00 00 00 00"), 2, binding);
      const pong = splitFrames(drain(conn).frames, role);
      if (pong.length !== 1 || pong[0]!.type !== FrameType.PONG) return `${role}: PING after the rejection not answered with PONG`;
    }
  }
  return undefined;
}

// ------------------------------------------------------------------ sessions

const DEFAULTS: Record<string, Json> = {
  final: false,
  retryable: false,
  deadline_ms: 0,
  timeout_ms: 0,
  description: "",
  tools: 0,
  heartbeat_ms: 30000,
};
const LIMIT_DEFAULTS: Record<string, number> = {
  max_frame_payload: 1048576,
  max_inflight: 128,
  max_tools: 256,
  max_chunk: 65536,
  initial_window: 262144,
  replay_buffer: 262144,
  resume_window_ms: 30000,
};

/** Our frame's fields in JSON form, with fields equal to their SPEC default dropped. */
function frameJson(f: Frame): Record<string, Json> {
  const out: Record<string, Json> = {};
  for (const [k, v] of Object.entries(f.fields)) {
    let j = fieldToJson(k, v);
    if (k in DEFAULTS && same(j, DEFAULTS[k])) continue;
    if (k === "capabilities" && (j as string[]).length === 0) continue;
    if (k === "limits") {
      const l: Json = {};
      for (const [lk, lv] of Object.entries(j)) if (LIMIT_DEFAULTS[lk] !== lv) l[lk] = lv;
      if (Object.keys(l).length === 0) continue;
      j = l;
    }
    out[k] = j;
  }
  return out;
}

function normalizeExpected(k: string, v: Json): Json {
  if ((k === "code") && typeof v === "string" && v !== "*") return code(v);
  return v;
}

function valueMatches(k: string, want: Json, got: Json): boolean {
  if (want === "*") return true;
  want = normalizeExpected(k, want);
  if (k === "capabilities") return same([...want].sort(), [...(got ?? [])].sort());
  if (k === "limits") {
    const w: Json = {};
    for (const [lk, lv] of Object.entries(want)) if (LIMIT_DEFAULTS[lk] !== lv) w[lk] = lv;
    return same(w, got ?? {});
  }
  return same(want, got);
}

class Session {
  captures = new Map<string, number>();

  resolveId(v: Json): number {
    if (typeof v === "string" && v.startsWith("$")) {
      const id = this.captures.get(v);
      if (id === undefined) throw new Error(`capture ${v} not set`);
      return id;
    }
    return v;
  }

  /** Whether `got` matches expected frame `want`; captures ids on first use. */
  frameMatches(want: Json, got: Frame, commit: boolean): string | undefined {
    if (FRAME_TYPE_NAMES[got.type] !== want.type) return `type ${FRAME_TYPE_NAMES[got.type]}, expected ${want.type}`;
    if (typeof want.id === "string") {
      const c = this.captures.get(want.id);
      if (c === undefined) {
        if (commit) this.captures.set(want.id, got.id);
      } else if (c !== got.id) return `id ${got.id}, expected ${want.id}=${c}`;
    } else if (want.id !== got.id) return `id ${got.id}, expected ${want.id}`;
    const fields = frameJson(got);
    const may = want.may ?? {};
    for (const [k, v] of Object.entries(want.fields ?? {})) {
      if (!(k in fields)) {
        if (k in DEFAULTS && same(normalizeExpected(k, v), DEFAULTS[k])) continue;
        if (k === "capabilities" && same(v, [])) continue;
        return `${FRAME_TYPE_NAMES[got.type]}: field ${k} absent`;
      }
      if (!valueMatches(k, v, fields[k])) return `${FRAME_TYPE_NAMES[got.type]}: ${k}=${JSON.stringify(fields[k])}, expected ${JSON.stringify(v)}`;
    }
    for (const [k, v] of Object.entries(fields)) {
      if (want.fields && k in want.fields) continue;
      if (k in may) {
        if (!valueMatches(k, may[k], v)) return `${FRAME_TYPE_NAMES[got.type]}: ${k}=${JSON.stringify(v)} not allowed`;
        continue;
      }
      return `${FRAME_TYPE_NAMES[got.type]}: unexpected field ${k}=${JSON.stringify(v)}`;
    }
    // `present`: fields ("a" or "a.b") that must be on the wire even at their SPEC default,
    // which the comparison above treats as absent (§5.1: a server announces what is in force).
    for (const p of (want.present ?? []) as string[]) {
      let at: unknown = Object.fromEntries(Object.entries(got.fields).map(([k, v]) => [k, fieldToJson(k, v)]));
      for (const part of p.split(".")) at = at !== null && typeof at === "object" ? (at as Record<string, unknown>)[part] : undefined;
      if (at === undefined) return `${FRAME_TYPE_NAMES[got.type]}: ${p} not sent (it must be, even at its default)`;
    }
    return undefined;
  }

  /** Matches the transmitted frames against `transmit` (with unordered groups and optional frames). */
  transmitMatches(expected: Json[], got: Frame[]): string | undefined {
    let i = 0;
    for (const want of expected) {
      if (want.unordered) {
        const group: Json[] = [...want.unordered];
        while (group.length > 0) {
          const g = got[i];
          if (g === undefined) return `missing ${group.length} frames of an unordered group`;
          const k = group.findIndex((w) => this.frameMatches(w, g, false) === undefined);
          if (k < 0) return `unexpected ${FRAME_TYPE_NAMES[g.type]} #${g.id} in an unordered group: ${this.frameMatches(group[0], g, false)}`;
          this.frameMatches(group[k], g, true);
          group.splice(k, 1);
          i++;
        }
        continue;
      }
      const g = got[i];
      if (g === undefined) {
        if (want.optional) continue;
        return `missing ${want.type} #${want.id}`;
      }
      const err = this.frameMatches(want, g, true);
      if (err !== undefined) {
        if (want.optional) continue;
        return err;
      }
      i++;
    }
    if (i < got.length) return `unexpected ${FRAME_TYPE_NAMES[got[i]!.type]} #${got[i]!.id} ${JSON.stringify(frameJson(got[i]!))}`;
    return undefined;
  }

  eventJson(e: Event): Json {
    switch (e.type) {
      case "Connected":
        return { event: e.type, connection_id: e.connectionId, version: e.version, heartbeat_ms: e.heartbeatMs, resumable: e.resumable };
      case "Invoked":
        return {
          event: e.type,
          id: e.id,
          tool: e.tool,
          args: e.args && fieldToJson("args", e.args),
          deadline_ms: e.deadlineMs,
          meta: e.meta && fieldToJson("meta", e.meta),
        };
      case "Interrupted":
        return { event: e.type, id: e.id, reason: e.reason };
      case "Chunk":
        return { event: e.type, id: e.id, seq: e.seq, data: fieldToJson("data", e.data), final: e.final };
      case "Ended":
        return {
          event: e.type,
          id: e.id,
          outcome: e.outcome,
          status: e.status,
          result: e.result && fieldToJson("result", e.result),
          body: e.body && fieldToJson("body", e.body),
          code: e.code,
        };
      case "Aborted":
        return { event: e.type, id: e.id, code: e.code };
      case "ToolAdded":
      case "ToolUpdated":
        return { event: e.type, name: e.tool.name, description: e.tool.description ?? "" };
      case "ToolRemoved":
        return { event: e.type, name: e.name };
      case "Requested":
        return { event: e.type, id: e.id, kind: e.kind, body: e.body && fieldToJson("body", e.body), invocation: e.invocation };
      case "GoAway":
        return { event: e.type, reason: e.reason, timeout_ms: e.timeoutMs };
      case "PeerError":
        return { event: e.type, id: e.id, code: e.code };
      case "Closed":
        return { event: e.type, reason: e.reason, code: e.code };
      default:
        return { event: e.type };
    }
  }

  eventsMatch(expected: Json[], got: Event[]): string | undefined {
    const g = got.map((e) => this.eventJson(e));
    if (expected.length !== g.length) {
      return `events ${JSON.stringify(g.map((e: Json) => e.event))}, expected ${JSON.stringify(expected.map((e) => e.event))}`;
    }
    for (let i = 0; i < expected.length; i++) {
      const w = expected[i];
      const e = g[i];
      if (w.event !== e.event) return `event ${i}: ${e.event}, expected ${w.event}`;
      for (const [k, v] of Object.entries(w)) {
        if (k === "event" || v === "*") continue;
        let want = v as Json;
        if (k === "id") want = this.resolveId(want);
        if (k === "code") want = code(want);
        let got = e[k];
        if (k === "description" && want === "" && got === undefined) got = "";
        if (!same(want, got)) return `event ${e.event}: ${k}=${JSON.stringify(got)}, expected ${JSON.stringify(want)}`;
      }
    }
    return undefined;
  }
}

function sessionConfig(c: Json): ConnectionConfig {
  const cfg: ConnectionConfig = {};
  for (const k of ["max_frame_payload", "max_inflight", "max_tools", "max_chunk", "initial_window"] as const) {
    if (c[k] !== undefined) cfg[k] = c[k];
  }
  if (c.heartbeat_ms !== undefined) cfg.heartbeatMs = c.heartbeat_ms;
  if (c.handshake_timeout_ms !== undefined) cfg.handshakeTimeoutMs = c.handshake_timeout_ms;
  if (c.rate_limit !== undefined) cfg.rateLimit = c.rate_limit;
  if (c.flood_limit !== undefined) cfg.floodLimit = c.flood_limit;
  if (c.requests !== undefined) cfg.requests = c.requests;
  if (c.resume !== undefined) cfg.resume = c.resume;
  if (c.replay_buffer !== undefined) cfg.replayBuffer = c.replay_buffer;
  if (c.resume_window_ms !== undefined) cfg.resumeWindowMs = c.resume_window_ms;
  if (c.auto_credit !== undefined) cfg.autoCredit = c.auto_credit;
  if (c.max_args_in_flight !== undefined) cfg.maxArgsInFlight = c.max_args_in_flight;
  if (c.max_buffered !== undefined) cfg.maxBuffered = c.max_buffered;
  if (c.connection_id !== undefined) cfg.connectionId = c.connection_id;
  if (c.resume_token !== undefined) cfg.resumeToken = fromHex(c.resume_token);
  if (c.tools !== undefined) {
    cfg.tools = c.tools.map((t: Json) => {
      const d: Json = { name: t.name };
      if (t.description !== undefined) d.description = t.description;
      if (t.input_schema !== undefined) d.inputSchema = new Raw(fromHex(t.input_schema.msgpack));
      if (t.annotations !== undefined) d.annotations = new Raw(fromHex(t.annotations.msgpack));
      return d;
    });
  }
  return cfg;
}

function any(v: Json): Raw | undefined {
  return v === undefined ? undefined : new Raw(fromHex(v.msgpack));
}

function runCommand(conn: Connection, s: Session, c: Json, now: number): void {
  switch (c.op) {
    case "invoke": {
      const opts: Json = {};
      if (c.deadline_ms !== undefined) opts.deadlineMs = c.deadline_ms;
      if (c.meta !== undefined) opts.meta = any(c.meta);
      conn.invoke(c.tool, any(c.args), opts);
      return;
    }
    case "reply":
      return conn.reply(s.resolveId(c.id), c.status, any(c.body));
    case "release":
      return conn.release(s.resolveId(c.id), c.len);
    case "stream":
      return conn.stream(s.resolveId(c.id), jsonToField("data", c.data) as string | Uint8Array, c.final ?? false);
    case "complete": {
      let metrics;
      if (c.metrics !== undefined) metrics = jsonToField("metrics", c.metrics) as Json;
      return conn.complete(s.resolveId(c.id), c.status, any(c.result), metrics);
    }
    case "fail":
      return conn.fail(s.resolveId(c.id), code(c.code), c.message, c.retryable);
    case "request":
      conn.request(c.kind, any(c.body), c.invocation);
      return;
    case "add_tool":
      return conn.addTool({
        name: c.name,
        ...(c.description !== undefined ? { description: c.description } : {}),
        ...(c.input_schema !== undefined ? { inputSchema: any(c.input_schema) } : {}),
        ...(c.annotations !== undefined ? { annotations: any(c.annotations) } : {}),
      });
    case "remove_tool":
      return conn.removeTool(c.name);
    case "interrupt":
      return conn.interrupt(s.resolveId(c.id), c.reason);
    case "goaway":
      return conn.goaway(c.reason, c.timeout_ms, now);
    case "close":
      return conn.close();
    case "resume":
      return conn.resume(now);
    default:
      throw new Error(`unknown command ${c.op}`);
  }
}

function sessionVector(t: Json): string | undefined {
  for (const b of BINDINGS) {
    // Vectors that depend on WebSocket message boundaries have no byte-stream form.
    if (b !== "websocket" && t.binding === "websocket") continue;
    const err = sessionIn(t, b);
    if (err !== undefined) return `${b}: ${err}`;
  }
  return undefined;
}

/** Replaces `$name` tokens in a `recv` hex string with the two bytes of the captured id. */
function recvHex(s: Session, h: string): string {
  return h.replace(/\$\w+/g, (m) => {
    const id = s.resolveId(m);
    return `${(id >> 8).toString(16).padStart(2, "0")} ${(id & 0xff).toString(16).padStart(2, "0")}`;
  });
}

function sessionIn(t: Json, binding: Binding): string | undefined {
  const conn = new Connection(t.role, sessionConfig(t.config), 0);
  const s = new Session();
  for (const [i, step] of t.steps.entries()) {
    const now: number = step.at_ms;
    const where = `step ${i} (at ${now} ms)`;
    let refused = false;
    try {
      if (step.start) conn.start(now);
      else if (step.recv !== undefined) feed(conn, fromHex(recvHex(s, step.recv)), now, binding);
      else if (step.recv_text !== undefined) conn.handleText(now);
      else if (step.command !== undefined) {
        try {
          runCommand(conn, s, step.command, now);
        } catch (e) {
          if (!(e instanceof ProtocolMisuse)) throw e;
          refused = true;
        }
      } else if (step.timeout) conn.handleTimeout(now);
      else if (step.transport_closed) conn.handleTransportClosed(now);
      else if (step.peer_close) conn.handleTransportClosed(now, true);
    } catch (e) {
      return `${where}: threw ${(e as Error).stack}`;
    }
    if (refused !== (step.refused === true)) return `${where}: ${refused ? "refused" : "accepted"} ${step.command.op}`;
    const { frames, events } = drain(conn);
    let sent: Frame[];
    try {
      sent = splitFrames(frames, t.role);
    } catch (e) {
      return `${where}: ${(e as Error).message}`;
    }
    const te = s.transmitMatches(step.transmit ?? [], sent);
    if (te !== undefined) return `${where}: transmit: ${te}`;
    const ee = s.eventsMatch(step.events ?? [], events);
    if (ee !== undefined) return `${where}: ${ee}`;
    if (step.state !== undefined && conn.state !== step.state) return `${where}: state ${conn.state}, expected ${step.state}`;
    if ((step.closed === true) !== conn.isClosed) return `${where}: closed=${conn.isClosed}`;
    if (step.close_code !== undefined && conn.closeCode !== step.close_code) return `${where}: close code ${conn.closeCode}, expected ${step.close_code}`;
  }
  return undefined;
}

// ------------------------------------------------------------------ main

function files(args: string[]): string[] {
  const out: string[] = [];
  const paths = args.length > 0 ? args : [join(repoRoot, "conformance", "vectors")];
  for (const p of paths) {
    if (statSync(p).isDirectory()) {
      for (const f of readdirSync(p).sort()) if (f.endsWith(".json")) out.push(join(p, f));
    } else out.push(p);
  }
  return out;
}

function main(): void {
  const argv = process.argv.slice(2);
  const verbose = argv.includes("-v");
  let passed = 0;
  let failed = 0;
  for (const file of files(argv.filter((a) => a !== "-v"))) {
    const doc = JSON.parse(readFileSync(file, "utf8"));
    if (doc.suite !== "asp-conformance") continue;
    if (doc.schema_version !== 1) throw new Error(`${file}: unknown schema_version ${doc.schema_version}`);
    for (const t of doc.tests) {
      let err: string | undefined;
      try {
        if (doc.kind === "frames") err = frameVector(t);
        else if (doc.kind === "rejections") err = rejectionVector(t, doc);
        else if (doc.kind === "sessions") err = sessionVector(t);
        else err = `unknown kind ${doc.kind}`;
      } catch (e) {
        err = `threw ${(e as Error).stack}`;
      }
      if (err === undefined) {
        passed++;
        if (verbose) console.log(`ok ${t.id}`);
      } else {
        failed++;
        console.log(`FAIL ${t.id}: ${err}`);
      }
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  // No vector found is a failure too (a wrong path must not pass quietly).
  process.exitCode = failed > 0 || passed === 0 ? 1 : 0;
}

const argv = process.argv.slice(2);
if (argv.includes("--against") || argv.includes("--serve")) {
  // Passed in, not imported back by live.ts: an import cycle through a top-level await deadlocks.
  const { liveMain } = await import("./live.js");
  await liveMain(argv, { files, Session, fromHex, recvHex, splitFrames });
} else {
  main();
}
