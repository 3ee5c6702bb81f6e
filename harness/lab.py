"""A lab of hosts on this machine: network namespaces on one bridge, each with its own sshd.

`lab_up` builds the lab and writes an Ansible inventory for it, so experiments run
against lab hosts the way they run against real ones: over SSH, as root, with
host-key checking on. `lab_status` reports what exists; `lab_down` removes it all.
Nothing here prints: a failure is a LabError naming the host and the step.

Layout of lab NAME with N hosts, every address in 198.18.0.0/15 (RFC 2544):

    bridge NAME-br       in the root namespace, 198.18.K.1/24 (K picked per lab)
    namespace NAME-hI    lo up; eth0 198.18.K.(10+I)/24 with Q rx and Q tx queues;
                         its own hostname (NAME-hI) and its own sshd on port 22
    veth NAME-hI         the root-side end of NAME-hI's eth0, a port of the bridge
    BASE/NAME/           client key, known_hosts, inventory.ini, lab.json, NAME-hI/ (sshd files)
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.errors import HostError, LabError
from harness.inventory import Host
from harness.remote import HostSession

DEFAULT_BASE_DIR = Path("/var/tmp/harness-lab")
LAB_NETWORK = ipaddress.IPv4Network("198.18.0.0/15")
MAX_HOSTS = 50  # NAME-h50 still fits 15 characters; addresses end at .60
MAX_QUEUES = 64
HOST_OFFSET = 10  # host I gets .(10+I)
# Interface names are limited to 15 characters: NAME-hNN and NAME-br must fit.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]{0,9}")
SAFE_PATH = re.compile(r"[A-Za-z0-9_./@+-]+")  # paths go unquoted into the inventory
STATE_FORMAT = 1
SSH_PORT = 22
SSHD = Path("/usr/sbin/sshd")
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
INSTALL_LOCK = Path("/run/harness-lab-install.lock")
MARKER = ".harness-lab"  # a directory without it was not made by lab_up and is never removed
INTERFACE = "eth0"  # the host's end of its veth, inside its namespace
GROUPS = ("servers", "clients", "others")
SSH_READY_TIMEOUT = 10.0
CONNECT_TIMEOUT = 3.0


@dataclasses.dataclass(frozen=True)
class LabHost:
    name: str  # inventory name, namespace name and hostname inside the namespace
    group: str  # servers (host 1), clients (host 2) or others
    address: str
    veth: str  # the root-side end, a port of the bridge
    interface: str  # the end inside the namespace
    sshd_pid: int
    sshd_config: Path
    sshd_pid_file: Path
    sshd_log: Path
    host_key: Path

    @property
    def namespace(self) -> str:
        return self.name


@dataclasses.dataclass(frozen=True)
class Lab:
    name: str
    directory: Path
    subnet: str
    bridge: str
    bridge_address: str
    queues: int
    hosts: tuple[LabHost, ...]
    client_key: Path
    known_hosts: Path
    inventory: Path
    state_file: Path

    def harness_host(self, host: LabHost) -> Host:
        """The host as harness.inventory reads it from the lab's inventory."""
        return Host(name=host.name, address=host.address, port=SSH_PORT, user="root", local=False,
                    key_file=str(self.client_key), known_hosts=str(self.known_hosts))


@dataclasses.dataclass(frozen=True)
class LinkStatus:
    name: str
    namespace: str | None  # None: the root namespace
    state: str  # the kernel's operstate (UP, DOWN, UNKNOWN) or "missing"
    rx_queues: int | None
    tx_queues: int | None

    @property
    def up(self) -> bool:
        return self.state == "UP"


@dataclasses.dataclass(frozen=True)
class HostStatus:
    name: str
    address: str | None
    namespace_exists: bool
    links: tuple[LinkStatus, ...]  # the root-side veth, then the interface inside the namespace
    sshd_pid: int | None
    sshd_alive: bool


