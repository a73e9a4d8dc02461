/**
 * The ASP client: connect, mirror the server's tools, invoke and stream, answer server
 * questions, interrupt, and resume after a dropped transport. Runs in browsers and Node; the
 * WebSocket comes from the caller (`index.ts` uses the browser's, `node.ts` uses `ws`).
 * @module
 */
import { ErrorCode } from "./codes.js";
import { Connection, type ConnectionConfig } from "./connection.js";
import { Driver, type SocketLike, SUBPROTOCOL, now } from "./driver.js";
import { AspError, ConnectionLost, ProtocolMisuse } from "./errors.js";
import type { Event, Metrics, ToolDef } from "./event.js";
import { Raw } from "./frame.js";
import type { Limits } from "./limits.js";
import { utf8Length } from "./msgpack.js";
import { decodeValue, encodeValue } from "./value.js";

/** Application value → MessagePack bytes (a fresh copy). */
export const mpEncode: (v: unknown) => Uint8Array = encodeValue;
/** MessagePack bytes → application value. */
export const mpDecode: (b: Uint8Array) => unknown = decodeValue;

/**
 * Opens a WebSocket offering the given subprotocol (and, where the platform allows, headers).
 * `maxMessage`: the longest message to accept, `65 536 + 2 × (8 + max_frame_payload)` (SPEC
 * §2.1, §13.1); a platform that can bound incoming messages refuses longer ones.
 */
export type SocketFactory = (url: string, protocol: string, headers: Record<string, string>, maxMessage?: number) => SocketLike;

/** A tool as the client sees it, with its schema and annotations decoded. */
export interface Tool {
  name: string;
  description: string;
  inputSchema?: unknown;
  annotations?: unknown;
}

/** A question from the server (SPEC §8). */
export interface ServerRequest {
  id: number;
  kind: string;
  body: unknown;
  /** The invocation the request is part of, if any. */
  invocation?: number;
  /** Aborted when the server interrupts the request. */
  signal: AbortSignal;
}

/** What a request handler may return besides a plain answer. */
export class Reply {
  private constructor(
    readonly status: 0 | 1 | 2,
    readonly body: unknown,
  ) {}
  /** Answered with `body` (the same as returning `body`). */
  static answer(body: unknown): Reply {
    return new Reply(0, body);
  }
  static cancelled(body?: unknown): Reply {
    return new Reply(1, body);
  }
  static declined(body?: unknown): Reply {
    return new Reply(2, body);
  }
}

/** Options of `connect`. */
export interface ConnectOptions extends Partial<Limits> {
  /** Bearer token for the upgrade request (SPEC §2.1, §13.1). Node only: browsers cannot set headers. */
  token?: string;
  /** Aborts the connection attempt, and closes the client when aborted later. */
  signal?: AbortSignal;
  /** Answers server questions (REQUEST, SPEC §8). Without it the client does not list `requests`. */
  onRequest?: (request: ServerRequest) => unknown | Promise<unknown>;
  /** Resume the session on a new transport when the old one drops (SPEC §11; default true). */
  reconnect?: boolean | { attempts?: number; delayMs?: number };
  heartbeatMs?: number;
  handshakeTimeoutMs?: number;
  agent?: string;
  /**
   * Bytes the server's unanswered REQUESTs may hold (kind and `body`) before a new one is
   * refused with `TOO_MANY_INFLIGHT`, retryable (SPEC §8, §13.1; default 4 MiB).
   */
  maxArgsInFlight?: number;
  /**
   * Bytes of chunks one call keeps for a later iteration when the caller awaits only its
   * `result` (default 1 MiB). A call being iterated holds at most its flow-control window
   * (`initial_window`): credit follows consumption (§7.5), so a peer cannot send more.
   */
  maxBufferedPerCall?: number;
  /** Opens the WebSocket (set by the platform entry points). */
  socketFactory?: SocketFactory;
}

