#!/usr/bin/env python3
# usage: halfopen.py PORT SOURCE_ADDR N ASP_BINARY (see README, hostile peers)
# 10,000 half-open connections (bare connects, nothing sent) against an ASP server, from
# source address SRC; then a real client (asp call, from 127.0.0.1) must still connect and
# call. Prints how many half-open sockets the server accepted/kept and what the call did.
import socket, subprocess, sys, time, resource
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
port, src, n, asp = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
socks = []
t0 = time.time()
for i in range(n):
    s = socket.socket()
    s.bind((src, 0))
    s.setblocking(False)
    try:
        s.connect(('127.0.0.1', port))
    except BlockingIOError:
        pass
    socks.append(s)
time.sleep(1.0)
t1 = time.time()
r = subprocess.run([asp, 'call', f'127.0.0.1:{port}', 'echo', '--args', '"hello"', '--json'],
                   capture_output=True, text=True, timeout=60)
dt = time.time() - t1
# How many half-open sockets the server already closed (EOF or reset on read).
closed = 0
for s in socks:
    try:
        if s.recv(1) == b'':
            closed += 1
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
print(f"half_open={n} from {src}; real client from 127.0.0.1: exit {r.returncode} in {dt*1000:.0f} ms; "
      f"half-open already closed by the server after ~{time.time()-t0:.1f} s: {closed}")
print(r.stdout.strip()[:200], r.stderr.strip()[:200])