@dataclasses.dataclass(frozen=True)
class LabStatus:
    name: str
    directory: Path
    exists: bool  # some part of the lab is present: namespace, link, process or directory
    subnet: str | None
    bridge: LinkStatus | None
    hosts: tuple[HostStatus, ...]
    problems: tuple[str, ...]  # one line each; empty for a healthy lab

    @property
    def healthy(self) -> bool:
        return self.exists and bool(self.hosts) and not self.problems


# --- public functions ---------------------------------------------------------


def lab_up(name: str = "lab", hosts: int = 3, queues: int = 2, base_dir: Path = DEFAULT_BASE_DIR) -> Lab:
    """Create the lab, or return it if it already exists healthy with this shape.

    A broken lab, or one with another host or queue count, is removed and built
    anew. A lab_up that fails removes what it created before raising.
    """
    _check_arguments(name, hosts, queues)
    directory = _lab_directory(name, base_dir)
    _check_directory(name, directory)
    _check_preconditions()
    existing = _healthy_lab(name, hosts, queues, directory)
    if existing is not None:
        return existing
    lab_down(name, base_dir)
    try:
        return _create(name, hosts, queues, directory)
    except BaseException as failure:
        try:
            lab_down(name, base_dir)
        except LabError as cleanup:
            failure.add_note(f"cleanup also failed: {cleanup}")
        raise


def lab_status(name: str = "lab", base_dir: Path = DEFAULT_BASE_DIR) -> LabStatus:
    """What exists of the lab: namespaces, links with state and queues, sshd processes."""
    _check_name(name)
    directory = _lab_directory(name, base_dir)
    state, state_problem = _read_state(directory)
    found = _discover(name, directory, state)
    problems = [state_problem] if state_problem else []
    if found.anything and state is None and not state_problem:
        problems.append(f"lab {name}: no {directory / 'lab.json'}: a lab up did not finish")

    bridge = _link_status(f"{name}-br", None) if found.bridge or state else None
    if bridge is not None and not bridge.up:
        problems.append(f"bridge {bridge.name}: {bridge.state.lower()}")

    by_name = {entry["name"]: entry for entry in (state or {}).get("hosts", [])}
    statuses = []
    for host in sorted(set(by_name) | found.hosts, key=_host_index):
        entry = by_name.get(host, {})
        if host not in by_name and state is not None:
            problems.append(f"{host}: not part of {directory / 'lab.json'}")
        namespace_exists = host in found.namespaces
        links = [_link_status(host, None)]
        if namespace_exists:
            links.append(_link_status(entry.get("interface", INTERFACE), host))
        for link in links:
            if not link.up:
                where = f"in namespace {link.namespace}" if link.namespace else "in the root namespace"
                problems.append(f"{host}: link {link.name} {where} is {link.state.lower()}")
        if not namespace_exists:
            problems.append(f"{host}: namespace {host} is missing")
        pid = entry.get("sshd_pid") or _read_pid(directory / host / "sshd.pid")
        alive = pid is not None and _is_lab_sshd(pid, directory / host / "sshd_config")
        if not alive:
            problems.append(f"{host}: sshd {pid or '(no pid)'} is not running")
        statuses.append(HostStatus(name=host, address=entry.get("address"), namespace_exists=namespace_exists,
                                   links=tuple(links), sshd_pid=pid, sshd_alive=alive))
    if state is not None:
        for key in ("client_key", "known_hosts", "inventory"):
            if not Path(state["files"][key]).is_file():
                problems.append(f"lab {name}: {state['files'][key]} is missing")
    return LabStatus(name=name, directory=directory, exists=found.anything, subnet=(state or {}).get("subnet"),
                     bridge=bridge, hosts=tuple(statuses), problems=tuple(problems))


