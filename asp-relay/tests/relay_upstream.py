#!/usr/bin/env python3
"""A serverless-style function for the ASP relay (SPEC §15), standard library only.

The relay POSTs each INVOKE to /invoke with a JSON body (`--format json`):
{"connection_id", "request_id", "tool", "args", "deadline_ms"?, "meta"?, "state"?}
where "state" is the connection's state blob in base64. The function answers with a
streamed body (chunked transfer encoding, written by hand), metrics in the trailers
(`X-Cpu-Time` in milliseconds, `X-Output-Tokens`) and the new state in `X-Asp-State`.

Tools: `tokens` ({"n", "prefix"}) streams n tokens; `count` counts its calls in the
state; `echo` returns the request body; `fail` answers 503.

Run: `python3 relay_upstream.py [port]`; it prints `PORT <n>` first, then serves until
killed. Used by `asp-relay/tests/relay.rs`.
"""

import base64
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Function(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked encoding

    def log_message(self, fmt, *args):  # quiet
        pass

    def start(self, status, content_type, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Trailer", "X-Cpu-Time, X-Output-Tokens")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()

    def chunk(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def end(self, trailers=()):
        self.wfile.write(b"0\r\n")
        for k, v in trailers:
            self.wfile.write(("%s: %s\r\n" % (k, v)).encode("ascii"))
        self.wfile.write(b"\r\n")
        self.wfile.flush()

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        if self.path == "/reply":
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        req = json.loads(raw)
        assert self.headers["Content-Type"] == "application/json"
        assert self.headers["X-Asp-Connection-Id"] == req["connection_id"]
        tool = req["tool"]
        args = req.get("args") or {}
        state = base64.b64decode(req["state"]) if "state" in req else b""
        started = time.process_time()

        if tool == "tokens":
            self.start(200, "text/plain; charset=utf-8")
            n = int(args.get("n", 3))
            for i in range(n):
                self.chunk("%s%d " % (args.get("prefix", "tok"), i))
                time.sleep(0.002)
            # Reported at the end: CPU time is known only now (SPEC §15.3).
            self.end([("X-Cpu-Time", "2.5"), ("X-Output-Tokens", str(n))])
        elif tool == "count":
            calls = int(state.decode() or "0") + 1
            new_state = base64.b64encode(str(calls).encode()).decode()
            self.start(200, "text/plain", [("X-Asp-State", new_state)])
            self.chunk("calls=%d" % calls)
            used = (time.process_time() - started) * 1000
            self.end([("X-Cpu-Time", "%.3f" % used)])
        elif tool == "echo":
            self.start(200, "application/json")
            self.chunk(raw)
            self.end()
        elif tool == "fail":
            body = b"python says no"
            self.send_response(503)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            body = b"unknown tool"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Function)
    server.daemon_threads = True
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
