#!/usr/bin/env python3
"""Process mode with one slot down: how many new connections get no answer within 1 s.

Two scenarios, each on a fresh `sockhost --workers 2` serving libtestkit on loopback:
  hung    one worker is SIGSTOPped; 2 s later (past the 1.5 s heartbeat grace), 100 new
          connections, one after another, each asking "pid" with a 1 s deadline;
  failed  one worker is killed and its replacement cannot start (testkit's factory fails
          while a marker file exists); once the failure is logged, the same 100 connections.
Prints, per scenario, how many of the 100 were answered within 1 s, and by which workers.

Usage: bench/down-slot.py [PROFILE_DIR]   (default target/release; it must hold sockhost
and libtestkit.so, e.g. after `cargo build --release --workspace`).
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

profile = sys.argv[1] if len(sys.argv) > 1 else "target/release"
sockhost = os.path.join(profile, "sockhost")
testkit = os.path.join(profile, "libtestkit.so")


def start(extra):
    proc = subprocess.Popen(
        [sockhost, "--plugin", testkit, "--bind", "127.0.0.1:0", "--workers", "2"] + extra,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    addr = proc.stdout.readline().split("://")[1].strip()
    host, port = addr.rsplit(":", 1)
    log = []
    threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()
    deadline = time.time() + 10
    while len(children(proc.pid)) < 2 and time.time() < deadline:
        time.sleep(0.05)
    return proc, (host, int(port)), log


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def ask_pid(addr):
    try:
        with socket.create_connection(addr, timeout=1) as s:
            s.settimeout(1)
            s.sendall(b"pid")
            start = time.time()
            reply = b""
            while not reply.endswith(b"\n") and time.time() - start < 1:
                chunk = s.recv(64)
                if not chunk:
                    return None
                reply += chunk
            return int(reply) if reply.endswith(b"\n") else None
    except OSError:
        return None


def hundred(addr):
    answers = [ask_pid(addr) for _ in range(100)]
    ok = [a for a in answers if a is not None]
    by = {p: ok.count(p) for p in set(ok)}
    return len(ok), by


def wait_log(log, needle, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(needle in line for line in log):
            return True
        time.sleep(0.05)
    return False


def stop(proc):
    for child in children(proc.pid):
        os.kill(child, signal.SIGKILL)
    proc.kill()
    proc.wait()


proc, addr, log = start([])
hung = children(proc.pid)[0]
os.kill(hung, signal.SIGSTOP)
time.sleep(2)
ok, by = hundred(addr)
print(f"hung:   {ok}/100 answered within 1 s (by worker: {by}; hung worker {hung})")
stop(proc)

marker = tempfile.mktemp(prefix="sockhost-down-slot-")
proc, addr, log = start(["--plugin-opt", f"fail-if-exists={marker}"])
open(marker, "w").close()
victim = children(proc.pid)[0]
os.kill(victim, signal.SIGKILL)
if not wait_log(log, "worker failed to start", 10):
    print("failed: the replacement did not fail as expected")
ok, by = hundred(addr)
print(f"failed: {ok}/100 answered within 1 s (by worker: {by})")
stop(proc)
os.unlink(marker)