/** Options of one invocation. */
export interface InvokeOptions {
  /** Sends INTERRUPT when aborted (SPEC §7.3); the call then ends `cancelled`. */
  signal?: AbortSignal;
  /** SPEC §7.4 time budget. */
  deadlineMs?: number;
  /** Opaque context (trace ids…), any MessagePack-encodable value. */
  meta?: unknown;
}

/** How an invocation completed. */
export interface Completion {
  status: "ok" | "cancelled" | "failed";
  /** The decoded result (or the failure description). */
  value: unknown;
  metrics?: Metrics;
}

/** COMPLETE(failed): the tool ran and failed (SPEC §5.6). Carries `TOOL_FAILED`'s code. */
export class ToolFailed extends AspError {
  override name = "ToolFailed";
  constructor(readonly result: unknown) {
    super(ErrorCode.TOOL_FAILED, typeof result === "string" ? result : JSON.stringify(result) ?? "failed", false);
  }
}

type Listener<T> = (value: T) => void;

/** Events a `Client` emits. */
export interface ClientEvents {
  /** The tool set changed (SPEC §9); the argument is the whole new set. */
  tools: ReadonlyMap<string, Tool>;
  /** The server is draining (GOAWAY, §6.5). */
  goaway: { reason?: string; timeoutMs: number };
  /** The transport dropped and the session waits to be resumed. */
  detached: void;
  /** The session continues on a new transport. */
  resumed: void;
  /** The connection closed for good. */
  close: { reason: string; code?: number; error?: Error };
  /** An ERROR that ended nothing (warnings, tool-set errors). */
  warning: AspError;
}

/**
 * The application value of an `any` field (SPEC §4.2: opaque to the protocol), or its bytes
 * when they do not decode. Shared by the client and the server.
 */
export function decodeRaw(r: Raw | undefined): unknown {
  if (r === undefined) return undefined;
  try {
    return mpDecode(r.bytes);
  } catch {
    return r.bytes;
  }
}

function toTool(t: ToolDef): Tool {
  const out: Tool = { name: t.name, description: t.description ?? "" };
  if (t.inputSchema !== undefined) out.inputSchema = decodeRaw(t.inputSchema);
  if (t.annotations !== undefined) out.annotations = decodeRaw(t.annotations);
  return out;
}

/** One invocation: an async iterable of its chunks, with `result` and `interrupt()`. */
export class Call implements AsyncIterable<string | Uint8Array> {
  /** The invocation's request id. */
  readonly id: number;
  private promise: Promise<Completion> | undefined;
  private resolve: ((c: Completion) => void) | undefined;
  private reject: ((e: Error) => void) | undefined;
  private completion: Completion | undefined;
  private queue: (string | Uint8Array)[] = [];
  private head = 0;
  private done = false;
  private error: Error | undefined;
  private waiter: (() => void) | undefined;
  private iterating = false;
  private releaseAll = false;
  private onAbort: (() => void) | undefined;
  private queued = 0;
  private discarded = 0;

  /** @internal */
  constructor(
    private readonly client: Client,
    id: number,
    private readonly signal?: AbortSignal,
    private readonly maxBuffered = 1 << 20,
  ) {
    this.id = id;
    if (signal !== undefined) {
      const onAbort = () => this.interrupt("aborted");
      if (signal.aborted) queueMicrotask(onAbort);
      else {
        signal.addEventListener("abort", onAbort, { once: true });
        this.onAbort = onAbort;
      }
    }
  }

  /**
   * Settles when the invocation ends: resolves for ok and cancelled, rejects with
   * `ToolFailed`, `AspError` or `ConnectionLost`. Made on first use, so a caller that only
   * iterates never meets an unhandled rejection. Awaiting only the result still lets the
   * stream run: chunks nobody iterates are credited at once (SPEC §7.5) and kept.
   */
  get result(): Promise<Completion> {
    if (this.promise === undefined) {
      if (this.done) {
        this.promise = this.error !== undefined ? Promise.reject(this.error) : Promise.resolve(this.completion!);
      } else {
        this.promise = new Promise<Completion>((res, rej) => {
          this.resolve = res;
          this.reject = rej;
        });
      }
      if (!this.iterating && !this.releaseAll) {
        this.releaseAll = true;
        if (this.queued > 0) this.client.release(this.id, this.queued);
      }
    }
    return this.promise;
  }

