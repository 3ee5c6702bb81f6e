"""Fabric wrapper: run commands on a host, start and stop background servers by pid.

A local host (ansible_connection=local) runs each command as a child shell
(subprocess.run, which blocks without polling); an SSH host goes through
fabric.Connection, one connection for the whole run. Commands are argv
lists joined with shlex, so text from an experiment file is never parsed by a
shell. Every command carries a timeout. An SSH host must present a key that a
known_hosts file lists (the inventory's UserKnownHostsFile, else ~/.ssh/known_hosts
and /etc/ssh/ssh_known_hosts); any other is refused.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
import shutil
import socket
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import fabric
import invoke
import paramiko
from fabric.runners import Remote

from harness.errors import HostError, TrialError
from harness.hosts.inventory import Host

CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 120.0
LOST_HOST_SECONDS = 15.0  # unacknowledged data this long means the host is gone


KNOWN_HOSTS_USER = "~/.ssh/known_hosts"
KNOWN_HOSTS_SYSTEM = "/etc/ssh/ssh_known_hosts"


class _RefuseUnknownKeys(paramiko.MissingHostKeyPolicy):
    """paramiko's RejectPolicy, with a message that names the host, the key and the fix."""

    def __init__(self, host: Host, files: list[str]):
        self.host = host
        self.files = files

    def missing_host_key(self, client, hostname, key) -> None:
        fingerprint = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
        where = ", ".join(self.files) or f"{KNOWN_HOSTS_USER} (absent)"
        target = self.host.address if self.host.port == 22 else f"-p {self.host.port} {self.host.address}"
        raise HostError(
            f"{self.host.name}: SSH to {self.host.address}:{self.host.port} refused: its host key "
            f"({key.get_name()} SHA256:{fingerprint}) is not found in known_hosts ({where}); if that fingerprint "
            f"is the host's, add it (ssh-keyscan {target} >> {KNOWN_HOSTS_USER}) or name a known_hosts file "
            "with -o UserKnownHostsFile=FILE in the inventory's ansible_ssh_common_args"
        )


LOCAL_SHELL = "/bin/bash"  # the shell Fabric runs commands with on an SSH host, here too


class _QuietRemote(Remote):
    # Fabric polls a running command every `input_sleep` seconds. During a load window
    # the harness should stay off the CPU: a 100 ms wake-up is cheap enough there.
    input_sleep = 0.1


class _PromptRemote(Remote):
    # Outside load windows a command's end is noticed within 10 ms, not up to 100 ms
    # later: a trial runs some ten short commands around its load.
    input_sleep = 0.01


@dataclass(frozen=True)
class Output:
    exited: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Background:
    """A server started in its own session: `pid` is its session and group id."""

    pid: int
    log: str  # path of its stdout+stderr on the host


