"""Load-generator output -> measurements -> pyperf files and a pandas table.

A parser turns one run of a load generator's raw output into values, each the
metric in seconds per unit (per transfer, per request, per call), and counts the
units and the errors it saw. The first `warmup_values` of each trial are
warm-ups: kept in the pyperf file as warm-ups, left out of the analysis.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyperf

from harness.errors import TrialError
from harness.hosts.remote import HostSession
from harness.results.store import GIB, Trial
from harness.run.execute import TrialOutput


@dataclass(frozen=True)
class LoadResult:
    seconds: tuple[float, ...]  # the metric, seconds per unit, one value per measurement
    bytes: tuple[int, ...]
    client_cpu_seconds: float | None
    units: int = 0  # requests, calls or transfers done
    errors: int = 0  # of those, failed ones (socket errors, bad status, wrong answers)


def _json_records(text: str, source: str, kind: str, read) -> float | None:
    """Call read(record) for each JSON line but {"client_cpu_seconds"}, whose value is returned."""
    client_cpu = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if "client_cpu_seconds" in record:
                client_cpu = float(record["client_cpu_seconds"])
            else:
                read(record)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise TrialError(f"{source}:{number}: not a {kind} line: {line[:80]!r}") from None
    return client_cpu


def parse_fetch_json(text: str, source: str) -> LoadResult:
    """fetch's output: {"seconds", "bytes"} per transfer, then {"client_cpu_seconds"}."""
    seconds, sizes = [], []

    def read(record):
        seconds.append(float(record["seconds"]))
        sizes.append(int(record["bytes"]))

    client_cpu = _json_records(text, source, "fetch_json", read)
    if not seconds:
        raise TrialError(f"{source}: the load generator reported no transfers")
    if any(value <= 0 for value in seconds):
        raise TrialError(f"{source}: a transfer time is not positive")
    return LoadResult(tuple(seconds), tuple(sizes), client_cpu, units=len(seconds))


def parse_json_values(text: str, source: str) -> LoadResult:
    """A client of our own: {"value": seconds per unit, "units": n, "errors": n} per
    line, optionally {"client_cpu_seconds": s}."""
    values, units, errors = [], [], []

    def read(record):
        values.append(float(record["value"]))
        units.append(int(record.get("units", 1)))
        errors.append(int(record.get("errors", 0)))

    client_cpu = _json_records(text, source, "json_values", read)
    return _checked(LoadResult(tuple(values), (), client_cpu, units=sum(units), errors=sum(errors)), source)


_WRK_RATE = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.M)
_WRK_TOTAL = re.compile(r"^\s*([0-9]+) requests in ([0-9.]+)(us|ms|s|m)", re.M)
_WRK_SOCKET = re.compile(r"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)")
_WRK_STATUS = re.compile(r"Non-2xx or 3xx responses: ([0-9]+)")


def parse_wrk(text: str, source: str) -> LoadResult:
    """wrk's summary: one value, seconds per request = 1 / Requests/sec."""
    rate, total = _WRK_RATE.search(text), _WRK_TOTAL.search(text)
    if not rate or not total:
        raise TrialError(f"{source}: no 'Requests/sec' and 'N requests in' lines in wrk's output")
    socket = _WRK_SOCKET.search(text)
    status = _WRK_STATUS.search(text)
    errors = (sum(int(n) for n in socket.groups()) if socket else 0) + (int(status.group(1)) if status else 0)
    requests = int(total.group(1))
    if float(rate.group(1)) <= 0 or requests == 0:
        raise TrialError(f"{source}: wrk completed no requests")
    return LoadResult((1.0 / float(rate.group(1)),), (), None, units=requests, errors=errors)


_H2LOAD_RATE = re.compile(r"^finished in [0-9.]+\w*, ([0-9.]+) req/s", re.M)
_H2LOAD_REQUESTS = re.compile(
    r"^requests: ([0-9]+) total, [0-9]+ started, ([0-9]+) done, ([0-9]+) succeeded, "
    r"([0-9]+) failed, ([0-9]+) errored",
    re.M,
)


def parse_h2load(text: str, source: str) -> LoadResult:
    """h2load's summary: one value, seconds per request = 1 / req/s."""
    rate, requests = _H2LOAD_RATE.search(text), _H2LOAD_REQUESTS.search(text)
    if not rate or not requests:
        raise TrialError(f"{source}: no 'finished in' and 'requests:' lines in h2load's output")
    total, _, succeeded, failed, errored = (int(n) for n in requests.groups())
    if float(rate.group(1)) <= 0 or succeeded == 0:
        raise TrialError(f"{source}: h2load completed no requests")
    return LoadResult((1.0 / float(rate.group(1)),), (), None, units=total, errors=failed + errored)


def parse_redis_benchmark(text: str, source: str) -> LoadResult:
    """redis-benchmark --csv: a header row, then one row per test; a value per row = 1 / rps."""
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    if len(rows) < 2 or [cell.strip().lower() for cell in rows[0][:2]] != ["test", "rps"]:
        raise TrialError(f'{source}: not redis-benchmark --csv output (a "test","rps" header, then rows)')
    values = []
    for number, row in enumerate(rows[1:], 2):
        try:
            rate = float(row[1])
        except (IndexError, ValueError):
            raise TrialError(f"{source}:{number}: no requests per second in {','.join(row)[:80]!r}") from None
        if rate <= 0:
            raise TrialError(f"{source}:{number}: {row[0]} reports {rate:g} requests per second")
        values.append(1.0 / rate)
    return LoadResult(tuple(values), (), None)


