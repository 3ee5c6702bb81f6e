"""Provision hosts with Ansible: snapshot, apply, restore.

ansible-runner is used as a library. It never raises when a playbook fails, so
every call goes through `_run`, which reads the run's status, stats and job
events and turns each kind of fault into one HarnessError line:

    unreachable host          -> HostError naming the host
    failed task               -> ProvisionError naming host, task and the module's message
    cancel() became true      -> Interrupted
    anything else gone wrong  -> ProvisionError pointing at the run's stdout artifact

Values come back through the job events: a playbook registers the output of a
task with a known name (the setup module, `nginx -v` in a loop, the JSON that
playbooks/files/host_state.py prints) and Python reads that task's
`runner_on_ok` event. Nothing is parsed out of Ansible's human-readable output.

Host state: snapshot reads every setting a run may change (host_state.py lists
them); restore puts back what differs, reads everything again and raises
DriftError, listing each setting still different, if the host is not as found.

Each playbook call gets a fresh private_data_dir under the run's log directory
(`<log_dir>/01-snapshot/`, `02-provision/`, ...); its artifacts (stdout, job
events, the extravars that were passed) stay there as raw evidence.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import ansible_runner
from ansible_runner.exceptions import AnsibleRunnerException, ConfigurationError

from harness import resources
from harness.run import spec as spec_module
from harness.run.placeholders import fill, parse_size
from harness.errors import HostError, Interrupted, ProvisionError, SpecError
from harness.hosts.inventory import Host, ansible_tool

PLAYBOOKS = resources.PLAYBOOKS
WORK_ROOT = "/var/tmp/harness"
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Drift items named in a DriftError's message; DriftError.drift has them all.
DRIFT_SHOWN = 10

# Seconds pip may take to install provision.pip into a host's venv.
PIP_TIMEOUT = 900

# Seconds before ansible-runner kills a playbook. Apply may install packages and
# write gigabytes of random data; the others only read and write a few settings.
TIMEOUTS = {"snapshot": 300, "provision": 3600, "restore": 600}

# Settings for every playbook run, as environment rather than an ansible.cfg, so
# that no ansible.cfg found elsewhere (cwd, ~, /etc/ansible) can change them.
ANSIBLE_ENV = {
    "ANSIBLE_RETRY_FILES_ENABLED": "False",
    "ANSIBLE_NOCOLOR": "True",
    "ANSIBLE_FORCE_COLOR": "False",
    # Pipelining sends modules over the SSH session's stdin: fewer round trips,
    # and no TTY is requested (the harness connects as root, so no sudo).
    "ANSIBLE_PIPELINING": "True",
    "ANSIBLE_TIMEOUT": "10",  # SSH connect timeout, seconds
    "ANSIBLE_FORKS": "16",  # hosts provisioned at once
    # A host whose key is not known is refused, never trusted on first use (which
    # would also write its key into known_hosts). Lab inventories name their own
    # known_hosts file, holding the keys `harness lab up` made.
    "ANSIBLE_HOST_KEY_CHECKING": "True",
    # The OS's own Python: it has the apt bindings (python3-apt) that the apt
    # module needs, and interpreter discovery can pick a pyenv shim that is on
    # PATH but broken (seen on this machine kind). `ansible_python_interpreter`
    # in the inventory overrides it for hosts that need another one.
    "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
    "ANSIBLE_LOCALHOST_WARNING": "False",
    "ANSIBLE_DISPLAY_SKIPPED_HOSTS": "False",
}

def _refuse_jinja(extravars, playbook: str, where: str = "") -> None:
    """Ansible evaluates Jinja in extra vars: a value holding "{{" could run commands on the
    controller. The spec rejects such text where a user writes it; this is the last check."""
    if isinstance(extravars, dict):
        for key, value in extravars.items():
            _refuse_jinja(value, playbook, f"{where}.{key}" if where else str(key))
    elif isinstance(extravars, (list, tuple)):
        for index, value in enumerate(extravars):
            _refuse_jinja(value, playbook, f"{where}[{index}]")
    elif isinstance(extravars, str) and any(mark in extravars for mark in ("{{", "{%", "{#")):
        raise ProvisionError(f"{playbook}.yml: extra var {where} holds Jinja delimiters, which Ansible would "
                             f"evaluate: {extravars[:80]!r}")


def _strip_environment(command_file: Path, kept: dict) -> None:
    """ansible-runner records the whole environment of this process in artifacts/*/command;
    keep only what the harness set, so no token or password of the user lands in a run."""
    try:
        record = json.loads(command_file.read_text())
    except (OSError, ValueError):
        return
    if isinstance(record, dict) and isinstance(record.get("env"), dict):
        record["env"] = {key: value for key, value in record["env"].items() if key in kept}
        command_file.write_text(json.dumps(record))


# How to ask a tool its version. A tool is asked when the experiment uses it
# (in provision.packages or as a command); gcc and python3 always.
VERSION_COMMANDS = {
    "nginx": ["nginx", "-v"],
    "gcc": ["gcc", "--version"],
    "clang": ["clang", "--version"],
    "python3": ["python3", "--version"],
    "wrk": ["wrk", "-v"],
    "h2load": ["h2load", "--version"],
    "iperf3": ["iperf3", "--version"],
    "redis-server": ["redis-server", "--version"],
}
ALWAYS_REPORTED = ("gcc", "python3")


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
        super().__init__(f"host state drifted: after restoring, {len(drift)} setting"
                         f"{'s differ' if len(drift) != 1 else ' differs'} from the snapshot: {shown}{more}; "
                         f"put them back by hand")
        self.drift = list(drift)


@dataclass(frozen=True)
class Workspace:
    workdir: str  # on every host: /var/tmp/harness/<run_id>
    workload: str  # {workdir}/workload  (copy of the experiment's workload folder)
    bin: str  # {workdir}/bin       (compiled builds)
    data: str  # {workdir}/data      (data files)
    # The interpreter for {python}: the run's venv when provision.pip is not empty
    # ({workdir}/venv, removed with the workdir), else the host's own python3.
    python: str = "python3"


class Provisioner:
    """Runs the playbooks on `host_names` (an Ansible --limit) of one inventory.

    `log_dir` receives one subdirectory per playbook call. `cancel` is polled
    while snapshot and apply run (the caller turns SIGINT/SIGTERM into it
    returning True); restore ignores it, since a host must not stay changed.
    """

    def __init__(self, inventory_path: Path, host_names: list[str], log_dir: Path, cancel: Callable[[], bool]):
        if not host_names:
            raise ProvisionError("no hosts to provision: the experiment's roles map to no inventory hosts")
        # A relative path would be taken by ansible-runner as inventory *text*.
        self.inventory_path = Path(inventory_path).resolve()
        self.host_names = list(dict.fromkeys(host_names))
        self.log_dir = Path(log_dir)
        self.cancel = cancel
        self._started_workdir: str | None = None
        self._last_private_dir: Path | None = None

    @staticmethod
    def workdir_for(run_id: str) -> str:
        if not RUN_ID.match(run_id):
            raise ProvisionError(f"run id {run_id!r} cannot name a directory: use letters, digits, '_', '.', '-'")
        return f"{WORK_ROOT}/{run_id}"

    @staticmethod
    def workspace_for(run_id: str) -> Workspace:
        workdir = Provisioner.workdir_for(run_id)
        return Workspace(workdir=workdir, workload=f"{workdir}/workload", bin=f"{workdir}/bin", data=f"{workdir}/data")

    # --- snapshot -------------------------------------------------------------

    def snapshot(self, sysctl_keys: list[str], service_addresses: dict[str, str] | None = None) -> HostState:
        """Read facts, the current value of each sysctl the run will set, and the host settings
        (of the devices holding each host's service address, and lo, when given)."""
        keys = list(dict.fromkeys(sysctl_keys))
        events = self._run("snapshot", {"sysctl_keys": keys, "service_addresses": service_addresses or {}})
        facts, before, settings, notes = {}, {}, {}, {}
        for host in self.host_names:
            gathered = _ok_result(events, host, "Gather facts")
            if gathered is None:
                raise ProvisionError(f"{host}: snapshot reported no facts; see {self._stdout_hint()}")
            facts[host] = _host_facts(gathered.get("ansible_facts", {}))
            read = (_script_output(events, host, "Read host settings with ethtool")
                    or _script_output(events, host, "Read host settings"))
            if read and read.get("nic"):
                facts[host]["nic"] = read["nic"]  # the service device, its driver and speed
            if read is None or not isinstance(read.get("settings"), dict):
                res = _ok_result(events, host, "Read host settings") or {}
                raise ProvisionError(f"{host}: snapshot could not read the host settings ({_detail(res)}); "
                                     f"see {self._stdout_hint()}")
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

    # --- apply ------------------------------------------------------------------

    def apply(self, spec: spec_module.ExperimentSpec, workload_dir: Path, hosts_by_role: dict[str, tuple[Host, ...]], parameters: dict,
              run_id: str) -> tuple[Workspace, dict[str, dict[str, str]]]:
        """Install packages, set sysctls and provision.net, copy the workload, build, create data,
        install provision.pip into a venv; return the workspace and, per host, tool versions (with
        "pip packages" and "provision.net" entries when those are used)."""
        workspace = self.workspace_for(run_id)
        workload_dir = Path(workload_dir).resolve()
        if not workload_dir.is_dir():
            raise ProvisionError(f"workload folder {workload_dir} does not exist; check the experiment's workload:")
        for role, hosts in hosts_by_role.items():
            for host in hosts:
                if host.name not in self.host_names:
                    raise ProvisionError(
                        f"host {host.name} of role {role} is not among the hosts being provisioned "
                        f"({', '.join(self.host_names)})"
                    )
        provision = spec.provision
        builds_by_host: dict[str, list] = {name: [] for name in self.host_names}
        for build in provision.builds:
            argv = ["gcc", *build.flags, "-o", f"{workspace.bin}/{build.name}",
                    *(f"{workspace.workload}/{source}" for source in build.sources),
                    *(f"-l{library}" for library in build.libraries)]
            for host in hosts_by_role.get(build.role, ()):
                builds_by_host[host.name].append({"name": build.name, "argv": argv})
        data_by_host: dict[str, list] = {name: [] for name in self.host_names}
        for data in provision.data:
            try:
                size = parse_size(fill(data.size, parameters))
            except KeyError as exc:
                raise SpecError(f"provision.data {data.name}: size {data.size!r} needs parameter {exc}") from None
            except ValueError as exc:
                raise SpecError(f"provision.data {data.name}: {exc}") from None
            for host in hosts_by_role.get(data.role, ()):
                data_by_host[host.name].append({"path": f"{workspace.data}/{data.name}", "size": size})
        # The spec's pattern admits names, extras and version constraints only: no pip options.
        requirements = list(getattr(provision, "pip", None) or [])
        if requirements:
            workspace = replace(workspace, python=f"{workspace.workdir}/venv/bin/python3")
        packages = list(provision.packages)
        if requirements and "python3-venv" not in packages:
            packages.append("python3-venv")  # Debian's python3 has no venv (ensurepip) without it
        net = getattr(provision, "net", None)
        service_addresses = {host.name: host.service_address for hosts in hosts_by_role.values() for host in hosts}
        tools = _tools_used(spec)
        extravars = {
            "net": net.model_dump() if net is not None else None,
            "service_addresses": service_addresses,
            "packages": packages,
            "pip_requirements": requirements,
            "pip_timeout": PIP_TIMEOUT,
            "sysctls": {key: str(value) for key, value in provision.sysctls.items()},
            "workspace": {"workdir": workspace.workdir, "workload": workspace.workload,
                          "bin": workspace.bin, "data": workspace.data, "venv": f"{workspace.workdir}/venv"},
            "workload_source": str(workload_dir),
            "builds_by_host": builds_by_host,
            "data_by_host": data_by_host,
            "version_commands": [{"tool": tool, "argv": VERSION_COMMANDS[tool]} for tool in tools]
                                + [{"tool": "kernel", "argv": ["uname", "-r"]}],
        }
        # From here on the workdir may exist on some host: restore must remove it
        # even if this call fails halfway.
        self._started_workdir = workspace.workdir
        events = self._run("provision", extravars)
        versions = {}
        for host in self.host_names:
            found = {}
            for item in _loop_results(events, host, "Read tool versions"):
                version = _version_line(item)
                if version:
                    found[item["item"]["tool"]] = version
            if requirements:
                found["pip packages"] = _pip_packages(_ok_result(events, host, "Read venv packages"))
            if net is not None:
                found["provision.net"] = _net_applied(_script_output(events, host, "Tune the service device"), net)
            versions[host] = found
        return workspace, versions

    # --- restore ----------------------------------------------------------------

    def restore(self, state: HostState, workspace_dir: str | None) -> None:
        """Put the hosts back as the snapshot found them, then check that they are; never cancelled.

        Puts back every snapshotted sysctl and host setting that differs (RPS/XPS
        masks, IRQ affinity, governor, rps_sock_flow_entries, channels, offloads;
        detaches XDP programs and deletes the harness's nftables table and
        qdiscs that were not there before) and removes the workdir. Then reads
        everything again: if any setting still differs from the snapshot, raises
        DriftError, whose `drift` lists each one (host, setting, before, after).
        Raises ProvisionError if restore could not run or read a host at all.

        Net devices and IRQs that appeared or vanished during the run are not
        compared: the harness neither creates nor deletes them, and on a shared
        machine other programs do.

        With workspace_dir None, the workdir of the last apply() (if one was
        started) is removed, so a caller whose apply failed early can still clean up.
        """
        workdir = workspace_dir or self._started_workdir
        if workdir is not None:
            path = PurePosixPath(workdir)
            if str(path) != workdir or path.parent != PurePosixPath(WORK_ROOT) or path.name in ("", ".", ".."):
                raise ProvisionError(f"refusing to remove {workdir!r}: the harness only removes {WORK_ROOT}/<run id>")
        wanted = {host: dict(values) for host, values in state.sysctls_before.items() if host in self.host_names}
        settings = {host: dict(values) for host, values in state.settings_before.items() if host in self.host_names}
        extravars = {"sysctls_by_host": wanted, "settings_by_host": settings, "workdir": workdir or ""}

        def left_changed(host: str) -> str:
            left = ["host settings"] if settings.get(host) else []
            left += [f"sysctls {', '.join(wanted[host])}"] if wanted.get(host) else []
            left += [f"workdir {workdir}"] if workdir else []
            return f"it may still have {' and '.join(left) or 'nothing'} changed"

        try:
            events = self._run("restore", extravars, cancellable=False,
                               unreachable_note=lambda host: f"; restore did not run there, so {left_changed(host)}")
        except ProvisionError as exc:
            everywhere = "; ".join(f"{host}: {left_changed(host)}" for host in self.host_names)
            raise ProvisionError(f"restore failed: {exc}; {everywhere}") from None
        drift: list[Drift] = []
        unchecked = []
        for host in self.host_names:
            restored = _script_output(events, host, "Restore host settings")
            if restored is None or not isinstance(restored.get("settings"), dict):
                res = _ok_result(events, host, "Restore host settings") or {}
                unchecked.append(f"{host}: restore did not run there ({_detail(res)}), so {left_changed(host)}")
                continue
            drift += _settings_drift(host, settings.get(host, {}), restored["settings"], restored.get("failures", {}))
            for key, value in wanted.get(host, {}).items():
                item = restored.get("sysctls", {}).get(key, {})
                now = item.get("after")
                if now is None or now.split() != value.split():
                    drift.append(Drift(host, f"sysctl {key}", value, "unreadable" if now is None else now,
                                       item.get("error", "")))
            if restored.get("workdir_error"):
                drift.append(Drift(host, f"workdir {workdir}", "absent", "present", restored["workdir_error"]))
        if unchecked:
            raise ProvisionError("restore incomplete: " + "; ".join(unchecked)
                                 + "".join(f"; {item}" for item in drift))
        if drift:
            raise DriftError(drift)

    # --- running a playbook -------------------------------------------------------

    def _run(self, name: str, extravars: dict, cancellable: bool = True,
             unreachable_note: Callable[[str], str] = lambda host: "") -> list[dict]:
        """Run playbooks/<name>.yml on the hosts; return its job events or raise."""
        if cancellable and self.cancel():
            raise Interrupted(f"interrupted before the {name} playbook ran")
        _refuse_jinja(extravars, name)
        private_dir = self._fresh_private_dir(name)
        self._last_private_dir = private_dir
        # A short path: a ControlPath socket name must fit in 108 bytes.
        control_dir = tempfile.mkdtemp(prefix="harness-ssh-")
        try:
            result = ansible_runner.run(
                private_data_dir=str(private_dir),
                project_dir=str(PLAYBOOKS),
                playbook=f"{name}.yml",
                inventory=str(self.inventory_path),
                limit=",".join(self.host_names),
                extravars=extravars,
                envvars=_environment(control_dir),
                ident=name,
                quiet=True,
                timeout=TIMEOUTS[name],
                # Poll cancel() at least twice a second, not every 5 s.
                settings={"pexpect_timeout": 0.5},
                # Restore gets a callback that never cancels: without any callback
                # ansible-runner installs its own SIGINT/SIGTERM handlers, replacing the caller's.
                cancel_callback=self.cancel if cancellable else _never,
            )
        except (AnsibleRunnerException, ConfigurationError) as exc:
            raise ProvisionError(f"ansible-runner could not run {name}.yml: {exc}; see {private_dir}") from None
        finally:
            _close_ssh_masters(control_dir)
        _strip_environment(Path(result.config.artifact_dir) / "command", _environment(control_dir))
        stdout_path = Path(result.config.artifact_dir) / "stdout"
        if result.status == "canceled":
            raise Interrupted(f"interrupted during the {name} playbook on {', '.join(self.host_names)}")
        if result.status == "timeout":
            raise ProvisionError(f"the {name} playbook did not finish within {TIMEOUTS[name]} s; see {stdout_path}")
        events = list(result.events)
        stats = result.stats or {}
        for host in self.host_names:
            if host in (stats.get("dark") or {}):
                event = _event(events, "runner_on_unreachable", host)
                why = _unreachable_reason(((event or {}).get("event_data") or {}).get("res") or {})
                raise HostError(
                    f"{host}: unreachable during {name}: {why}; check that it is up and that "
                    f"{self.inventory_path.name} has its right address, port, user and key{unreachable_note(host)}"
                )
        failed_hosts = [host for host in self.host_names if host in (stats.get("failures") or {})]
        if failed_hosts:
            host = failed_hosts[0]
            event = _event(events, "runner_on_failed", host)
            more = f" (and {len(failed_hosts) - 1} more hosts failed)" if len(failed_hosts) > 1 else ""
            if event is None:
                raise ProvisionError(f"{host}: the {name} playbook failed{more}; see {stdout_path}")
            data = event["event_data"]
            res = data.get("res") or {}
            failed_items = [item for item in res.get("results", []) if isinstance(item, dict) and item.get("failed")]
            target = failed_items[0] if failed_items else res
            label = f" for {_label(target)}" if failed_items else ""
            raise ProvisionError(
                f"{host}: task '{data.get('task')}'{label} failed: {_detail(target)}{more}; see {stdout_path}"
            )
        if result.status != "successful" or result.rc != 0 or not result.stats:
            raise ProvisionError(f"the {name} playbook failed (rc {result.rc}): {_stdout_error(stdout_path)}; "
                                 f"see {stdout_path}")
        return events

    def _fresh_private_dir(self, name: str) -> Path:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        taken = [int(p.name[:2]) for p in self.log_dir.iterdir() if re.match(r"^\d\d-", p.name)]
        number = max(taken, default=0) + 1
        while True:
            path = self.log_dir / f"{number:02d}-{name}"
            try:
                path.mkdir()
                return path
            except FileExistsError:
                number += 1

    def _stdout_hint(self) -> Path:
        return (self._last_private_dir or self.log_dir) / "artifacts"


# --- reading job events -------------------------------------------------------------


def _never() -> bool:
    return False


def _environment(control_dir: str) -> dict[str, str]:
    # ansible-runner starts `ansible-playbook` by PATH (its `binary` option would
    # drop the playbook argument): put the harness's own Ansible first.
    tools = str(Path(ansible_tool("ansible-playbook")).parent)
    return {
        **ANSIBLE_ENV,
        "PATH": os.pathsep.join([tools, os.environ.get("PATH", os.defpath)]),
        # Keep-alives: a host that vanishes mid-playbook fails in ~15 s instead of
        # hanging on TCP retransmissions for many minutes.
        "ANSIBLE_SSH_ARGS": "-C -o ControlMaster=auto -o ControlPersist=60s "
                            "-o ServerAliveInterval=5 -o ServerAliveCountMax=3",
        # This call's own ControlPersist masters, closed when it ends (_close_ssh_masters).
        "ANSIBLE_SSH_CONTROL_PATH_DIR": control_dir,
    }


def _close_ssh_masters(control_dir: str) -> None:
    """End the SSH connection masters Ansible left to persist: no process of a run outlives it."""
    for socket_path in Path(control_dir).iterdir():
        try:
            subprocess.run(["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "harness-control"],
                           capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            pass
    shutil.rmtree(control_dir, ignore_errors=True)


def _event(events: list[dict], kind: str, host: str) -> dict | None:
    for event in events:
        data = event.get("event_data", {})
        if event.get("event") == kind and data.get("host") == host and not data.get("ignore_errors"):
            return event
    return None


def _ok_result(events: list[dict], host: str, task: str) -> dict | None:
    for event in events:
        data = event.get("event_data", {})
        if event.get("event") == "runner_on_ok" and data.get("host") == host and data.get("task") == task:
            return data.get("res") or {}
    return None


def _failed_result(events: list[dict], host: str, task: str) -> dict | None:
    for event in events:
        data = event.get("event_data", {})
        if event.get("event") == "runner_on_failed" and data.get("host") == host and data.get("task") == task:
            return data.get("res") or {}
    return None


def _loop_results(events: list[dict], host: str, task: str) -> list[dict]:
    """Per-item results of a loop task (empty if it was skipped or had no items)."""
    res = _ok_result(events, host, task)
    return [item for item in (res or {}).get("results", []) if isinstance(item, dict) and not item.get("skipped")]


def _last_line(text) -> str:
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _detail(res: dict) -> str:
    """The most telling line of a module result: a compiler's first error, else stderr's or msg's last line."""
    stderr = [line.strip() for line in str(res.get("stderr") or "").splitlines() if line.strip()]
    errors = [line for line in stderr if re.search(r"\berror\b", line, re.IGNORECASE)]
    if errors:
        return errors[0]
    if stderr:
        return stderr[-1]
    return _last_line(res.get("msg")) or _last_line(res.get("stdout")) or "no message"


def _unreachable_reason(res: dict) -> str:
    # A loop task reports "All items completed"; the item that hit the host says why.
    for item in res.get("results", []):
        if isinstance(item, dict) and item.get("unreachable") and item.get("msg"):
            res = item
            break
    return re.sub(r"^Task failed: ", "", _last_line(res.get("msg"))) or "no reason given"


def _label(item: dict) -> str:
    label = item.get("_ansible_item_label", item.get("item"))
    if isinstance(label, dict):
        label = label.get("name") or label.get("key") or label.get("path") or label
    return str(label)


def _stdout_error(stdout_path: Path) -> str:
    try:
        lines = stdout_path.read_text(errors="replace").splitlines()
    except OSError:
        return "no output"
    errors = [re.sub(r"^\[?ERROR\]?!?:?\s*", "", line.strip()) for line in lines if "ERROR" in line]
    return errors[-1] if errors else (_last_line("\n".join(lines)) or "no output")


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


def _tools_used(spec) -> list[str]:
    words = set(spec.provision.packages)
    for variant in spec.variants.values():
        if variant.server:
            words.add(variant.server.command[0])
        words.add(variant.load.command[0])
    used = [tool for tool in VERSION_COMMANDS if tool in words or tool in ALWAYS_REPORTED]
    return used


def _script_output(events: list[dict], host: str, task: str) -> dict | None:
    """The JSON that playbooks/files/host_state.py printed in `task` on `host`, if it ran."""
    res = _ok_result(events, host, task) or _failed_result(events, host, task)
    if not res or res.get("rc") != 0:
        return None
    try:
        output = json.loads(res.get("stdout") or "")
    except ValueError:
        return None
    return output if isinstance(output, dict) else None


def _settings_drift(host: str, before: dict[str, str], after: dict[str, str], failures: dict[str, str]) -> list[Drift]:
    """Settings read both before and after that differ; a device or IRQ that came or went is not compared."""
    return [Drift(host, key, value, after[key], failures.get(key, ""))
            for key, value in before.items() if key in after and after[key] != value]


def _net_applied(output: dict | None, net) -> str:
    """What provision.net did on a host, for the report: the device and values, or why it was skipped."""
    if output is None:
        return "not applied"
    if output.get("skipped"):
        return f"skipped: {output['skipped']}"
    values = ", ".join(f"{key}={value}" for key, value in net.model_dump().items() if value is not None)
    return f"{output.get('device')}: {values}"


def _pip_packages(res: dict | None) -> str:
    """`pip list --format json` of the venv as one line: "name==version ..." sorted by name."""
    try:
        listed = json.loads((res or {}).get("stdout") or "")
        return " ".join(sorted(f"{entry['name']}=={entry['version']}" for entry in listed)) or "none"
    except (ValueError, TypeError, KeyError):
        return "unknown"


def _version_line(item: dict) -> str:
    """First line a version command printed (stdout or stderr), without a 'x version: ' prefix."""
    line = ""
    for stream in ("stdout", "stderr"):
        lines = [part.strip() for part in str(item.get(stream) or "").splitlines() if part.strip()]
        if lines:
            line = lines[0]
            break
    return re.sub(r"^\S+ version: ", "", line)
