"""A host's harness journal and lock: what a run changed here, and which run may change it now.

Run on a host by harness/hosts/journal.py (over the run's SSH session) and by
playbooks/restore.yml, as `python3 -c "$(cat host_journal.py)" MODE` with JSON on stdin;
prints one JSON object on stdout. Standard library only: it runs on the host's own Python.

Everything lives in one root-only folder per host, STATE_ROOT/<host key>/ (mode 0700),
where the host key is the network namespace (`net-4026531840`): lab hosts are namespaces
of one machine, sharing its filesystem but not their sysctls and devices. A folder that
holds neither a lock nor a journal is removed, so a host with no run on it keeps only the
empty STATE_ROOT (the machine-wide mutex, see mutex()).

    lock.json                 the lock: {"run_id", "controller": {...}, "since", "expires"}
    journal-<run id>.json     what restore needs: the snapshot, the work folder, the controller
    journal-<run id>.pids     one line per process the run started: "PID PGID STARTTIME"

The controller is {"hostname", "boot_id", "pid", "start_time"}: start_time is field 22 of
/proc/PID/stat, so a pid reused by another process never counts as the holder. A lock is
stale when its lease (host clock) has expired, or when its holder runs on this very kernel
(same boot_id) and that process is gone.

    acquire  {"run_id", "controller", "lease"} -> {"acquired": true, "replaced": old lock or null,
                                                   "journals": [journal, ...]}
                                                or {"acquired": false, "holder": lock}
    renew    {"run_id", "lease"}               -> {"renewed": bool, "holder": lock or null}
    release  {"run_id"}                        -> {"released": bool}
    write    {"journal": {...}}                -> {"journal": path, "pids": path}
    stop     {"run_id"}                        -> {"stopped": [pid, ...], "failures": {pid: why}}
    clear    {"run_id"}                        -> {"cleared": bool, "changed": bool}
    show     {}                                -> {"lock": lock or null, "stale": bool, "journals": [...]}
"""

import contextlib
import fcntl
import json
import os
import re
import signal
import sys
import time

STATE_ROOT = "/var/lib/harness"
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def main():
    mode = sys.argv[1]
    given = json.loads(sys.stdin.read() or "{}")
    handlers = {
        "acquire": acquire,
        "renew": renew,
        "release": release,
        "write": write,
        "stop": stop,
        "clear": clear,
        "show": show,
    }
    if mode not in handlers:
        raise SystemExit(f"unknown mode {mode!r}")
    with mutex():
        folder = state_folder()
        result = handlers[mode](folder, given)
        prune_empty_folders()
    json.dump(result, sys.stdout, sort_keys=True)


# --- where and who ------------------------------------------------------------------


def state_root():
    os.makedirs(STATE_ROOT, mode=0o700, exist_ok=True)
    os.chmod(STATE_ROOT, 0o700)
    return STATE_ROOT


def state_folder():
    key = re.sub(r"[^0-9]", "", os.readlink("/proc/self/ns/net")) or "0"
    folder = f"{state_root()}/net-{key}"
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


