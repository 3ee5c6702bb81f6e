"""Load-generator output -> measurements -> pyperf files and a pandas table.

A parser turns one trial's raw output into transfer times. The first
`warmup_values` of each trial are warm-ups: kept in the pyperf file as warm-ups,
left out of the analysis.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyperf

from harness.errors import TrialError
from harness.execute import TrialOutput
from harness.remote import HostSession

GIB = 1 << 30


@dataclass(frozen=True)
class LoadResult:
    seconds: tuple[float, ...]
    bytes: tuple[int, ...]
    client_cpu_seconds: float | None


@dataclass(frozen=True)
class Measurement:
    """One trial's numbers: warm-ups split off, CPU costs attached."""

    variant: str
    repetition: int
    order: int  # the trial's position in the run
    values: tuple[float, ...]
    warmups: tuple[float, ...]
    bytes_moved: int
    server_cpu_seconds: float
    client_cpu_seconds: float | None
    harness_cpu_seconds: float
    wall_seconds: float
    load_file: str
    host_changes: dict
    host_cpus: dict

    @property
    def server_cpu_seconds_per_gib(self) -> float:
        return self.server_cpu_seconds / (self.bytes_moved / GIB) if self.bytes_moved else float("nan")


def parse_fetch_json(text: str, source: str) -> LoadResult:
    """fetch's output: {"seconds", "bytes"} per transfer, then {"client_cpu_seconds"}."""
    seconds, sizes, client_cpu = [], [], None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if "client_cpu_seconds" in record:
                client_cpu = float(record["client_cpu_seconds"])
            else:
                seconds.append(float(record["seconds"]))
                sizes.append(int(record["bytes"]))
        except (ValueError, KeyError, TypeError):
            raise TrialError(f"{source}:{number}: not a fetch_json line: {line[:80]!r}") from None
    if not seconds:
        raise TrialError(f"{source}: the load generator reported no transfers")
    if any(value <= 0 for value in seconds):
        raise TrialError(f"{source}: a transfer time is not positive")
    return LoadResult(tuple(seconds), tuple(sizes), client_cpu)


PARSERS = {"fetch_json": parse_fetch_json}


def measure(output: TrialOutput, parser: str, warmup_values: int) -> Measurement:
    result = PARSERS[parser](output.load_stdout, f"raw/{output.load_file}")
    if len(result.seconds) <= warmup_values:
        raise TrialError(
            f"raw/{output.load_file}: {len(result.seconds)} values but warmup_values is {warmup_values}: "
            "no measured value is left"
        )
    return Measurement(
        variant=output.trial.variant, repetition=output.trial.repetition, order=output.trial.index,
        values=result.seconds[warmup_values:], warmups=result.seconds[:warmup_values],
        bytes_moved=sum(result.bytes), server_cpu_seconds=output.server_cpu_seconds,
        client_cpu_seconds=result.client_cpu_seconds, harness_cpu_seconds=output.harness_cpu_seconds,
        wall_seconds=output.wall_seconds, load_file=output.load_file,
        host_changes=output.host_changes, host_cpus=output.host_cpus,
    )


def values_frame(measurements: list[Measurement]) -> pd.DataFrame:
    """Columns variant, run, value, order: measured values only (no warm-ups)."""
    rows = [
        {"variant": m.variant, "run": m.repetition, "value": value, "order": m.order}
        for m in measurements for value in m.values
    ]
    return pd.DataFrame(rows, columns=["variant", "run", "value", "order"])


