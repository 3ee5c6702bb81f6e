"""A run's context: what it is about, fixed once it starts (RunContext), and what it learns as
it goes (Gathered). Every stage after the plan takes these two instead of their parts."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError
from harness.hosts.hoststate import HostState
from harness.hosts.inventory import Host, Inventory
from harness.results import store
from harness.results.store import RunDirectory
from harness.run.plan import Plan
from harness.run.spec import ExperimentSpec
from harness.run.timing import StageClock


@dataclass(frozen=True)
class RunOptions:
    """How a run treats others and tests: wait up to `wait_seconds` for a host another run
    holds (--wait); `fake_steal` is a seam for tests only (TrialSetting.fake_steal)."""

    wait_seconds: float = 0.0
    fake_steal: Callable | None = None


@dataclass(frozen=True)
class RunContext:
    spec: ExperimentSpec
    digest: str  # the experiment file's sha256
    experiment_path: Path
    inventory: Inventory
    hosts_by_role: dict[str, tuple[Host, ...]]
    plan: Plan
    run: RunDirectory
    options: RunOptions = RunOptions()


@dataclass
class Gathered:
    """What the run has learnt so far; the results are written from it whatever happens."""

    started: str
    trials: list[store.Trial]
    state: HostState | None = None
    tools: dict | None = None
    links: list[store.Link] = field(default_factory=list)
    error: HarnessError | None = None
    rounds: int = 0  # repetitions completed by every variant
    stop_reason: str | None = None
    resumed_trials: int = 0  # trials taken over from the interrupted run this one resumes
    topology: dict | None = None  # host -> {"cpus", "numa_nodes"}; the full text is in raw/topology-HOST.txt
    not_applicable: str | None = None  # why the hosts cannot test the claim (experiment `requires`)
    drift: list = field(default_factory=list)  # hoststate.Drift: settings restore could not put back
    recovered: list = field(default_factory=list)  # {"host", "run_id", "result"}: stale journals restored first
    clock: StageClock = field(default_factory=StageClock)  # wall time per stage, for the manifest


def unique_hosts(hosts_by_role) -> list[Host]:
    seen = {}
    for hosts in hosts_by_role.values():
        for host in hosts:
            seen.setdefault(host.name, host)
    return list(seen.values())


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
