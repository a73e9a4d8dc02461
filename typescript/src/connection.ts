/**
 * The ASP connection state machine, Sans-IO (SPEC §3.7, §6–§11).
 *
 * No sockets, timers or clocks: the caller feeds it what arrived (`handleMessage`,
 * `handleTimeout`, `handleTransportClosed`) with the current time in milliseconds, calls
 * commands (`invoke`, `stream`, …), and drains the outputs in this order: `pollTransmit`
 * (bytes for one WebSocket message), `pollEvent` (what the application must know), then
 * `pollTimeout` (when to call `handleTimeout` next). Commands throw `ProtocolMisuse` for a
 * local mistake and send nothing; bad input from the peer never throws.
 * @module
 */
import { ErrorCode, isRetryable, scopeOf } from "./codes.js";
import { decodeFrame, encodeComplete, encodeFrame, encodeInvoke, payloadLength, readHeader } from "./codec.js";
import { ProtocolMisuse } from "./errors.js";
import type { CloseReason, Event, Metrics, ToolDef } from "./event.js";
import { type Frame, FrameType, HEADER_LEN, Raw, type Role } from "./frame.js";
import { type Limits, defaultLimits } from "./limits.js";
import { Writer, utf8Encode, utf8Length } from "./msgpack.js";

/** Connection states (SPEC §6.1, §11). */
export type State = "Handshaking" | "Open" | "Draining" | "Detached" | "Closed";

/** Local settings. Absent values take the SPEC §13 defaults. */
export interface ConnectionConfig extends Partial<Limits> {
  /** This side's heartbeat interval in ms, 0 = none (default 30000). */
  heartbeatMs?: number;
  handshakeTimeoutMs?: number;
  /** SPEC §10: R and F, frames per second. */
  rateLimit?: number;
  floodLimit?: number;
  /** Client: list the `requests` capability (default true). */
  requests?: boolean;
  /** List the `resume` capability (default false). */
  resume?: boolean;
  replayBuffer?: number;
  resumeWindowMs?: number;
  /** Client: grant CREDIT as chunks are delivered (default true); else only on `release`. */
  autoCredit?: boolean;
  /**
   * SPEC §13.1 step 3: bytes of opening frames (tool or kind, `args` or `body`, `meta`) the
   * running exchanges the peer opened may hold before a new one is refused with
   * `TOO_MANY_INFLIGHT` (default 4 MiB).
   */
  maxArgsInFlight?: number;
  /**
   * SPEC §13.1 step 2, the hard bound on bytes queued for the peer (default 4 MiB): replies
   * that one input (a message, a read) provokes and that take the queue past it end the
   * connection with `OVERLOADED`, what was queued dropped first. Only growth caused by the
   * input counts, so a large answer the application queued never closes a healthy
   * connection later. (A driver bounds what its socket holds unsent the same way.)
   */
  maxBuffered?: number;
  /** Server: its HELLO's connection_id (default: random). */
  connectionId?: string;
  /** Server: its resume token (default: random when resume is in use). */
  resumeToken?: Uint8Array;
  /** Server: the initial tool set. */
  tools?: ToolDef[];
  /** HELLO `agent`. */
  agent?: string;
  /** Server: random bytes for connection ids and resume tokens (default: crypto.getRandomValues). */
  random?: (n: number) => Uint8Array;
}

const PROTOCOL_VERSIONS = [1];
const EMPTY = new Uint8Array(0);
/**
 * The most a STREAM frame adds to its data: header 8, map 1, two keys 2, str/bin header ≤ 5,
 * seq ≤ 5 (no `final`): what `streamCapacity` keeps free in the replay buffer (§11.1).
 */
const STREAM_OVERHEAD = 21;
const TEXT_LIMIT = 1024;
const U32_MAX = 0xffffffff;

/** An invocation (client: one it opened; server: one it runs). */
interface Invocation {
  /** Client: next expected seq; server: next seq to send. */
  seq: number;
  /** Remaining STREAM window in bytes (SPEC §7.5). */
  window: number;
  /** Client: bytes consumed since the last CREDIT. */
  consumed: number;
  /** Final STREAM seen (client) or sent (server). */
  final: boolean;
  interrupted: boolean;
  /** Server: when the deadline passes (ms), or undefined. */
  deadline?: number;
  /** Server: bytes its INVOKE holds against `maxArgsInFlight` (§13.1); 0 at a client. */
  held: number;
}

/** A server request (server: one it sent; client: one it must answer). */
interface Request {
  interrupted: boolean;
  /** Server: the invocation the request was asked for (§8: it ends with it). */
  invocation?: number;
  /** Client: bytes its REQUEST holds against `maxArgsInFlight` (§13.1); 0 at a server. */
  held: number;
}

/** SPEC §2.1: the WebSocket close code for a connection closed by connection error `code`. */
export function webSocketCloseCode(code: number): number {
  switch (code) {
    case ErrorCode.HANDSHAKE_TIMEOUT:
    case ErrorCode.HEARTBEAT_TIMEOUT:
    case ErrorCode.GOING_AWAY:
      return 1001; // the peer broke no rule: it was absent or too slow
    case ErrorCode.FLOOD:
    case ErrorCode.OVERLOADED:
      return 1008;
    case ErrorCode.RESUME_FAILED:
      return 1011;
    default:
      return 1002;
  }
}

function randomBytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  globalThis.crypto.getRandomValues(b);
  return b;
}

function hex(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}

/** Cuts a string to at most `max` UTF-8 bytes at a character boundary. */
function truncateUtf8(s: string, max: number): string {
  if (utf8Length(s) <= max) return s;
  const b = utf8Encode(s);
  let end = max;
  // Step back over continuation bytes so no character is split.
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return new TextDecoder().decode(b.subarray(0, end));
}

/**
 * §13.1 step 3: what an opening frame holds for its handler: the UTF-8 bytes of its tool or
 * kind, and the MessagePack bytes of its `args` or `body` and `meta` (decoded as `Raw`, each
 * already copied out of the message it came in, so nothing more of that message is kept).
 */
function openingBytes(name: unknown, value: unknown, meta: unknown): number {
  let n = typeof name === "string" ? utf8Length(name) : 0;
  if (value instanceof Raw) n += value.bytes.length;
  if (meta instanceof Raw) n += meta.bytes.length;
  return n;
}

export class Connection {
  readonly role: Role;
  private readonly cfg: Required<
    Omit<ConnectionConfig, "connectionId" | "resumeToken" | "tools" | "agent" | keyof Limits>
  > & { agent?: string };
  /** What this side accepts (announced in its HELLO). */
  readonly limits: Limits;
  /** What the peer accepts (SPEC §3.6: the defaults until its HELLO arrives). */
  peerLimits: Limits = defaultLimits();
  private peerCapabilities = new Set<string>();

  private st: State = "Handshaking";
  private started = false;
  /** Handshake deadline (ms); also bounds a RESUME waiting for its answer (§11.2 step 6). */
  private handshakeDeadline: number | undefined;

  // Session
  connectionId = "";
  version = 1;
  heartbeatMs = 0;
  private resumeToken: Uint8Array | undefined;
  private resumable = false;
  private lastRecv = 0;
  private pingsSent = 0;

  // Draining (§6.5)
  private goawaySent = false;
  private goawayReceived = false;
  private drainDeadline: number | undefined;

  // Exchanges
  private invocations = new Map<number, Invocation>();
  private requests = new Map<number, Request>();
  /**
   * §13.1 step 3: bytes of the opening frames of the exchanges the peer opened that are still
   * running (the sum of their `held`); every removal from the maps goes through `forget`.
   */
  private argsHeld = 0;
  private nextId: number;
  /**
   * §3.5: ids of own exchanges ended by an ERROR this side sent, with the number of the PING sent
   * after it; quarantined (not reused, their frames dropped silently) until that PING's PONG.
   */
  private quarantine = new Map<number, number>();
  /** Client: INVOKEs sent after its HELLO and before the server's (§6.2), not yet counted. */
  private pipelined: Uint8Array[] = [];
  /** Start of the bytes `pollTransmit` has not returned yet (the outgoing queue is out[outHead..len]). */
  private outHead = 0;
  /** PINGs sent and PONGs received on this session (PONGs answer PINGs in order, §3.5). */
  private pingSeq = 0;
  private pongSeq = 0;

  // Tools: the client's mirror, or the server's own set and what the client holds (§6.2, §9).
  private tools = new Map<string, ToolDef>();
  private peerTools = new Set<string>();
  /** Client: TOOL_DEFs of the initial set still to come before `Connected`. */
  private initialToolsPending = 0;
  private connectedPending: Event | undefined;

  // Rate limiting (§10)
  private rateWindowStart: number | undefined;
  private rateCount = 0;

  // Resume (§11)
  private sentCount = 0;
  private recvCount = 0;
  /** Counted frames sent and not acknowledged, oldest first, from `replay[replayHead]` (§11.1). */
  private replay: Uint8Array[] = [];
  private replayHead = 0;
  private replayBytes = 0;
  /** Counted-frame number of `replay[replayHead]`. */
  private replayFirst = 0;
  /** A STREAM was held back (or capped) for replay room: tell writers when an ack makes room. */
  private replayBlocked = false;
  /** Input bytes since `received` was last sent, and the count it carried (§11.1 acks). */
  private bytesSinceAck = 0;
  private ackedCount = 0;
  /** The peer's `replay_buffer` and `resume_window_ms` (§5.1, §13 defaults until its HELLO). */
  private peerReplayBuffer = 262144;
  private peerResumeWindowMs = 30000;
  private detachedAt: number | undefined;
  private resuming = false;

  /** Byte stream (§2.2): the frame being gathered, and payload bytes still to discard. */
  private partial = new Writer(64);
  private skip = 0;

  // Outputs
  private out = new Writer(1024);
  private events: Event[] = [];
  private eventHead = 0;
  /** Events queued: `events[eventHead, eventTail)`; the array keeps its slots between drains. */
  private eventTail = 0;
  private closeCodeValue = 1000;

