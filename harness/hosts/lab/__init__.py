"""A lab of hosts on this machine: network namespaces on one bridge, each with its own sshd.

`lab_up` builds the lab and writes an Ansible inventory for it, so experiments run
against lab hosts the way they run against real ones: over SSH, as root, with
host-key checking on. `lab_status` reports what exists; `lab_down` removes it all.
Nothing here prints: a failure is a LabError naming the host and the step.

Layout of lab NAME with N hosts, every address in 198.18.0.0/15 (RFC 2544):

    bridge NAME-br       in the root namespace, 198.18.K.1/24 (K picked per lab)
    namespace NAME-hI    lo up; eth0 198.18.K.(10+I)/24 with Q rx and Q tx queues;
                         its own hostname (NAME-hI) and its own sshd on port 22
    veth NAME-hI         the root-side end of NAME-hI's eth0, a port of the bridge
    BASE/NAME/           client key, known_hosts, inventory.ini, lab.json, NAME-hI/ (sshd files)

Link properties (`LinkProperties`) apply to every host's eth0, the same on each host,
so traffic between two hosts meets them once per direction:

    queues   rx and tx queues of the veth pair (numrxqueues/numtxqueues)
    mtu      both ends of the veth pair (`ip link set ... mtu`); the bridge follows
    rate     a TBF qdisc at the root of eth0: egress is shaped to the rate
    loss     nftables table `inet harness_lab` in the host's namespace: a prerouting
             chain drops packets arriving on eth0 with `numgen random mod 10000 < N`.
             TCP port 22 (source or destination) is exempt, so the SSH control
             channel of the harness stays reliable. Packets are dropped where they
             arrive, not where they leave: a drop in the sender's output hook would
             make its sendto() fail with EPERM, which real loss never does. And
             eth0's gso_max_segs is set to 1, so a dropped packet is one MTU-sized
             packet and not a 64 KB GSO batch.
    delay    the netem qdisc where the kernel has it (checked on a throwaway veth in
             the first host's namespace); where it has not, the link gets no delay and
             lab.json records the mechanism "proxy": an experiment starts
             harness/hosts/delay_proxy.py on a host (`harness.hosts.linkdelay.start_delay_proxy`)
             and sends its traffic through it.

lab.json records each property with the mechanism used; `lab_status` reads back what is
in place (tc qdisc, ip link, nft list table) and reports any difference as a problem.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.errors import HostError, LabError
from harness.hosts.inventory import Host
from harness.hosts.linkdelay import PROGRAM as DELAY_PROXY_PROGRAM
from harness.hosts.remote import HostSession

DEFAULT_BASE_DIR = Path("/var/tmp/harness-lab")
LAB_NETWORK = ipaddress.IPv4Network("198.18.0.0/15")
MAX_HOSTS = 50  # NAME-h50 still fits 15 characters; addresses end at .60
MAX_QUEUES = 64
HOST_OFFSET = 10  # host I gets .(10+I)
# Interface names are limited to 15 characters: NAME-hNN and NAME-br must fit.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]{0,9}")
SAFE_PATH = re.compile(r"[A-Za-z0-9_./@+-]+")  # paths go unquoted into the inventory
STATE_FORMAT = 2  # 2 added "link"; a format-1 lab.json still reads (its link has only queues)
READABLE_FORMATS = (1, 2)
SSH_PORT = 22
SSHD = Path("/usr/sbin/sshd")
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
INSTALL_LOCK = Path("/run/harness-lab-install.lock")
MARKER = ".harness-lab"  # a directory without it was not made by lab_up and is never removed
INTERFACE = "eth0"  # the host's end of its veth, inside its namespace
GROUPS = ("servers", "clients", "others")
SSH_READY_TIMEOUT = 10.0
CONNECT_TIMEOUT = 3.0
NFT = Path("/usr/sbin/nft")
NFT_TABLE = "harness_lab"  # family inet, in each host's namespace
LOSS_SCALE = 10000  # numgen draws 0..9999: loss has a resolution of 0.01 %
DEFAULT_MTU = 1500  # what a new veth gets
MIN_MTU, MAX_MTU = 68, 65535  # IPv4's minimum; the veth driver's maximum
MAX_RATE_MBIT = 100_000.0
MAX_DELAY_MS = 60_000.0
TBF_LATENCY_MS = 50  # longest a packet may wait in the TBF queue; sets its byte limit
TBF_BURST_SECONDS = 0.004  # a burst of 4 ms at the rate (a HZ=250 tick), at least 10 frames
NETEM_PROBE = "hlnetem0"  # a throwaway veth inside the first host's namespace


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_number(field: str, value, low: float, high: float, unit: str, zero_ok: bool) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LinkPropertyError(field, f"must be a number of {unit}, not {value!r}")
    if value < low or value > high or (value == 0 and not zero_ok):
        span = f"from {low:g} to {high:g}" if zero_ok else f"more than {low:g} and at most {high:g}"
        raise LinkPropertyError(field, f"must be {span} {unit}, not {value:g}")


class LinkPropertyError(ValueError):
    """A link property out of range; `field` names the LinkProperties field at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.problem = message


