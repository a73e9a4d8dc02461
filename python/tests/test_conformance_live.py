"""The conformance live session vectors (conformance/README.md "Live mode"), played by the
Rust runner over the network against a Python server with the live profile."""

from __future__ import annotations

import json

from conftest import REPO, find_bin, run
from live_profile import live_server


async def test_live_vectors_against_python_server() -> None:
    runner = find_bin("CONFORMANCE_BIN", "conformance")
    server = live_server()
    async with await server.start("127.0.0.1", 0) as lst:
        code, out, err = await run(runner, "--against", lst.url, timeout=240)
    lines = out.strip().splitlines()
    assert lines, err
    summary = lines[-1]
    fails = [x for x in lines if x.startswith("FAIL")]
    assert code == 0 and not fails, "\n".join(fails[:20]) + "\n" + summary + err[-2000:]
    live = [t for t in json.loads((REPO / "conformance/vectors/sessions.json").read_text())["tests"] if t.get("live")]
    assert summary == f"{len(live)} passed, 0 failed", summary
