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

# Node (20 on this machine) and chromium for the browser test.
command -v node >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  apt-get update -qq && apt-get install -y -qq chromium
fi

npm ci --no-audit --no-fund --loglevel=error
npm run build
# Every frame, rejection and session vector; the last line is `N passed, N failed`.
node dist-test/conformance/run.js
# Interop (TS client ↔ asp serve, asp call/tools ↔ TS server, TS ↔ TS) and the browser.
node --test --test-concurrency=1 dist-test/test/*.test.js
