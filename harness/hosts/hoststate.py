"""A host's state around a run: what snapshot read before it, restore putting it back,
and the drift that remains when restore could not.

Snapshot reads every setting a run may change (playbooks/files/host_state.py lists
them: sysctls, RPS/XPS masks, IRQ affinity, qdiscs, XDP, channels, offloads, the
harness's nftables table, the CPU governor) along with each host's facts. Restore
puts back what differs, reads everything again and raises DriftError, listing each
setting still different, if a host is not as it was found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.errors import HostError, ProvisionError
from harness.hosts.playbook import Playbooks, detail, script_output, task_result

# Drift items named in a DriftError's message; DriftError.drift has them all.
DRIFT_SHOWN = 10


@dataclass(frozen=True)
class HostState:
    """What a host looked like before the run: facts, the sysctls the run will change,
    and every other setting a run may change (playbooks/files/host_state.py names them:
    "/sys/class/net/eth0/queues/rx-0/rps_cpus", "/proc/irq/38/smp_affinity",
    "qdisc eth0", "xdp eth0", "ethtool -l eth0", "ethtool -k eth0 FEATURE",
    "nftables table inet harness", ...)."""

    facts: dict[str, dict]  # host name -> {"hostname", "cpu_model", "cores", "memory_mib", "kernel", "os"}
    sysctls_before: dict[str, dict[str, str]]  # host name -> {key: value as read by `sysctl -n`}
    settings_before: dict[str, dict[str, str]] = field(default_factory=dict)  # host name -> {setting: value}
    notes: dict[str, list[str]] = field(default_factory=dict)  # host name -> what could not be read, and why


@dataclass(frozen=True)
class Drift:
    """A setting that differs after restore from what the snapshot read."""

    host: str
    setting: str  # a HostState setting name, "sysctl KEY", or "workdir PATH"
    before: str
    after: str
    why: str = ""  # why restore could not put it back, when it knows

    def __str__(self) -> str:
        because = f" ({self.why})" if self.why else ""
        return f"{self.host}: {self.setting} was {self.before!r}, is {self.after!r}{because}"


class DriftError(ProvisionError):
    """Restore ran, but some host does not look as the snapshot found it; `drift` lists each setting."""

    def __init__(self, drift: list[Drift]):
        shown = "; ".join(str(item) for item in drift[:DRIFT_SHOWN])
        more = f"; and {len(drift) - DRIFT_SHOWN} more" if len(drift) > DRIFT_SHOWN else ""
        super().__init__(
            f"host state drifted: after restoring, {len(drift)} setting"
            f"{'s differ' if len(drift) != 1 else ' differs'} from the snapshot: {shown}{more}; "
            f"put them back by hand"
        )
        self.drift = list(drift)


def snapshot(
    playbooks: Playbooks, sysctl_keys: list[str], service_addresses: dict[str, str] | None = None
) -> HostState:
    """Read facts, the current value of each sysctl the run will set, and the host settings
    (of the devices holding each host's service address, and lo, when given)."""
    keys = list(dict.fromkeys(sysctl_keys))
    events = playbooks.run("snapshot", {"sysctl_keys": keys, "service_addresses": service_addresses or {}})
    facts, before, settings, notes = {}, {}, {}, {}
    for host in playbooks.host_names:
        gathered = task_result(events, host, "Gather facts")
        if gathered is None:
            raise ProvisionError(f"{host}: snapshot reported no facts; see {playbooks.stdout_hint()}")
        facts[host] = _host_facts(gathered.get("ansible_facts", {}))
        read = script_output(events, host, "Read host settings with ethtool") or script_output(
            events, host, "Read host settings"
        )
        if read and read.get("nic"):
            facts[host]["nic"] = read["nic"]  # the service device, its driver and speed
        if read is None or not isinstance(read.get("settings"), dict):
            res = task_result(events, host, "Read host settings") or {}
            raise ProvisionError(
                f"{host}: snapshot could not read the host settings ({detail(res)}); see {playbooks.stdout_hint()}"
            )
        values = {}
        for key in keys:
            item = read.get("sysctls", {}).get(key, {})
            if "value" not in item:
                raise HostError(
                    f"{host}: cannot read sysctl {key} ({item.get('error') or 'no output'}); this kernel may "
                    f"not have it: remove it from provision.sysctls or use another host"
                )
            values[key] = item["value"]
        before[host] = values
        settings[host] = read["settings"]
        notes[host] = list(read.get("notes", []))
    return HostState(facts=facts, sysctls_before=before, settings_before=settings, notes=notes)


def restore(playbooks: Playbooks, state: HostState, workdir: str | None, run_id: str | None = None) -> None:
    """Put the hosts back as the snapshot found them and remove `workdir`, then check that they are.

    Puts back every snapshotted sysctl and host setting that differs (RPS/XPS
    masks, IRQ affinity, governor, rps_sock_flow_entries, channels, offloads;
    detaches XDP programs and deletes the harness's nftables table and
    qdiscs that were not there before) and removes the workdir. Then reads
    everything again: if any setting still differs from the snapshot, raises
    DriftError, whose `drift` lists each one (host, setting, before, after).
    Raises ProvisionError if restore could not run or read a host at all.

    With `run_id`, the run's journal (harness/hosts/journal.py) is followed on each
    host: the process groups it recorded that still run are stopped first, and the
    journal is removed last, on each host where restore ran.
    The playbook is never cancelled: a host must not stay changed.

    Net devices and IRQs that appeared or vanished during the run are not
    compared: the harness neither creates nor deletes them, and on a shared
    machine other programs do.
    """
    wanted = {host: dict(values) for host, values in state.sysctls_before.items() if host in playbooks.host_names}
    settings = {host: dict(values) for host, values in state.settings_before.items() if host in playbooks.host_names}
    extravars = {
        "sysctls_by_host": wanted,
        "settings_by_host": settings,
        "workdir": workdir or "",
        "run_id": run_id or "",
    }

    def left_changed(host: str) -> str:
        left = ["host settings"] if settings.get(host) else []
        left += [f"sysctls {', '.join(wanted[host])}"] if wanted.get(host) else []
        left += [f"workdir {workdir}"] if workdir else []
        return f"it may still have {' and '.join(left) or 'nothing'} changed"

    try:
        events = playbooks.run(
            "restore",
            extravars,
            cancellable=False,
            unreachable_note=lambda host: f"; restore did not run there, so {left_changed(host)}",
        )
    except ProvisionError as exc:
        everywhere = "; ".join(f"{host}: {left_changed(host)}" for host in playbooks.host_names)
        raise ProvisionError(f"restore failed: {exc}; {everywhere}") from None
    drift: list[Drift] = []
    unchecked = []
    for host in playbooks.host_names:
        restored = script_output(events, host, "Restore host settings")
        if restored is None or not isinstance(restored.get("settings"), dict):
            res = task_result(events, host, "Restore host settings") or {}
            unchecked.append(f"{host}: restore did not run there ({detail(res)}), so {left_changed(host)}")
            continue
        drift += _settings_drift(host, settings.get(host, {}), restored["settings"], restored.get("failures", {}))
        for key, value in wanted.get(host, {}).items():
            item = restored.get("sysctls", {}).get(key, {})
            now = item.get("after")
            if now is None or now.split() != value.split():
                drift.append(
                    Drift(host, f"sysctl {key}", value, "unreadable" if now is None else now, item.get("error", ""))
                )
        if restored.get("workdir_error"):
            drift.append(Drift(host, f"workdir {workdir}", "absent", "present", restored["workdir_error"]))
    if unchecked:
        raise ProvisionError("restore incomplete: " + "; ".join(unchecked) + "".join(f"; {item}" for item in drift))
    if drift:
        raise DriftError(drift)


def _host_facts(facts: dict) -> dict:
    processor = [str(p) for p in facts.get("ansible_processor", []) if not str(p).isdigit()]
    cores = facts.get("ansible_processor_vcpus") or facts.get("ansible_processor_nproc") or 0
    distribution = " ".join(str(facts.get(k, "")) for k in ("ansible_distribution", "ansible_distribution_version"))
    return {
        "hostname": facts.get("ansible_nodename", ""),
        # On x86 the list runs index, vendor, model for each CPU; the model comes last.
        "cpu_model": processor[-1] if processor else "unknown",
        "cores": int(cores),
        "memory_mib": int(facts.get("ansible_memtotal_mb", 0)),
        "kernel": facts.get("ansible_kernel", ""),
        "os": distribution.strip(),
    }


def _settings_drift(host: str, before: dict[str, str], after: dict[str, str], failures: dict[str, str]) -> list[Drift]:
    """Settings read both before and after that differ; a device or IRQ that came or went is not compared."""
    return [
        Drift(host, key, value, after[key], failures.get(key, ""))
        for key, value in before.items()
        if key in after and after[key] != value
    ]
