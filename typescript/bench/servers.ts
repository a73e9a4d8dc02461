/**
 * Benchmark servers, one per process: `node servers.js asp|ws|mcp`. Each serves the same
 * two operations on 127.0.0.1 (port 0) — `echo` (returns its argument) and `stream`
 * (`n` chunks of `size` bytes of text) — prints `{"url": …}` on stdout, and answers the line
 * `bytes` on stdin with the TCP payload bytes read and written on all its sockets so far and
 * the CPU time (user + system, µs) the process has used.
 */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { createInterface } from "node:readline";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import { WebSocketServer } from "ws";
import { z } from "zod";
import { serve } from "../src/node.js";

const sockets = new Set<Socket>();
let closedRead = 0;
let closedWritten = 0;
function track(s: Socket): void {
  sockets.add(s);
  s.once("close", () => {
    closedRead += s.bytesRead;
    closedWritten += s.bytesWritten;
    sockets.delete(s);
  });
}

function report(url: string): void {
  console.log(JSON.stringify({ url }));
  createInterface({ input: process.stdin }).on("line", (l) => {
    if (l.trim() !== "bytes") return;
    let read = closedRead;
    let written = closedWritten;
    for (const s of sockets) {
      read += s.bytesRead;
      written += s.bytesWritten;
    }
    const cpu = process.cpuUsage();
    console.log(JSON.stringify({ read, written, cpuUs: cpu.user + cpu.system }));
  });
  process.stdin.on("end", () => process.exit(0));
}

function text(size: number, i: number): string {
  return (`chunk ${i} `.padEnd(size, "x")).slice(0, size);
}

async function asp(): Promise<void> {
  const server = await serve({
    tools: [
      { name: "echo", handler: (args) => args },
      {
        name: "stream",
        handler: async (args: { n: number; size: number }, ctx) => {
          for (let i = 0; i < args.n; i++) await ctx.stream(text(args.size, i));
          return args.n;
        },
      },
    ],
    heartbeatMs: 0,
  });
  // The server's http listener is private; count via the process-wide connection hook.
  (server as unknown as { http: { on: (e: string, f: (s: Socket) => void) => void } }).http.on("connection", track);
  report(server.url);
}

async function rawWs(): Promise<void> {
  const http = createServer();
  http.on("connection", track);
  const wss = new WebSocketServer({ server: http, perMessageDeflate: false });
  wss.on("connection", (ws) => {
    ws.on("message", (data: Buffer, isBinary) => {
      // A message starting with 's' asks for a stream: "s<n>,<size>"; anything else is echoed.
      if (!isBinary && data[0] === 0x73) {
        const [n, size] = data.subarray(1).toString().split(",").map(Number) as [number, number];
        for (let i = 0; i < n; i++) ws.send(text(size, i));
        ws.send(Buffer.from([0]), { binary: true });
        return;
      }
      ws.send(data, { binary: isBinary });
    });
  });
  await new Promise<void>((r) => http.listen(0, "127.0.0.1", () => r()));
  report(`ws://127.0.0.1:${(http.address() as AddressInfo).port}/`);
}

function mcpServer(): McpServer {
  const server = new McpServer({ name: "bench", version: "1.0.0" });
  server.registerTool("echo", { description: "returns its argument", inputSchema: { text: z.string() } }, async ({ text }) => ({
    content: [{ type: "text", text }],
  }));
  server.registerTool(
    "stream",
    { description: "n progress notifications of size bytes", inputSchema: { n: z.number(), size: z.number() } },
    async ({ n, size }, extra) => {
      const token = extra._meta?.progressToken;
      for (let i = 0; i < n; i++) {
        if (token !== undefined) {
          await extra.sendNotification({ method: "notifications/progress", params: { progressToken: token, progress: i + 1, total: n, message: text(size, i) } });
        }
      }
      return { content: [{ type: "text", text: String(n) }] };
    },
  );
  return server;
}

/** The SDK's documented stateful Streamable HTTP server (one transport per session). */
async function mcp(): Promise<void> {
  const transports = new Map<string, StreamableHTTPServerTransport>();
  const http = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = chunks.length > 0 ? JSON.parse(Buffer.concat(chunks).toString()) : undefined;
    const sid = req.headers["mcp-session-id"] as string | undefined;
    let transport = sid !== undefined ? transports.get(sid) : undefined;
    if (transport === undefined) {
      if (req.method !== "POST" || !isInitializeRequest(body)) {
        res.writeHead(400).end();
        return;
      }
      const t = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => void transports.set(id, t),
      });
      t.onclose = () => {
        if (t.sessionId !== undefined) transports.delete(t.sessionId);
      };
      await mcpServer().connect(t);
      transport = t;
    }
    await transport.handleRequest(req, res, body);
  });
  http.on("connection", track);
  await new Promise<void>((r) => http.listen(0, "127.0.0.1", () => r()));
  report(`http://127.0.0.1:${(http.address() as AddressInfo).port}/mcp`);
}

const mode = process.argv[2];
if (mode === "asp") await asp();
else if (mode === "ws") await rawWs();
else if (mode === "mcp") await mcp();
else throw new Error("usage: servers.js asp|ws|mcp");
