"""iperf3's server, with the receiving host's softirq spread over the server's lifetime.

    python3 iperf_server.py --bind ADDR --port PORT [--iperf3 PATH]

Reads the per-CPU counters (cpu_spread) when it starts, runs `iperf3 --server` until
SIGTERM (the harness stops every trial's server that way, once the load is done), then
prints one line `softirq: {...}` with how the counters moved (side "server") plus this
network namespace's UDP receive errors, and exits 0. The harness keeps the line in
raw/<trial>-server.log. The window covers the whole trial: the server's start, the load
and the harness reading its counters; idle time adds little network work.
"""

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import sys

import cpu_spread

SNMP = "/proc/net/snmp"  # per network namespace: the server's own


def udp_errors(text):
    """/proc/net/snmp -> {"udp_rcvbuf_errors": n, "udp_in_errors": n} (absent fields left out)."""
    rows = [line.split() for line in text.splitlines() if line.startswith("Udp:")]
    if len(rows) < 2:
        return {}
    fields = dict(zip(rows[0][1:], rows[1][1:]))
    return {
        key: int(fields[name])
        for key, name in (("udp_rcvbuf_errors", "RcvbufErrors"), ("udp_in_errors", "InErrors"))
        if name in fields
    }


def read_udp_errors():
    try:
        return udp_errors(cpu_spread.read_text(SNMP))
    except cpu_spread.CounterError:
        return {}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--iperf3", default="iperf3")
    args = parser.parse_args(argv)
    iperf3 = shutil.which(args.iperf3)
    if iperf3 is None:
        print(f"iperf_server: {args.iperf3} not found: install iperf3 (provision.packages)", file=sys.stderr)
        return 1
    stopping = []
    # Installed before iperf3 starts, so a SIGTERM that comes early is not lost.
    signal.signal(signal.SIGTERM, lambda number, frame: stopping.append(number))
    signal.signal(signal.SIGINT, lambda number, frame: stopping.append(number))
    try:
        before, udp_before = cpu_spread.snapshot(), read_udp_errors()
    except cpu_spread.CounterError as exc:
        print(f"iperf_server: {exc}", file=sys.stderr)
        return 1
    server = subprocess.Popen(
        [iperf3, "--server", "--bind", args.bind, "--port", str(args.port)], stdin=subprocess.DEVNULL
    )
    while server.poll() is None and not stopping:
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=0.2)
    if stopping and server.poll() is None:
        server.terminate()  # the harness signals the whole group; this covers a TERM sent to us alone
    try:
        code = server.wait(timeout=5)
    except subprocess.TimeoutExpired:
        server.kill()
        code = server.wait()
    try:
        line = cpu_spread.spread(before, cpu_spread.snapshot(), "server")
    except cpu_spread.CounterError as exc:
        print(f"iperf_server: {exc}", file=sys.stderr)
        return 1
    udp_after = read_udp_errors()
    line.update({key: udp_after[key] - udp_before[key] for key in udp_after if key in udp_before})
    print(cpu_spread.LINE_PREFIX + json.dumps(line, sort_keys=True), file=sys.stderr, flush=True)
    if not stopping:
        print(f"iperf_server: iperf3 exited {code} before it was stopped", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