def gates(m: Measurement, load_cpu_limit: float, steal_limit: float) -> list[dict]:
    """Checks that say whether a trial measured what it meant to measure."""
    results = []

    def gate(name, value, limit, passed, detail):
        results.append({"variant": m.variant, "run": m.repetition, "gate": name, "value": value, "limit": limit,
                        "passed": bool(passed), "detail": detail})

    wall = m.wall_seconds or float("nan")
    server_share = m.server_cpu_seconds / wall
    if m.client_cpu_seconds is not None:
        client_share = m.client_cpu_seconds / wall
        saturated = client_share >= load_cpu_limit and server_share < load_cpu_limit
        gate("load generator CPU", client_share, load_cpu_limit, not saturated,
             f"load generator {client_share:.0%} of a core, server {server_share:.0%}: "
             + ("the load generator, not the server, was measured" if saturated else "the server set the pace"))
    swapped = sum(changes.get("pswpin", 0) + changes.get("pswpout", 0) for changes in m.host_changes.values())
    gate("swap", swapped, 0, swapped == 0, f"{swapped:g} pages swapped in or out during the load")
    steal_share = max((changes.get("steal_seconds", 0.0) / (wall * m.host_cpus.get(host, 1.0))
                       for host, changes in m.host_changes.items()), default=0.0)
    gate("CPU steal", steal_share, steal_limit, steal_share <= steal_limit,
         f"{steal_share:.1%} of the CPU time was stolen by the hypervisor")
    throttled = [changes[key] for changes in m.host_changes.values()
                 for key in ("thermal_throttle_count", "cgroup_nr_throttled") if key in changes]
    if throttled:
        gate("throttling", sum(throttled), 0, sum(throttled) == 0, f"{sum(throttled):g} throttling events")
    return results


def costs_frame(measurements: list[Measurement]) -> pd.DataFrame:
    """Per trial CPU costs: the server's CPU per GiB is where sendfile saves work."""
    rows = [
        {"variant": m.variant, "run": m.repetition, "order": m.order, "server_cpu_seconds": m.server_cpu_seconds,
         "server_cpu_s_per_gib": m.server_cpu_seconds_per_gib, "client_cpu_seconds": m.client_cpu_seconds,
         "harness_cpu_seconds": m.harness_cpu_seconds, "wall_seconds": m.wall_seconds,
         # The whole host's busy CPU (user, nice, system, irq, softirq) over the window, per host.
         "host_busy_cpu_seconds": ";".join(f"{host}={changes['busy_seconds']:.3f}"
                                           for host, changes in m.host_changes.items() if "busy_seconds" in changes)}
        for m in measurements
    ]
    return pd.DataFrame(rows, columns=["variant", "run", "order", "server_cpu_seconds", "server_cpu_s_per_gib",
                                       "client_cpu_seconds", "harness_cpu_seconds", "wall_seconds",
                                       "host_busy_cpu_seconds"])


def write_pyperf(measurements: list[Measurement], variant: str, benchmark_name: str, path: Path) -> None:
    """One pyperf.Run per repetition; every variant's file uses the same benchmark name,
    so `python -m pyperf compare_to baseline.json treatment.json` pairs them."""
    runs = []
    for m in sorted((m for m in measurements if m.variant == variant), key=lambda m: m.repetition):
        metadata = {
            "name": benchmark_name, "unit": "second", "loops": 1,
            "variant": variant, "repetition": m.repetition,
            "server_cpu_seconds": m.server_cpu_seconds, "bytes_moved": m.bytes_moved,
        }
        if m.client_cpu_seconds is not None:
            metadata["client_cpu_seconds"] = m.client_cpu_seconds
        runs.append(pyperf.Run(list(m.values), warmups=[(1, w) for w in m.warmups],
                               metadata=metadata, collect_metadata=False))
    if runs:
        pyperf.Benchmark(runs).dump(str(path), replace=True)


def describe_link(client: HostSession, server_address: str) -> str:
    """The device a client reaches the server through, with its MTU, queues and qdiscs."""
    script = f"""
dev=$(ip -o route get {shlex.quote(server_address)} | sed -n 's/.* dev \\([^ ]*\\).*/\\1/p')
[ -n "$dev" ] || {{ echo "no route"; exit 0; }}
mtu=$(cat /sys/class/net/$dev/mtu)
rx=$(ls -d /sys/class/net/$dev/queues/rx-* 2>/dev/null | wc -l)
tx=$(ls -d /sys/class/net/$dev/queues/tx-* 2>/dev/null | wc -l)
qdisc=$(tc qdisc show dev $dev | sed 's/ refcnt [0-9]*//' | paste -sd ';' -)
echo "$dev, mtu $mtu, $rx rx / $tx tx queues, qdisc: $qdisc"
"""
    return client.shell(script, timeout=30, shown="describe link").stdout.strip()