  constructor(role: Role, config: ConnectionConfig = {}, now = 0) {
    this.role = role;
    const d = defaultLimits();
    this.limits = {
      max_frame_payload: config.max_frame_payload ?? d.max_frame_payload,
      max_inflight: config.max_inflight ?? d.max_inflight,
      max_tools: config.max_tools ?? d.max_tools,
      max_chunk: config.max_chunk ?? d.max_chunk,
      initial_window: config.initial_window ?? d.initial_window,
    };
    this.cfg = {
      heartbeatMs: config.heartbeatMs ?? 30000,
      handshakeTimeoutMs: config.handshakeTimeoutMs ?? 10000,
      rateLimit: config.rateLimit ?? 100000,
      floodLimit: config.floodLimit ?? 200000,
      requests: config.requests ?? true,
      resume: config.resume ?? false,
      replayBuffer: config.replayBuffer ?? 262144,
      resumeWindowMs: config.resumeWindowMs ?? 30000,
      autoCredit: config.autoCredit ?? true,
      maxArgsInFlight: config.maxArgsInFlight ?? 4 * 1024 * 1024,
      maxBuffered: config.maxBuffered ?? 4 * 1024 * 1024,
      random: config.random ?? randomBytes,
      agent: config.agent,
    };
    this.nextId = role === "client" ? 1 : 0x8000;
    if (role === "server") {
      this.connectionId = config.connectionId ?? hex(this.cfg.random(8));
      this.resumeToken = config.resumeToken;
      for (const t of config.tools ?? []) this.tools.set(t.name, t);
    }
    this.lastRecv = now;
  }

  /** The state (SPEC §6.1). */
  get state(): State {
    return this.st;
  }

  /** Whether the connection is closed: the caller sends what `pollTransmit` still has, then closes the transport. */
  get isClosed(): boolean {
    return this.st === "Closed";
  }

  /** The WebSocket close code to use once closed (SPEC §2.1: 1000 graceful, 1001 after a timeout, 1008 after FLOOD/OVERLOADED, 1011 after RESUME_FAILED, else 1002). */
  get closeCode(): number {
    return this.closeCodeValue;
  }

  /** Client: the mirrored tool set (SPEC §9). Server: its own tool set. */
  get toolSet(): ReadonlyMap<string, ToolDef> {
    return this.tools;
  }

  /** Whether the peer listed a capability and so did this side (§6.4). */
  hasCapability(name: string): boolean {
    return this.peerCapabilities.has(name) && this.ownCapabilities().includes(name);
  }

  /** Whether anything waits in `pollTransmit` or `pollEvent`. */
  get hasOutput(): boolean {
    return this.out.len > this.outHead || this.eventHead < this.eventTail;
  }

  /** Whether the peer's HELLO listed a capability (e.g. a client's `requests`, §6.4). */
  peerListed(name: string): boolean {
    return this.peerCapabilities.has(name);
  }

  /** Bytes of sent frames held for a resume and not yet acknowledged (§11.1; bounded by `replayBuffer`). */
  get replayBuffered(): number {
    return this.replayBytes;
  }

  /** Number of exchanges in flight on either side. */
  get inFlight(): number {
    return this.invocations.size + this.requests.size;
  }

  // ---------------------------------------------------------------- inputs

  /** The transport is up. A client sends its HELLO now (§6.2 step 1). */
  start(now: number): void {
    if (this.started) return;
    this.started = true;
    this.lastRecv = now;
    this.handshakeDeadline = now + this.cfg.handshakeTimeoutMs;
    if (this.role === "client") this.sendHello();
  }

  /** One WebSocket binary message (or one read of a byte stream that holds whole frames). */
  handleMessage(bytes: Uint8Array, now: number): void {
    if (this.st === "Closed" || (this.st === "Detached" && !this.resuming)) return;
    this.lastRecv = now;
    this.pingsSent = 0;
    let pos = 0;
    const len = bytes.length;
    const queuedBefore = this.queued;
    if (len === 0) {
      // §2.1: a message MUST NOT be empty; it ends before a header.
      this.connectionError(ErrorCode.FRAMING_ERROR, "empty message", undefined);
      return;
    }
    while (pos < len && !this.isClosed) {
      if (len - pos < HEADER_LEN) {
        this.connectionError(ErrorCode.FRAMING_ERROR, "message ends inside a frame header", undefined);
        return;
      }
      const header = readHeader(bytes, pos);
      if (header.version !== 1) {
        // §3.2: nothing after a foreign version can be trusted.
        this.connectionError(ErrorCode.UNSUPPORTED_VERSION, `header version ${header.version}`, header.type);
        return;
      }
      if (len - pos - HEADER_LEN < header.length) {
        this.connectionError(ErrorCode.FRAMING_ERROR, "message ends inside a frame", undefined);
        return;
      }
      const inSession = this.resumable && (this.st === "Open" || this.st === "Draining");
      this.handleFrame(header, bytes, pos + HEADER_LEN, now);
      pos += HEADER_LEN + header.length;
      if (inSession) this.maybeAck(HEADER_LEN + header.length);
      if (this.overBound(queuedBefore)) return;
    }
  }

  /** Bytes queued for the peer that `pollTransmit` has not returned yet. */
  private get queued(): number {
    return this.out.len - this.outHead;
  }

  /**
   * SPEC §13.1 step 2: judged after every frame of one input, on what that input added, so
   * one message cannot grow the queue far past the bound. Closes with `OVERLOADED`.
   */
  private overBound(queuedBefore: number): boolean {
    const q = this.queued;
    if (this.isClosed || q <= queuedBefore || q <= this.cfg.maxBuffered) return false;
    this.connectionErrorDropping(ErrorCode.OVERLOADED, `${q} bytes queued for a peer that does not read (bound ${this.cfg.maxBuffered})`);
    return true;
  }

  /**
   * §11.1: in a resumable session, PING(`received`) once a quarter of the peer's replay buffer
   * has arrived since `received` was last sent, so the peer can trim its buffer. Only when there
   * is something new to acknowledge: a PONG counts as input too, and with a tiny buffer acks
   * of nothing would answer each other forever.
   */
  private maybeAck(bytes: number): void {
    this.bytesSinceAck += bytes;
    if (this.st !== "Open" && this.st !== "Draining") return;
    if (this.bytesSinceAck >= Math.floor(this.peerReplayBuffer / 4) && this.recvCount > this.ackedCount) this.sendPing();
  }

  /**
   * Bytes read from a byte stream (SPEC §2.2: stdio, TCP, pipes): frames back to back, cut
   * anywhere. At most `8 + max_frame_payload` bytes of one frame are buffered; a frame
   * declared longer is rejected (`FRAME_TOO_LARGE`, §3.6) as soon as its header is here and its
   * payload discarded as it arrives, so the framing is kept.
   */
  handleBytes(bytes: Uint8Array, now: number): void {
    if (this.st === "Closed" || (this.st === "Detached" && !this.resuming)) return;
    if (bytes.length === 0) return;
    this.lastRecv = now;
    this.pingsSent = 0;
    let pos = 0;
    const len = bytes.length;
    const queuedBefore = this.queued;
    while (pos < len && !this.isClosed && !(this.st === "Detached" && !this.resuming)) {
      if (this.overBound(queuedBefore)) return;
      if (this.skip > 0) {
        const n = Math.min(this.skip, len - pos);
        this.skip -= n;
        pos += n;
        continue;
      }
      const p = this.partial;
      if (p.len === 0 && len - pos >= HEADER_LEN) {
        // Whole frames straight from the read, without copying.
        const header = readHeader(bytes, pos);
        if (header.version === 1 && header.length <= this.limits.max_frame_payload && len - pos - HEADER_LEN >= header.length) {
          this.streamFrame(header, bytes, pos, now);
          pos += HEADER_LEN + header.length;
          continue;
        }
      }
      // Gather the header, then the payload, in the partial buffer.
      const want = p.len < HEADER_LEN ? HEADER_LEN : HEADER_LEN + readHeader(p.buf, 0).length;
      const n = Math.min(want - p.len, len - pos);
      p.bytes(bytes.subarray(pos, pos + n));
      pos += n;
      if (p.len < want) continue;
      const header = readHeader(p.buf, 0);
      if (p.len === HEADER_LEN && header.version === 1 && header.length > this.limits.max_frame_payload) {
        // §3.6: judged on the header alone; the payload is skipped as it arrives.
        p.len = 0;
        this.skip = header.length;
        this.streamFrame(header, p.buf, 0, now);
        continue;
      }
      if (header.version !== 1 || p.len === HEADER_LEN + header.length) {
        p.len = 0;
        this.streamFrame(header, p.buf, 0, now);
      }
    }
    this.overBound(queuedBefore);
  }

  private streamFrame(header: ReturnType<typeof readHeader>, buf: Uint8Array, pos: number, now: number): void {
    if (header.version !== 1) {
      // §3.2: nothing after a foreign version can be trusted.
      this.connectionError(ErrorCode.UNSUPPORTED_VERSION, `header version ${header.version}`, header.type);
      return;
    }
    const inSession = this.resumable && (this.st === "Open" || this.st === "Draining");
    this.handleFrame(header, buf, pos + HEADER_LEN, now);
    if (inSession) this.maybeAck(HEADER_LEN + header.length);
  }

  /** A text WebSocket message: §2.1 FRAMING_ERROR. */
  handleText(now: number): void {
    if (this.st === "Closed") return;
    this.lastRecv = now;
    this.connectionError(ErrorCode.FRAMING_ERROR, "text message", undefined);
  }

  /**
   * The transport ended. `onPurpose`: the peer closed it deliberately (a WebSocket Close with
   * status 1000 or without a status), which ends even a resumable session (§11.3); any other
   * end (EOF, a reset, another close status) detaches a resumable one.
   */
  handleTransportClosed(now: number, onPurpose = false): void {
    if (this.st === "Closed") return;
    if (this.st === "Detached") {
      // §11.2 step 6: the new transport dropped before the resume completed; still detached.
      this.resuming = false;
      return;
    }
    this.out.len = 0;
    this.outHead = 0;
    // §6.5, §11.3: end of stream on a draining session with nothing in flight is a normal close.
    const drained = this.st === "Draining" && this.inFlight === 0;
    // §11.2 step 1, §11.3: a resumable session outlives its transport for the resume window.
    if (this.resumable && (this.st === "Open" || this.st === "Draining") && !onPurpose && !drained) {
      this.detach0(now);
      return;
    }
    this.close0("transport_closed", undefined);
  }

  /**
   * Detaches a resumable session from its transport at once (§11.3 take-over: a RESUME named
   * this session while its old transport still looked alive). The caller closes that transport
   * without an ERROR; nothing that arrives on it afterwards is processed. Returns false (and
   * does nothing) if the session is not resumable and open.
   */
  detach(now: number): boolean {
    if (!this.resumable || (this.st !== "Open" && this.st !== "Draining")) return false;
    this.detach0(now);
    return true;
  }

  private detach0(now: number): void {
    // What was queued for the old transport is held for replay; nothing is sent until a resume.
    this.out.len = 0;
    this.outHead = 0;
    this.st = "Detached";
    this.detachedAt = now;
    this.resuming = false;
    this.emit({ type: "Detached" });
  }

