#!/usr/bin/env python3
"""Send a known workload to a statsd server with the real PyPI `statsd` client.

Used by tests/tests/statsd.rs. Usage:

    statsd_send.py PORT totals          # the mixed workload whose totals the test checks
    statsd_send.py PORT count NAME N    # N increments of counter NAME, in pipelines
    statsd_send.py PORT final           # three single-metric datagrams (for the stop test)

Prints the number of datagrams sent. The client samples randomly when given a rate below 1;
here `random.random` is pinned to 0 so that every sampled call is sent (with its `|@rate`)
and the server's scaled total is known exactly.
"""

import sys

try:
    import statsd
    import statsd.client.base
except ImportError:
    sys.exit("python module statsd missing: pip install statsd (.ci/run installs it)")

# Every sampled call is sent (see the docstring).
statsd.client.base.random.random = lambda: 0.0


class Counting(statsd.StatsClient):
    """A StatsClient that counts the datagrams it sends."""

    sent = 0

    def _send(self, data):
        Counting.sent += 1
        super()._send(data)


def main():
    port, scenario, *rest = sys.argv[1:]
    # A large maxudpsize keeps each pipeline in one datagram (so one flush interval).
    client = Counting("127.0.0.1", int(port), maxudpsize=8192)
    if scenario == "totals":
        for _ in range(10):
            with client.pipeline() as pipe:
                for _ in range(100):
                    pipe.incr("hits")
        for _ in range(200):
            client.incr("sampled", rate=0.5)  # counts 2 each at the server
        client.decr("hits", 0)  # a zero change: still 1000
        client.gauge("temp", 10)
        client.gauge("temp", 5, delta=True)
        client.gauge("temp", -3, delta=True)
        client.gauge("neg", -4)  # the client sends 0|g then -4|g
        with client.pipeline() as pipe:
            for user in ["ann", "bob", "ann", "cid"]:
                pipe.set("users", user)
        with client.pipeline() as pipe:
            for ms in range(1, 21):
                pipe.timing("db", ms)
    elif scenario == "count":
        name, n = rest[0], int(rest[1])
        for start in range(0, n, 100):
            with client.pipeline() as pipe:
                for _ in range(min(100, n - start)):
                    pipe.incr(name)
    elif scenario == "final":
        client.incr("final", 7)
        client.gauge("final_gauge", 42)
        client.timing("final_timer", 5)
    else:
        sys.exit(f"unknown scenario {scenario!r}")
    print(Counting.sent)


if __name__ == "__main__":
    main()
