"""inventory.ini -> hosts by role: the one source for both Ansible and Fabric.

The file is parsed by Ansible itself (`ansible-inventory --list`), so the
harness sees exactly the hosts and variables that the playbooks see.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.errors import InventoryError

LOCAL_ADDRESS = "127.0.0.1"


@dataclass(frozen=True)
class Host:
    name: str  # the inventory name; Ansible's --limit and reports use it
    address: str  # where SSH connects, and where servers on this host listen
    port: int
    user: str
    local: bool  # ansible_connection=local: commands run here, not over SSH
    key_file: str | None = None
    # From `-o UserKnownHostsFile=PATH` in ansible_ssh_common_args: when set, SSH
    # trusts only the keys in this file and rejects any other host key.
    known_hosts: str | None = None

    @property
    def service_address(self) -> str:
        """The address a server on this host binds and a client connects to."""
        return LOCAL_ADDRESS if self.local else self.address


@dataclass(frozen=True)
class Inventory:
    path: Path
    groups: dict[str, tuple[Host, ...]]

    def hosts_for(self, roles: dict[str, str]) -> dict[str, tuple[Host, ...]]:
        """Map each experiment role to the hosts of its inventory group."""
        by_role = {}
        for role, group in roles.items():
            hosts = self.groups.get(group, ())
            if not hosts:
                known = ", ".join(sorted(self.groups)) or "none"
                raise InventoryError(
                    f"{self.path}: role {role!r} needs hosts in group [{group}], which has none (groups: {known})"
                )
            by_role[role] = hosts
        return by_role


def ansible_tool(name: str) -> str:
    """An Ansible command from the harness's own environment, else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise InventoryError(f"{name} not found: install the harness with `make run` or `pip install .`")
    return found


def load(path: str | Path) -> Inventory:
    path = Path(path)
    if not path.is_file():
        raise InventoryError(f"{path}: no such inventory file")
    env = dict(os.environ, ANSIBLE_INVENTORY_UNPARSED_FAILED="True", ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="True")
    result = subprocess.run(
        [ansible_tool("ansible-inventory"), "-i", str(path.resolve()), "--list"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    if result.returncode != 0:
        raise InventoryError(f"{path}: not a valid Ansible inventory: {_last_error_line(result.stderr)}")
    return _from_listing(path, json.loads(result.stdout))


def _from_listing(path: Path, listing: dict) -> Inventory:
    hostvars = listing.get("_meta", {}).get("hostvars", {})
    groups = {}
    for group, content in listing.items():
        if group == "_meta" or not isinstance(content, dict):
            continue
        names = content.get("hosts", [])
        if names:
            groups[group] = tuple(_host(path, name, hostvars.get(name, {})) for name in names)
    return Inventory(path=path, groups=groups)


def _host(path: Path, name: str, variables: dict) -> Host:
    local = variables.get("ansible_connection") == "local"
    try:
        port = int(variables.get("ansible_port", 22))
    except (TypeError, ValueError):
        raise InventoryError(f"{path}: host {name}: ansible_port {variables['ansible_port']!r} is not a number") from None
    return Host(
        name=name,
        address=str(variables.get("ansible_host", name)),
        port=port,
        user=str(variables.get("ansible_user", "root")),
        local=local,
        key_file=variables.get("ansible_ssh_private_key_file"),
        known_hosts=_known_hosts_file(path, name, variables.get("ansible_ssh_common_args")),
    )


def _known_hosts_file(path: Path, name: str, common_args) -> str | None:
    """The first file of `-o UserKnownHostsFile=...` in ansible_ssh_common_args, if any."""
    if not common_args:
        return None
    try:
        words = shlex.split(str(common_args))
    except ValueError as exc:
        raise InventoryError(f"{path}: host {name}: ansible_ssh_common_args cannot be parsed: {exc}") from None
    options = []
    for index, word in enumerate(words):
        if word == "-o" and index + 1 < len(words):
            options.append(words[index + 1])
        elif word.startswith("-o") and len(word) > 2:
            options.append(word[2:])
    for option in options:
        key, separator, value = option.partition("=")
        if not separator:  # ssh also takes `-o "Option value"`
            key, _, value = option.partition(" ")
        if key.strip().lower() == "userknownhostsfile" and value.split():
            return os.path.expanduser(value.split()[0])
    return None


def _last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "Failed" in line] or lines
    return errors[-1] if errors else "ansible-inventory failed"