  /** §11.3: a detached session is kept for the smaller of the two announced windows. */
  private resumeWindow(): number {
    return Math.min(this.cfg.resumeWindowMs, this.peerResumeWindowMs);
  }

  /**
   * Whether the transport should be closed now: the connection closed, or a resumable session
   * detached itself (heartbeat timeout, take-over) and waits for a new transport.
   */
  get transportDone(): boolean {
    return this.st === "Closed" || (this.st === "Detached" && !this.resuming);
  }

  /**
   * The WebSocket close code for the transport (SPEC §2.1): `closeCode` once closed; 1001 for a
   * detached session (any status but 1000 lets the peer detach too, §11.3).
   */
  get transportCloseCode(): number {
    return this.st === "Detached" ? 1001 : this.closeCodeValue;
  }

  /** Runs the timers due at `now` (§6.2 handshake, §6.7 heartbeat, §6.5 drain, §7.4 deadlines, §11 resume window). */
  handleTimeout(now: number): void {
    if (this.st === "Closed" || !this.started) return;
    if (this.st === "Detached") {
      if (this.resuming && this.handshakeDeadline !== undefined && now >= this.handshakeDeadline) {
        // §11.2 step 6: a RESUME without an answer in the handshake timeout closes the session.
        this.close0("transport_closed", undefined);
      } else if (this.detachedAt !== undefined && now >= this.detachedAt + this.resumeWindow()) {
        this.close0("transport_closed", undefined);
      } else {
        // §11.3: deadlines and the drain timeout keep running; what they send waits for replay.
        this.runDeadlines(now);
        if (this.drainDeadline !== undefined && now >= this.drainDeadline && this.goawaySent) {
          this.connectionError(ErrorCode.GOING_AWAY, "drain timeout elapsed", undefined);
        }
      }
      return;
    }
    if (this.st === "Handshaking") {
      if (this.handshakeDeadline !== undefined && now >= this.handshakeDeadline) {
        this.connectionError(ErrorCode.HANDSHAKE_TIMEOUT, "no HELLO in time", undefined);
      }
      return;
    }
    // §6.7 heartbeat.
    const h = this.heartbeatMs;
    if (h > 0) {
      const silent = now - this.lastRecv;
      if (silent >= 3 * h) {
        if (this.resumable) {
          // §11.3: a silent dead link is what resume is for; no ERROR, which would fail the
          // session at the peer. The caller closes the transport (`transportDone`).
          this.detach0(now);
          return;
        }
        this.connectionError(ErrorCode.HEARTBEAT_TIMEOUT, `nothing received for ${silent} ms`, undefined);
        return;
      }
      const due = Math.floor(silent / h);
      if (due > this.pingsSent) {
        this.pingsSent = due;
        this.sendPing();
      }
    }
    this.runDeadlines(now);
    // §6.5 drain timeout.
    if (this.drainDeadline !== undefined && now >= this.drainDeadline && this.goawaySent) {
      this.connectionError(ErrorCode.GOING_AWAY, "drain timeout elapsed", undefined);
      return;
    }
    this.checkDrained();
  }

  /** §7.4: the server ends invocations whose deadline passed with ERROR(DEADLINE_EXCEEDED). */
  private runDeadlines(now: number): void {
    if (this.role !== "server") return;
    for (const [id, inv] of this.invocations) {
      if (inv.deadline !== undefined && now >= inv.deadline) {
        this.forget(this.invocations, id);
        this.sendError(id, ErrorCode.DEADLINE_EXCEEDED, `deadline passed`, undefined);
        this.emit({ type: "Aborted", id, code: ErrorCode.DEADLINE_EXCEEDED });
        this.checkDrained();
      }
    }
  }

  /** When `handleTimeout` should be called next (ms), or undefined for never. */
  pollTimeout(): number | undefined {
    if (this.st === "Closed" || !this.started) return undefined;
    if (this.st === "Handshaking") return this.handshakeDeadline;
    let t: number | undefined;
    const min = (x: number | undefined) => {
      if (x !== undefined && (t === undefined || x < t)) t = x;
    };
    if (this.st === "Detached") {
      if (this.resuming) min(this.handshakeDeadline);
      min(this.detachedAt! + this.resumeWindow());
      if (this.goawaySent) min(this.drainDeadline);
      if (this.role === "server") for (const inv of this.invocations.values()) min(inv.deadline);
      return t;
    }
    if (this.heartbeatMs > 0) {
      min(Math.min(this.lastRecv + (this.pingsSent + 1) * this.heartbeatMs, this.lastRecv + 3 * this.heartbeatMs));
    }
    if (this.goawaySent) min(this.drainDeadline);
    // Called after every input: no iterator over an empty map.
    if (this.role === "server" && this.invocations.size > 0) for (const inv of this.invocations.values()) min(inv.deadline);
    return t;
  }

  /**
   * The bytes to send as one WebSocket message, or undefined: queued frames coalesced, but at
   * most `65 536 + 8 + max_frame_payload` bytes (the peer's limit; SPEC §2.1 bounds a sender's
   * message so), always at least one whole frame. Call again until undefined.
   */
  pollTransmit(): Uint8Array | undefined {
    const end = this.out.len;
    if (end === this.outHead) return undefined;
    const limit = 65536 + HEADER_LEN + this.peerLimits.max_frame_payload;
    const buf = this.out.buf;
    let pos = this.outHead;
    do {
      pos += HEADER_LEN + payloadLength(buf, pos);
    } while (pos < end && pos + HEADER_LEN + payloadLength(buf, pos) - this.outHead <= limit);
    const bytes = sliceOut(buf, this.outHead, pos);
    if (pos >= end) {
      this.out.len = 0;
      this.outHead = 0;
    } else {
      this.outHead = pos;
    }
    return bytes;
  }

  /** The next event, or undefined. */
  pollEvent(): Event | undefined {
    if (this.eventHead >= this.eventTail) {
      // Drained: start over at the front without shrinking the array (a length change is a
      // runtime call, per round trip), unless a burst left it large.
      if (this.eventTail > 1024) this.events = [];
      this.eventHead = 0;
      this.eventTail = 0;
      return undefined;
    }
    const e = this.events[this.eventHead]!;
    this.events[this.eventHead++] = undefined as unknown as Event;
    return e;
  }

  // ---------------------------------------------------------------- commands

  /** Client: starts an invocation; returns its id (§5.2, §3.5). */
  invoke(tool: string, args?: Uint8Array | Raw, options: { deadlineMs?: number; meta?: Uint8Array | Raw } = {}): number {
    this.requireRole("client", "invoke");
    // §6.2: a client may pipeline INVOKEs right after its HELLO, before the server's HELLO.
    // §11.3: a detached client may still invoke; the INVOKE is sent after the resume.
    const detachedOk = this.st === "Detached" && !this.goawaySent && !this.goawayReceived;
    if (this.st !== "Open" && this.st !== "Handshaking" && !detachedOk) {
      throw new ProtocolMisuse(`cannot invoke in state ${this.st}${this.goawayReceived ? " (GOAWAY received)" : ""}`);
    }
    const len = utf8Length(tool);
    if (len < 1 || len > 128) throw new ProtocolMisuse("tool name must be 1–128 bytes");
    if (this.invocations.size >= this.peerLimits.max_inflight) {
      throw new ProtocolMisuse(`the server accepts at most ${this.peerLimits.max_inflight} invocations in flight`);
    }
    const before = this.nextId;
    const id = this.allocateId(this.invocations, 1, 0x7fff);
    const start = this.out.len;
    encodeInvoke(this.out, id, tool, args === undefined ? undefined : raw(args), options.deadlineMs ?? 0, options.meta === undefined ? undefined : raw(options.meta));
    try {
      this.checkSent(FrameType.INVOKE, start);
    } catch (e) {
      this.nextId = before; // a refused INVOKE uses no id
      throw e;
    }
    this.invocations.set(id, {
      seq: 0,
      window: this.limits.initial_window,
      consumed: 0,
      final: false,
      interrupted: false,
      held: 0,
    });
    return id;
  }

  /** Client: the application consumed `len` bytes of an invocation's chunks (§7.5 CREDIT). */
  release(id: number, len: number): void {
    this.requireRole("client", "release");
    const inv = this.invocations.get(id);
    // Detached: the CREDIT is held for replay and sent after the resume (§11.3).
    if (inv === undefined || len <= 0 || this.st === "Closed") return;
    inv.consumed += len;
    this.maybeCredit(id, inv);
  }

  /** Client: answers a server request (§5.10). */
  reply(id: number, status: number, body?: Uint8Array | Raw): void {
    this.requireRole("client", "reply");
    if (!this.requests.has(id)) throw new ProtocolMisuse(`request ${id} is not in flight`);
    if (status < 0 || status > 2) throw new ProtocolMisuse("status must be 0–2");
    const fields: Record<string, unknown> = { status };
    if (body !== undefined) fields["body"] = raw(body);
    this.forget(this.requests, id);
    if (!this.sendTerminal({ type: FrameType.REPLY, id, fields: fields as Frame["fields"] })) {
      this.emit({ type: "Aborted", id, code: ErrorCode.RESULT_TOO_LARGE });
    }
    this.checkDrained();
  }

  /** Server: how many STREAM data bytes invocation `id` may send now (§7.5), or -1 if it is not running. */
  streamCapacity(id: number): number {
    const inv = this.invocations.get(id);
    if (this.role !== "server" || inv === undefined || inv.final) return -1;
    let cap = Math.min(inv.window, this.chunkCap());
    // §11.1: STREAM data waits while the replay buffer (which here includes the transmit
    // queue) would exceed replay_buffer; the newest frame is always kept, so an empty buffer
    // takes any chunk.
    if (this.resumable && this.replayBytes > 0) {
      const room = this.cfg.replayBuffer - this.replayBytes - STREAM_OVERHEAD;
      if (room < cap) {
        this.replayBlocked = true;
        cap = Math.max(0, room);
      }
    }
    return cap;
  }

  /**
   * §7.5: the largest chunk a server sends: min(max_chunk, initial_window / 2,
   * max_frame_payload − 15). Half the window because a client may keep up to half of it
   * unreturned for good; a larger chunk could then never be sent.
   */
  private chunkCap(): number {
    const p = this.peerLimits;
    return Math.min(p.max_chunk, Math.floor(p.initial_window / 2), p.max_frame_payload - 15);
  }

