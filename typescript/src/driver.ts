/**
 * Runs a Sans-IO `Connection` over a WebSocket: feeds it what arrives, sends what it
 * queues (coalesced into one message per turn, SPEC §2.1), runs its timer, and hands its
 * events to the owner. The same loop serves the browser's `WebSocket` and Node's `ws`.
 * @module
 */
import type { Connection } from "./connection.js";
import type { Event } from "./event.js";

/** The part of the WebSocket API (browser `WebSocket`, `ws`) the driver uses. */
export interface SocketLike {
  binaryType: string;
  readonly readyState: number;
  readonly protocol: string;
  readonly bufferedAmount: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  /** `ws`: drops the TCP connection at once, without the closing handshake (a peer that is gone never answers it). */
  terminate?(): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  /**
   * Node's `ws` only: its own listeners, which get the message as it is (`(data, isBinary)`,
   * `(code, reason)`). The driver uses them when present: the DOM-style properties above make
   * `ws` build an event object per message.
   */
  on?(event: "message" | "close", listener: (...args: never[]) => void): unknown;
}

/**
 * Bytes a socket may hold unsent before input that makes it grow closes the connection with
 * `OVERLOADED`: SPEC §13.1's hard bound (`max_buffered`, 4 MiB). Streaming waits well below
 * it (the server's high-water mark); only a peer that provokes replies (PONG, errors, tool
 * lists) while it never reads gets here.
 */
export const MAX_UNSENT = 4 << 20;

/** The WebSocket subprotocol of SPEC §2.1. */
export const SUBPROTOCOL = "asp-v1";

/** Monotonic milliseconds: the time injected into the core. */
export function now(): number {
  return performance.now();
}

/** Runs `f` after pending I/O (Node's setImmediate; a MessageChannel task in browsers). */
const immediate: (f: () => void) => void =
  typeof setImmediate === "function"
    ? (f) => void setImmediate(f)
    : (f) => {
        const ch = new MessageChannel();
        ch.port1.onmessage = () => {
          ch.port1.close();
          f();
        };
        ch.port2.postMessage(null);
      };

export class Driver {
  socket: SocketLike | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timerAt: number | undefined;
  private pumping = false;
  private scheduled = false;
  private socketClosed = false;
  /**
   * A message went out since the current task began: later output waits for the end of the
   * task (coalescing, §2.1). Cleared where a task is known to begin (a message arrives, a
   * deferred flush runs), so a round trip arms no timer; output from a task the driver cannot
   * see begin (an application timer) is at most deferred to that task's end, never lost.
   */
  private sentThisTurn = false;

  constructor(
    readonly conn: Connection,
    private readonly onEvent: (e: Event) => void,
    private readonly onSocketGone?: () => void,
  ) {}

  /** Attaches an open socket: its messages go to the connection, its close to `handleTransportClosed`. */
  attach(socket: SocketLike): void {
    this.socket = socket;
    this.socketClosed = false;
    socket.binaryType = socket.binaryType === "nodebuffer" ? "nodebuffer" : "arraybuffer";
    if (socket.on !== undefined) {
      // ws: the driver's own listeners replace whatever the opener set; each one checks that
      // its socket is still the attached one, so a socket handed to another driver (a session
      // taken over, §11.3) is served by that driver alone.
      socket.onmessage = null;
      socket.onclose = null;
      socket.on("message", (data: Uint8Array | Uint8Array[], isBinary: boolean) => this.received(socket, isBinary ? data : undefined));
      socket.on("close", (code: number) => this.closed(socket, code));
    } else {
      socket.onmessage = (ev) => this.received(socket, typeof ev.data === "string" ? undefined : ev.data);
      socket.onclose = (ev) => this.closed(socket, ev.code);
    }
    socket.onerror = () => {
      /* the close event follows */
    };
  }

  /** One WebSocket message from `socket`: binary data, or undefined for a text message. */
  private received(socket: SocketLike, d: unknown): void {
    if (this.socket !== socket) return;
    // A message event starts a task: its reply may go out at once.
    this.sentThisTurn = false;
    const t = now();
    const unsent = socket.bufferedAmount;
    if (d instanceof Uint8Array) this.conn.handleMessage(d, t);
    else if (d instanceof ArrayBuffer) this.conn.handleMessage(new Uint8Array(d), t);
    else if (Array.isArray(d)) {
      // ws may hand fragments; join them into the one message they are.
      const parts = d as Uint8Array[];
      const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      let o = 0;
      for (const p of parts) {
        all.set(p, o);
        o += p.length;
      }
      this.conn.handleMessage(all, t);
    } else this.conn.handleText(t);
    this.pump();
    // A peer that sends but never reads must not grow the socket's buffer without bound:
    // judged on what this input added, so a large reply the application queued does not
    // close a healthy connection later.
    if (this.socket === socket && socket.bufferedAmount > unsent && socket.bufferedAmount > MAX_UNSENT) {
      this.conn.closeOverloaded();
      this.pump();
    }
  }

