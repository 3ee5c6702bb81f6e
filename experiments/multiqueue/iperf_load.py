"""Run iperf3 once against a server; print its throughput as one json_values line.

    python3 iperf_load.py --host ADDR --port PORT --mode tcp|udp64 --streams N --seconds T
                          [--omit S] [--iperf3 PATH]

The client sends, the server receives: receive-side steering (RPS, RFS) acts on the
server's device, send-side steering (XPS) on this host's.

stdout, one line (the harness's json_values parser):
  tcp    {"value": seconds per GiB received, "units": bytes received, "errors": 0, ...}
  udp64  {"value": seconds per million datagrams delivered, "units": datagrams delivered,
          "errors": 0, "sent_packets": n, "lost_packets": n, ...}
The UDP sender runs unpaced (-b 0) with 64-byte payloads: it always outruns the receiver,
so datagrams are lost in every run and the delivered rate is the throughput. A lost
datagram is therefore not an error of the measurement; the line keeps the loss for the
report.

stderr, one line `softirq: {...}` (cpu_spread.spread): the per-CPU NET_RX/NET_TX softirq
runs and softnet_stat counters over the iperf3 run, on this host (on one machine holding
several network namespaces that is the whole machine, the server's side included).

Exit status 1 with one line on stderr when iperf3 is missing, fails, times out or
reports no throughput.
"""

import argparse
import json
import shutil
import subprocess
import sys

import cpu_spread

GIB = 1 << 30
UDP_PAYLOAD = 64  # bytes per datagram in udp64 mode
MODES = ("tcp", "udp64")


class LoadError(Exception):
    """iperf3 did not give a throughput; the message says why."""


def iperf_argv(iperf3, host, port, mode, streams, seconds, omit):
    # -i 0: no interval reports (the JSON stays small); -J: one JSON document.
    argv = [
        iperf3,
        "--client",
        host,
        "--port",
        str(port),
        "--json",
        "--interval",
        "0",
        "--time",
        str(seconds),
        "--parallel",
        str(streams),
    ]
    if mode == "udp64":
        # No --omit for UDP: iperf3 3.12 counts omitted datagrams as lost.
        return argv + ["--udp", "--bitrate", "0", "--length", str(UDP_PAYLOAD)]
    return argv + (["--omit", str(omit)] if omit else [])


def parse_report(text, mode):
    """iperf3 --json output -> the json_values record of one run."""
    try:
        report = json.loads(text)
    except ValueError:
        raise LoadError(f"iperf3 printed no JSON: {text.strip()[:120]!r}") from None
    if not isinstance(report, dict):
        raise LoadError("iperf3's JSON is not an object")
    if report.get("error"):
        raise LoadError(f"iperf3: {report['error']}")
    end = report.get("end") or {}
    received = end.get("sum_received")
    if not isinstance(received, dict) or "bytes" not in received or "seconds" not in received:
        raise LoadError("iperf3's JSON has no end.sum_received (bytes, seconds)")
    seconds, received_bytes = float(received["seconds"]), int(received["bytes"])
    if seconds <= 0 or received_bytes <= 0:
        raise LoadError(f"the receiver got {received_bytes} bytes in {seconds:g} s")
    test = (report.get("start") or {}).get("test_start") or {}
    wanted = "UDP" if mode == "udp64" else "TCP"
    if test.get("protocol") != wanted:
        raise LoadError(f"iperf3 ran a {test.get('protocol') or 'unknown'} test, not the {wanted} test of mode {mode}")
    cpu = end.get("cpu_utilization_percent") or {}
    record = {
        "mode": mode,
        "streams": test.get("num_streams"),
        "seconds": seconds,
        "bytes_received": received_bytes,
        "gbit_per_second": round(received_bytes * 8 / seconds / 1e9, 4),
        "sender_cpu_percent": cpu.get("host_total"),
        "receiver_cpu_percent": cpu.get("remote_total"),
    }
    if mode == "tcp":
        sent = end.get("sum_sent") or {}
        record.update(
            value=seconds / (received_bytes / GIB), units=received_bytes, errors=0, retransmits=sent.get("retransmits")
        )
        return record
    # The bytes that arrived count the delivered datagrams; iperf3's loss comes from gaps in
    # sequence numbers and is kept beside them.
    if test.get("blksize") != UDP_PAYLOAD:
        raise LoadError(f"iperf3 sent {test.get('blksize')}-byte datagrams, not {UDP_PAYLOAD}")
    delivered = received_bytes // UDP_PAYLOAD
    if delivered == 0:
        raise LoadError(f"no whole datagram arrived ({received_bytes} bytes)")
    sent_packets = int((end.get("sum_sent") or {}).get("packets", 0))
    lost = int(received.get("lost_packets", 0))
    record.update(
        value=seconds / (delivered / 1e6),
        units=delivered,
        errors=0,
        sent_packets=sent_packets,
        lost_packets=lost,
        lost_percent=round(100.0 * lost / sent_packets, 3) if sent_packets else None,
        packets_per_second=round(delivered / seconds, 1),
    )
    return record


def run(args):
    iperf3 = shutil.which(args.iperf3)
    if iperf3 is None:
        raise LoadError(f"{args.iperf3} not found: install iperf3 (provision.packages)")
    argv = iperf_argv(iperf3, args.host, args.port, args.mode, args.streams, args.seconds, args.omit)
    before = cpu_spread.snapshot()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=args.seconds + args.omit + 30, check=False)
    except subprocess.TimeoutExpired:
        raise LoadError(f"iperf3 did not finish within {args.seconds + args.omit + 30} s") from None
    after = cpu_spread.snapshot()
    # iperf3 -J reports its own failures inside the JSON (and exits 1): parse first.
    record = parse_report(done.stdout, args.mode)
    if done.returncode != 0:
        raise LoadError(f"iperf3 exited {done.returncode}: {(done.stderr or done.stdout).strip()[-200:]}")
    return record, cpu_spread.spread_line(before, after, "load")


def positive_int(text):
    number = int(text)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return number


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", required=True, type=positive_int)
    parser.add_argument("--mode", required=True, choices=MODES)
    parser.add_argument("--streams", type=positive_int, default=1)
    parser.add_argument("--seconds", type=positive_int, default=10)
    parser.add_argument("--omit", type=int, default=1, help="TCP: leading seconds left out (slow start)")
    parser.add_argument("--iperf3", default="iperf3")
    args = parser.parse_args(argv)
    try:
        record, spread_line = run(args)
    except (LoadError, cpu_spread.CounterError) as exc:
        print(f"iperf_load: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(record, sort_keys=True), flush=True)
    print(spread_line, file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
