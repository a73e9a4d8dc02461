/**
 * Error codes of SPEC §12.2, their scope by number (§12.1) and the registry's `retryable`.
 * @module
 */

/** The error codes of SPEC §12.2, by name. */
export const ErrorCode = {
  PROTOCOL_VIOLATION: 0x01,
  UNSUPPORTED_VERSION: 0x02,
  HANDSHAKE_TIMEOUT: 0x03,
  HEARTBEAT_TIMEOUT: 0x04,
  FLOOD: 0x05,
  GOING_AWAY: 0x06,
  FRAMING_ERROR: 0x07,
  RESUME_FAILED: 0x08,
  OVERLOADED: 0x09,
  UNKNOWN_FRAME_TYPE: 0x10,
  RESERVED_FLAGS: 0x11,
  FRAME_TOO_LARGE: 0x12,
  MALFORMED_PAYLOAD: 0x13,
  MISSING_FIELD: 0x14,
  INVALID_FIELD: 0x15,
  INVALID_ID: 0x16,
  UNKNOWN_TOOL: 0x20,
  DUPLICATE_ID: 0x21,
  UNKNOWN_ID: 0x22,
  TOO_MANY_INFLIGHT: 0x23,
  CHUNK_TOO_LARGE: 0x24,
  FLOW_CONTROL: 0x25,
  BAD_SEQUENCE: 0x26,
  DEADLINE_EXCEEDED: 0x27,
  DRAINING: 0x28,
  RATE_LIMITED: 0x29,
  UNSUPPORTED: 0x2a,
  RESULT_TOO_LARGE: 0x2b,
  TOO_MANY_TOOLS: 0x30,
  TOOL_STATE: 0x31,
  INVALID_ARGUMENTS: 0x40,
  TOOL_FAILED: 0x41,
  INTERNAL: 0x42,
  UNAVAILABLE: 0x43,
  UPSTREAM_TIMEOUT: 0x44,
} as const;

/** A code name of SPEC §12.2. */
export type ErrorCodeName = keyof typeof ErrorCode;

const NAMES = new Map<number, ErrorCodeName>(
  Object.entries(ErrorCode).map(([name, code]) => [code, name as ErrorCodeName]),
);

/** SPEC §12.2 registry: codes that are retryable. Codes it does not list are not. */
const RETRYABLE = new Set<number>([
  ErrorCode.HANDSHAKE_TIMEOUT,
  ErrorCode.HEARTBEAT_TIMEOUT,
  ErrorCode.GOING_AWAY,
  ErrorCode.OVERLOADED,
  ErrorCode.TOO_MANY_INFLIGHT,
  ErrorCode.DEADLINE_EXCEEDED,
  ErrorCode.DRAINING,
  ErrorCode.RATE_LIMITED,
  ErrorCode.INTERNAL,
  ErrorCode.UNAVAILABLE,
  ErrorCode.UPSTREAM_TIMEOUT,
]);

/** The §12.2 name of a code, or undefined for codes the registry does not define. */
export function codeName(code: number): ErrorCodeName | undefined {
  return NAMES.get(code);
}

/** Whether the §12.2 registry marks `code` retryable (false for codes it does not list). */
export function isRetryable(code: number): boolean {
  return RETRYABLE.has(code);
}

/** SPEC §12.1: the scope of a code is decided by its number. */
export type Scope = "connection" | "frame" | "exchange" | "application";

/** SPEC §12.1 scope by range (a receiver that does not know a code treats it by its range). */
export function scopeOf(code: number): Scope {
  if (code <= 0x0f) return "connection";
  if (code <= 0x1f) return "frame";
  if (code <= 0x3f) return "exchange";
  return "application";
}