class HostSession:
    """Commands on one host. Use as a context manager so the connection closes."""

    def __init__(self, host: Host, connect_timeout: float = CONNECT_TIMEOUT):
        self.host = host
        self._boot_id: str | None = None
        # The run's journal of started processes on this host (harness/hosts/journal.py):
        # once set, every background process started here is recorded in it by the same
        # shell command that starts it.
        self.process_journal: str | None = None
        if host.local:
            self._runner = None
        else:
            connect_kwargs = {"key_filename": host.key_file} if host.key_file else {}
            config = fabric.Config(overrides={"runners": {"remote": _QuietRemote}})
            self._runner = fabric.Connection(
                host.address,
                port=host.port,
                user=host.user,
                connect_timeout=connect_timeout,
                connect_kwargs=connect_kwargs,
                config=config,
            )
            # Fabric accepts any host key by default. Here a host must present a key
            # listed in the inventory's UserKnownHostsFile, or else in the user's or
            # the system's known_hosts as ssh reads them; any other key is refused.
            files = (
                [host.known_hosts]
                if host.known_hosts
                else [
                    path
                    for path in (str(Path(KNOWN_HOSTS_USER).expanduser()), KNOWN_HOSTS_SYSTEM)
                    if Path(path).is_file()
                ]
            )
            for path in files:
                try:
                    self._runner.client.load_system_host_keys(path)
                except OSError as exc:
                    raise HostError(f"{host.name}: cannot read known_hosts file {path}: {exc.strerror}") from None
                except paramiko.SSHException as exc:
                    raise HostError(f"{host.name}: known_hosts file {path} cannot be parsed: {exc}") from None
            self._runner.client.set_missing_host_key_policy(_RefuseUnknownKeys(host, files))

    def __enter__(self) -> HostSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if isinstance(self._runner, fabric.Connection):
            self._runner.close()
            # Fabric closes only a connection that opened; one refused during the
            # handshake (an unknown host key) still has paramiko's transport thread.
            self._runner.client.close()

    # --- commands ---------------------------------------------------------

    def run(self, argv: list[str], timeout: float = COMMAND_TIMEOUT, check: bool = True) -> Output:
        """Run argv on the host and wait; raise HostError if check and it fails."""
        return self.shell(shlex.join(argv), timeout=timeout, check=check, shown=argv[0])

    def shell(
        self, script: str, timeout: float = COMMAND_TIMEOUT, check: bool = True, shown: str = "sh", quiet: bool = False
    ) -> Output:
        """Run a script built by this module from quoted parts. `quiet`: the command is a
        load window, so the controller wakes up as seldom as it can while it waits."""
        if self.host.local:
            output = self._run_local(script, timeout, shown)
        else:
            with self._reaching(shown, timeout):
                self._open()
                self._runner.config.runners.remote = _QuietRemote if quiet else _PromptRemote
                result = self._runner.run(script, hide=True, warn=True, timeout=timeout, in_stream=False)
            output = Output(exited=result.exited, stdout=result.stdout, stderr=result.stderr)
        if output.exited < 0:  # the SSH channel closed without an exit status: the host went away
            raise HostError(f"{self.host.name}: lost the SSH connection to {self.host.address} during {shown}")
        if check and output.exited != 0:
            detail = (output.stderr.strip() or output.stdout.strip()).splitlines()
            raise HostError(
                f"{self.host.name}: {shown} exited {output.exited}: {detail[-1] if detail else 'no output'}"
            )
        return output

    def _run_local(self, script: str, timeout: float, shown: str) -> Output:
        try:
            done = subprocess.run(
                [LOCAL_SHELL, "-c", script],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,  # the caller decides what a status means
            )
        except subprocess.TimeoutExpired:
            raise HostError(f"{self.host.name}: {shown} did not finish within {timeout:g} s") from None
        except OSError as exc:
            raise HostError(f"{self.host.name}: cannot start {LOCAL_SHELL}: {exc.strerror}") from None
        # A shell killed by signal N: the status a parent shell would report, 128 + N.
        exited = done.returncode if done.returncode >= 0 else 128 + abs(done.returncode)
        return Output(exited=exited, stdout=done.stdout, stderr=done.stderr)

    def put(self, local_path: Path, remote_path: str) -> None:
        self._copy(str(local_path), remote_path, f"copy to {remote_path}", "put")

    def get(self, remote_path: str, local_path: Path) -> None:
        self._copy(remote_path, str(local_path), f"copy from {remote_path}", "get")

    def _copy(self, source: str, target: str, shown: str, transfer: str) -> None:
        """A local host copies the file itself; a remote one through Fabric's `transfer`
        ("put" or "get"), both of which take (source, target)."""
        if self.host.local:
            shutil.copyfile(source, target)
            return
        with self._reaching(shown, COMMAND_TIMEOUT):
            self._open()
            getattr(self._runner, transfer)(source, target)

    @contextmanager
    def _reaching(self, shown: str, timeout: float):
        """Turn every way a host can fail to answer into one HostError naming it."""
        try:
            yield
        except invoke.CommandTimedOut:
            raise HostError(f"{self.host.name}: {shown} did not finish within {timeout:g} s") from None
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            # paramiko's own message ("Unable to connect to port 22 on ...") hides why.
            reasons = sorted({error.strerror or str(error) for error in exc.errors.values()})
            raise HostError(
                f"{self.host.name}: cannot reach {self.host.address}:{self.host.port}: {'; '.join(reasons)}"
            ) from None
        except (OSError, EOFError) as exc:
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, OSError) and exc.strerror:  # without "[Errno 101]"
                reason = exc.strerror + (f": {exc.filename}" if exc.filename else "")
            raise HostError(f"{self.host.name}: cannot reach {self.host.address}:{self.host.port}: {reason}") from None
        except Exception as exc:  # paramiko's SSHException family and friends
            if type(exc).__module__.startswith("paramiko"):
                raise HostError(
                    f"{self.host.name}: SSH to {self.host.address}:{self.host.port} failed: {exc}"
                ) from None
            raise

    def _open(self) -> None:
        """Connect once, with TCP timeouts so a host that vanishes mid-command
        (link cut, machine gone) fails within seconds instead of TCP's minutes."""
        if self._runner is None or self._runner.is_connected:
            return
        self._runner.open()
        sock = self._runner.transport.sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 2)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(LOST_HOST_SECONDS * 1000))

    def read_text(self, remote_path: str, tail_bytes: int | None = None) -> str:
        argv = ["tail", "-c", str(tail_bytes), remote_path] if tail_bytes else ["cat", remote_path]
        return self.run(argv, check=False).stdout

    # --- background servers -------------------------------------------------

    def start_background(self, argv: list[str], workdir: str, log: str, cpus: str | None = None) -> Background:
        """Start argv detached in a new session; return at once with its pid.

        setsid makes the server a session and group leader, so stop() can end it
        with every child it forks (nginx's workers) by signalling the group.
        """
        command = (["taskset", "-c", cpus] if cpus else []) + argv
        script = (
            # Not `cd W && cmd &`: that backgrounds a subshell whose pid is not the
            # server's and whose stdout keeps the runner's pipe open.
            f"cd {shlex.quote(workdir)} || exit 1\n"
            f"setsid nohup {shlex.join(command)} >{shlex.quote(log)} 2>&1 </dev/null &\n"
            f"pid=$!\n{record_started(self.process_journal)}echo $pid"
        )
        output = self.shell(script, timeout=30, shown=argv[0])
        try:
            return Background(pid=int(output.stdout.strip().splitlines()[-1]), log=log)
        except (ValueError, IndexError):
            raise HostError(f"{self.host.name}: could not start {argv[0]}: {output.stdout.strip()!r}") from None

    def wait_listening(self, server: Background, port: int, timeout: float, protocol: str = "tcp") -> None:
        """Wait in one host-side loop until the port listens (tcp) or is bound (udp);
        fail fast if the server dies."""
        sockets = {"tcp": "-Hltn", "udp": "-Hlun"}[protocol]
        script = f"""
pid={server.pid}; port={port}; end=$(( $(date +%s) + {int(timeout) + 1} ))
while :; do
  {_ALIVE} || {{ echo exited; exit 3; }}
  [ -n "$(ss {sockets} "sport = :$port")" ] && {{ echo ready; exit 0; }}
  [ "$(date +%s)" -ge "$end" ] && {{ echo timeout; exit 4; }}
  sleep 0.05
done"""
        result = self.shell(script, timeout=timeout + 15, check=False, shown="wait for port")
        if result.exited == 0:
            return
        tail = self.read_text(server.log, tail_bytes=2000).strip().splitlines()
        last = tail[-1] if tail else "no output"
        if result.exited == 3:
            raise TrialError(
                f"{self.host.name}: server exited before listening on port {port}: {last} (log {server.log})"
            )
        raise TrialError(f"{self.host.name}: server did not listen on port {port} within {timeout:g} s: {last}")

    def is_alive(self, server: Background) -> bool:
        return self.shell(f"pid={server.pid}; {_ALIVE}", timeout=30, check=False, shown="check server").exited == 0

    def stop(self, server: Background, grace: float = 5.0) -> None:
        """TERM the server's process group, then KILL whatever is left after `grace`."""
        # Zombies do not count: they have ended, and their reaper (pid 1 here) may be slow.
        script = f"""
pid={server.pid}
running() {{ ps -o stat= -s $pid 2>/dev/null | grep -qv '^Z'; }}
kill -TERM -- -$pid 2>/dev/null
i=0
while running && [ $i -lt {int(grace * 20)} ]; do sleep 0.05; i=$((i+1)); done
if running; then kill -KILL -- -$pid 2>/dev/null; sleep 0.2; fi
! running"""
        result = self.shell(script, timeout=grace + 30, check=False, shown="stop server")
        if result.exited != 0:
            raise HostError(f"{self.host.name}: processes of session {server.pid} survived SIGKILL")

    def counters(self, server: Background | None = None) -> dict[str, float]:
        """Host counters that can invalidate a measurement (swapping, CPU steal,
        throttling) or show where the kernel did the work (receive softirqs per CPU).
        Per CPU N also: cpuN_steal_ticks, cpuN_process_ticks (user, nice, system: work done
        for processes) and cpuN_irq_ticks (irq, softirq), for the gates on the CPUs a trial
        was allowed to use. Read before and after a load window; absent ones are left out.
        With `server`, also its session's CPU time (`server_cpu_ns`) in the same call."""
        script = r"""
awk '$1 == "pswpin" || $1 == "pswpout" {print $1, $2}' /proc/vmstat
awk '$1 == "cpu" {print "steal_ticks", $9; print "busy_ticks", $2 + $3 + $4 + $7 + $8}' /proc/stat
awk '$1 ~ /^cpu[0-9]+$/ {n = substr($1, 4); print "cpu" n "_steal_ticks", $9;
  print "cpu" n "_process_ticks", $2 + $3 + $4; print "cpu" n "_irq_ticks", $7 + $8}' /proc/stat
awk '$1 == "NET_RX:" {for (i = 2; i <= NF; i++) print "net_rx_cpu" i - 2, $i}' /proc/softirqs
echo "ticks_per_second $(getconf CLK_TCK)"
echo "cpus $(nproc)"
for f in /sys/devices/system/cpu/cpu*/thermal_throttle/core_throttle_count; do
  [ -r "$f" ] && cat "$f"
done | awk '{n += $1; seen = 1} END {if (seen) print "thermal_throttle_count", n}'
[ -r /sys/fs/cgroup/cpu.stat ] && awk '$1 == "nr_throttled" {print "cgroup_nr_throttled", $2}' /sys/fs/cgroup/cpu.stat
true"""
        if server is not None:
            script += f'\necho "server_cpu_ns $({_session_cpu_script(server)})"'
        values = {}
        for line in self.shell(script, timeout=30, shown="read host counters").stdout.splitlines():
            name, _, number = line.partition(" ")
            try:
                values[name] = float(number)
            except ValueError:
                continue
        return values

    def boot_id(self) -> str:
        """The host's kernel boot id: hosts with the same one share one kernel and its CPUs
        (lab hosts are network namespaces of one machine), so their counters are one machine's."""
        if self._boot_id is None:
            self._boot_id = self.read_text("/proc/sys/kernel/random/boot_id").strip() or self.host.name
        return self._boot_id

    def port_in_use(self, port: int, protocol: str = "tcp") -> bool:
        sockets = {"tcp": "-Hltn", "udp": "-Hlun"}[protocol]
        return bool(self.run(["ss", sockets, f"sport = :{port}"], timeout=30).stdout.strip())


def _session_cpu_script(server: Background) -> str:
    """Prints the CPU time (ns) of every thread in the server's session, from /proc schedstat."""
    return (
        f"for p in $(pgrep -s {server.pid}); do cat /proc/$p/task/*/schedstat 2>/dev/null; done"
        " | awk '{ns += $1} END {printf \"%d\\n\", ns}'"
    )


def record_started(journal: str | None) -> str:
    """Shell lines appending "PID PGID STARTTIME" of the process group led by $pid to the
    journal's process list (STARTTIME: field 22 of /proc/PID/stat, which tells that process
    from a later one given the same pid); "" without a journal."""
    if not journal:
        return ""
    return (
        "st=$(sed 's/.*) //' /proc/$pid/stat 2>/dev/null | cut -d' ' -f20)\n"
        f'[ -n "$st" ] && echo "$pid $pid $st" >>{shlex.quote(journal)}\n'
    )


# A process is alive when /proc has it and it is not a zombie awaiting its reaper.
_ALIVE = '[ -r /proc/$pid/stat ] && [ "$(sed "s/.*) //" /proc/$pid/stat | cut -d" " -f1)" != Z ]'