  private closed(socket: SocketLike, code: number): void {
    if (this.socket !== socket) return;
    this.socketClosed = true;
    this.socket = undefined;
    // §11.3: a Close with status 1000, or without a status (1005), ends the session on
    // purpose; any other end (1006 for a cut TCP connection, 1001, 1011…) detaches it.
    this.conn.handleTransportClosed(now(), code === 1000 || code === 1005);
    this.pump();
    this.onSocketGone?.();
  }

  /** Runs `fn` (a command on the connection) and flushes what it queued soon after. */
  command<T>(fn: () => T): T {
    const r = fn();
    if (this.conn.hasOutput) {
      // Nothing went out yet this turn: send now (a round trip waits for nothing); otherwise
      // coalesce with what follows.
      if (!this.sentThisTurn && !this.pumping && !this.scheduled) this.pump();
      else this.schedule();
    }
    return r;
  }

  /**
   * Flush soon. The first message of an event-loop turn leaves after the current microtasks
   * (a round trip waits for nothing); output queued after it in the same turn — a handler
   * streaming chunk after chunk — goes out together when the turn ends, as one message
   * (SPEC §2.1: senders SHOULD coalesce frames that are ready at the same time).
   */
  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    const run = () => {
      this.scheduled = false;
      // A setImmediate/MessageChannel callback starts a task.
      if (this.sentThisTurn && deferred) this.sentThisTurn = false;
      this.pump();
    };
    const deferred = this.sentThisTurn;
    if (this.sentThisTurn) immediate(run);
    else queueMicrotask(run);
  }

  /** Drains the connection: transmit, events, then arms the timer (SPEC-free glue). */
  pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      for (let rounds = 0; rounds < 1000; rounds++) {
        let progress = false;
        const bytes = this.conn.pollTransmit();
        if (bytes !== undefined) {
          progress = true;
          if (this.socket !== undefined && !this.socketClosed && this.socket.readyState === 1) {
            this.sentThisTurn = true;
            try {
              this.socket.send(bytes);
            } catch {
              /* the close event follows */
            }
          }
        }
        for (let e = this.conn.pollEvent(); e !== undefined; e = this.conn.pollEvent()) {
          progress = true;
          try {
            this.onEvent(e);
          } catch (err) {
            // An application callback's bug must not break the event loop.
            queueMicrotask(() => {
              throw err;
            });
          }
        }
        if (!progress) break;
        // Bounded so one pump cannot hold the event loop; what is left goes next turn.
        if (rounds === 999) this.schedule();
      }
      this.arm();
      if (this.conn.transportDone && this.socket !== undefined) {
        // Closed, or a resumable session detached itself (heartbeat timeout, take-over, §11.3).
        const s = this.socket;
        this.socket = undefined;
        try {
          // A detached session's transport is dead or taken over (§11.3): nobody will answer a
          // closing handshake, so drop it where the platform allows.
          if (!this.conn.isClosed && s.terminate !== undefined) s.terminate();
          else s.close(this.conn.transportCloseCode);
        } catch {
          /* already closing */
        }
        if (!this.conn.isClosed && this.onSocketGone !== undefined) queueMicrotask(this.onSocketGone);
      }
    } finally {
      this.pumping = false;
    }
  }

  private arm(): void {
    const at = this.conn.pollTimeout();
    if (at === this.timerAt) return;
    // The heartbeat deadline moves with every message received: keep a timer that fires no
    // later than needed (it then runs `handleTimeout`, which does nothing early, and re-arms)
    // instead of clearing and setting one per message.
    if (at !== undefined && this.timer !== undefined && this.timerAt !== undefined && this.timerAt <= at) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = at;
    if (at === undefined) return;
    const t = setTimeout(
      () => {
        this.timer = undefined;
        this.timerAt = undefined;
        this.conn.handleTimeout(now());
        this.pump();
      },
      Math.max(0, Math.ceil(at - now())),
    );
    // Node: a pending protocol timer must not keep the process alive by itself.
    (t as { unref?: () => void }).unref?.();
    this.timer = t;
  }

  /** Stops the timer (after close). */
  dispose(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = undefined;
  }
}
