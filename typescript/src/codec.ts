/**
 * Bytes ↔ frames (SPEC §3, §4, §5), with the processing order of §3.7.
 * @module
 */
import { ErrorCode } from "./codes.js";
import type { Metrics } from "./event.js";
import {
  FRAME_TYPE_NAMES,
  type FieldSpec,
  type FieldValue,
  type Frame,
  HEADER_LEN,
  Raw,
  type Role,
  SCHEMAS,
  idAllowed,
} from "./frame.js";
import { type ByteView, Malformed, Writer, byteView, readHead, skipValue, utf8DecodeRange } from "./msgpack.js";

/** The fixed header of one frame (SPEC §3.1). */
export interface Header {
  version: number;
  type: number;
  flags: number;
  id: number;
  length: number;
}

export function readHeader(buf: Uint8Array, pos: number): Header {
  const b0 = buf[pos]!;
  return {
    version: b0 >> 4,
    type: b0 & 0x0f,
    flags: buf[pos + 1]!,
    id: (buf[pos + 2]! << 8) | buf[pos + 3]!,
    length: payloadLength(buf, pos),
  };
}

/** The payload length of the frame whose header starts at `pos` (SPEC §3.1). */
export function payloadLength(buf: Uint8Array, pos: number): number {
  return ((buf[pos + 4]! << 24) >>> 0) + (buf[pos + 5]! << 16) + (buf[pos + 6]! << 8) + buf[pos + 7]!;
}

/** A frame rejected by §3.7 steps 1–6: the code, and what the ERROR reply carries. */
export interface FrameFault {
  code: number;
  message: string;
  /** The raw type nibble (the ERROR's `frame_type`). */
  frameType: number;
  /** The header id, and whether it is allowed for the type (then the ERROR names it, §3.7). */
  id: number;
  idAllowed: boolean;
}

class FieldFault extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * §3.7 steps 2–6 for a frame whose version is 1 and whose whole payload is at
 * `buf[start, start + header.length)`. `sender` decides the role-dependent requirements of
 * HELLO and RESUME; undefined checks only what holds for both roles.
 */
export function decodeFrame(
  header: Header,
  buf: Uint8Array,
  start: number,
  maxPayload: number,
  sender?: Role,
): { frame: Frame; fault?: undefined } | { frame?: undefined; fault: FrameFault } {
  const { type, id } = header;
  const known = FRAME_TYPE_NAMES[type] !== undefined;
  // §3.7 step 5: for INTERRUPT the id must name an exchange its sender initiates (a client's
  // invocation, a server's request).
  const interruptOk = type !== 0x4 || sender === undefined || (sender === "client" ? id <= 0x7fff : id >= 0x8000);
  const allowed = known && idAllowed(type, id) && interruptOk;
  const fault = (code: number, message: string) => ({
    fault: { code, message, frameType: type, id, idAllowed: allowed },
  });
  if (header.length > maxPayload) {
    return fault(ErrorCode.FRAME_TOO_LARGE, `payload length ${header.length} above max_frame_payload ${maxPayload}`);
  }
  if (!known) return fault(ErrorCode.UNKNOWN_FRAME_TYPE, `reserved frame type ${type}`);
  if (header.flags !== 0) return fault(ErrorCode.RESERVED_FLAGS, `reserved flags 0x${header.flags.toString(16)}`);
  if (!allowed) return fault(ErrorCode.INVALID_ID, `id ${id} not allowed for ${FRAME_TYPE_NAMES[type]}`);
  try {
    const fields = decodePayload(SCHEMAS[type]!, buf, start, start + header.length, sender);
    if (type === 3) checkStream(fields);
    return { frame: { type, id, fields } };
  } catch (e) {
    if (e instanceof Malformed) return fault(ErrorCode.MALFORMED_PAYLOAD, e.message);
    if (e instanceof FieldFault) return fault(e.code, e.message);
    throw e;
  }
}

/** §5.3: an empty non-final chunk is `INVALID_FIELD`. */
function checkStream(fields: Record<string, FieldValue>): void {
  const data = fields["data"] as string | Uint8Array;
  if (data.length === 0 && fields["final"] !== true) {
    throw new FieldFault(ErrorCode.INVALID_FIELD, "data: empty chunk that is not final");
  }
}

