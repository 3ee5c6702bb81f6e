"""Validity gates: the checks that say whether a trial measured what it meant to
measure (the load generator not saturated, few errors, no swap, little CPU steal or
foreign work on the trial's CPUs, no throttling), and each trial's status once reruns
are counted (valid, replaced, excluded)."""

from __future__ import annotations

from harness.results.store import Trial

TICK_SECONDS = 0.01  # /proc/stat's unit: 1/USER_HZ, 100 on Linux whatever the kernel's HZ


def gates(
    m: Trial,
    load_cpu_limit: float,
    steal_limit: float,
    error_limit: float = 0.01,
    has_server: bool = True,
    busy_limit: float = 0.25,
) -> list[dict]:
    """Checks that say whether a trial measured what it meant to measure. Without a
    server the load command is the benchmark itself, so its CPU use is no fault. Steal and
    busy time are taken on the CPUs the trial's processes were allowed to use (m.placement),
    machine-wide for a trial recorded without per-CPU counters."""
    results = []

    def gate(name, value, limit, passed, detail):
        results.append(
            {
                "variant": m.variant,
                "condition": m.condition,
                "run": m.repetition,
                "order": m.order,
                "gate": name,
                "value": value,
                "limit": limit,
                "passed": bool(passed),
                "detail": detail,
            }
        )

    wall = m.wall_seconds or float("nan")
    server_share = m.server_cpu_seconds / wall
    if m.client_cpu_seconds is not None and has_server:
        client_share = m.client_cpu_seconds / wall
        saturated = client_share >= load_cpu_limit and server_share < load_cpu_limit
        gate(
            "load generator CPU",
            client_share,
            load_cpu_limit,
            not saturated,
            f"load generator {client_share:.0%} of a core, server {server_share:.0%}: "
            + ("the load generator, not the server, was measured" if saturated else "the server set the pace"),
        )
    if m.units:
        share = m.errors / m.units
        gate(
            "load errors",
            share,
            error_limit,
            share <= error_limit,
            f"{m.errors} of {m.units} failed (socket errors, bad status or wrong answers)",
        )
    swapped = sum(changes.get("pswpin", 0) + changes.get("pswpout", 0) for changes in m.host_changes.values())
    gate("swap", swapped, 0, swapped == 0, f"{swapped:g} pages swapped in or out during the load")
    steal_share, steal_floor, where = 0.0, 0.0, "the host's CPUs"
    # Hosts of one machine share its counters: with a placement, one host stands for each machine.
    for host, changes in m.host_changes.items():
        if m.placement and host not in m.placement:
            continue
        cpus = trial_cpus(m, host)
        stolen = [changes[f"cpu{cpu}_steal_seconds"] for cpu in cpus if f"cpu{cpu}_steal_seconds" in changes]
        # The counters cover their own window (window_seconds), a little longer than the load.
        window = changes.get("window_seconds") or wall
        if cpus and len(stolen) == len(cpus):
            total, counted = sum(stolen), len(cpus)
            text = f"CPU{'s' if len(cpus) > 1 else ''} {_cpus(cpus)}"
        else:
            total, counted = changes.get("steal_seconds", 0.0), m.host_cpus.get(host, 1.0)
            text = "the host's CPUs"
        share = total / (window * counted)
        # /proc/stat counts in ticks of 1/USER_HZ s, each CPU's reading off by up to one: the
        # gate fails only on steal beyond that, or one stolen tick in a 0.1 s window of two
        # CPUs would read 5%.
        floor = max(0.0, total - TICK_SECONDS * counted) / (window * counted)
        if share >= steal_share:
            steal_share, steal_floor = share, floor
            where = f"{text} of {host}" if len(m.host_changes) > 1 else text
    gate(
        "CPU steal",
        steal_share,
        steal_limit,
        steal_floor <= steal_limit,
        f"{steal_share:.1%} of the CPU time of {where} was stolen by the hypervisor"
        + (f" (at least {steal_floor:.1%}, one tick per CPU less)" if steal_share > steal_limit else ""),
    )
    busy = busy_share(m)
    if busy is not None:
        share, foreign, where = busy
        gate(
            "busy host",
            share,
            busy_limit,
            share <= busy_limit,
            f"{share:.1%} of the time of {where} ({foreign:.2f} CPU s) went to work neither the server, "
            "the load generator nor the harness did",
        )
    throttled = [
        changes[key]
        for changes in m.host_changes.values()
        for key in ("thermal_throttle_count", "cgroup_nr_throttled")
        if key in changes
    ]
    if throttled:
        gate("throttling", sum(throttled), 0, sum(throttled) == 0, f"{sum(throttled):g} throttling events")
    return results


def trial_cpus(m: Trial, host: str) -> list[int]:
    """The CPUs of `host` the trial's processes were allowed to use; every CPU with a counter
    when they were not pinned; [] when the trial has no per-CPU record of that host."""
    changes = m.host_changes.get(host, {})
    every = sorted(int(key[3:].split("_", 1)[0]) for key in changes if key.endswith("_process_seconds"))
    machine = m.placement.get(host)
    if machine is None:
        return []
    return list(machine["cpus"]) if machine.get("cpus") is not None else every


def busy_share(m: Trial) -> tuple[float, float, str] | None:
    """The busiest machine's share of its trial CPUs' time spent on processes other than the
    trial's server and load generator and the harness itself: (share, CPU seconds, where).
    Process time only (user, nice, system): irq and softirq work, most of it the network
    work for the trial's own traffic, is not counted. None without per-CPU counters."""
    wall = m.wall_seconds or float("nan")
    found = None
    for host, machine in m.placement.items():
        changes = m.host_changes.get(host, {})
        cpus = trial_cpus(m, host)
        work = [changes.get(f"cpu{cpu}_process_seconds") for cpu in cpus]
        if not cpus or None in work:
            continue
        own = (m.server_cpu_seconds if "server" in machine["roles"] else 0.0) + (
            (m.client_cpu_seconds or 0.0) if "load" in machine["roles"] else 0.0
        )
        own += m.harness_cpu_seconds if machine.get("harness") else 0.0
        foreign = max(0.0, sum(work) - own)
        share = foreign / ((changes.get("window_seconds") or wall) * len(cpus))
        where = f"CPU{'s' if len(cpus) > 1 else ''} {_cpus(cpus)}" + (f" of {host}" if len(m.placement) > 1 else "")
        if found is None or share > found[0]:
            found = (share, foreign, where)
    return found


def _cpus(cpus: list[int]) -> str:
    return ",".join(map(str, cpus))


def gates_for(spec, m: Trial) -> list[dict]:
    """The gates of one trial with the experiment's limits (analysis.gate_*)."""
    analysis = spec.analysis
    return gates(
        m,
        analysis.gate_load_cpu,
        analysis.gate_steal,
        analysis.gate_errors,
        has_server=spec.variants[m.variant].server is not None,
        busy_limit=analysis.gate_busy,
    )


def trial_status(rows_by_trial: dict[int, list[dict]], trials: list[Trial]) -> dict[int, str]:
    """order -> "valid", "replaced" (failed a gate; a later trial of the same variant, condition
    and repetition passed them all) or "excluded" (failed, and nothing replaced it)."""
    valid = {m.order: all(row["passed"] for row in rows_by_trial.get(m.order, [])) for m in trials}
    passed_slots = {(m.variant, m.condition, m.repetition) for m in trials if valid[m.order]}
    return {
        m.order: "valid"
        if valid[m.order]
        else ("replaced" if (m.variant, m.condition, m.repetition) in passed_slots else "excluded")
        for m in trials
    }
