/**
 * The strict MessagePack reader and the writer used for frame payloads (SPEC §4).
 *
 * Frame payloads need more than a general-purpose codec gives: the exact byte span of an
 * `any` value (carried opaquely, §4.2), integer keys in any unsigned encoding (§4.1),
 * well-formedness without UTF-8 checks inside `any` (§4.3), and no recursion on hostile
 * nesting. Application values (tool `args`, results) go through `value.ts` instead.
 * @module
 */

/** Thrown by the reader for a structural fault: SPEC §4.3 `MALFORMED_PAYLOAD`. */
export class Malformed extends Error {}

/** A MessagePack value's type family, as far as the frame schemas care. */
export type Family = "nil" | "bool" | "uint" | "neg" | "float" | "str" | "bin" | "array" | "map" | "ext";

/** One value's header: its family, the value or length it announces, and where its body starts. */
export interface Head {
  family: Family;
  /** uint/neg: the value (bigint above 2^53); str/bin/ext: byte length; array/map: count; bool: 0/1. */
  value: number | bigint;
  /** Offset of the first byte after the header. */
  body: number;
}

function need(end: number, pos: number, n: number): void {
  if (pos + n > end) throw new Malformed("value truncated");
}

/** The big-endian reads the reader needs (a `DataView` works; `byteView` is cheaper). */
export interface ByteView {
  getInt8(p: number): number;
  getUint16(p: number): number;
  getInt16(p: number): number;
  getUint32(p: number): number;
  getInt32(p: number): number;
  getBigUint64(p: number): bigint;
  getBigInt64(p: number): bigint;
}

/** Big-endian reads straight from a byte array: no `DataView` to allocate per frame. */
class BytesView implements ByteView {
  b: Uint8Array = new Uint8Array(0);
  getInt8(p: number): number {
    return (this.b[p]! << 24) >> 24;
  }
  getUint16(p: number): number {
    return (this.b[p]! << 8) | this.b[p + 1]!;
  }
  getInt16(p: number): number {
    return (((this.b[p]! << 8) | this.b[p + 1]!) << 16) >> 16;
  }
  getUint32(p: number): number {
    return ((this.b[p]! << 24) >>> 0) + ((this.b[p + 1]! << 16) | (this.b[p + 2]! << 8) | this.b[p + 3]!);
  }
  getInt32(p: number): number {
    return (this.b[p]! << 24) | (this.b[p + 1]! << 16) | (this.b[p + 2]! << 8) | this.b[p + 3]!;
  }
  getBigUint64(p: number): bigint {
    return (BigInt(this.getUint32(p)) << 32n) | BigInt(this.getUint32(p + 4));
  }
  getBigInt64(p: number): bigint {
    return BigInt.asIntN(64, this.getBigUint64(p));
  }
}

const SHARED_VIEW = new BytesView();

/** A `ByteView` over `buf`, shared: decoding is synchronous, so one is enough. */
export function byteView(buf: Uint8Array): ByteView {
  SHARED_VIEW.b = buf;
  return SHARED_VIEW;
}

