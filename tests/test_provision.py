"""Provisioning against this machine: real ansible-runner, real sysctls, real gcc.

Every test that changes a sysctl first sets net.ipv4.tcp_wmem to an unusual
value, so restore is checked against something it could not reach by accident,
and puts the original back in a finally.
"""

import os
import shutil
import uuid
from pathlib import Path

import pytest

from harness import spec as spec_module
from harness.errors import HostError, Interrupted, ProvisionError
from harness.inventory import Host
from harness.provision import Provisioner

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="sets sysctls and installs packages: needs root"),
]

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = ROOT / "experiments" / "sendfile.yaml"
LOCAL = Host(name="localhost", address="localhost", port=22, user="root", local=True)
BY_ROLE = {"server": (LOCAL,), "client": (LOCAL,)}
UNUSUAL_WMEM = "4096 20480 3145728"


def proc_sys(key: str) -> str:
    return Path("/proc/sys", *key.split(".")).read_text().strip()


def write_proc_sys(key: str, value: str) -> None:
    Path("/proc/sys", *key.split(".")).write_text(value)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inventory") / "hosts.ini"
    path.write_text("[servers]\nlocalhost ansible_connection=local\n[clients]\nlocalhost ansible_connection=local\n")
    return path


@pytest.fixture(scope="module")
def spec():
    return spec_module.load(EXPERIMENT)


@pytest.fixture
def unusual_wmem():
    """tcp_wmem at a value no step of the harness would choose; the originals come back afterwards."""
    keys = ("net.ipv4.tcp_wmem", "net.ipv4.tcp_rmem")
    original = {key: proc_sys(key) for key in keys}
    write_proc_sys("net.ipv4.tcp_wmem", UNUSUAL_WMEM)
    try:
        yield original
    finally:
        for key, value in original.items():
            write_proc_sys(key, value)


@pytest.fixture
def run_id():
    run_id = f"test-{uuid.uuid4().hex[:8]}"
    yield run_id
    shutil.rmtree(Provisioner.workdir_for(run_id), ignore_errors=True)


def provisioner(inventory, tmp_path, cancel=lambda: False) -> Provisioner:
    return Provisioner(inventory, ["localhost"], tmp_path / "ansible", cancel)


def without_packages(spec, **provision):
    """The spec with no package installs (and other provision fields replaced)."""
    return spec.model_copy(update={"provision": spec.provision.model_copy(update={"packages": [], **provision})})


def test_snapshot_reads_facts_and_current_sysctls(inventory, tmp_path):
    state = provisioner(inventory, tmp_path).snapshot(["net.ipv4.tcp_wmem", "net.core.somaxconn"])

    facts = state.facts["localhost"]
    assert facts["cores"] > 0 and facts["memory_mib"] > 0
    assert facts["kernel"] == os.uname().release
    assert facts["hostname"] == os.uname().nodename
    assert facts["os"].startswith("Debian")
    assert state.sysctls_before == {
        "localhost": {"net.ipv4.tcp_wmem": proc_sys("net.ipv4.tcp_wmem"),
                      "net.core.somaxconn": proc_sys("net.core.somaxconn")},
    }
    assert (tmp_path / "ansible" / "01-snapshot" / "artifacts" / "snapshot" / "stdout").is_file()


def test_snapshot_names_a_sysctl_the_kernel_lacks(inventory, tmp_path):
    with pytest.raises(HostError, match=r"^localhost: cannot read sysctl net\.ipv4\.no_such_setting "):
        provisioner(inventory, tmp_path).snapshot(["net.core.somaxconn", "net.ipv4.no_such_setting"])


