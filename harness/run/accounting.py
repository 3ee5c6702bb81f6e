"""What a trial used and where it could run: the load generator's CPU time (reported by
the shell that waits for it), counter deltas between two /proc readings, and the
per-machine placement of the trial's processes that the validity gates read."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path

from harness.cpuset import CpuSet, placed
from harness.hosts.inventory import Host
from harness.hosts.remote import HostSession, record_started
from harness.run.gates import TICK_SECONDS

LOAD_CPU_MARK = "harness-load-cpu:"


def load_script(argv: list[str], pidfile: str, cpus: str | None, timeout: float, journal: str | None = None) -> str:
    """The shell script that runs the load generator once, bounded by `timeout`, and
    appends its CPU time to stderr."""
    # The pid file names `timeout`, which leads the load's process group. The shell
    # waits for it and then reports its children's CPU time (`times`, second line)
    # through a file: `times` in a pipe or $(...) would run in a subshell and see none.
    command = ["timeout", "--kill-after=5", f"{timeout:g}"] + (["taskset", "-c", cpus] if cpus else []) + argv
    pid, cpu = shlex.quote(pidfile), shlex.quote(pidfile + ".times")
    return (
        f"{shlex.join(command)} &\npid=$!\necho $pid >{pid}\n{record_started(journal)}wait $pid\nrc=$?\ntimes >{cpu}\n"
        f'echo "{LOAD_CPU_MARK} $(tail -n 1 {cpu})" >&2\nexit $rc'
    )


_TIMES = re.compile(r"([0-9]+)m([0-9.]+)s")


def split_load_cpu(stderr: str) -> tuple[str, float | None]:
    """Take the CPU line load_script appends off the load generator's stderr."""
    lines = stderr.rstrip("\n").split("\n")
    if not lines or not lines[-1].startswith(LOAD_CPU_MARK):
        return stderr, None
    clock = _TIMES.findall(lines[-1])
    rest = "\n".join(lines[:-1])
    if len(clock) != 2:
        return rest, None
    return (rest + "\n" if rest else ""), sum(int(minutes) * 60 + float(seconds) for minutes, seconds in clock)


def counter_changes(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Counter deltas; every X_ticks becomes X_seconds. Gauges (cpus, ticks per second) are left out."""
    tick = after.get("ticks_per_second", 100.0)
    changes = {}
    for name in after:
        if name not in before or name in ("cpus", "ticks_per_second"):
            continue
        if name.endswith("_ticks"):
            changes[name.removesuffix("_ticks") + "_seconds"] = (after[name] - before[name]) / tick
        else:
            changes[name] = after[name] - before[name]
    return changes


_LOCAL_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def placement(
    sessions: Mapping[str, HostSession],
    restriction: CpuSet | None,
    roles: Iterable[tuple[str, Host, CpuSet | None]],
) -> dict[str, dict]:
    """Where the trial's processes could run, per machine: hosts with one kernel boot id are one
    machine (lab hosts are namespaces of this one), so their CPUs and counters are shared.
    `roles` holds (role, host, pinned CPUs) for each process."""
    try:
        local = _LOCAL_BOOT_ID.read_text().strip()
    except OSError:
        local = None
    machines: dict[str, dict] = {}
    for role, host, pinned in roles:
        boot = sessions[host.name].boot_id()
        cpus = placed(pinned, restriction)
        machine = machines.setdefault(boot, {"host": host.name, "hosts": [], "roles": [], "cpus": []})
        machine["hosts"] = list(dict.fromkeys([*machine["hosts"], host.name]))
        machine["roles"].append(role)
        # One unpinned process can run anywhere: the machine's CPUs are then all the trial's.
        machine["cpus"] = None if cpus is None or machine["cpus"] is None else sorted({*machine["cpus"], *cpus})
        machine["harness"] = boot == local
    return {machine.pop("host"): machine for machine in machines.values()}


def add_fake_steal(host_changes: dict, placement: dict, share: float | None, wall: float) -> None:
    """The test seam (TrialSetting.fake_steal): add `share` of the window as steal on every CPU
    the trial could use, machine-wide too, as if the hypervisor had taken it; plus one counter
    tick per CPU, which the steal gate allows for as the counters' resolution (gates.py)."""
    if not share:
        return
    for host, machine in placement.items():
        changes = host_changes[host]
        cpus = machine["cpus"]
        if cpus is None:
            cpus = [int(key[3:].split("_")[0]) for key in changes if key.startswith("cpu") and "_steal_" in key]
        stolen = share * wall + TICK_SECONDS
        for cpu in cpus:
            key = f"cpu{cpu}_steal_seconds"
            changes[key] = changes.get(key, 0.0) + stolen
        changes["steal_seconds"] = changes.get("steal_seconds", 0.0) + stolen * len(cpus)


def own_cpu_seconds() -> float:
    """This process's CPU time so far (user + system)."""
    times = os.times()
    return times.user + times.system