def lab_down(name: str = "lab", base_dir: Path = DEFAULT_BASE_DIR) -> None:
    """Remove the lab: its processes, links, namespaces, bridge and files.

    Works from what exists, not only from lab.json, so it also clears a half-built
    lab; removing a lab that does not exist does nothing.
    """
    _check_name(name)
    directory = _lab_directory(name, base_dir)
    state, _ = _read_state(directory)
    found = _discover(name, directory, state)
    _stop_processes(found.processes)
    for host in sorted(found.veths, key=_host_index):
        _run(["ip", "link", "del", host], f"{host}: remove veth {host}", missing_ok=True)
    for host in sorted(found.namespaces, key=_host_index):
        _run(["ip", "netns", "del", host], f"{host}: remove namespace {host}", missing_ok=True)
    if found.bridge:
        _run(["ip", "link", "del", f"{name}-br"], f"lab {name}: remove bridge {name}-br", missing_ok=True)
    if (directory / MARKER).is_file():
        shutil.rmtree(directory, ignore_errors=True)
    left = _discover(name, directory, None)
    if left.namespaces or left.veths or left.bridge or left.processes or (directory / MARKER).exists():
        leftovers = sorted(left.namespaces | left.veths) + ([f"{name}-br"] if left.bridge else []) + \
            [f"pid {pid}" for pid in sorted(left.processes)] + ([str(directory)] if directory.exists() else [])
        raise LabError(f"lab {name}: lab down left {', '.join(leftovers)}: remove them by hand "
                       "(ip netns del / ip link del) and run lab down again")


# --- building ---------------------------------------------------------------


def _create(name: str, hosts: int, queues: int, directory: Path) -> Lab:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    (directory / MARKER).write_text(f"harness lab {name}: `harness lab down --name {name}` removes this folder\n")
    subnet = _free_subnet(name, directory.parent)
    client_key = directory / "client_key"
    _keygen(client_key, f"harness-lab-{name}", f"lab {name}: create the client key")

    bridge = f"{name}-br"
    bridge_address = str(subnet.network_address + 1)
    _run(["ip", "link", "add", bridge, "type", "bridge"], f"lab {name}: create bridge {bridge}")
    _run(["ip", "addr", "add", f"{bridge_address}/{subnet.prefixlen}", "dev", bridge],
         f"lab {name}: address bridge {bridge}")
    _run(["ip", "link", "set", bridge, "up"], f"lab {name}: bring up bridge {bridge}")

    planned = [_plan_host(name, index, subnet, directory) for index in range(1, hosts + 1)]
    for host in planned:
        _add_namespace(host, bridge, subnet, queues)
        _keygen(host.host_key, host.name, f"{host.name}: create the host key")
        host.sshd_config.write_text(_sshd_config(host, client_key))
    known_hosts = directory / "known_hosts"
    entries = []
    for host in planned:
        key_type, key = Path(f"{host.host_key}.pub").read_text().split()[:2]
        entries.append(f"{host.address} {key_type} {key}\n")  # port 22: the bare address, no [addr]:port
    _write_private(known_hosts, "".join(entries))

    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    started = tuple(dataclasses.replace(host, sshd_pid=_start_sshd(host)) for host in planned)
    lab = Lab(name=name, directory=directory, subnet=str(subnet), bridge=bridge, bridge_address=bridge_address,
              queues=queues, hosts=started, client_key=client_key, known_hosts=known_hosts,
              inventory=directory / "inventory.ini", state_file=directory / "lab.json")
    _write_state(lab)
    _wait_for_ssh(lab, SSH_READY_TIMEOUT)
    lab.inventory.write_text(_inventory_text(lab))
    return lab


def _plan_host(name: str, index: int, subnet: ipaddress.IPv4Network, directory: Path) -> LabHost:
    host = f"{name}-h{index}"
    folder = directory / host
    folder.mkdir(mode=0o700, exist_ok=True)
    return LabHost(
        name=host, group=GROUPS[min(index, len(GROUPS)) - 1], address=str(subnet.network_address + HOST_OFFSET + index),
        veth=host, interface=INTERFACE, sshd_pid=0, sshd_config=folder / "sshd_config",
        sshd_pid_file=folder / "sshd.pid", sshd_log=folder / "sshd.log", host_key=folder / "ssh_host_ed25519_key",
    )