function u64(view: ByteView, pos: number): number | bigint {
  const v = view.getBigUint64(pos);
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

function i64(view: ByteView, pos: number): number | bigint {
  const v = view.getBigInt64(pos);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/**
 * The one `Head` that `readHead` fills in: decoding allocates no object per value. Callers
 * read its fields before the next `readHead` call.
 */
const HEAD: Head = { family: "nil", value: 0, body: 0 };

function set(family: Family, value: number | bigint, body: number): Head {
  HEAD.family = family;
  HEAD.value = value;
  HEAD.body = body;
  return HEAD;
}

/** Reads the header of the value at `pos` (into a shared `Head`: read it before the next call). Throws `Malformed` on `0xc1` or truncation. */
export function readHead(buf: Uint8Array, view: ByteView, pos: number, end: number): Head {
  need(end, pos, 1);
  const b = buf[pos]!;
  const p = pos + 1;
  if (b <= 0x7f) return set("uint", b, p);
  if (b >= 0xe0) return set("neg", b - 0x100, p);
  if (b <= 0x8f) return set("map", b & 0x0f, p);
  if (b <= 0x9f) return set("array", b & 0x0f, p);
  if (b <= 0xbf) return set("str", b & 0x1f, p);
  switch (b) {
    case 0xc0:
      return set("nil", 0, p);
    case 0xc2:
      return set("bool", 0, p);
    case 0xc3:
      return set("bool", 1, p);
    case 0xc4:
      need(end, p, 1);
      return set("bin", buf[p]!, p + 1);
    case 0xc5:
      need(end, p, 2);
      return set("bin", view.getUint16(p), p + 2);
    case 0xc6:
      need(end, p, 4);
      return set("bin", view.getUint32(p), p + 4);
    case 0xc7:
      need(end, p, 2);
      return set("ext", buf[p]!, p + 2);
    case 0xc8:
      need(end, p, 3);
      return set("ext", view.getUint16(p), p + 3);
    case 0xc9:
      need(end, p, 5);
      return set("ext", view.getUint32(p), p + 5);
    case 0xca:
      need(end, p, 4);
      return set("float", 0, p + 4);
    case 0xcb:
      need(end, p, 8);
      return set("float", 0, p + 8);
    case 0xcc:
      need(end, p, 1);
      return set("uint", buf[p]!, p + 1);
    case 0xcd:
      need(end, p, 2);
      return set("uint", view.getUint16(p), p + 2);
    case 0xce:
      need(end, p, 4);
      return set("uint", view.getUint32(p), p + 4);
    case 0xcf:
      need(end, p, 8);
      return set("uint", u64(view, p), p + 8);
    case 0xd0: {
      need(end, p, 1);
      const v = view.getInt8(p);
      return set(v < 0 ? "neg" : "uint", v, p + 1);
    }
    case 0xd1: {
      need(end, p, 2);
      const v = view.getInt16(p);
      return set(v < 0 ? "neg" : "uint", v, p + 2);
    }
    case 0xd2: {
      need(end, p, 4);
      const v = view.getInt32(p);
      return set(v < 0 ? "neg" : "uint", v, p + 4);
    }
    case 0xd3: {
      need(end, p, 8);
      const v = i64(view, p);
      return set(v < 0 ? "neg" : "uint", v, p + 8);
    }
    case 0xd4:
      need(end, p, 2);
      return set("ext", 1, p + 1);
    case 0xd5:
      need(end, p, 3);
      return set("ext", 2, p + 1);
    case 0xd6:
      need(end, p, 5);
      return set("ext", 4, p + 1);
    case 0xd7:
      need(end, p, 9);
      return set("ext", 8, p + 1);
    case 0xd8:
      need(end, p, 17);
      return set("ext", 16, p + 1);
    case 0xd9:
      need(end, p, 1);
      return set("str", buf[p]!, p + 1);
    case 0xda:
      need(end, p, 2);
      return set("str", view.getUint16(p), p + 2);
    case 0xdb:
      need(end, p, 4);
      return set("str", view.getUint32(p), p + 4);
    case 0xdc:
      need(end, p, 2);
      return set("array", view.getUint16(p), p + 2);
    case 0xdd:
      need(end, p, 4);
      return set("array", view.getUint32(p), p + 4);
    case 0xde:
      need(end, p, 2);
      return set("map", view.getUint16(p), p + 2);
    case 0xdf:
      need(end, p, 4);
      return set("map", view.getUint32(p), p + 4);
    default:
      // 0xc1 is never used (§4.3).
      throw new Malformed("invalid byte 0xc1");
  }
}

/**
 * Skips one complete value starting at `pos` and returns the offset after it. Iterative, so
 * hostile nesting cannot exhaust the stack; every step consumes at least one byte.
 */
export function skipValue(buf: Uint8Array, view: ByteView, pos: number, end: number): number {
  let pending = 1;
  while (pending > 0) {
    const h = readHead(buf, view, pos, end);
    pending -= 1;
    switch (h.family) {
      case "str":
      case "bin":
      case "ext": {
        const n = Number(h.value);
        need(end, h.body, n);
        pos = h.body + n;
        break;
      }
      case "array":
        pending += Number(h.value);
        pos = h.body;
        break;
      case "map":
        pending += 2 * Number(h.value);
        pos = h.body;
        break;
      default:
        pos = h.body;
    }
    // A count larger than the bytes left can never complete.
    if (pending > end - pos) throw new Malformed("value truncated");
  }
  return pos;
}

/** A growable byte buffer with MessagePack writers (shortest encodings, SPEC §4.2). */
export class Writer {
  buf: Uint8Array;
  view: DataView;
  len = 0;

  constructor(capacity = 256) {
    this.buf = new Uint8Array(capacity);
    this.view = new DataView(this.buf.buffer);
  }

  reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  byte(b: number): void {
    this.reserve(1);
    this.buf[this.len++] = b;
  }

  bytes(b: Uint8Array): void {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  uint(v: number | bigint): void {
    this.reserve(9);
    if (typeof v === "bigint") {
      if (v <= BigInt(Number.MAX_SAFE_INTEGER)) return this.uint(Number(v));
      this.buf[this.len] = 0xcf;
      this.view.setBigUint64(this.len + 1, v);
      this.len += 9;
      return;
    }
    if (v < 0x80) {
      this.buf[this.len++] = v;
    } else if (v < 0x100) {
      this.buf[this.len++] = 0xcc;
      this.buf[this.len++] = v;
    } else if (v < 0x10000) {
      this.buf[this.len] = 0xcd;
      this.view.setUint16(this.len + 1, v);
      this.len += 3;
    } else if (v < 0x100000000) {
      this.buf[this.len] = 0xce;
      this.view.setUint32(this.len + 1, v);
      this.len += 5;
    } else {
      this.buf[this.len] = 0xcf;
      this.view.setBigUint64(this.len + 1, BigInt(v));
      this.len += 9;
    }
  }

  bool(v: boolean): void {
    this.byte(v ? 0xc3 : 0xc2);
  }

  private lenHeader(n: number, fix: number, fixMax: number, c8: number): void {
    this.reserve(5);
    if (n <= fixMax && fix >= 0) {
      this.buf[this.len++] = fix | n;
    } else if (n < 0x100 && c8 >= 0) {
      this.buf[this.len++] = c8;
      this.buf[this.len++] = n;
    } else if (n < 0x10000) {
      this.buf[this.len] = c8 >= 0 ? c8 + 1 : fix === 0x90 ? 0xdc : 0xde;
      this.view.setUint16(this.len + 1, n);
      this.len += 3;
    } else {
      this.buf[this.len] = c8 >= 0 ? c8 + 2 : fix === 0x90 ? 0xdd : 0xdf;
      this.view.setUint32(this.len + 1, n);
      this.len += 5;
    }
  }

  /** Writes a string given as its UTF-8 bytes. */
  strBytes(b: Uint8Array): void {
    this.lenHeader(b.length, 0xa0, 31, 0xd9);
    this.bytes(b);
  }

  str(s: string): void {
    // Most protocol strings are ASCII: write them directly, without a TextEncoder call.
    const n = s.length;
    if (n < 32) {
      let ascii = true;
      for (let i = 0; i < n; i++) {
        if (s.charCodeAt(i) >= 0x80) {
          ascii = false;
          break;
        }
      }
      if (ascii) {
        this.reserve(1 + n);
        this.buf[this.len++] = 0xa0 | n;
        for (let i = 0; i < n; i++) this.buf[this.len++] = s.charCodeAt(i);
        return;
      }
    }
    this.strBytes(utf8Encode(s));
  }

  bin(b: Uint8Array): void {
    this.lenHeader(b.length, -1, -1, 0xc4);
    this.bytes(b);
  }

  array(n: number): void {
    this.lenHeader(n, 0x90, 15, -1);
  }

  map(n: number): void {
    this.lenHeader(n, 0x80, 15, -1);
  }

  /** The written bytes (a view; copy before reusing the writer). */
  finish(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

export function utf8Encode(s: string): Uint8Array {
  return encoder.encode(s);
}

/** Decodes UTF-8, returning undefined for invalid input (§4.2: `INVALID_FIELD`). */
export function utf8Decode(b: Uint8Array): string | undefined {
  return utf8DecodeRange(b, 0, b.length);
}

/** `utf8Decode` of `b[start, end)`, without a subarray for short ASCII strings. */
export function utf8DecodeRange(b: Uint8Array, start: number, end: number): string | undefined {
  // ASCII fast path: short protocol strings avoid the TextDecoder call.
  if (end - start < 64) {
    let s = "";
    let i = start;
    for (; i < end; i++) {
      const c = b[i]!;
      if (c >= 0x80) break;
      s += String.fromCharCode(c);
    }
    if (i === end) return s;
  }
  try {
    return decoder.decode(b.subarray(start, end));
  } catch {
    return undefined;
  }
}

/** The UTF-8 length of a string, without encoding it. */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}
