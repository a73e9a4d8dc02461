/**
 * Application values (tool `args`, results, request bodies, `meta`) ↔ MessagePack, the
 * `any` fields of SPEC §4.2.
 *
 * `@msgpack/msgpack` is the codec. Plain values — `null`, booleans, numbers, strings,
 * `Uint8Array`s, arrays and plain objects of them, as nearly every call carries — take a
 * direct path that produces and accepts exactly the library's bytes and values, without its
 * per-call setup (a `DataView` per decode was a measurable share of a round trip). Well-formed
 * strings only: a lone surrogate goes to the library, whose bytes for it vary with length. Anything
 * else (dates and other extension types, bigints, class instances, 64-bit integers, invalid
 * or truncated input, nesting deeper than the library allows) goes to the library, which
 * decides — so the two paths cannot disagree.
 * @module
 */
import { Decoder, Encoder } from "@msgpack/msgpack";

const encoder = new Encoder();
const decoder = new Decoder();
/** The library's default nesting limit for encoding (`maxDepth`). */
const MAX_DEPTH = 100;

/** Thrown inside the direct path: the value is left to the library. */
const NOT_PLAIN = Symbol("not plain");

// ---------------------------------------------------------------- encoding

let buf = new Uint8Array(256);
let view = new DataView(buf.buffer);
let len = 0;

function reserve(n: number): void {
  if (len + n <= buf.length) return;
  let cap = buf.length * 2;
  while (cap < len + n) cap *= 2;
  const next = new Uint8Array(cap);
  next.set(buf.subarray(0, len));
  buf = next;
  view = new DataView(next.buffer);
}

function writeNumber(v: number): void {
  reserve(9);
  if (Number.isSafeInteger(v)) {
    if (v >= 0) {
      if (v < 0x80) buf[len++] = v;
      else if (v < 0x100) {
        buf[len++] = 0xcc;
        buf[len++] = v;
      } else if (v < 0x10000) {
        buf[len] = 0xcd;
        view.setUint16(len + 1, v);
        len += 3;
      } else if (v < 0x100000000) {
        buf[len] = 0xce;
        view.setUint32(len + 1, v);
        len += 5;
      } else throw NOT_PLAIN; // uint 64: the library's encoding
      return;
    }
    if (v >= -0x20) buf[len++] = 0xe0 | (v + 0x20);
    else if (v >= -0x80) {
      buf[len] = 0xd0;
      view.setInt8(len + 1, v);
      len += 2;
    } else if (v >= -0x8000) {
      buf[len] = 0xd1;
      view.setInt16(len + 1, v);
      len += 3;
    } else if (v >= -0x80000000) {
      buf[len] = 0xd2;
      view.setInt32(len + 1, v);
      len += 5;
    } else throw NOT_PLAIN; // int 64
    return;
  }
  // Not an integer (or beyond 2^53): float 64, as the library writes by default.
  buf[len] = 0xcb;
  view.setFloat64(len + 1, v);
  len += 9;
}

function writeLength(n: number, fix: number, fixMax: number, c8: number, c16: number, c32: number): void {
  reserve(5);
  if (n <= fixMax) buf[len++] = fix | n;
  else if (c8 !== 0 && n < 0x100) {
    buf[len++] = c8;
    buf[len++] = n;
  } else if (n < 0x10000) {
    buf[len] = c16;
    view.setUint16(len + 1, n);
    len += 3;
  } else {
    buf[len] = c32;
    view.setUint32(len + 1, n);
    len += 5;
  }
}

