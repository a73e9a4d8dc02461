/**
 * Live mode of the conformance runner (conformance/README.md "Live mode"): plays the vectors
 * marked `live` over a real WebSocket against any ASP server offering the live profile, as
 * its client; and `--serve`, this package's Node server offering that profile, so that any
 * runner (ours, or the Rust one: `cargo run -p conformance -- --against URL`) can check it.
 *
 *     node dist-test/conformance/run.js --against ws://HOST:PORT/PATH [--timeout-ms N] [files…]
 *     node dist-test/conformance/run.js --serve 127.0.0.1:0
 * @module
 */
import { readFileSync } from "node:fs";
import WebSocket from "ws";
import { ErrorCode, isRetryable } from "../src/codes.js";
import { AspError } from "../src/errors.js";
import { FRAME_TYPE_NAMES, type Frame, FrameType, Raw, type Role } from "../src/frame.js";
import { RequestDeclined, type ToolSpec, serve } from "../src/node.js";

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

/** What live mode borrows from run.ts (passed in: an import cycle through a top-level await deadlocks). */
export interface RunnerParts {
  files: (args: string[]) => string[];
  Session: new () => {
    transmitMatches(expected: Json[], got: Frame[]): string | undefined;
    resolveId(v: Json): number;
  };
  fromHex: (h: string) => Uint8Array;
  recvHex: (s: never, h: string) => string;
  splitFrames: (bytes: Uint8Array, sender: Role) => Frame[];
}

const PING = Uint8Array.of(0x18, 0, 0, 0, 0, 0, 0, 0);
const PONG = Uint8Array.of(0x19, 0, 0, 0, 0, 0, 0, 0);

/**
 * The live profile's tools (README "Live profile"), on this package's server API. No
 * descriptions: a vector announces `max_frame_payload` 64, and every tool must still fit it.
 */
export function liveProfileTools(): ToolSpec[] {
  return [
    {
      name: "echo",
      handler: (_args, ctx) => (ctx.rawArgs === undefined ? undefined : new Raw(ctx.rawArgs)),
    },
    {
      name: "chunks",
      handler: async (args: unknown, ctx) => {
        for (const s of Array.isArray(args) ? args : []) await ctx.stream(String(s));
        return undefined;
      },
    },
    {
      name: "wait",
      handler: (_args, ctx) =>
        new Promise((_resolve, reject) => {
          const signal = ctx.signal;
          if (signal.aborted) reject(signal.reason);
          else signal.addEventListener("abort", () => reject(signal.reason), { once: true });
        }),
    },
    {
      name: "fail",
      handler: (args: unknown) => {
        const code = Number(args);
        throw new AspError(code, `failing with code ${code}`, isRetryable(code));
      },
    },
    {
      name: "ask",
      handler: async (_args, ctx) => {
        if (!ctx.canAsk) throw new AspError(ErrorCode.TOOL_FAILED, "the client does not answer requests", false);
        // An interrupt ends the invocation (COMPLETE(cancelled)), and with it the request (§8).
        const interrupted = new Promise<never>((_resolve, reject) => {
          const signal = ctx.signal;
          if (signal.aborted) reject(signal.reason);
          else signal.addEventListener("abort", () => reject(signal.reason), { once: true });
        });
        try {
          return await Promise.race([ctx.ask("confirm", ctx.rawArgs === undefined ? undefined : new Raw(ctx.rawArgs)), interrupted]);
        } catch (e) {
          if (ctx.signal.aborted) throw e;
          if (e instanceof RequestDeclined) return e.body;
          throw new AspError(ErrorCode.TOOL_FAILED, `the request ended with an error: ${(e as Error).message}`, false);
        }
      },
    },
  ];
}