@dataclasses.dataclass(frozen=True)
class LinkProperties:
    """What every host's eth0 gets. None (or 0 for loss and delay) leaves a property off."""

    queues: int = 2  # rx and tx queues of the veth pair
    mtu: int | None = None  # bytes; None keeps the veth default (1500)
    rate_mbit: float | None = None  # egress rate limit in Mbit/s (10^6 bit/s)
    loss_percent: float | None = None  # share of packets dropped on arrival, in steps of 0.01 %
    delay_ms: float | None = None  # added one-way delay per host (netem) or through a proxy

    def __post_init__(self):
        if not _is_int(self.queues) or not 1 <= self.queues <= MAX_QUEUES:
            raise LinkPropertyError("queues", f"must be a whole number from 1 to {MAX_QUEUES}, not {self.queues!r}")
        if self.mtu is not None and (not _is_int(self.mtu) or not MIN_MTU <= self.mtu <= MAX_MTU):
            raise LinkPropertyError("mtu", f"must be a whole number of bytes from {MIN_MTU} to {MAX_MTU}, "
                                           f"not {self.mtu!r}")
        _check_number("rate_mbit", self.rate_mbit, 0.0, MAX_RATE_MBIT, "Mbit/s", zero_ok=False)
        _check_number("loss_percent", self.loss_percent, 0.0, 100.0, "%", zero_ok=True)
        _check_number("delay_ms", self.delay_ms, 0.0, MAX_DELAY_MS, "ms", zero_ok=True)
        if self.loss_percent is not None and abs(self.loss_percent * 100 - round(self.loss_percent * 100)) > 1e-6:
            raise LinkPropertyError("loss_percent", f"{self.loss_percent:g} is finer than 0.01 % "
                                                    f"(nftables draws from {LOSS_SCALE} values): round it")
        # 0 % loss and 0 ms delay mean "off": store them as None so equal links compare equal
        for field in ("loss_percent", "delay_ms"):
            if getattr(self, field) == 0:
                object.__setattr__(self, field, None)

    @property
    def loss_threshold(self) -> int | None:
        """N in `numgen random mod 10000 < N`."""
        return None if self.loss_percent is None else round(self.loss_percent * 100)

    def describe(self) -> str:
        parts = [f"{self.queues} queues", f"mtu {self.mtu or DEFAULT_MTU}"]
        if self.rate_mbit is not None:
            parts.append(f"rate {self.rate_mbit:g} Mbit/s")
        if self.loss_percent is not None:
            parts.append(f"loss {self.loss_percent:g}%")
        if self.delay_ms is not None:
            parts.append(f"delay {self.delay_ms:g} ms")
        return ", ".join(parts)


@dataclasses.dataclass(frozen=True)
class LinkMechanisms:
    """How each property that is on was put in place; None where the property is off."""

    rate: str | None = None  # "tbf"
    loss: str | None = None  # "nftables"
    delay: str | None = None  # "netem" (in the link) or "proxy" (not in the link: start one)


@dataclasses.dataclass(frozen=True)
class LinkInPlace:
    """What a host's eth0 has, read back from the kernel, with the mechanism of each property."""

    mtu: int | None
    qdisc: str | None  # kind of the root qdisc: noqueue, tbf, netem
    rate_mbit: float | None
    rate_mechanism: str | None  # "tbf"
    loss_percent: float | None
    loss_mechanism: str | None  # "nftables"
    ssh_exempt: bool  # the nftables table accepts tcp port 22 before it drops
    gso_max_segs: int | None
    delay_ms: float | None  # netem's delay, or the recorded delay of a proxy
    delay_mechanism: str | None  # "netem" (read from tc) or "proxy" (from lab.json: nothing in the link)

    def describe(self) -> str:
        parts = [f"mtu {self.mtu}" if self.mtu else "mtu ?"]
        if self.rate_mbit is not None:
            parts.append(f"rate {self.rate_mbit:g} Mbit/s ({self.rate_mechanism})")
        if self.loss_percent is not None:
            parts.append(f"loss {self.loss_percent:g}% ({self.loss_mechanism})")
        if self.delay_ms is not None:
            parts.append(f"delay {self.delay_ms:g} ms ({self.delay_mechanism})")
        return ", ".join(parts)


@dataclasses.dataclass(frozen=True)
class LabHost:
    name: str  # inventory name, namespace name and hostname inside the namespace
    group: str  # servers (host 1), clients (host 2) or others
    address: str
    veth: str  # the root-side end, a port of the bridge
    interface: str  # the end inside the namespace
    sshd_pid: int
    sshd_config: Path
    sshd_pid_file: Path
    sshd_log: Path
    host_key: Path

    @property
    def namespace(self) -> str:
        return self.name


@dataclasses.dataclass(frozen=True)
class Lab:
    name: str
    directory: Path
    subnet: str
    bridge: str
    bridge_address: str
    link: LinkProperties
    link_mechanisms: LinkMechanisms
    hosts: tuple[LabHost, ...]
    client_key: Path
    known_hosts: Path
    inventory: Path
    state_file: Path

    @property
    def queues(self) -> int:
        return self.link.queues

    def harness_host(self, host: LabHost) -> Host:
        """The host as harness.hosts.inventory reads it from the lab's inventory."""
        return Host(name=host.name, address=host.address, port=SSH_PORT, user="root", local=False,
                    key_file=str(self.client_key), known_hosts=str(self.known_hosts))


@dataclasses.dataclass(frozen=True)
class LinkStatus:
    name: str
    namespace: str | None  # None: the root namespace
    state: str  # the kernel's operstate (UP, DOWN, UNKNOWN) or "missing"
    rx_queues: int | None
    tx_queues: int | None
    mtu: int | None = None

    @property
    def up(self) -> bool:
        return self.state == "UP"


@dataclasses.dataclass(frozen=True)
class HostStatus:
    name: str
    address: str | None
    namespace_exists: bool
    links: tuple[LinkStatus, ...]  # the root-side veth, then the interface inside the namespace
    sshd_pid: int | None
    sshd_alive: bool
    link: LinkInPlace | None = None  # None when the namespace is missing


@dataclasses.dataclass(frozen=True)
class LabStatus:
    name: str
    directory: Path
    exists: bool  # some part of the lab is present: namespace, link, process or directory
    subnet: str | None
    bridge: LinkStatus | None
    hosts: tuple[HostStatus, ...]
    problems: tuple[str, ...]  # one line each; empty for a healthy lab
    link: LinkProperties | None = None  # as lab.json records it
    link_mechanisms: LinkMechanisms | None = None

    @property
    def healthy(self) -> bool:
        return self.exists and bool(self.hosts) and not self.problems


# --- public functions ---------------------------------------------------------


