"""inventory.ini -> hosts by role: the one source for both Ansible and Fabric.

The file is parsed by Ansible itself (`ansible-inventory --list`), so the
harness sees exactly the hosts and variables that the playbooks see. The hosts a
run uses are checked before anything connects: plain names and addresses, a port
that exists, key and known_hosts files that can be read.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.errors import InventoryError

LOCAL_ADDRESS = "127.0.0.1"

# What the harness accepts in the values it reads from an inventory. Ansible would
# evaluate a Jinja template in them ("{{ lookup('pipe', ...) }}") and Fabric would
# not, so the two could reach different hosts; a shell word or a comma in a name
# would change the meaning of Ansible's --limit. Names and addresses are plain.
HOST_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
ADDRESS = re.compile(r"^[A-Za-z0-9_.:%-]+$")  # a DNS name, an IPv4 or an IPv6 address
USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
TEMPLATE = re.compile(r"\{\{|\{%|\{#")


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
            for host in hosts:
                _check_host(self.path, host)
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
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise InventoryError(f"{_parse_failure(path, result.stderr)} (not a valid Ansible inventory)")
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
        raise InventoryError(
            f"{path}: host {name}: ansible_port {variables['ansible_port']!r} is not a number"
        ) from None
    if not 1 <= port <= 65535:
        raise InventoryError(f"{path}: host {name}: ansible_port {port} is not a TCP port (1-65535)")
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


def _check_host(path: Path, host: Host) -> None:
    """Refuse a host whose name or connection values are not plain text, or whose
    key or known_hosts file is missing: before the run, with the host named."""

    def refuse(field: str, value: str, expected: str) -> None:
        raise InventoryError(f"{path}: host {host.name}: {field} {value!r} is not {expected}")

    if not HOST_NAME.match(host.name):
        refuse("the name", host.name, "a plain host name (letters, digits, '_', '.', '-')")
    if host.local:
        return
    if not ADDRESS.match(host.address):
        refuse("ansible_host", host.address, "a host name or an IP address")
    if not USER.match(host.user):
        refuse("ansible_user", host.user, "a user name")
    for field, value in (
        ("ansible_ssh_private_key_file", host.key_file),
        ("UserKnownHostsFile (ansible_ssh_common_args)", host.known_hosts),
    ):
        if value is None:
            continue
        if TEMPLATE.search(str(value)):
            refuse(field, str(value), "a file path (Jinja templates are not evaluated here)")
        if not os.path.isfile(value) or not os.access(value, os.R_OK):
            raise InventoryError(f"{path}: host {host.name}: {field} {value}: no such readable file")


def _parse_failure(path: Path, stderr: str) -> str:
    """`FILE[:LINE]: why` from ansible-inventory's warnings: the reason of the plugin
    that fits the file (yaml for .yml/.yaml, ini otherwise), with the line when the
    reason quotes the file's text."""
    reasons = dict(re.findall(r"Failed to parse inventory with '(\w+)' plugin: (.+)", stderr))
    plugin = "yaml" if path.suffix in (".yml", ".yaml") else "ini"
    reason = reasons.get(plugin) or next(iter(reasons.values()), None)
    if reason is None:
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        errors = [line for line in lines if "ERROR" in line] or lines
        return f"{path}: {errors[-1] if errors else 'ansible-inventory failed'}"
    reason = re.sub(r"^Failed to parse inventory: ", "", reason.strip())
    reason = re.sub(r", found \"<class '[^']*'>\" instead", "", reason)  # a Python type name helps nobody
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    quoted = re.findall(r"'([^']{2,})'", reason)
    for number, line in enumerate(lines, 1):
        if any(fragment.strip() in line for fragment in quoted if fragment.strip() not in (str(path), path.name)):
            return f"{path}:{number}: {reason}"
    if plugin == "ini":
        # Ansible's INI parser reports an unclosed section header only as an unpacking error.
        for number, line in enumerate(lines, 1):
            if line.lstrip().startswith("[") and "]" not in line:
                return f"{path}:{number}: section header {line.strip()!r} lacks its closing ']'"
    return f"{path}: {reason}"
