"""The XDP experiment's pieces with real components: the C programs built as the experiment
builds them, and receiver.py / result.py on a veth pair between two network namespaces made
here (198.19.250.0/30), where the drop points must count exactly what udp_flood sent and
SIGTERM must leave the device as it was: no XDP program, no nftables table, steering restored."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from harness.run.collect import parse_json_values
from tests.builders import ROOT

WORKLOAD = ROOT / "experiments" / "xdp"
RECEIVER_ADDRESS, SENDER_ADDRESS = "198.19.250.1", "198.19.250.2"
PORT = 18509
START_TIMEOUT = 20

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="network namespaces need root and iproute2"
)
needs_clang = pytest.mark.skipif(
    shutil.which("clang") is None, reason="clang is not installed: the XDP object cannot be built"
)
needs_bpftool = pytest.mark.skipif(
    shutil.which("bpftool") is None, reason="bpftool is not installed: the XDP counter cannot be read"
)
needs_nft = pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")


def run(*argv, check=True, timeout=30):
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, check=False)
    if check:
        assert result.returncode == 0, f"{argv}: {result.stderr}"
    return result


@pytest.fixture(scope="module")
def binaries(tmp_path_factory):
    """udp_flood and udp_sink compiled as provision.builds does, with warnings as errors."""
    folder = tmp_path_factory.mktemp("xdp-bin")
    for name in ("udp_flood", "udp_sink"):
        run("gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", folder / name, WORKLOAD / f"{name}.c", timeout=60)
    return folder


@needs_clang
def test_xdp_program_compiles_for_bpf_and_needs_a_port(tmp_path):
    machine = run("gcc", "-dumpmachine").stdout.strip()
    base = [
        "clang",
        "-O2",
        "-g",
        "-Wall",
        "-Werror",
        "-target",
        "bpf",
        f"-I/usr/include/{machine}",
        "-c",
        WORKLOAD / "xdp_drop.c",
        "-o",
        tmp_path / "prog.o",
    ]
    built = run(*base[:-4], "-DDROP_PORT=18502", *base[-4:])
    assert built.stderr == ""
    header = run("readelf", "-h", tmp_path / "prog.o").stdout if shutil.which("readelf") else "Linux BPF"
    assert "Linux BPF" in header
    missing = run(*base, check=False)
    assert missing.returncode != 0 and "compile with -DDROP_PORT=<udp port>" in missing.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["198.19.250.1", "9", "--payload", "4"], "--payload 4: give a number from 8 to 1472"),
        (["198.19.250.1", "9", "--seconds", "x"], "--seconds x: give a number from 0.001 to 3600"),
        (["198.19.250.1", "9", "--rate", "1"], "unknown flag --rate"),
        (["198.19.250.1"], "usage: udp_flood HOST PORT"),
    ],
)
def test_udp_flood_rejects_bad_arguments(binaries, argv, message):
    result = run(binaries / "udp_flood", *argv, check=False)
    assert result.returncode == 2 and message in result.stderr and result.stdout == ""


def test_udp_flood_counts_and_prints_json_values_on_loopback(binaries):
    """Count-bounded on loopback (nothing listens: ECONNREFUSED counts as errors, not a failure)."""
    result = run(binaries / "udp_flood", "127.0.0.1", 9, "--packets", 1000, "--seconds", 5, "--batch", 10)
    assert result.returncode == 0, result.stderr
    parsed = parse_json_values(result.stdout, "udp_flood")
    sent = json.loads(result.stdout.splitlines()[0])
    assert sent["units"] + 10 * sent["errors"] >= 1000 and sent["units"] <= 1000
    assert len(parsed.seconds) == 1 and parsed.seconds[0] > 0 and parsed.client_cpu_seconds >= 0


# --- receiver.py and result.py on a real veth pair ---------------------------------------


@pytest.fixture
def veth(tmp_path):
    """Namespaces RX (receiver, 198.19.250.1) and TX (sender, .2) joined by a veth pair;
    deleted afterwards together with anything a test left running in them."""
    tag = f"xt{os.getpid() % 100000}"
    rx, tx = f"{tag}rx", f"{tag}tx"
    started = []
    try:
        run("ip", "netns", "add", rx)
        run("ip", "netns", "add", tx)
        run("ip", "link", "add", f"{tag}a", "netns", rx, "type", "veth", "peer", "name", f"{tag}b", "netns", tx)
        for namespace, device, address in ((rx, f"{tag}a", RECEIVER_ADDRESS), (tx, f"{tag}b", SENDER_ADDRESS)):
            run("ip", "-n", namespace, "link", "set", "lo", "up")
            run("ip", "-n", namespace, "addr", "add", f"{address}/30", "dev", device)
            run("ip", "-n", namespace, "link", "set", device, "up")
        yield {"rx": rx, "tx": tx, "device": f"{tag}a", "workdir": tmp_path, "started": started}
    finally:
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for namespace in (rx, tx):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)


def steering(veth):
    """What receiver.py changes on the device, as it reads now."""
    device = veth["device"]
    script = (
        f"cd /sys/class/net/{device} && grep . threaded gro_flush_timeout napi_defer_hard_irqs queues/rx-*/rps_cpus"
    )
    return run("ip", "netns", "exec", veth["rx"], "sh", "-c", script).stdout


def xdp_of(veth):
    link = json.loads(run("ip", "-n", veth["rx"], "-j", "link", "show", "dev", veth["device"]).stdout)[0]
    return link.get("xdp")


def start_receiver(veth, mode, binaries, *extra):
    log = veth["workdir"] / f"receiver-{mode}-{len(veth['started'])}.log"
    process = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            veth["rx"],
            sys.executable,
            str(WORKLOAD / "receiver.py"),
            mode,
            "--address",
            RECEIVER_ADDRESS,
            "--port",
            str(PORT),
            "--workdir",
            str(veth["workdir"]),
            "--sink",
            str(binaries / "udp_sink"),
            *extra,
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    veth["started"].append(process)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if "receiver: ready" in log.read_text() and listening(veth, PORT):
            return process, log
        if process.poll() is not None:
            return process, log
        time.sleep(0.05)
    pytest.fail(f"receiver.py {mode} not ready within {START_TIMEOUT} s: {log.read_text()}")


def listening(veth, port):
    return bool(run("ip", "netns", "exec", veth["rx"], "ss", "-Hlun", f"sport = :{port}").stdout.strip())


def flood(veth, binaries, packets, port=PORT):
    # Fewer packets than the veth ring holds (256): none can be lost however late the
    # receiver's NAPI thread runs, so every one must be counted.
    result = run(
        "ip",
        "netns",
        "exec",
        veth["tx"],
        binaries / "udp_flood",
        RECEIVER_ADDRESS,
        port,
        "--packets",
        packets,
        "--seconds",
        10,
        "--batch",
        8,
    )
    sent = json.loads(result.stdout.splitlines()[0])
    assert sent["units"] == packets and sent["errors"] == 0, result.stderr
    return sent


def result(veth, metric="packet_rate", check=True):
    output = run(
        "ip",
        "netns",
        "exec",
        veth["rx"],
        sys.executable,
        WORKLOAD / "result.py",
        "--workdir",
        veth["workdir"],
        "--port",
        PORT,
        "--window-seconds",
        "0.5",
        "--metric",
        metric,
        check=check,
    )
    return output


def stop(process, log):
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=15) == 0, log.read_text()
    return log.read_text()


def wait_counted(veth, packets, metric="packet_rate"):
    """The NAPI thread may still be draining the ring when the flood returns: read until the
    count settles at what was sent (or give the last reading)."""
    deadline = time.monotonic() + 5
    while True:
        line = json.loads(result(veth, metric).stdout)
        if line["units"] >= packets or time.monotonic() > deadline:
            return line
        time.sleep(0.1)


@needs_root
@needs_clang
@needs_bpftool
def test_xdp_counts_every_flood_packet_and_sigterm_detaches(veth, binaries):
    before = steering(veth)
    process, log = start_receiver(veth, "xdp", binaries)
    assert process.poll() is None, log.read_text()
    attached = xdp_of(veth)
    assert attached["mode"] == 1 and attached["prog"]["name"] == "xdp_drop_port"  # native, ours
    during = steering(veth)  # RPS, threaded NAPI and coalescing are on during the trial
    assert "threaded:1" in during and "gro_flush_timeout:50000" in during and during != before
    state = json.loads((veth["workdir"] / f"receiver-{PORT}.json").read_text())
    assert state["mode"] == "xdp" and state["napi_pids"]

    flood(veth, binaries, 200)
    line = wait_counted(veth, 200)
    # napi_packets counts every frame the device's NAPI polled: ARP's too.
    assert line["units"] == 200 and 200 <= line["napi_packets"] <= 205 and line["errors"] == 0
    # Dropped in the driver, not passed on to the guard socket (4 KiB buffer: it would overflow).
    assert line["xdp_drops"] == 200 and line["socket_drops"] == 0
    assert line["value"] == pytest.approx(0.5 / 200)
    parsed = parse_json_values(json.dumps(line), "result")
    assert parsed.seconds == (pytest.approx(0.5 / 200),) and parsed.units == 200

    assert line["napi_cpu_seconds"] > 0 and line["sink_cpu_seconds"] == 0

    text = stop(process, log)
    assert "clean-up done" in text and xdp_of(veth) is None
    assert steering(veth) == before
    assert not (veth["workdir"] / f"receiver-{PORT}.json").exists()
    assert not (veth["workdir"] / f"receiver-steering-{veth['device']}.json").exists()
    gone = result(veth, check=False)
    assert gone.returncode == 1 and "receiver.py is not running" in gone.stderr


@needs_root
@needs_clang
@needs_bpftool
def test_xdp_passes_other_ports(veth, binaries):
    process, log = start_receiver(veth, "xdp", binaries)
    other = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            veth["rx"],
            sys.executable,
            "-c",
            "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.bind(({RECEIVER_ADDRESS!r}, {PORT + 1})); s.settimeout(5); n = 0\n"
            "print('bound', flush=True)\n"
            "try:\n    while n < 50: s.recv(2048); n += 1\nexcept OSError: pass\nprint(n)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    veth["started"].append(other)
    assert other.stdout.readline() == "bound\n"
    flood(veth, binaries, 50, port=PORT + 1)
    assert other.communicate(timeout=10)[0].strip() == "50"
    flood(veth, binaries, 20)
    assert wait_counted(veth, 20)["units"] == 20  # the other port's 50 were not counted
    stop(process, log)


@needs_root
@needs_clang
@needs_bpftool
def test_a_killed_launcher_is_cleaned_up_by_the_next_and_the_device_is_held(veth, binaries):
    before = steering(veth)
    first, first_log = start_receiver(veth, "xdp", binaries)
    second, second_log = start_receiver(veth, "nftables", binaries)
    assert second.wait(timeout=15) == 1
    assert "another receiver.py is running on" in second_log.read_text()
    assert xdp_of(veth)["prog"]["name"] == "xdp_drop_port"  # the refused launcher touched nothing

    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert xdp_of(veth) is not None  # SIGKILL leaves the program attached ...
    third, third_log = start_receiver(veth, "xdp", binaries)
    assert "removing a leftover xdp_drop_port" in third_log.read_text()
    assert "left by an earlier launcher" in third_log.read_text()
    stop(third, third_log)
    assert xdp_of(veth) is None and steering(veth) == before  # ... and the next launcher undoes it


@needs_root
@needs_clang
def test_a_foreign_xdp_program_is_never_replaced(veth, binaries, tmp_path):
    source = tmp_path / "other.c"
    source.write_text(
        "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n"
        'SEC("xdp") int someone_elses(struct xdp_md *ctx) { return XDP_PASS; }\n'
        'char LICENSE[] SEC("license") = "GPL";\n'
    )
    machine = run("gcc", "-dumpmachine").stdout.strip()
    run("clang", "-O2", "-target", "bpf", f"-I/usr/include/{machine}", "-c", source, "-o", tmp_path / "other.o")
    run(
        "ip",
        "-n",
        veth["rx"],
        "link",
        "set",
        "dev",
        veth["device"],
        "xdpdrv",
        "obj",
        tmp_path / "other.o",
        "sec",
        "xdp",
    )
    before = steering(veth)
    process, log = start_receiver(veth, "xdp", binaries)
    assert process.wait(timeout=15) == 1
    assert "already has XDP program someone_elses" in log.read_text()
    assert xdp_of(veth)["prog"]["name"] == "someone_elses" and steering(veth) == before


@needs_root
@pytest.mark.parametrize("delay", [0.15, 0.3, 0.6])
def test_sigterm_during_set_up_still_cleans_up(veth, binaries, delay):
    """SIGTERM at some point of start-up (before, during or just after set-up): whatever was
    done is undone."""
    before = steering(veth)
    log = veth["workdir"] / "early.log"
    process = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            veth["rx"],
            sys.executable,
            str(WORKLOAD / "receiver.py"),
            "nftables",
            "--address",
            RECEIVER_ADDRESS,
            "--port",
            str(PORT),
            "--workdir",
            str(veth["workdir"]),
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    veth["started"].append(process)
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=15)
    assert steering(veth) == before and not listening(veth, PORT), log.read_text()
    if shutil.which("nft"):
        assert "harness_xdp" not in run("ip", "netns", "exec", veth["rx"], "nft", "list", "tables").stdout


@needs_root
@needs_nft
def test_nftables_counts_every_flood_packet_and_sigterm_deletes_the_table(veth, binaries):
    before = steering(veth)
    process, log = start_receiver(veth, "nftables", binaries)
    assert process.poll() is None, log.read_text()
    assert "harness_xdp" in run("ip", "netns", "exec", veth["rx"], "nft", "list", "tables").stdout
    flood(veth, binaries, 200)
    line = wait_counted(veth, 200)
    # None reached the guard socket (RcvbufErrors stay 0 although its buffer is 4 KiB).
    assert line["units"] == 200 and line["socket_drops"] == 0
    stop(process, log)
    assert "harness_xdp" not in run("ip", "netns", "exec", veth["rx"], "nft", "list", "tables").stdout
    assert steering(veth) == before


@needs_root
def test_userspace_sink_counts_every_flood_packet(veth, binaries):
    before = steering(veth)
    process, log = start_receiver(veth, "userspace", binaries)
    assert process.poll() is None, log.read_text()
    assert "rps_cpus" in steering(veth) and steering(veth) != before  # RPS to the receiver's CPUs
    flood(veth, binaries, 200)
    line = wait_counted(veth, 200)
    assert line["units"] == 200 and line["socket_drops"] == 0 and line["sink_cpu_seconds"] > 0
    text = stop(process, log)
    assert "udp_sink: 200 packets, 12800 bytes" in text
    assert steering(veth) == before and not listening(veth, PORT)


@needs_root
@needs_nft
def test_receiver_cpu_is_measured_over_the_flood_window(veth, binaries):
    """A half-second flood some seconds after the launcher is ready: the window receiver.py
    reports is the flood's, not the time since it started, and it saw one flood."""
    process, log = start_receiver(veth, "nftables", binaries)
    time.sleep(1.0)
    sent = run("ip", "netns", "exec", veth["tx"], binaries / "udp_flood", RECEIVER_ADDRESS, PORT, "--seconds", 0.5)
    assert sent.returncode == 0
    line = json.loads(result(veth, "receiver_cpu").stdout)
    assert line["floods_seen"] == 1 and 0.45 <= line["flood_seconds_seen"] <= 0.8
    assert 0 < line["receiver_cpu_seconds"] <= line["flood_seconds_seen"] * len(line["receiver_cpus"])
    assert line["value"] == pytest.approx(line["receiver_cpu_seconds"] / line["units"], rel=0.01)
    assert 0 < line["units"] <= json.loads(sent.stdout.splitlines()[0])["units"]
    stop(process, log)