def lab_up(name: str = "lab", hosts: int = 3, queues: int | None = None, base_dir: Path = DEFAULT_BASE_DIR,
           link: LinkProperties = LinkProperties()) -> Lab:
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
    state, state_problem = _read_state(directory)
    found = _discover(name, directory, state)
    problems = [state_problem] if state_problem else []
    if found.anything and state is None and not state_problem:
        problems.append(f"lab {name}: no {directory / 'lab.json'}: a lab up did not finish")

    bridge = _link_status(f"{name}-br", None) if found.bridge or state else None
    if bridge is not None and not bridge.up:
        problems.append(f"bridge {bridge.name}: {bridge.state.lower()}")

    by_name = {entry["name"]: entry for entry in (state or {}).get("hosts", [])}
    recorded = _lab_from_state(state) if state is not None else None
    statuses = []
    for host in sorted(set(by_name) | found.hosts, key=_host_index):
        entry = by_name.get(host, {})
        if host not in by_name and state is not None:
            problems.append(f"{host}: not part of {directory / 'lab.json'}")
        namespace_exists = host in found.namespaces
        links = [_link_status(host, None)]
        in_place = None
        if namespace_exists:
            interface = entry.get("interface", INTERFACE)
            links.append(_link_status(interface, host))
            in_place = _link_in_place(host, interface, recorded)
            if recorded is not None:
                problems.extend(_link_problems(host, interface, in_place, recorded))
        for link in links:
            if not link.up:
                where = f"in namespace {link.namespace}" if link.namespace else "in the root namespace"
                problems.append(f"{host}: link {link.name} {where} is {link.state.lower()}")
        if not namespace_exists:
            problems.append(f"{host}: namespace {host} is missing")
        pid = entry.get("sshd_pid") or _read_pid(directory / host / "sshd.pid")
        alive = pid is not None and _is_lab_sshd(pid, directory / host / "sshd_config")
        if not alive:
            problems.append(f"{host}: sshd {pid or '(no pid)'} is not running")
        statuses.append(HostStatus(name=host, address=entry.get("address"), namespace_exists=namespace_exists,
                                   links=tuple(links), sshd_pid=pid, sshd_alive=alive, link=in_place))
    if state is not None:
        for key in ("client_key", "known_hosts", "inventory"):
            if not Path(state["files"][key]).is_file():
                problems.append(f"lab {name}: {state['files'][key]} is missing")
    return LabStatus(name=name, directory=directory, exists=found.anything, subnet=(state or {}).get("subnet"),
                     bridge=bridge, hosts=tuple(statuses), problems=tuple(problems),
                     link=recorded.link if recorded else None,
                     link_mechanisms=recorded.link_mechanisms if recorded else None)


def lab_down(name: str = "lab", base_dir: Path = DEFAULT_BASE_DIR) -> None:
    """Remove the lab: its processes, links, namespaces, bridge and files.

    Works from what exists, not only from lab.json, so it also clears a half-built
    lab; removing a lab that does not exist does nothing.
    """
    _check_name(name)
    directory = _lab_directory(name, base_dir)
    state, _ = _read_state(directory)
    found = _discover(name, directory, state)
    _stop_processes(found.processes)
    for host in sorted(found.veths, key=_host_index):
        _run(["ip", "link", "del", host], f"{host}: remove veth {host}", missing_ok=True)
    for host in sorted(found.namespaces, key=_host_index):
        _run(["ip", "netns", "del", host], f"{host}: remove namespace {host}", missing_ok=True)
    if found.bridge:
        _run(["ip", "link", "del", f"{name}-br"], f"lab {name}: remove bridge {name}-br", missing_ok=True)
    if (directory / MARKER).is_file():
        shutil.rmtree(directory, ignore_errors=True)
    left = _discover(name, directory, None)
    if left.namespaces or left.veths or left.bridge or left.processes or (directory / MARKER).exists():
        leftovers = sorted(left.namespaces | left.veths) + ([f"{name}-br"] if left.bridge else []) + \
            [f"pid {pid}" for pid in sorted(left.processes)] + ([str(directory)] if directory.exists() else [])
        raise LabError(f"lab {name}: lab down left {', '.join(leftovers)}: remove them by hand "
                       "(ip netns del / ip link del) and run lab down again")


# --- building ---------------------------------------------------------------


def _create(name: str, hosts: int, link: LinkProperties, directory: Path) -> Lab:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    (directory / MARKER).write_text(f"harness lab {name}: `harness lab down --name {name}` removes this folder\n")
    subnet = _free_subnet(name, directory.parent)
    client_key = directory / "client_key"
    _keygen(client_key, f"harness-lab-{name}", f"lab {name}: create the client key")

    bridge = f"{name}-br"
    bridge_address = str(subnet.network_address + 1)
    _run(["ip", "link", "add", bridge, "type", "bridge"], f"lab {name}: create bridge {bridge}")
    _run(["ip", "addr", "add", f"{bridge_address}/{subnet.prefixlen}", "dev", bridge],
         f"lab {name}: address bridge {bridge}")
    _run(["ip", "link", "set", bridge, "up"], f"lab {name}: bring up bridge {bridge}")

    planned = [_plan_host(name, index, subnet, directory) for index in range(1, hosts + 1)]
    for host in planned:
        _add_namespace(host, bridge, subnet, link)
        _keygen(host.host_key, host.name, f"{host.name}: create the host key")
        host.sshd_config.write_text(_sshd_config(host, client_key))
    mechanisms, delay_note = _choose_mechanisms(link, planned[0].namespace)
    for host in planned:
        _apply_link(host, link, mechanisms, directory / host.name)
    known_hosts = directory / "known_hosts"
    entries = []
    for host in planned:
        key_type, key = Path(f"{host.host_key}.pub").read_text().split()[:2]
        entries.append(f"{host.address} {key_type} {key}\n")  # port 22: the bare address, no [addr]:port
    _write_private(known_hosts, "".join(entries))

    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    started = tuple(dataclasses.replace(host, sshd_pid=_start_sshd(host)) for host in planned)
    lab = Lab(name=name, directory=directory, subnet=str(subnet), bridge=bridge, bridge_address=bridge_address,
              link=link, link_mechanisms=mechanisms, hosts=started, client_key=client_key, known_hosts=known_hosts,
              inventory=directory / "inventory.ini", state_file=directory / "lab.json")
    _write_state(lab, delay_note)
    _wait_for_ssh(lab, SSH_READY_TIMEOUT)
    lab.inventory.write_text(_inventory_text(lab))
    return lab


