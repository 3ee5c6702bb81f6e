#!/usr/bin/env python3
"""The receiving side of one XDP-experiment trial: set up a drop point, wait for SIGTERM, undo it.

usage: receiver.py MODE --address ADDR --port PORT --workdir DIR [--workload DIR] [--sink BIN]
                   [--sink-batch N] [--coalesce-us US] [--no-steering]

MODE is where datagrams to PORT end:
  userspace  udp_sink (recvmmsg, discard, count) bound to ADDR:PORT
  xdp        xdp_drop.c, compiled here with clang and attached natively (`ip link ... xdpdrv`)
             to the device that carries ADDR; its per-CPU map counts the drops
  nftables   table inet harness_xdp: `udp dport PORT counter drop` in prerouting at priority raw

Receive steering (veth only). On a veth the receive work of a packet runs on the CPU that sent
it: veth_xmit hands the skb to the peer with __netif_rx (that CPU's backlog) or, when the peer
runs NAPI (an XDP program is attached), with napi_schedule on that CPU. A sender on CPU 1 would
pay the receiver's work too, and the receiver's CPU would mean nothing. So, like a NIC that
interrupts the receiving core, this script moves all of it to its own CPUs (the harness pins
the server to CPU 0):
  - RPS: rps_cpus of every rx queue = these CPUs, so the stack path (IP, nftables, UDP, the
    socket queue) runs in their NET_RX softirq, from their backlog;
  - xdp mode: the veth's NAPI (which attaching the program creates) made threaded, its threads
    pinned to these CPUs, so the program runs there too (it runs before RPS could act), with
    --coalesce-us US (default 50) of interrupt moderation (gro_flush_timeout with
    napi_defer_hard_irqs): while packets flow the thread polls every US microseconds instead
    of being woken for every few packets, as a NIC's moderated interrupts would.
The original values are saved in WORKDIR/receiver-steering-DEV.json the first time and restored
on exit; a launcher that was killed leaves that file and the next one restores from it.

The flood window. Every 50 ms this script samples the device's rx_packets and the idle time
of its CPUs (cpuidle residency in microseconds, else /proc/stat). The flood starts at the last
quiet sample before rx_packets jumps by FLOOD_PACKETS or more, and ends at the first quiet
sample after; WORKDIR/receiver-PORT.window holds both samples, so result.py gets the CPU time
its CPUs were busy over the flood (+- one sample) and not over SSH chatter before or after.

Ready means set up: only after everything is in place does a socket get bound to PORT (the
sink's own in userspace mode, an unread guard socket otherwise, which the drop point keeps
empty), and the harness waits for that bound UDP port. WORKDIR/receiver-PORT.json tells
result.py where to count.

SIGTERM, SIGINT or SIGHUP (the harness stops every trial's server with SIGTERM to its process
group): stop the sink, detach the program or delete the table, restore the steering, exit 0
(1 if part of the clean-up failed, each failure on stderr). Signals that arrive during set-up
wait until it is complete, then clean up at once. Only one launcher runs per device (an
abstract socket per network namespace is the lock); its holder removes a leftover of an
earlier launcher (our program still attached, our table still there) before setting up, and
never replaces an XDP program that is not ours.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PROGRAM_NAME = "xdp_drop_port"  # the function name in xdp_drop.c, as the kernel reports it
NFT_TABLE = "harness_xdp"
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
MODES = ("userspace", "xdp", "nftables")
SINK_STOP_SECONDS = 2.0
DEFER_HARD_IRQS = 2  # empty timer polls before the NAPI thread goes back to being woken
SAMPLE_SECONDS = 0.05
FLOOD_PACKETS = 200  # rx packets per sample that mean "the flood is on" (4000/s; SSH stays far below)


class SetupError(Exception):
    """A step of the set-up failed; the message says which and why."""


def log(message: str) -> None:
    print(f"receiver: {message}", file=sys.stderr, flush=True)


def run(argv: list[str], check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        argv, capture_output=True, text=True, input=stdin, timeout=60, preexec_fn=_unblock_signals, check=False
    )
    if check and result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise SetupError(f"{' '.join(argv[:6])} exited {result.returncode}: {detail[-1] if detail else 'no output'}")
    return result


def _unblock_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


# --- the device and the CPUs ------------------------------------------------------------------


def device_of(address: str) -> str:
    for link in json.loads(run(["ip", "-j", "addr", "show"]).stdout):
        if any(info.get("local") == address for info in link.get("addr_info", [])):
            return link["ifname"]
    raise SetupError(f"no device carries the address {address}")


def link_info(device: str) -> dict:
    return json.loads(run(["ip", "-j", "-d", "link", "show", "dev", device]).stdout)[0]


def attached_program(device: str) -> dict | None:
    """The XDP program attached to the device ({"id", "name", "mode", ...}), or None."""
    xdp = link_info(device).get("xdp")
    if not xdp or "prog" not in xdp:
        return None
    return {**xdp["prog"], "mode": xdp.get("mode")}


def device_stats(device: str) -> dict[str, int]:
    """`ethtool -S` of the device, its numeric lines."""
    stats = {}
    for line in run(["ethtool", "-S", device]).stdout.splitlines()[1:]:
        name, _, value = line.strip().partition(": ")
        if value.strip().isdigit():
            stats[name] = int(value)
    return stats


def rx_packets(device: str) -> int:
    return int(Path(f"/sys/class/net/{device}/statistics/rx_packets").read_text())


def udp_counters() -> dict[str, int]:
    """The Udp: lines of /proc/net/snmp (this network namespace's)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    return dict(zip(lines[0][1:], map(int, lines[1][1:])))


def cpu_ns(pid: int) -> int:
    """CPU time the task has run, from /proc/PID/schedstat (its first field, ns)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def idle_seconds(cpus: list[int]) -> float:
    """Time the CPUs spent idle since boot: cpuidle residency (microseconds) where the kernel
    has cpuidle, else /proc/stat idle + iowait (1/100 s). Softirq work that interrupts an idle
    CPU is not idle time in either, unlike in tick-sampled busy counters under NO_HZ."""
    total = 0.0
    for cpu in cpus:
        states = list(Path(f"/sys/devices/system/cpu/cpu{cpu}/cpuidle").glob("state*/time"))
        if states:
            total += sum(int(state.read_text()) for state in states) / 1e6
        else:
            fields = next(
                line.split() for line in Path("/proc/stat").read_text().splitlines() if line.startswith(f"cpu{cpu} ")
            )
            total += (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")
    return total


def cpu_mask(cpus: set[int]) -> str:
    return format(sum(1 << cpu for cpu in cpus), "x")


# --- receive steering -----------------------------------------------------------------------------

COALESCING = ("gro_flush_timeout", "napi_defer_hard_irqs")


def rx_queues(device: str) -> list[str]:
    return sorted(path.name for path in Path(f"/sys/class/net/{device}/queues").glob("rx-*"))


def read_steering(device: str) -> dict:
    net = Path(f"/sys/class/net/{device}")
    return {
        "rps_cpus": {queue: (net / "queues" / queue / "rps_cpus").read_text().strip() for queue in rx_queues(device)},
        **{name: (net / name).read_text().strip() for name in ("threaded", *COALESCING)},
    }


def same_value(a: str, b: str) -> bool:
    """Sysfs numbers and CPU masks as the kernel prints them ("00000001", "0,00000001") or as written ("1")."""
    return a.strip().replace(",", "").lstrip("0") == b.strip().replace(",", "").lstrip("0")


def same_steering(a: dict, b: dict) -> bool:
    return (
        a.keys() == b.keys()
        and a["rps_cpus"].keys() == b["rps_cpus"].keys()
        and all(same_value(a["rps_cpus"][q], b["rps_cpus"][q]) for q in a["rps_cpus"])
        and all(same_value(a[name], b[name]) for name in a if name != "rps_cpus")
    )


def write_sysfs(path: Path, value: str) -> None:
    if same_value(path.read_text(), value):
        return
    try:
        path.write_text(value)
    except OSError as exc:
        raise SetupError(f"cannot write {value} to {path}: {exc.strerror}") from None


def napi_threads(device: str) -> set[int]:
    """Kernel threads named napi/DEVICE-<napi id>. Every namespace's eth0 has this prefix,
    so the caller tells its own apart by which ones appear when it turns threading on."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith(f"napi/{device}-"):
                pids.add(int(entry.name))
    return pids


# --- the drop points ------------------------------------------------------------------------------


def compile_program(workload: Path, workdir: Path, port: int) -> Path:
    machine = run(["gcc", "-dumpmachine"]).stdout.strip()
    target = workdir / f"xdp_drop-{port}.o"
    run(
        [
            "clang",
            "-O2",
            "-g",
            "-Wall",
            "-target",
            "bpf",
            f"-I/usr/include/{machine}",
            f"-DDROP_PORT={port}",
            "-c",
            str(workload / "xdp_drop.c"),
            "-o",
            str(target),
        ]
    )
    return target


def attach_program(device: str, program: Path) -> dict:
    run(["ip", "link", "set", "dev", device, "xdpdrv", "obj", str(program), "sec", "xdp"])
    attached = attached_program(device)
    if not attached or attached.get("name") != PROGRAM_NAME:
        raise SetupError(f"after attaching, {device} shows XDP program {attached}, not {PROGRAM_NAME}")
    if attached.get("mode") != 1:  # 1 = XDP_ATTACHED_DRV: native, in the driver
        raise SetupError(f"{PROGRAM_NAME} is attached to {device} in mode {attached.get('mode')}, not native (1)")
    return attached


def detach_program(device: str) -> None:
    run(["ip", "link", "set", "dev", device, "xdpdrv", "off"])
    if attached_program(device):
        raise SetupError(f"an XDP program is still attached to {device} after `ip link set dev {device} xdpdrv off`")


def add_table(port: int) -> None:
    rules = (
        f"table inet {NFT_TABLE} {{\n"
        "  chain prerouting {\n"
        "    type filter hook prerouting priority raw; policy accept;\n"
        f"    udp dport {port} counter drop\n"
        "  }\n"
        "}\n"
    )
    run(["nft", "-f", "-"], stdin=rules)


def delete_table(missing_ok: bool) -> None:
    result = run(["nft", "delete", "table", "inet", NFT_TABLE], check=False)
    if result.returncode != 0 and not (missing_ok and "No such file" in result.stderr):
        raise SetupError(f"nft delete table inet {NFT_TABLE}: {result.stderr.strip()}")


def bind_guard(address: str, port: int) -> socket.socket:
    """A UDP socket nobody reads: readiness for the harness; the drop point keeps it empty."""
    guard = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
    guard.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    guard.bind((address, port))
    return guard


def hold_device(device: str) -> socket.socket:
    """One launcher per device at a time: an abstract unix socket (per network namespace,
    released when its holder dies, even by SIGKILL) named after the device."""
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        lock.bind(f"\0harness_xdp_receiver:{device}")
    except OSError:
        lock.close()
        raise SetupError(f"another receiver.py is running on {device} in this network namespace") from None
    return lock


# --- the flood window ----------------------------------------------------------------------------


class FloodWindow:
    """Finds the flood in 50 ms samples of rx_packets and keeps the idle time of the CPUs at
    its edges in a file for result.py: {"start": sample, "end": sample, "floods": n}, where a
    sample is {"t": monotonic seconds, "idle": idle seconds of the CPUs, "rx": rx_packets}."""

    def __init__(self, device: str, cpus: list[int], path: Path):
        self.device, self.cpus, self.path = device, cpus, path
        self.previous = self.sample()
        self.start = self.end = None
        self.active = False
        self.floods = 0

    def sample(self) -> dict:
        return {"t": time.monotonic(), "idle": idle_seconds(self.cpus), "rx": rx_packets(self.device)}

    def step(self) -> None:
        current = self.sample()
        flooding = current["rx"] - self.previous["rx"] >= FLOOD_PACKETS
        if flooding and not self.active:
            self.floods += 1
            if self.start is None:
                self.start = self.previous
        if flooding or self.active:  # the first quiet sample closes the window: the ring drained
            self.end = current
            self.path.write_text(
                json.dumps(
                    {"start": self.start, "end": self.end, "floods": self.floods, "cpus": self.cpus, "open": flooding}
                )
                + "\n"
            )
        self.active = flooding
        self.previous = current


# --- the launcher ----------------------------------------------------------------------------------


class Receiver:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.workdir = Path(args.workdir)
        self.state_file = self.workdir / f"receiver-{args.port}.json"
        self.window_file = self.workdir / f"receiver-{args.port}.window"
        self.cpus = sorted(os.sched_getaffinity(0))
        self.device: str | None = None
        self.lock: socket.socket | None = None
        self.steering_file: Path | None = None
        self.original: dict | None = None
        self.sockets: list[socket.socket] = []
        self.sink: subprocess.Popen | None = None
        self.attached = self.table = False
        self.window: FloodWindow | None = None

    def set_up(self) -> None:
        args = self.args
        self.device = device_of(args.address)
        self.lock = hold_device(self.device)
        veth = link_info(self.device).get("linkinfo", {}).get("info_kind") == "veth"
        steering = veth and args.steering
        if args.steering and not veth:
            log(f"{self.device} is not a veth: receive steering left as it is")
        if steering:
            self.save_steering()

        # Leftovers of a launcher that was killed before it could clean up.
        self.window_file.unlink(missing_ok=True)
        delete_table(missing_ok=True)
        leftover = attached_program(self.device)
        if leftover and leftover.get("name") == PROGRAM_NAME:
            log(f"removing a leftover {PROGRAM_NAME} (id {leftover.get('id')}) from {self.device}")
            self.restore_napi()  # `threaded` can only be written while the program gives NAPI
            detach_program(self.device)
        elif leftover:
            raise SetupError(
                f"{self.device} already has XDP program {leftover.get('name')} (id {leftover.get('id')}); "
                "not replacing a program this experiment did not attach"
            )

        napi_pids: set[int] = set()
        if steering:
            for queue in rx_queues(self.device):
                write_sysfs(Path(f"/sys/class/net/{self.device}/queues/{queue}/rps_cpus"), cpu_mask(set(self.cpus)))
        if args.mode == "xdp":
            program = compile_program(Path(args.workload), self.workdir, args.port)
            self.attached = True  # from here on, clean-up detaches
            attached = attach_program(self.device, program)
            log(f"attached {PROGRAM_NAME} id {attached['id']} to {self.device} (native)")
            if steering:
                napi_pids = self.thread_napi()
        elif args.mode == "nftables":
            self.table = True
            add_table(args.port)
            log(f"added table inet {NFT_TABLE}: udp dport {args.port} counter drop (prerouting, priority raw)")

        state = {
            "mode": args.mode,
            "device": self.device,
            "port": args.port,
            "launcher_pid": os.getpid(),
            "cpus": self.cpus,
            "steering": steering,
            "napi_pids": sorted(napi_pids),
            "napi_cpu_ns_start": {str(pid): cpu_ns(pid) for pid in napi_pids},
            "prog_id": attached_program(self.device)["id"] if args.mode == "xdp" else None,
            "count_file": str(self.workdir / f"sink-{args.port}.count") if args.mode == "userspace" else None,
            "sink_pid": None,
            "window_file": str(self.window_file),
            # Where packets went, read again by result.py: the veth's per-queue NAPI counters
            # (every frame its NAPI polled) and the namespace's UDP counters.
            "device_stats_start": device_stats(self.device) if veth else {},
            "udp_start": udp_counters(),
        }
        if args.mode == "userspace":
            self.sink = subprocess.Popen(
                [args.sink, args.address, str(args.port), state["count_file"], "--batch", str(args.sink_batch)],
                preexec_fn=_unblock_signals,
            )
            state["sink_pid"] = self.sink.pid
        self.state_file.write_text(json.dumps(state) + "\n")
        self.window = FloodWindow(self.device, self.cpus, self.window_file)
        if args.mode != "userspace":
            self.sockets.append(bind_guard(args.address, args.port))
        log(
            f"ready: mode {args.mode} on {self.device} port {args.port}, CPUs {self.cpus}"
            + (f", RPS to them, NAPI threads {sorted(napi_pids)} pinned to them" if steering else "")
        )

    def save_steering(self) -> None:
        self.steering_file = self.workdir / f"receiver-steering-{self.device}.json"
        if self.steering_file.exists():
            log(f"{self.steering_file} was left by an earlier launcher: restoring from it at the end")
        else:
            self.steering_file.write_text(json.dumps(read_steering(self.device)) + "\n")
        self.original = json.loads(self.steering_file.read_text())

    def thread_napi(self) -> set[int]:
        """Threaded NAPI for the veth (it has NAPI while the program is attached), threads
        pinned to this process's CPUs, and interrupt moderation."""
        net = Path(f"/sys/class/net/{self.device}")
        write_sysfs(net / "threaded", "0")  # so the threads turned on next are new and recognisable
        coalesce = self.args.coalesce_us > 0
        write_sysfs(net / "gro_flush_timeout", str(self.args.coalesce_us * 1000 if coalesce else 0))
        write_sysfs(net / "napi_defer_hard_irqs", str(DEFER_HARD_IRQS if coalesce else 0))
        before = napi_threads(self.device)
        write_sysfs(net / "threaded", "1")
        ours = napi_threads(self.device) - before
        if not ours:
            raise SetupError(f"turning on threaded NAPI on {self.device} started no napi/{self.device}-* thread")
        for pid in ours:
            os.sched_setaffinity(pid, set(self.cpus))
        if len(ours) != len(rx_queues(self.device)):
            log(f"warning: {len(ours)} new NAPI threads for {len(rx_queues(self.device))} rx queues of {self.device}")
        return ours

    def restore_napi(self) -> None:
        if self.original is not None:
            net = Path(f"/sys/class/net/{self.device}")
            for name in ("threaded", *COALESCING):
                write_sysfs(net / name, self.original[name])

    def restore_steering(self) -> None:
        net = Path(f"/sys/class/net/{self.device}")
        for queue, mask in self.original["rps_cpus"].items():
            write_sysfs(net / "queues" / queue / "rps_cpus", mask)
        for name in COALESCING:
            write_sysfs(net / name, self.original[name])
        now = read_steering(self.device)
        if not same_steering(now, self.original):
            raise SetupError(f"{self.device} reads {now} after restoring {self.original}")
        self.steering_file.unlink()

    def wait(self) -> int:
        """Sample the flood window until a stop signal; 1 if the sink died on its own."""
        while True:
            received = signal.sigtimedwait(STOP_SIGNALS, SAMPLE_SECONDS)
            if received is not None:
                log(f"signal {signal.Signals(received.si_signo).name}: cleaning up")
                return 0
            self.window.step()
            if self.sink is not None and self.sink.poll() is not None:
                if STOP_SIGNALS & signal.sigpending():  # the harness's SIGTERM reached the group
                    return 0
                log(f"udp_sink exited with status {self.sink.returncode}")
                return 1

    def clean_up(self) -> list[str]:
        if self.lock is None:  # another launcher holds the device: nothing here is ours
            return []
        problems = []

        def attempt(what, action):
            try:
                action()
            except (SetupError, OSError, subprocess.SubprocessError) as exc:
                problems.append(f"{what}: {exc}")

        if self.sink is not None:
            attempt("stop the sink", self.stop_sink)
        for sock in self.sockets:
            sock.close()
        if self.attached and (attached_program(self.device) or {}).get("name") == PROGRAM_NAME:
            attempt("restore threaded NAPI", self.restore_napi)  # before NAPI goes with the program
            attempt("detach XDP", lambda: detach_program(self.device))
        if self.table:
            attempt(f"delete table {NFT_TABLE}", lambda: delete_table(missing_ok=False))
        if self.original is not None:
            attempt("restore steering", self.restore_steering)
        self.state_file.unlink(missing_ok=True)
        self.window_file.unlink(missing_ok=True)
        self.lock.close()
        return problems

    def stop_sink(self) -> None:
        if self.sink.poll() is None:
            self.sink.terminate()
        try:
            self.sink.wait(SINK_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.sink.kill()
            self.sink.wait()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="receiver.py", description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument(
        "--workload",
        default=str(Path(__file__).resolve().parent),
        help="folder with xdp_drop.c (default: this script's)",
    )
    parser.add_argument("--sink", default="udp_sink", help="the udp_sink binary (userspace mode)")
    parser.add_argument("--sink-batch", type=int, default=64)
    parser.add_argument(
        "--coalesce-us",
        type=int,
        default=50,
        help="xdp mode: NAPI poll interval while packets flow (gro_flush_timeout); 0: woken per packet",
    )
    parser.add_argument(
        "--no-steering",
        dest="steering",
        action="store_false",
        help="leave RPS, threaded NAPI and coalescing of the device as they are",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.coalesce_us <= 10000:
        parser.error(f"--coalesce-us {args.coalesce_us}: give 0 to 10000 microseconds")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    receiver = Receiver(args)
    status = 0
    try:
        receiver.set_up()
        status = receiver.wait()
    except (SetupError, OSError, subprocess.SubprocessError) as exc:
        log(f"set-up failed: {exc}")
        status = 1
    finally:
        problems = receiver.clean_up()
    for problem in problems:
        log(f"clean-up failed: {problem}")
    if receiver.lock is not None and not problems:
        log("clean-up done" + (f": {receiver.device} has no XDP program" if args.mode == "xdp" else ""))
    return 1 if problems else status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
