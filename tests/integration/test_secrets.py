"""Secrets stay out of a run's files, and SSH hosts must prove who they are.

A real run across two lab hosts (network namespaces with their own sshd, harness/hosts/lab/)
whose inventory also carries a password and whose environment holds another: no private
key (the lab's client key, the hosts' keys, any PEM/OpenSSH private key block) and neither
password may appear in any file of the run directory, Ansible's artifacts included. The
run's experiment is the payload experiment of tests/payloads.py, so this also proves that no payload
runs when commands go through a remote shell over SSH.

A host whose key is in no known_hosts file is refused before anything runs on it.
"""

import base64
import hashlib
import os
import re
import secrets
import subprocess
from pathlib import Path

import pytest

from harness.errors import HostError
from harness.hosts.provision import Provisioner
from tests.builders import HARNESS, VALID
from tests.payloads import Payloads, check_run, write_payload_experiment

pytestmark = pytest.mark.integration

PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")


@pytest.fixture(scope="module")
def lab(make_lab):
    return make_lab(f"s{os.getpid() % 100000}", hosts=2)


def key_material(path: Path) -> list[bytes]:
    """The lines of a private key file long enough to identify it (its base64 body)."""
    return [line.strip() for line in path.read_bytes().splitlines() if len(line.strip()) >= 20]


def fingerprint(public_key_file: Path) -> str:
    blob = base64.b64decode(public_key_file.read_text().split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@pytest.fixture(scope="module")
def ssh_run(lab, tmp_path_factory):
    """The payload experiment across the lab; its inventory and environment hold passwords."""
    base = tmp_path_factory.mktemp("ssh_run")
    passwords = {"inventory": f"pw-{secrets.token_hex(8)}", "environment": f"pw-{secrets.token_hex(8)}"}
    inventory = base / "inventory.ini"
    # a variable Ansible knows but this run never needs: it must not be copied anywhere
    inventory.write_text(
        re.sub(
            r"(?m)^(\S+-h\d+ ansible_host=.*)$",
            rf"\1 ansible_become_password={passwords['inventory']}",
            lab.inventory.read_text(),
        )
    )
    assert inventory.read_text().count(passwords["inventory"]) == len(lab.hosts)
    payloads = Payloads(secrets.token_hex(4))
    try:
        written = write_payload_experiment(base / "experiment", payloads, ports=(18295, 18296))
        result = subprocess.run(
            [str(HARNESS), "run", str(written["path"]), "--inventory", str(inventory), "--out", str(base / "out")],
            capture_output=True,
            text=True,
            timeout=600,
            env=dict(os.environ, HARNESS_TEST_PASSWORD=passwords["environment"]),
            check=False,
        )
        fired = payloads.fired()
    finally:
        payloads.clean()
    run_dirs = list((base / "out").iterdir()) if (base / "out").exists() else []
    return {
        "result": result,
        "fired": fired,
        "written": written,
        "passwords": passwords,
        "run_dir": run_dirs[0] if len(run_dirs) == 1 else None,
    }


def files_holding(run_dir: Path, texts: list[bytes]) -> list[str]:
    """Files of the run directory that hold any of `texts`."""
    files = [path for path in run_dir.rglob("*") if path.is_file()]
    assert len(files) > 20 and any("ansible" in path.parts for path in files)  # Ansible's artifacts too
    return [str(path.relative_to(run_dir)) for path in files if any(text in path.read_bytes() for text in texts)]


def test_payloads_run_nothing_over_ssh(ssh_run):
    assert ssh_run["fired"] == {}
    assert ssh_run["result"].returncode == 0, ssh_run["result"].stderr[-3000:]
    check_run(ssh_run["run_dir"], ssh_run["written"])


def test_no_private_key_in_any_file_of_the_run(ssh_run, lab):
    assert ssh_run["run_dir"] is not None, ssh_run["result"].stderr[-3000:]
    assert [
        path for path in ssh_run["run_dir"].rglob("*") if path.is_file() and PRIVATE_KEY.search(path.read_bytes())
    ] == []
    for key in (lab.client_key, *(host.host_key for host in lab.hosts)):
        material = key_material(key)
        assert material
        assert files_holding(ssh_run["run_dir"], material) == [], key


def test_no_password_from_the_inventory_in_any_file_of_the_run(ssh_run):
    assert ssh_run["run_dir"] is not None, ssh_run["result"].stderr[-3000:]
    assert files_holding(ssh_run["run_dir"], [ssh_run["passwords"]["inventory"].encode()]) == []


def test_no_secret_from_the_environment_in_any_file_of_the_run(ssh_run):
    assert ssh_run["run_dir"] is not None, ssh_run["result"].stderr[-3000:]
    assert files_holding(ssh_run["run_dir"], [ssh_run["passwords"]["environment"].encode()]) == []


def test_a_host_whose_key_is_in_no_known_hosts_is_refused(lab, tmp_path):
    """The lab's own inventory names its known_hosts; this one does not, as for a host that
    was never connected to. Its fresh key is in no known_hosts file of this machine."""
    host = lab.hosts[0]
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        f"[servers]\n{host.name} ansible_host={host.address} ansible_user=root "
        f"ansible_ssh_private_key_file={lab.client_key}\n\n"
        "[clients]\nlocalhost ansible_connection=local\n"
    )
    user_known_hosts = Path("~/.ssh/known_hosts").expanduser()
    before = user_known_hosts.read_bytes() if user_known_hosts.exists() else None
    result = subprocess.run(
        [str(HARNESS), "run", str(VALID), "--inventory", str(inventory), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == result.stderr.splitlines()[-1:]
    assert errors[0].startswith(
        f"error: {host.name}: SSH to {host.address}:22 refused: its host key (ssh-ed25519 "
        f"{fingerprint(Path(f'{host.host_key}.pub'))}) is not found in known_hosts"
    )
    (run_dir,) = (tmp_path / "out").iterdir()
    assert not any((run_dir / "ansible").iterdir())  # refused before any playbook ran
    assert (user_known_hosts.read_bytes() if user_known_hosts.exists() else None) == before


def test_ansible_refuses_a_host_whose_key_is_not_known(lab, tmp_path):
    host = lab.hosts[0]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        f"[servers]\n{host.name} ansible_host={host.address} ansible_user=root "
        f"ansible_ssh_private_key_file={lab.client_key} "
        f"ansible_ssh_common_args='-o UserKnownHostsFile={empty}'\n"
    )
    provisioner = Provisioner(inventory, [host.name], tmp_path / "ansible", lambda: False)
    with pytest.raises(HostError, match=rf"^{host.name}: unreachable during snapshot: .*Host key verification failed"):
        provisioner.snapshot([])
    assert empty.read_text() == ""
