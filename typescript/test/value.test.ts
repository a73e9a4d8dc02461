/**
 * Application values: the direct path of `value.ts` gives exactly what `@msgpack/msgpack`
 * gives — the same bytes for a value, the same value (or the same error) for bytes —
 * over hand-picked edges and seeded random values and byte strings.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decode, encode } from "@msgpack/msgpack";
import { decodeValue, encodeValue } from "../src/value.js";

/** A small deterministic generator (mulberry32), so a failure replays. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NUMBERS = [
  0, -0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, 2 ** 53, -1, -32, -33, -128, -129,
  -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, -(2 ** 53) + 1, 0.5, -1.25, 1e300, NaN, Infinity, -Infinity,
];
const STRINGS = ["", "a", "x".repeat(31), "x".repeat(32), "x".repeat(255), "x".repeat(256), "héllo", "日本語", "😀", "a\ud800b", "\udc00", "x".repeat(40) + "é"];

function randomValue(r: () => number, depth: number): unknown {
  const k = Math.floor(r() * (depth > 3 ? 6 : 9));
  switch (k) {
    case 0:
      return null;
    case 1:
      return r() < 0.5;
    case 2:
      return NUMBERS[Math.floor(r() * NUMBERS.length)];
    case 3:
      return Math.floor((r() - 0.5) * 2 ** (r() * 60));
    case 4:
      return STRINGS[Math.floor(r() * STRINGS.length)];
    case 5:
      return Uint8Array.from({ length: Math.floor(r() * 300) }, () => Math.floor(r() * 256));
    case 6:
      return Array.from({ length: Math.floor(r() * 20) }, () => randomValue(r, depth + 1));
    case 7: {
      const o: Record<string, unknown> = {};
      for (let i = Math.floor(r() * 20); i > 0; i--) o[STRINGS[Math.floor(r() * 6)]! + i] = randomValue(r, depth + 1);
      return o;
    }
    default:
      return r() < 0.5 ? new Date(Math.floor(r() * 1e12)) : undefined;
  }
}

function outcome<T>(f: () => T): { ok: T } | { error: string } {
  try {
    return { ok: f() };
  } catch (e) {
    return { error: String(e) };
  }
}

describe("application values (value.ts) match @msgpack/msgpack", () => {
  it("encodes edge values to the library's bytes", () => {
    const values: unknown[] = [null, undefined, true, false, ...NUMBERS, ...STRINGS, new Uint8Array(0), new Uint8Array(300), "x".repeat(70000), "é".repeat(40000)];
    values.push([], {}, [1, [2, [3]]], { a: 1, b: { c: [null, "x"] } }, { u: undefined }, Object.create(null));
    values.push(new Date(0), 5n, new Map([["a", 1]]), new (class K { x = 1 })(), new Uint16Array([1, 2]));
    let deep: unknown = 1;
    for (let i = 0; i < 150; i++) deep = [deep];
    values.push(deep);
    for (const [i, v] of values.entries()) assert.deepEqual(outcome(() => encodeValue(v)), outcome(() => encode(v)), `value ${i}`);
  });

  it("encodes random values to the library's bytes, and decodes them to the library's values", () => {
    const r = rng(23);
    for (let i = 0; i < 1000; i++) {
      const v = randomValue(r, 0);
      const bytes = encode(v);
      assert.deepEqual(encodeValue(v), bytes);
      assert.deepEqual(decodeValue(bytes), decode(bytes));
    }
  });

  it("decodes random and mutated bytes as the library does (value or error)", () => {
    const r = rng(7);
    for (let i = 0; i < 2000; i++) {
      let bytes: Uint8Array;
      if (i % 2 === 0) {
        bytes = Uint8Array.from({ length: Math.floor(r() * 40) }, () => Math.floor(r() * 256));
      } else {
        bytes = encode(randomValue(r, 0)).slice();
        for (let n = Math.floor(r() * 3); n >= 0 && bytes.length > 0; n--) bytes[Math.floor(r() * bytes.length)] = Math.floor(r() * 256);
        if (r() < 0.3) bytes = bytes.subarray(0, Math.floor(r() * bytes.length));
      }
      const mine = outcome(() => decodeValue(bytes));
      const lib = outcome(() => decode(bytes));
      assert.deepEqual(mine, lib, Buffer.from(bytes).toString("hex"));
    }
  });

  it("decodes 64-bit integers, float 32, extension types and hostile nesting as the library does", () => {
    const cases = ["cf0000000100000000", "d3ffffffff00000000", "ca3fc00000", "d6ff00000001", "c1", "dd7fffffff", "df7fffffff", "81c0c0", "81a95f5f70726f746f5f5f01", "92" + "01"];
    for (const hex of cases) {
      const bytes = Buffer.from(hex, "hex");
      assert.deepEqual(outcome(() => decodeValue(bytes)), outcome(() => decode(bytes)), hex);
    }
    // Deeper than the direct path goes (it hands over to the library, which has no recursion).
    const deep = Buffer.from("91".repeat(1000) + "c0", "hex");
    assert.deepEqual(encode(decodeValue(deep), { maxDepth: 2000 }), encode(decode(deep), { maxDepth: 2000 }));
  });

  it("decodes map keys through the key cache: same-slot keys, a source changed after decoding", () => {
    // "abc"/"axc"/"abbc"…: same length, first and last byte share a cache slot.
    const keys = ["abc", "axc", "abc", "aéc", "a", "b", "x".repeat(16), "x".repeat(15) + "y", "x".repeat(17), "é", "abc"];
    for (let round = 0; round < 3; round++) {
      for (const k of keys) {
        const v = { [k]: 1, other: k };
        assert.deepEqual(decodeValue(encode(v)), v);
      }
    }
    const buf = Buffer.from(encode({ key: 1 }));
    assert.deepEqual(decodeValue(buf), { key: 1 });
    buf[2] = 0x61; // "aey": the cached bytes were a copy, not a view into `buf`
    assert.deepEqual(decodeValue(buf), { aey: 1 });
    assert.deepEqual(decodeValue(encode({ key: 2 })), { key: 2 });
  });
});
