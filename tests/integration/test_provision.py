"""Provisioning against this machine: real ansible-runner, real sysctls, real gcc.

Every test that changes a sysctl first sets net.ipv4.tcp_wmem to an unusual
value, so restore is checked against something it could not reach by accident,
and puts the original back in a finally.
"""

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from harness.errors import HostError, Interrupted, ProvisionError
from harness.hosts.hoststate import DriftError
from harness.hosts.inventory import Host
from harness.hosts.provision import Provisioner
from harness.run import spec as spec_module
from tests.builders import ROOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="sets sysctls and installs packages: needs root"),
]

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
        "localhost": {
            "net.ipv4.tcp_wmem": proc_sys("net.ipv4.tcp_wmem"),
            "net.core.somaxconn": proc_sys("net.core.somaxconn"),
        }
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
    assert (
        Path(workspace.workload, "file_server.py").read_bytes()
        == (EXPERIMENT.parent / "sendfile" / "file_server.py").read_bytes()
    )
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
        "01-snapshot",
        "02-provision",
        "03-restore",
        "04-restore",
    ]


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
        prov.apply(
            small, spec_module.workload_dir(spec, EXPERIMENT), BY_ROLE, {**spec.parameters, "file_size": "1KiB"}, run_id
        )
    assert calls["apply"] >= (1 if when == "before" else 2)

    prov.restore(state, Provisioner.workdir_for(run_id))  # cancel() is still True: restore must ignore it
    assert proc_sys("net.ipv4.tcp_wmem").split() == UNUSUAL_WMEM.split()
    assert proc_sys("net.ipv4.tcp_rmem") == unusual_wmem["net.ipv4.tcp_rmem"]
    assert not os.path.exists(Provisioner.workdir_for(run_id))


