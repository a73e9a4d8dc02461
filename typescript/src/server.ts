/**
 * The ASP server for Node (`ws`): tools are async functions that may stream, ask the client,
 * and be interrupted; tool pushes reach every connection (SPEC §9); sessions resume (§11).
 * @module
 */
import { createServer, type IncomingMessage, type Server as HttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import { WebSocketServer, type WebSocket } from "ws";
import { ToolFailed, decodeRaw, mpEncode } from "./client.js";
import { ErrorCode, scopeOf } from "./codes.js";
import { Connection, type ConnectionConfig } from "./connection.js";
import { Driver, type SocketLike, SUBPROTOCOL, now } from "./driver.js";
import { AspError, ConnectionLost, ProtocolMisuse } from "./errors.js";
import type { Event, Metrics, ToolDef } from "./event.js";
import { Raw } from "./frame.js";
import { utf8Length } from "./msgpack.js";
import type { Limits } from "./limits.js";
import { DEFAULT_PATH } from "./url.js";

/** What a tool handler gets besides its arguments. */
export interface ToolContext {
  /** The invocation's request id. */
  id: number;
  /** The tool's name. */
  tool: string;
  /** The server's id of this connection. */
  connectionId: string;
  /** INVOKE `meta`, decoded. */
  meta: unknown;
  /** INVOKE `args` as sent: its MessagePack bytes (undefined without args). Return `new Raw(bytes)` to send a result byte for byte. */
  rawArgs: Uint8Array | undefined;
  /** Aborted when the client interrupts, the deadline passes, or the connection closes. */
  signal: AbortSignal;
  /**
   * Streams output (SPEC §5.3): text or bytes, split to the client's `max_chunk` and window;
   * resolves once queued, waiting for CREDIT when the window is spent (§7.5).
   */
  stream(data: string | Uint8Array): Promise<void>;
  /** Asks the client (REQUEST, §8); resolves with its answer, rejects with `RequestDeclined` or `AspError`. */
  ask(kind: string, body?: unknown): Promise<unknown>;
  /** Whether the client listed `requests` (§6.4), so `ask` may be used. */
  canAsk: boolean;
  /** Sets COMPLETE metrics (`wall_us` is measured if not set). */
  metrics: Metrics;
}

/** A tool handler: returns the result (COMPLETE ok); throws `ToolFailed` (COMPLETE failed) or `AspError` (ERROR). */
export type ToolHandler = (args: any, ctx: ToolContext) => unknown | Promise<unknown>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** A tool of the server. */
export interface ToolSpec {
  name: string;
  description?: string;
  /** JSON Schema of the arguments. */
  inputSchema?: unknown;
  annotations?: unknown;
  handler: ToolHandler;
}

/** A REQUEST answered `cancelled` or `declined` (SPEC §5.10). */
export class RequestDeclined extends Error {
  override name = "RequestDeclined";
  constructor(
    readonly status: "cancelled" | "declined",
    readonly body: unknown,
  ) {
    super(`request ${status}`);
  }
}

/** Server options. */
export interface ServeOptions extends Partial<Limits> {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0 (a free port). */
  port?: number;
  /** SPEC §2.1 path (default /v1/agent-socket). */
  path?: string;
  /** Require `Authorization: Bearer <token>` on the upgrade (401 otherwise, §2.1). */
  token?: string;
  tools?: ToolSpec[];
  /** Offer session resume (§11; default true). */
  resume?: boolean;
  heartbeatMs?: number;
  handshakeTimeoutMs?: number;
  rateLimit?: number;
  floodLimit?: number;
  resumeWindowMs?: number;
  /**
   * Bytes the INVOKEs running on one connection may hold (tool name, `args`, `meta`) before a
   * new one is refused with `TOO_MANY_INFLIGHT`, retryable (SPEC §7.2, §13.1; default 4 MiB).
   */
  maxArgsInFlight?: number;
  agent?: string;
}

/** Outgoing bytes queued in the socket above which streaming waits (SPEC §13 outgoing queue). */
const HIGH_WATER = 1 << 20;
const RESOLVED = Promise.resolve();

function hex(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}

function toDef(t: ToolSpec): ToolDef {
  const d: ToolDef = { name: t.name };
  if (t.description !== undefined) d.description = t.description;
  if (t.inputSchema !== undefined) d.inputSchema = new Raw(mpEncode(t.inputSchema));
  if (t.annotations !== undefined) d.annotations = new Raw(mpEncode(t.annotations));
  return d;
}

/** An application value as MessagePack; a `Raw` is taken as already encoded. */
function toRaw(v: unknown): Raw {
  return v instanceof Raw ? v : new Raw(mpEncode(v));
}

/**
 * A running handler: its `ToolContext` and the session's state for it (a class: its methods
 * live on the prototype, and a call makes one object).
 */
class Context implements ToolContext {
  metrics: Metrics = {};
  /** @internal Interrupted, past its deadline, or disconnected. */
  aborted = false;
  /** @internal Wakes a stream() waiting for window or socket room. */
  wake: (() => void) | undefined = undefined;
  private abortReason: unknown = undefined;
  /** Made only when the handler looks at its signal (most never do). */
  private ac: AbortController | undefined = undefined;
  constructor(
    private readonly session: Session,
    readonly id: number,
    readonly tool: string,
    readonly meta: unknown,
    readonly rawArgs: Uint8Array | undefined,
    /** @internal When it started (ms), for `wall_us`. */
    readonly started: number,
  ) {}
  get connectionId(): string {
    return this.session.conn.connectionId;
  }
  get signal(): AbortSignal {
    if (this.ac === undefined) {
      this.ac = new AbortController();
      if (this.aborted) this.ac.abort(this.abortReason);
    }
    return this.ac.signal;
  }
  get canAsk(): boolean {
    return this.session.conn.peerListed("requests");
  }
  stream(data: string | Uint8Array): Promise<void> {
    return this.session.stream(this, data);
  }
  ask(kind: string, body?: unknown): Promise<unknown> {
    return this.session.ask(this.id, kind, body);
  }
  /** @internal Why it was aborted. */
  get reason(): unknown {
    return this.abortReason;
  }
  /** @internal Aborts the signal (once) and wakes a waiting stream(). */
  abort(reason: unknown): void {
    if (!this.aborted) {
      this.aborted = true;
      this.abortReason = reason;
      this.ac?.abort(reason);
    }
    this.wake?.();
  }
}

/** One client connection: its core, driver, and running handlers. */
class Session {
  readonly conn: Connection;
  readonly driver: Driver;
  private running = new Map<number, Context>();
  private asks = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  constructor(
    private readonly server: Server,
    config: ConnectionConfig,
  ) {
    this.conn = new Connection("server", config, now());
    this.driver = new Driver(this.conn, (e) => this.onEvent(e));
  }

  start(socket: SocketLike): void {
    this.driver.attach(socket);
    this.conn.start(now());
    this.driver.pump();
  }

  private onEvent(e: Event): void {
    switch (e.type) {
      case "Connected":
        if (this.conn.sessionToken !== undefined) this.server.sessions.set(hex(this.conn.sessionToken), this);
        this.server.connections.add(this);
        return;
      case "Invoked":
        this.run(e.id, e.tool, e.args, decodeRaw(e.meta));
        return;
      case "Interrupted":
        this.running.get(e.id)?.abort(new AspError(ErrorCode.INTERNAL, "interrupted"));
        return;
      case "Aborted": {
        const r = this.running.get(e.id);
        this.running.delete(e.id);
        r?.abort(new AspError(e.code));
        return;
      }
      case "Writable":
        this.running.get(e.id)?.wake?.();
        return;
      case "Ended": {
        const a = this.asks.get(e.id);
        if (a === undefined) return;
        this.asks.delete(e.id);
        if (e.outcome === "reply") {
          const body = decodeRaw(e.body);
          if (e.status === 0) a.resolve(body);
          else a.reject(new RequestDeclined(e.status === 1 ? "cancelled" : "declined", body));
        } else if (e.outcome === "error") a.reject(new AspError(e.code ?? ErrorCode.INTERNAL, e.message, e.retryable));
        else a.reject(new ConnectionLost());
        return;
      }
      case "ResumeRequested": {
        // §11.2 step 3: find the detached session by token; this new connection is then dropped.
        const old = this.server.sessions.get(hex(e.token));
        const socket = this.driver.socket;
        if (old !== undefined && old !== this && socket !== undefined && old.conn.state !== "Closed") {
          // §11.3 take-over: the client's RESUME shows its old transport is gone, even if it
          // still looks alive here (half-open TCP): detach it at once, closed without an ERROR.
          if (old.conn.detach(now())) old.driver.pump();
          this.driver.socket = undefined;
          this.driver.dispose();
          if (old.conn.resumeSession(e.received, now())) {
            old.driver.attach(socket);
            old.driver.pump();
            for (const r of old.running.values()) r.wake?.();
            return;
          }
          old.driver.pump();
          this.driver.socket = socket;
        }
        this.conn.refuseResume();
        return;
      }
      case "Closed":
        for (const r of this.running.values()) r.abort(new ConnectionLost());
        this.running.clear();
        this.driver.dispose();
        this.server.connections.delete(this);
        if (this.conn.sessionToken !== undefined) {
          const key = hex(this.conn.sessionToken);
          if (this.server.sessions.get(key) === this) this.server.sessions.delete(key);
        }
        return;
      default:
        return;
    }
  }

  private run(id: number, tool: string, rawArgs: Raw | undefined, meta: unknown): void {
    const args = decodeRaw(rawArgs);
    const spec = this.server.toolSpecs.get(tool);
    const ctx = new Context(this, id, tool, meta, rawArgs?.bytes, now());
    this.running.set(id, ctx);
    let value: unknown;
    try {
      if (spec === undefined) throw new AspError(ErrorCode.UNKNOWN_TOOL, tool);
      value = spec.handler(args, ctx);
    } catch (e) {
      this.finish(ctx, undefined, e);
      return;
    }
    if (value !== null && typeof (value as { then?: unknown })?.then === "function") {
      (value as Promise<unknown>).then(
        (r) => this.finish(ctx, r, undefined),
        (e) => this.finish(ctx, undefined, e ?? new Error("rejected")),
      );
    } else {
      // A handler that answers at once completes in this turn, without a promise.
      this.finish(ctx, value, undefined);
    }
  }

  private finish(ctx: Context, result: unknown, error: unknown): void {
    const id = ctx.id;
    if (this.running.get(id) !== ctx) return; // ended by the protocol (deadline, ERROR, close)
    this.running.delete(id);
    if (ctx.metrics.wall_us === undefined) ctx.metrics.wall_us = Math.round((now() - ctx.started) * 1000);
    try {
      this.driver.command(() => {
        if (ctx.aborted && (error !== undefined || result === undefined)) {
          // §7.3: an interrupted invocation ends COMPLETE(cancelled).
          this.conn.complete(id, 1, undefined, ctx.metrics);
        } else if (error instanceof ToolFailed) {
          this.conn.complete(id, 2, new Raw(mpEncode(error.result ?? null)), ctx.metrics);
        } else if (error instanceof AspError && scopeOf(error.code) !== "connection" && scopeOf(error.code) !== "frame") {
          this.conn.fail(id, error.code, error.message, error.retryable);
        } else if (error !== undefined) {
          // A bug or crash in the handler (§12.2 INTERNAL, retryable).
          this.conn.fail(id, ErrorCode.INTERNAL, (error as Error)?.message ?? String(error), true);
        } else {
          this.conn.complete(id, 0, result === undefined ? undefined : toRaw(result), ctx.metrics);
        }
      });
    } catch (e) {
      if (!(e instanceof ProtocolMisuse)) throw e;
      // A result over the client's max_frame_payload: say so instead of hanging (§3.6).
      try {
        this.driver.command(() => this.conn.fail(id, ErrorCode.TOOL_FAILED, `cannot send the result: ${(e as Error).message}`));
      } catch {
        /* the session is gone */
      }
    }
  }

  /** @internal */
  stream(running: Context, data: string | Uint8Array): Promise<void> {
    const id = running.id;
    // Fast path: the chunk fits the window and the socket has room; no promise to wait on.
    if (!running.aborted) {
      const cap = this.conn.streamCapacity(id);
      const socket = this.driver.socket;
      const n = typeof data === "string" ? utf8Length(data) : data.length;
      if (n > 0 && n <= cap && (socket === undefined || socket.bufferedAmount <= HIGH_WATER)) {
        this.driver.command(() => this.conn.stream(id, data));
        return RESOLVED;
      }
    }
    return this.streamSlow(id, running, data);
  }

  private async streamSlow(id: number, running: Context, data: string | Uint8Array): Promise<void> {
    let bytes: Uint8Array | undefined = typeof data === "string" ? undefined : data;
    let text = typeof data === "string" ? data : undefined;
    for (;;) {
      if (running.aborted) throw running.reason ?? new AspError(ErrorCode.INTERNAL, "interrupted");
      const cap = this.conn.streamCapacity(id);
      if (cap < 0) throw new ConnectionLost("the invocation is no longer running");
      const socket = this.driver.socket;
      // Detached (no socket): data is queued for replay, within the window and the replay buffer (§11.3).
      const full = socket !== undefined && socket.bufferedAmount > HIGH_WATER;
      if (cap > 0 && !full) {
        if (text !== undefined) {
          if (utf8Length(text) <= cap) {
            this.driver.command(() => this.conn.stream(id, text!));
            return;
          }
          // Split text at character boundaries within `cap` bytes.
          const enc = new TextEncoder().encode(text);
          let end = cap;
          while (end > 0 && (enc[end]! & 0xc0) === 0x80) end--;
          if (end > 0) {
            const head = new TextDecoder().decode(enc.subarray(0, end));
            this.driver.command(() => this.conn.stream(id, head));
            text = text.slice(head.length);
            continue;
          }
          // Room for less than the next character (replay room, §11.1): wait for more.
        } else {
          const b = bytes!;
          if (b.length === 0) return;
          if (b.length <= cap) {
            this.driver.command(() => this.conn.stream(id, b));
            return;
          }
          this.driver.command(() => this.conn.stream(id, b.subarray(0, cap)));
          bytes = b.subarray(cap);
          continue;
        }
      }
      await new Promise<void>((resolve) => {
        running.wake = resolve;
        // Socket back-pressure has no event on a WebSocket: look again shortly.
        if (full) setTimeout(resolve, 1);
      });
      running.wake = undefined;
    }
  }

  /** @internal */
  ask(invocation: number, kind: string, body: unknown): Promise<unknown> {
    return new Promise((resolve, reject) => {
      try {
        const id = this.driver.command(() =>
          this.conn.request(kind, body === undefined ? undefined : toRaw(body), invocation),
        );
        this.asks.set(id, { resolve, reject });
      } catch (e) {
        reject(e);
      }
    });
  }

  pushTool(def: ToolDef): void {
    try {
      this.driver.command(() => this.conn.addTool(def));
    } catch (e) {
      if (!(e instanceof ProtocolMisuse)) throw e;
    }
  }

  dropTool(name: string): void {
    try {
      this.driver.command(() => this.conn.removeTool(name));
    } catch (e) {
      if (!(e instanceof ProtocolMisuse)) throw e;
    }
  }

  goaway(timeoutMs: number): void {
    try {
      this.driver.command(() => this.conn.goaway("server shutting down", timeoutMs, now()));
    } catch (e) {
      if (!(e instanceof ProtocolMisuse)) throw e;
    }
  }
}

/** A running ASP server. Create it with `serve`. */
export class Server {
  /** @internal */ readonly toolSpecs = new Map<string, ToolSpec>();
  /** @internal */ readonly connections = new Set<Session>();
  /** @internal */ readonly sessions = new Map<string, Session>();
  /** @internal */ readonly http: HttpServer;
  private readonly wss: WebSocketServer;
  private readonly config: ServeOptions;
  /** The `ws://` URL clients connect to. */
  url = "";

  /** @internal */
  constructor(options: ServeOptions) {
    this.config = options;
    for (const t of options.tools ?? []) this.toolSpecs.set(t.name, t);
    const path = options.path ?? DEFAULT_PATH;
    this.http = createServer((_req, res) => {
      res.writeHead(426, { "Content-Type": "text/plain", Upgrade: "websocket" });
      res.end(`ASP: upgrade to a WebSocket with subprotocol ${SUBPROTOCOL} on ${path}\n`);
    });
    this.wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      maxPayload: 64 << 20,
      handleProtocols: (protocols) => (protocols.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
    });
    this.http.on("upgrade", (req: IncomingMessage, socket, head) => {
      const refuse = (status: number, text: string, extra = "") => {
        socket.end(`HTTP/1.1 ${status} ${text}\r\nContent-Type: text/plain\r\nConnection: close\r\n${extra}\r\n${text}\n`);
      };
      const url = new URL(req.url ?? "/", "http://x");
      if (url.pathname !== path) return refuse(404, "Not Found");
      // §2.1: the client MUST offer asp-v1; refuse otherwise.
      const offered = (req.headers["sec-websocket-protocol"] ?? "").split(",").map((s) => s.trim());
      if (!offered.includes(SUBPROTOCOL)) return refuse(400, `Bad Request: subprotocol ${SUBPROTOCOL} is required`);
      if (options.token !== undefined && req.headers["authorization"] !== `Bearer ${options.token}`) {
        return refuse(401, "Unauthorized", "WWW-Authenticate: Bearer\r\n");
      }
      this.wss.handleUpgrade(req, socket, head, (ws: WebSocket) => this.accept(ws));
    });
  }

  /** @internal */
  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.http.once("error", reject);
      this.http.listen(this.config.port ?? 0, this.config.host ?? "127.0.0.1", () => {
        const a = this.http.address() as AddressInfo;
        const host = a.family === "IPv6" ? `[${a.address}]` : a.address;
        this.url = `ws://${host}:${a.port}${this.config.path ?? DEFAULT_PATH}`;
        resolve();
      });
    });
  }

  private accept(ws: WebSocket): void {
    const o = this.config;
    const cfg: ConnectionConfig = {
      tools: [...this.toolSpecs.values()].map(toDef),
      resume: o.resume ?? true,
      agent: o.agent ?? "asp-ts/0.1",
    };
    for (const k of ["max_frame_payload", "max_inflight", "max_tools", "max_chunk", "initial_window"] as const) {
      if (o[k] !== undefined) cfg[k] = o[k];
    }
    if (o.heartbeatMs !== undefined) cfg.heartbeatMs = o.heartbeatMs;
    if (o.handshakeTimeoutMs !== undefined) cfg.handshakeTimeoutMs = o.handshakeTimeoutMs;
    if (o.rateLimit !== undefined) cfg.rateLimit = o.rateLimit;
    if (o.floodLimit !== undefined) cfg.floodLimit = o.floodLimit;
    if (o.resumeWindowMs !== undefined) cfg.resumeWindowMs = o.resumeWindowMs;
    if (o.maxArgsInFlight !== undefined) cfg.maxArgsInFlight = o.maxArgsInFlight;
    const session = new Session(this, cfg);
    session.start(ws as unknown as SocketLike);
  }

  /** Adds a tool, or replaces one of the same name, and pushes it to every client (TOOL_DEF, §9). */
  addTool(tool: ToolSpec): void {
    this.toolSpecs.set(tool.name, tool);
    const def = toDef(tool);
    for (const s of this.connections) s.pushTool(def);
  }

  /** Removes a tool and tells every client that holds it. */
  removeTool(name: string): void {
    if (!this.toolSpecs.delete(name)) return;
    for (const s of this.connections) s.dropTool(name);
  }

  /** The tool names. */
  get tools(): string[] {
    return [...this.toolSpecs.keys()];
  }

  /**
   * Graceful shutdown: GOAWAY to every connection (§6.5); each closes when its exchanges end
   * or after `timeoutMs`; then the listener closes.
   */
  async close(timeoutMs = 5000): Promise<void> {
    for (const s of [...this.connections]) s.goaway(timeoutMs);
    const deadline = Date.now() + timeoutMs + 1000;
    while (this.wss.clients.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    for (const c of this.wss.clients) c.terminate();
    for (const s of this.sessions.values()) s.conn.close();
    this.sessions.clear();
    await new Promise<void>((r) => this.wss.close(() => r()));
    await new Promise<void>((r) => this.http.close(() => r()));
  }
}

/** Starts an ASP server: `const server = await serve({ tools: [...] })`; `server.url` is where it listens. */
export async function serve(options: ServeOptions = {}): Promise<Server> {
  const s = new Server(options);
  await s.listen();
  return s;
}
