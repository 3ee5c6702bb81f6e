"""The lab against the real kernel and real sshd: namespaces, bridge, SSH with host-key
checking, Fabric through HostSession, Ansible through ansible-runner, and a clean teardown."""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ansible_runner
import pytest

from harness.errors import HostError, LabError
from harness.hosts import inventory
from harness.hosts.lab import lab_down, lab_status, lab_up
from harness.hosts.lab import sshd as lab_sshd
from harness.hosts.remote import HostSession
from tests.builders import run_harness

pytestmark = pytest.mark.integration

NAME = f"t{os.getpid()}"  # distinct per test process: no clash with a lab someone else runs


def traces(name, base_dir):
    """What is left of a lab on this machine: namespaces, links, live sshd processes, files."""
    namespaces = [
        line.split()[0]
        for line in _out(["ip", "netns", "list"]).splitlines()
        if line.split() and line.split()[0].startswith(f"{name}-")
    ]
    links = [
        line.split()[0].split("@")[0]
        for line in _out(["ip", "-br", "link"]).splitlines()
        if line.split()[0].startswith(f"{name}-")
    ]
    # pgrep -f matches command lines; a zombie has none, so only live processes count
    processes = _out(["pgrep", "-f", f"{base_dir / name}/"]).split()
    files = [str(base_dir / name)] if (base_dir / name).exists() else []
    return namespaces + links + processes + files


def _out(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("labs")


@pytest.fixture(scope="module")
def lab(base_dir, make_lab):
    return make_lab(NAME, base_dir, hosts=3, queues=2)


def test_every_lab_host_answers_over_host_session_from_the_inventory(lab):
    loaded = inventory.load(lab.inventory)
    assert {group: [host.name for host in hosts] for group, hosts in loaded.groups.items()} == {
        "servers": [f"{NAME}-h1"],
        "clients": [f"{NAME}-h2"],
        "others": [f"{NAME}-h3"],
        "lab": [f"{NAME}-h1", f"{NAME}-h2", f"{NAME}-h3"],
    }
    for host, planned in zip(loaded.groups["lab"], lab.hosts, strict=False):
        assert (host.address, host.key_file, host.known_hosts) == (
            planned.address,
            str(lab.client_key),
            str(lab.known_hosts),
        )
        assert host.address.startswith(("198.18.", "198.19."))
        with HostSession(host) as session:
            assert session.run(["hostname"]).stdout.strip() == host.name
            addresses = session.run(["ip", "-br", "addr"]).stdout
            assert f"{host.address}/24" in addresses and addresses.startswith("lo ")
            assert session.run(["ls", "/sys/class/net/eth0/queues"]).stdout.split() == ["rx-0", "rx-1", "tx-0", "tx-1"]


def test_host_1_reaches_host_2_over_the_bridge(lab):
    first, second = lab.hosts[0], lab.hosts[1]
    script = (
        f"import socket; s = socket.create_connection(('{second.address}', 22), timeout=2); "
        "print(s.recv(64).decode().strip())"
    )
    with HostSession(lab.harness_host(first)) as session:
        assert session.run(["python3", "-c", script]).stdout.startswith("SSH-2.0-OpenSSH")


def test_ansible_pings_the_lab_over_ssh_and_checks_host_keys(lab, tmp_path):
    # ansible-runner starts `ansible` by PATH: the harness's own comes first
    env = {
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)]),
    }
    hosts = {host.name for host in lab.hosts}
    for run_dir in ("refused", "ping"):
        (tmp_path / run_dir).mkdir()  # a fresh private_data_dir per run
    # First with an empty known_hosts (before any run leaves an SSH master connection to reuse):
    # ansible-runner turns host-key checking off by default, the inventory turns it back on.
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    distrusting = tmp_path / "distrusting.ini"
    distrusting.write_text(lab.inventory.read_text().replace(str(lab.known_hosts), str(empty)))
    refused = ansible_runner.run(
        private_data_dir=str(tmp_path / "refused"),
        inventory=str(distrusting),
        host_pattern="lab",
        module="ping",
        quiet=True,
        envvars=env,
    )
    assert refused.status == "failed"
    assert "Host key verification failed" in refused.stdout.read()
    assert set(refused.stats["dark"]) == hosts
    assert empty.read_text() == ""  # nothing was added to it

    answered = ansible_runner.run(
        private_data_dir=str(tmp_path / "ping"),
        inventory=str(lab.inventory.resolve()),
        host_pattern="lab",
        module="ping",
        quiet=True,
        envvars=env,
    )
    assert answered.status == "successful", answered.stdout.read()
    assert set(answered.stats["ok"]) == hosts and not answered.stats["dark"]