def test_pip_installs_requirements_into_a_venv_in_the_workdir(inventory, tmp_path, spec, run_id):
    with_pip = without_packages(spec, builds=[], data=[], pip=["six==1.16.0"])
    prov = provisioner(inventory, tmp_path)
    state = prov.snapshot([])
    workspace, tools = prov.apply(
        with_pip, spec_module.workload_dir(spec, EXPERIMENT), BY_ROLE, spec.parameters, run_id
    )

    assert workspace.python == f"/var/tmp/harness/{run_id}/venv/bin/python3"
    imported = subprocess.run(
        [workspace.python, "-c", "import six, sys; print(six.__version__, sys.prefix)"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert imported.stdout.split() == ["1.16.0", f"/var/tmp/harness/{run_id}/venv"]
    assert "six==1.16.0" in tools["localhost"]["pip packages"].split()

    prov.restore(state, workspace.workdir)
    assert not os.path.exists(workspace.workdir)


def test_without_pip_commands_use_the_hosts_python(inventory, tmp_path, spec, run_id):
    prov = provisioner(inventory, tmp_path)
    state = prov.snapshot([])
    workspace, tools = prov.apply(
        without_packages(spec, builds=[], data=[]),
        spec_module.workload_dir(spec, EXPERIMENT),
        BY_ROLE,
        spec.parameters,
        run_id,
    )
    assert workspace.python == "python3"
    assert not os.path.exists(f"{workspace.workdir}/venv")
    assert "pip packages" not in tools["localhost"]
    prov.restore(state, workspace.workdir)


def test_a_pip_requirement_that_does_not_exist_names_the_task(inventory, tmp_path, spec, run_id):
    broken = without_packages(spec, builds=[], data=[], pip=["harness-no-such-package-x7q==0.0.1"])
    prov = provisioner(inventory, tmp_path)
    state = prov.snapshot([])
    with pytest.raises(
        ProvisionError, match=r"^localhost: task 'Install pip requirements' failed: .*harness-no-such-package-x7q"
    ):
        prov.apply(broken, spec_module.workload_dir(spec, EXPERIMENT), BY_ROLE, spec.parameters, run_id)
    prov.restore(state, None)
    assert not os.path.exists(Provisioner.workdir_for(run_id))


# --- host settings beyond sysctls: a lab host in its own network namespace ------------------------
#
# The lab host (harness/hosts/lab/: a namespace with sshd, eth0 a veth with 2 rx and 2 tx queues) is
# reached over SSH like any remote host; its devices are its own, so nothing here touches the
# machine's eth0. IRQ affinity is global: the one test that changes it puts it back itself too.

LAB_NAME = f"pv{os.getpid() % 100000}"
XDP_PASS = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int pass(struct xdp_md *ctx) { return XDP_PASS; }
char LICENSE[] SEC("license") = "GPL";
"""


@pytest.fixture(scope="module")
def lab(make_lab):
    return make_lab(LAB_NAME, hosts=1, queues=2)


@pytest.fixture
def lab_host(lab):
    """The lab host's name, after a test: its settings as the lab made them, whatever the test left."""
    host = lab.hosts[0]
    yield host.name
    for argv in (
        ["tc", "qdisc", "del", "dev", "eth0", "root"],
        ["tc", "qdisc", "del", "dev", "eth0", "clsact"],
        ["ip", "link", "set", "dev", "eth0", "xdpdrv", "off"],
        ["nft", "delete", "table", "inet", "harness"],
        ["ethtool", "-L", "eth0", "rx", "2", "tx", "2"],
        ["ethtool", "-K", "eth0", "gro", "off"],
    ):
        in_lab(host.name, *argv, check=False)
    for queue in (
        "rx-0/rps_cpus",
        "rx-1/rps_cpus",
        "rx-0/rps_flow_cnt",
        "rx-1/rps_flow_cnt",
        "tx-0/xps_cpus",
        "tx-1/xps_cpus",
    ):
        in_lab(host.name, "sh", "-c", f"echo 0 > /sys/class/net/eth0/queues/{queue}", check=False)


def in_lab(namespace: str, *argv: str, check: bool = True) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", namespace, *argv], capture_output=True, text=True, timeout=30, check=check
    ).stdout.strip()


def lab_file(namespace: str, path: str) -> str:
    return in_lab(namespace, "cat", path)


def lab_provisioner(lab, tmp_path) -> Provisioner:
    return Provisioner(lab.inventory, [lab.hosts[0].name], tmp_path / "ansible", lambda: False)


def lab_by_role(lab) -> dict:
    host = lab.harness_host(lab.hosts[0])
    return {"server": (host,), "client": (host,)}


def xdp_object(tmp_path) -> Path:
    if shutil.which("clang") is None or not Path("/usr/include/bpf/bpf_helpers.h").exists():
        pytest.skip("needs clang and libbpf-dev to build an XDP program (apt-get install clang libbpf-dev)")
    source = tmp_path / "pass.c"
    source.write_text(XDP_PASS)
    subprocess.run(
        [
            "clang",
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-I/usr/include/x86_64-linux-gnu",
            "-c",
            str(source),
            "-o",
            str(tmp_path / "pass.o"),
        ],
        check=True,
        timeout=60,
    )
    return tmp_path / "pass.o"


def host_state_script(mode: str, given: dict) -> dict:
    """playbooks/files/host_state.py run here directly, as the playbooks run it on a host."""
    done = subprocess.run(
        ["/usr/bin/python3", str(ROOT / "playbooks" / "files" / "host_state.py"), mode],
        input=json.dumps(given),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def test_snapshot_reads_the_settings_of_every_device(lab, lab_host, tmp_path):
    state = lab_provisioner(lab, tmp_path).snapshot([])

    settings = state.settings_before[lab_host]
    assert settings["/sys/class/net/eth0/queues/rx-1/rps_cpus"] == lab_file(
        lab_host, "/sys/class/net/eth0/queues/rx-1/rps_cpus"
    )
    assert settings["/sys/class/net/eth0/queues/tx-1/xps_cpus"] == lab_file(
        lab_host, "/sys/class/net/eth0/queues/tx-1/xps_cpus"
    )
    assert settings["/sys/class/net/lo/queues/tx-0/xps_cpus"] == "unreadable: ENOENT"  # one queue: the kernel says no
    assert settings["qdisc eth0"] == "root noqueue 0: {}"
    assert settings["xdp eth0"] == "none"
    assert settings["ethtool -l eth0"] == "rx=2 tx=2 other=n/a combined=n/a"
    assert settings["ethtool -l lo"] == "unsupported"
    assert settings["ethtool -k eth0 generic-receive-offload"] == "off"
    assert settings["nftables table inet harness"] == "absent"
    irqs = {
        f"/proc/irq/{path.parent.name}/smp_affinity": path.read_text().strip()
        for path in Path("/proc/irq").glob("*/smp_affinity")
    }
    assert {key: value for key, value in settings.items() if key.startswith("/proc/irq/")} == irqs
    # global, so a namespace has none; this machine has no cpufreq
    assert "/proc/sys/net/core/rps_sock_flow_entries" not in settings
    assert not [key for key in settings if "scaling_governor" in key]
    assert state.notes[lab_host] == ["no CPU frequency governor (no cpufreq)"]


def test_restore_puts_back_what_a_run_changed(lab, lab_host, tmp_path):
    queues = "/sys/class/net/eth0/queues"
    in_lab(lab_host, "sh", "-c", f"echo 1 > {queues}/rx-1/rps_cpus")  # rx-1 goes with the channels below
    prov = lab_provisioner(lab, tmp_path)
    state = prov.snapshot([])
    before = dict(state.settings_before[lab_host])

    in_lab(
        lab_host,
        "sh",
        "-c",
        f"echo 3 > {queues}/rx-0/rps_cpus; echo 64 > {queues}/rx-0/rps_flow_cnt; echo 2 > {queues}/tx-0/xps_cpus",
    )
    in_lab(
        lab_host,
        "tc",
        "qdisc",
        "add",
        "dev",
        "eth0",
        "root",
        "tbf",
        "rate",
        "500mbit",
        "burst",
        "64kb",
        "latency",
        "50ms",
    )
    in_lab(lab_host, "tc", "qdisc", "add", "dev", "eth0", "clsact")
    in_lab(lab_host, "nft", "add", "table", "inet", "harness")
    in_lab(lab_host, "ethtool", "-L", "eth0", "rx", "1", "tx", "1")
    in_lab(lab_host, "ethtool", "-K", "eth0", "gro", "on")
    changed = prov.snapshot([]).settings_before[lab_host]
    assert {key for key in before if changed.get(key) != before[key]} == {
        f"{queues}/rx-0/rps_cpus",
        f"{queues}/rx-0/rps_flow_cnt",
        f"{queues}/tx-0/xps_cpus",
        "qdisc eth0",
        "nftables table inet harness",
        "ethtool -l eth0",
        "ethtool -k eth0 generic-receive-offload",
        f"{queues}/rx-1/rps_cpus",
        f"{queues}/rx-1/rps_flow_cnt",
        f"{queues}/tx-1/xps_cpus",
    }  # gone with rx/tx 1
    assert changed["qdisc eth0"].startswith("ingress clsact ffff: {}; root tbf ")

    prov.restore(state, None)  # no DriftError: everything is back

    assert prov.snapshot([]).settings_before[lab_host] == before
    assert lab_file(lab_host, f"{queues}/rx-1/rps_cpus") == "1"  # channels came back first, then rx-1's mask
    assert in_lab(lab_host, "tc", "qdisc", "show", "dev", "eth0").split()[:2] == ["qdisc", "noqueue"]


def test_restore_detaches_an_xdp_program_the_run_attached(lab, lab_host, tmp_path):
    program = xdp_object(tmp_path)
    prov = lab_provisioner(lab, tmp_path)
    state = prov.snapshot([])
    in_lab(lab_host, "ip", "link", "set", "dev", "eth0", "xdpdrv", "obj", str(program), "sec", "xdp")
    assert prov.snapshot([]).settings_before[lab_host]["xdp eth0"].startswith("xdpdrv prog ")

    prov.restore(state, None)

    assert "xdp" not in in_lab(lab_host, "ip", "-d", "link", "show", "dev", "eth0").replace("xdp_", "")
    assert prov.snapshot([]).settings_before[lab_host]["xdp eth0"] == "none"


def test_what_restore_cannot_put_back_is_drift(lab, lab_host, tmp_path):
    # Set before the snapshot, so not the kernel's default: restore must not guess how to rebuild them.
    in_lab(
        lab_host,
        "tc",
        "qdisc",
        "add",
        "dev",
        "eth0",
        "root",
        "handle",
        "1:",
        "tbf",
        "rate",
        "500mbit",
        "burst",
        "64kb",
        "latency",
        "50ms",
    )
    in_lab(lab_host, "nft", "add", "table", "inet", "harness")
    prov = lab_provisioner(lab, tmp_path)
    state = prov.snapshot([])
    before = state.settings_before[lab_host]
    in_lab(
        lab_host,
        "tc",
        "qdisc",
        "change",
        "dev",
        "eth0",
        "root",
        "handle",
        "1:",
        "tbf",
        "rate",
        "200mbit",
        "burst",
        "64kb",
        "latency",
        "50ms",
    )
    in_lab(lab_host, "nft", "delete", "table", "inet", "harness")
    in_lab(lab_host, "sh", "-c", "echo 2 > /sys/class/net/eth0/queues/rx-0/rps_cpus")  # this one it can put back

    with pytest.raises(DriftError) as raised:
        prov.restore(state, None)

    drift = raised.value.drift
    assert [(item.host, item.setting) for item in drift] == [
        (lab_host, "nftables table inet harness"),
        (lab_host, "qdisc eth0"),
    ]
    assert (drift[0].before, drift[0].after) == ("present", "absent")
    assert "the table was there before the run" in drift[0].why
    assert drift[1].before == before["qdisc eth0"] and '"rate":62500000' in drift[1].before
    assert '"rate":25000000' in drift[1].after
    assert "the root qdisc was set before the run" in drift[1].why
    assert str(raised.value).startswith(
        f"host state drifted: after restoring, 2 settings differ from the snapshot: "
        f"{lab_host}: nftables table inet harness was 'present', is 'absent' ("
    )
    assert lab_file(lab_host, "/sys/class/net/eth0/queues/rx-0/rps_cpus") == "0"


def test_provision_net_tunes_the_service_device_and_restore_undoes_it(lab, lab_host, tmp_path, spec, run_id):
    net = spec_module.NetTuning(rps_cpus="2", xps_cpus="1", rps_flow_cnt=256, channels=1)
    tuned = without_packages(spec, builds=[], data=[], sysctls={}, net=net)
    prov = lab_provisioner(lab, tmp_path)
    state = prov.snapshot([])

    workspace, tools = prov.apply(
        tuned, spec_module.workload_dir(spec, EXPERIMENT), lab_by_role(lab), spec.parameters, run_id
    )

    queues = "/sys/class/net/eth0/queues"
    assert [
        lab_file(lab_host, f"{queues}/{queue}") for queue in ("rx-0/rps_cpus", "rx-0/rps_flow_cnt", "tx-0/xps_cpus")
    ] == ["2", "256", "1"]
    assert "RX:\t\t1\nTX:\t\t1" in in_lab(lab_host, "ethtool", "-l", "eth0").split("Current hardware settings:")[1]
    assert tools[lab_host]["provision.net"] == "eth0: rps_cpus=2, xps_cpus=1, rps_flow_cnt=256, channels=1"

    prov.restore(state, workspace.workdir)
    assert [
        lab_file(lab_host, f"{queues}/{queue}") for queue in ("rx-1/rps_cpus", "rx-1/rps_flow_cnt", "tx-1/xps_cpus")
    ] == ["0", "0", "0"]
    assert in_lab(lab_host, "ls", "/sys/class/net/eth0/queues").split() == ["rx-0", "rx-1", "tx-0", "tx-1"]


def test_provision_net_names_every_value_that_does_not_take(lab, lab_host, tmp_path, spec, run_id):
    # rps_flow_cnt is rounded up to a power of two; a veth has no IRQs; rps_sock_flow_entries is
    # global, so a namespace host has none.
    net = spec_module.NetTuning(rps_flow_cnt=100, irq_cpus="0", rps_sock_flow_entries=4096)
    prov = lab_provisioner(lab, tmp_path)
    state = prov.snapshot([])

    with pytest.raises(ProvisionError) as raised:
        prov.apply(
            without_packages(spec, builds=[], data=[], sysctls={}, net=net),
            spec_module.workload_dir(spec, EXPERIMENT),
            lab_by_role(lab),
            spec.parameters,
            run_id,
        )

    message = str(raised.value)
    assert message.startswith(
        f"{lab_host}: task 'Tune the service device' failed: provision.net on eth0 did not take: "
    )
    assert (
        "/sys/class/net/eth0/queues/rx-0/rps_flow_cnt: reads 128 after writing 100 "
        "(the kernel rounds it up to a power of two)" in message
    )
    assert "irqs of eth0: eth0 has no IRQs of its own" in message
    assert (
        "rps_sock_flow_entries: absent: net.core.rps_sock_flow_entries exists only in the initial network namespace"
        in message
    )
    prov.restore(state, None)  # puts the 128s back to 0
    assert lab_file(lab_host, "/sys/class/net/eth0/queues/rx-0/rps_flow_cnt") == "0"


def test_provision_net_is_not_applied_to_loopback(inventory, tmp_path, spec, run_id):
    prov = provisioner(inventory, tmp_path)
    state = prov.snapshot([])
    workspace, tools = prov.apply(
        without_packages(spec, builds=[], data=[], sysctls={}, net=spec_module.NetTuning(rps_cpus="1")),
        spec_module.workload_dir(spec, EXPERIMENT),
        BY_ROLE,
        spec.parameters,
        run_id,
    )
    assert tools["localhost"]["provision.net"] == (
        "skipped: the service address 127.0.0.1 is on lo: provision.net is not applied to loopback"
    )
    assert (
        Path("/sys/class/net/lo/queues/rx-0/rps_cpus").read_text().strip()
        == state.settings_before["localhost"]["/sys/class/net/lo/queues/rx-0/rps_cpus"]
    )
    prov.restore(state, workspace.workdir)


def test_restore_puts_back_irq_affinity():
    # IRQ affinity is global, and other runs on this machine snapshot it too: the value is changed
    # for the fraction of a second the script takes, by the script itself, and put back at once.
    for path in sorted(Path("/proc/irq").glob("*/smp_affinity")):
        original = path.read_text().strip()
        other = "1" if original != "1" else "2"
        try:
            restored = host_state_script("restore", {"before": {str(path): other}})
        finally:
            path.write_text(original)
        if str(path) not in restored["failures"]:
            break
    else:
        pytest.skip("no IRQ here lets its affinity be changed")
    assert restored["settings"][str(path)] == other
    assert restored["actions"] == [f"wrote {other} to {path}"]
    assert path.read_text().strip() == original
