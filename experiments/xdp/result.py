#!/usr/bin/env python3
"""Count what the receiver handled in a trial and print it as one json_values line.

usage: result.py --workdir DIR --port PORT --window-seconds W [--load-seconds S]
                 [--metric packet_rate|receiver_cpu]

Runs on the receiving host after the load, while receiver.py still holds its drop point, and
reads WORKDIR/receiver-PORT.json and .window, which receiver.py writes. Packets handled:
  xdp        the sum over CPUs of the program's `counters` map (bpftool map dump)
  nftables   the packets of the rule's counter in table inet harness_xdp
  userspace  the packets udp_sink received (its count file)
Receiver CPU: the time receiver.py's CPUs (the receiving core: the harness pins it to CPU 0)
were not idle over the flood window that receiver.py found, which holds all the receive work
once receiver.py has steered it there (RPS, threaded NAPI) and the sink, and little else on a
machine that runs nothing besides the experiment.

The line is {"value": V, "units": PACKETS, "errors": 0, ...}, with V in seconds per packet:
  packet_rate   W / PACKETS: the sending window per packet handled (1 / packets per second);
                W is udp_flood's --seconds, which it keeps to within one sendmmsg() call. The
                harness's {load_seconds} also counts SSH and process start-up, which took from
                0.4 s to 8 s more on a busy 2-CPU machine: it is recorded (load_seconds), not used.
  receiver_cpu  receiver CPU seconds / PACKETS (1 / packets per second per receiving core)
and, for the record (keys the parser ignores): both numbers (mpps, receiver_ns_per_packet),
the flood window receiver.py measured, the NAPI threads' and the sink's own CPU time, and where
packets went: napi_packets (frames the veth's NAPI polled, ARP included; only while an XDP
program gives it NAPI), xdp_drops (XDP_DROP verdicts as the veth driver counts them),
socket_drops (Udp RcvbufErrors). Exits 1 with a message when nothing was counted, the drop
point is gone, or (receiver_cpu) no flood window was found.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the workload folder
sys.path.insert(0, str(Path(__file__).resolve().parent))

from receiver import (  # noqa: E402  (after the sys.path line above)
    NFT_TABLE,
    PROGRAM_NAME,
    SetupError,
    attached_program,
    cpu_ns,
    device_stats,
    run,
    udp_counters,
)

METRICS = ("packet_rate", "receiver_cpu")
WINDOW_CLOSE_SECONDS = 2.0  # how long to wait for receiver.py to see the flood end


def xdp_packets(state: dict) -> int:
    attached = attached_program(state["device"])
    if not attached or attached.get("id") != state["prog_id"]:
        raise SetupError(
            f"{PROGRAM_NAME} id {state['prog_id']} is no longer attached to {state['device']} (found {attached})"
        )
    program = json.loads(run(["bpftool", "prog", "show", "id", str(state["prog_id"]), "-j"]).stdout)
    for map_id in program.get("map_ids", []):
        dump = json.loads(run(["bpftool", "map", "dump", "id", str(map_id), "-j"]).stdout)
        if dump and "formatted" in dump[0] and "packets" in dump[0]["formatted"]["values"][0]["value"]:
            return sum(cpu["value"]["packets"] for cpu in dump[0]["formatted"]["values"])
    raise SetupError(f"program id {state['prog_id']} has no map with a formatted 'packets' field")


def nftables_packets(state: dict) -> int:
    listing = json.loads(run(["nft", "-j", "list", "table", "inet", NFT_TABLE]).stdout)
    for item in listing["nftables"]:
        for expression in item.get("rule", {}).get("expr", []):
            if "counter" in expression:
                return expression["counter"]["packets"]
    raise SetupError(f"table inet {NFT_TABLE} has no rule with a counter")


def sink_packets(state: dict) -> int:
    for _ in range(100):  # the sink rewrites the line after every batch: read again if torn
        fields = Path(state["count_file"]).read_text().split()
        if len(fields) == 3 and all(field.isdigit() for field in fields):
            return int(fields[0])
    raise SetupError(f"{state['count_file']}: no readable count")


COUNTERS = {"xdp": xdp_packets, "nftables": nftables_packets, "userspace": sink_packets}


def flood_window(state: dict) -> dict | None:
    """receiver.py's flood window once closed (it closes one sample after the flood ends)."""
    path = Path(state["window_file"])
    deadline = time.monotonic() + WINDOW_CLOSE_SECONDS
    while True:
        window = json.loads(path.read_text()) if path.exists() else None
        if (window and not window["open"]) or time.monotonic() > deadline:
            return window
        time.sleep(0.05)