  /** Server: sends one chunk (§5.3). Throws if it exceeds the window or `max_chunk`. */
  stream(id: number, data: string | Uint8Array, final = false): void {
    this.requireRole("server", "stream");
    this.requireSession("stream");
    const inv = this.invocations.get(id);
    if (inv === undefined) throw new ProtocolMisuse(`invocation ${id} is not in flight`);
    if (inv.final) throw new ProtocolMisuse(`invocation ${id} already sent its final chunk`);
    const n = typeof data === "string" ? utf8Length(data) : data.length;
    if (n === 0 && !final) throw new ProtocolMisuse("an empty chunk must be final (§5.3)");
    if (n > this.chunkCap()) {
      throw new ProtocolMisuse(`chunk of ${n} bytes above the cap of ${this.chunkCap()} (client's max_chunk, half its initial_window, §7.5)`);
    }
    if (n > inv.window) throw new ProtocolMisuse(`chunk of ${n} bytes beyond the window of ${inv.window}`);
    const fields: Record<string, unknown> = { data, seq: inv.seq };
    if (final) fields["final"] = true;
    const start = this.out.len;
    encodeFrame(this.out, { type: FrameType.STREAM, id, fields: fields as Frame["fields"] });
    const size = this.out.len - start;
    if (size - HEADER_LEN > this.peerLimits.max_frame_payload) {
      this.out.len = start;
      throw new ProtocolMisuse(`frame payload of ${size - HEADER_LEN} bytes above the peer's max_frame_payload ${this.peerLimits.max_frame_payload}`);
    }
    if (this.resumable && this.replayBytes > 0 && this.replayBytes + size > this.cfg.replayBuffer) {
      // §11.1: wait for an acknowledgement to make room (a `Writable` event follows it).
      this.out.len = start;
      this.replayBlocked = true;
      throw new ProtocolMisuse(`the replay buffer holds ${this.replayBytes} unacknowledged bytes: a STREAM of ${size} waits for room (§11.1)`);
    }
    this.recordSent(FrameType.STREAM, start);
    inv.seq++;
    inv.window -= n;
    if (final) inv.final = true;
  }

  /**
   * Server: ends an invocation with COMPLETE (§5.6). Status 1 (cancelled) is sent only for an
   * invocation the client interrupted; for any other it goes out as 2 (failed), since §5.6
   * forbids reporting `cancelled` unasked.
   */
  complete(id: number, status: number, result?: Uint8Array | Raw, metrics?: Metrics): void {
    this.requireRole("server", "complete");
    this.requireSession("complete");
    const inv = this.invocations.get(id);
    if (inv === undefined) throw new ProtocolMisuse(`invocation ${id} is not in flight`);
    if (status < 0 || status > 2) throw new ProtocolMisuse("status must be 0–2");
    if (status === 1 && !inv.interrupted) status = 2;
    this.forget(this.invocations, id);
    const start = this.out.len;
    encodeComplete(this.out, id, status, result === undefined ? undefined : raw(result), metrics);
    if (!this.terminalSent(FrameType.COMPLETE, id, start)) {
      this.emit({ type: "Aborted", id, code: ErrorCode.RESULT_TOO_LARGE });
    }
    this.checkDrained();
  }

  /** Ends an exchange the peer opened with ERROR (server: an invocation; client: a request). */
  fail(id: number, code: number, message?: string, retryable?: boolean): void {
    this.requireSession("fail");
    const map = this.role === "server" ? this.invocations : this.requests;
    if (!map.has(id)) throw new ProtocolMisuse(`exchange ${id} is not in flight`);
    if (!Number.isInteger(code) || code < 1 || code > 65535) throw new ProtocolMisuse("code must be 1–65535");
    if (scopeOf(code) === "connection" || scopeOf(code) === "frame") {
      throw new ProtocolMisuse("an exchange is failed with an exchange or application code (§12.1)");
    }
    this.forget(map, id);
    this.sendError(id, code, message, undefined, retryable);
    this.checkDrained();
  }

  /** Server: asks the client (§8); returns the request id. */
  request(kind: string, body?: Uint8Array | Raw, invocation?: number): number {
    this.requireRole("server", "request");
    // §6.5: after GOAWAY in either direction nobody opens exchanges.
    if (this.st !== "Open") {
      throw new ProtocolMisuse(`cannot send REQUEST in state ${this.st}`);
    }
    if (!this.peerCapabilities.has("requests")) throw new ProtocolMisuse("the client did not list `requests` (§6.4)");
    const len = utf8Length(kind);
    if (len < 1 || len > 64) throw new ProtocolMisuse("kind must be 1–64 bytes");
    if (this.requests.size >= this.peerLimits.max_inflight) {
      throw new ProtocolMisuse(`the client accepts at most ${this.peerLimits.max_inflight} requests in flight`);
    }
    if (invocation !== undefined && !this.invocations.has(invocation)) {
      throw new ProtocolMisuse(`invocation ${invocation} is not in flight (a request ends with its invocation, §8)`);
    }
    const before = this.nextId;
    const id = this.allocateId(this.requests, 0x8000, 0xffff);
    const fields: Record<string, unknown> = { kind };
    if (body !== undefined) fields["body"] = raw(body);
    if (invocation !== undefined) fields["invocation"] = invocation;
    try {
      this.sendChecked({ type: FrameType.REQUEST, id, fields: fields as Frame["fields"] });
    } catch (e) {
      this.nextId = before;
      throw e;
    }
    const req: Request = { interrupted: false, held: 0 };
    if (invocation !== undefined) req.invocation = invocation;
    this.requests.set(id, req);
    return id;
  }

  /** Interrupts an exchange this side opened (client: an invocation; server: a request), §7.3. */
  interrupt(id: number, reason?: string): void {
    this.requireSession("interrupt");
    const map = this.role === "client" ? this.invocations : this.requests;
    const ex = map.get(id);
    if (ex === undefined) throw new ProtocolMisuse(`exchange ${id} is not in flight`);
    ex.interrupted = true;
    const fields: Record<string, unknown> = {};
    if (reason !== undefined) fields["reason"] = reason;
    this.sendWithText({ type: FrameType.INTERRUPT, id, fields: fields as Frame["fields"] }, "reason");
  }

  /** Server: adds a tool, or replaces one of the same name (§9). */
  addTool(tool: ToolDef): void {
    this.requireRole("server", "addTool");
    const len = utf8Length(tool.name);
    if (len < 1 || len > 128) throw new ProtocolMisuse("tool name must be 1–128 bytes");
    const open = this.st === "Open" || this.st === "Draining";
    if (open) {
      const known = this.peerTools.has(tool.name);
      if (!known && this.peerTools.size >= this.peerLimits.max_tools) {
        throw new ProtocolMisuse(`the client holds at most ${this.peerLimits.max_tools} tools`);
      }
      this.sendChecked(toolDefFrame(known ? 1 : 0, tool));
      this.peerTools.add(tool.name);
    }
    this.tools.set(tool.name, tool);
  }

  /** Server: removes a tool (§9). */
  removeTool(name: string): void {
    this.requireRole("server", "removeTool");
    if (!this.tools.has(name)) throw new ProtocolMisuse(`no tool ${name}`);
    this.tools.delete(name);
    if (this.peerTools.delete(name) && (this.st === "Open" || this.st === "Draining")) {
      this.sendChecked({ type: FrameType.TOOL_DEF, id: 0, fields: { op: 2, name } });
    }
  }

  /** Starts draining (§6.5). `timeoutMs` 0 or absent: no drain timeout. */
  goaway(reason?: string, timeoutMs?: number, now?: number): void {
    if (this.st !== "Open" && this.st !== "Draining") throw new ProtocolMisuse(`cannot send GOAWAY in state ${this.st}`);
    if (this.goawaySent) return;
    const fields: Record<string, unknown> = {};
    if (reason !== undefined) fields["reason"] = reason;
    if (timeoutMs) fields["timeout_ms"] = timeoutMs;
    this.sendWithText({ type: FrameType.GOAWAY, id: 0, fields: fields as Frame["fields"] }, "reason");
    this.goawaySent = true;
    this.st = "Draining";
    if (timeoutMs) this.drainDeadline = (now ?? this.lastRecv) + timeoutMs;
    this.checkDrained();
  }

  /** Closes at once: exchanges this side opened end as lost (§6.6). */
  close(): void {
    if (this.st === "Closed") return;
    this.out.len = 0;
    this.outHead = 0;
    this.close0("local", undefined);
  }

  /**
   * A local bound was hit (the peer provokes output faster than it reads it, SPEC §13.1):
   * drops what was queued, sends `ERROR(OVERLOADED)` and closes (WebSocket code 1008).
   */
  closeOverloaded(): void {
    this.connectionErrorDropping(ErrorCode.OVERLOADED, "the peer does not read what it provokes");
  }

  /** A connection error after dropping what was queued: the peer was not reading it (§13.1). */
  private connectionErrorDropping(code: number, message: string): void {
    if (this.st === "Closed") return;
    this.out.len = 0;
    this.outHead = 0;
    this.connectionError(code, message, undefined);
  }

  /** Client, after `Detached`: resume on a new transport (§11.2 step 2). */
  resume(now: number): void {
    this.requireRole("client", "resume");
    if (this.st !== "Detached" || this.resumeToken === undefined) throw new ProtocolMisuse("nothing to resume");
    this.resuming = true;
    this.lastRecv = now;
    this.handshakeDeadline = now + this.cfg.handshakeTimeoutMs;
    // RESUME is the new transport's first frame; what waits is re-sent after the answer.
    this.out.len = 0;
    this.outHead = 0;
    this.writeFrame({ type: FrameType.RESUME, id: 0, fields: { token: this.resumeToken, received: this.recvCount } });
    this.ackSent();
  }

  /** Server, after `ResumeRequested`: no such session (§11.2 step 3). The transport stays open for HELLO. */
  refuseResume(): void {
    this.requireRole("server", "refuseResume");
    if (this.st !== "Handshaking") throw new ProtocolMisuse("not waiting for a handshake");
    this.sendError(0, ErrorCode.RESUME_FAILED, "no such session, or the frames it missed are gone", undefined);
  }

  /** Server: the resume token of this session, if it is resumable (§11.2). */
  get sessionToken(): Uint8Array | undefined {
    return this.resumable ? this.resumeToken : undefined;
  }

  /**
   * Server, on the detached session a RESUME named (§11.2 step 3): if every frame the client
   * missed is still held, answers RESUME, re-sends them in order and continues (true);
   * otherwise returns false and the session is forgotten (closed).
   */
  resumeSession(received: number | bigint, now: number): boolean {
    this.requireRole("server", "resumeSession");
    // §11.3 take-over: a session whose old transport still looked alive is detached first.
    this.detach(now);
    if (this.st !== "Detached") return false;
    const r = Number(received);
    if (!this.canReplayFrom(r)) {
      this.close0("transport_closed", undefined);
      return false;
    }
    this.st = this.goawaySent || this.goawayReceived ? "Draining" : "Open";
    this.detachedAt = undefined;
    this.lastRecv = now;
    this.pingsSent = 0;
    this.out.len = 0;
    this.outHead = 0;
    this.writeFrame({ type: FrameType.RESUME, id: 0, fields: { received: this.recvCount } });
    this.ackSent();
    this.replayFrom(r);
    this.pingAgainForQuarantine();
    this.emit({ type: "Resumed" });
    this.checkDrained();
    return true;
  }

