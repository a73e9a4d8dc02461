#!/usr/bin/env bash
# CI for the Python SDK (run by .ci/run): lint the extension crate, build it with maturin into
# a fresh virtualenv (`pip install ./python`, as users do), and run the pytest suite against
# the Rust binaries it talks to (`asp`, the conformance runner).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
VENV="${ASP_PY_VENV:-target/py-ci-venv}"

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
"$VENV/bin/pytest" -q python/tests
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "python/ci.sh: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
