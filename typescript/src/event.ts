/**
 * Events the Sans-IO `Connection` reports to its application (pulled with `pollEvent`).
 * @module
 */
import type { Raw } from "./frame.js";

/** A tool definition (SPEC §5.5). `inputSchema` and `annotations` are MessagePack bytes. */
export interface ToolDef {
  name: string;
  description?: string;
  inputSchema?: Raw;
  annotations?: Raw;
}

/** Execution metrics of COMPLETE (SPEC §5.6). */
export interface Metrics {
  wall_us?: number | bigint;
  cpu_us?: number | bigint;
  input_tokens?: number | bigint;
  output_tokens?: number | bigint;
}

/** Why a connection closed. */
export type CloseReason = "local" | "drained" | "error_sent" | "error_received" | "transport_closed";

/** Everything a `Connection` tells its application. */
export type Event =
  | { type: "Connected"; connectionId: string; version: number; heartbeatMs: number; resumable: boolean }
  /** Server: an invocation starts running. */
  | { type: "Invoked"; id: number; tool: string; args?: Raw; deadlineMs: number; meta?: Raw }
  /** The peer interrupted an exchange it opened. */
  | { type: "Interrupted"; id: number; reason?: string }
  /** Client: STREAM data delivered. */
  | { type: "Chunk"; id: number; seq: number; data: string | Uint8Array; final: boolean }
  /** An exchange this side opened ended. */
  | {
      type: "Ended";
      id: number;
      outcome: "complete" | "reply" | "error" | "lost";
      status?: number;
      result?: Raw;
      body?: Raw;
      metrics?: Metrics;
      code?: number;
      message?: string;
      retryable?: boolean;
    }
  /** An exchange the peer opened was ended by the protocol (an ERROR sent or received). */
  | { type: "Aborted"; id: number; code: number }
  | { type: "ToolAdded"; tool: ToolDef }
  | { type: "ToolUpdated"; tool: ToolDef }
  | { type: "ToolRemoved"; name: string }
  /** Client: a server request arrived. */
  | { type: "Requested"; id: number; kind: string; body?: Raw; invocation?: number }
  | { type: "GoAway"; reason?: string; timeoutMs: number }
  /** An ERROR that ends nothing (a warning, a tool-set error, an id not in flight). */
  | { type: "PeerError"; id: number; code: number; message?: string; retryable: boolean }
  /** Server: the peer granted STREAM credit, so `streamCapacity` grew. */
  | { type: "Writable"; id: number }
  /** Server: a new transport asks to resume the session with this token (§11.2). */
  | { type: "ResumeRequested"; token: Uint8Array; received: number | bigint }
  | { type: "Detached" }
  | { type: "Resumed" }
  | { type: "Closed"; reason: CloseReason; code?: number };