/** One live vector against `url`; undefined when it passes. */
async function liveVector(url: string, t: Json, parts: RunnerParts, timeoutMs: number): Promise<string | undefined> {
  const ws = new WebSocket(url, "asp-v1", { perMessageDeflate: false, handshakeTimeout: timeoutMs });
  const queue: Frame[] = [];
  let closed: number | undefined;
  let failure: string | undefined;
  let wake: (() => void) | undefined;
  const signal = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  ws.on("message", (data: Buffer, isBinary: boolean) => {
    if (!isBinary) failure ??= "the server sent a text message";
    else {
      try {
        queue.push(...parts.splitFrames(new Uint8Array(data.buffer, data.byteOffset, data.length), "server"));
      } catch (e) {
        failure ??= (e as Error).message;
      }
    }
    signal();
  });
  ws.on("close", (code: number) => {
    closed = code;
    signal();
  });
  ws.on("error", (e: Error) => {
    failure ??= `WebSocket: ${e.message}`;
    signal();
  });
  const opened = await new Promise<boolean>((resolve) => {
    ws.once("open", () => resolve(true));
    ws.once("close", () => resolve(false));
  });
  if (!opened) return failure ?? "the WebSocket did not open";
  // §2.1: the server must select asp-v1.
  if (ws.protocol !== "asp-v1") {
    ws.terminate();
    return `the server selected subprotocol "${ws.protocol}"`;
  }
  const t0 = performance.now();
  const waitFor = (deadline: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        wake = undefined;
        resolve();
      }, Math.max(0, deadline - performance.now()));
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  const s = new parts.Session();
  try {
    for (const [i, step] of (t.steps as Json[]).entries()) {
      const where = `step ${i} (at ${step.at_ms} ms)`;
      const due = t0 + step.at_ms - performance.now();
      if (due > 0) await new Promise((r) => setTimeout(r, due));
      if (step.recv !== undefined) ws.send(parts.fromHex(parts.recvHex(s as never, step.recv)), { binary: true });
      else if (step.recv_text !== undefined) ws.send(step.recv_text, { binary: false });
      // start, timeout: only time passes; command: the server application's own action (the profile's tools).
      const expected: Json[] = step.transmit ?? [];
      const expectsPing = JSON.stringify(expected).includes('"type":"PING"');
      const need = expected.reduce((n: number, w: Json) => n + (w.unordered ? w.unordered.length : w.optional ? 0 : 1), 0);
      const hasOptional = expected.some((w: Json) => w.optional);
      const got: Frame[] = [];
      const take = (): boolean => {
        const f = queue.shift();
        if (f === undefined) return false;
        // Heartbeats are answered and not compared, unless the step expects a PING.
        if (f.type === FrameType.PING && !expectsPing) ws.send(PONG, { binary: true });
        else got.push(f);
        return true;
      };
      const deadline = performance.now() + timeoutMs;
      while (got.length < need && failure === undefined) {
        if (take()) continue;
        if (closed !== undefined || performance.now() >= deadline) break;
        await waitFor(deadline);
      }
      if (failure !== undefined) return `${where}: ${failure}`;
      // Optional frames count only if they already arrived with the required ones.
      const base = got.length;
      if (hasOptional) while (take());
      let te = s.transmitMatches(expected, got);
      if (te !== undefined && got.length > base) {
        const extra = got.splice(base);
        te = s.transmitMatches(expected, got);
        queue.unshift(...extra);
      }
      if (te !== undefined) return `${where}: transmit: ${te}`;
      if (step.closed) {
        while (closed === undefined && performance.now() < deadline) await waitFor(deadline);
        if (closed === undefined) return `${where}: the server did not close`;
        if (step.close_code !== undefined && closed !== step.close_code) return `${where}: close code ${closed}, expected ${step.close_code}`;
        return undefined;
      }
      if (closed !== undefined) return `${where}: the server closed (code ${closed})`;
    }
    // Every frame the server sent must have been expected: PING, and read until its PONG.
    ws.send(PING, { binary: true });
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const f = queue.shift();
      if (f === undefined) {
        if (failure !== undefined) return failure;
        if (closed !== undefined) return `the server closed (code ${closed}) instead of answering the final PING`;
        if (performance.now() >= deadline) return "no PONG to the final PING";
        await waitFor(deadline);
        continue;
      }
      if (f.type === FrameType.PONG) return undefined;
      if (f.type === FrameType.PING) {
        ws.send(PONG, { binary: true });
        continue;
      }
      return `unexpected ${FRAME_TYPE_NAMES[f.type]} #${f.id} after the last step`;
    }
  } finally {
    if (closed === undefined) ws.close(1000);
  }
}

function option(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  if (i < 0) return undefined;
  const v = argv[i + 1];
  if (v === undefined) throw new Error(`${name} needs a value`);
  return v;
}

export async function liveMain(argv: string[], parts: RunnerParts): Promise<void> {
  const serveAt = option(argv, "--serve");
  if (serveAt !== undefined) {
    const cut = serveAt.lastIndexOf(":");
    const server = await serve({
      host: serveAt.slice(0, cut),
      port: Number(serveAt.slice(cut + 1)),
      tools: liveProfileTools(),
      // The live profile: SPEC §13 defaults, without resume.
      resume: false,
    });
    console.log(`serving the live profile at ${server.url}`);
    const stop = () => void server.close(100).then(() => process.exit(0));
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
    return;
  }
  const url = option(argv, "--against")!;
  const timeoutMs = Number(option(argv, "--timeout-ms") ?? 5000);
  const verbose = argv.includes("-v");
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--against" || argv[i] === "--timeout-ms") i++;
    else if (argv[i] !== "-v") rest.push(argv[i]!);
  }
  let passed = 0;
  let failed = 0;
  for (const file of parts.files(rest)) {
    const doc = JSON.parse(readFileSync(file, "utf8"));
    if (doc.suite !== "asp-conformance" || doc.kind !== "sessions") continue;
    for (const t of doc.tests) {
      if (!t.live) continue;
      let err: string | undefined;
      try {
        err = await liveVector(url, t, parts, timeoutMs);
      } catch (e) {
        err = `threw ${(e as Error).stack}`;
      }
      if (err === undefined) {
        passed++;
        if (verbose) console.log(`ok live:${t.id}`);
      } else {
        failed++;
        console.log(`FAIL live:${t.id}: ${err}`);
      }
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed > 0 || passed === 0 ? 1 : 0;
}