def test_unknown_and_changed_host_keys_are_rejected(lab, tmp_path):
    first, second = lab.hosts[0], lab.hosts[1]
    empty = tmp_path / "empty"
    empty.write_text("")
    unknown = dataclasses.replace(lab.harness_host(first), known_hosts=str(empty))
    with (
        HostSession(unknown) as session,
        pytest.raises(HostError, match=rf"^{first.name}: SSH .*not found in known_hosts"),
    ):
        session.run(["true"])
    # host 2's key listed under host 1's address: a changed key, as after a reinstall or an impostor
    swapped = tmp_path / "swapped"
    key = next(line for line in lab.known_hosts.read_text().splitlines() if line.startswith(second.address + " "))
    swapped.write_text(key.replace(second.address, first.address, 1) + "\n")
    changed = dataclasses.replace(lab.harness_host(first), known_hosts=str(swapped))
    with HostSession(changed) as session, pytest.raises(HostError, match=rf"^{first.name}: SSH .*does not match"):
        session.run(["true"])


def test_lab_status_on_the_command_line_lists_the_hosts(lab, base_dir):
    result = run_harness("lab", "status", "--name", NAME, "--base-dir", base_dir)
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[0] == f"lab {NAME}: healthy, 3 hosts on {lab.subnet}, bridge {NAME}-br UP"
    for line, host in zip(lines[1:], lab.hosts, strict=True):
        assert line.split()[:5] == [host.name, host.address, "sshd", str(host.sshd_pid), "running"]
        assert f"eth0@{host.name} UP rx 2 tx 2" in line


def test_lab_up_keeps_a_healthy_lab(lab, base_dir):
    again = lab_up(NAME, hosts=3, queues=2, base_dir=base_dir)
    assert again == lab


def test_a_broken_lab_is_rebuilt_and_lab_down_removes_everything(tmp_path):
    name = f"u{os.getpid()}"
    try:
        first = lab_up(name, hosts=2, queues=1, base_dir=tmp_path)
        os.kill(first.hosts[1].sshd_pid, signal.SIGTERM)  # the lab's own sshd, started by lab_up above
        deadline = time.monotonic() + 5
        while (status := lab_status(name, tmp_path)).healthy and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status.exists and not status.healthy
        assert f"{name}-h2: sshd {first.hosts[1].sshd_pid} is not running" in status.problems

        rebuilt = lab_up(name, hosts=2, queues=1, base_dir=tmp_path)
        assert lab_status(name, tmp_path).healthy
        assert rebuilt.hosts[1].sshd_pid != first.hosts[1].sshd_pid
        assert traces(name, tmp_path)
    finally:
        downs = [run_harness("lab", "down", "--name", name, "--base-dir", tmp_path) for _ in range(2)]
    assert [(down.returncode, down.stdout, down.stderr) for down in downs] == [(0, f"lab {name}: down\n", "")] * 2
    assert traces(name, tmp_path) == []
    gone = run_harness("lab", "status", "--name", name, "--base-dir", tmp_path)
    assert (gone.returncode, gone.stdout) == (1, "")
    assert gone.stderr == (
        f"error: lab {name}: not up (nothing in {tmp_path / name}): run `harness lab up --name {name}`\n"
    )


def test_a_lab_up_that_fails_halfway_removes_what_it_built(tmp_path, monkeypatch):
    name = f"v{os.getpid()}"
    real_start = lab_sshd.start_sshd

    def failing_start(host):
        if host.name.endswith("-h2"):
            raise LabError(f"{host.name}: start sshd: injected failure")
        return real_start(host)

    monkeypatch.setattr(lab_sshd, "start_sshd", failing_start)
    try:
        with pytest.raises(LabError, match=rf"^{name}-h2: start sshd: injected failure$"):
            lab_up(name, hosts=3, queues=1, base_dir=tmp_path)
        assert traces(name, tmp_path) == []
    finally:
        lab_down(name, tmp_path)


def test_lab_down_of_a_lab_that_never_existed_does_nothing(tmp_path):
    lab_down(f"w{os.getpid()}", tmp_path)
    lab_down(f"w{os.getpid()}", tmp_path)
    assert list(tmp_path.iterdir()) == []