def _plan_host(name: str, index: int, subnet: ipaddress.IPv4Network, directory: Path) -> LabHost:
    host = f"{name}-h{index}"
    folder = directory / host
    folder.mkdir(mode=0o700, exist_ok=True)
    return LabHost(
        name=host, group=GROUPS[min(index, len(GROUPS)) - 1], address=str(subnet.network_address + HOST_OFFSET + index),
        veth=host, interface=INTERFACE, sshd_pid=0, sshd_config=folder / "sshd_config",
        sshd_pid_file=folder / "sshd.pid", sshd_log=folder / "sshd.log", host_key=folder / "ssh_host_ed25519_key",
    )


def _add_namespace(host: LabHost, bridge: str, subnet: ipaddress.IPv4Network, link: LinkProperties) -> None:
    ns, q = host.namespace, str(link.queues)
    _run(["ip", "netns", "add", ns], f"{ns}: create namespace {ns}")
    _run(["ip", "link", "add", host.veth, "numrxqueues", q, "numtxqueues", q, "type", "veth",
          "peer", "name", host.interface, "numrxqueues", q, "numtxqueues", q, "netns", ns],
         f"{ns}: create veth {host.veth} with {link.queues} queues")
    if link.mtu is not None:
        # Both ends: a veth drops what is longer than the receiving end's MTU. Set before
        # the bridge takes the port, so the bridge's own MTU follows its ports.
        _run(["ip", "link", "set", host.veth, "mtu", str(link.mtu)], f"{ns}: set mtu {link.mtu} on {host.veth}")
        _run(["ip", "-n", ns, "link", "set", host.interface, "mtu", str(link.mtu)],
             f"{ns}: set mtu {link.mtu} on {host.interface}")
    _run(["ip", "link", "set", host.veth, "master", bridge, "up"], f"{ns}: attach {host.veth} to {bridge}")
    _run(["ip", "-n", ns, "link", "set", "lo", "up"], f"{ns}: bring up lo")
    _run(["ip", "-n", ns, "addr", "add", f"{host.address}/{subnet.prefixlen}", "dev", host.interface],
         f"{ns}: address {host.interface}")
    _run(["ip", "-n", ns, "link", "set", host.interface, "up"], f"{ns}: bring up {host.interface}")


# --- link properties -----------------------------------------------------------


def _choose_mechanisms(link: LinkProperties, probe_namespace: str) -> tuple[LinkMechanisms, str | None]:
    """The mechanism for each property that is on, and why delay is not netem (or None)."""
    delay, delay_note = None, None
    if link.delay_ms is not None:
        netem_error = _netem_missing(probe_namespace)
        delay = "proxy" if netem_error else "netem"
        delay_note = f"netem unavailable ({netem_error})" if netem_error else None
    return LinkMechanisms(rate="tbf" if link.rate_mbit is not None else None,
                          loss="nftables" if link.loss_percent is not None else None, delay=delay), delay_note