def _add_namespace(host: LabHost, bridge: str, subnet: ipaddress.IPv4Network, queues: int) -> None:
    ns, q = host.namespace, str(queues)
    _run(["ip", "netns", "add", ns], f"{ns}: create namespace {ns}")
    _run(["ip", "link", "add", host.veth, "numrxqueues", q, "numtxqueues", q, "type", "veth",
          "peer", "name", host.interface, "numrxqueues", q, "numtxqueues", q, "netns", ns],
         f"{ns}: create veth {host.veth} with {queues} queues")
    _run(["ip", "link", "set", host.veth, "master", bridge, "up"], f"{ns}: attach {host.veth} to {bridge}")
    _run(["ip", "-n", ns, "link", "set", "lo", "up"], f"{ns}: bring up lo")
    _run(["ip", "-n", ns, "addr", "add", f"{host.address}/{subnet.prefixlen}", "dev", host.interface],
         f"{ns}: address {host.interface}")
    _run(["ip", "-n", ns, "link", "set", host.interface, "up"], f"{ns}: bring up {host.interface}")


def _sshd_config(host: LabHost, client_key: Path) -> str:
    return "\n".join([
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
    ])


def _start_sshd(host: LabHost) -> int:
    """Start the host's sshd in its namespace under its own hostname; return its pid."""
    # unshare --uts gives the host its own hostname, so `hostname` and Ansible's facts
    # tell lab hosts apart; sshd then daemonizes and writes its pid file.
    script = 'hostname "$1" && exec "$2" -f "$3" -E "$4"'
    argv = ["ip", "netns", "exec", host.namespace, "unshare", "--uts", "--", "/bin/sh", "-c", script, "sh",
            host.name, str(SSHD), str(host.sshd_config), str(host.sshd_log)]
    try:
        _run(argv, f"{host.name}: start sshd", timeout=15)
    except LabError as error:
        raise LabError(f"{error}; sshd log: {_last_line(_read(host.sshd_log))}") from None
    deadline = time.monotonic() + 5
    while (pid := _read_pid(host.sshd_pid_file)) is None:
        if time.monotonic() > deadline:
            raise LabError(f"{host.name}: sshd wrote no pid file {host.sshd_pid_file} within 5 s; "
                           f"sshd log: {_last_line(_read(host.sshd_log))}")
        time.sleep(0.02)
    return pid


def _wait_for_ssh(lab: Lab, timeout: float) -> None:
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
                raise LabError(f"{host.name}: no SSH answer from {host.address}:{SSH_PORT} within {timeout:g} s "
                               f"({error}); sshd log: {_last_line(_read(host.sshd_log))}") from None
        time.sleep(0.1)


def _inventory_text(lab: Lab) -> str:
    common_args = f"-o UserKnownHostsFile={lab.known_hosts} -o StrictHostKeyChecking=yes"
    lines = [
        f"# Lab {lab.name}, written by `harness lab up`; `harness lab down --name {lab.name}` removes it.",
        "# ansible_host_key_checking=true: ansible-runner turns host-key checking off unless a host says otherwise.",
        "[lab]",
    ]
    for host in lab.hosts:
        lines.append(
            f"{host.name} ansible_host={host.address} ansible_port={SSH_PORT} ansible_user=root "
            f"ansible_ssh_private_key_file={lab.client_key} ansible_ssh_common_args='{common_args}' "
            f"ansible_host_key_checking=true ansible_python_interpreter=/usr/bin/python3"
        )
    for group in GROUPS:
        lines += ["", f"[{group}]"] + [host.name for host in lab.hosts if host.group == group]
    return "\n".join(lines) + "\n"


def _write_state(lab: Lab) -> None:
    state = {
        "format": STATE_FORMAT,
        "name": lab.name,
        "subnet": lab.subnet,
        "bridge": lab.bridge,
        "bridge_address": lab.bridge_address,
        "queues": lab.queues,
        "hosts": [{key: (str(value) if isinstance(value, Path) else value)
                   for key, value in dataclasses.asdict(host).items()} | {"namespace": host.namespace}
                  for host in lab.hosts],
        "files": {"directory": str(lab.directory), "client_key": str(lab.client_key),
                  "known_hosts": str(lab.known_hosts), "inventory": str(lab.inventory)},
    }
    partial = lab.state_file.with_suffix(".json.partial")
    partial.write_text(json.dumps(state, indent=2) + "\n")
    partial.replace(lab.state_file)