const utf8 = new TextEncoder();
/** `String#isWellFormed` is newer than Node 18. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function writeString(s: string): void {
  const n = s.length;
  // ASCII, the common case, is written as it is read: one byte per character.
  if (n < 0x10000) {
    reserve(3 + n);
    const at = len;
    let p = at + (n < 32 ? 1 : n < 0x100 ? 2 : 3);
    let i = 0;
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) break;
      buf[p++] = c;
    }
    if (i === n) {
      if (n < 32) buf[at] = 0xa0 | n;
      else if (n < 0x100) {
        buf[at] = 0xd9;
        buf[at + 1] = n;
      } else {
        buf[at] = 0xda;
        view.setUint16(at + 1, n);
      }
      len = p;
      return;
    }
  }
  // A lone surrogate: the library's encoding of it depends on the length; leave it that.
  if (LONE_SURROGATE.test(s)) throw NOT_PLAIN;
  const bytes = utf8.encode(s);
  writeLength(bytes.length, 0xa0, 31, 0xd9, 0xda, 0xdb);
  reserve(bytes.length);
  buf.set(bytes, len);
  len += bytes.length;
}

function writeValue(v: unknown, depth: number): void {
  if (depth > MAX_DEPTH) throw NOT_PLAIN;
  if (v === null || v === undefined) {
    reserve(1);
    buf[len++] = 0xc0;
  } else if (typeof v === "string") writeString(v);
  else if (typeof v === "number") writeNumber(v);
  else if (typeof v === "boolean") {
    reserve(1);
    buf[len++] = v ? 0xc3 : 0xc2;
  } else if (Array.isArray(v)) {
    writeLength(v.length, 0x90, 15, 0, 0xdc, 0xdd);
    for (let i = 0; i < v.length; i++) writeValue(v[i], depth + 1);
  } else if (v instanceof Uint8Array) {
    const n = v.length;
    if (n >= 0x100000000) throw NOT_PLAIN;
    writeLength(n, 0, -1, 0xc4, 0xc5, 0xc6);
    reserve(n);
    buf.set(v, len);
    len += n;
  } else if (typeof v === "object") {
    const proto = Object.getPrototypeOf(v);
    // Class instances, Dates, Maps…: the library (and its extension codec) decides.
    if (proto !== Object.prototype && proto !== null) throw NOT_PLAIN;
    const keys = Object.keys(v);
    writeLength(keys.length, 0x80, 15, 0, 0xde, 0xdf);
    for (const k of keys) {
      writeString(k);
      writeValue((v as Record<string, unknown>)[k], depth + 1);
    }
  } else throw NOT_PLAIN; // bigint, symbol, function
}

/** Set while the direct path writes: a getter that encodes re-enters through the library. */
let encoding = false;

/** Application value → MessagePack bytes (a fresh copy). */
export function encodeValue(v: unknown): Uint8Array {
  if (encoding) return encoder.encode(v);
  encoding = true;
  len = 0;
  try {
    writeValue(v, 1);
    return buf.slice(0, len);
  } catch (e) {
    if (e !== NOT_PLAIN) throw e;
    return encoder.encode(v);
  } finally {
    encoding = false;
  }
}

// ---------------------------------------------------------------- decoding

const EMPTY = new Uint8Array(0);
let src: Uint8Array = EMPTY;
let pos = 0;
let end = 0;
const text = new TextDecoder("utf-8", { fatal: true });

function take(n: number): number {
  const at = pos;
  if (at + n > end) throw NOT_PLAIN; // truncated: the library reports it
  pos = at + n;
  return at;
}

function u16(): number {
  const p = take(2);
  return (src[p]! << 8) | src[p + 1]!;
}

function u32(): number {
  const p = take(4);
  return ((src[p]! << 24) >>> 0) + ((src[p + 1]! << 16) | (src[p + 2]! << 8) | src[p + 3]!);
}

function readString(n: number): string {
  const p = take(n);
  if (n < 64) {
    let s = "";
    let i = p;
    for (; i < p + n; i++) {
      const c = src[i]!;
      if (c >= 0x80) break;
      s += String.fromCharCode(c);
    }
    if (i === p + n) return s;
  }
  try {
    return text.decode(src.subarray(p, p + n));
  } catch {
    throw NOT_PLAIN; // invalid UTF-8: as the library reads it
  }
}

function readArray(n: number, depth: number): unknown[] {
  if (n > end - pos) throw NOT_PLAIN;
  const out = new Array<unknown>(n);
  for (let i = 0; i < n; i++) out[i] = readValue(depth + 1);
  return out;
}

/**
 * Map keys repeat from value to value (`text`, `content`…): short string keys are kept here
 * by their bytes, so the same key is the same string, not rebuilt and looked up in V8's string
 * table on every decode. Direct-mapped on (length, first byte, last byte); a miss replaces.
 */
