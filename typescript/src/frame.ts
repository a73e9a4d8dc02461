/**
 * Frame types, ids and payload schemas (SPEC §3.3, §3.5, §5): the dictionary of the wire,
 * written down once. The codec (`codec.ts`) reads and writes frames from these tables.
 * @module
 */

/** Frame type codes (SPEC §3.3). */
export const FrameType = {
  HELLO: 0x1,
  INVOKE: 0x2,
  STREAM: 0x3,
  INTERRUPT: 0x4,
  TOOL_DEF: 0x5,
  COMPLETE: 0x6,
  ERROR: 0x7,
  PING: 0x8,
  PONG: 0x9,
  REQUEST: 0xa,
  REPLY: 0xb,
  CREDIT: 0xc,
  GOAWAY: 0xd,
  RESUME: 0xe,
} as const;

/** A frame type name of SPEC §3.3. */
export type FrameTypeName = keyof typeof FrameType;

export const FRAME_TYPE_NAMES: readonly (FrameTypeName | undefined)[] = [
  undefined,
  "HELLO",
  "INVOKE",
  "STREAM",
  "INTERRUPT",
  "TOOL_DEF",
  "COMPLETE",
  "ERROR",
  "PING",
  "PONG",
  "REQUEST",
  "REPLY",
  "CREDIT",
  "GOAWAY",
  "RESUME",
  undefined,
];

/** Header size (SPEC §3.1). */
export const HEADER_LEN = 8;

/** The opaque bytes of one MessagePack value (an `any` field, SPEC §4.2), carried as they are. */
export class Raw {
  constructor(readonly bytes: Uint8Array) {}
}

/** A decoded field value. `bin` fields are `Uint8Array`; STREAM `data` is `string | Uint8Array`. */
export type FieldValue =
  | number
  | bigint
  | boolean
  | string
  | Uint8Array
  | Raw
  | readonly number[]
  | readonly string[]
  | { readonly [name: string]: number | bigint };

/** A frame: its type, request id, and the fields present (absent fields are not listed). */
export interface Frame {
  type: number;
  id: number;
  fields: Record<string, FieldValue>;
}

/** Who sends a frame; HELLO and RESUME requirements depend on it (SPEC §5.1, §5.13). */
export type Role = "client" | "server";

/** A field's schema. `required`: true, or the sender role for which it is required. */
export type FieldSpec =
  | { key: number; name: string; kind: "uint"; min: number; max: number | bigint; required?: true | Role }
  | { key: number; name: string; kind: "bool"; required?: true | Role }
  | { key: number; name: string; kind: "str"; min: number; max: number; required?: true | Role }
  | { key: number; name: string; kind: "bin"; min: number; max: number; required?: true | Role }
  | { key: number; name: string; kind: "data"; required?: true | Role }
  | { key: number; name: string; kind: "any"; required?: true | Role }
  | {
      key: number;
      name: string;
      kind: "uints";
      min: number;
      max: number;
      minItems: number;
      maxItems: number;
      required?: true | Role;
    }
  | { key: number; name: string; kind: "strs"; maxLen: number; maxItems: number; required?: true | Role }
  | { key: number; name: string; kind: "map"; fields: readonly FieldSpec[]; required?: true | Role };

const U32 = 0xffffffff;
const U64 = 0xffffffffffffffffn;

/**
 * Every spec with the same properties in the same order, absent ones undefined: the codec
 * reads `kind`, `name`, `min`… of specs of every kind at the same places, and objects of one
 * shape keep those reads monomorphic (literals of nine shapes made them megamorphic, a
 * measurable share of a round trip).
 */
function uniform(spec: FieldSpec): FieldSpec {
  const s = spec as Partial<Record<string, unknown>>;
  return {
    key: spec.key,
    name: spec.name,
    kind: spec.kind,
    required: spec.required,
    min: s["min"],
    max: s["max"],
    minItems: s["minItems"],
    maxItems: s["maxItems"],
    maxLen: s["maxLen"],
    fields: s["fields"] === undefined ? undefined : (s["fields"] as readonly FieldSpec[]).map(uniform),
  } as FieldSpec;
}

/** SPEC §5.1 `limits` keys. */
export const LIMITS_SCHEMA: readonly FieldSpec[] = [
  { key: 0, name: "max_frame_payload", kind: "uint", min: 64, max: U32 },
  { key: 1, name: "max_inflight", kind: "uint", min: 1, max: 32767 },
  { key: 2, name: "max_tools", kind: "uint", min: 0, max: 65535 },
  { key: 3, name: "max_chunk", kind: "uint", min: 4, max: U32 },
  { key: 4, name: "initial_window", kind: "uint", min: 8, max: U32 },
  { key: 5, name: "replay_buffer", kind: "uint", min: 0, max: U32 },
  { key: 6, name: "resume_window_ms", kind: "uint", min: 0, max: U32 },
];

/** SPEC §5.6 `metrics` keys. */
export const METRICS_SCHEMA: readonly FieldSpec[] = [
  { key: 0, name: "wall_us", kind: "uint", min: 0, max: U64 },
  { key: 1, name: "cpu_us", kind: "uint", min: 0, max: U64 },
  { key: 2, name: "input_tokens", kind: "uint", min: 0, max: U64 },
  { key: 3, name: "output_tokens", kind: "uint", min: 0, max: U64 },
];