def parse_iperf3_json(text: str, source: str) -> LoadResult:
    """`iperf3 --json` (TCP): one value, seconds per GiB received."""
    try:
        report = json.loads(text)
    except ValueError:
        raise TrialError(f"{source}: not iperf3 --json output") from None
    if not isinstance(report, dict) or report.get("error"):
        raise TrialError(f"{source}: iperf3 failed: {report.get('error') if isinstance(report, dict) else report}")
    received = (report.get("end") or {}).get("sum_received") or {}
    moved, seconds = received.get("bytes"), received.get("seconds")
    if not moved or not seconds:
        raise TrialError(f"{source}: iperf3 reports no bytes received")
    return LoadResult((seconds / (moved / GIB),), (int(moved),), None, units=1)


def _checked(result: LoadResult, source: str) -> LoadResult:
    if not result.seconds:
        raise TrialError(f"{source}: the load generator reported no values")
    if any(not value > 0 for value in result.seconds):
        raise TrialError(f"{source}: a value is not a positive number")
    return result


PARSERS = {
    "fetch_json": parse_fetch_json,
    "json_values": parse_json_values,
    "wrk": parse_wrk,
    "h2load": parse_h2load,
    "redis_benchmark": parse_redis_benchmark,
    "iperf3_json": parse_iperf3_json,
}


def measure(output: TrialOutput, parser: str, warmup_values: int) -> Trial:
    """Parse every run of the trial's load generator; their values concatenate in order."""
    results = [
        PARSERS[parser](stdout, f"raw/{name}")
        for stdout, name in zip(output.load_stdouts, output.load_files, strict=True)
    ]
    seconds = tuple(value for result in results for value in result.seconds)
    shown = f"raw/{output.load_files[0]}"
    if len(seconds) <= warmup_values:
        raise TrialError(
            f"{shown}: {len(seconds)} values but warmup_values is {warmup_values}: no measured value is left"
        )
    reported_cpu = [r.client_cpu_seconds for r in results if r.client_cpu_seconds is not None]
    # The client's own account of its CPU if it gives one, else what the harness measured around it.
    client_cpu = sum(reported_cpu) if reported_cpu else output.load_cpu_seconds
    return Trial(
        variant=output.trial.variant,
        repetition=output.trial.repetition,
        order=output.trial.index,
        condition=output.trial.condition.label,
        values=seconds[warmup_values:],
        warmups=seconds[:warmup_values],
        bytes_moved=sum(sum(r.bytes) for r in results),
        server_cpu_seconds=output.server_cpu_seconds,
        client_cpu_seconds=client_cpu,
        harness_cpu_seconds=output.harness_cpu_seconds,
        wall_seconds=output.wall_seconds,
        load_file=output.load_files[0],
        host_changes=output.host_changes,
        host_cpus=output.host_cpus,
        units=sum(r.units for r in results),
        errors=sum(r.errors for r in results),
        placement=output.placement,
        setup_seconds=output.setup_seconds,
        teardown_seconds=output.teardown_seconds,
    )


def values_frame(measurements: list[Trial]) -> pd.DataFrame:
    """Columns variant, condition, run, value, order: measured values only (no warm-ups)."""
    rows = [
        {"variant": m.variant, "condition": m.condition, "run": m.repetition, "value": value, "order": m.order}
        for m in measurements
        for value in m.values
    ]
    return pd.DataFrame(rows, columns=["variant", "condition", "run", "value", "order"])


def costs_frame(measurements: list[Trial]) -> pd.DataFrame:
    """Per trial CPU costs: the server's CPU per GiB is where sendfile saves work."""
    rows = [
        {
            "variant": m.variant,
            "condition": m.condition,
            "run": m.repetition,
            "order": m.order,
            "server_cpu_seconds": m.server_cpu_seconds,
            "server_cpu_s_per_gib": m.server_cpu_seconds_per_gib,
            "units": m.units,
            "errors": m.errors,
            "server_cpu_s_per_unit": m.server_cpu_seconds_per_unit,
            "client_cpu_seconds": m.client_cpu_seconds,
            "harness_cpu_seconds": m.harness_cpu_seconds,
            "wall_seconds": m.wall_seconds,
            # The whole host's busy CPU (user, nice, system, irq, softirq) over the window, per host;
            # the busy-host gate counts the trial's CPUs only (the gate table).
            "host_busy_cpu_seconds": ";".join(
                f"{host}={changes['busy_seconds']:.3f}"
                for host, changes in m.host_changes.items()
                if "busy_seconds" in changes
            ),
        }
        for m in measurements
    ]
    return pd.DataFrame(
        rows,
        columns=[
            "variant",
            "condition",
            "run",
            "order",
            "server_cpu_seconds",
            "server_cpu_s_per_gib",
            "units",
            "errors",
            "server_cpu_s_per_unit",
            "client_cpu_seconds",
            "harness_cpu_seconds",
            "wall_seconds",
            "host_busy_cpu_seconds",
        ],
    )


def write_pyperf(measurements: list[Trial], variant: str, benchmark_name: str, path: Path, condition: str = "") -> None:
    """One pyperf.Run per repetition; every variant's file uses the same benchmark name,
    so `python -m pyperf compare_to baseline.json treatment.json` pairs them."""
    runs = []
    own = (m for m in measurements if m.variant == variant and m.condition == condition)
    for m in sorted(own, key=lambda m: m.repetition):
        metadata = {
            "name": benchmark_name,
            "unit": "second",
            "loops": 1,
            "variant": variant,
            "repetition": m.repetition,
            **({"condition": condition} if condition else {}),
            "server_cpu_seconds": m.server_cpu_seconds,
            "bytes_moved": m.bytes_moved,
        }
        if m.client_cpu_seconds is not None:
            metadata["client_cpu_seconds"] = m.client_cpu_seconds
        runs.append(
            pyperf.Run(list(m.values), warmups=[(1, w) for w in m.warmups], metadata=metadata, collect_metadata=False)
        )
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
