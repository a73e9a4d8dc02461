/**
 * ASP (this package, Node client ↔ Node server) against its floor (a raw `ws` echo loop) and
 * against the official MCP TypeScript SDK (Streamable HTTP client and server), same machine,
 * same run: round trip of a small `echo`, bytes per call on the wire, and a 1,000-chunk
 * stream. Each server runs in its own process (bench/servers.ts); the clients run here.
 *
 *     node dist-test/bench/run.js [--runs 5] [--quick]
 *
 * Prints a Markdown table: medians over the runs with [min–max], and same-run ratios.
 */
import { spawn } from "node:child_process";
import { loadavg } from "node:os";
import { dirname, join } from "node:path";
import { createInterface, type Interface } from "node:readline";
import { fileURLToPath } from "node:url";
import { Client as McpClient } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import WebSocket from "ws";
import { connect } from "../src/node.js";
import { encode } from "../src/codec.js";
import { Raw } from "../src/frame.js";
import { encode as mpEncode } from "@msgpack/msgpack";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const quick = args.includes("--quick");
const runs = Number(args[args.indexOf("--runs") + 1] ?? 0) || (quick ? 1 : 5);
const N = quick ? 300 : 3000;
const N_MCP = quick ? 50 : 300;
const STREAMS = quick ? 3 : 20;
const STREAMS_MCP = quick ? 1 : 5;
const CHUNKS = 1000;
const CHUNK = 32;

interface Child {
  url: string;
  /** TCP bytes both ways on the server's sockets so far, and the server process's CPU time (µs). */
  stats(): Promise<{ bytes: number; cpuUs: number }>;
  stop(): void;
}

async function start(mode: string): Promise<Child> {
  const proc = spawn(process.execPath, [join(here, "servers.js"), mode], { stdio: ["pipe", "pipe", "inherit"] });
  const lines: Interface = createInterface({ input: proc.stdout });
  const next = () => new Promise<string>((r) => lines.once("line", r));
  const { url } = JSON.parse(await next()) as { url: string };
  return {
    url,
    async stats() {
      proc.stdin.write("bytes\n");
      const { read, written, cpuUs } = JSON.parse(await next()) as { read: number; written: number; cpuUs: number };
      return { bytes: read + written, cpuUs };
    },
    stop() {
      proc.stdin.end();
      proc.kill();
    },
  };
}

const ms = () => performance.now();

interface Sample {
  usPerCall: number;
  /** CPU time of both processes (client + server), µs per call: what a loaded machine distorts least. */
  cpuPerCall: number;
  bytesPerCall: number;
  msPerStream: number;
}

async function benchWs(server: Child, payload: Uint8Array): Promise<Sample> {
  const ws = new WebSocket(server.url, { perMessageDeflate: false });
  await new Promise((r) => ws.once("open", r));
  let wake: (d: Buffer) => void = () => undefined;
  ws.on("message", (d: Buffer) => wake(d));
  const roundTrip = () => new Promise<Buffer>((r) => ((wake = r), ws.send(payload)));
  for (let i = 0; i < 5000; i++) await roundTrip();
  const s0 = await server.stats();
  const c0 = process.cpuUsage();
  const t0 = ms();
  for (let i = 0; i < N; i++) await roundTrip();
  const t1 = ms();
  const c1 = process.cpuUsage(c0);
  const s1 = await server.stats();
  const bytesPerCall = (s1.bytes - s0.bytes) / N;
  const cpuPerCall = (c1.user + c1.system + s1.cpuUs - s0.cpuUs) / N;
  const stream = () =>
    new Promise<void>((r) => {
      let n = 0;
      wake = (d) => {
        if (d.length === 1 && d[0] === 0) {
          if (n !== CHUNKS) throw new Error(`got ${n} chunks`);
          r();
        } else n++;
      };
      ws.send(`s${CHUNKS},${CHUNK}`);
    });
  await stream();
  const t2 = ms();
  for (let i = 0; i < STREAMS; i++) await stream();
  const t3 = ms();
  ws.close();
  return { usPerCall: ((t1 - t0) * 1000) / N, cpuPerCall, bytesPerCall, msPerStream: (t3 - t2) / STREAMS };
}