/** Payload schemas by frame type (SPEC §5.1–§5.13), as written. */
const SCHEMA_LITERALS: readonly (readonly FieldSpec[])[] = [
  [],
  // §5.1 HELLO. Fields of the other role are type-checked, then ignored (§4.3).
  [
    { key: 0, name: "versions", kind: "uints", min: 1, max: 15, minItems: 1, maxItems: 16, required: true },
    { key: 1, name: "capabilities", kind: "strs", maxLen: 64, maxItems: 32 },
    { key: 2, name: "limits", kind: "map", fields: LIMITS_SCHEMA },
    { key: 3, name: "heartbeat_ms", kind: "uint", min: 0, max: U32 },
    { key: 4, name: "connection_id", kind: "str", min: 1, max: 64, required: "server" },
    { key: 5, name: "resume_token", kind: "bin", min: 1, max: 64 },
    { key: 6, name: "tools", kind: "uint", min: 0, max: 65535 },
    { key: 7, name: "agent", kind: "str", min: 0, max: 256 },
  ],
  // §5.2 INVOKE
  [
    { key: 0, name: "tool", kind: "str", min: 1, max: 128, required: true },
    { key: 1, name: "args", kind: "any" },
    { key: 2, name: "deadline_ms", kind: "uint", min: 0, max: U32 },
    { key: 3, name: "meta", kind: "any" },
  ],
  // §5.3 STREAM
  [
    { key: 0, name: "data", kind: "data", required: true },
    { key: 1, name: "seq", kind: "uint", min: 0, max: U32, required: true },
    { key: 2, name: "final", kind: "bool" },
  ],
  // §5.4 INTERRUPT
  [{ key: 0, name: "reason", kind: "str", min: 0, max: 1024 }],
  // §5.5 TOOL_DEF
  [
    { key: 0, name: "op", kind: "uint", min: 0, max: 2, required: true },
    { key: 1, name: "name", kind: "str", min: 1, max: 128, required: true },
    { key: 2, name: "description", kind: "str", min: 0, max: 65535 },
    { key: 3, name: "input_schema", kind: "any" },
    { key: 4, name: "annotations", kind: "any" },
  ],
  // §5.6 COMPLETE
  [
    { key: 0, name: "status", kind: "uint", min: 0, max: 2, required: true },
    { key: 1, name: "result", kind: "any" },
    { key: 2, name: "metrics", kind: "map", fields: METRICS_SCHEMA },
  ],
  // §5.7 ERROR
  [
    { key: 0, name: "code", kind: "uint", min: 1, max: 65535, required: true },
    { key: 1, name: "message", kind: "str", min: 0, max: 1024 },
    { key: 2, name: "retryable", kind: "bool" },
    { key: 3, name: "frame_type", kind: "uint", min: 0, max: 15 },
  ],
  // §5.8 PING, PONG: `received` acknowledges counted frames in a resumable session (§11.1).
  [{ key: 0, name: "received", kind: "uint", min: 0, max: U64 }],
  [{ key: 0, name: "received", kind: "uint", min: 0, max: U64 }],
  // §5.9 REQUEST
  [
    { key: 0, name: "kind", kind: "str", min: 1, max: 64, required: true },
    { key: 1, name: "body", kind: "any" },
    { key: 2, name: "invocation", kind: "uint", min: 1, max: 32767 },
  ],
  // §5.10 REPLY
  [
    { key: 0, name: "status", kind: "uint", min: 0, max: 2, required: true },
    { key: 1, name: "body", kind: "any" },
  ],
  // §5.11 CREDIT
  [{ key: 0, name: "bytes", kind: "uint", min: 1, max: U32, required: true }],
  // §5.12 GOAWAY
  [
    { key: 0, name: "reason", kind: "str", min: 0, max: 1024 },
    { key: 1, name: "timeout_ms", kind: "uint", min: 0, max: U32 },
  ],
  // §5.13 RESUME
  [
    { key: 0, name: "token", kind: "bin", min: 1, max: 64, required: "client" },
    { key: 1, name: "received", kind: "uint", min: 0, max: U64, required: true },
  ],
];

/** Payload schemas by frame type (SPEC §5.1–§5.13), each spec of one shape. */
export const SCHEMAS: readonly (readonly FieldSpec[])[] = SCHEMA_LITERALS.map((schema) => schema.map(uniform));

/**
 * SPEC §3.5: whether `id` is allowed for frame type `type` (which must be 0x1–0xE).
 */
export function idAllowed(type: number, id: number): boolean {
  switch (type) {
    case FrameType.HELLO:
    case FrameType.TOOL_DEF:
    case FrameType.PING:
    case FrameType.PONG:
    case FrameType.GOAWAY:
    case FrameType.RESUME:
      return id === 0;
    case FrameType.INVOKE:
    case FrameType.STREAM:
    case FrameType.COMPLETE:
    case FrameType.CREDIT:
      return id >= 0x0001 && id <= 0x7fff;
    case FrameType.REQUEST:
    case FrameType.REPLY:
      return id >= 0x8000;
    case FrameType.INTERRUPT:
      return id !== 0;
    case FrameType.ERROR:
      return true;
    default:
      return false;
  }
}
