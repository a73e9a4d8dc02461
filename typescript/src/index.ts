/**
 * Agent Socket Protocol (ASP) for browsers (and any runtime with a standard `WebSocket`):
 * the client, and the Sans-IO core it runs on. Node programs import `agent-socket/node`,
 * which adds a `ws`-based client transport and the server.
 * @module
 */
import { Client, type ConnectOptions, connectWith } from "./client.js";
import type { SocketLike } from "./driver.js";
import { ProtocolMisuse } from "./errors.js";
import { normalizeUrl } from "./url.js";

export { ErrorCode, type ErrorCodeName, codeName, isRetryable, scopeOf } from "./codes.js";
export { FrameType, Raw, type Frame, type Role } from "./frame.js";
export { encode, encodeFrame, decodeFrame, readHeader } from "./codec.js";
export { Connection, type ConnectionConfig, type State } from "./connection.js";
export type { Event, ToolDef, Metrics, CloseReason } from "./event.js";
export { type Limits, defaultLimits } from "./limits.js";
export { AspError, ConnectionLost, ProtocolMisuse } from "./errors.js";
export { Driver, SUBPROTOCOL, type SocketLike } from "./driver.js";
export {
  Call,
  Client,
  type ClientEvents,
  type Completion,
  type ConnectOptions,
  type InvokeOptions,
  Reply,
  type ServerRequest,
  type SocketFactory,
  type Tool,
  ToolFailed,
  connectWith,
} from "./client.js";
export { DEFAULT_PATH, normalizeUrl } from "./url.js";

/** Opens a browser `WebSocket` (binary type `arraybuffer`) offering `asp-v1`. */
export function browserSocket(url: string, protocol: string, headers: Record<string, string>): SocketLike {
  if (headers["Authorization"] !== undefined) {
    // Browsers cannot set headers on a WebSocket upgrade; SPEC §2.1 puts the token there.
    throw new ProtocolMisuse("a browser WebSocket cannot send an Authorization header: authenticate with a cookie or a same-origin proxy");
  }
  const Ctor = (globalThis as unknown as { WebSocket?: new (url: string, protocol: string) => SocketLike }).WebSocket;
  if (Ctor === undefined) throw new ProtocolMisuse("no global WebSocket here: in Node, import from agent-socket/node");
  const ws = new Ctor(url, protocol);
  ws.binaryType = "arraybuffer";
  return ws;
}

/**
 * Connects to an ASP server: `const client = await connect("ws://host:port/v1/agent-socket")`.
 * Resolves once the handshake is done and the initial tool set has arrived.
 */
export function connect(url: string, options: ConnectOptions = {}): Promise<Client> {
  return connectWith(normalizeUrl(url), options, options.socketFactory ?? browserSocket);
}
