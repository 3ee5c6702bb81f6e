"""The on-host journal and lock (playbooks/files/host_journal.py), the controller's identity
(harness/controller.py) and a crashed run's shown status: real processes, a temporary state root."""

import importlib.util
import os
import signal
import stat
import subprocess
import time

import pytest

from harness import controller
from harness.hosts.remote import record_started
from harness.results.store import ExperimentRecord, Hosts, Manifest
from tests.builders import ROOT


@pytest.fixture
def host(tmp_path, monkeypatch):
    """The host-side script as a module, its state root moved under tmp_path."""
    spec = importlib.util.spec_from_file_location("host_journal", ROOT / "playbooks" / "files" / "host_journal.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "STATE_ROOT", str(tmp_path / "state"))
    module.folder = module.state_folder()
    return module


def me():
    return controller.identity()


def dead_controller():
    """A controller that ran on this kernel and has ended: a real process, waited for."""
    child = subprocess.Popen(["true"])
    child.wait()
    return {**me(), "pid": child.pid, "start_time": "1"}


def test_the_state_folder_is_root_only_and_per_network_namespace(host):
    assert stat.S_IMODE(os.stat(host.STATE_ROOT).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(host.folder).st_mode) == 0o700
    assert os.path.basename(host.folder) == "net-" + "".join(c for c in os.readlink("/proc/self/ns/net") if c.isdigit())


def test_a_free_host_is_locked_and_a_second_live_controller_is_refused(host):
    first = host.acquire(host.folder, {"run_id": "run-a", "controller": me(), "lease": 30})
    assert first == {"acquired": True, "replaced": None, "journals": []}
    other = {**me(), "hostname": "elsewhere", "boot_id": "another-boot"}  # cannot be checked: lease decides
    second = host.acquire(host.folder, {"run_id": "run-b", "controller": other, "lease": 30})
    assert second["acquired"] is False and second["holder"]["run_id"] == "run-a"
    assert stat.S_IMODE(os.stat(f"{host.folder}/lock.json").st_mode) == 0o600


def test_a_lock_whose_holder_on_this_kernel_is_gone_is_stale(host):
    host.acquire(host.folder, {"run_id": "run-a", "controller": dead_controller(), "lease": 30})
    assert host.show(host.folder, {})["stale"] is True
    taken = host.acquire(host.folder, {"run_id": "run-b", "controller": me(), "lease": 30})
    assert taken["acquired"] is True and taken["replaced"]["run_id"] == "run-a"


def test_a_reused_pid_does_not_keep_a_lock_alive(host):
    # Our own pid, but another start time: the process that held the lock is gone.
    host.acquire(host.folder, {"run_id": "run-a", "controller": {**me(), "start_time": "1"}, "lease": 30})
    assert host.show(host.folder, {})["stale"] is True


def test_a_holder_elsewhere_is_stale_only_once_its_lease_expires(host):
    elsewhere = {"hostname": "far", "boot_id": "another-boot", "pid": 1, "start_time": "1"}
    host.acquire(host.folder, {"run_id": "run-a", "controller": elsewhere, "lease": 0.3})
    assert host.acquire(host.folder, {"run_id": "run-b", "controller": me(), "lease": 30})["acquired"] is False
    time.sleep(0.4)
    assert host.acquire(host.folder, {"run_id": "run-b", "controller": me(), "lease": 30})["acquired"] is True


def test_renewing_extends_the_lease_only_for_the_holder(host):
    elsewhere = {"hostname": "far", "boot_id": "another-boot", "pid": 1, "start_time": "1"}
    host.acquire(host.folder, {"run_id": "run-a", "controller": elsewhere, "lease": 0.5})
    for _ in range(3):
        time.sleep(0.3)
        assert host.renew(host.folder, {"run_id": "run-a", "lease": 0.5})["renewed"] is True
    assert host.show(host.folder, {})["stale"] is False  # 0.9 s after a 0.5 s lease, renewed
    assert host.renew(host.folder, {"run_id": "run-x", "lease": 30})["renewed"] is False
    assert host.release(host.folder, {"run_id": "run-x"}) == {"released": False}
    assert host.release(host.folder, {"run_id": "run-a"}) == {"released": True}
    assert host.show(host.folder, {})["lock"] is None


def test_taking_a_lock_returns_every_journal_left_and_clear_removes_one(host):
    host.write(host.folder, {"journal": {"run_id": "old-run", "workdir": "/var/tmp/harness/old-run"}})
    paths = host.journal_paths(host.folder, "old-run")
    with open(paths[1], "a") as handle:
        handle.write("123 123 456\n")
    assert all(stat.S_IMODE(os.stat(path).st_mode) == 0o600 for path in paths)
    taken = host.acquire(host.folder, {"run_id": "new-run", "controller": me(), "lease": 30})
    (journal,) = taken["journals"]
    assert journal["run_id"] == "old-run" and journal["processes"] == [{"pid": 123, "pgid": 123, "start_time": "456"}]
    assert host.clear(host.folder, {"run_id": "old-run"}) == {"cleared": True, "changed": True}
    assert not any(os.path.exists(path) for path in paths)
    assert host.clear(host.folder, {"run_id": "old-run"})["changed"] is False  # idempotent


def test_folders_that_hold_neither_lock_nor_journal_are_removed_and_the_root_stays(host):
    root = host.STATE_ROOT
    gone_namespace = f"{root}/net-1"  # what an older harness left for a lab namespace since deleted
    os.makedirs(gone_namespace)
    open(f"{gone_namespace}/.mutex", "w").close()
    journaled = f"{root}/net-2"
    os.makedirs(journaled)
    host.write(journaled, {"journal": {"run_id": "left", "workdir": "/var/tmp/harness/left"}})
    host.acquire(host.folder, {"run_id": "run-a", "controller": me(), "lease": 30})
    host.prune_empty_folders()
    assert sorted(os.listdir(root)) == sorted(["net-2", os.path.basename(host.folder)])
    host.release(host.folder, {"run_id": "run-a"})
    host.prune_empty_folders()
    assert os.listdir(root) == ["net-2"]
    with host.mutex():  # the machine-wide mutex is the root folder itself, which stays
        assert os.path.isdir(root)


def test_a_run_id_that_is_not_a_file_name_is_refused(host):
    with pytest.raises(SystemExit, match="cannot name a journal"):
        host.clear(host.folder, {"run_id": "../../etc/passwd"})


def test_record_started_writes_the_pid_and_start_time_of_the_process_it_started(host, tmp_path):
    pids = tmp_path / "pids"
    script = f"setsid sleep 30 >/dev/null 2>&1 </dev/null &\npid=$!\n{record_started(str(pids))}echo $pid"
    pid = int(subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout)
    try:
        (line,) = pids.read_text().splitlines()
        assert line == f"{pid} {pid} {host.start_time(pid)}"
    finally:
        os.killpg(pid, signal.SIGKILL)


def test_stop_ends_recorded_groups_by_start_time_and_spares_a_reused_pid(host):
    group = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60"], start_new_session=True)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        time.sleep(0.2)
        host.write(host.folder, {"journal": {"run_id": "r1"}})
        with open(host.journal_paths(host.folder, "r1")[1], "a") as handle:
            handle.write(f"{group.pid} {group.pid} {host.start_time(group.pid)}\n")
            # The bystander's pid with another start time: a process that reused a recorded pid.
            handle.write(f"{bystander.pid} {bystander.pid} 1\n")
        result = host.stop(host.folder, {"run_id": "r1"})
        assert result["stopped"] == [group.pid] and result["failures"] == {}
        assert group.wait(timeout=5) is not None
        assert host.group_members(group.pid) == []  # the leader and both sleeps (zombies aside)
        assert bystander.poll() is None
    finally:
        for process in (group, bystander):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def manifest(status, who):
    return Manifest(
        run_id="r",
        status=status,
        started="",
        experiment=ExperimentRecord(file="x.yaml", sha256=None, claim_id="c"),
        hosts=Hosts(),
        controller=who,
    )


def test_a_running_run_whose_controller_is_gone_shows_as_crashed():
    assert controller.alive(me()) is True
    assert manifest("running", me()).shown_status == "running"
    assert manifest("running", dead_controller()).shown_status == "crashed"
    far = {"hostname": "far", "boot_id": "another-boot", "pid": 1, "start_time": "1"}
    assert manifest("running", far).shown_status == "running or crashed"
    assert manifest("complete", dead_controller()).shown_status == "complete"


def test_an_older_manifest_without_a_controller_still_reads():
    data = manifest("complete", {}).to_json()
    del data["controller"], data["recovered"]
    read = Manifest.from_json(data, "old")
    assert read.controller == {} and read.recovered == [] and read.shown_status == "complete"
