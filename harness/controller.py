"""This process as a run records it, and whether a recorded one still runs.

A run names its controller in its manifest and in each host's lock and journal:
host name, boot id, pid and the pid's start time (field 22 of /proc/PID/stat). A pid
alone could be reused by another process; with its start time and the boot id it names
one process of one boot of one machine. A controller recorded on another machine (or
an earlier boot) cannot be checked from here.
"""

from __future__ import annotations

import os
import socket

BOOT_ID = "/proc/sys/kernel/random/boot_id"


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat; None when there is no such process or it is a zombie."""
    try:
        with open(f"/proc/{int(pid)}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def _boot_id() -> str:
    try:
        with open(BOOT_ID) as handle:
            return handle.read().strip()
    except OSError:
        return ""


def identity() -> dict:
    """{"hostname", "boot_id", "pid", "start_time"} of this process."""
    pid = os.getpid()
    return {"hostname": socket.gethostname(), "boot_id": _boot_id(), "pid": pid, "start_time": _start_time(pid)}


def alive(controller: dict | None) -> bool | None:
    """True or False for a controller recorded on this machine in this boot; None when it
    cannot be told from here (another machine, an older record without one)."""
    if not controller or not controller.get("boot_id") or controller.get("boot_id") != _boot_id():
        return None
    return _start_time(controller.get("pid", 0)) == str(controller.get("start_time"))


def is_self(controller: dict | None) -> bool:
    return bool(controller) and controller.get("pid") == os.getpid() and alive(controller) is True
