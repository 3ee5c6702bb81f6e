"""Run one playbook of playbooks/ on some hosts of an inventory, through ansible-runner.

ansible-runner is used as a library. It never raises when a playbook fails, so
every call goes through `Playbooks.run`, which reads the run's status, stats and
job events and turns each kind of fault into one HarnessError line:

    unreachable host          -> HostError naming the host
    failed task               -> ProvisionError naming host, task and the module's message
    cancel() became true      -> Interrupted
    anything else gone wrong  -> ProvisionError pointing at the run's stdout artifact

Values come back through the job events: a playbook registers the output of a
task with a known name (the setup module, `nginx -v` in a loop, the JSON that
playbooks/files/host_state.py prints) and Python reads that task's
`runner_on_ok` event (`task_result`, `script_output`). Nothing is parsed out of
Ansible's human-readable output.

Each playbook call gets a fresh private_data_dir under the run's log directory
(`<log_dir>/01-snapshot/`, `02-provision/`, ...); its artifacts (stdout, job
events, the extravars that were passed) stay there as raw evidence.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import ansible_runner
from ansible_runner.exceptions import AnsibleRunnerException, ConfigurationError

from harness import resources
from harness.errors import HostError, Interrupted, ProvisionError
from harness.hosts.inventory import ansible_tool

PLAYBOOKS = resources.PLAYBOOKS

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
        raise ProvisionError(
            f"{playbook}.yml: extra var {where} holds Jinja delimiters, which Ansible would "
            f"evaluate: {extravars[:80]!r}"
        )


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


class Playbooks:
    """Runs playbooks/<name>.yml on `host_names` (an Ansible --limit) of one inventory.

    `log_dir` receives one subdirectory per playbook call. `cancel` is polled while a
    cancellable playbook runs (the caller turns SIGINT/SIGTERM into it returning True).
    """

    def __init__(self, inventory_path: Path, host_names: list[str], log_dir: Path, cancel: Callable[[], bool]):
        # A relative path would be taken by ansible-runner as inventory *text*.
        self.inventory_path = Path(inventory_path).resolve()
        self.host_names = list(dict.fromkeys(host_names))
        self.log_dir = Path(log_dir)
        self.cancel = cancel
        self._last_private_dir: Path | None = None

    def run(
        self,
        name: str,
        extravars: dict,
        cancellable: bool = True,
        unreachable_note: Callable[[str], str] = lambda host: "",
    ) -> list[dict]:
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
                f"{host}: task '{data.get('task')}'{label} failed: {detail(target)}{more}; see {stdout_path}"
            )
        if result.status != "successful" or result.rc != 0 or not result.stats:
            raise ProvisionError(
                f"the {name} playbook failed (rc {result.rc}): {_stdout_error(stdout_path)}; see {stdout_path}"
            )
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

    def stdout_hint(self) -> Path:
        """Where the last call's artifacts are, for an error message that says where to look."""
        return (self._last_private_dir or self.log_dir) / "artifacts"


# --- the environment of a call, and its SSH masters ---------------------------------


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
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                ["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "harness-control"],
                capture_output=True,
                timeout=10,
                check=False,
            )
    shutil.rmtree(control_dir, ignore_errors=True)


# --- reading job events -------------------------------------------------------------


def _event(events: list[dict], kind: str, host: str) -> dict | None:
    for event in events:
        data = event.get("event_data", {})
        if event.get("event") == kind and data.get("host") == host and not data.get("ignore_errors"):
            return event
    return None


def task_result(events: list[dict], host: str, task: str, kind: str = "runner_on_ok") -> dict | None:
    """The module result of `task` on `host` from its event of this kind, if there is one."""
    for event in events:
        data = event.get("event_data", {})
        if event.get("event") == kind and data.get("host") == host and data.get("task") == task:
            return data.get("res") or {}
    return None


def _last_line(text) -> str:
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def detail(res: dict) -> str:
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


def script_output(events: list[dict], host: str, task: str) -> dict | None:
    """The JSON that playbooks/files/host_state.py printed in `task` on `host`, if it ran."""
    res = task_result(events, host, task) or task_result(events, host, task, "runner_on_failed")
    if not res or res.get("rc") != 0:
        return None
    try:
        output = json.loads(res.get("stdout") or "")
    except ValueError:
        return None
    return output if isinstance(output, dict) else None
