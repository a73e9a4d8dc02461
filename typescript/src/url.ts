/** URL handling shared by the entry points. @module */

/** SPEC §2.1 default path. */
export const DEFAULT_PATH = "/v1/agent-socket";

/** `host:port` → `ws://host:port/v1/agent-socket`; a URL without a path gets the default path. */
export function normalizeUrl(url: string): string {
  const full = /^[a-z][a-z0-9+.-]*:\/\//i.test(url) ? url : `ws://${url}`;
  const u = new URL(full);
  if (u.pathname === "" || u.pathname === "/") u.pathname = DEFAULT_PATH;
  return u.toString();
}
