"""What the lab leaves behind and how it is found again: the files in BASE/NAME/ (lab.json,
the Ansible inventory, the marker that says lab up made the folder), reading lab.json
back into a Lab, and discovering what of a lab exists on the machine (namespaces, veths,
bridge, processes) and which /24 of 198.18.0.0/15 is free for a new one.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import zlib
from pathlib import Path

from harness.errors import LabError
from harness.hosts.lab import system
from harness.hosts.lab.links import describe_link, link_record
from harness.hosts.lab.model import GROUPS, SSH_PORT, Lab, LabHost, LinkMechanisms, LinkProperties
from harness.hosts.lab.sshd import is_lab_sshd

LAB_NETWORK = ipaddress.IPv4Network("198.18.0.0/15")
STATE_FORMAT = 2  # 2 added "link"; a format-1 lab.json still reads (its link has only queues)
READABLE_FORMATS = (1, 2)
MARKER = ".harness-lab"  # a directory without it was not made by lab_up and is never removed


# --- lab.json and inventory.ini -----------------------------------------------------


def write_state(lab: Lab, delay_note: str | None = None) -> None:
    state = {
        "format": STATE_FORMAT,
        "name": lab.name,
        "subnet": lab.subnet,
        "bridge": lab.bridge,
        "bridge_address": lab.bridge_address,
        "queues": lab.queues,
        "link": link_record(lab, delay_note),
        "hosts": [
            {key: (str(value) if isinstance(value, Path) else value) for key, value in dataclasses.asdict(host).items()}
            | {"namespace": host.namespace}
            for host in lab.hosts
        ],
        "files": {
            "directory": str(lab.directory),
            "client_key": str(lab.client_key),
            "known_hosts": str(lab.known_hosts),
            "inventory": str(lab.inventory),
        },
    }
    partial = lab.state_file.with_suffix(".json.partial")
    partial.write_text(json.dumps(state, indent=2) + "\n")
    partial.replace(lab.state_file)


def lab_from_state(state: dict) -> Lab:
    files = state["files"]
    hosts = tuple(
        LabHost(
            name=entry["name"],
            group=entry["group"],
            address=entry["address"],
            veth=entry["veth"],
            interface=entry["interface"],
            sshd_pid=int(entry["sshd_pid"]),
            **{key: Path(entry[key]) for key in ("sshd_config", "sshd_pid_file", "sshd_log", "host_key")},
        )
        for entry in state["hosts"]
    )
    directory = Path(files["directory"])
    record = state.get("link") or {}  # format 1 had queues only
    link = LinkProperties(**record["properties"]) if record else LinkProperties(queues=int(state["queues"]))
    mechanisms = LinkMechanisms(**{key: (record.get(key) or {}).get("mechanism") for key in ("rate", "loss", "delay")})
    return Lab(
        name=state["name"],
        directory=directory,
        subnet=state["subnet"],
        bridge=state["bridge"],
        bridge_address=state["bridge_address"],
        link=link,
        link_mechanisms=mechanisms,
        hosts=hosts,
        client_key=Path(files["client_key"]),
        known_hosts=Path(files["known_hosts"]),
        inventory=Path(files["inventory"]),
        state_file=directory / "lab.json",
    )


def read_state(directory: Path) -> tuple[dict | None, str | None]:
    """(state, problem): (None, None) when there is no state file."""
    path = directory / "lab.json"
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"{path}: unreadable ({exc})"
    if not isinstance(state, dict) or state.get("format") not in READABLE_FORMATS:
        return None, f"{path}: not a lab state file of format {STATE_FORMAT}"
    try:
        lab_from_state(state)  # every field that status and down read is there
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return None, f"{path}: damaged ({type(exc).__name__}: {exc})"
    return state, None


def inventory_text(lab: Lab) -> str:
    common_args = f"-o UserKnownHostsFile={lab.known_hosts} -o StrictHostKeyChecking=yes"
    lines = [
        f"# Lab {lab.name}, written by `harness lab up`; `harness lab down --name {lab.name}` removes it.",
        "# ansible_host_key_checking=true: ansible-runner turns host-key checking off unless a host says otherwise.",
        f"# Link of every host's eth0: {describe_link(lab.link, lab.link_mechanisms)}.",
        "[lab]",
    ]
    for host in lab.hosts:
        lines.append(
            f"{host.name} ansible_host={host.address} ansible_port={SSH_PORT} ansible_user=root "
            f"ansible_ssh_private_key_file={lab.client_key} ansible_ssh_common_args='{common_args}' "
            f"ansible_host_key_checking=true ansible_python_interpreter=/usr/bin/python3"
        )
    for group in GROUPS:
        lines += ["", f"[{group}]"] + [host.name for host in lab.hosts if host.group == group]
    return "\n".join(lines) + "\n"


# --- what exists on the machine -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Found:
    namespaces: frozenset[str]
    veths: frozenset[str]
    bridge: bool
    processes: frozenset[int]  # the lab's sshd listeners and everything else inside its namespaces
    directory: bool

    @property
    def hosts(self) -> set[str]:
        return set(self.namespaces | self.veths)

    @property
    def anything(self) -> bool:
        return bool(self.namespaces or self.veths or self.bridge or self.processes or self.directory)


def discover(name: str, directory: Path, state: dict | None) -> Found:
    host_pattern = re.compile(rf"{re.escape(name)}-h\d+")
    namespaces = frozenset(ns for ns in system.namespaces() if host_pattern.fullmatch(ns))
    links = {link["ifname"] for link in system.links(None)}
    veths = frozenset(link for link in links if host_pattern.fullmatch(link))
    processes = set()
    # sshd listeners from the state and the pid files, each checked to be this lab's
    # sshd (its command line names the lab's config) before it counts.
    configs = {Path(entry["sshd_config"]): entry.get("sshd_pid") for entry in (state or {}).get("hosts", [])}
    if directory.is_dir() and (directory / MARKER).exists():
        for pid_file in directory.glob(f"{name}-h*/sshd.pid"):
            configs.setdefault(pid_file.parent / "sshd_config", None)
    for config, pid in configs.items():
        for candidate in {pid, system.read_pid(config.parent / "sshd.pid")} - {None}:
            if is_lab_sshd(candidate, config):
                processes.add(candidate)
    # Anything else inside a lab namespace was started on a lab host (an SSH session,
    # a benchmark server) and is part of the lab; left alive, it would keep the
    # namespace and its SSH connections open after the lab is gone.
    for ns in namespaces:
        output = system.run(["ip", "netns", "pids", ns], f"{ns}: list processes", missing_ok=True)
        processes.update(int(word) for word in output.split() if word.isdigit())
    processes.discard(os.getpid())
    return Found(
        namespaces=namespaces,
        veths=veths,
        bridge=f"{name}-br" in links,
        processes=frozenset(processes),
        directory=(directory / MARKER).exists(),
    )


def free_subnet(name: str, base_dir: Path) -> ipaddress.IPv4Network:
    """A /24 of 198.18.0.0/15 that no other lab and no local address or route uses.

    The search starts at a slot derived from the name, so labs with different
    names rarely even probe the same /24.
    """
    taken = []
    for state_file in base_dir.glob("*/lab.json"):
        try:
            if state_file.parent.name != name:
                taken.append(ipaddress.IPv4Network(json.loads(state_file.read_text())["subnet"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    for entry in json.loads(system.run(["ip", "-j", "-4", "addr", "show"], "lab: list addresses") or "[]"):
        for info in entry.get("addr_info", []):
            taken.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    routes = system.run(["ip", "-j", "-4", "route", "show", "table", "all"], "lab: list routes")
    for route in json.loads(routes or "[]"):
        destination = route.get("dst", "default")
        if destination != "default" and route.get("type", "unicast") == "unicast":
            try:
                network = ipaddress.IPv4Network(destination, strict=False)
            except ValueError:
                continue
            if network.prefixlen > 0:
                taken.append(network)
    slots = LAB_NETWORK.num_addresses // 256
    start = zlib.crc32(name.encode()) % slots
    for step in range(slots):
        candidate = ipaddress.IPv4Network((int(LAB_NETWORK.network_address) + ((start + step) % slots) * 256, 24))
        if not any(candidate.overlaps(network) for network in taken):
            return candidate
    raise LabError(f"lab {name}: no free /24 left in {LAB_NETWORK}: remove other labs with `harness lab down`")
