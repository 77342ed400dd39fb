"""Smoke test of sockhost.exe under wine: start it in thread mode with echo.dll on a free
loopback port, echo a line over TCP from Linux, then stop it. Exits non-zero with a message
on any failure; every wait is bounded."""
import os, re, socket, subprocess, sys, time

exe, plugin = sys.argv[1], sys.argv[2]
proc = subprocess.Popen(["wine", exe, "--plugin", plugin, "--bind", "127.0.0.1:0"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
deadline = time.monotonic() + 120
try:
    line = proc.stdout.readline()  # wine's first start of a prefix can take a while
    m = re.match(r"listening on tcp://([\d.]+):(\d+)", line)
    if not m:
        sys.exit(f"smoke: expected a 'listening on' line, got {line!r}; stderr:\n{proc.stderr.read() if proc.poll() is not None else ''}")
    with socket.create_connection((m[1], int(m[2])), timeout=30) as s:
        s.sendall(b"hello from linux\n")
        got = b""
        while not got.endswith(b"\n") and time.monotonic() < deadline:
            chunk = s.recv(100)
            if not chunk:
                break
            got += chunk
    if got != b"hello from linux\n":
        sys.exit(f"smoke: echo answered {got!r}")
    print("smoke: echo.dll answered over TCP under wine")
finally:
    proc.kill()
    proc.wait(timeout=30)
