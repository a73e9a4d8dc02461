/**
 * Error types. A `ProtocolMisuse` is the local application's mistake (SPEC forbids the
 * action now; nothing is sent); an `AspError` is an outcome that carries a SPEC §12.2 code,
 * whether the peer sent it or the protocol decided it.
 * @module
 */
import { codeName, isRetryable } from "./codes.js";

/** A local misuse of the API: the action is not allowed in the current state (h11's LocalProtocolError). */
export class ProtocolMisuse extends Error {
  override name = "ProtocolMisuse";
}

/** An error with a SPEC §12.2 code (or an application-defined one) and `retryable`. */
export class AspError extends Error {
  override name = "AspError";
  /** The numeric code (SPEC §12.2). */
  readonly code: number;
  /** The §12.2 name of `code`, or `"0x…"` for codes the registry does not define. */
  readonly codeName: string;
  /** Whether the same request may succeed if sent again later. */
  readonly retryable: boolean;

  constructor(code: number, message?: string, retryable?: boolean) {
    const name = codeName(code) ?? `0x${code.toString(16)}`;
    super(message ? `${name}: ${message}` : name);
    this.code = code;
    this.codeName = name;
    this.retryable = retryable ?? isRetryable(code);
  }
}

/** The connection ended before the exchange did ("connection lost", SPEC §6.6). */
export class ConnectionLost extends Error {
  override name = "ConnectionLost";
  /** Connection loss is worth retrying on a new connection. */
  readonly retryable = true;
  readonly code: number | undefined;

  constructor(message = "connection lost", code?: number) {
    super(message);
    this.code = code;
  }
}
