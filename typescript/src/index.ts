/**
 * Agent Socket Protocol (ASP): the Sans-IO core and the browser/Node WebSocket client.
 * @module
 */
export { ErrorCode, type ErrorCodeName, codeName, isRetryable, scopeOf } from "./codes.js";
export { FrameType, Raw, type Frame, type Role } from "./frame.js";
export { encode, encodeFrame, decodeFrame, readHeader } from "./codec.js";
export { Connection, type ConnectionConfig, type State } from "./connection.js";
export type { Event, ToolDef, Metrics, CloseReason } from "./event.js";
export { type Limits, defaultLimits } from "./limits.js";
export { AspError, ConnectionLost, ProtocolMisuse } from "./errors.js";