def _lab_from_state(state: dict) -> Lab:
    files = state["files"]
    hosts = tuple(
        LabHost(name=entry["name"], group=entry["group"], address=entry["address"], veth=entry["veth"],
                interface=entry["interface"], sshd_pid=int(entry["sshd_pid"]),
                **{key: Path(entry[key]) for key in ("sshd_config", "sshd_pid_file", "sshd_log", "host_key")})
        for entry in state["hosts"]
    )
    directory = Path(files["directory"])
    return Lab(name=state["name"], directory=directory, subnet=state["subnet"], bridge=state["bridge"],
               bridge_address=state["bridge_address"], queues=int(state["queues"]), hosts=hosts,
               client_key=Path(files["client_key"]), known_hosts=Path(files["known_hosts"]),
               inventory=Path(files["inventory"]), state_file=directory / "lab.json")


def _healthy_lab(name: str, hosts: int, queues: int, directory: Path) -> Lab | None:
    """The existing lab if it has this shape, is healthy and answers SSH; else None."""
    state, problem = _read_state(directory)
    if state is None or problem:
        return None
    lab = _lab_from_state(state)
    if len(lab.hosts) != hosts or lab.queues != queues or not lab_status(name, directory.parent).healthy:
        return None
    try:
        _wait_for_ssh(lab, timeout=2.0)
    except LabError:
        return None
    return lab


# --- preconditions --------------------------------------------------------------


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise LabError(f"lab name {name!r}: use 1-10 lowercase letters and digits, starting with a letter "
                       "(interface names like NAME-h12 must fit 15 characters)")


def _check_arguments(name: str, hosts: int, queues: int) -> None:
    _check_name(name)
    if not 1 <= hosts <= MAX_HOSTS:
        raise LabError(f"lab {name}: hosts must be between 1 and {MAX_HOSTS}, not {hosts}")
    if not 1 <= queues <= MAX_QUEUES:
        raise LabError(f"lab {name}: queues must be between 1 and {MAX_QUEUES}, not {queues}")


def _lab_directory(name: str, base_dir: Path) -> Path:
    directory = Path(base_dir).resolve() / name
    return directory


def _check_directory(name: str, directory: Path) -> None:
    if not SAFE_PATH.fullmatch(str(directory)):
        raise LabError(f"lab {name}: {directory} has characters other than letters, digits and ._-/@+; "
                       "pick a plainer base dir (its paths go unquoted into the inventory)")
    if directory.is_dir() and not (directory / MARKER).exists() and any(directory.iterdir()):
        raise LabError(f"lab {name}: {directory} exists and was not made by lab up: pick another name or base dir")