function decodePayload(
  schema: readonly FieldSpec[],
  buf: Uint8Array,
  start: number,
  end: number,
  sender: Role | undefined,
): Record<string, FieldValue> {
  // §4.4: an empty payload is an empty map.
  if (start === end) return requireFields(schema, {}, sender);
  const view = byteView(buf);
  // Pass 1 (§4.3 structure): one map, unsigned keys, no duplicates of defined keys, every
  // value well-formed, no trailing bytes. Pass 2 type-checks the defined values.
  const seenTop = { mask: 0 };
  const after = readMap(schema, buf, view, start, end, TOP_POS, seenTop);
  if (after !== end) throw new Malformed("trailing bytes after the map");
  const fields: Record<string, FieldValue> = {};
  for (let key = 0; key < schema.length; key++) {
    if ((seenTop.mask & (1 << key)) === 0) continue;
    const spec = schema[key]!;
    const v = readField(spec, buf, view, TOP_POS[key]!, end, sender);
    if (v !== undefined) fields[spec.name] = v;
  }
  return requireFields(schema, fields, sender);
}

function requireFields(
  schema: readonly FieldSpec[],
  fields: Record<string, FieldValue>,
  sender: Role | undefined,
): Record<string, FieldValue> {
  for (const spec of schema) {
    const req = spec.required;
    if (req === true || (req !== undefined && req === sender)) {
      if (!(spec.name in fields)) throw new FieldFault(ErrorCode.MISSING_FIELD, `${spec.name}: required`);
    }
  }
  return fields;
}

/** Value offsets by key: the payload map's, and a nested map's (limits, metrics hold only uints). */
const TOP_POS: number[] = [0, 0, 0, 0, 0, 0, 0, 0];
const NESTED_POS: number[] = [0, 0, 0, 0, 0, 0, 0, 0];

/**
 * Pass 1 over one map (§4.3 structure): records the value offset of each defined key in
 * `positions` (defined keys are < 8 and equal to their index in the schema tables) and the
 * keys seen in `seen.mask`; returns the offset after the map.
 */
function readMap(
  schema: readonly FieldSpec[],
  buf: Uint8Array,
  view: ByteView,
  pos: number,
  end: number,
  positions: number[],
  seen: { mask: number },
): number {
  const h = readHead(buf, view, pos, end);
  if (h.family !== "map") throw new Malformed(positions === TOP_POS ? "payload is not a map" : "not a map");
  const n = Number(h.value);
  pos = h.body;
  let mask = 0;
  for (let i = 0; i < n; i++) {
    const k = readHead(buf, view, pos, end);
    if (k.family !== "uint") throw new Malformed("map key is not an unsigned integer");
    pos = k.body;
    const key = k.value;
    const spec = typeof key === "number" && key < schema.length ? schema[key] : undefined;
    if (spec !== undefined) {
      const bit = 1 << (key as number);
      if (mask & bit) throw new Malformed(`duplicate key ${spec.key}`);
      mask |= bit;
      positions[key as number] = pos;
      // Nested maps follow the same structural rules (§4.3).
      if (spec.kind === "map" && readHead(buf, view, pos, end).family === "map") {
        pos = readMap(spec.fields, buf, view, pos, end, NESTED_POS, { mask: 0 });
      } else {
        pos = skipValue(buf, view, pos, end);
      }
    } else {
      pos = skipValue(buf, view, pos, end);
    }
  }
  seen.mask = mask;
  return pos;
}

/**
 * A copy (Node's Buffer#slice would be a view into the receive buffer). Short values, as most
 * `args` and results are, are copied byte by byte: cheaper than `slice` on a Node `Buffer`,
 * which goes through its species constructor.
 */
function copy(buf: Uint8Array, start: number, end: number): Uint8Array {
  const n = end - start;
  if (n > 64) return new Uint8Array(new Uint8Array(buf.buffer, buf.byteOffset + start, n));
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = buf[start + i]!;
  return out;
}

function invalid(spec: FieldSpec, what: string): never {
  throw new FieldFault(ErrorCode.INVALID_FIELD, `${spec.name}: ${what}`);
}

function readUint(spec: FieldSpec & { min: number; max: number | bigint }, buf: Uint8Array, view: ByteView, pos: number, end: number): number | bigint {
  const h = readHead(buf, view, pos, end);
  if (h.family !== "uint") invalid(spec, "not an unsigned integer");
  const v = h.value;
  if (v < spec.min || v > spec.max) invalid(spec, `${v} out of range ${spec.min}–${spec.max}`);
  return v;
}

/** A string value's byte range, or undefined if the value is not a string. */
let strStart = 0;
function readStrRange(buf: Uint8Array, view: ByteView, pos: number, end: number): number | undefined {
  const h = readHead(buf, view, pos, end);
  if (h.family !== "str") return undefined;
  strStart = h.body;
  return Number(h.value);
}

