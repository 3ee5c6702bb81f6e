"""What a lab is, as frozen values: the link properties every host's eth0 gets (checked
on creation), how each was put in place, the lab and its hosts, and what `lab_status`
reads back. No function here touches the machine.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from harness.hosts import nftables
from harness.hosts.inventory import Host

SSH_PORT = nftables.SSH_PORT  # each host's sshd; the lab's loss rules never drop it
INTERFACE = "eth0"  # the host's end of its veth, inside its namespace
GROUPS = ("servers", "clients", "others")  # host 1, host 2, every other host
MAX_QUEUES = 64
DEFAULT_MTU = 1500  # what a new veth gets
MIN_MTU, MAX_MTU = 68, 65535  # IPv4's minimum; the veth driver's maximum
MAX_RATE_MBIT = 100_000.0
MAX_DELAY_MS = 60_000.0


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
            raise LinkPropertyError(
                "mtu", f"must be a whole number of bytes from {MIN_MTU} to {MAX_MTU}, not {self.mtu!r}"
            )
        _check_number("rate_mbit", self.rate_mbit, 0.0, MAX_RATE_MBIT, "Mbit/s", zero_ok=False)
        _check_number("loss_percent", self.loss_percent, 0.0, 100.0, "%", zero_ok=True)
        _check_number("delay_ms", self.delay_ms, 0.0, MAX_DELAY_MS, "ms", zero_ok=True)
        if self.loss_percent is not None and abs(self.loss_percent * 100 - round(self.loss_percent * 100)) > 1e-6:
            raise LinkPropertyError(
                "loss_percent",
                f"{self.loss_percent:g} is finer than 0.01 % "
                f"(nftables draws from {nftables.LOSS_SCALE} values): round it",
            )
        # 0 % loss and 0 ms delay mean "off": store them as None so equal links compare equal
        for field in ("loss_percent", "delay_ms"):
            if getattr(self, field) == 0:
                object.__setattr__(self, field, None)

    @property
    def loss_threshold(self) -> int | None:
        """N in `numgen random mod 10000 < N`."""
        return None if self.loss_percent is None else nftables.loss_threshold(self.loss_percent)

    def describe(self) -> str:
        return ", ".join(
            [
                f"{self.queues} queues",
                f"mtu {self.mtu or DEFAULT_MTU}",
                *_shaping(self.rate_mbit, self.loss_percent, self.delay_ms),
            ]
        )


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
        return ", ".join(
            [
                f"mtu {self.mtu}" if self.mtu else "mtu ?",
                *_shaping(
                    self.rate_mbit,
                    self.loss_percent,
                    self.delay_ms,
                    (self.rate_mechanism, self.loss_mechanism, self.delay_mechanism),
                ),
            ]
        )


def _shaping(
    rate_mbit: float | None,
    loss_percent: float | None,
    delay_ms: float | None,
    mechanisms: tuple[str | None, str | None, str | None] | None = None,
) -> list[str]:
    """ "rate 50 Mbit/s", "loss 1%", "delay 5 ms" for each that is on, with " (mechanism)" when given."""
    parts = []
    for index, (value, shown) in enumerate(
        ((rate_mbit, "rate {:g} Mbit/s"), (loss_percent, "loss {:g}%"), (delay_ms, "delay {:g} ms"))
    ):
        if value is not None:
            parts.append(shown.format(value) + (f" ({mechanisms[index]})" if mechanisms else ""))
    return parts


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
        return Host(
            name=host.name,
            address=host.address,
            port=SSH_PORT,
            user="root",
            local=False,
            key_file=str(self.client_key),
            known_hosts=str(self.known_hosts),
        )


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