def _check_preconditions() -> None:
    if os.geteuid() != 0:
        raise LabError("lab: namespaces, links and sshd need root: run as root")
    for tool, package in (("ip", "iproute2"), ("ssh-keygen", "openssh-client"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            raise LabError(f"lab: {tool} not found: install it (apt-get install {package})")
    _ensure_sshd()


def _ensure_sshd() -> None:
    """Install openssh-server if /usr/sbin/sshd is missing, without starting its service.

    Debian's maintainer scripts ask /usr/sbin/policy-rc.d before starting a service;
    exit status 101 forbids it. An existing policy-rc.d is left as it is (on this
    kind of machine one already forbids every start); one written here is removed.
    """
    if SSHD.exists():
        return
    import fcntl  # one installer at a time on this machine: the policy file is shared

    with open(INSTALL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if SSHD.exists():
            return
        written = False
        if not POLICY_RC_D.exists():
            POLICY_RC_D.write_text("#!/bin/sh\n# written by harness lab up while it installs openssh-server\n"
                                   "exit 101\n")
            POLICY_RC_D.chmod(0o755)
            written = True
        try:
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            install = ["apt-get", "install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300",
                       "openssh-server"]
            result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900,
                                    stdin=subprocess.DEVNULL)
            if result.returncode != 0 and "Unable to locate package" in result.stderr + result.stdout:
                subprocess.run(["apt-get", "update"], capture_output=True, text=True, env=env, timeout=600,
                               stdin=subprocess.DEVNULL)
                result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900,
                                        stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LabError(f"lab: installing openssh-server failed ({exc}): run `apt-get install openssh-server`, "
                           "then lab up again") from None
        finally:
            if written:
                POLICY_RC_D.unlink(missing_ok=True)
    if result.returncode != 0 or not SSHD.exists():
        raise LabError(f"lab: installing openssh-server failed: {_last_line(result.stderr or result.stdout)}: "
                       "run `apt-get install openssh-server`, then lab up again")


# --- discovery and teardown -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Found:
    namespaces: frozenset[str]
    veths: frozenset[str]
    bridge: bool
    processes: frozenset[int]  # the lab's sshd listeners and everything else inside its namespaces
    directory: bool

    @property
    def hosts(self) -> set[str]:
        return set(self.namespaces | self.veths)

    @property
    def anything(self) -> bool:
        return bool(self.namespaces or self.veths or self.bridge or self.processes or self.directory)


def _discover(name: str, directory: Path, state: dict | None) -> _Found:
    host_pattern = re.compile(rf"{re.escape(name)}-h\d+")
    namespaces = frozenset(ns for ns in _namespaces() if host_pattern.fullmatch(ns))
    links = {link["ifname"] for link in _links(None)}
    veths = frozenset(link for link in links if host_pattern.fullmatch(link))
    processes = set()
    # sshd listeners from the state and the pid files, each checked to be this lab's
    # sshd (its command line names the lab's config) before it counts.
    configs = {Path(entry["sshd_config"]): entry.get("sshd_pid") for entry in (state or {}).get("hosts", [])}
    if directory.is_dir() and (directory / MARKER).exists():
        for pid_file in directory.glob(f"{name}-h*/sshd.pid"):
            configs.setdefault(pid_file.parent / "sshd_config", None)
    for config, pid in configs.items():
        for candidate in {pid, _read_pid(config.parent / "sshd.pid")} - {None}:
            if _is_lab_sshd(candidate, config):
                processes.add(candidate)
    # Anything else inside a lab namespace was started on a lab host (an SSH session,
    # a benchmark server) and is part of the lab; left alive, it would keep the
    # namespace and its SSH connections open after the lab is gone.
    for ns in namespaces:
        output = _run(["ip", "netns", "pids", ns], f"{ns}: list processes", missing_ok=True)
        processes.update(int(word) for word in output.split() if word.isdigit())
    processes.discard(os.getpid())
    return _Found(namespaces=namespaces, veths=veths, bridge=f"{name}-br" in links, processes=frozenset(processes),
                  directory=(directory / MARKER).exists())


def _stop_processes(pids: frozenset[int]) -> None:
    """TERM the lab's processes, then KILL whatever is left after 3 s."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
        alive = [pid for pid in pids if _alive(pid)]
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while any(_alive(pid) for pid in alive) and time.monotonic() < deadline:
            time.sleep(0.05)
    survivors = sorted(pid for pid in pids if _alive(pid))
    if survivors:
        raise LabError(f"lab: processes {survivors} survived SIGKILL: check them with ps and run lab down again")


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _is_lab_sshd(pid: int, config: Path) -> bool:
    """Whether pid is a live sshd started with this config file (pids get reused)."""
    try:
        executable = os.readlink(f"/proc/{pid}/exe")
        # sshd rewrites its title ("sshd: /usr/sbin/sshd -f CONF ... [listener]"): compare words
        words = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
    except OSError:
        return False
    return executable == str(SSHD) and str(config) in words and _alive(pid)


# --- small helpers -------------------------------------------------------------


def _run(argv: list[str], step: str, timeout: float = 30.0, missing_ok: bool = False) -> str:
    """Run a system command; raise LabError naming the step unless it succeeds.

    missing_ok: a command that fails because its object is already gone succeeds.
    """
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise LabError(f"{step}: {argv[0]} not found: install it") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{step}: {shlex.join(argv[:4])} did not finish within {timeout:g} s") from None
    if result.returncode != 0:
        message = _last_line(result.stderr or result.stdout)
        if missing_ok and re.search(r"Cannot find device|No such file", message):
            return ""
        raise LabError(f"{step}: `{shlex.join(argv)}` failed: {message}")
    return result.stdout


def _namespaces() -> list[str]:
    # `ip netns list` prints "NAME (id: N)" for namespaces that have an id
    listing = _run(["ip", "netns", "list"], "lab: list namespaces")
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def _links(namespace: str | None) -> list[dict]:
    argv = ["ip"] + (["-n", namespace] if namespace else []) + ["-d", "-j", "link", "show"]
    output = _run(argv, f"{namespace or 'lab'}: list links", missing_ok=namespace is not None)
    return json.loads(output) if output.strip() else []


def _link_status(link: str, namespace: str | None) -> LinkStatus:
    for entry in _links(namespace):
        if entry.get("ifname") == link:
            return LinkStatus(name=link, namespace=namespace, state=entry.get("operstate", "UNKNOWN"),
                              rx_queues=entry.get("num_rx_queues"), tx_queues=entry.get("num_tx_queues"))
    return LinkStatus(name=link, namespace=namespace, state="missing", rx_queues=None, tx_queues=None)


def _free_subnet(name: str, base_dir: Path) -> ipaddress.IPv4Network:
    """A /24 of 198.18.0.0/15 that no other lab and no local address or route uses.

    The search starts at a slot derived from the name, so labs with different
    names rarely even probe the same /24.
    """
    taken = []
    for state_file in base_dir.glob("*/lab.json"):
        try:
            if state_file.parent.name != name:
                taken.append(ipaddress.IPv4Network(json.loads(state_file.read_text())["subnet"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    for entry in json.loads(_run(["ip", "-j", "-4", "addr", "show"], "lab: list addresses") or "[]"):
        for info in entry.get("addr_info", []):
            taken.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    for route in json.loads(_run(["ip", "-j", "-4", "route", "show", "table", "all"], "lab: list routes") or "[]"):
        destination = route.get("dst", "default")
        if destination != "default" and route.get("type", "unicast") == "unicast":
            try:
                network = ipaddress.IPv4Network(destination, strict=False)
            except ValueError:
                continue
            if network.prefixlen > 0:
                taken.append(network)
    slots = LAB_NETWORK.num_addresses // 256
    start = zlib.crc32(name.encode()) % slots
    for step in range(slots):
        candidate = ipaddress.IPv4Network((int(LAB_NETWORK.network_address) + ((start + step) % slots) * 256, 24))
        if not any(candidate.overlaps(network) for network in taken):
            return candidate
    raise LabError(f"lab {name}: no free /24 left in {LAB_NETWORK}: remove other labs with `harness lab down`")


def _read_state(directory: Path) -> tuple[dict | None, str | None]:
    """(state, problem): (None, None) when there is no state file."""
    path = directory / "lab.json"
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"{path}: unreadable ({exc})"
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        return None, f"{path}: not a lab state file of format {STATE_FORMAT}"
    try:
        _lab_from_state(state)  # every field that status and down read is there
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return None, f"{path}: damaged ({type(exc).__name__}: {exc})"
    return state, None


def _keygen(path: Path, comment: str, step: str) -> None:
    for old in (path, Path(str(path) + ".pub")):
        old.unlink(missing_ok=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], step)
    for made in (path, Path(str(path) + ".pub")):
        made.chmod(0o600)


def _write_private(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        return "" if exc.errno == errno.ENOENT else str(exc)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _host_index(host: str) -> int:
    return int(host.rsplit("-h", 1)[1])
