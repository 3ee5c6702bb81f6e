"""The harness's nftables rules: the table names, the rule text, and the calls that load,
read back and remove them. Both users of nftables go through here: `harness lab up`'s loss
on every lab host (harness/hosts/lab/links.py) and a trial's swept `loss_percent`
(harness/run/execute.py).

Two tables, both of family inet, and neither ever drops SSH:

    inet harness_lab   in each lab host's namespace: a prerouting chain drops packets
                       arriving on eth0; TCP port 22 (source or destination) is accepted
                       first, so the harness's control channel stays reliable.
    inet harness       on a trial's server host: input and output chains drop packets to
                       and from the server's port only (TCP and UDP). The trial's clean-up
                       deletes it; the run's snapshot records it and restore deletes it
                       (playbooks/files/host_state.py names the same table).

Each ruleset replaces its table atomically, whether it exists or not: "table T; delete
table T; table T {...}" in one `nft -f`. A packet is dropped when `numgen random mod
10000 < N`, so loss has a resolution of 0.01 %.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from harness.hosts.remote import HostSession

NFT = Path("/usr/sbin/nft")
FAMILY = "inet"
LAB_TABLE = "harness_lab"  # in each lab host's namespace
TRIAL_TABLE = "harness"  # on a trial's server host; the snapshot records it and restore deletes it
LOSS_SCALE = 10000  # numgen draws 0..9999: a resolution of 0.01 %
SSH_PORT = 22


def loss_threshold(percent: float) -> int:
    """N in `numgen random mod 10000 < N` for a share of `percent` %."""
    return round(percent / 100 * LOSS_SCALE)


def drop_rule(percent: float) -> str:
    """The statement that drops `percent` % of the packets it sees."""
    return f"numgen random mod {LOSS_SCALE} < {loss_threshold(percent)} drop"


def _replacing(table: str, chains: list[str]) -> list[str]:
    return [f"table {FAMILY} {table}", f"delete table {FAMILY} {table}", f"table {FAMILY} {table} {{", *chains, "}", ""]


# --- the lab's loss: every lab host, on arrival at eth0 ------------------------------


def lab_loss_ruleset(percent: float, dev: str) -> str:
    """Drop `percent` % of what arrives on `dev`, except TCP port 22 either way."""
    return "\n".join(
        [f"# loss {percent:g}% on arrival at {dev}, written by harness lab up"]
        + _replacing(
            LAB_TABLE,
            [
                "  chain prerouting {",
                "    type filter hook prerouting priority raw; policy accept;",
                f'    iifname "{dev}" tcp dport {SSH_PORT} accept comment "SSH, the control channel, is never dropped"',
                f'    iifname "{dev}" tcp sport {SSH_PORT} accept',
                f'    iifname "{dev}" {drop_rule(percent)}',
                "  }",
            ],
        )
    )


def load_in_namespace(namespace: str, ruleset_file: Path) -> list[str]:
    """argv that loads a ruleset file inside a network namespace."""
    return ["ip", "netns", "exec", namespace, str(NFT), "-f", str(ruleset_file)]


def list_lab_table(namespace: str) -> list[str]:
    """argv that prints the lab's table in a namespace (fails if there is none)."""
    return ["ip", "netns", "exec", namespace, str(NFT), "list", "table", FAMILY, LAB_TABLE]


def lab_loss_in_place(listing: str) -> tuple[float | None, bool]:
    """(loss percent, SSH exempt) read from `nft list table` output of the lab's table."""
    found = re.search(rf"numgen random mod {LOSS_SCALE} < (\d+) drop", listing)
    exempt = (
        re.search(rf"tcp dport {SSH_PORT} accept", listing) is not None
        and re.search(rf"tcp sport {SSH_PORT} accept", listing) is not None
    )
    return (int(found.group(1)) / 100 if found else None), exempt


# --- a trial's loss: the server's port on the server host ------------------------------


def port_loss_ruleset(port: int, percent: float) -> str:
    """Drop `percent` % of the packets to and from `port` (TCP and UDP), each way."""
    return "\n".join(
        _replacing(
            TRIAL_TABLE,
            [
                "  chain loss_in { type filter hook input priority 0; policy accept;",
                f"    meta l4proto {{ tcp, udp }} th dport {port} {drop_rule(percent)}",
                "  }",
                "  chain loss_out { type filter hook output priority 0; policy accept;",
                f"    meta l4proto {{ tcp, udp }} th sport {port} {drop_rule(percent)}",
                "  }",
            ],
        )
    )


def add_port_loss(session: HostSession, port: int, percent: float) -> str | None:
    """Load the trial's table on the session's host; None if nft took it, else nft's complaint."""
    result = session.shell(
        f"printf %s {shlex.quote(port_loss_ruleset(port, percent))} | {NFT} -f -",
        timeout=30,
        check=False,
        shown="add the loss rules",
    )
    if result.exited == 0:
        return None
    lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def remove_port_loss(session: HostSession) -> None:
    """Delete the trial's table; a table already gone is fine. Raises HostError if the host is."""
    session.shell(
        f"{NFT} delete table {FAMILY} {TRIAL_TABLE} 2>/dev/null; true", timeout=30, shown="remove the loss rules"
    )