  /** §11.2 step 3: whether every counted frame from number `r` on is still held. */
  private canReplayFrom(r: number): boolean {
    return Number.isFinite(r) && r <= this.sentCount && r >= this.replayFirst;
  }

  /** Re-sends the held frames from number `r` on, in order, and drops the ones before (acknowledged). */
  private replayFrom(r: number): void {
    for (let i = this.replayHead + (r - this.replayFirst); i < this.replay.length; i++) this.out.bytes(this.replay[i]!);
    this.acknowledge(r);
  }

  // ---------------------------------------------------------------- receiving

  private handleFrame(header: ReturnType<typeof readHeader>, buf: Uint8Array, start: number, now: number): void {
    const type = header.type;
    const inSession = this.st === "Open" || this.st === "Draining";
    // §11.1: counted frames, including ERROR and frames discarded with a frame error.
    if (inSession && type !== FrameType.HELLO && type !== FrameType.RESUME && type !== FrameType.PING && type !== FrameType.PONG) {
      this.recvCount++;
    }
    // §10: every received frame but STREAM counts against the rate limit.
    let overRate = false;
    if (type !== FrameType.STREAM) {
      if (this.rateWindowStart === undefined || now >= this.rateWindowStart + 1000) {
        this.rateWindowStart = now;
        this.rateCount = 0;
      }
      this.rateCount++;
      if (this.rateCount > this.cfg.floodLimit) {
        this.connectionError(ErrorCode.FLOOD, `more than ${this.cfg.floodLimit} frames in a second`, undefined);
        return;
      }
      if (this.rateCount > this.cfg.rateLimit) {
        overRate = true;
        if (this.rateCount === this.cfg.rateLimit + 1) {
          this.sendError(0, ErrorCode.RATE_LIMITED, `more than ${this.cfg.rateLimit} frames in a second`, undefined);
        }
      }
    }
    const peer: Role = this.role === "client" ? "server" : "client";
    const decoded = decodeFrame(header, buf, start, this.limits.max_frame_payload, peer);
    // §3.7 step 6: the direction is judged before the payload (steps 2–5 come first).
    const early =
      decoded.fault !== undefined &&
      (decoded.fault.code === ErrorCode.FRAME_TOO_LARGE ||
        decoded.fault.code === ErrorCode.UNKNOWN_FRAME_TYPE ||
        decoded.fault.code === ErrorCode.RESERVED_FLAGS ||
        decoded.fault.code === ErrorCode.INVALID_ID);
    if (inSession && !early && !this.directionAllowed(type)) {
      this.connectionError(ErrorCode.PROTOCOL_VIOLATION, `${frameName(type)} sent by the wrong side`, type);
      return;
    }
    if (decoded.fault !== undefined) {
      const f = decoded.fault;
      if (this.st === "Handshaking") {
        // §3.7: no session to continue during the handshake.
        this.connectionError(f.code, f.message, f.frameType);
        return;
      }
      // §3.5: frames for a quarantined id crossed our ERROR; dropped silently.
      if (f.idAllowed && this.quarantine.has(f.id)) return;
      if (type === FrameType.ERROR) {
        // §3.7: never answer an ERROR with an ERROR; an invalid one still ends its exchange.
        if (f.idAllowed && f.id !== 0) this.endByPeerError(f.id, f.code, undefined, false, true);
        return;
      }
      const id = f.idAllowed ? f.id : 0;
      this.sendError(id, f.code, f.message, f.frameType);
      if (id !== 0 && this.endExchangeLocally(id, f.code)) this.quarantineOwn(id);
      return;
    }
    this.dispatch(decoded.frame, now, overRate);
  }

  private dispatch(frame: Frame, now: number, overRate: boolean): void {
    const f = frame.fields;
    if (this.st === "Handshaking") return this.handshakeFrame(frame, now);
    if (this.st === "Detached") {
      // Only a resuming client reads here: RESUME or ERROR(RESUME_FAILED).
      if (frame.type === FrameType.RESUME) return this.resumed(Number(f["received"]), now);
      if (frame.type === FrameType.ERROR) return this.resumeRefused(frame);
      this.connectionError(ErrorCode.PROTOCOL_VIOLATION, "expected RESUME", frame.type);
      return;
    }
    if (!this.directionAllowed(frame.type)) {
      this.connectionError(ErrorCode.PROTOCOL_VIOLATION, `${frameName(frame.type)} sent by the wrong side`, frame.type);
      return;
    }
    switch (frame.type) {
      case FrameType.HELLO:
      case FrameType.RESUME:
        this.connectionError(ErrorCode.PROTOCOL_VIOLATION, `${frameName(frame.type)} on an open session`, frame.type);
        return;
      case FrameType.PING:
        if (this.resumable && f["received"] !== undefined && !this.onAck(f["received"] as number | bigint)) return;
        this.sendFrame({ type: FrameType.PONG, id: 0, fields: this.ackFields() });
        this.ackSent();
        return;
      case FrameType.PONG:
        if (this.resumable && f["received"] !== undefined && !this.onAck(f["received"] as number | bigint)) return;
        this.pongSeq++;
        for (const [qid, seq] of this.quarantine) if (seq <= this.pongSeq) this.quarantine.delete(qid);
        return;
      case FrameType.ERROR:
        return this.onError(frame);
      case FrameType.GOAWAY:
        if (!this.goawayReceived) {
          this.goawayReceived = true;
          if (this.st === "Open") this.st = "Draining";
          const e: Event = { type: "GoAway", timeoutMs: Number(f["timeout_ms"] ?? 0) };
          if (f["reason"] !== undefined) e.reason = f["reason"] as string;
          this.emit(e);
        }
        return;
      case FrameType.INVOKE:
        return this.onInvoke(frame, now, overRate);
      case FrameType.INTERRUPT:
        return this.onInterrupt(frame);
      case FrameType.CREDIT:
        return this.onCredit(frame);
      case FrameType.REPLY:
        return this.onReply(frame);
      case FrameType.STREAM:
        return this.onStream(frame);
      case FrameType.COMPLETE:
        return this.onComplete(frame);
      case FrameType.TOOL_DEF:
        return this.onToolDef(frame);
      case FrameType.REQUEST:
        return this.onRequest(frame, overRate);
    }
  }

  private directionAllowed(type: number): boolean {
    // §3.3 directions.
    switch (type) {
      case FrameType.INVOKE:
      case FrameType.REPLY:
      case FrameType.CREDIT:
        return this.role === "server";
      case FrameType.STREAM:
      case FrameType.TOOL_DEF:
      case FrameType.COMPLETE:
      case FrameType.REQUEST:
        return this.role === "client";
      default:
        return true;
    }
  }

  private handshakeFrame(frame: Frame, now: number): void {
    const f = frame.fields;
    if (this.role === "server") {
      if (frame.type === FrameType.HELLO) return this.serverHello(frame, now);
      if (frame.type === FrameType.RESUME) {
        if (!this.cfg.resume || f["token"] === undefined) {
          // §11.2 step 5: a side that does not support resume refuses; HELLO may follow.
          this.sendError(0, ErrorCode.RESUME_FAILED, "resume is not supported", undefined);
          return;
        }
        // The application finds the detached session by token (`resumeSession`) or refuses (`refuseResume`).
        this.emit({ type: "ResumeRequested", token: f["token"] as Uint8Array, received: f["received"] as number | bigint });
        return;
      }
      this.connectionError(ErrorCode.PROTOCOL_VIOLATION, `${frameName(frame.type)} before HELLO`, frame.type);
      return;
    }
    // Client waiting for the server's HELLO.
    if (frame.type === FrameType.HELLO) return this.clientHello(frame, now);
    if (frame.type === FrameType.ERROR) {
      const code = Number(f["code"]);
      if (code === ErrorCode.RESUME_FAILED) return;
      this.close0("error_received", code);
      return;
    }
    this.connectionError(ErrorCode.PROTOCOL_VIOLATION, `${frameName(frame.type)} before the server's HELLO`, frame.type);
  }

  private serverHello(frame: Frame, now: number): void {
    const f = frame.fields;
    const offered = f["versions"] as number[];
    let chosen = 0;
    for (const v of PROTOCOL_VERSIONS) if (offered.includes(v) && v > chosen) chosen = v;
    if (chosen === 0) {
      // §6.3: the message lists the versions this server supports.
      this.connectionError(ErrorCode.UNSUPPORTED_VERSION, `supported versions: ${PROTOCOL_VERSIONS.join(", ")}`, undefined);
      return;
    }
    this.version = chosen;
    this.acceptPeerHello(f);
    this.resumable = this.hasCapability("resume");
    if (this.resumable && this.resumeToken === undefined) this.resumeToken = this.cfg.random(16);
    // §6.2 step 3: the initial tool set, cut to the client's max_tools and max_frame_payload.
    const initial: Frame[] = [];
    for (const tool of this.tools.values()) {
      if (initial.length >= this.peerLimits.max_tools) break;
      const tf = toolDefFrame(0, tool);
      if (payloadSize(tf) > this.peerLimits.max_frame_payload) continue;
      initial.push(tf);
      this.peerTools.add(tool.name);
    }
    const fields: Record<string, unknown> = {
      versions: [chosen],
      connection_id: this.connectionId,
    };
    const caps = this.ownCapabilities();
    if (caps.length > 0) fields["capabilities"] = caps;
    const limits = this.announcedLimits();
    if (limits !== undefined) fields["limits"] = limits;
    // §5.1: the server announces the session's interval, default or not.
    fields["heartbeat_ms"] = this.heartbeatMs;
    if (this.resumable) fields["resume_token"] = this.resumeToken;
    if (initial.length > 0) fields["tools"] = initial.length;
    if (this.cfg.agent !== undefined) fields["agent"] = this.cfg.agent;
    this.st = "Open";
    this.handshakeDeadline = undefined;
    this.lastRecv = now;
    this.writeFrame({ type: FrameType.HELLO, id: 0, fields: fields as Frame["fields"] });
    for (const tf of initial) this.sendFrame(tf);
    this.emit({
      type: "Connected",
      connectionId: this.connectionId,
      version: chosen,
      heartbeatMs: this.heartbeatMs,
      resumable: this.resumable,
    });
  }