async function benchAsp(server: Child): Promise<Sample> {
  const client = await connect(server.url, { heartbeatMs: 0, reconnect: false });
  const arg = { text: "hello" };
  for (let i = 0; i < 5000; i++) await client.call("echo", arg);
  const s0 = await server.stats();
  const c0 = process.cpuUsage();
  const t0 = ms();
  for (let i = 0; i < N; i++) await client.call("echo", arg);
  const t1 = ms();
  const c1 = process.cpuUsage(c0);
  const s1 = await server.stats();
  const bytesPerCall = (s1.bytes - s0.bytes) / N;
  const cpuPerCall = (c1.user + c1.system + s1.cpuUs - s0.cpuUs) / N;
  const stream = async () => {
    let n = 0;
    const call = client.invoke("stream", { n: CHUNKS, size: CHUNK });
    for await (const _ of call) n++;
    await call.result;
    if (n !== CHUNKS) throw new Error(`got ${n} chunks`);
  };
  await stream();
  const t2 = ms();
  for (let i = 0; i < STREAMS; i++) await stream();
  const t3 = ms();
  client.close();
  return { usPerCall: ((t1 - t0) * 1000) / N, cpuPerCall, bytesPerCall, msPerStream: (t3 - t2) / STREAMS };
}

async function benchMcp(server: Child): Promise<Sample> {
  const client = new McpClient({ name: "bench", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(server.url));
  await client.connect(transport);
  const arg = { name: "echo", arguments: { text: "hello" } };
  for (let i = 0; i < 50; i++) await client.callTool(arg);
  const s0 = await server.stats();
  const c0 = process.cpuUsage();
  const t0 = ms();
  for (let i = 0; i < N_MCP; i++) await client.callTool(arg);
  const t1 = ms();
  const c1 = process.cpuUsage(c0);
  const s1 = await server.stats();
  const bytesPerCall = (s1.bytes - s0.bytes) / N_MCP;
  const cpuPerCall = (c1.user + c1.system + s1.cpuUs - s0.cpuUs) / N_MCP;
  const stream = async () => {
    let n = 0;
    await client.callTool({ name: "stream", arguments: { n: CHUNKS, size: CHUNK } }, undefined, {
      onprogress: () => void n++,
      timeout: 120000,
    });
    if (n !== CHUNKS) throw new Error(`got ${n} progress notifications`);
  };
  await stream();
  const t2 = ms();
  for (let i = 0; i < STREAMS_MCP; i++) await stream();
  const t3 = ms();
  await transport.terminateSession().catch(() => undefined);
  await client.close();
  return { usPerCall: ((t1 - t0) * 1000) / N_MCP, cpuPerCall, bytesPerCall, msPerStream: (t3 - t2) / STREAMS_MCP };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function fmt(xs: number[], digits = 1): string {
  const f = (x: number) => x.toFixed(digits);
  return xs.length === 1 ? f(xs[0]!) : `${f(median(xs))} [${f(Math.min(...xs))}–${f(Math.max(...xs))}]`;
}

/**
 * Round trips, ws and ASP interleaved: `rounds` pairs of `batch` calls each, alternating, so
 * both see the same moment of a loaded machine; the ratio is taken per pair.
 */
async function interleaved(wsServer: Child, aspServer: Child, payload: Uint8Array, rounds: number, batch: number) {
  const ws = new WebSocket(wsServer.url, { perMessageDeflate: false });
  await new Promise((r) => ws.once("open", r));
  let wake: (d: Buffer) => void = () => undefined;
  ws.on("message", (d: Buffer) => wake(d));
  const wsTrip = () => new Promise<Buffer>((r) => ((wake = r), ws.send(payload)));
  const client = await connect(aspServer.url, { heartbeatMs: 0, reconnect: false });
  const arg = { text: "hello" };
  // A long warm-up: the JIT needs thousands of calls before the ASP path is steady.
  for (let i = 0; i < (quick ? 1000 : 10000); i++) {
    await wsTrip();
    await client.call("echo", arg);
  }
  const wsUs: number[] = [];
  const aspUs: number[] = [];
  for (let r = 0; r < rounds; r++) {
    let t0 = ms();
    for (let i = 0; i < batch; i++) await wsTrip();
    wsUs.push(((ms() - t0) * 1000) / batch);
    t0 = ms();
    for (let i = 0; i < batch; i++) await client.call("echo", arg);
    aspUs.push(((ms() - t0) * 1000) / batch);
  }
  ws.close();
  client.close();
  return { wsUs, aspUs, ratio: aspUs.map((a, i) => a / wsUs[i]!) };
}

async function main(): Promise<void> {
  const load0 = loadavg()[0]!;
  const [wsServer, aspServer, mcpServer] = await Promise.all([start("ws"), start("asp"), start("mcp")]);
  // The raw floor sends what an ASP client sends for the same call: the INVOKE frame.
  const payload = encode({ type: 2, id: 1, fields: { tool: "echo", args: new Raw(mpEncode({ text: "hello" })) } });
  const ws: Sample[] = [];
  const asp: Sample[] = [];
  const mcp: Sample[] = [];
  for (let r = 0; r < runs; r++) {
    ws.push(await benchWs(wsServer, payload));
    asp.push(await benchAsp(aspServer));
    mcp.push(await benchMcp(mcpServer));
    process.stderr.write(`run ${r + 1}/${runs}: ws ${ws[r]!.usPerCall.toFixed(1)} µs, asp ${asp[r]!.usPerCall.toFixed(1)} µs, mcp ${mcp[r]!.usPerCall.toFixed(1)} µs\n`);
  }
  const rounds = quick ? 5 : 40;
  const inter = await interleaved(wsServer, aspServer, payload, rounds, 250);
  for (const s of [wsServer, aspServer, mcpServer]) s.stop();
  const col = (xs: Sample[], k: keyof Sample, d = 1) => fmt(xs.map((x) => x[k]), d);
  const ratio = (a: Sample[], b: Sample[], k: keyof Sample) => fmt(a.map((x, i) => x[k] / b[i]![k]), 2);
  const load = `load average ${load0.toFixed(1)} at the start, ${loadavg()[0]!.toFixed(1)} at the end`;
  console.log(`${new Date().toISOString().slice(0, 16)} UTC, Node ${process.version}, ${load}; ${runs} runs (median [min–max]); N=${N} round trips (MCP ${N_MCP}), ${STREAMS} streams of ${CHUNKS}×${CHUNK} B (MCP ${STREAMS_MCP})\n`);
  console.log("| measure | raw `ws` echo (floor) | ASP (this package) | MCP TS SDK, Streamable HTTP | ASP ÷ floor | MCP ÷ ASP |");
  console.log("|---|---|---|---|---|---|");
  console.log(`| round trip, µs/call | ${col(ws, "usPerCall")} | ${col(asp, "usPerCall")} | ${col(mcp, "usPerCall")} | ${ratio(asp, ws, "usPerCall")}× | ${ratio(mcp, asp, "usPerCall")}× |`);
  console.log(`| round trip, CPU µs/call (client + server processes) | ${col(ws, "cpuPerCall")} | ${col(asp, "cpuPerCall")} | ${col(mcp, "cpuPerCall")} | ${ratio(asp, ws, "cpuPerCall")}× | ${ratio(mcp, asp, "cpuPerCall")}× |`);
  console.log(`| round trip, interleaved: ${rounds} pairs of ${250}-call batches, µs/call | ${fmt(inter.wsUs)} | ${fmt(inter.aspUs)} | — | ${fmt(inter.ratio, 2)}× | — |`);
  console.log(`| bytes per call (TCP, both ways) | ${col(ws, "bytesPerCall", 0)} | ${col(asp, "bytesPerCall", 0)} | ${col(mcp, "bytesPerCall", 0)} | ${ratio(asp, ws, "bytesPerCall")}× | ${ratio(mcp, asp, "bytesPerCall")}× |`);
  console.log(`| 1,000-chunk stream, ms | ${col(ws, "msPerStream", 2)} | ${col(asp, "msPerStream", 2)} | ${col(mcp, "msPerStream", 2)} | ${ratio(asp, ws, "msPerStream")}× | ${ratio(mcp, asp, "msPerStream")}× |`);
}

await main();