def measure(state: dict, window_seconds: float, metric: str, load_seconds: float | None = None) -> dict:
    window = flood_window(state)
    packets = COUNTERS[state["mode"]](state)
    if packets <= 0:
        raise SetupError(
            f"the {state['mode']} receiver on {state['device']} port {state['port']} counted no "
            "packet: did the flood reach it?"
        )
    if window is None and metric == "receiver_cpu":
        raise SetupError(
            f"receiver.py saw no flood on {state['device']} (rx_packets never rose fast enough), "
            "so the receiver's CPU time over it is unknown"
        )
    if window is not None and window["open"] and metric == "receiver_cpu":
        raise SetupError(f"the flood on {state['device']} had not ended {WINDOW_CLOSE_SECONDS:g} s after the load")
    busy = None
    if window:
        seconds = window["end"]["t"] - window["start"]["t"]
        busy = seconds * len(window["cpus"]) - (window["end"]["idle"] - window["start"]["idle"])
    napi_ns = 0
    for pid, start in state["napi_cpu_ns_start"].items():
        try:
            napi_ns += cpu_ns(int(pid)) - start
        except OSError:
            raise SetupError(
                f"NAPI thread {pid} of {state['device']} is gone: its NAPI was rebuilt during the trial"
            ) from None
    process_ns = cpu_ns(state["sink_pid"]) if state["sink_pid"] else 0
    before = state["device_stats_start"]
    after = device_stats(state["device"]) if before else {}

    def queue_delta(suffix):  # summed over the rx queues of `ethtool -S`
        return sum(
            after[name] - before.get(name, 0)
            for name in after
            if name.startswith("rx_queue_") and name.endswith(suffix)
        )

    udp = udp_counters()
    value = window_seconds / packets if metric == "packet_rate" else busy / packets
    return {
        "value": value,
        "units": packets,
        "errors": 0,
        "metric": metric,
        "mode": state["mode"],
        "window_seconds": window_seconds,
        "load_seconds": load_seconds,
        "mpps": packets / window_seconds / 1e6,
        "receiver_cpu_seconds": None if busy is None else round(busy, 6),
        "receiver_ns_per_packet": None if busy is None else round(busy / packets * 1e9, 1),
        "receiver_cpus": state["cpus"],
        "flood_seconds_seen": None if window is None else round(window["end"]["t"] - window["start"]["t"], 3),
        "floods_seen": None if window is None else window["floods"],
        "napi_cpu_seconds": round(napi_ns / 1e9, 6),
        "sink_cpu_seconds": round(process_ns / 1e9, 6),
        "napi_packets": queue_delta("_xdp_packets") if before else None,
        "xdp_drops": queue_delta("_xdp_drops") if before else None,
        "socket_drops": udp.get("RcvbufErrors", 0) - state["udp_start"].get("RcvbufErrors", 0),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="result.py", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--window-seconds", type=float, required=True, help="how long the flood sent")
    parser.add_argument("--load-seconds", type=float, help="the load's wall time, for the record")
    parser.add_argument("--metric", choices=METRICS, default="packet_rate")
    args = parser.parse_args(argv)
    if not args.window_seconds > 0:
        parser.error(f"--window-seconds {args.window_seconds}: give a positive number of seconds")
    state_file = Path(args.workdir) / f"receiver-{args.port}.json"
    try:
        state = json.loads(state_file.read_text())
        print(json.dumps(measure(state, args.window_seconds, args.metric, args.load_seconds)))
    except FileNotFoundError:
        print(f"result: {state_file} is missing: receiver.py is not running for port {args.port}", file=sys.stderr)
        return 1
    except (SetupError, OSError, ValueError, KeyError) as exc:
        print(f"result: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
