/**
 * The limits each side announces in HELLO (SPEC §5.1) and their §13 defaults.
 * @module
 */

/** What one side accepts (SPEC §5.1 `limits`). */
export interface Limits {
  /** Largest payload accepted (default 1 MiB). */
  max_frame_payload: number;
  /** Server: invocations in flight it accepts; client: server requests (default 128). */
  max_inflight: number;
  /** Client: tool definitions it stores (default 256). */
  max_tools: number;
  /** Client: largest STREAM `data` (default 64 KiB). */
  max_chunk: number;
  /** Client: STREAM credit per invocation at its start (default 256 KiB). */
  initial_window: number;
}

/** SPEC §13 defaults. */
export function defaultLimits(): Limits {
  return {
    max_frame_payload: 1048576,
    max_inflight: 128,
    max_tools: 256,
    max_chunk: 65536,
    initial_window: 262144,
  };
}