/** Pass 2: the value of one defined field, or undefined for `nil` (absent, §4.2). */
function readField(
  spec: FieldSpec,
  buf: Uint8Array,
  view: ByteView,
  pos: number,
  end: number,
  sender: Role | undefined,
): FieldValue | undefined {
  const h = readHead(buf, view, pos, end);
  if (h.family === "nil") {
    // nil means absent; for a required field that is MISSING_FIELD (checked after).
    return undefined;
  }
  switch (spec.kind) {
    case "uint":
      return readUint(spec, buf, view, pos, end);
    case "bool":
      if (h.family !== "bool") invalid(spec, "not a bool");
      return h.value === 1;
    case "str": {
      const n = readStrRange(buf, view, pos, end);
      if (n === undefined) invalid(spec, "not a string");
      if (n < spec.min || n > spec.max) invalid(spec, `length ${n} out of range ${spec.min}–${spec.max}`);
      const s = utf8DecodeRange(buf, strStart, strStart + n);
      if (s === undefined) invalid(spec, "not UTF-8");
      return s;
    }
    case "bin": {
      if (h.family !== "bin") invalid(spec, "not binary");
      const n = Number(h.value);
      if (n < spec.min || n > spec.max) invalid(spec, `length ${n} out of range ${spec.min}–${spec.max}`);
      return copy(buf, h.body, h.body + n);
    }
    case "data": {
      if (h.family === "bin") return copy(buf, h.body, h.body + Number(h.value));
      if (h.family !== "str") invalid(spec, "neither string nor binary");
      const s = utf8DecodeRange(buf, h.body, h.body + Number(h.value));
      if (s === undefined) invalid(spec, "not UTF-8");
      return s;
    }
    case "any":
      return new Raw(copy(buf, pos, skipValue(buf, view, pos, end)));
    case "uints": {
      if (h.family !== "array") invalid(spec, "not an array");
      const n = Number(h.value);
      // A server HELLO with more than one version is checked by the client (§6.2 step 4:
      // UNSUPPORTED_VERSION), so the schema range is the same for both roles.
      const maxItems = spec.maxItems;
      if (n < spec.minItems || n > maxItems) invalid(spec, `${n} entries, allowed ${spec.minItems}–${maxItems}`);
      const out: number[] = [];
      let p = h.body;
      for (let i = 0; i < n; i++) {
        const e = readUint(spec, buf, view, p, end);
        // §4.3: repeated HELLO versions are the same as one.
        if (!out.includes(Number(e))) out.push(Number(e));
        p = skipValue(buf, view, p, end);
      }
      return out;
    }
    case "strs": {
      if (h.family !== "array") invalid(spec, "not an array");
      const n = Number(h.value);
      if (n > spec.maxItems) invalid(spec, `${n} entries, at most ${spec.maxItems}`);
      const out: string[] = [];
      let p = h.body;
      for (let i = 0; i < n; i++) {
        const n = readStrRange(buf, view, p, end);
        if (n === undefined) invalid(spec, "entry not a string");
        // §5.1: capability names are 1–64 bytes.
        if (n === 0) invalid(spec, "empty entry");
        if (n > spec.maxLen) invalid(spec, `entry longer than ${spec.maxLen} bytes`);
        const s = utf8DecodeRange(buf, strStart, strStart + n);
        if (s === undefined) invalid(spec, "entry not UTF-8");
        out.push(s);
        p = skipValue(buf, view, p, end);
      }
      return out;
    }
    case "map": {
      if (h.family !== "map") invalid(spec, "not a map");
      const seen = { mask: 0 };
      readMap(spec.fields, buf, view, pos, end, NESTED_POS, seen);
      const out: Record<string, number | bigint> = {};
      for (let key = 0; key < spec.fields.length; key++) {
        if ((seen.mask & (1 << key)) === 0) continue;
        const s = spec.fields[key]!;
        const v = readField(s, buf, view, NESTED_POS[key]!, end, sender);
        if (v !== undefined) out[s.name] = v as number | bigint;
      }
      return out;
    }
  }
}

/**
 * Appends one frame to `w` (SPEC §3.1, §4): shortest encodings, keys ascending, absent
 * fields omitted, length 0 for a frame without fields (§4.4). Field values must already be
 * valid for the schema; the Connection checks what applications hand it.
 */
export function encodeFrame(w: Writer, frame: Frame): void {
  const start = beginFrame(w, frame.type, frame.id);
  writeMap(w, SCHEMAS[frame.type]!, frame.fields, true);
  endFrame(w, start);
}