def test_apply_builds_fills_sets_and_restore_puts_back(inventory, tmp_path, spec, unusual_wmem, run_id):
    prov = provisioner(inventory, tmp_path)
    state = prov.snapshot(list(spec.provision.sysctls))
    assert state.sysctls_before["localhost"]["net.ipv4.tcp_wmem"].split() == UNUSUAL_WMEM.split()

    parameters = {**spec.parameters, "file_size": "1MiB"}
    workspace, tools = prov.apply(spec, spec_module.workload_dir(spec, EXPERIMENT), BY_ROLE, parameters, run_id)

    assert workspace.workdir == f"/var/tmp/harness/{run_id}"
    assert os.access(f"{workspace.bin}/fetch", os.X_OK)
    assert os.path.getsize(f"{workspace.data}/payload.bin") == 1 << 20
    assert Path(workspace.workload, "file_server.py").read_bytes() == (EXPERIMENT.parent / "sendfile" / "file_server.py").read_bytes()
    for key, value in spec.provision.sysctls.items():
        assert proc_sys(key).split() == str(value).split()
    versions = tools["localhost"]
    assert versions["nginx"].startswith("nginx/")
    assert versions["gcc"].startswith("gcc ")
    assert versions["python3"].startswith("Python 3")
    assert versions["kernel"] == os.uname().release

    prov.restore(state, workspace.workdir)
    assert proc_sys("net.ipv4.tcp_wmem").split() == UNUSUAL_WMEM.split()
    assert proc_sys("net.ipv4.tcp_rmem") == unusual_wmem["net.ipv4.tcp_rmem"]
    assert not os.path.exists(workspace.workdir)

    prov.restore(state, workspace.workdir)  # idempotent: nothing left to do, no error
    assert proc_sys("net.ipv4.tcp_wmem").split() == UNUSUAL_WMEM.split()
    assert sorted(p.name for p in (tmp_path / "ansible").iterdir()) == [
        "01-snapshot", "02-provision", "03-restore", "04-restore"]


def test_failing_build_names_host_and_task_and_restore_still_works(inventory, tmp_path, spec, unusual_wmem, run_id):
    workload = tmp_path / "workload"
    workload.mkdir()
    (workload / "broken.c").write_text("int main(void) { return 0 }\n")
    broken = without_packages(spec, builds=[spec_module.Build(name="broken", role="client", sources=["broken.c"])])
    prov = provisioner(inventory, tmp_path)
    state = prov.snapshot(list(broken.provision.sysctls))

    with pytest.raises(ProvisionError, match=r"^localhost: task 'Compile builds' for broken failed: .*error: expected"):
        prov.apply(broken, workload, BY_ROLE, {**spec.parameters, "file_size": "1KiB"}, run_id)
    assert proc_sys("net.ipv4.tcp_wmem").split() != UNUSUAL_WMEM.split()  # apply got as far as the sysctls

    prov.restore(state, None)  # the workdir of the failed apply is still known
    assert proc_sys("net.ipv4.tcp_wmem").split() == UNUSUAL_WMEM.split()
    assert proc_sys("net.ipv4.tcp_rmem") == unusual_wmem["net.ipv4.tcp_rmem"]
    assert not os.path.exists(Provisioner.workdir_for(run_id))


@pytest.mark.parametrize("when", ["before", "during"])
def test_cancel_interrupts_apply_and_restore_still_runs(inventory, tmp_path, spec, unusual_wmem, run_id, when):
    calls = {"apply": 0}
    phase = {"name": "snapshot"}

    def cancel() -> bool:
        if phase["name"] != "apply":
            return False
        calls["apply"] += 1
        # "during": the first poll (before the playbook starts) says go on, every later one says stop.
        return when == "before" or calls["apply"] > 1

    small = without_packages(spec)
    prov = provisioner(inventory, tmp_path, cancel)
    state = prov.snapshot(list(small.provision.sysctls))
    phase["name"] = "apply"
    with pytest.raises(Interrupted):
        prov.apply(small, spec_module.workload_dir(spec, EXPERIMENT), BY_ROLE,
                   {**spec.parameters, "file_size": "1KiB"}, run_id)
    assert calls["apply"] >= (1 if when == "before" else 2)

    prov.restore(state, Provisioner.workdir_for(run_id))  # cancel() is still True: restore must ignore it
    assert proc_sys("net.ipv4.tcp_wmem").split() == UNUSUAL_WMEM.split()
    assert proc_sys("net.ipv4.tcp_rmem") == unusual_wmem["net.ipv4.tcp_rmem"]
    assert not os.path.exists(Provisioner.workdir_for(run_id))