def _netem_missing(namespace: str) -> str | None:
    """None if a netem qdisc can be added here, else tc's reason. Tried on a throwaway veth."""
    _run(["ip", "-n", namespace, "link", "add", NETEM_PROBE, "type", "veth", "peer", "name", NETEM_PROBE + "p"],
         f"{namespace}: create veth {NETEM_PROBE} to check for netem")
    try:
        result = subprocess.run(["tc", "-n", namespace, "qdisc", "add", "dev", NETEM_PROBE, "root", "netem",
                                 "delay", "1ms"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise LabError(f"{namespace}: check for netem: tc did not finish within 30 s") from None
    finally:
        _run(["ip", "-n", namespace, "link", "del", NETEM_PROBE], f"{namespace}: remove veth {NETEM_PROBE}",
             missing_ok=True)
    return None if result.returncode == 0 else _last_line(result.stderr or result.stdout)


def _apply_link(host: LabHost, link: LinkProperties, mechanisms: LinkMechanisms, folder: Path) -> None:
    """Put rate, delay and loss on the host's eth0 (queues and MTU come with the veth)."""
    ns, dev = host.namespace, host.interface
    tc = ["tc", "-n", ns, "qdisc", "replace", "dev", dev]
    if mechanisms.delay == "netem":
        netem = ["netem", "delay", f"{link.delay_ms:g}ms", "limit", str(_netem_limit(link))]
        _run(tc + ["root", "handle", "1:"] + netem, f"{ns}: add netem delay {link.delay_ms:g} ms on {dev}")
        if mechanisms.rate == "tbf":  # netem's single class takes the shaper as its child
            _run(tc + ["parent", "1:1", "handle", "10:", "tbf"] + _tbf_args(link),
                 f"{ns}: add tbf under netem on {dev}")
    elif mechanisms.rate == "tbf":
        _run(tc + ["root", "handle", "1:", "tbf"] + _tbf_args(link),
             f"{ns}: add tbf rate {link.rate_mbit:g} Mbit/s on {dev}")
    if mechanisms.loss == "nftables":
        ruleset = folder / "nftables.conf"
        ruleset.write_text(_nft_ruleset(link, dev))
        _run(["ip", "netns", "exec", ns, str(NFT), "-f", str(ruleset)], f"{ns}: load nftables table {NFT_TABLE}")
        # One MTU-sized packet per drop: without this, TCP over veth moves 64 KB GSO
        # batches, and one drop would lose some 40 packets at once.
        for argv in (["ip", "-n", ns, "link", "set", dev, "gso_max_segs", "1"],
                     ["ip", "link", "set", host.veth, "gso_max_segs", "1"]):
            _run(argv, f"{ns}: set gso_max_segs 1 on {argv[-3]}")


def _tbf_args(link: LinkProperties) -> list[str]:
    return ["rate", f"{round(link.rate_mbit * 1e6)}bit", "burst", str(_tbf_burst(link)),
            "latency", f"{TBF_LATENCY_MS}ms"]


def _tbf_burst(link: LinkProperties) -> int:
    """Bytes the bucket holds: 4 ms at the rate, and never under 10 full frames.

    Less than one frame and TBF drops (or must split) every packet; much less than a
    timer tick's worth of traffic and the rate is not reached.
    """
    frame = (link.mtu or DEFAULT_MTU) + 14  # TBF counts the Ethernet header
    return max(math.ceil(link.rate_mbit * 1e6 / 8 * TBF_BURST_SECONDS), 10 * frame)


def _netem_limit(link: LinkProperties) -> int:
    """Packets netem may hold: the default 1000, or twice what the delay holds at the rate."""
    if link.rate_mbit is None:
        return 1000
    in_flight = link.rate_mbit * 1e6 / 8 * link.delay_ms / 1000 / (link.mtu or DEFAULT_MTU)
    return max(1000, math.ceil(2 * in_flight))


def _nft_ruleset(link: LinkProperties, dev: str) -> str:
    # "table; delete table; table {...}" replaces the table atomically, existing or not
    return "\n".join([
        f"# loss {link.loss_percent:g}% on arrival at {dev}, written by harness lab up",
        f"table inet {NFT_TABLE}",
        f"delete table inet {NFT_TABLE}",
        f"table inet {NFT_TABLE} {{",
        "  chain prerouting {",
        "    type filter hook prerouting priority raw; policy accept;",
        f'    iifname "{dev}" tcp dport {SSH_PORT} accept comment "SSH, the control channel, is never dropped"',
        f'    iifname "{dev}" tcp sport {SSH_PORT} accept',
        f'    iifname "{dev}" numgen random mod {LOSS_SCALE} < {link.loss_threshold} drop',
        "  }",
        "}",
        "",
    ])


def _link_in_place(namespace: str, interface: str, recorded: Lab | None) -> LinkInPlace:
    """Read back the host's eth0: MTU and gso_max_segs, its qdiscs, the nftables table."""
    entry = _link_entry(interface, namespace) or {}
    qdiscs = _tc_qdiscs(namespace, interface)
    root = next((q for q in qdiscs if q.get("root")), None)
    tbf = next((q for q in qdiscs if q.get("kind") == "tbf"), None)
    netem = next((q for q in qdiscs if q.get("kind") == "netem"), None)
    rate = tbf["options"]["rate"] * 8 / 1e6 if tbf and "rate" in tbf.get("options", {}) else None
    delay, delay_mechanism = None, None
    if netem is not None:
        delay, delay_mechanism = _netem_delay_ms(namespace, interface), "netem"
    elif recorded is not None and recorded.link_mechanisms.delay == "proxy":
        delay, delay_mechanism = recorded.link.delay_ms, "proxy"
    loss, ssh_exempt = _nft_loss(namespace)
    return LinkInPlace(mtu=entry.get("mtu"), qdisc=root.get("kind") if root else None,
                       rate_mbit=round(rate, 6) if rate is not None else None, rate_mechanism="tbf" if tbf else None,
                       loss_percent=loss, loss_mechanism="nftables" if loss is not None else None,
                       ssh_exempt=ssh_exempt, gso_max_segs=entry.get("gso_max_segs"),
                       delay_ms=delay, delay_mechanism=delay_mechanism)


def _tc_qdiscs(namespace: str, interface: str) -> list[dict]:
    output = _run(["tc", "-n", namespace, "-j", "qdisc", "show", "dev", interface],
                  f"{namespace}: list qdiscs of {interface}", missing_ok=True)
    return json.loads(output) if output.strip() else []


def _netem_delay_ms(namespace: str, interface: str) -> float | None:
    # from the text form: its "delay 5ms" reads the same across iproute2 versions
    output = _run(["tc", "-n", namespace, "qdisc", "show", "dev", interface], f"{namespace}: list qdiscs",
                  missing_ok=True)
    found = re.search(r"qdisc netem .*?\bdelay ([\d.]+)(us|ms|s)\b", output)
    if not found:
        return None
    return round(float(found.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[found.group(2)], 6)


def _nft_loss(namespace: str) -> tuple[float | None, bool]:
    """(loss percent, SSH exempt) from the host's harness_lab table; (None, False) without one."""
    if not NFT.exists():
        return None, False
    output = _run(["ip", "netns", "exec", namespace, str(NFT), "list", "table", "inet", NFT_TABLE],
                  f"{namespace}: list nftables table {NFT_TABLE}", missing_ok=True)
    found = re.search(rf"numgen random mod {LOSS_SCALE} < (\d+) drop", output)
    exempt = re.search(rf"tcp dport {SSH_PORT} accept", output) is not None and \
        re.search(rf"tcp sport {SSH_PORT} accept", output) is not None
    return (int(found.group(1)) / 100 if found else None), exempt


def _link_problems(host: str, interface: str, seen: LinkInPlace, lab: Lab) -> list[str]:
    """Where the host's eth0 differs from what lab.json says it has."""
    link, mechanisms, problems = lab.link, lab.link_mechanisms, []
    where = f"{host}: {interface}"
    if seen.mtu != (link.mtu or DEFAULT_MTU):
        problems.append(f"{where} has mtu {seen.mtu}, lab.json says {link.mtu or DEFAULT_MTU}")
    if not _same(seen.rate_mbit, link.rate_mbit):
        problems.append(f"{where} is shaped to {_shown(seen.rate_mbit, 'Mbit/s')}, lab.json says "
                        f"{_shown(link.rate_mbit, 'Mbit/s')}")
    if seen.loss_percent != link.loss_percent:
        problems.append(f"{where} drops {_shown(seen.loss_percent, '%')}, "
                        f"lab.json says {_shown(link.loss_percent, '%')}")
    if seen.loss_percent is not None and not seen.ssh_exempt:
        problems.append(f"{where}: the nftables table {NFT_TABLE} does not exempt SSH (tcp port {SSH_PORT})")
    if link.loss_percent is not None and seen.gso_max_segs != 1:
        problems.append(f"{where} has gso_max_segs {seen.gso_max_segs}, lab.json says 1 (one packet per drop)")
    netem_delay = seen.delay_ms if seen.delay_mechanism == "netem" else None
    wanted_netem = link.delay_ms if mechanisms.delay == "netem" else None
    if not _same(netem_delay, wanted_netem):
        problems.append(f"{where} has netem delay {_shown(netem_delay, 'ms')}, lab.json says "
                        f"{_shown(wanted_netem, 'ms')}")
    return problems


def _same(seen: float | None, wanted: float | None) -> bool:
    if seen is None or wanted is None:
        return seen is wanted
    return math.isclose(seen, wanted, rel_tol=0.01)


def _shown(value: float | None, unit: str) -> str:
    return "none" if value is None else f"{value:g} {unit}".replace(" %", "%")


def _link_record(lab: Lab, delay_note: str | None) -> dict:
    """lab.json's "link": the properties asked for, and how each is put in place."""
    link, mechanisms = lab.link, lab.link_mechanisms
    record = {
        "properties": dataclasses.asdict(link),
        "queues": {"mechanism": "veth numrxqueues/numtxqueues", "rx": link.queues, "tx": link.queues},
        "mtu": {"mechanism": "ip link" if link.mtu else "veth default", "bytes": link.mtu or DEFAULT_MTU},
        "rate": None, "loss": None, "delay": None,
    }
    if mechanisms.rate:
        record["rate"] = {"mechanism": mechanisms.rate, "mbit": link.rate_mbit, "burst_bytes": _tbf_burst(link),
                          "latency_ms": TBF_LATENCY_MS, "where": "egress of eth0"}
    if mechanisms.loss:
        record["loss"] = {"mechanism": mechanisms.loss, "percent": link.loss_percent,
                          "rule": f"numgen random mod {LOSS_SCALE} < {link.loss_threshold} drop",
                          "table": f"inet {NFT_TABLE}", "where": "prerouting of eth0 (on arrival)",
                          "exempt": f"tcp port {SSH_PORT}", "gso_max_segs": 1}
    if mechanisms.delay == "netem":
        record["delay"] = {"mechanism": "netem", "ms": link.delay_ms, "where": "egress of eth0",
                           "limit_packets": _netem_limit(link)}
    elif mechanisms.delay == "proxy":
        record["delay"] = {"mechanism": "proxy", "ms": link.delay_ms, "in_link": False, "why": delay_note,
                           "program": str(DELAY_PROXY_PROGRAM), "start": "harness.hosts.linkdelay.start_delay_proxy"}
    return record


def describe_link(link: LinkProperties, mechanisms: LinkMechanisms) -> str:
    """One line: each property that is on, with the mechanism that puts it in place."""
    parts = [f"{link.queues} queues", f"mtu {link.mtu or DEFAULT_MTU}"]
    if link.rate_mbit is not None:
        parts.append(f"rate {link.rate_mbit:g} Mbit/s ({mechanisms.rate})")
    if link.loss_percent is not None:
        parts.append(f"loss {link.loss_percent:g}% ({mechanisms.loss} inet {NFT_TABLE}, SSH exempt)")
    if mechanisms.delay == "netem":
        parts.append(f"delay {link.delay_ms:g} ms (netem)")
    elif mechanisms.delay == "proxy":
        parts.append(f"delay {link.delay_ms:g} ms (proxy: not in the link; start {DELAY_PROXY_PROGRAM.name} "
                     "on a host and send traffic through it)")
    return ", ".join(parts)


def _sshd_config(host: LabHost, client_key: Path) -> str:
    return "\n".join([
        f"# sshd of lab host {host.name}, started in namespace {host.namespace} by harness lab up",
        f"ListenAddress {host.address}",
        f"Port {SSH_PORT}",
        "AddressFamily inet",
        f"HostKey {host.host_key}",
        f"PidFile {host.sshd_pid_file}",
        f"AuthorizedKeysFile {client_key}.pub",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",  # the lab's files may live under /tmp, whose modes sshd would refuse
        "PrintMotd no",
        "X11Forwarding no",
        "Subsystem sftp internal-sftp",  # Fabric's put/get and Ansible's file transfers
        "",
    ])


def _start_sshd(host: LabHost) -> int:
    """Start the host's sshd in its namespace under its own hostname; return its pid."""
    # unshare --uts gives the host its own hostname, so `hostname` and Ansible's facts
    # tell lab hosts apart; sshd then daemonizes and writes its pid file.
    script = 'hostname "$1" && exec "$2" -f "$3" -E "$4"'
    argv = ["ip", "netns", "exec", host.namespace, "unshare", "--uts", "--", "/bin/sh", "-c", script, "sh",
            host.name, str(SSHD), str(host.sshd_config), str(host.sshd_log)]
    try:
        _run(argv, f"{host.name}: start sshd", timeout=15)
    except LabError as error:
        raise LabError(f"{error}; sshd log: {_last_line(_read(host.sshd_log))}") from None
    deadline = time.monotonic() + 5
    while (pid := _read_pid(host.sshd_pid_file)) is None:
        if time.monotonic() > deadline:
            raise LabError(f"{host.name}: sshd wrote no pid file {host.sshd_pid_file} within 5 s; "
                           f"sshd log: {_last_line(_read(host.sshd_log))}")
        time.sleep(0.02)
    return pid


def _wait_for_ssh(lab: Lab, timeout: float) -> None:
    """Every host must answer SSH with the lab's key and a host key from the lab's known_hosts."""
    with ThreadPoolExecutor(max_workers=len(lab.hosts)) as pool:
        for future in [pool.submit(_answer_ssh, lab, host, timeout) for host in lab.hosts]:
            future.result()


def _answer_ssh(lab: Lab, host: LabHost, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with HostSession(lab.harness_host(host), connect_timeout=CONNECT_TIMEOUT) as session:
                session.run(["hostname"], timeout=CONNECT_TIMEOUT + 5)
            return
        except HostError as error:
            if time.monotonic() > deadline:
                raise LabError(f"{host.name}: no SSH answer from {host.address}:{SSH_PORT} within {timeout:g} s "
                               f"({error}); sshd log: {_last_line(_read(host.sshd_log))}") from None
        time.sleep(0.1)


def _inventory_text(lab: Lab) -> str:
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


def _write_state(lab: Lab, delay_note: str | None = None) -> None:
    state = {
        "format": STATE_FORMAT,
        "name": lab.name,
        "subnet": lab.subnet,
        "bridge": lab.bridge,
        "bridge_address": lab.bridge_address,
        "queues": lab.queues,
        "link": _link_record(lab, delay_note),
        "hosts": [{key: (str(value) if isinstance(value, Path) else value)
                   for key, value in dataclasses.asdict(host).items()} | {"namespace": host.namespace}
                  for host in lab.hosts],
        "files": {"directory": str(lab.directory), "client_key": str(lab.client_key),
                  "known_hosts": str(lab.known_hosts), "inventory": str(lab.inventory)},
    }
    partial = lab.state_file.with_suffix(".json.partial")
    partial.write_text(json.dumps(state, indent=2) + "\n")
    partial.replace(lab.state_file)


def _lab_from_state(state: dict) -> Lab:
    files = state["files"]
    hosts = tuple(
        LabHost(name=entry["name"], group=entry["group"], address=entry["address"], veth=entry["veth"],
                interface=entry["interface"], sshd_pid=int(entry["sshd_pid"]),
                **{key: Path(entry[key]) for key in ("sshd_config", "sshd_pid_file", "sshd_log", "host_key")})
        for entry in state["hosts"]
    )
    directory = Path(files["directory"])
    record = state.get("link") or {}  # format 1 had queues only
    link = LinkProperties(**record["properties"]) if record else LinkProperties(queues=int(state["queues"]))
    mechanisms = LinkMechanisms(**{key: (record.get(key) or {}).get("mechanism") for key in ("rate", "loss", "delay")})
    return Lab(name=state["name"], directory=directory, subnet=state["subnet"], bridge=state["bridge"],
               bridge_address=state["bridge_address"], link=link, link_mechanisms=mechanisms, hosts=hosts,
               client_key=Path(files["client_key"]), known_hosts=Path(files["known_hosts"]),
               inventory=Path(files["inventory"]), state_file=directory / "lab.json")


def _healthy_lab(name: str, hosts: int, link: LinkProperties, directory: Path) -> Lab | None:
    """The existing lab if it has this shape and link, is healthy and answers SSH; else None."""
    state, problem = _read_state(directory)
    if state is None or problem:
        return None
    lab = _lab_from_state(state)
    if len(lab.hosts) != hosts or lab.link != link or not lab_status(name, directory.parent).healthy:
        return None
    try:
        _wait_for_ssh(lab, timeout=2.0)
    except LabError:
        return None
    return lab


# --- preconditions --------------------------------------------------------------


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise LabError(f"lab name {name!r}: use 1-10 lowercase letters and digits, starting with a letter "
                       "(interface names like NAME-h12 must fit 15 characters)")


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
        raise LabError(f"lab {name}: {directory} has characters other than letters, digits and ._-/@+; "
                       "pick a plainer base dir (its paths go unquoted into the inventory)")
    if directory.is_dir() and not (directory / MARKER).exists() and any(directory.iterdir()):
        raise LabError(f"lab {name}: {directory} exists and was not made by lab up: pick another name or base dir")


def _check_preconditions(link: LinkProperties = LinkProperties()) -> None:
    if os.geteuid() != 0:
        raise LabError("lab: namespaces, links and sshd need root: run as root")
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2"), ("ssh-keygen", "openssh-client"),
                          ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            raise LabError(f"lab: {tool} not found: install it (apt-get install {package})")
    _ensure_package(SSHD, "openssh-server")
    if link.loss_percent is not None:
        _ensure_package(NFT, "nftables")


def _ensure_package(program: Path, package: str) -> None:
    """Install the Debian package if program is missing, without starting its service.

    Debian's maintainer scripts ask /usr/sbin/policy-rc.d before starting a service;
    exit status 101 forbids it. An existing policy-rc.d is left as it is (on this
    kind of machine one already forbids every start); one written here is removed.
    """
    if program.exists():
        return
    import fcntl  # one installer at a time on this machine: the policy file is shared

    with open(INSTALL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if program.exists():
            return
        written = False
        if not POLICY_RC_D.exists():
            POLICY_RC_D.write_text(f"#!/bin/sh\n# written by harness lab up while it installs {package}\n"
                                   "exit 101\n")
            POLICY_RC_D.chmod(0o755)
            written = True
        try:
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            install = ["apt-get", "install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300",
                       package]
            result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900,
                                    stdin=subprocess.DEVNULL)
            if result.returncode != 0 and "Unable to locate package" in result.stderr + result.stdout:
                subprocess.run(["apt-get", "update"], capture_output=True, text=True, env=env, timeout=600,
                               stdin=subprocess.DEVNULL)
                result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900,
                                        stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LabError(f"lab: installing {package} failed ({exc}): run `apt-get install {package}`, "
                           "then lab up again") from None
        finally:
            if written:
                POLICY_RC_D.unlink(missing_ok=True)
    if result.returncode != 0 or not program.exists():
        raise LabError(f"lab: installing {package} failed: {_last_line(result.stderr or result.stdout)}: "
                       f"run `apt-get install {package}`, then lab up again")


# --- discovery and teardown -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Found:
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


def _discover(name: str, directory: Path, state: dict | None) -> _Found:
    host_pattern = re.compile(rf"{re.escape(name)}-h\d+")
    namespaces = frozenset(ns for ns in _namespaces() if host_pattern.fullmatch(ns))
    links = {link["ifname"] for link in _links(None)}
    veths = frozenset(link for link in links if host_pattern.fullmatch(link))
    processes = set()
    # sshd listeners from the state and the pid files, each checked to be this lab's
    # sshd (its command line names the lab's config) before it counts.
    configs = {Path(entry["sshd_config"]): entry.get("sshd_pid") for entry in (state or {}).get("hosts", [])}
    if directory.is_dir() and (directory / MARKER).exists():
        for pid_file in directory.glob(f"{name}-h*/sshd.pid"):
            configs.setdefault(pid_file.parent / "sshd_config", None)
    for config, pid in configs.items():
        for candidate in {pid, _read_pid(config.parent / "sshd.pid")} - {None}:
            if _is_lab_sshd(candidate, config):
                processes.add(candidate)
    # Anything else inside a lab namespace was started on a lab host (an SSH session,
    # a benchmark server) and is part of the lab; left alive, it would keep the
    # namespace and its SSH connections open after the lab is gone.
    for ns in namespaces:
        output = _run(["ip", "netns", "pids", ns], f"{ns}: list processes", missing_ok=True)
        processes.update(int(word) for word in output.split() if word.isdigit())
    processes.discard(os.getpid())
    return _Found(namespaces=namespaces, veths=veths, bridge=f"{name}-br" in links, processes=frozenset(processes),
                  directory=(directory / MARKER).exists())


def _stop_processes(pids: frozenset[int]) -> None:
    """TERM the lab's processes, then KILL whatever is left after 3 s."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
        alive = [pid for pid in pids if _alive(pid)]
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while any(_alive(pid) for pid in alive) and time.monotonic() < deadline:
            time.sleep(0.05)
    survivors = sorted(pid for pid in pids if _alive(pid))
    if survivors:
        raise LabError(f"lab: processes {survivors} survived SIGKILL: check them with ps and run lab down again")


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _is_lab_sshd(pid: int, config: Path) -> bool:
    """Whether pid is a live sshd started with this config file (pids get reused)."""
    try:
        executable = os.readlink(f"/proc/{pid}/exe")
        # sshd rewrites its title ("sshd: /usr/sbin/sshd -f CONF ... [listener]"): compare words
        words = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
    except OSError:
        return False
    return executable == str(SSHD) and str(config) in words and _alive(pid)


# --- small helpers -------------------------------------------------------------


def _run(argv: list[str], step: str, timeout: float = 30.0, missing_ok: bool = False) -> str:
    """Run a system command; raise LabError naming the step unless it succeeds.

    missing_ok: a command that fails because its object is already gone succeeds.
    """
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise LabError(f"{step}: {argv[0]} not found: install it") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{step}: {shlex.join(argv[:4])} did not finish within {timeout:g} s") from None
    if result.returncode != 0:
        message = _last_line(result.stderr or result.stdout)
        # the whole output: nft ends its message with a line of carets
        if missing_ok and re.search(r"Cannot find device|No such file", result.stderr + result.stdout):
            return ""
        raise LabError(f"{step}: `{shlex.join(argv)}` failed: {message}")
    return result.stdout


def _namespaces() -> list[str]:
    # `ip netns list` prints "NAME (id: N)" for namespaces that have an id
    listing = _run(["ip", "netns", "list"], "lab: list namespaces")
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def _links(namespace: str | None) -> list[dict]:
    argv = ["ip"] + (["-n", namespace] if namespace else []) + ["-d", "-j", "link", "show"]
    output = _run(argv, f"{namespace or 'lab'}: list links", missing_ok=namespace is not None)
    return json.loads(output) if output.strip() else []


def _link_entry(link: str, namespace: str | None) -> dict | None:
    return next((entry for entry in _links(namespace) if entry.get("ifname") == link), None)


def _link_status(link: str, namespace: str | None) -> LinkStatus:
    entry = _link_entry(link, namespace)
    if entry is None:
        return LinkStatus(name=link, namespace=namespace, state="missing", rx_queues=None, tx_queues=None)
    return LinkStatus(name=link, namespace=namespace, state=entry.get("operstate", "UNKNOWN"),
                      rx_queues=entry.get("num_rx_queues"), tx_queues=entry.get("num_tx_queues"),
                      mtu=entry.get("mtu"))


def _free_subnet(name: str, base_dir: Path) -> ipaddress.IPv4Network:
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
    for entry in json.loads(_run(["ip", "-j", "-4", "addr", "show"], "lab: list addresses") or "[]"):
        for info in entry.get("addr_info", []):
            taken.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    for route in json.loads(_run(["ip", "-j", "-4", "route", "show", "table", "all"], "lab: list routes") or "[]"):
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


def _read_state(directory: Path) -> tuple[dict | None, str | None]:
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
        _lab_from_state(state)  # every field that status and down read is there
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return None, f"{path}: damaged ({type(exc).__name__}: {exc})"
    return state, None


def _keygen(path: Path, comment: str, step: str) -> None:
    for old in (path, Path(str(path) + ".pub")):
        old.unlink(missing_ok=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], step)
    for made in (path, Path(str(path) + ".pub")):
        made.chmod(0o600)


def _write_private(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        return "" if exc.errno == errno.ENOENT else str(exc)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _host_index(host: str) -> int:
    return int(host.rsplit("-h", 1)[1])