function writeMap(w: Writer, schema: readonly FieldSpec[], fields: Record<string, unknown>, top: boolean): void {
  let n = 0;
  for (const spec of schema) if (fields[spec.name] !== undefined) n++;
  if (n === 0 && top) return;
  w.map(n);
  for (const spec of schema) {
    const v = fields[spec.name];
    if (v === undefined) continue;
    w.byte(spec.key);
    writeValue(w, spec, v);
  }
}

function writeValue(w: Writer, spec: FieldSpec, v: unknown): void {
  switch (spec.kind) {
    case "uint":
      return w.uint(v as number | bigint);
    case "bool":
      return w.bool(v as boolean);
    case "str":
      return w.str(v as string);
    case "bin":
      return w.bin(v as Uint8Array);
    case "data":
      return typeof v === "string" ? w.str(v) : w.bin(v as Uint8Array);
    case "any":
      return w.bytes(v instanceof Raw ? v.bytes : (v as Uint8Array));
    case "uints":
      w.array((v as number[]).length);
      for (const e of v as number[]) w.uint(e);
      return;
    case "strs":
      w.array((v as string[]).length);
      for (const e of v as string[]) w.str(e);
      return;
    case "map":
      return writeMap(w, spec.fields, v as Record<string, unknown>, false);
  }
}

/**
 * INVOKE (§5.2) written from its values, without a `Frame` record: the client's per-call
 * frame. The same bytes as `encodeFrame` (a test compares them); keys ascending, absent
 * fields omitted.
 */
export function encodeInvoke(w: Writer, id: number, tool: string, args: Raw | undefined, deadlineMs: number, meta: Raw | undefined): void {
  const start = beginFrame(w, 0x2, id);
  w.map(1 + (args !== undefined ? 1 : 0) + (deadlineMs > 0 ? 1 : 0) + (meta !== undefined ? 1 : 0));
  w.byte(0);
  w.str(tool);
  if (args !== undefined) {
    w.byte(1);
    w.bytes(args.bytes);
  }
  if (deadlineMs > 0) {
    w.byte(2);
    w.uint(deadlineMs);
  }
  if (meta !== undefined) {
    w.byte(3);
    w.bytes(meta.bytes);
  }
  endFrame(w, start);
}

/** COMPLETE (§5.6) written from its values, as `encodeInvoke`: the server's per-call frame. */
export function encodeComplete(w: Writer, id: number, status: number, result: Raw | undefined, metrics: Metrics | undefined): void {
  const start = beginFrame(w, 0x6, id);
  const m = metrics === undefined ? 0 : metricsCount(metrics);
  w.map(1 + (result !== undefined ? 1 : 0) + (m > 0 ? 1 : 0));
  w.byte(0);
  w.uint(status);
  if (result !== undefined) {
    w.byte(1);
    w.bytes(result.bytes);
  }
  if (m > 0) {
    const x = metrics!;
    w.byte(2);
    w.map(m);
    metric(w, 0, x.wall_us);
    metric(w, 1, x.cpu_us);
    metric(w, 2, x.input_tokens);
    metric(w, 3, x.output_tokens);
  }
  endFrame(w, start);
}

function metric(w: Writer, key: number, v: number | bigint | undefined): void {
  if (v === undefined) return;
  w.byte(key);
  w.uint(v);
}

function metricsCount(m: Metrics): number {
  return (
    (m.wall_us !== undefined ? 1 : 0) +
    (m.cpu_us !== undefined ? 1 : 0) +
    (m.input_tokens !== undefined ? 1 : 0) +
    (m.output_tokens !== undefined ? 1 : 0)
  );
}

/** Writes a frame header with length 0 (§3.1); returns where it starts, for `endFrame`. */
function beginFrame(w: Writer, type: number, id: number): number {
  const start = w.len;
  w.reserve(HEADER_LEN);
  w.buf[start] = 0x10 | type;
  w.buf[start + 1] = 0;
  w.buf[start + 2] = id >> 8;
  w.buf[start + 3] = id & 0xff;
  w.len += HEADER_LEN;
  return start;
}

/** Sets the payload length of the frame begun at `start`. */
function endFrame(w: Writer, start: number): void {
  w.view.setUint32(start + 4, w.len - start - HEADER_LEN);
}

/** Encodes one frame into a new byte array. */
export function encode(frame: Frame): Uint8Array {
  const w = new Writer(64);
  encodeFrame(w, frame);
  return w.finish().slice();
}
