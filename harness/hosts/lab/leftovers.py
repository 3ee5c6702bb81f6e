"""What killed runs left on a lab's hosts, restored before `harness lab up` keeps or
rebuilds the lab and before `harness lab down` removes it.

Removing a namespace takes its sysctls, devices and processes with it, but not the
run's work folder on this machine's disk, its journal, nor a machine-wide setting the
run changed; and `lab up` on a healthy lab keeps the namespaces, changed values and
all. So each host goes through the same recovery as `harness restore`
(harness/hosts/recovery.py), over SSH as a run reaches it; a host whose sshd died gets
its sshd started again first (it is the lab's own), so the journal its namespace holds
is not lost with it. A host another run holds is left alone.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from harness.errors import LabError
from harness.hosts import recovery
from harness.hosts.lab import sshd, state, topology

SSH_WAIT_SECONDS = 15


def restore_left_runs(name: str, base_dir: Path) -> list[str]:
    """One line per journal found on the lab's reachable hosts (restored, or why not) and
    per host another run holds; [] when there was nothing to restore or there is no lab."""
    lab_status = topology.lab_status(name, base_dir)  # checks the name first
    recorded, _ = state.read_state(lab_status.directory)
    if recorded is None:
        return []
    lab = state.lab_from_state(recorded)
    if not lab.inventory.is_file():
        return []
    status = {host.name: host for host in lab_status.hosts}
    log_dir = Path(tempfile.mkdtemp(prefix=f"harness-lab-{name}-restore-"))
    lines, all_restored = [], True
    for host in lab.hosts:
        found = status.get(host.name)
        if found is None or not found.namespace_exists:
            continue  # unreachable: its sysctls and processes went with the namespace
        if not found.sshd_alive:
            try:
                restarted = dataclasses.replace(host, sshd_pid=sshd.start_sshd(host))
                sshd.wait_for_ssh(dataclasses.replace(lab, hosts=(restarted,)), SSH_WAIT_SECONDS)
            except LabError as error:
                lines.append(f"{host.name}: cannot reach it to restore what a run may have left: {error}")
                all_restored = False
                continue
        for report in recovery.restore_hosts(lab.inventory, host.name, log_dir):
            if report.journals or not report.ok:
                lines.extend(report.lines)
                all_restored = all_restored and report.ok
    if all_restored:
        shutil.rmtree(log_dir, ignore_errors=True)
    else:
        lines.append(f"lab {name}: not every host is as found (ansible logs: {log_dir})")
    return lines
