#!/usr/bin/env bash
# The TypeScript SDK's CI (called by .ci/run): the conformance vectors, interop with the Rust
# `asp` CLI both ways, and a real browser (Debian's chromium, headless). About 1–2 minutes
# after `npm ci` on 2 cores, plus the chromium install on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd .. && pwd)"

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
# The Rust `asp` binary (interop tests): ASP_BIN if set, else built here.
if [ -z "${ASP_BIN:-}" ]; then
  (cd "$root" && cargo build --quiet -p asp-cli --bin asp)
  export ASP_BIN="$target_dir/debug/asp"
fi
[ -x "$ASP_BIN" ] || { echo "no asp binary at $ASP_BIN" >&2; exit 1; }
# The Rust conformance runner (live mode both ways): CONFORMANCE_BIN if set, else built here.
if [ -z "${CONFORMANCE_BIN:-}" ]; then
  (cd "$root" && cargo build --quiet -p conformance --bin conformance)
  CONFORMANCE_BIN="$target_dir/debug/conformance"
fi
[ -x "$CONFORMANCE_BIN" ] || { echo "no conformance binary at $CONFORMANCE_BIN" >&2; exit 1; }

# Tests talk to 127.0.0.1 only: never through a proxy from the environment.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"

# Node (20 on this machine), npm, and chromium for the browser test: one `apt-get update`
# for whatever is missing.
missing=()
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ -z "${CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then missing+=(chromium); fi
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] || { echo "no chromium at $CHROMIUM" >&2; exit 1; }

npm ci --no-audit --no-fund --loglevel=error
npm run build
# Every frame, rejection and session vector, in process, in the WebSocket and both byte-stream
# bindings; the last line is `N passed, N failed`.
node dist-test/conformance/run.js

# Live mode (the `live` vectors over real WebSockets): the TS runner against the TS server and
# against the Rust live-profile server (asp-tokio), and the Rust runner against the TS server.
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
# Starts a live-profile server (the command after the variable name) in the background and
# sets the variable to the URL it serves.
start_live() {
  local var="$1" out pid
  shift
  out="$(mktemp)"
  "$@" >"$out" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 1 300); do
    if grep -q 'serving the live profile at ' "$out"; then
      printf -v "$var" '%s' "$(grep -o 'ws://[^ ]*' "$out" | head -n1)"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "live-profile server did not start: $(cat "$out")" >&2
  return 1
}
start_live ts_url node dist-test/conformance/run.js --serve 127.0.0.1:0
start_live rs_url "$CONFORMANCE_BIN" --serve 127.0.0.1:0
echo "live: TypeScript runner → TypeScript server"
node dist-test/conformance/run.js --against "$ts_url"
echo "live: TypeScript runner → Rust server"
node dist-test/conformance/run.js --against "$rs_url"
echo "live: Rust runner → TypeScript server"
"$CONFORMANCE_BIN" --against "$ts_url" | tail -n1
[ "${PIPESTATUS[0]}" -eq 0 ]
# Interop (TS client ↔ asp serve, asp call/tools ↔ TS server, TS ↔ TS) and the browser.
# Its closing lines: `# tests N`, `# pass N`, `# fail N`.
node --test --test-concurrency=1 dist-test/test/*.test.js
