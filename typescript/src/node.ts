/**
 * Agent Socket Protocol (ASP) for Node: everything of the browser entry, with `connect`
 * over `ws` (Node 20 has no stable global WebSocket client, and `ws` can send the bearer
 * token on the upgrade), and the server (`serve`).
 * @module
 */
import WebSocket from "ws";
import { type Client, type ConnectOptions, connectWith } from "./client.js";
import type { SocketLike } from "./driver.js";
import { normalizeUrl } from "./url.js";

export * from "./index.js";
export { RequestDeclined, type ServeOptions, Server, type ToolContext, type ToolHandler, type ToolSpec, serve } from "./server.js";

/** Opens a `ws` WebSocket offering `asp-v1`, with the given upgrade headers. */
export function nodeSocket(url: string, protocol: string, headers: Record<string, string>, maxMessage?: number): SocketLike {
  // A longer message is refused without being buffered (ws closes with 1009; SPEC §2.1, §13.1).
  const ws = new WebSocket(url, protocol, { headers, perMessageDeflate: false, maxPayload: maxMessage ?? 64 << 20 });
  return ws as unknown as SocketLike;
}

/**
 * Connects to an ASP server from Node: `const client = await connect("ws://127.0.0.1:7777", { token })`.
 * Resolves once the handshake is done and the initial tool set has arrived.
 */
export function connect(url: string, options: ConnectOptions = {}): Promise<Client> {
  return connectWith(normalizeUrl(url), options, options.socketFactory ?? nodeSocket);
}