  private clientHello(frame: Frame, now: number): void {
    const f = frame.fields;
    const versions = f["versions"] as number[];
    if (versions.length !== 1 || !PROTOCOL_VERSIONS.includes(versions[0]!)) {
      this.connectionError(ErrorCode.UNSUPPORTED_VERSION, `server chose versions [${versions.join(", ")}]`, undefined);
      return;
    }
    if (f["connection_id"] === undefined) {
      this.connectionError(ErrorCode.MISSING_FIELD, "connection_id: required", FrameType.HELLO);
      return;
    }
    // A new session (after RESUME_FAILED, the old one is gone).
    this.version = versions[0]!;
    this.connectionId = f["connection_id"] as string;
    this.acceptPeerHello(f);
    this.resumeToken = this.hasCapability("resume") ? (f["resume_token"] as Uint8Array | undefined) : undefined;
    this.resumable = this.resumeToken !== undefined;
    this.st = "Open";
    for (const bytes of this.pipelined) this.countSent(bytes);
    this.pipelined = [];
    this.handshakeDeadline = undefined;
    this.lastRecv = now;
    this.tools.clear();
    this.initialToolsPending = Number(f["tools"] ?? 0);
    const connected: Event = {
      type: "Connected",
      connectionId: this.connectionId,
      version: this.version,
      heartbeatMs: this.heartbeatMs,
      resumable: this.resumable,
    };
    // §6.2 step 4: the initial tool set is complete when its TOOL_DEFs have arrived.
    if (this.initialToolsPending === 0) this.emit(connected);
    else this.connectedPending = connected;
  }

  private acceptPeerHello(f: Frame["fields"]): void {
    const d = defaultLimits();
    const l = (f["limits"] ?? {}) as Record<string, number>;
    this.peerLimits = {
      max_frame_payload: Number(l["max_frame_payload"] ?? d.max_frame_payload),
      max_inflight: Number(l["max_inflight"] ?? d.max_inflight),
      max_tools: Number(l["max_tools"] ?? d.max_tools),
      max_chunk: Number(l["max_chunk"] ?? d.max_chunk),
      initial_window: Number(l["initial_window"] ?? d.initial_window),
    };
    this.peerReplayBuffer = Number(l["replay_buffer"] ?? 262144);
    this.peerResumeWindowMs = Number(l["resume_window_ms"] ?? 30000);
    this.peerCapabilities = new Set((f["capabilities"] as string[] | undefined) ?? []);
    // §6.4: the smaller of the two non-zero intervals.
    const mine = this.cfg.heartbeatMs;
    const theirs = Number(f["heartbeat_ms"] ?? 30000);
    this.heartbeatMs = mine === 0 ? theirs : theirs === 0 ? mine : Math.min(mine, theirs);
    this.pingsSent = 0;
    // §3.5: a new session has its own ids; nothing of the old one is quarantined.
    this.quarantine.clear();
    this.pingSeq = this.pongSeq = 0;
    // §11.1: counts start with the session.
    this.sentCount = 0;
    this.recvCount = 0;
    this.replay = [];
    this.replayHead = 0;
    this.replayBytes = 0;
    this.replayFirst = 0;
    this.replayBlocked = false;
    this.bytesSinceAck = 0;
    this.ackedCount = 0;
  }

  /**
   * §11.1: the peer acknowledged `received` counted frames: they leave the replay buffer. Above
   * what was sent is PROTOCOL_VIOLATION (returns false, closed).
   */
  private onAck(received: number | bigint): boolean {
    const r = Number(received);
    if (r > this.sentCount) {
      this.connectionError(ErrorCode.PROTOCOL_VIOLATION, `received ${received} is above the ${this.sentCount} frames sent`, undefined);
      return false;
    }
    this.acknowledge(r);
    return true;
  }

  private acknowledge(r: number): void {
    const before = this.replayBytes;
    while (this.replayFirst < r && this.replayHead < this.replay.length) this.dropOldest();
    if (this.replayBytes < before && this.replayBlocked && this.role === "server") {
      // STREAMs waiting for room may go on (§11.1), as after CREDIT (§7.5).
      this.replayBlocked = false;
      for (const [id, inv] of this.invocations) if (!inv.final) this.emit({ type: "Writable", id });
    }
  }

  private dropOldest(): void {
    const b = this.replay[this.replayHead]!;
    this.replay[this.replayHead++] = EMPTY;
    this.replayBytes -= b.length;
    this.replayFirst++;
    if (this.replayHead === this.replay.length) {
      this.replay.length = 0;
      this.replayHead = 0;
    } else if (this.replayHead >= 1024 && this.replayHead * 2 >= this.replay.length) {
      this.replay = this.replay.slice(this.replayHead);
      this.replayHead = 0;
    }
  }

  /** PING and PONG fields: `received` in a resumable session (§5.8, §11.1). */
  private ackFields(): Frame["fields"] {
    return this.resumable ? { received: this.recvCount } : {};
  }

  private ackSent(): void {
    this.bytesSinceAck = 0;
    this.ackedCount = this.recvCount;
  }

  private onError(frame: Frame): void {
    const f = frame.fields;
    const code = Number(f["code"]);
    const message = f["message"] as string | undefined;
    const retryable = (f["retryable"] as boolean | undefined) ?? false;
    if (scopeOf(code) === "connection") {
      // §12.1: a connection-scope code closes the connection whatever the id.
      this.close0("error_received", code);
      return;
    }
    this.endByPeerError(frame.id, code, message, retryable, false);
  }

  /** An ERROR from the peer (or an invalid one, §3.7) for `id`: ends the exchange if in flight. */
  private endByPeerError(id: number, code: number, message: string | undefined, retryable: boolean, invalid: boolean): void {
    const clientSpace = id >= 1 && id <= 0x7fff;
    const ours = this.role === "client" ? clientSpace : !clientSpace;
    const map = clientSpace ? this.invocations : this.requests;
    if (id !== 0 && map.has(id)) {
      this.forget(map, id);
      if (ours) {
        const e: Event = { type: "Ended", id, outcome: "error", code, retryable };
        if (message !== undefined) e.message = message;
        this.emit(e);
      } else {
        this.emit({ type: "Aborted", id, code });
      }
      this.checkDrained();
      return;
    }
    if (invalid || this.quarantine.has(id)) return;
    const e: Event = { type: "PeerError", id, code, retryable };
    if (message !== undefined) e.message = message;
    this.emit(e);
  }

  /** §3.7: the ERROR this side just sent for `id` ends the exchange if it is in flight. */
  private endExchangeLocally(id: number, code: number): boolean {
    const clientSpace = id <= 0x7fff;
    const map = clientSpace ? this.invocations : this.requests;
    if (!map.has(id)) return false;
    this.forget(map, id);
    const ours = this.role === "client" ? clientSpace : !clientSpace;
    if (ours) this.emit({ type: "Ended", id, outcome: "error", code, retryable: isRetryable(code) });
    else this.emit({ type: "Aborted", id, code });
    this.checkDrained();
    return ours;
  }

  /** §3.5: after ending an own exchange with an ERROR, PING and quarantine the id until the PONG. */
  private quarantineOwn(id: number): void {
    this.sendPing();
    this.quarantine.set(id, this.pingSeq);
  }

  /**
   * §3.5 after a resume (§11.2): PINGs sent on the old transport may never be answered. The
   * ERRORs they followed were held for replay and are re-sent (or had arrived), so one PING after
   * the replay stands for them all.
   */
  private pingAgainForQuarantine(): void {
    this.pongSeq = this.pingSeq;
    if (this.quarantine.size === 0) return;
    this.sendPing();
    for (const id of this.quarantine.keys()) this.quarantine.set(id, this.pingSeq);
  }

  private sendPing(): void {
    this.pingSeq++;
    this.sendFrame({ type: FrameType.PING, id: 0, fields: this.ackFields() });
    this.ackSent();
  }

  private onInvoke(frame: Frame, now: number, overRate: boolean): void {
    const id = frame.id;
    const f = frame.fields;
    const dup = this.invocations.has(id);
    const held = openingBytes(f["tool"], f["args"], f["meta"]);
    // §7.2, in order.
    let refusal: [number, string] | undefined;
    // §6.5: after GOAWAY in either direction an opening frame is refused.
    if (this.goawaySent || this.goawayReceived) refusal = [ErrorCode.DRAINING, "draining"];
    else if (dup) refusal = [ErrorCode.DUPLICATE_ID, `invocation ${id} is already in flight`];
    else if (this.invocations.size >= this.limits.max_inflight) {
      refusal = [ErrorCode.TOO_MANY_INFLIGHT, `max_inflight ${this.limits.max_inflight} reached`];
    } else if (this.overArgsBound(this.invocations.size, held)) {
      refusal = [ErrorCode.TOO_MANY_INFLIGHT, `arguments in flight would pass ${this.cfg.maxArgsInFlight} bytes`];
    } else if (overRate) refusal = [ErrorCode.RATE_LIMITED, "rate limit"];
    // §6.2, §7.2: a tool cut from the initial set is unknown to the client until added.
    else if (!this.tools.has(f["tool"] as string) || !this.peerTools.has(f["tool"] as string)) refusal = [ErrorCode.UNKNOWN_TOOL, `no tool ${f["tool"] as string}`];
    if (refusal !== undefined) {
      this.sendError(id, refusal[0], refusal[1], FrameType.INVOKE);
      if (dup) {
        // An ERROR for an id in flight always ends it (§7.2).
        this.forget(this.invocations, id);
        this.emit({ type: "Aborted", id, code: refusal[0] });
        this.checkDrained();
      }
      return;
    }
    const deadlineMs = Number(f["deadline_ms"] ?? 0);
    const inv: Invocation = {
      seq: 0,
      window: this.peerLimits.initial_window,
      consumed: 0,
      final: false,
      interrupted: false,
      held,
    };
    if (deadlineMs > 0) inv.deadline = now + deadlineMs;
    this.invocations.set(id, inv);
    this.argsHeld += held;
    const e: Event = { type: "Invoked", id, tool: f["tool"] as string, deadlineMs };
    if (f["args"] !== undefined) e.args = f["args"] as Raw;
    if (f["meta"] !== undefined) e.meta = f["meta"] as Raw;
    this.emit(e);
  }

  /**
   * §7.2 step 3, §8, §13.1 step 3: whether an opening frame holding `held` bytes would take the
   * arguments in flight past `maxArgsInFlight`. Never when none of the peer's exchanges is
   * running (`running` of them are): one frame is always taken, bounded by max_frame_payload.
   */
  private overArgsBound(running: number, held: number): boolean {
    return running > 0 && this.argsHeld + held > this.cfg.maxArgsInFlight;
  }