  /** Asks the server to stop (SPEC §7.3). The call then ends, normally `cancelled`. */
  interrupt(reason?: string): void {
    if (this.done) return;
    this.client.interruptCall(this.id, reason);
  }

  /** Bytes of chunks received and not yet iterated (bounded: see `maxBufferedPerCall`). */
  get buffered(): number {
    return this.queued;
  }

  /** @internal */
  onChunk(data: string | Uint8Array): void {
    const n = chunkLen(data);
    if (this.releaseAll) {
      // Nobody iterates now: credit at once so the tool finishes, but keep only a bounded tail…
      this.client.release(this.id, n);
      if (this.queued + n > this.maxBuffered) {
        // …of the first chunks; the rest is counted and dropped (iteration reports it).
        this.discarded += n;
        return;
      }
    }
    this.queue.push(data);
    this.queued += n;
    this.wake();
  }

  /** @internal */
  onEnd(c: Completion | undefined, error: Error | undefined): void {
    this.done = true;
    if (this.onAbort !== undefined) this.signal?.removeEventListener("abort", this.onAbort);
    if (error !== undefined) {
      this.error = error;
      this.reject?.(error);
    } else {
      this.completion = c;
      this.resolve?.(c!);
    }
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  [Symbol.asyncIterator](): AsyncIterator<string | Uint8Array> {
    this.iterating = true;
    // Hand-written (not an async generator): a chunk already queued costs one resolved promise.
    const next = (): Promise<IteratorResult<string | Uint8Array>> => {
      if (this.head < this.queue.length) {
        const c = this.queue[this.head]!;
        this.queue[this.head++] = "";
        this.queued -= chunkLen(c);
        if (this.head === this.queue.length) {
          this.queue.length = 0;
          this.head = 0;
        }
        // Credit follows consumption (§7.5).
        if (!this.releaseAll) this.client.release(this.id, chunkLen(c));
        return Promise.resolve({ value: c, done: false });
      }
      if (this.discarded > 0) {
        const n = this.discarded;
        this.discarded = 0;
        return Promise.reject(
          new ProtocolMisuse(`${n} bytes of chunks were dropped: the call was awaited before it was iterated, beyond maxBufferedPerCall`),
        );
      }
      if (this.done) {
        return this.error !== undefined ? Promise.reject(this.error) : Promise.resolve({ value: undefined, done: true });
      }
      return new Promise<void>((r) => (this.waiter = r)).then(next);
    };
    return {
      next,
      return: (): Promise<IteratorResult<string | Uint8Array>> => {
        // Leaving the loop early (break) stops the invocation.
        if (!this.done) this.interrupt("iteration stopped");
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  /** Collects every text chunk (and awaits the result). */
  async text(): Promise<string> {
    let s = "";
    for await (const c of this) s += typeof c === "string" ? c : new TextDecoder().decode(c);
    return s;
  }
}

function chunkLen(c: string | Uint8Array): number {
  return typeof c === "string" ? utf8Length(c) : c.length;
}

const STATUS = ["ok", "cancelled", "failed"] as const;

/** A connected ASP client. Create it with `connect`. */
export class Client {
  private conn: Connection;
  private driver: Driver;
  private calls = new Map<number, Call>();
  private requestAborts = new Map<number, AbortController>();
  private listeners = new Map<keyof ClientEvents, Set<Listener<never>>>();
  private toolMap = new Map<string, Tool>();
  private opened: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private closedError: Error | undefined;
  private reconnectAttempts = 0;
  private url: string;
  private headers: Record<string, string>;
  private factory: SocketFactory;
  private reconnect: { attempts: number; delayMs: number } | undefined;
  private maxBufferedPerCall: number;
  /** The server's name for this connection (SPEC §5.1). */
  connectionId = "";
  /** Resolves when the connection has closed for good. */
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;

  /** @internal */
  constructor(url: string, options: ConnectOptions, factory: SocketFactory) {
    this.url = url;
    this.factory = factory;
    this.headers = options.token !== undefined ? { Authorization: `Bearer ${options.token}` } : {};
    const r = options.reconnect ?? true;
    this.reconnect = r === false ? undefined : { attempts: 5, delayMs: 100, ...(r === true ? {} : r) };
    this.maxBufferedPerCall = options.maxBufferedPerCall ?? 1 << 20;
    const cfg: ConnectionConfig = {
      requests: options.onRequest !== undefined,
      resume: this.reconnect !== undefined,
      // The application consumes chunks by iterating; credit follows consumption (§7.5).
      autoCredit: false,
    };
    for (const k of ["max_frame_payload", "max_inflight", "max_tools", "max_chunk", "initial_window"] as const) {
      if (options[k] !== undefined) cfg[k] = options[k];
    }
    if (options.heartbeatMs !== undefined) cfg.heartbeatMs = options.heartbeatMs;
    if (options.handshakeTimeoutMs !== undefined) cfg.handshakeTimeoutMs = options.handshakeTimeoutMs;
    if (options.maxArgsInFlight !== undefined) cfg.maxArgsInFlight = options.maxArgsInFlight;
    cfg.agent = options.agent ?? "asp-ts/0.1";
    this.conn = new Connection("client", cfg, now());
    this.onRequest = options.onRequest;
    this.driver = new Driver(this.conn, (e) => this.onEvent(e), () => this.onSocketGone());
    this.closed = new Promise((r) => (this.resolveClosed = r));
  }

  private onRequest: ConnectOptions["onRequest"];

  /** @internal Opens the transport and completes the handshake (with the initial tool set). */
  open(signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.opened = { resolve, reject };
      if (signal !== undefined) {
        const onAbort = () => {
          this.close();
          this.failOpen(new AspError(ErrorCode.HANDSHAKE_TIMEOUT, "connect aborted", false));
        };
        if (signal.aborted) return onAbort();
        signal.addEventListener("abort", onAbort, { once: true });
      }
      this.openSocket(() => this.conn.start(now()));
    });
  }

  private openSocket(onOpen: () => void): void {
    let socket: SocketLike;
    try {
      socket = this.factory(this.url, SUBPROTOCOL, this.headers, 65536 + 2 * (8 + this.conn.limits.max_frame_payload));
    } catch (e) {
      this.failOpen(e as Error);
      return;
    }
    socket.onopen = () => {
      // §2.1: a client MUST fail the connection if the server did not select asp-v1.
      if (socket.protocol !== SUBPROTOCOL) {
        socket.onclose = null;
        socket.close(1002);
        this.failOpen(new AspError(ErrorCode.PROTOCOL_VIOLATION, `server selected subprotocol "${socket.protocol}", not ${SUBPROTOCOL}`, false));
        return;
      }
      this.driver.attach(socket);
      onOpen();
      this.driver.pump();
    };
    socket.onclose = (ev) => {
      // Closed before it opened: the upgrade failed.
      socket.onclose = null;
      if (this.conn.state === "Detached") return this.onSocketGone();
      this.failOpen(new ConnectionLost(`WebSocket closed before opening (code ${ev.code}${ev.reason ? ": " + ev.reason : ""})`));
    };
    socket.onerror = () => undefined;
  }

  private failOpen(e: Error): void {
    const o = this.opened;
    this.opened = undefined;
    if (this.conn.state !== "Closed") this.conn.close();
    this.driver.pump();
    this.finish(e);
    o?.reject(e);
  }

  /** Bytes of chunks received by calls in flight and not yet iterated. */
  get buffered(): number {
    let n = 0;
    for (const c of this.calls.values()) n += c.buffered;
    return n;
  }

  /** The server's tool set as last mirrored (SPEC §9). */
  get tools(): ReadonlyMap<string, Tool> {
    return this.toolMap;
  }

  /** `Handshaking`, `Open`, `Draining`, `Detached` or `Closed` (SPEC §6.1). */
  get state(): string {
    return this.conn.state;
  }

  /** Subscribes to an event; returns the unsubscribe function. */
  on<K extends keyof ClientEvents>(event: K, fn: Listener<ClientEvents[K]>): () => void {
    let set = this.listeners.get(event);
    if (set === undefined) this.listeners.set(event, (set = new Set()));
    set.add(fn as Listener<never>);
    return () => set!.delete(fn as Listener<never>);
  }

  private fire<K extends keyof ClientEvents>(event: K, value: ClientEvents[K]): void {
    for (const fn of this.listeners.get(event) ?? []) {
      try {
        (fn as Listener<ClientEvents[K]>)(value);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  /**
   * Invokes a tool (SPEC §5.2). `args` is any MessagePack-encodable value. Throws
   * `ProtocolMisuse` if the client cannot invoke now (closed, draining, at the server's
   * `max_inflight`).
   */
  invoke(tool: string, args?: unknown, options: InvokeOptions = {}): Call {
    if (this.closedError !== undefined && this.conn.state === "Closed") throw this.closedError;
    const opts: { deadlineMs?: number; meta?: Raw } = {};
    if (options.deadlineMs !== undefined) opts.deadlineMs = options.deadlineMs;
    if (options.meta !== undefined) opts.meta = new Raw(mpEncode(options.meta));
    const rawArgs = args === undefined ? undefined : new Raw(mpEncode(args));
    const id = this.driver.command(() => this.conn.invoke(tool, rawArgs, opts));
    const call = new Call(this, id, options.signal, this.maxBufferedPerCall);
    this.calls.set(id, call);
    return call;
  }

  /** Invokes and awaits the result value (ok), discarding chunks. */
  async call(tool: string, args?: unknown, options?: InvokeOptions): Promise<unknown> {
    return (await this.invoke(tool, args, options).result).value;
  }

  /** @internal */
  interruptCall(id: number, reason?: string): void {
    try {
      this.driver.command(() => this.conn.interrupt(id, reason));
    } catch (e) {
      if (!(e instanceof ProtocolMisuse)) throw e;
    }
  }

  /** @internal */
  release(id: number, n: number): void {
    if (n > 0) this.driver.command(() => this.conn.release(id, n));
  }

  /** Starts draining (GOAWAY, §6.5): no new invocations; closes when the last one ends. */
  goaway(reason?: string, timeoutMs?: number): void {
    this.driver.command(() => this.conn.goaway(reason, timeoutMs, now()));
  }

  /** Closes at once; invocations in flight end with `ConnectionLost`. */
  close(): void {
    if (this.conn.state === "Closed") return;
    this.conn.close();
    this.driver.pump();
  }

  private onEvent(e: Event): void {
    switch (e.type) {
      case "Connected": {
        this.connectionId = e.connectionId;
        this.reconnectAttempts = 0;
        this.toolMap = new Map([...this.conn.toolSet.values()].map((t) => [t.name, toTool(t)]));
        this.fire("tools", this.toolMap);
        const o = this.opened;
        this.opened = undefined;
        o?.resolve();
        return;
      }
      case "ToolAdded":
      case "ToolUpdated":
        this.toolMap.set(e.tool.name, toTool(e.tool));
        if (this.opened === undefined) this.fire("tools", this.toolMap);
        return;
      case "ToolRemoved":
        this.toolMap.delete(e.name);
        if (this.opened === undefined) this.fire("tools", this.toolMap);
        return;
      case "Chunk":
        this.calls.get(e.id)?.onChunk(e.data);
        return;
      case "Ended": {
        const call = this.calls.get(e.id);
        if (call === undefined) return;
        this.calls.delete(e.id);
        if (e.outcome === "complete") {
          const value = decodeRaw(e.result);
          const status = STATUS[e.status ?? 0] ?? "failed";
          const c: Completion = { status, value };
          if (e.metrics !== undefined) c.metrics = e.metrics;
          if (status === "failed") call.onEnd(undefined, new ToolFailed(value));
          else call.onEnd(c, undefined);
        } else if (e.outcome === "error") {
          call.onEnd(undefined, new AspError(e.code ?? ErrorCode.INTERNAL, e.message, e.retryable));
        } else {
          call.onEnd(undefined, new ConnectionLost());
        }
        return;
      }
      case "Requested":
        void this.answer(e.id, e.kind, decodeRaw(e.body), e.invocation);
        return;
      case "Interrupted":
        this.requestAborts.get(e.id)?.abort();
        return;
      case "Aborted":
        this.requestAborts.get(e.id)?.abort();
        this.requestAborts.delete(e.id);
        return;
      case "GoAway": {
        const g: ClientEvents["goaway"] = { timeoutMs: e.timeoutMs };
        if (e.reason !== undefined) g.reason = e.reason;
        this.fire("goaway", g);
        return;
      }
      case "PeerError":
        this.fire("warning", new AspError(e.code, e.message, e.retryable));
        return;
      case "Detached":
        this.fire("detached", undefined);
        return;
      case "Resumed":
        // The attempts count per loss, not per client lifetime.
        this.reconnectAttempts = 0;
        this.fire("resumed", undefined);
        return;
      case "Closed": {
        const err =
          e.code !== undefined ? new AspError(e.code, `connection closed (${e.reason})`) : new ConnectionLost(`connection closed (${e.reason})`);
        const info: ClientEvents["close"] = { reason: e.reason };
        if (e.code !== undefined) info.code = e.code;
        if (e.reason !== "local" && e.reason !== "drained") info.error = err;
        this.closedError = err;
        const o = this.opened;
        this.opened = undefined;
        o?.reject(err);
        for (const a of this.requestAborts.values()) a.abort();
        this.requestAborts.clear();
        this.driver.dispose();
        this.fire("close", info);
        this.resolveClosed();
        return;
      }
      default:
        return;
    }
  }

  private async answer(id: number, kind: string, body: unknown, invocation: number | undefined): Promise<void> {
    const ac = new AbortController();
    this.requestAborts.set(id, ac);
    const req: ServerRequest = { id, kind, body, signal: ac.signal };
    if (invocation !== undefined) req.invocation = invocation;
    let status: 0 | 1 | 2 = 0;
    let out: unknown;
    let failure: AspError | undefined;
    try {
      const r = await this.onRequest!(req);
      if (r instanceof Reply) {
        status = r.status;
        out = r.body;
      } else out = r;
      if (ac.signal.aborted && status === 0) status = 1;
    } catch (e) {
      if (ac.signal.aborted) status = 1;
      else failure = e instanceof AspError ? e : new AspError(ErrorCode.INTERNAL, (e as Error)?.message ?? String(e));
    }
    if (!this.requestAborts.has(id)) return; // ended by the protocol meanwhile
    this.requestAborts.delete(id);
    try {
      this.driver.command(() => {
        if (failure !== undefined) this.conn.fail(id, failure.code, failure.message, failure.retryable);
        else this.conn.reply(id, status, out === undefined ? undefined : new Raw(mpEncode(out)));
      });
    } catch (e) {
      if (!(e instanceof ProtocolMisuse)) throw e;
    }
  }

  private onSocketGone(): void {
    if (this.conn.state !== "Detached" || this.reconnect === undefined) return;
    if (this.reconnectAttempts >= this.reconnect.attempts) {
      this.conn.close();
      this.driver.pump();
      return;
    }
    const delay = this.reconnect.delayMs * 2 ** this.reconnectAttempts;
    this.reconnectAttempts++;
    setTimeout(() => {
      if (this.conn.state !== "Detached") return;
      this.openSocket(() => this.conn.resume(now()));
    }, delay);
  }

  private finish(e: Error): void {
    if (this.closedError === undefined) this.closedError = e;
  }
}

/** Connects with the given socket factory (see the platform entry points' `connect`). */
export async function connectWith(url: string, options: ConnectOptions, factory: SocketFactory): Promise<Client> {
  const client = new Client(url, options, factory);
  await client.open(options.signal);
  if (options.signal !== undefined) {
    options.signal.addEventListener("abort", () => client.close(), { once: true });
  }
  return client;
}