const KEY_SLOTS = 256;
const keyBytes: Uint8Array[] = Array.from({ length: KEY_SLOTS }, () => EMPTY);
const keyStrings: string[] = new Array<string>(KEY_SLOTS).fill("");

function readKey(depth: number): unknown {
  const n = pos < end ? src[pos]! - 0xa0 : 0;
  // fixstr of 1–16 bytes, wholly present; anything else takes the general path.
  if (n < 1 || n > 16 || pos + 1 + n > end) return readValue(depth);
  const p = pos + 1;
  const slot = (n * 31 + src[p]! * 7 + src[p + n - 1]!) & (KEY_SLOTS - 1);
  const known = keyBytes[slot]!;
  if (known.length === n) {
    let i = 0;
    while (i < n && known[i] === src[p + i]) i++;
    if (i === n) {
      pos = p + n;
      return keyStrings[slot];
    }
  }
  const key = readValue(depth) as string;
  // A copy (`src` may be a Node Buffer, whose slice is a view).
  keyBytes[slot] = new Uint8Array(src.subarray(p, p + n));
  keyStrings[slot] = key;
  return key;
}

function readMap(n: number, depth: number): Record<string, unknown> {
  if (2 * n > end - pos) throw NOT_PLAIN;
  const out: Record<string, unknown> = {};
  for (let i = 0; i < n; i++) {
    const key = readKey(depth + 1);
    // The library accepts string and number keys and refuses "__proto__".
    if ((typeof key !== "string" && typeof key !== "number") || key === "__proto__") throw NOT_PLAIN;
    out[key] = readValue(depth + 1);
  }
  return out;
}

function readValue(depth: number): unknown {
  if (depth > MAX_DEPTH) throw NOT_PLAIN;
  const b = src[take(1)]!;
  if (b <= 0x7f) return b;
  if (b >= 0xe0) return b - 0x100;
  if (b <= 0x8f) return readMap(b & 0x0f, depth);
  if (b <= 0x9f) return readArray(b & 0x0f, depth);
  if (b <= 0xbf) return readString(b & 0x1f);
  switch (b) {
    case 0xc0:
      return null;
    case 0xc2:
      return false;
    case 0xc3:
      return true;
    case 0xc4:
    case 0xc5:
    case 0xc6: {
      const n = b === 0xc4 ? src[take(1)]! : b === 0xc5 ? u16() : u32();
      const p = take(n);
      // A view, as the library returns.
      return src.subarray(p, p + n);
    }
    case 0xca: {
      const p = take(4);
      return new DataView(src.buffer, src.byteOffset + p, 4).getFloat32(0);
    }
    case 0xcb: {
      const p = take(8);
      return new DataView(src.buffer, src.byteOffset + p, 8).getFloat64(0);
    }
    case 0xcc:
      return src[take(1)]!;
    case 0xcd:
      return u16();
    case 0xce:
      return u32();
    case 0xd0:
      return (src[take(1)]! << 24) >> 24;
    case 0xd1:
      return (u16() << 16) >> 16;
    case 0xd2:
      return u32() | 0;
    case 0xd9:
      return readString(src[take(1)]!);
    case 0xda:
      return readString(u16());
    case 0xdb:
      return readString(u32());
    case 0xdc:
      return readArray(u16(), depth);
    case 0xdd:
      return readArray(u32(), depth);
    case 0xde:
      return readMap(u16(), depth);
    case 0xdf:
      return readMap(u32(), depth);
    default:
      // 64-bit integers, extension types (timestamps…), 0xc1.
      throw NOT_PLAIN;
  }
}

/** MessagePack bytes → application value. Throws (the library's errors) on invalid input. */
export function decodeValue(bytes: Uint8Array): unknown {
  src = bytes;
  pos = 0;
  end = bytes.length;
  try {
    const v = readValue(1);
    if (pos !== end) throw NOT_PLAIN; // trailing bytes: the library reports them
    return v;
  } catch (e) {
    if (e !== NOT_PLAIN) throw e;
    return decoder.decode(bytes);
  } finally {
    src = EMPTY;
  }
}