  /** Removes an exchange; one the peer opened gives back the bytes it held (§13.1 step 3). */
  private forget(map: Map<number, Invocation> | Map<number, Request>, id: number): void {
    const ex = map.get(id);
    if (ex === undefined) return;
    this.argsHeld -= ex.held;
    map.delete(id);
  }

  private onInterrupt(frame: Frame): void {
    const id = frame.id;
    // The peer interrupts an exchange it opened: at a server an invocation, at a client a request.
    const map = this.role === "server" ? (id <= 0x7fff ? this.invocations : undefined) : id >= 0x8000 ? this.requests : undefined;
    const ex = map?.get(id);
    // §7.3: not in flight (it crossed the terminal frame) or already interrupted: ignored.
    if (ex === undefined || ex.interrupted) return;
    ex.interrupted = true;
    const e: Event = { type: "Interrupted", id };
    if (frame.fields["reason"] !== undefined) e.reason = frame.fields["reason"] as string;
    this.emit(e);
  }

  private onCredit(frame: Frame): void {
    const inv = this.invocations.get(frame.id);
    if (inv === undefined) return; // §7.1: crossed the terminal frame
    const window = inv.window + Number(frame.fields["bytes"]);
    if (window > U32_MAX) {
      // §7.5: a window above 2^32−1 is FLOW_CONTROL, which ends the invocation.
      this.forget(this.invocations, frame.id);
      this.sendError(frame.id, ErrorCode.FLOW_CONTROL, `window ${window} above 2^32-1`, FrameType.CREDIT);
      this.emit({ type: "Aborted", id: frame.id, code: ErrorCode.FLOW_CONTROL });
      this.checkDrained();
      return;
    }
    inv.window = window;
    if (!inv.final) this.emit({ type: "Writable", id: frame.id });
  }

  private onReply(frame: Frame): void {
    const id = frame.id;
    if (!this.requests.has(id)) {
      if (!this.quarantine.has(id)) this.sendError(id, ErrorCode.UNKNOWN_ID, `request ${id} is not in flight`, FrameType.REPLY);
      return;
    }
    this.forget(this.requests, id);
    const e: Event = { type: "Ended", id, outcome: "reply", status: Number(frame.fields["status"]) };
    if (frame.fields["body"] !== undefined) e.body = frame.fields["body"] as Raw;
    this.emit(e);
    this.checkDrained();
  }

  private onStream(frame: Frame): void {
    const id = frame.id;
    const inv = this.invocations.get(id);
    if (inv === undefined) {
      if (!this.quarantine.has(id)) this.sendError(id, ErrorCode.UNKNOWN_ID, `invocation ${id} is not in flight`, FrameType.STREAM);
      return;
    }
    const f = frame.fields;
    const data = f["data"] as string | Uint8Array;
    const seq = Number(f["seq"]);
    const final = f["final"] === true;
    const n = typeof data === "string" ? utf8Length(data) : data.length;
    let fault: [number, string] | undefined;
    if (inv.final) fault = [ErrorCode.BAD_SEQUENCE, "STREAM after the final one"];
    else if (seq !== inv.seq) fault = [ErrorCode.BAD_SEQUENCE, `seq ${seq}, expected ${inv.seq}`];
    else if (n > this.limits.max_chunk) fault = [ErrorCode.CHUNK_TOO_LARGE, `chunk of ${n} bytes above max_chunk ${this.limits.max_chunk}`];
    else if (n > inv.window) fault = [ErrorCode.FLOW_CONTROL, `chunk of ${n} bytes beyond the window of ${inv.window}`];
    if (fault !== undefined) {
      this.forget(this.invocations, id);
      this.sendError(id, fault[0], fault[1], FrameType.STREAM);
      this.quarantineOwn(id);
      this.emit({ type: "Ended", id, outcome: "error", code: fault[0], retryable: false });
      this.checkDrained();
      return;
    }
    inv.seq++;
    inv.window -= n;
    if (final) inv.final = true;
    this.emit({ type: "Chunk", id, seq, data, final });
    if (this.cfg.autoCredit && !final) {
      inv.consumed += n;
      this.maybeCredit(id, inv);
    }
  }

  /** §7.5 SHOULD: grant CREDIT once half of initial_window was consumed since the last grant. */
  private maybeCredit(id: number, inv: Invocation): void {
    if (inv.final || inv.consumed === 0) return;
    if (inv.consumed * 2 < this.limits.initial_window) return;
    const bytes = Math.min(inv.consumed, U32_MAX - inv.window);
    if (bytes <= 0) return;
    inv.consumed -= bytes;
    inv.window += bytes;
    this.sendFrame({ type: FrameType.CREDIT, id, fields: { bytes } });
  }

  private onComplete(frame: Frame): void {
    const id = frame.id;
    if (!this.invocations.has(id)) {
      if (!this.quarantine.has(id)) this.sendError(id, ErrorCode.UNKNOWN_ID, `invocation ${id} is not in flight`, FrameType.COMPLETE);
      return;
    }
    this.forget(this.invocations, id);
    const f = frame.fields;
    const e: Event = { type: "Ended", id, outcome: "complete", status: Number(f["status"]) };
    if (f["result"] !== undefined) e.result = f["result"] as Raw;
    if (f["metrics"] !== undefined) e.metrics = f["metrics"] as Metrics;
    this.emit(e);
    this.checkDrained();
  }

  private onToolDef(frame: Frame): void {
    const f = frame.fields;
    const op = Number(f["op"]);
    const name = f["name"] as string;
    const tool: ToolDef = { name };
    if (f["description"] !== undefined) tool.description = f["description"] as string;
    if (f["input_schema"] !== undefined) tool.inputSchema = f["input_schema"] as Raw;
    if (f["annotations"] !== undefined) tool.annotations = f["annotations"] as Raw;
    const has = this.tools.has(name);
    if (op === 0) {
      if (has) this.sendError(0, ErrorCode.TOOL_STATE, `tool ${name} already held`, FrameType.TOOL_DEF);
      else if (this.tools.size >= this.limits.max_tools) {
        this.sendError(0, ErrorCode.TOO_MANY_TOOLS, `max_tools ${this.limits.max_tools} reached`, FrameType.TOOL_DEF);
      } else {
        this.tools.set(name, tool);
        this.emit({ type: "ToolAdded", tool });
      }
    } else if (!has) {
      this.sendError(0, ErrorCode.TOOL_STATE, `no tool ${name}`, FrameType.TOOL_DEF);
    } else if (op === 1) {
      this.tools.set(name, tool);
      this.emit({ type: "ToolUpdated", tool });
    } else {
      this.tools.delete(name);
      this.emit({ type: "ToolRemoved", name });
    }
    if (this.connectedPending !== undefined && --this.initialToolsPending <= 0) {
      const c = this.connectedPending;
      this.connectedPending = undefined;
      this.emit(c);
    }
  }

  private onRequest(frame: Frame, overRate: boolean): void {
    const id = frame.id;
    const f = frame.fields;
    const dup = this.requests.has(id);
    const held = openingBytes(f["kind"], f["body"], undefined);
    let refusal: [number, string] | undefined;
    if (!this.cfg.requests) refusal = [ErrorCode.UNSUPPORTED, "this client does not answer requests"];
    else if (this.goawaySent || this.goawayReceived) refusal = [ErrorCode.DRAINING, "draining"];
    else if (dup) refusal = [ErrorCode.DUPLICATE_ID, `request ${id} is already in flight`];
    else if (this.requests.size >= this.limits.max_inflight) {
      refusal = [ErrorCode.TOO_MANY_INFLIGHT, `max_inflight ${this.limits.max_inflight} reached`];
    } else if (this.overArgsBound(this.requests.size, held)) {
      refusal = [ErrorCode.TOO_MANY_INFLIGHT, `arguments in flight would pass ${this.cfg.maxArgsInFlight} bytes`];
    } else if (overRate) refusal = [ErrorCode.RATE_LIMITED, "rate limit"];
    if (refusal !== undefined) {
      this.sendError(id, refusal[0], refusal[1], FrameType.REQUEST);
      if (dup) {
        this.forget(this.requests, id);
        this.emit({ type: "Aborted", id, code: refusal[0] });
        this.checkDrained();
      }
      return;
    }
    this.requests.set(id, { interrupted: false, held });
    this.argsHeld += held;
    const e: Event = { type: "Requested", id, kind: f["kind"] as string };
    if (f["body"] !== undefined) e.body = f["body"] as Raw;
    if (f["invocation"] !== undefined) e.invocation = Number(f["invocation"]);
    this.emit(e);
  }

  private resumed(received: number, now: number): void {
    // §11.2 step 4: re-send what the server missed, or fail.
    this.resuming = false;
    if (!this.canReplayFrom(received)) {
      // §11.3: RESUME_FAILED sent here is an ordinary connection error: its sender closes.
      this.st = "Open";
      this.connectionError(ErrorCode.RESUME_FAILED, "the frames the server missed are no longer held", undefined);
      return;
    }
    this.st = this.goawaySent || this.goawayReceived ? "Draining" : "Open";
    this.detachedAt = undefined;
    this.handshakeDeadline = undefined;
    this.lastRecv = now;
    this.pingsSent = 0;
    this.replayFrom(received);
    this.pingAgainForQuarantine();
    this.emit({ type: "Resumed" });
    this.checkDrained();
  }

  private resumeRefused(frame: Frame): void {
    const code = Number(frame.fields["code"]);
    this.resuming = false;
    if (code !== ErrorCode.RESUME_FAILED) {
      this.close0("error_received", code);
      return;
    }
    // §11.2 step 4: the old session's exchanges end as lost; a new session may start.
    this.loseOwnExchanges();
    this.invocations.clear();
    this.requests.clear();
    this.argsHeld = 0;
    this.detachedAt = undefined;
    this.resumeToken = undefined;
    this.resumable = false;
    this.goawaySent = this.goawayReceived = false;
    this.st = "Handshaking";
    this.emit({ type: "PeerError", id: 0, code, retryable: false });
    this.sendHello();
  }

  // ---------------------------------------------------------------- sending

  private ownCapabilities(): string[] {
    const caps: string[] = [];
    if (this.role === "client" && this.cfg.requests) caps.push("requests");
    if (this.cfg.resume) caps.push("resume");
    return caps;
  }

