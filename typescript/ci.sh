#!/usr/bin/env bash
# The TypeScript SDK's CI (called by .ci/run): the conformance vectors, interop with the Rust
# `asp` CLI both ways, and a real browser (Debian's chromium, headless). About 1–2 minutes
# after `npm ci` on 2 cores, plus the chromium install on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd .. && pwd)"

# The Rust `asp` binary (interop tests): ASP_BIN if set, else built here — from the asp-cli
# crate once it exists, else from asp-tokio's `cli` feature.
if [ -z "${ASP_BIN:-}" ]; then
  if [ -f "$root/asp-cli/Cargo.toml" ]; then
    (cd "$root" && cargo build --quiet -p asp-cli --bin asp)
  else
    (cd "$root" && cargo build --quiet -p asp-tokio --features cli --bin asp)
  fi
  target_dir="${CARGO_TARGET_DIR:-target}"
  case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
  export ASP_BIN="$target_dir/debug/asp"
fi
[ -x "$ASP_BIN" ] || { echo "no asp binary at $ASP_BIN" >&2; exit 1; }

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
# Every frame, rejection and session vector; the last line is `N passed, N failed`.
node dist-test/conformance/run.js
# Interop (TS client ↔ asp serve, asp call/tools ↔ TS server, TS ↔ TS) and the browser.
# Its closing lines: `# tests N`, `# pass N`, `# fail N`.
node --test --test-concurrency=1 dist-test/test/*.test.js
