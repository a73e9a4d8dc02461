/** Test helpers: the Rust `asp` binary and its demo server. */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
/** typescript/ (tests run from dist-test/test). */
export const pkgRoot = resolve(here, "..", "..");
export const repoRoot = resolve(pkgRoot, "..");

/** The `asp` CLI: $ASP_BIN (set by .ci/run), else a build under target/. */
export function aspBin(): string {
  const env = process.env["ASP_BIN"];
  if (env) return env;
  for (const p of ["target/release/asp", "target/debug/asp"]) {
    const full = resolve(repoRoot, p);
    if (existsSync(full)) return full;
  }
  throw new Error("no asp binary: set ASP_BIN or build it (cargo build -p asp-cli)");
}

/** A running `asp serve` on 127.0.0.1, port 0. */
export interface AspServe {
  url: string;
  proc: ChildProcess;
  stop(): Promise<void>;
}

export async function startAspServe(args: string[] = []): Promise<AspServe> {
  const proc = spawn(aspBin(), ["serve", "--addr", "127.0.0.1:0", "--json", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  proc.stderr!.on("data", (d) => (stderr += d));
  const lines = createInterface({ input: proc.stdout! });
  const url = await new Promise<string>((res, rej) => {
    const t = setTimeout(() => rej(new Error(`asp serve did not start: ${stderr}`)), 20000);
    lines.on("line", (l) => {
      const m = JSON.parse(l) as { type: string; url?: string };
      if (m.type === "listening" && m.url) {
        clearTimeout(t);
        res(m.url);
      }
    });
    proc.once("exit", (c) => rej(new Error(`asp serve exited ${c}: ${stderr}`)));
  });
  return {
    url,
    proc,
    stop: () =>
      new Promise<void>((res) => {
        if (proc.exitCode !== null) return res();
        proc.once("exit", () => res());
        proc.kill("SIGKILL");
      }),
  };
}

/** Runs `asp ARGS`, returning its exit code and output. */
export function runAsp(args: string[], timeoutMs = 20000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const proc = spawn(aspBin(), args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    proc.stdout.on("data", (d) => (stdout += d));
    proc.stderr.on("data", (d) => (stderr += d));
    const t = setTimeout(() => {
      proc.kill("SIGKILL");
      rej(new Error(`asp ${args.join(" ")} timed out: ${stderr}`));
    }, timeoutMs);
    proc.on("exit", (code) => {
      clearTimeout(t);
      res({ code, stdout, stderr });
    });
  });
}

/** JSON lines of an `asp --json` output. */
export function jsonLines(s: string): Record<string, unknown>[] {
  return s
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}
