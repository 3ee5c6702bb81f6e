"""Fields of an experiment whose schema admits no free text, and an inventory's connection
values, refuse text that a shell or a template engine would evaluate; nothing evaluates it
on the way. tests/integration/test_injection_runs.py runs the payloads that are accepted.
"""

import shutil
import subprocess

import pytest

from harness.errors import InventoryError
from harness.hosts import inventory
from tests.builders import BAD, HARNESS, VALID

# Fields that must be names or numbers: a payload there is refused by the schema.
REJECTED = {
    "claim.id": ("  id: bad_input", "  id: 'bad$(touch M)'"),
    "variants.slow": ("  slow:\n", "  'slow;touch M':\n"),
    "pairs.0.name": ("name: fast_vs_slow", "name: 'x`touch M`'"),
    "roles.server": ("roles: {server: servers,", "roles: {server: 'servers && touch M',"),
    "variants.fast.server.role": (
        '    server: {role: server, command: [python3, "{workload}/server.py", '
        '"{server_address}", "{port}"], port: 18292}',
        "    server: {role: 'server|touch M', command: [python3, \"{workload}/server.py\", "
        '"{server_address}", "{port}"], port: 18292}',
    ),
    "variants.fast.server.cpus": ("port: 18292}", "port: 18292, cpus: '0;touch M'}"),
    "variants.fast.server.port": ("port: 18292}", "port: '18292;touch M'}"),
    "provision.packages.0": ("workload: work\n", "workload: work\nprovision: {packages: ['gcc; touch M']}\n"),
    "provision.sysctls": ("workload: work\n", "workload: work\nprovision: {sysctls: {'net.core.x$(touch M)': 1}}\n"),
    "provision.data.0.name": (
        "workload: work\n",
        "workload: work\nprovision: {data: [{name: 'a$(touch M)', role: server, size: 1MiB}]}\n",
    ),
    "provision.builds.0.name": (
        "workload: work\n",
        "workload: work\nprovision: {builds: [{name: 'b`touch M`', role: server, sources: [noop.c]}]}\n",
    ),
    "variants.fast.load.command.4": (
        '"{port}", "{count}"], parser: fetch_json, timeout: 30}\npairs',
        '"{port}", "{count.__init__.__globals__}"], parser: fetch_json, timeout: 30}\npairs',
    ),
}


@pytest.mark.parametrize("field", sorted(REJECTED))
def test_fields_that_must_be_names_reject_payloads(field, tmp_path):
    old, new = REJECTED[field]
    marker = tmp_path / "marker"
    text = VALID.read_text()
    assert old in text
    shutil.copytree(BAD / "work", tmp_path / "work")
    path = tmp_path / "experiment.yaml"
    path.write_text(text.replace(old, new.replace("M", str(marker)), 1))
    result = subprocess.run(
        [str(HARNESS), "validate", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {path}:") and f": {field}" in line, line
    assert not marker.exists()


# case -> (the field the error names, the inventory line)
CONNECTION_PAYLOADS = {
    "ansible_host": ("ansible_host", "remote ansible_host='$(touch M)'"),
    "ansible_host_jinja": ("ansible_host", "remote ansible_host=\"{{ lookup('pipe', 'touch M') }}\""),
    "ansible_user": ("ansible_user", "remote ansible_host=127.0.0.1 ansible_user='root;touch M'"),
    "host_name": ("the name", "h$(touch${IFS}M) ansible_host=127.0.0.1"),
    "key_file": (
        "ansible_ssh_private_key_file",
        "remote ansible_host=127.0.0.1 ansible_ssh_private_key_file='/x`touch M`'",
    ),
    "known_hosts_jinja": (
        "UserKnownHostsFile (ansible_ssh_common_args)",
        'remote ansible_host=127.0.0.1 ansible_ssh_common_args=\'-o UserKnownHostsFile={{lookup("pipe","touch M")}}\'',
    ),
}


@pytest.mark.parametrize("case", sorted(CONNECTION_PAYLOADS))
def test_inventory_connection_values_with_payloads_are_refused(case, tmp_path):
    field, line = CONNECTION_PAYLOADS[case]
    marker = tmp_path / "marker"
    path = tmp_path / "inventory.ini"
    path.write_text(f"[servers]\n{line.replace('M', str(marker))}\n\n[clients]\nlocalhost ansible_connection=local\n")
    loaded = inventory.load(path)
    with pytest.raises(InventoryError) as refused:
        loaded.hosts_for({"server": "servers", "client": "clients"})
    assert str(refused.value).startswith(f"{path}: host ")
    assert f": {field} " in str(refused.value)
    assert not marker.exists()


def test_a_group_name_with_a_payload_is_not_an_inventory(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "inventory.ini"
    path.write_text(
        f"[servers]\nlocalhost ansible_connection=local\n[clients]\nlocalhost\n[x$(touch {marker})]\nlocalhost\n"
    )
    with pytest.raises(InventoryError, match=rf"^{path}:5: Invalid section entry"):
        inventory.load(path)
    assert not marker.exists()


def test_run_refuses_an_inventory_host_with_a_payload(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "inventory.ini"
    path.write_text(
        f"[servers]\nremote ansible_host='$(touch {marker})'\n\n[clients]\nlocalhost ansible_connection=local\n"
    )
    result = subprocess.run(
        [str(HARNESS), "run", str(VALID), "--inventory", str(path), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"error: {path}: host remote: ansible_host '$(touch {marker})' is not a host name or an IP address\n"
    )
    assert not (tmp_path / "out").exists()
    assert not marker.exists()
