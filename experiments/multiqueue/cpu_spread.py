"""Where the kernel did its network work: per-CPU softirq and backlog counters.

Read /proc/softirqs (NET_RX, NET_TX per CPU) and /proc/net/softnet_stat (packets each
CPU's backlog processed, dropped, squeezed, and the RPS IPIs it received) before and
after a load, and describe how the work spread over the CPUs. Both files count for the
whole machine, not for one network namespace. Standard library only: it runs on the
host's own Python.
"""

import json
import os
import socket
import time

SOFTIRQS = "/proc/softirqs"
SOFTNET_STAT = "/proc/net/softnet_stat"
RPS_SOCK_FLOW_ENTRIES = "/proc/sys/net/core/rps_sock_flow_entries"
LINE_PREFIX = "softirq: "  # what a reader of raw/*.err and server logs looks for

# Columns of /proc/net/softnet_stat (net/core/net-procfs.c, softnet_seq_show), all hex.
SOFTNET_COLUMNS = {"processed": 0, "dropped": 1, "time_squeeze": 2, "received_rps": 9, "flow_limit": 10}
SOFTNET_CPU_COLUMN = 12  # the CPU's number; older kernels leave it out (lines then follow the online CPUs)


class CounterError(Exception):
    """A counter file is missing or not in the format this module knows."""


def parse_softirqs(text):
    """/proc/softirqs -> ([cpu numbers], {"NET_RX": [count per CPU], ...})."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].split() or not all(word.startswith("CPU") for word in lines[0].split()):
        raise CounterError(f"{SOFTIRQS}: no 'CPU0 CPU1 ...' header")
    cpus = [int(word[3:]) for word in lines[0].split()]
    counts = {}
    for line in lines[1:]:
        name, _, rest = line.partition(":")
        words = rest.split()
        if len(words) < len(cpus) or not all(word.isdigit() for word in words[: len(cpus)]):
            raise CounterError(f"{SOFTIRQS}: line {name.strip()!r} has no count for each of {len(cpus)} CPUs")
        counts[name.strip()] = [int(word) for word in words[: len(cpus)]]
    for name in ("NET_RX", "NET_TX"):
        if name not in counts:
            raise CounterError(f"{SOFTIRQS}: no {name} line")
    return cpus, counts


def parse_softnet_stat(text):
    """/proc/net/softnet_stat -> {cpu number: {"processed": n, "dropped": n, ...}}."""
    per_cpu = {}
    for position, line in enumerate(line for line in text.splitlines() if line.strip()):
        words = line.split()
        try:
            values = [int(word, 16) for word in words]
        except ValueError:
            raise CounterError(f"{SOFTNET_STAT}: line {position + 1} is not hex numbers: {line[:60]!r}") from None
        if len(values) <= max(SOFTNET_COLUMNS.values()):
            raise CounterError(
                f"{SOFTNET_STAT}: line {position + 1} has {len(values)} columns, "
                f"expected at least {max(SOFTNET_COLUMNS.values()) + 1}"
            )
        cpu = values[SOFTNET_CPU_COLUMN] if len(values) > SOFTNET_CPU_COLUMN else position
        per_cpu[cpu] = {name: values[column] for name, column in SOFTNET_COLUMNS.items()}
    if not per_cpu:
        raise CounterError(f"{SOFTNET_STAT}: empty")
    return per_cpu


def read_text(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError as exc:
        raise CounterError(f"{path}: {exc.strerror or exc}") from None


def snapshot():
    """The counters now, with the monotonic time they were read at."""
    cpus, softirqs = parse_softirqs(read_text(SOFTIRQS))
    return {
        "time": time.monotonic(),
        "cpus": cpus,
        "softirqs": softirqs,
        "softnet": parse_softnet_stat(read_text(SOFTNET_STAT)),
    }


def shares(counts):
    total = sum(counts)
    return [round(count / total, 4) if total else None for count in counts]


def spread(before, after, side):
    """How the counters moved between two snapshots, per CPU, as one JSON-ready object.

    net_rx: NET_RX softirq runs per CPU; processed: packets each CPU's backlog handed to
    the stack (with RPS, on the CPU RPS chose); received_rps: RPS IPIs a CPU received;
    dropped: packets dropped because a CPU's backlog was full. *_share: each CPU's part
    of the total (null when nothing moved); *_max_share: the busiest CPU's part, 1.0 when
    one CPU did all of it and 1/CPUs when the work was even.
    """
    if before["cpus"] != after["cpus"]:
        raise CounterError(f"the CPUs in {SOFTIRQS} changed during the load: {before['cpus']} -> {after['cpus']}")
    cpus = after["cpus"]
    result = {
        "side": side,
        "host": socket.gethostname(),
        "window_seconds": round(after["time"] - before["time"], 3),
        "cpus": cpus,
    }
    for name, key in (("NET_RX", "net_rx"), ("NET_TX", "net_tx")):
        result[key] = [now - then for now, then in zip(after["softirqs"][name], before["softirqs"][name])]
    for field in SOFTNET_COLUMNS:
        result[field] = [
            after["softnet"].get(cpu, {}).get(field, 0) - before["softnet"].get(cpu, {}).get(field, 0) for cpu in cpus
        ]
    for key in ("net_rx", "processed"):
        result[f"{key}_share"] = shares(result[key])
        known = [share for share in result[f"{key}_share"] if share is not None]
        result[f"{key}_max_share"] = max(known) if known else None
    # RFS steers only when this global table exists and is non-zero; inside a network
    # namespace other than the first the file is absent (null here).
    result["rps_sock_flow_entries"] = (
        read_text(RPS_SOCK_FLOW_ENTRIES).strip() if os.path.exists(RPS_SOCK_FLOW_ENTRIES) else None
    )
    return result


def spread_line(before, after, side):
    return LINE_PREFIX + json.dumps(spread(before, after, side), sort_keys=True)
