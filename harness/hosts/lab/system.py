"""Commands on this machine for the lab: running a system command as a named step (a
failure is a LabError), listing namespaces and links, watching and stopping processes,
small file reads, and installing a missing Debian package without starting its service.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

from harness.errors import LabError
from harness.hosts.lab.model import LinkStatus

POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
INSTALL_LOCK = Path("/run/harness-lab-install.lock")


def run(argv: list[str], step: str, timeout: float = 30.0, missing_ok: bool = False) -> str:
    """Run a system command; raise LabError naming the step unless it succeeds.

    missing_ok: a command that fails because its object is already gone succeeds.
    """
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
        )
    except FileNotFoundError:
        raise LabError(f"{step}: {argv[0]} not found: install it") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{step}: {shlex.join(argv[:4])} did not finish within {timeout:g} s") from None
    if result.returncode != 0:
        message = last_line(result.stderr or result.stdout)
        # the whole output: nft ends its message with a line of carets
        if missing_ok and re.search(r"Cannot find device|No such file", result.stderr + result.stdout):
            return ""
        raise LabError(f"{step}: `{shlex.join(argv)}` failed: {message}")
    return result.stdout


def namespaces() -> list[str]:
    # `ip netns list` prints "NAME (id: N)" for namespaces that have an id
    listing = run(["ip", "netns", "list"], "lab: list namespaces")
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def links(namespace: str | None) -> list[dict]:
    argv = ["ip"] + (["-n", namespace] if namespace else []) + ["-d", "-j", "link", "show"]
    output = run(argv, f"{namespace or 'lab'}: list links", missing_ok=namespace is not None)
    return json.loads(output) if output.strip() else []


def link_entry(link: str, namespace: str | None) -> dict | None:
    return next((entry for entry in links(namespace) if entry.get("ifname") == link), None)


def link_status(link: str, namespace: str | None) -> LinkStatus:
    entry = link_entry(link, namespace)
    if entry is None:
        return LinkStatus(name=link, namespace=namespace, state="missing", rx_queues=None, tx_queues=None)
    return LinkStatus(
        name=link,
        namespace=namespace,
        state=entry.get("operstate", "UNKNOWN"),
        rx_queues=entry.get("num_rx_queues"),
        tx_queues=entry.get("num_tx_queues"),
        mtu=entry.get("mtu"),
    )


def stop_processes(pids: frozenset[int]) -> None:
    """TERM the lab's processes, then KILL whatever is left after 3 s."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
        alive_now = [pid for pid in pids if alive(pid)]
        if not alive_now:
            return
        for pid in alive_now:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while any(alive(pid) for pid in alive_now) and time.monotonic() < deadline:
            time.sleep(0.05)
    survivors = sorted(pid for pid in pids if alive(pid))
    if survivors:
        raise LabError(f"lab: processes {survivors} survived SIGKILL: check them with ps and run lab down again")


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def ensure_package(program: Path, package: str) -> None:
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
            POLICY_RC_D.write_text(f"#!/bin/sh\n# written by harness lab up while it installs {package}\nexit 101\n")
            POLICY_RC_D.chmod(0o755)
            written = True
        try:
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            install = ["apt-get", "install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", package]
            result = subprocess.run(
                install, capture_output=True, text=True, env=env, timeout=900, stdin=subprocess.DEVNULL, check=False
            )
            if result.returncode != 0 and "Unable to locate package" in result.stderr + result.stdout:
                subprocess.run(
                    ["apt-get", "update"],
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=600,
                    stdin=subprocess.DEVNULL,
                    check=False,
                )
                result = subprocess.run(
                    install, capture_output=True, text=True, env=env, timeout=900, stdin=subprocess.DEVNULL, check=False
                )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LabError(
                f"lab: installing {package} failed ({exc}): run `apt-get install {package}`, then lab up again"
            ) from None
        finally:
            if written:
                POLICY_RC_D.unlink(missing_ok=True)
    if result.returncode != 0 or not program.exists():
        raise LabError(
            f"lab: installing {package} failed: {last_line(result.stderr or result.stdout)}: "
            f"run `apt-get install {package}`, then lab up again"
        )


def write_private(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        return "" if exc.errno == errno.ENOENT else str(exc)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
