#!/usr/bin/env bash
# CI for the Python SDK (run by .ci/run): lint the extension crate, build it with maturin into
# a fresh virtualenv (`pip install ./python`, as users do), and run the pytest suite against
# the Rust binaries it talks to (`asp`, the conformance runner).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
VENV="${ASP_PY_VENV:-target/py-ci-venv}"
# Tests talk to 127.0.0.1 only: never through a proxy from the environment.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"

# A fresh Debian has python3 without `venv`/`ensurepip` (package python3-venv).
if ! command -v "$PY" >/dev/null || ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
  apt-get update -qq && apt-get install -y -qq python3 python3-venv
fi

# The extension crate is outside the cargo workspace (it links against Python).
(cd python && cargo fmt --check && PYO3_PYTHON="$(command -v "$PY")" cargo clippy --all-targets -- -D warnings)

# The Rust peers of the interop tests.
if [ -d asp-cli ]; then
  cargo build -p asp-cli --bin asp
else
  cargo build -p asp-tokio --features cli --bin asp
fi
cargo build -p conformance --bin conformance

rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "./python[test]"

export ASP_BIN="${ASP_BIN:-$PWD/target/debug/asp}"
export CONFORMANCE_BIN="${CONFORMANCE_BIN:-$PWD/target/debug/conformance}"
set +e
"$VENV/bin/pytest" -q python/tests  # its last line: `N passed in …s`
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "python/ci.sh: pytest collected no tests" >&2
  exit 1
fi
[ "$rc" -eq 0 ] || echo "python/ci.sh: pytest failed (exit $rc)" >&2
exit "$rc"