  private announcedLimits(): Record<string, number> | undefined {
    const d = defaultLimits();
    const out: Record<string, number> = {};
    const keys: (keyof Limits)[] =
      this.role === "client"
        ? ["max_frame_payload", "max_inflight", "max_tools", "max_chunk", "initial_window"]
        : ["max_frame_payload", "max_inflight"];
    // §5.1: a server announces the limits that bind the client even when they are the defaults.
    for (const k of keys) if (this.role === "server" || this.limits[k] !== d[k]) out[k] = this.limits[k];
    // §5.1, §11: a side that lists `resume` announces its replay buffer and resume window.
    if (this.cfg.resume) {
      out["replay_buffer"] = this.cfg.replayBuffer;
      out["resume_window_ms"] = this.cfg.resumeWindowMs;
    }
    return Object.keys(out).length > 0 ? out : undefined;
  }

  private sendHello(): void {
    const fields: Record<string, unknown> = { versions: PROTOCOL_VERSIONS };
    const caps = this.ownCapabilities();
    if (caps.length > 0) fields["capabilities"] = caps;
    const limits = this.announcedLimits();
    if (limits !== undefined) fields["limits"] = limits;
    if (this.cfg.heartbeatMs !== 30000) fields["heartbeat_ms"] = this.cfg.heartbeatMs;
    if (this.cfg.agent !== undefined) fields["agent"] = this.cfg.agent;
    this.writeFrame({ type: FrameType.HELLO, id: 0, fields: fields as Frame["fields"] });
  }

  /** Sends a connection error (id 0) and closes (§6.6, §12.2). */
  private connectionError(code: number, message: string, frameType: number | undefined): void {
    this.sendError(0, code, message, frameType);
    this.close0("error_sent", code);
  }

  private sendError(id: number, code: number, message: string | undefined, frameType: number | undefined, retryable?: boolean): void {
    const fields: Record<string, unknown> = { code };
    if (message !== undefined && message !== "") fields["message"] = message;
    if (retryable ?? isRetryable(code)) fields["retryable"] = true;
    if (frameType !== undefined) fields["frame_type"] = frameType;
    this.sendWithText({ type: FrameType.ERROR, id, fields: fields as Frame["fields"] }, "message");
  }

  /**
   * §3.6: optional text is cut to 1024 bytes, and shortened or omitted so the frame fits the
   * peer's max_frame_payload; the frame is always sent.
   */
  private sendWithText(frame: Frame, key: string): void {
    const text = frame.fields[key] as string | undefined;
    if (text !== undefined) {
      let t = truncateUtf8(text, TEXT_LIMIT);
      frame.fields[key] = t;
      const over = payloadSize(frame) - this.peerLimits.max_frame_payload;
      if (over > 0) {
        t = truncateUtf8(t, Math.max(0, utf8Length(t) - over - 4));
        if (t === "") delete frame.fields[key];
        else frame.fields[key] = t;
        if (payloadSize(frame) > this.peerLimits.max_frame_payload) delete frame.fields[key];
      }
    }
    this.sendFrame(frame);
  }

  /** Sends a frame from a command, refusing (locally) one above the peer's max_frame_payload (§3.6). */
  private sendChecked(frame: Frame): void {
    const start = this.out.len;
    encodeFrame(this.out, frame);
    this.checkSent(frame.type, start);
  }

  /** `sendChecked` for a frame already written at `start`. */
  private checkSent(type: number, start: number): void {
    const size = this.out.len - start - HEADER_LEN;
    if (size > this.peerLimits.max_frame_payload) {
      this.out.len = start;
      throw new ProtocolMisuse(`frame payload of ${size} bytes above the peer's max_frame_payload ${this.peerLimits.max_frame_payload}`);
    }
    this.recordSent(type, start);
  }

  /**
   * §3.6, §7.1: sends a terminal frame (COMPLETE, REPLY), or, when it would exceed the peer's
   * max_frame_payload, ERROR(RESULT_TOO_LARGE) in its place so the exchange still ends. Returns
   * whether the frame itself went.
   */
  private sendTerminal(frame: Frame): boolean {
    const start = this.out.len;
    encodeFrame(this.out, frame);
    return this.terminalSent(frame.type, frame.id, start);
  }

  /** `sendTerminal` for a frame already written at `start`. */
  private terminalSent(type: number, id: number, start: number): boolean {
    const size = this.out.len - start - HEADER_LEN;
    if (size > this.peerLimits.max_frame_payload) {
      this.out.len = start;
      this.sendError(id, ErrorCode.RESULT_TOO_LARGE, `${frameName(type)} payload of ${size} bytes above max_frame_payload ${this.peerLimits.max_frame_payload}`, type);
      return false;
    }
    this.recordSent(type, start);
    return true;
  }

  private sendFrame(frame: Frame): void {
    if (this.st === "Closed") return;
    const start = this.out.len;
    encodeFrame(this.out, frame);
    this.recordSent(frame.type, start);
  }

  /** HELLO and RESUME: not counted (§11.1). */
  private writeFrame(frame: Frame): void {
    encodeFrame(this.out, frame);
  }

  /** §11.1: count the frame and keep it for replay while the session is resumable. */
  private recordSent(type: number, start: number): void {
    if (type === FrameType.HELLO || type === FrameType.RESUME || type === FrameType.PING || type === FrameType.PONG) return;
    if (this.st === "Handshaking") {
      // §6.2, §11.1: a pipelined INVOKE belongs to the session the server's HELLO opens; it is
      // counted (and held for replay) once that HELLO arrives.
      if (type === FrameType.INVOKE) this.pipelined.push(this.out.buf.slice(start, this.out.len));
      return;
    }
    this.sentCount++;
    if (this.resumable) {
      this.holdForReplay(this.out.buf.slice(start, this.out.len));
      // §11.3: while detached, frames wait in the replay buffer for the new transport.
      if (this.st === "Detached") this.out.len = start;
    }
  }

  private countSent(bytes: Uint8Array): void {
    this.sentCount++;
    if (this.resumable) this.holdForReplay(bytes);
  }

  /**
   * §11.1: keeps a sent counted frame until it is acknowledged. Past `replay_buffer` the oldest
   * frames are dropped (a resume that needs them fails), but the newest is always kept.
   */
  private holdForReplay(bytes: Uint8Array): void {
    this.replay.push(bytes);
    this.replayBytes += bytes.length;
    while (this.replayBytes > this.cfg.replayBuffer && this.replay.length - this.replayHead > 1) this.dropOldest();
  }

  private emit(e: Event): void {
    this.events[this.eventTail++] = e;
  }

  // ---------------------------------------------------------------- helpers

  private requireRole(role: Role, what: string): void {
    if (this.role !== role) throw new ProtocolMisuse(`${what} is for a ${role}`);
  }

  private requireSession(what: string): void {
    // Detached: frames are kept for replay and re-sent on resume (§11).
    if (this.st !== "Open" && this.st !== "Draining" && this.st !== "Detached") {
      throw new ProtocolMisuse(`cannot ${what} in state ${this.st}`);
    }
  }

  /**
   * §8: a request ends with its invocation. When the invocation a server request names has
   * ended (terminal frame sent or received, or an ERROR), the server interrupts the request;
   * the client then ends it with REPLY(cancelled). Called wherever an exchange ends.
   */
  private interruptOrphanedRequests(): void {
    if (this.role !== "server" || this.st === "Closed") return;
    for (const [id, req] of this.requests) {
      if (req.interrupted || req.invocation === undefined || this.invocations.has(req.invocation)) continue;
      req.interrupted = true;
      this.sendFrame({ type: FrameType.INTERRUPT, id, fields: {} });
    }
  }

  private allocateId(map: Map<number, unknown>, lo: number, hi: number): number {
    // §3.5: sequential, wrapping, skipping ids in flight.
    for (let i = 0; i <= hi - lo; i++) {
      const id = this.nextId;
      this.nextId = id >= hi ? lo : id + 1;
      if (!map.has(id) && !this.quarantine.has(id)) return id;
    }
    throw new ProtocolMisuse("no free id");
  }

  /** §6.5: the GOAWAY sender closes once nothing is in flight on either side. */
  private checkDrained(): void {
    this.interruptOrphanedRequests();
    if (this.goawaySent && this.st === "Draining" && this.invocations.size === 0 && this.requests.size === 0) {
      this.close0("drained", undefined);
    }
  }

  /** Exchanges this side opened end as lost (§6.6). */
  private loseOwnExchanges(): void {
    const own = this.role === "client" ? this.invocations : this.requests;
    for (const id of own.keys()) this.emit({ type: "Ended", id, outcome: "lost" });
  }

  private close0(reason: CloseReason, code: number | undefined): void {
    if (this.st === "Closed") return;
    this.loseOwnExchanges();
    this.invocations.clear();
    this.requests.clear();
    this.argsHeld = 0;
    this.st = "Closed";
    // §2.1: a side that closes on a connection error, sent or received, uses the same code.
    if ((reason === "error_received" || reason === "error_sent") && code !== undefined) this.closeCodeValue = webSocketCloseCode(code);
    const e: Event = { type: "Closed", reason };
    if (code !== undefined) e.code = code;
    this.emit(e);
  }
}

/**
 * Messages `pollTransmit` returns are cut from shared slabs that are never written twice, so a
 * transport that keeps a message keeps its bytes. A small `slice()` would live on V8's heap,
 * and the first read of its `.buffer` (ws reads it, to make a Buffer) moves it off the heap
 * with a malloc: measurable per round trip (see README, Benchmarks).
 */
const SLAB = 16384;
let slab = new Uint8Array(SLAB);
let slabUsed = 0;

function sliceOut(buf: Uint8Array, start: number, end: number): Uint8Array {
  const n = end - start;
  if (n > SLAB >> 3) return buf.slice(start, end);
  if (slabUsed + n > SLAB) {
    slab = new Uint8Array(SLAB);
    slabUsed = 0;
  }
  const at = slabUsed;
  slabUsed += n;
  for (let i = 0; i < n; i++) slab[at + i] = buf[start + i]!;
  return slab.subarray(at, at + n);
}

function raw(v: Uint8Array | Raw): Raw {
  return v instanceof Raw ? v : new Raw(v);
}

function frameName(type: number): string {
  return Object.keys(FrameType).find((k) => FrameType[k as keyof typeof FrameType] === type) ?? String(type);
}

function toolDefFrame(op: number, tool: ToolDef): Frame {
  const fields: Record<string, unknown> = { op, name: tool.name };
  if (tool.description) fields["description"] = tool.description;
  if (tool.inputSchema !== undefined) fields["input_schema"] = tool.inputSchema;
  if (tool.annotations !== undefined) fields["annotations"] = tool.annotations;
  return { type: FrameType.TOOL_DEF, id: 0, fields: fields as Frame["fields"] };
}

function payloadSize(frame: Frame): number {
  const w = new Writer(64);
  encodeFrame(w, frame);
  return w.len - HEADER_LEN;
}