@contextlib.contextmanager
def mutex():
    """One controller at a time, on the whole machine, reads and changes locks and journals.
    The lock is on STATE_ROOT itself, which is never removed, so the namespaces' folders
    can be removed once empty without a waiter ending up on a deleted folder."""
    fd = os.open(state_root(), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def prune_empty_folders():
    """Remove every namespace folder that holds no lock and no journal (only the `.mutex`
    file an older harness kept there, if anything): a lab namespace that is gone leaves none."""
    for name in os.listdir(STATE_ROOT):
        folder = f"{STATE_ROOT}/{name}"
        if not name.startswith("net-") or not os.path.isdir(folder):
            continue
        if set(os.listdir(folder)) <= {".mutex"}:
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{folder}/.mutex")
            os.rmdir(folder)


def boot_id():
    with open("/proc/sys/kernel/random/boot_id") as handle:
        return handle.read().strip()


def start_time(pid):
    """Field 22 of /proc/PID/stat (clock ticks after boot), or None when no such process."""
    try:
        with open(f"/proc/{int(pid)}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    if fields[0] == "Z":  # ended, waiting for its reaper
        return None
    return fields[19]


def holder_alive(lock):
    """False when the lock's lease has expired or its holder, on this kernel, is gone."""
    if not lock:
        return False
    if float(lock.get("expires", 0)) < time.time():
        return False
    controller = lock.get("controller") or {}
    if controller.get("boot_id") == boot_id():
        return start_time(controller.get("pid", 0)) == str(controller.get("start_time"))
    return True


# --- files ----------------------------------------------------------------------------


def read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def write_json(path, data):
    temporary = f"{path}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def checked_run_id(given):
    run_id = str(given.get("run_id") or "")
    if not RUN_ID.match(run_id):
        raise SystemExit(f"run id {run_id!r} cannot name a journal")
    return run_id


def journal_paths(folder, run_id):
    return f"{folder}/journal-{run_id}.json", f"{folder}/journal-{run_id}.pids"


def journals(folder):
    found = []
    for name in sorted(os.listdir(folder)):
        match = re.fullmatch(r"journal-(.+)\.json", name)
        if not match:
            continue
        journal = read_json(f"{folder}/{name}") or {"run_id": match.group(1), "unreadable": True}
        journal["processes"] = read_pids(journal_paths(folder, match.group(1))[1])
        found.append(journal)
    return found


def read_pids(path):
    processes = []
    try:
        with open(path) as handle:
            for line in handle:
                words = line.split()
                if len(words) == 3 and words[0].isdigit():
                    processes.append({"pid": int(words[0]), "pgid": int(words[1]), "start_time": words[2]})
    except OSError:
        pass
    return processes


# --- modes ------------------------------------------------------------------------------


def acquire(folder, given):
    run_id = checked_run_id(given)
    path = f"{folder}/lock.json"
    lock = read_json(path)
    ours = bool(lock) and lock.get("run_id") == run_id and lock.get("controller") == given["controller"]
    if lock and not ours and holder_alive(lock):
        return {"acquired": False, "holder": lock}
    now = time.time()
    since = lock["since"] if ours else now
    write_json(
        path,
        {"run_id": run_id, "controller": given["controller"], "since": since, "expires": now + float(given["lease"])},
    )
    replaced = lock if lock and not ours else None
    return {"acquired": True, "replaced": replaced, "journals": journals(folder)}


def renew(folder, given):
    run_id = checked_run_id(given)
    path = f"{folder}/lock.json"
    lock = read_json(path)
    if not lock or lock.get("run_id") != run_id:
        return {"renewed": False, "holder": lock}
    lock["expires"] = time.time() + float(given["lease"])
    write_json(path, lock)
    return {"renewed": True, "holder": lock}


def release(folder, given):
    run_id = checked_run_id(given)
    path = f"{folder}/lock.json"
    lock = read_json(path)
    if lock and lock.get("run_id") == run_id:
        os.remove(path)
        return {"released": True}
    return {"released": False}


def write(folder, given):
    journal = given["journal"]
    run_id = checked_run_id(journal)
    json_path, pids_path = journal_paths(folder, run_id)
    write_json(json_path, journal)
    if not os.path.exists(pids_path):
        os.close(os.open(pids_path, os.O_WRONLY | os.O_CREAT, 0o600))
    return {"journal": json_path, "pids": pids_path}


def group_members(pgid):
    """Live processes (zombies left out) of process group `pgid`."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and fields[2] == str(pgid):
            members.append(int(name))
    return members


def still_ours(process):
    """Whether the recorded group still holds processes of the run: its leader is the very
    process recorded (same start time), or the leader is gone and its group lives on (the
    kernel gives no process a pid that is still some group's id, so those are its members).
    A pid reused by another process (another start time) is never touched."""
    now = start_time(process["pid"])
    if now is not None:
        return now == process["start_time"]
    return bool(group_members(process["pgid"]))  # the leader ended (or is a zombie)


def stop(folder, given):
    """Stop each recorded process group that is still the run's (still_ours): TERM, then KILL."""
    run_id = checked_run_id(given)
    stopped, failures = [], {}
    alive = [p for p in read_pids(journal_paths(folder, run_id)[1]) if still_ours(p)]
    for process in alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process["pgid"], signal.SIGTERM)
    deadline = time.time() + 5
    while time.time() < deadline and any(group_members(p["pgid"]) for p in alive):
        time.sleep(0.05)
    for process in alive:
        if group_members(process["pgid"]):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process["pgid"], signal.SIGKILL)
    deadline = time.time() + 2
    while time.time() < deadline and any(group_members(p["pgid"]) for p in alive):
        time.sleep(0.05)
    for process in alive:
        if group_members(process["pgid"]):
            failures[str(process["pid"])] = "survived SIGKILL"
        else:
            stopped.append(process["pid"])
    return {"stopped": stopped, "failures": failures, "changed": bool(stopped)}


def clear(folder, given):
    run_id = checked_run_id(given)
    existed = False
    for path in reversed(journal_paths(folder, run_id)):  # the .json last: it is what says a journal exists
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
            existed = True
    return {"cleared": True, "changed": existed}


def show(folder, given):
    lock = read_json(f"{folder}/lock.json")
    return {"lock": lock, "stale": lock is not None and not holder_alive(lock), "journals": journals(folder)}


if __name__ == "__main__":
    main()
