"""The on-host journal and the host lock: hosts left as found even when the controller dies.

Each host keeps, in a root-only folder of its own (playbooks/files/host_journal.py says
where and how), a lock naming the run that may change it and, for each run that changed
it, a journal: the snapshot restore needs (sysctls and settings before), the work folder,
the controller, and every process group the run started there (remote.record_started
appends each one from the shell command that starts it).

    HostLock      take the lock on every host of a run, renew its lease from a thread,
                  release it; a second controller sees the first one's lock and waits or stops
    write         the journal, written after the snapshot and before anything changes
    Journal       a journal read back: what restore of a dead run needs

A lock is stale when its lease expired (LEASE_SECONDS, renewed every RENEW_SECONDS) or
its holder ran on the host's own kernel and is gone (pid and start time). Taking a lock
that is free or stale returns every journal on the host: with the lock held, no other
run is active there, so each of them is left by a run that did not finish its restore.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from harness import controller, resources
from harness.errors import HarnessError, HostError
from harness.hosts.hoststate import HostState
from harness.hosts.inventory import Host
from harness.hosts.remote import HostSession

LEASE_SECONDS = 30.0
RENEW_SECONDS = 5.0
WAIT_POLL_SECONDS = 2.0
SCRIPT_TEXT = resources.HOST_JOURNAL_SCRIPT.read_text()


class HostBusy(HarnessError):
    """A host's lock is held by a live run."""


@dataclass(frozen=True)
class Journal:
    """A run's journal on one host, as host_journal.py read it."""

    host: str
    run_id: str
    workdir: str | None
    sysctls_before: dict[str, str]
    settings_before: dict[str, str]
    controller: dict = field(default_factory=dict)
    started: str = ""
    processes: tuple[dict, ...] = ()

    @classmethod
    def from_json(cls, host: str, data: dict) -> Journal:
        return cls(
            host=host,
            run_id=str(data.get("run_id")),
            workdir=data.get("workdir") or None,
            sysctls_before=dict(data.get("sysctls_before") or {}),
            settings_before=dict(data.get("settings_before") or {}),
            controller=dict(data.get("controller") or {}),
            started=str(data.get("started") or ""),
            processes=tuple(data.get("processes") or ()),
        )

    def host_state(self) -> HostState:
        """The snapshot the journal holds, as restore takes it."""
        return HostState(
            facts={},
            sysctls_before={self.host: self.sysctls_before},
            settings_before={self.host: self.settings_before},
        )

    def describe(self) -> str:
        who = self.controller
        return f"run {self.run_id} (controller pid {who.get('pid')} on {who.get('hostname')}, started {self.started})"


def call(session: HostSession, mode: str, given: dict, timeout: float = 60) -> dict:
    """Run host_journal.py MODE on the session's host with `given` on stdin; its JSON answer."""
    text = json.dumps(given)
    result = session.shell(
        f"printf %s {shlex.quote(text)} | /usr/bin/python3 -c {shlex.quote(SCRIPT_TEXT)} {mode}",
        timeout=timeout,
        check=False,
        shown=f"journal {mode}",
    )
    if result.exited != 0:
        lines = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()
        raise HostError(f"{session.host.name}: the harness journal ({mode}) failed: {lines[-1]}")
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise HostError(f"{session.host.name}: the harness journal ({mode}) printed no JSON") from None


def since_text(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(float(epoch), datetime.UTC).isoformat(timespec="seconds")


def busy_message(host: str, lock: dict) -> str:
    who = lock.get("controller") or {}
    return (
        f"{host}: in use by run {lock.get('run_id')} (controller pid {who.get('pid')} on {who.get('hostname')}) "
        f"since {since_text(lock.get('since', 0))}; wait for it with --wait SECONDS"
    )


class HostLock:
    """The lock on each of a run's hosts, held from `acquire` until `release`, its lease
    renewed from a background thread over SSH connections of its own."""

    def __init__(self, run_id: str, sessions: dict[str, HostSession], hosts: dict[str, Host]):
        self.run_id = run_id
        self.sessions = sessions
        self.hosts = hosts
        self.controller = controller.identity()
        self.held: list[str] = []
        self.stale: dict[str, list[Journal]] = {}  # host -> journals of runs that did not restore it
        self.replaced: dict[str, dict] = {}  # host -> the stale lock taken over
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, wait_seconds: float = 0.0, waiting: Callable[[str], None] | None = None) -> None:
        """Take every host's lock, in name order (two runs wanting the same hosts do not
        deadlock); a host held by a live run raises HostBusy, or is waited for up to
        `wait_seconds`. Then start renewing the leases."""
        deadline = time.monotonic() + wait_seconds
        for name in sorted(self.sessions):
            told = False
            while True:
                answer = call(
                    self.sessions[name],
                    "acquire",
                    {"run_id": self.run_id, "controller": self.controller, "lease": LEASE_SECONDS},
                )
                if answer.get("acquired"):
                    break
                message = busy_message(name, answer.get("holder") or {})
                if time.monotonic() >= deadline:
                    self.release()
                    if wait_seconds:
                        message = f"{message.split('; wait')[0]}; still in use after waiting {wait_seconds:g} s"
                    raise HostBusy(message)
                if waiting and not told:
                    waiting(message.split("; wait")[0])
                    told = True
                time.sleep(WAIT_POLL_SECONDS)
            self.held.append(name)
            if not self._thread:
                self._start_renewing()
            if answer.get("replaced"):
                self.replaced[name] = answer["replaced"]
            found = [Journal.from_json(name, data) for data in answer.get("journals") or ()]
            if found:
                self.stale[name] = found

    def write(self, journals: dict[str, dict]) -> None:
        """Write each host's journal (JSON-ready dict) and point its session's process list at it."""
        for name, journal in journals.items():
            answer = call(self.sessions[name], "write", {"journal": {**journal, "controller": self.controller}})
            self.sessions[name].process_journal = answer["pids"]

    def release(self) -> None:
        """Stop renewing and free every lock this run holds; a host that cannot be reached
        keeps its lock until the lease runs out."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=RENEW_SECONDS + 30)
        for name in self.held:
            with contextlib.suppress(HarnessError):
                call(self.sessions[name], "release", {"run_id": self.run_id}, timeout=30)
        self.held = []

    def _start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew, name="harness-lock-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        sessions: dict[str, HostSession] = {}
        try:
            while not self._stop.wait(RENEW_SECONDS):
                for name in list(self.held):
                    try:
                        if name not in sessions:
                            sessions[name] = HostSession(self.hosts[name])
                        call(sessions[name], "renew", {"run_id": self.run_id, "lease": LEASE_SECONDS}, timeout=20)
                    except HarnessError:
                        # An unreachable host: the run's own commands will say so. A new
                        # connection is tried next time.
                        old = sessions.pop(name, None)
                        if old is not None:
                            old.close()
        finally:
            for session in sessions.values():
                session.close()


def new_journal(run_id: str, workdir: str, state: HostState, host: str, started: str) -> dict:
    """What a run writes to `host` after its snapshot and before it changes anything."""
    return {
        "run_id": run_id,
        "started": started,
        "workdir": workdir,
        "sysctls_before": state.sysctls_before.get(host, {}),
        "settings_before": state.settings_before.get(host, {}),
    }


def show(session: HostSession) -> dict:
    """The host's lock (and whether it is stale) and journals, without changing anything."""
    return call(session, "show", {})
