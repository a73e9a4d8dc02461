/**
 * A real browser: headless Chromium (Debian's `chromium`, driven by playwright-core) loads
 * browser/index.html, which connects to the Rust server (`asp serve`), lists its tools,
 * streams the agent's tokens into the page and is interrupted with its button. The
 * screenshot is kept in typescript/artifacts/.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { extname, join, normalize } from "node:path";
import { after, before, describe, it } from "node:test";
import { type BrowserContext, chromium } from "playwright-core";
import { type AspServe, pkgRoot, startAspServe } from "./helpers.js";

const CHROMIUM = process.env["CHROMIUM"] ?? "/usr/bin/chromium";
const TYPES: Record<string, string> = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".map": "application/json" };

/** Serves the page, the built package (dist/) and the MessagePack codec from typescript/. */
function staticServer(): Promise<Server> {
  const allowed = ["/browser/", "/dist/", "/node_modules/@msgpack/msgpack/"];
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname));
    if (!allowed.some((p) => path.startsWith(p))) {
      res.writeHead(404).end();
      return;
    }
    try {
      const file = join(pkgRoot, path);
      if (!statSync(file).isFile()) throw new Error("not a file");
      res.writeHead(200, { "Content-Type": TYPES[extname(file)] ?? "application/octet-stream" }).end(readFileSync(file));
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((r) => server.listen(0, "127.0.0.1", () => r(server)));
}

describe("browser page ↔ Rust server, in headless Chromium", () => {
  let asp: AspServe;
  let http: Server;
  let browser: BrowserContext;
  let profile: string;
  before(async () => {
    asp = await startAspServe();
    http = await staticServer();
    profile = mkdtempSync(join(tmpdir(), "asp-chromium-"));
    // A fresh profile (--user-data-dir) for every run.
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      viewport: { width: 900, height: 640 },
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
  });
  after(async () => {
    await browser?.close();
    await new Promise((r) => http?.close(r));
    await asp?.stop();
    rmSync(profile, { recursive: true, force: true });
  });

  it("lists tools, streams tokens into the page, and interrupts", async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    const port = (http.address() as AddressInfo).port;
    await page.goto(`http://127.0.0.1:${port}/browser/index.html?server=${encodeURIComponent(asp.url)}&delay_ms=40`);

    // Connected, with the server's tools listed.
    await page.waitForSelector("#status.open", { timeout: 15000 });
    const tools = await page.locator("#tools li code").allTextContents();
    assert.deepEqual(tools, ["agent", "blob", "clarify", "echo", "fail"]);
    assert.match(await page.locator("#tools").innerText(), /agent — mock LLM: streams a canned answer/);

    // Tokens stream in one by one while the invocation runs.
    await page.click("#run");
    await page.waitForFunction(() => (document.getElementById("out")!.textContent ?? "").length > 40, null, { timeout: 15000 });
    const partial = await page.locator("#out").innerText();
    assert.ok(partial.startsWith('You asked: "hello from the browser".'), partial);
    assert.equal(await page.locator("#result").innerText(), "streaming…");

    // Interrupt: the agent stops, the call ends cancelled.
    await page.click("#stop");
    await page.waitForFunction(() => document.getElementById("result")!.textContent !== "streaming…", null, { timeout: 15000 });
    assert.equal(await page.locator("#result").innerText(), "status: cancelled");
    const final = await page.locator("#out").innerText();
    assert.ok(final.length >= partial.length);
    // Three repetitions of the canned answer were asked for; the interrupt cut it short.
    assert.ok((final.match(/You asked/g) ?? []).length < 3, final);

    mkdirSync(join(pkgRoot, "artifacts"), { recursive: true });
    await page.screenshot({ path: join(pkgRoot, "artifacts", "browser.png"), fullPage: true });

    // A run to the end streams everything and shows the result.
    await page.evaluate(() => ((document.getElementById("prompt") as HTMLInputElement).value = "again"));
    await page.click("#run");
    await page.waitForFunction(() => (document.getElementById("result")!.textContent ?? "").startsWith("status:"), null, { timeout: 30000 });
    assert.match(await page.locator("#result").innerText(), /^status: ok — \{"tokens":\d+\}$/);
    assert.equal(((await page.locator("#out").innerText()).match(/You asked: "again"/g) ?? []).length, 3);
    assert.deepEqual(errors, []);
  });
});
