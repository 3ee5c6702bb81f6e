"""SSH into the lab: keys (the client's and each host's), known_hosts, each host's sshd
(its config, its start in the host's namespace under the host's own hostname, how to
tell it from other processes) and the wait until every host answers SSH the way the
harness will connect: as root, with the lab's key and host-key checking on.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.errors import HostError, LabError
from harness.hosts.lab import system
from harness.hosts.lab.model import SSH_PORT, Lab, LabHost
from harness.hosts.remote import HostSession

SSHD = Path("/usr/sbin/sshd")
SSH_READY_TIMEOUT = 10.0
CONNECT_TIMEOUT = 3.0


def keygen(path: Path, comment: str, step: str) -> None:
    for old in (path, Path(str(path) + ".pub")):
        old.unlink(missing_ok=True)
    system.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], step)
    for made in (path, Path(str(path) + ".pub")):
        made.chmod(0o600)


def write_known_hosts(path: Path, hosts: list[LabHost]) -> None:
    """One line per host: its address and the public half of its host key."""
    entries = []
    for host in hosts:
        key_type, key = Path(f"{host.host_key}.pub").read_text().split()[:2]
        entries.append(f"{host.address} {key_type} {key}\n")  # port 22: the bare address, no [addr]:port
    system.write_private(path, "".join(entries))


def sshd_config(host: LabHost, client_key: Path) -> str:
    return "\n".join(
        [
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
        ]
    )


def start_sshd(host: LabHost) -> int:
    """Start the host's sshd in its namespace under its own hostname; return its pid."""
    # unshare --uts gives the host its own hostname, so `hostname` and Ansible's facts
    # tell lab hosts apart; sshd then daemonizes and writes its pid file.
    script = 'hostname "$1" && exec "$2" -f "$3" -E "$4"'
    argv = [
        "ip",
        "netns",
        "exec",
        host.namespace,
        "unshare",
        "--uts",
        "--",
        "/bin/sh",
        "-c",
        script,
        "sh",
        host.name,
        str(SSHD),
        str(host.sshd_config),
        str(host.sshd_log),
    ]
    try:
        system.run(argv, f"{host.name}: start sshd", timeout=15)
    except LabError as error:
        raise LabError(f"{error}; sshd log: {system.last_line(system.read(host.sshd_log))}") from None
    deadline = time.monotonic() + 5
    while (pid := system.read_pid(host.sshd_pid_file)) is None:
        if time.monotonic() > deadline:
            raise LabError(
                f"{host.name}: sshd wrote no pid file {host.sshd_pid_file} within 5 s; "
                f"sshd log: {system.last_line(system.read(host.sshd_log))}"
            )
        time.sleep(0.02)
    return pid


def is_lab_sshd(pid: int, config: Path) -> bool:
    """Whether pid is a live sshd started with this config file (pids get reused)."""
    try:
        executable = os.readlink(f"/proc/{pid}/exe")
        # sshd rewrites its title ("sshd: /usr/sbin/sshd -f CONF ... [listener]"): compare words
        words = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
    except OSError:
        return False
    return executable == str(SSHD) and str(config) in words and system.alive(pid)


def wait_for_ssh(lab: Lab, timeout: float) -> None:
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
                raise LabError(
                    f"{host.name}: no SSH answer from {host.address}:{SSH_PORT} within {timeout:g} s "
                    f"({error}); sshd log: {system.last_line(system.read(host.sshd_log))}"
                ) from None
        time.sleep(0.1)
