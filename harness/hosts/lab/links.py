"""Link shaping on each lab host's eth0: putting rate, delay and loss in place, reading
back what the kernel has, and the record and one-line description of both.

    queues   rx and tx queues of the veth pair (set when topology.py creates it)
    mtu      both ends of the veth pair (set when topology.py creates it); the bridge follows
    rate     a TBF qdisc at the root of eth0: egress is shaped to the rate
    loss     nftables table `inet harness_lab` in the host's namespace (harness/hosts/nftables.py):
             a prerouting chain drops packets arriving on eth0; TCP port 22 is exempt, so the
             harness's SSH control channel stays reliable. Packets are dropped where they
             arrive, not where they leave: a drop in the sender's output hook would make its
             sendto() fail with EPERM, which real loss never does. And eth0's gso_max_segs is
             set to 1, so a dropped packet is one MTU-sized packet and not a 64 KB GSO batch.
    delay    the netem qdisc where the kernel has it (checked on a throwaway veth in the first
             host's namespace); where it has not, the link gets no delay and lab.json records
             the mechanism "proxy": an experiment starts harness/hosts/delay_proxy.py on a host
             (`harness.hosts.linkdelay.start_delay_proxy`) and sends its traffic through it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
from pathlib import Path

from harness.errors import LabError
from harness.hosts import nftables
from harness.hosts.lab import system
from harness.hosts.lab.model import DEFAULT_MTU, SSH_PORT, Lab, LabHost, LinkInPlace, LinkMechanisms, LinkProperties
from harness.hosts.linkdelay import PROGRAM as DELAY_PROXY_PROGRAM

TBF_LATENCY_MS = 50  # longest a packet may wait in the TBF queue; sets its byte limit
TBF_BURST_SECONDS = 0.004  # a burst of 4 ms at the rate (a HZ=250 tick), at least 10 frames
NETEM_PROBE = "hlnetem0"  # a throwaway veth inside the first host's namespace


# --- putting properties in place --------------------------------------------------


def choose_mechanisms(link: LinkProperties, probe_namespace: str) -> tuple[LinkMechanisms, str | None]:
    """The mechanism for each property that is on, and why delay is not netem (or None)."""
    delay, delay_note = None, None
    if link.delay_ms is not None:
        netem_error = _netem_missing(probe_namespace)
        delay = "proxy" if netem_error else "netem"
        delay_note = f"netem unavailable ({netem_error})" if netem_error else None
    return LinkMechanisms(
        rate="tbf" if link.rate_mbit is not None else None,
        loss="nftables" if link.loss_percent is not None else None,
        delay=delay,
    ), delay_note


def _netem_missing(namespace: str) -> str | None:
    """None if a netem qdisc can be added here, else tc's reason. Tried on a throwaway veth."""
    system.run(
        ["ip", "-n", namespace, "link", "add", NETEM_PROBE, "type", "veth", "peer", "name", NETEM_PROBE + "p"],
        f"{namespace}: create veth {NETEM_PROBE} to check for netem",
    )
    try:
        result = subprocess.run(
            ["tc", "-n", namespace, "qdisc", "add", "dev", NETEM_PROBE, "root", "netem", "delay", "1ms"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise LabError(f"{namespace}: check for netem: tc did not finish within 30 s") from None
    finally:
        system.run(
            ["ip", "-n", namespace, "link", "del", NETEM_PROBE],
            f"{namespace}: remove veth {NETEM_PROBE}",
            missing_ok=True,
        )
    return None if result.returncode == 0 else system.last_line(result.stderr or result.stdout)


def apply_link(host: LabHost, link: LinkProperties, mechanisms: LinkMechanisms, folder: Path) -> None:
    """Put rate, delay and loss on the host's eth0 (queues and MTU come with the veth)."""
    ns, dev = host.namespace, host.interface
    tc = ["tc", "-n", ns, "qdisc", "replace", "dev", dev]
    if mechanisms.delay == "netem":
        netem = ["netem", "delay", f"{link.delay_ms:g}ms", "limit", str(_netem_limit(link))]
        system.run(tc + ["root", "handle", "1:"] + netem, f"{ns}: add netem delay {link.delay_ms:g} ms on {dev}")
        if mechanisms.rate == "tbf":  # netem's single class takes the shaper as its child
            system.run(
                tc + ["parent", "1:1", "handle", "10:", "tbf"] + _tbf_args(link), f"{ns}: add tbf under netem on {dev}"
            )
    elif mechanisms.rate == "tbf":
        system.run(
            tc + ["root", "handle", "1:", "tbf"] + _tbf_args(link),
            f"{ns}: add tbf rate {link.rate_mbit:g} Mbit/s on {dev}",
        )
    if mechanisms.loss == "nftables":
        ruleset = folder / "nftables.conf"
        ruleset.write_text(nftables.lab_loss_ruleset(link.loss_percent, dev))
        system.run(nftables.load_in_namespace(ns, ruleset), f"{ns}: load nftables table {nftables.LAB_TABLE}")
        # One MTU-sized packet per drop: without this, TCP over veth moves 64 KB GSO
        # batches, and one drop would lose some 40 packets at once.
        for argv in (
            ["ip", "-n", ns, "link", "set", dev, "gso_max_segs", "1"],
            ["ip", "link", "set", host.veth, "gso_max_segs", "1"],
        ):
            system.run(argv, f"{ns}: set gso_max_segs 1 on {argv[-3]}")


def _tbf_args(link: LinkProperties) -> list[str]:
    return [
        "rate",
        f"{round(link.rate_mbit * 1e6)}bit",
        "burst",
        str(tbf_burst(link)),
        "latency",
        f"{TBF_LATENCY_MS}ms",
    ]


def tbf_burst(link: LinkProperties) -> int:
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


# --- reading them back ---------------------------------------------------------------


def link_in_place(namespace: str, interface: str, recorded: Lab | None) -> LinkInPlace:
    """Read back the host's eth0: MTU and gso_max_segs, its qdiscs, the nftables table."""
    entry = system.link_entry(interface, namespace) or {}
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
    return LinkInPlace(
        mtu=entry.get("mtu"),
        qdisc=root.get("kind") if root else None,
        rate_mbit=round(rate, 6) if rate is not None else None,
        rate_mechanism="tbf" if tbf else None,
        loss_percent=loss,
        loss_mechanism="nftables" if loss is not None else None,
        ssh_exempt=ssh_exempt,
        gso_max_segs=entry.get("gso_max_segs"),
        delay_ms=delay,
        delay_mechanism=delay_mechanism,
    )


def _tc_qdiscs(namespace: str, interface: str) -> list[dict]:
    output = system.run(
        ["tc", "-n", namespace, "-j", "qdisc", "show", "dev", interface],
        f"{namespace}: list qdiscs of {interface}",
        missing_ok=True,
    )
    return json.loads(output) if output.strip() else []


def _netem_delay_ms(namespace: str, interface: str) -> float | None:
    # from the text form: its "delay 5ms" reads the same across iproute2 versions
    output = system.run(
        ["tc", "-n", namespace, "qdisc", "show", "dev", interface], f"{namespace}: list qdiscs", missing_ok=True
    )
    found = re.search(r"qdisc netem .*?\bdelay ([\d.]+)(us|ms|s)\b", output)
    if not found:
        return None
    return round(float(found.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[found.group(2)], 6)


def _nft_loss(namespace: str) -> tuple[float | None, bool]:
    """(loss percent, SSH exempt) from the host's harness_lab table; (None, False) without one."""
    if not nftables.NFT.exists():
        return None, False
    output = system.run(
        nftables.list_lab_table(namespace), f"{namespace}: list nftables table {nftables.LAB_TABLE}", missing_ok=True
    )
    return nftables.lab_loss_in_place(output)


def link_problems(host: str, interface: str, seen: LinkInPlace, lab: Lab) -> list[str]:
    """Where the host's eth0 differs from what lab.json says it has."""
    link, mechanisms, problems = lab.link, lab.link_mechanisms, []
    where = f"{host}: {interface}"
    if seen.mtu != (link.mtu or DEFAULT_MTU):
        problems.append(f"{where} has mtu {seen.mtu}, lab.json says {link.mtu or DEFAULT_MTU}")
    if not _same(seen.rate_mbit, link.rate_mbit):
        problems.append(
            f"{where} is shaped to {_shown(seen.rate_mbit, 'Mbit/s')}, lab.json says {_shown(link.rate_mbit, 'Mbit/s')}"
        )
    if seen.loss_percent != link.loss_percent:
        problems.append(
            f"{where} drops {_shown(seen.loss_percent, '%')}, lab.json says {_shown(link.loss_percent, '%')}"
        )
    if seen.loss_percent is not None and not seen.ssh_exempt:
        problems.append(f"{where}: the nftables table {nftables.LAB_TABLE} does not exempt SSH (tcp port {SSH_PORT})")
    if link.loss_percent is not None and seen.gso_max_segs != 1:
        problems.append(f"{where} has gso_max_segs {seen.gso_max_segs}, lab.json says 1 (one packet per drop)")
    netem_delay = seen.delay_ms if seen.delay_mechanism == "netem" else None
    wanted_netem = link.delay_ms if mechanisms.delay == "netem" else None
    if not _same(netem_delay, wanted_netem):
        problems.append(
            f"{where} has netem delay {_shown(netem_delay, 'ms')}, lab.json says {_shown(wanted_netem, 'ms')}"
        )
    return problems


def _same(seen: float | None, wanted: float | None) -> bool:
    if seen is None or wanted is None:
        return seen is wanted
    return math.isclose(seen, wanted, rel_tol=0.01)


def _shown(value: float | None, unit: str) -> str:
    return "none" if value is None else f"{value:g} {unit}".replace(" %", "%")


# --- describing them -----------------------------------------------------------------


def link_record(lab: Lab, delay_note: str | None) -> dict:
    """lab.json's "link": the properties asked for, and how each is put in place."""
    link, mechanisms = lab.link, lab.link_mechanisms
    record = {
        "properties": dataclasses.asdict(link),
        "queues": {"mechanism": "veth numrxqueues/numtxqueues", "rx": link.queues, "tx": link.queues},
        "mtu": {"mechanism": "ip link" if link.mtu else "veth default", "bytes": link.mtu or DEFAULT_MTU},
        "rate": None,
        "loss": None,
        "delay": None,
    }
    if mechanisms.rate:
        record["rate"] = {
            "mechanism": mechanisms.rate,
            "mbit": link.rate_mbit,
            "burst_bytes": tbf_burst(link),
            "latency_ms": TBF_LATENCY_MS,
            "where": "egress of eth0",
        }
    if mechanisms.loss:
        record["loss"] = {
            "mechanism": mechanisms.loss,
            "percent": link.loss_percent,
            "rule": nftables.drop_rule(link.loss_percent),
            "table": f"{nftables.FAMILY} {nftables.LAB_TABLE}",
            "where": "prerouting of eth0 (on arrival)",
            "exempt": f"tcp port {SSH_PORT}",
            "gso_max_segs": 1,
        }
    if mechanisms.delay == "netem":
        record["delay"] = {
            "mechanism": "netem",
            "ms": link.delay_ms,
            "where": "egress of eth0",
            "limit_packets": _netem_limit(link),
        }
    elif mechanisms.delay == "proxy":
        record["delay"] = {
            "mechanism": "proxy",
            "ms": link.delay_ms,
            "in_link": False,
            "why": delay_note,
            "program": str(DELAY_PROXY_PROGRAM),
            "start": "harness.hosts.linkdelay.start_delay_proxy",
        }
    return record


def describe_link(link: LinkProperties, mechanisms: LinkMechanisms) -> str:
    """One line: each property that is on, with the mechanism that puts it in place."""
    parts = [f"{link.queues} queues", f"mtu {link.mtu or DEFAULT_MTU}"]
    if link.rate_mbit is not None:
        parts.append(f"rate {link.rate_mbit:g} Mbit/s ({mechanisms.rate})")
    if link.loss_percent is not None:
        parts.append(
            f"loss {link.loss_percent:g}% ({mechanisms.loss} {nftables.FAMILY} {nftables.LAB_TABLE}, SSH exempt)"
        )
    if mechanisms.delay == "netem":
        parts.append(f"delay {link.delay_ms:g} ms (netem)")
    elif mechanisms.delay == "proxy":
        parts.append(
            f"delay {link.delay_ms:g} ms (proxy: not in the link; start {DELAY_PROXY_PROGRAM.name} "
            "on a host and send traffic through it)"
        )
    return ", ".join(parts)
