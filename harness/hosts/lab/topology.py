"""Lab up, status and down: the checks before anything is built, building the bridge and
each host's namespace and veth, reading back what exists, and removing all of it.

`lab_up` uses links.py to shape each eth0, sshd.py to give each host its sshd and
state.py to write lab.json and the inventory; `lab_status` and `lab_down` work from what
state.py discovers on the machine, not only from lab.json.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import shutil
from pathlib import Path

from harness.errors import LabError
from harness.hosts import nftables
from harness.hosts.lab import links, sshd, state, system
from harness.hosts.lab.model import (
    GROUPS,
    INTERFACE,
    HostStatus,
    Lab,
    LabHost,
    LabStatus,
    LinkProperties,
    LinkPropertyError,
)

DEFAULT_BASE_DIR = Path("/var/tmp/harness-lab")
MAX_HOSTS = 50  # NAME-h50 still fits 15 characters; addresses end at .60
HOST_OFFSET = 10  # host I gets .(10+I)
# Interface names are limited to 15 characters: NAME-hNN and NAME-br must fit.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]{0,9}")
SAFE_PATH = re.compile(r"[A-Za-z0-9_./@+-]+")  # paths go unquoted into the inventory


def lab_up(
    name: str = "lab",
    hosts: int = 3,
    queues: int | None = None,
    base_dir: Path = DEFAULT_BASE_DIR,
    link: LinkProperties = LinkProperties(),
) -> Lab:
    """Create the lab, or return it if it already exists healthy with this shape.

    `queues` is a shorthand for link.queues. A broken lab, or one with another host
    count or other link properties, is removed and built anew. A lab_up that fails
    removes what it created before raising.
    """
    _check_name(name)
    link = _merge_queues(name, queues, link)
    _check_arguments(name, hosts)
    directory = _lab_directory(name, base_dir)
    _check_directory(name, directory)
    _check_preconditions(link)
    existing = _healthy_lab(name, hosts, link, directory)
    if existing is not None:
        return existing
    lab_down(name, base_dir)
    try:
        return _create(name, hosts, link, directory)
    except BaseException as failure:
        try:
            lab_down(name, base_dir)
        except LabError as cleanup:
            failure.add_note(f"cleanup also failed: {cleanup}")
        raise


def lab_status(name: str = "lab", base_dir: Path = DEFAULT_BASE_DIR) -> LabStatus:
    """What exists of the lab: namespaces, links with state and queues, sshd processes."""
    _check_name(name)
    directory = _lab_directory(name, base_dir)
    recorded_state, state_problem = state.read_state(directory)
    found = state.discover(name, directory, recorded_state)
    problems = [state_problem] if state_problem else []
    if found.anything and recorded_state is None and not state_problem:
        problems.append(f"lab {name}: no {directory / 'lab.json'}: a lab up did not finish")

    bridge = system.link_status(f"{name}-br", None) if found.bridge or recorded_state else None
    if bridge is not None and not bridge.up:
        problems.append(f"bridge {bridge.name}: {bridge.state.lower()}")

    by_name = {entry["name"]: entry for entry in (recorded_state or {}).get("hosts", [])}
    recorded = state.lab_from_state(recorded_state) if recorded_state is not None else None
    statuses = []
    for host in sorted(set(by_name) | found.hosts, key=_host_index):
        entry = by_name.get(host, {})
        if host not in by_name and recorded_state is not None:
            problems.append(f"{host}: not part of {directory / 'lab.json'}")
        namespace_exists = host in found.namespaces
        host_links = [system.link_status(host, None)]
        in_place = None
        if namespace_exists:
            interface = entry.get("interface", INTERFACE)
            host_links.append(system.link_status(interface, host))
            in_place = links.link_in_place(host, interface, recorded)
            if recorded is not None:
                problems.extend(links.link_problems(host, interface, in_place, recorded))
        for link in host_links:
            if not link.up:
                where = f"in namespace {link.namespace}" if link.namespace else "in the root namespace"
                problems.append(f"{host}: link {link.name} {where} is {link.state.lower()}")
        if not namespace_exists:
            problems.append(f"{host}: namespace {host} is missing")
        pid = entry.get("sshd_pid") or system.read_pid(directory / host / "sshd.pid")
        alive = pid is not None and sshd.is_lab_sshd(pid, directory / host / "sshd_config")
        if not alive:
            problems.append(f"{host}: sshd {pid or '(no pid)'} is not running")
        statuses.append(
            HostStatus(
                name=host,
                address=entry.get("address"),
                namespace_exists=namespace_exists,
                links=tuple(host_links),
                sshd_pid=pid,
                sshd_alive=alive,
                link=in_place,
            )
        )
    if recorded_state is not None:
        for key in ("client_key", "known_hosts", "inventory"):
            if not Path(recorded_state["files"][key]).is_file():
                problems.append(f"lab {name}: {recorded_state['files'][key]} is missing")
    return LabStatus(
        name=name,
        directory=directory,
        exists=found.anything,
        subnet=(recorded_state or {}).get("subnet"),
        bridge=bridge,
        hosts=tuple(statuses),
        problems=tuple(problems),
        link=recorded.link if recorded else None,
        link_mechanisms=recorded.link_mechanisms if recorded else None,
    )


def lab_down(name: str = "lab", base_dir: Path = DEFAULT_BASE_DIR) -> None:
    """Remove the lab: its processes, links, namespaces, bridge and files.

    Works from what exists, not only from lab.json, so it also clears a half-built
    lab; removing a lab that does not exist does nothing.
    """
    _check_name(name)
    directory = _lab_directory(name, base_dir)
    recorded_state, _ = state.read_state(directory)
    found = state.discover(name, directory, recorded_state)
    system.stop_processes(found.processes)
    for host in sorted(found.veths, key=_host_index):
        system.run(["ip", "link", "del", host], f"{host}: remove veth {host}", missing_ok=True)
    for host in sorted(found.namespaces, key=_host_index):
        system.run(["ip", "netns", "del", host], f"{host}: remove namespace {host}", missing_ok=True)
    if found.bridge:
        system.run(["ip", "link", "del", f"{name}-br"], f"lab {name}: remove bridge {name}-br", missing_ok=True)
    if (directory / state.MARKER).is_file():
        shutil.rmtree(directory, ignore_errors=True)
    left = state.discover(name, directory, None)
    if left.namespaces or left.veths or left.bridge or left.processes or (directory / state.MARKER).exists():
        leftovers = (
            sorted(left.namespaces | left.veths)
            + ([f"{name}-br"] if left.bridge else [])
            + [f"pid {pid}" for pid in sorted(left.processes)]
            + ([str(directory)] if directory.exists() else [])
        )
        raise LabError(
            f"lab {name}: lab down left {', '.join(leftovers)}: remove them by hand "
            "(ip netns del / ip link del) and run lab down again"
        )


# --- building ---------------------------------------------------------------


def _create(name: str, hosts: int, link: LinkProperties, directory: Path) -> Lab:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    (directory / state.MARKER).write_text(f"harness lab {name}: `harness lab down --name {name}` removes this folder\n")
    subnet = state.free_subnet(name, directory.parent)
    client_key = directory / "client_key"
    sshd.keygen(client_key, f"harness-lab-{name}", f"lab {name}: create the client key")

    bridge = f"{name}-br"
    bridge_address = str(subnet.network_address + 1)
    system.run(["ip", "link", "add", bridge, "type", "bridge"], f"lab {name}: create bridge {bridge}")
    system.run(
        ["ip", "addr", "add", f"{bridge_address}/{subnet.prefixlen}", "dev", bridge],
        f"lab {name}: address bridge {bridge}",
    )
    system.run(["ip", "link", "set", bridge, "up"], f"lab {name}: bring up bridge {bridge}")

    planned = [_plan_host(name, index, subnet, directory) for index in range(1, hosts + 1)]
    for host in planned:
        _add_namespace(host, bridge, subnet, link)
        sshd.keygen(host.host_key, host.name, f"{host.name}: create the host key")
        host.sshd_config.write_text(sshd.sshd_config(host, client_key))
    mechanisms, delay_note = links.choose_mechanisms(link, planned[0].namespace)
    for host in planned:
        links.apply_link(host, link, mechanisms, directory / host.name)
    known_hosts = directory / "known_hosts"
    sshd.write_known_hosts(known_hosts, planned)

    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    started = tuple(dataclasses.replace(host, sshd_pid=sshd.start_sshd(host)) for host in planned)
    lab = Lab(
        name=name,
        directory=directory,
        subnet=str(subnet),
        bridge=bridge,
        bridge_address=bridge_address,
        link=link,
        link_mechanisms=mechanisms,
        hosts=started,
        client_key=client_key,
        known_hosts=known_hosts,
        inventory=directory / "inventory.ini",
        state_file=directory / "lab.json",
    )
    state.write_state(lab, delay_note)
    sshd.wait_for_ssh(lab, sshd.SSH_READY_TIMEOUT)
    lab.inventory.write_text(state.inventory_text(lab))
    return lab


def _plan_host(name: str, index: int, subnet: ipaddress.IPv4Network, directory: Path) -> LabHost:
    host = f"{name}-h{index}"
    folder = directory / host
    folder.mkdir(mode=0o700, exist_ok=True)
    return LabHost(
        name=host,
        group=GROUPS[min(index, len(GROUPS)) - 1],
        address=str(subnet.network_address + HOST_OFFSET + index),
        veth=host,
        interface=INTERFACE,
        sshd_pid=0,
        sshd_config=folder / "sshd_config",
        sshd_pid_file=folder / "sshd.pid",
        sshd_log=folder / "sshd.log",
        host_key=folder / "ssh_host_ed25519_key",
    )


def _add_namespace(host: LabHost, bridge: str, subnet: ipaddress.IPv4Network, link: LinkProperties) -> None:
    """The host's namespace and its veth, with the link's queues and MTU, on the bridge."""
    ns, q = host.namespace, str(link.queues)
    system.run(["ip", "netns", "add", ns], f"{ns}: create namespace {ns}")
    system.run(
        [
            "ip",
            "link",
            "add",
            host.veth,
            "numrxqueues",
            q,
            "numtxqueues",
            q,
            "type",
            "veth",
            "peer",
            "name",
            host.interface,
            "numrxqueues",
            q,
            "numtxqueues",
            q,
            "netns",
            ns,
        ],
        f"{ns}: create veth {host.veth} with {link.queues} queues",
    )
    if link.mtu is not None:
        # Both ends: a veth drops what is longer than the receiving end's MTU. Set before
        # the bridge takes the port, so the bridge's own MTU follows its ports.
        system.run(["ip", "link", "set", host.veth, "mtu", str(link.mtu)], f"{ns}: set mtu {link.mtu} on {host.veth}")
        system.run(
            ["ip", "-n", ns, "link", "set", host.interface, "mtu", str(link.mtu)],
            f"{ns}: set mtu {link.mtu} on {host.interface}",
        )
    system.run(["ip", "link", "set", host.veth, "master", bridge, "up"], f"{ns}: attach {host.veth} to {bridge}")
    system.run(["ip", "-n", ns, "link", "set", "lo", "up"], f"{ns}: bring up lo")
    system.run(
        ["ip", "-n", ns, "addr", "add", f"{host.address}/{subnet.prefixlen}", "dev", host.interface],
        f"{ns}: address {host.interface}",
    )
    system.run(["ip", "-n", ns, "link", "set", host.interface, "up"], f"{ns}: bring up {host.interface}")


def _healthy_lab(name: str, hosts: int, link: LinkProperties, directory: Path) -> Lab | None:
    """The existing lab if it has this shape and link, is healthy and answers SSH; else None."""
    recorded_state, problem = state.read_state(directory)
    if recorded_state is None or problem:
        return None
    lab = state.lab_from_state(recorded_state)
    if len(lab.hosts) != hosts or lab.link != link or not lab_status(name, directory.parent).healthy:
        return None
    try:
        sshd.wait_for_ssh(lab, timeout=2.0)
    except LabError:
        return None
    return lab


# --- preconditions --------------------------------------------------------------


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise LabError(
            f"lab name {name!r}: use 1-10 lowercase letters and digits, starting with a letter "
            "(interface names like NAME-h12 must fit 15 characters)"
        )


def _check_arguments(name: str, hosts: int) -> None:
    _check_name(name)
    if not 1 <= hosts <= MAX_HOSTS:
        raise LabError(f"lab {name}: hosts must be between 1 and {MAX_HOSTS}, not {hosts}")


def _merge_queues(name: str, queues: int | None, link: LinkProperties) -> LinkProperties:
    if not isinstance(link, LinkProperties):
        raise LabError(f"lab {name}: link must be a LinkProperties, not {type(link).__name__}")
    if queues is None:
        return link
    if link != LinkProperties() and link.queues != queues:
        raise LabError(f"lab {name}: queues {queues} and link queues {link.queues} disagree: give the count once")
    try:
        return dataclasses.replace(link, queues=queues)
    except LinkPropertyError as error:
        raise LabError(f"lab {name}: {error}") from None


def _lab_directory(name: str, base_dir: Path) -> Path:
    directory = Path(base_dir).resolve() / name
    return directory


def _check_directory(name: str, directory: Path) -> None:
    if not SAFE_PATH.fullmatch(str(directory)):
        raise LabError(
            f"lab {name}: {directory} has characters other than letters, digits and ._-/@+; "
            "pick a plainer base dir (its paths go unquoted into the inventory)"
        )
    if directory.is_dir() and not (directory / state.MARKER).exists() and any(directory.iterdir()):
        raise LabError(f"lab {name}: {directory} exists and was not made by lab up: pick another name or base dir")


def _check_preconditions(link: LinkProperties = LinkProperties()) -> None:
    if os.geteuid() != 0:
        raise LabError("lab: namespaces, links and sshd need root: run as root")
    for tool, package in (
        ("ip", "iproute2"),
        ("tc", "iproute2"),
        ("ssh-keygen", "openssh-client"),
        ("unshare", "util-linux"),
    ):
        if shutil.which(tool) is None:
            raise LabError(f"lab: {tool} not found: install it (apt-get install {package})")
    system.ensure_package(sshd.SSHD, "openssh-server")
    if link.loss_percent is not None:
        system.ensure_package(nftables.NFT, "nftables")


def _host_index(host: str) -> int:
    return int(host.rsplit("-h", 1)[1])
