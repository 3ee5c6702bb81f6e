"""Provision hosts for an experiment: install its packages, set its sysctls and
provision.net, copy its workload, build its sources, create its data files and its
pip venv, and read back the tool versions a report names.

`Provisioner` is what a run uses: snapshot (harness/hosts/hoststate.py) before it
changes anything, apply (here), and restore (hoststate.py again) after, whatever
happened. Each runs one playbook through harness/hosts/playbook.py.
"""

from __future__ import annotations

import base64
import io
import json
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from harness.errors import ProvisionError, SpecError
from harness.hosts import hoststate
from harness.hosts.hoststate import HostState
from harness.hosts.inventory import Host
from harness.hosts.playbook import Playbooks, script_output, task_result
from harness.run import spec as spec_module
from harness.run.placeholders import fill, parse_size

WORK_ROOT = "/var/tmp/harness"
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Seconds pip may take to install provision.pip into a host's venv.
PIP_TIMEOUT = 900

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
class Workspace:
    workdir: str  # on every host: /var/tmp/harness/<run_id>
    workload: str  # {workdir}/workload  (copy of the experiment's workload folder)
    bin: str  # {workdir}/bin       (compiled builds)
    data: str  # {workdir}/data      (data files)
    # The interpreter for {python}: the run's venv when provision.pip is not empty
    # ({workdir}/venv, removed with the workdir), else the host's own python3.
    python: str = "python3"


class Provisioner:
    """Snapshots, provisions and restores `host_names` (an Ansible --limit) of one inventory.

    `log_dir` receives one subdirectory per playbook call. `cancel` is polled
    while snapshot and apply run (the caller turns SIGINT/SIGTERM into it
    returning True); restore ignores it, since a host must not stay changed.
    """

    def __init__(self, inventory_path: Path, host_names: list[str], log_dir: Path, cancel: Callable[[], bool]):
        if not host_names:
            raise ProvisionError("no hosts to provision: the experiment's roles map to no inventory hosts")
        self.playbooks = Playbooks(inventory_path, host_names, log_dir, cancel)
        self.host_names = self.playbooks.host_names
        self._started_workdir: str | None = None

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
        return hoststate.snapshot(self.playbooks, sysctl_keys, service_addresses)

    # --- apply ------------------------------------------------------------------

    def apply(
        self,
        spec: spec_module.ExperimentSpec,
        workload_dir: Path,
        hosts_by_role: dict[str, tuple[Host, ...]],
        parameters: dict,
        run_id: str,
    ) -> tuple[Workspace, dict[str, dict[str, str]]]:
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
            argv = [
                "gcc",
                *build.flags,
                "-o",
                f"{workspace.bin}/{build.name}",
                *(f"{workspace.workload}/{source}" for source in build.sources),
                *(f"-l{library}" for library in build.libraries),
            ]
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
            "workspace": {
                "workdir": workspace.workdir,
                "workload": workspace.workload,
                "bin": workspace.bin,
                "data": workspace.data,
                "venv": f"{workspace.workdir}/venv",
            },
            "workload_archive": _packed(workload_dir),
            "builds_by_host": builds_by_host,
            "data_by_host": data_by_host,
            "version_commands": [{"tool": tool, "argv": VERSION_COMMANDS[tool]} for tool in tools]
            + [{"tool": "kernel", "argv": ["uname", "-r"]}],
        }
        # From here on the workdir may exist on some host: restore must remove it
        # even if this call fails halfway.
        self._started_workdir = workspace.workdir
        events = self.playbooks.run("provision", extravars)
        versions = {}
        for host in self.host_names:
            found = {}
            printed = (script_output(events, host, "Read tool versions") or {}).get("versions", {})
            for tool, output in printed.items():
                version = _version_line(output)
                if version:
                    found[tool] = version
            if requirements:
                found["pip packages"] = _pip_packages(task_result(events, host, "Read venv packages"))
            if net is not None:
                found["provision.net"] = _net_applied(script_output(events, host, "Tune the service device"), net)
            versions[host] = found
        return workspace, versions

    # --- restore ----------------------------------------------------------------

    def restore(self, state: HostState, workspace_dir: str | None, run_id: str | None = None) -> None:
        """Put the hosts back as the snapshot found them and remove the workdir, then check that
        they are (hoststate.restore says how); never cancelled. Raises DriftError, whose `drift`
        lists each setting still different, or ProvisionError if restore could not run.

        With workspace_dir None, the workdir of the last apply() (if one was
        started) is removed, so a caller whose apply failed early can still clean up.
        With `run_id`, the run's on-host journal is followed and then removed (hoststate.restore).
        """
        workdir = workspace_dir or self._started_workdir
        if workdir is not None:
            path = PurePosixPath(workdir)
            if str(path) != workdir or path.parent != PurePosixPath(WORK_ROOT) or path.name in ("", ".", ".."):
                raise ProvisionError(f"refusing to remove {workdir!r}: the harness only removes {WORK_ROOT}/<run id>")
        hoststate.restore(self.playbooks, state, workdir, run_id)


# --- reading back what apply did ---------------------------------------------------


def _tools_used(spec) -> list[str]:
    words = set(spec.provision.packages)
    for variant in spec.variants.values():
        if variant.server:
            words.add(variant.server.command[0])
        words.add(variant.load.command[0])
    used = [tool for tool in VERSION_COMMANDS if tool in words or tool in ALWAYS_REPORTED]
    return used


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


def _packed(folder: Path) -> str:
    """The folder's content as a base64 gzip tar, for one provisioning task to unpack on
    every host (a copy task sends file by file). Symlinks are followed, as a copy would."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", dereference=True) as archive:
        for path in sorted(folder.iterdir()):
            archive.add(path, arcname=path.name)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _version_line(item: dict) -> str:
    """First line a version command printed (stdout or stderr), without a 'x version: ' prefix."""
    line = ""
    for stream in ("stdout", "stderr"):
        lines = [part.strip() for part in str(item.get(stream) or "").splitlines() if part.strip()]
        if lines:
            line = lines[0]
            break
    return re.sub(r"^\S+ version: ", "", line)
