"""Hosts left as found when the controller dies: `kill -9` of `harness run` at each stage on
two lab hosts, then `harness restore` or a plain second run; host locks; `--resume` of a
killed run. Real lab hosts (network namespaces with their own sshd), real Ansible.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness.hosts.lab import lab_down, lab_up
from tests.builders import HARNESS, ROOT, journal_experiment, run_harness

pytestmark = pytest.mark.integration

SYSCTLS = ["net.core.somaxconn", "net.ipv4.tcp_rmem"]
STATE_ROOT = Path("/var/lib/harness")
WORK_ROOT = Path("/var/tmp/harness")
# What stderr shows as each stage begins; "trial" waits for a server of the next trial too.
STAGES = {
    "snapshot": "· recording host settings",
    "provision": "· provisioning",
    "trial": "trial 1:",
    "restore": "· restoring host settings",
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    base = tmp_path_factory.mktemp("lab")
    name = f"j{os.getpid() % 100000}"
    try:
        yield lab_up(name=name, hosts=2, base_dir=base)
    finally:
        lab_down(name=name, base_dir=base)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return journal_experiment(tmp_path_factory.mktemp("experiment"))


def in_namespace(host, *argv, stdin=None):
    return subprocess.run(
        ["ip", "netns", "exec", host.name, *argv], input=stdin, capture_output=True, text=True, check=True, timeout=60
    ).stdout


def host_values(host) -> dict:
    """Every setting a run may change on the host and the experiment's sysctls, as
    playbooks/files/host_state.py reads them for a snapshot."""
    script = (ROOT / "playbooks" / "files" / "host_state.py").read_text()
    given = json.dumps({"sysctl_keys": SYSCTLS, "address": host.address})
    read = json.loads(in_namespace(host, "/usr/bin/python3", "-c", script, "read", stdin=given))
    return {"settings": read["settings"], "sysctls": read["sysctls"]}


def state_folder(host) -> Path:
    inode = "".join(c for c in in_namespace(host, "readlink", "/proc/self/ns/net") if c.isdigit())
    return STATE_ROOT / f"net-{inode}"


def journal_files(lab) -> list[Path]:
    return [path for host in lab.hosts for path in sorted(state_folder(host).glob("journal-*"))]


def recorded_processes(lab) -> list[tuple[int, str]]:
    found = []
    for path in journal_files(lab):
        if path.suffix == ".pids":
            found += [(int(line.split()[0]), line.split()[2]) for line in path.read_text().splitlines() if line]
    return found


def start_time(pid: int) -> str | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def start_run(lab, experiment, out: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [str(HARNESS), "run", str(experiment), "--quick", "--inventory", str(lab.inventory), "--out", str(out), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(process: subprocess.Popen, marker: str) -> list[str]:
    lines = []
    for line in process.stderr:
        lines.append(line)
        if line.strip().startswith(marker):
            return lines
    raise AssertionError(f"the run ended before {marker!r}: {''.join(lines)[-2000:]}")


def kill_at(lab, experiment, out: Path, stage: str) -> Path:
    """Start a run and `kill -9` it once it reaches `stage`; return its run directory."""
    process = start_run(lab, experiment, out, "--seed", "0")
    try:
        wait_for(process, STAGES[stage])
        if stage == "trial":  # mid-trial: once a server of the second trial runs
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(recorded_processes(lab)) < 3:
                time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    (run_dir,) = out.iterdir()
    return run_dir


def assert_as_found(lab, before: dict, run_dir: Path, processes: list[tuple[int, str]]) -> None:
    for host in lab.hosts:
        assert host_values(host) == before[host.name], host.name
    assert not [pid for pid, started in processes if start_time(pid) == started], "a process of the run is alive"
    assert not (WORK_ROOT / run_dir.name).exists()
    assert journal_files(lab) == []
    assert not [host.name for host in lab.hosts if state_folder(host).exists()], "an empty state folder is left"


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_killed_run_is_put_back_by_harness_restore(lab, experiment, tmp_path, stage):
    before = {host.name: host_values(host) for host in lab.hosts}
    run_dir = kill_at(lab, experiment, tmp_path / "out", stage)
    processes = recorded_processes(lab)
    if stage == "trial":
        assert [pid for pid, started in processes if start_time(pid) == started], "no server left running to stop"
    if stage in ("provision", "trial"):
        assert journal_files(lab), "the killed run left no journal"
    result = run_harness("restore", "--inventory", lab.inventory, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_as_found(lab, before, run_dir, processes)
    if stage in ("provision", "trial"):
        assert f"restored what run {run_dir.name}" in result.stdout
    # Idempotent: nothing left to do.
    again = run_harness("restore", "--inventory", lab.inventory, "--host", lab.hosts[0].name, timeout=120)
    assert again.returncode == 0 and again.stdout.strip() == f"{lab.hosts[0].name}: no journal; nothing to restore"


# The next run recovers through the same restore as `harness restore`, at every stage too.
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_killed_run_is_put_back_by_the_next_run(lab, experiment, tmp_path, stage):
    before = {host.name: host_values(host) for host in lab.hosts}
    killed = kill_at(lab, experiment, tmp_path / "killed", stage)
    processes = recorded_processes(lab)
    left = bool(journal_files(lab))
    result = run_harness(
        "run", experiment, "--quick", "--inventory", lab.inventory, "--out", tmp_path / "next", timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "next").iterdir()
    recovered = json.loads((run_dir / "manifest.json").read_text())["recovered"]
    if left:
        assert f"recovered {lab.hosts[0].name}: restored what run {killed.name}" in result.stderr
        assert {item["run_id"] for item in recovered} == {killed.name}
        assert all(item["result"] == "restored" for item in recovered)
    assert_as_found(lab, before, killed, processes)
    assert not (WORK_ROOT / run_dir.name).exists()


def test_a_killed_run_is_put_back_by_lab_up_which_keeps_the_lab(lab, experiment, tmp_path):
    before = {host.name: host_values(host) for host in lab.hosts}
    killed = kill_at(lab, experiment, tmp_path / "killed", "trial")
    processes = recorded_processes(lab)
    assert journal_files(lab), "the killed run left no journal"
    result = run_harness(
        "lab", "up", "--name", lab.name, "--hosts", "2", "--base-dir", lab.directory.parent, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{lab.hosts[0].name}: restored what run {killed.name} (" in result.stdout
    assert_as_found(lab, before, killed, processes)
    # The healthy lab was kept, not rebuilt: the same sshd answers.
    assert f"sshd pid {lab.hosts[0].sshd_pid}" in result.stdout


def test_a_second_run_on_a_locked_host_stops_or_waits(lab, experiment, tmp_path):
    first = start_run(lab, experiment, tmp_path / "first")
    try:
        wait_for(first, STAGES["provision"])
        (first_dir,) = (tmp_path / "first").iterdir()
        refused = run_harness(
            "run", experiment, "--quick", "--inventory", lab.inventory, "--out", tmp_path / "refused", timeout=120
        )
        assert refused.returncode == 1, refused.stderr
        last = refused.stderr.strip().splitlines()[-1]
        assert last.startswith(
            f"error: {lab.hosts[0].name}: in use by run {first_dir.name} (controller pid {first.pid}"
        )
        assert " since 20" in last and "Traceback" not in refused.stderr
        waiting = start_run(lab, experiment, tmp_path / "waiting", "--wait", "600")
        _, first_err = first.communicate(timeout=900)
        assert first.returncode == 0, first_err[-3000:]
        _, waiting_err = waiting.communicate(timeout=900)
        assert waiting.returncode == 0, waiting_err[-3000:]
    finally:
        for process in (first, locals().get("waiting")):
            if process is not None and process.poll() is None:
                process.kill()
    assert f"· waiting: {lab.hosts[0].name}: in use by run {first_dir.name}" in waiting_err
    (waited_dir,) = (tmp_path / "waiting").iterdir()
    first_manifest = json.loads((first_dir / "manifest.json").read_text())
    waited_trials = [json.loads(line) for line in (waited_dir / "trials.jsonl").read_text().splitlines()]
    # The waiting run measured nothing before the first had finished: no shared traffic.
    # (Its 4 planned trials, and one more for each a validity gate such as CPU steal had rerun.)
    waited_manifest = json.loads((waited_dir / "manifest.json").read_text())
    replaced = waited_manifest["trials"]["replaced"]
    assert first_manifest["status"] == "complete" and len(waited_trials) == 4 + replaced
    first_end = first_manifest["finished"]
    assert waited_manifest["started"] <= first_end  # it was waiting while the first ran
    assert min(path.stat().st_mtime for path in (waited_dir / "raw").glob("*-load.out")) > (
        (first_dir / "trials.jsonl").stat().st_mtime
    )


def test_a_run_killed_after_n_trials_resumes_to_a_complete_run(lab, experiment, tmp_path):
    process = start_run(lab, experiment, tmp_path / "out", "--seed", "0")
    try:
        wait_for(process, "trial 2:")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    (run_dir,) = (tmp_path / "out").iterdir()
    kept = (run_dir / "trials.jsonl").read_text().splitlines()
    assert len(kept) == 2
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["trials"]["completed"] == 2
    result = run_harness("run", "--resume", run_dir, "--inventory", lab.inventory, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"restored what run {run_dir.name}" in result.stderr  # its own journal, left by the kill
    trials = (run_dir / "trials.jsonl").read_text().splitlines()
    # the 4 planned trials, and more where a validity gate (CPU steal on this VM) had one rerun
    assert trials[:2] == kept and len(trials) >= 4
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["resumed_trials"] == 2
    assert run_harness("verify", run_dir).returncode == 0
    assert journal_files(lab) == [] and not (WORK_ROOT / run_dir.name).exists()


def lab_sshd_pids(host) -> list[int]:
    """Every sshd process in the host's namespace: the lab's listener and its sessions."""
    listed = subprocess.run(["ip", "netns", "pids", host.name], capture_output=True, text=True, check=True).stdout
    found = []
    for pid in map(int, listed.split()):
        try:
            if os.readlink(f"/proc/{pid}/exe") == "/usr/sbin/sshd":
                found.append(pid)
        except OSError:
            continue
    return found


# Last in the module: `lab up` rebuilds the lab once it has restored it (its recorded sshd is gone).
def test_a_host_whose_sshd_dies_mid_run_fails_the_run_and_lab_up_restores_it(lab, experiment, tmp_path):
    server = lab.hosts[0]
    process = start_run(lab, experiment, tmp_path / "out", "--seed", "0")
    try:
        wait_for(process, "trial 2:")
        for pid in lab_sshd_pids(server):  # the lab's own sshd, started by the fixture's lab_up
            os.kill(pid, signal.SIGKILL)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and server.name in last and "Traceback" not in stderr, last
    (run_dir,) = (tmp_path / "out").iterdir()
    assert len((run_dir / "trials.jsonl").read_text().splitlines()) >= 2  # the trials gathered are kept
    folders = [state_folder(host) for host in lab.hosts]
    assert list(folders[0].glob("journal-*.json")), "the unreachable server host kept no journal"
    processes = recorded_processes(lab)

    result = run_harness(
        "lab", "up", "--name", lab.name, "--hosts", "2", "--base-dir", lab.directory.parent, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{server.name}: restored what run {run_dir.name} (" in result.stdout
    assert not [pid for pid, started in processes if start_time(pid) == started], "a process of the run is alive"
    assert not (WORK_ROOT / run_dir.name).exists()
    assert not [folder for folder in folders if folder.exists()], "a journal or state folder is left"
