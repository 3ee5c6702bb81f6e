"""`harness lab up/status/down`: the command line of the lab (hosts in network namespaces
on this machine). Part of the command line: cli.py registers the group."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from harness.errors import HarnessError
from harness.run import spec as spec_module


def _fail(error: HarnessError, status: int = 1) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(status)


# --- harness lab: hosts in network namespaces on this machine ------------------------

LAB_BASE_DIR = "/var/tmp/harness-lab"
_lab_name = click.option(
    "--name",
    default="lab",
    show_default=True,
    help="Lab name (1-10 lowercase letters and digits); prefixes its namespaces and links.",
)
_lab_base_dir = click.option(
    "--base-dir",
    default=LAB_BASE_DIR,
    show_default=True,
    help="Folder that holds each lab's keys, inventory and state.",
)


@click.group(name="lab")
def lab_group() -> None:
    """Lab hosts on this machine: network namespaces on a bridge, each with its own sshd."""


_RATE_UNITS = {"kbit": 1e-3, "mbit": 1.0, "gbit": 1e3}
_DELAY_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_LINK_FLAGS = {
    "queues": "--queues",
    "mtu": "--mtu",
    "rate_mbit": "--rate",
    "loss_percent": "--loss",
    "delay_ms": "--delay",
}


def _with_unit(text: str, units: dict[str, float], example: str) -> float:
    found = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", text.lower())
    if not found or found.group(2) not in units:
        raise click.BadParameter(f"{text!r}: give a number and one of {', '.join(units)} (e.g. {example})")
    return float(found.group(1)) * units[found.group(2)]


def _parse_rate(ctx, param, value: str | None) -> float | None:
    # tc reads "mbps" as megabytes per second: only bit units, so nobody is off by 8
    return None if value is None else _with_unit(value, _RATE_UNITS, "100mbit, 1gbit")


def _parse_delay(ctx, param, value: str | None) -> float | None:
    return None if value is None else _with_unit(value, _DELAY_UNITS, "5ms")


def _parse_loss(ctx, param, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip().removesuffix("%"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a percentage such as 1 or 0.5%") from None


@lab_group.command(name="up")
@click.option("--hosts", default=3, show_default=True, type=click.IntRange(1, 50), help="Number of hosts.")
@_lab_name
@click.option(
    "--experiment",
    "experiment",
    metavar="FILE",
    help="Take the link properties from this experiment file's `link:`; flags given here win.",
)
@click.option(
    "--queues", type=click.IntRange(1, 64), help="Receive and transmit queues of each host's eth0 (default 2)."
)
@click.option("--mtu", type=click.IntRange(68, 65535), help="MTU of each host's eth0 (default 1500).")
@click.option(
    "--rate",
    callback=_parse_rate,
    metavar="RATE",
    help="Egress rate limit of each host's eth0 (TBF), e.g. 100mbit or 1gbit.",
)
@click.option(
    "--loss",
    callback=_parse_loss,
    metavar="PERCENT",
    help="Random loss of packets arriving at each host (nftables); SSH (tcp port 22) is exempt.",
)
@click.option(
    "--delay",
    callback=_parse_delay,
    metavar="TIME",
    help="Added delay, e.g. 5ms: netem on each eth0 where the kernel has it, else recorded for a "
    "delay proxy that an experiment starts (harness/hosts/delay_proxy.py).",
)
@_lab_base_dir
def lab_up_command(
    hosts: int,
    name: str,
    experiment: str | None,
    queues: int | None,
    mtu: int | None,
    rate: float | None,
    loss: float | None,
    delay: float | None,
    base_dir: str,
) -> None:
    """Create the lab (or keep it if healthy); print the inventory path last."""
    from harness.hosts import lab as lab_module

    try:
        wanted = spec_module.load(experiment).link.model_dump() if experiment else {"queues": 2}
    except HarnessError as error:
        _fail(error)
    try:
        given = {"queues": queues, "mtu": mtu, "rate_mbit": rate, "loss_percent": loss, "delay_ms": delay}
        wanted.update({key: value for key, value in given.items() if value is not None})
        link = lab_module.LinkProperties(**wanted)
    except lab_module.LinkPropertyError as error:
        raise click.BadParameter(error.problem, param_hint=f"'{_LINK_FLAGS[error.field]}'") from None
    try:
        _restore_left_runs(name, Path(base_dir))
        created = lab_module.lab_up(name=name, hosts=hosts, base_dir=Path(base_dir), link=link)
    except HarnessError as error:
        _fail(error)
    click.echo(
        f"lab {created.name}: {len(created.hosts)} hosts on {created.subnet} "
        f"(bridge {created.bridge} {created.bridge_address}), {created.queues} queues per eth0"
    )
    click.echo(f"  link: {lab_module.describe_link(created.link, created.link_mechanisms)}")
    for host in created.hosts:
        click.echo(f"  {host.name:<14} {host.address:<15} [{host.group}]  sshd pid {host.sshd_pid}")
    click.echo(str(created.inventory))


@lab_group.command(name="status")
@_lab_name
@_lab_base_dir
def lab_status_command(name: str, base_dir: str) -> None:
    """Show the lab's hosts, links, queues and sshd processes; exit 1 unless it is healthy."""
    from harness.errors import LabError
    from harness.hosts import lab as lab_module

    try:
        status = lab_module.lab_status(name=name, base_dir=Path(base_dir))
    except HarnessError as error:
        _fail(error)
    if not status.exists:
        _fail(LabError(f"lab {name}: not up (nothing in {status.directory}): run `harness lab up --name {name}`"))
    health = "healthy" if status.healthy else f"broken ({len(status.problems)} problems)"
    click.echo(
        f"lab {name}: {health}, {len(status.hosts)} hosts on {status.subnet or 'unknown subnet'}, "
        f"bridge {status.bridge.name + ' ' + status.bridge.state if status.bridge else 'missing'}"
    )
    for host in status.hosts:
        links = "  ".join(
            f"{link.name}{'@' + link.namespace if link.namespace else ''} {link.state}"
            f"{f' rx {link.rx_queues} tx {link.tx_queues}' if link.rx_queues else ''}"
            for link in host.links
        )
        sshd = f"sshd {host.sshd_pid} {'running' if host.sshd_alive else 'not running'}"
        in_place = f"  {host.link.describe()}" if host.link else ""
        click.echo(f"  {host.name:<14} {host.address or '-':<15} {sshd}  {links}{in_place}")
    for problem in status.problems:
        click.echo(f"  problem: {problem}")
    if not status.healthy:
        _fail(
            LabError(
                f"lab {name}: broken: run `harness lab up --name {name}` to rebuild it "
                f"or `harness lab down --name {name}`"
            )
        )


@lab_group.command(name="down")
@_lab_name
@_lab_base_dir
def lab_down_command(name: str, base_dir: str) -> None:
    """Remove the lab: its sshd processes, namespaces, links and files."""
    from harness.hosts import lab as lab_module

    try:
        _restore_left_runs(name, Path(base_dir))
        lab_module.lab_down(name=name, base_dir=Path(base_dir))
    except HarnessError as error:
        _fail(error)
    click.echo(f"lab {name}: down")


def _restore_left_runs(name: str, base_dir: Path) -> None:
    """Before the lab is kept, rebuilt or removed: restore what killed runs left on its hosts."""
    from harness.hosts.lab.leftovers import restore_left_runs

    for line in restore_left_runs(name, base_dir):
        click.echo(line)
