"""Put hosts back after a run that could not: the journals of runs that are not running.

A journal (harness/hosts/journal.py) holds what restore needs. Recovery runs the
restore playbook with it, as the run itself would have: stop the recorded process
groups still alive, put every recorded setting and sysctl back, remove the work folder,
read everything again and report what still differs, then remove the journal.
`harness run` does this for the hosts it is about to use (once it holds their locks),
and `harness restore` for every host of an inventory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError
from harness.hosts.hoststate import Drift, DriftError
from harness.hosts.inventory import load as load_inventory
from harness.hosts.journal import HostBusy, HostLock, Journal
from harness.hosts.provision import Provisioner
from harness.hosts.remote import HostSession


@dataclass(frozen=True)
class Recovered:
    """One journal restored: `error` when restore could not run, `drift` when it ran but left settings changed."""

    journal: Journal
    drift: tuple[Drift, ...] = ()
    error: str | None = None
    processes_recorded: int = field(default=0)

    @property
    def as_found(self) -> bool:
        return self.error is None and not self.drift

    def line(self) -> str:
        what = f"{self.journal.host}: restored what {self.journal.describe()} left"
        if self.error:
            return f"{self.journal.host}: could not restore what {self.journal.describe()} left: {self.error}"
        if self.drift:
            return f"{what}, but {len(self.drift)} setting(s) still differ: " + "; ".join(map(str, self.drift[:5]))
        return f"{what}: every setting as found, its processes stopped, work folder and journal removed"

    def to_json(self) -> dict:
        return {
            "host": self.journal.host,
            "run_id": self.journal.run_id,
            "result": "restored" if self.as_found else (self.error or f"drift: {'; '.join(map(str, self.drift))}"),
        }


def recover(
    inventory_path: Path, journals: list[Journal], log_dir: Path, cancel: Callable[[], bool] = lambda: False
) -> list[Recovered]:
    """Restore each journal's host as its snapshot found it; one Recovered per journal."""
    done = []
    for journal in journals:
        provisioner = Provisioner(Path(inventory_path), [journal.host], Path(log_dir), cancel)
        try:
            provisioner.restore(journal.host_state(), journal.workdir, journal.run_id)
            done.append(Recovered(journal, processes_recorded=len(journal.processes)))
        except DriftError as exc:
            done.append(Recovered(journal, drift=tuple(exc.drift), processes_recorded=len(journal.processes)))
        except HarnessError as exc:
            done.append(Recovered(journal, error=str(exc), processes_recorded=len(journal.processes)))
    return done


@dataclass(frozen=True)
class HostReport:
    """What `harness restore` found and did on one host."""

    host: str
    lines: tuple[str, ...]
    ok: bool  # the host is as its journals' snapshots found it (or held no journal)
    journals: int = 0  # journals of runs that were not running, found and restored (or tried)


def restore_hosts(inventory_path: Path, host_name: str | None, log_dir: Path) -> list[HostReport]:
    """`harness restore`: on every host of the inventory (or `host_name`), restore each journal
    of a run that is not running. A host another run holds is left alone; one that cannot be
    reached says so; both count as not restored."""
    inventory = load_inventory(inventory_path)
    every = list({host.name: host for group in inventory.groups.values() for host in group}.values())
    hosts = every
    if host_name is not None:
        hosts = [host for host in every if host.name == host_name]
        if not hosts:
            raise HarnessError(f"{inventory.path}: no host {host_name!r} (hosts: {', '.join(h.name for h in every)})")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    reports = []
    for host in hosts:
        try:
            with HostSession(host) as session:
                lock = HostLock(f"restore-{stamp}", {host.name: session}, {host.name: host})
                try:
                    lock.acquire()
                except HostBusy as busy:
                    reports.append(HostReport(host.name, (f"{busy}; its journal is left alone",), False))
                    continue
                try:
                    journals = lock.stale.get(host.name, [])
                    if not journals:
                        reports.append(HostReport(host.name, (f"{host.name}: no journal; nothing to restore",), True))
                        continue
                    done = recover(inventory.path.resolve(), journals, log_dir)
                    lines = tuple(item.line() for item in done)
                    reports.append(HostReport(host.name, lines, all(item.as_found for item in done), len(done)))
                finally:
                    lock.release()
        except HarnessError as exc:
            reports.append(HostReport(host.name, (f"{exc}",), False))
    return reports
