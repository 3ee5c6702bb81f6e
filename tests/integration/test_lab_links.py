"""Link properties of lab hosts against the real kernel: MTU, a TBF rate limit, nftables loss
with SSH exempt, and delay through harness/hosts/delay_proxy.py where the kernel has no netem.

Traffic is bounded: one 6 MB transfer per measurement, 2000 datagrams, a few echo round
trips, all between lab namespaces (198.18.0.0/15), each program with its own timeout.
tests/unit/test_link_properties.py checks the properties' values without a lab.
"""

import contextlib
import json
import os
import select
import subprocess
import time

import pytest

from harness.hosts import lab as lab_module
from harness.hosts.lab import LinkProperties, lab_down, lab_status, lab_up
from harness.hosts.lab import links as lab_links
from harness.hosts.lab import system as lab_system
from harness.hosts.linkdelay import start_delay_proxy
from harness.hosts.remote import HostSession
from tests.builders import run_harness

PID = os.getpid()
RATE_MBIT = 50.0
TRANSFER_BYTES = 6 * 2**20
LOSS_PERCENT = 20.0
DATAGRAMS = 2000
DELAY_MS = 5.0

SINK = r"""
import json, socket, sys, time
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
server.settimeout(15)
print("ready", flush=True)
conn, _ = server.accept()
conn.settimeout(15)
received, first = 0, None
while chunk := conn.recv(1 << 20):
    first = first or time.monotonic()
    received += len(chunk)
print(json.dumps({"bytes": received, "seconds": time.monotonic() - first}))
"""

SEND = r"""
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=15) as conn:
    conn.sendall(b"x" * int(sys.argv[3]))
    conn.shutdown(socket.SHUT_WR)
    conn.recv(1)
"""

UDP_COUNT = r"""
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: no drop for want of buffer
sock.bind((sys.argv[1], int(sys.argv[2])))
sock.settimeout(10)  # for the first datagram; then 1 s of silence ends the count
print("ready", flush=True)
seen = set()
try:
    while len(seen) < int(sys.argv[3]):
        seen.add(int(sock.recv(2048).split(b" ")[0]))
        sock.settimeout(1)
except socket.timeout:
    pass
print(len(seen))
"""

UDP_SEND = r"""
import socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for number in range(int(sys.argv[3])):
    sock.sendto(b"%d " % number + b"x" * 200, (sys.argv[1], int(sys.argv[2])))
    if number % 100 == 99:
        time.sleep(0.002)
"""

ECHO = r"""
import socket, sys, threading, time
address = (sys.argv[1], int(sys.argv[2]))
def serve_tcp(server):
    while True:
        conn, _ = server.accept()
        def echo(conn=conn):
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)
        threading.Thread(target=echo, daemon=True).start()
def serve_udp(sock):
    while True:
        data, peer = sock.recvfrom(65536)
        sock.sendto(data, peer)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(address)
threading.Thread(target=serve_tcp, args=(socket.create_server(address),), daemon=True).start()
threading.Thread(target=serve_udp, args=(udp,), daemon=True).start()
print("ready", flush=True)
time.sleep(float(sys.argv[3]))  # a bounded life, whatever happens to the test
"""

ROUND_TRIPS = r"""
import json, socket, sys, time
def tcp(host, port):
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(b"p" * 100)
        got = b""
        while len(got) < 100:
            got += conn.recv(100)
    return (time.monotonic() - start) * 1000
def udp(host, port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        start = time.monotonic()
        sock.sendto(b"p" * 100, (host, int(port)))
        sock.recvfrom(200)
    return (time.monotonic() - start) * 1000
proxy, direct = sys.argv[1].split(":"), sys.argv[2].split(":")
print(json.dumps({"proxy_tcp": [tcp(*proxy) for _ in range(5)], "direct_tcp": [tcp(*direct) for _ in range(5)],
                  "proxy_udp": [udp(*proxy) for _ in range(3)]}))
"""


# --- helpers ----------------------------------------------------------------------


def python_in(namespace, script, *args, timeout=30):
    """Run a python3 script inside a lab namespace; its stdout."""
    result = subprocess.run(
        ["ip", "netns", "exec", namespace, "python3", "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@contextlib.contextmanager
def server_in(namespace, script, *args):
    """A python3 server in a namespace that prints "ready" once it listens; killed at the end."""
    process = subprocess.Popen(
        ["ip", "netns", "exec", namespace, "python3", "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        readable, _, _ = select.select([process.stdout], [], [], 10)
        line = process.stdout.readline() if readable else ""
        assert line.strip() == "ready", f"server did not start: {line!r}"
        yield process
    finally:
        if process.poll() is None:
            process.kill()  # the process this test started, by its pid
        process.communicate(timeout=10)


def throughput_mbit(lab):
    """One bounded TCP transfer from host 1 to host 2, measured where it arrives."""
    sender, receiver = lab.hosts[0], lab.hosts[1]
    with server_in(receiver.namespace, SINK, receiver.address, 5001) as sink:
        python_in(sender.namespace, SEND, receiver.address, 5001, TRANSFER_BYTES)
        result = json.loads(sink.communicate(timeout=20)[0])
    assert result["bytes"] == TRANSFER_BYTES
    return result["bytes"] * 8 / result["seconds"] / 1e6


def ip_link(namespace, device):
    argv = ["ip"] + (["-n", namespace] if namespace else []) + ["-j", "-d", "link", "show", device]
    return json.loads(subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout)[0]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("links")


# --- MTU and rate -------------------------------------------------------------------


@pytest.fixture(scope="module")
def shaped_lab(base_dir, make_lab):
    return make_lab(f"lr{PID}", base_dir, hosts=2, link=LinkProperties(mtu=9000, rate_mbit=RATE_MBIT))


@pytest.mark.integration
def test_mtu_is_set_on_both_ends_of_every_veth(shaped_lab):
    for host in shaped_lab.hosts:
        assert ip_link(host.namespace, "eth0")["mtu"] == 9000
        assert ip_link(None, host.veth)["mtu"] == 9000
        with HostSession(shaped_lab.harness_host(host)) as session:
            assert session.run(["cat", "/sys/class/net/eth0/mtu"]).stdout.strip() == "9000"
    assert ip_link(None, shaped_lab.bridge)["mtu"] == 9000  # the bridge follows its ports


@pytest.mark.integration
def test_a_rate_limit_holds_a_transfer_near_the_rate_and_lab_up_without_it_rebuilds(shaped_lab, base_dir):
    status = lab_status(shaped_lab.name, base_dir)
    assert status.healthy, status.problems
    assert [(host.link.rate_mbit, host.link.rate_mechanism, host.link.qdisc) for host in status.hosts] == [
        (RATE_MBIT, "tbf", "tbf")
    ] * 2
    limited = throughput_mbit(shaped_lab)
    print(f"\nthroughput with a {RATE_MBIT:g} Mbit/s limit: {limited:.1f} Mbit/s")
    assert 0.5 * RATE_MBIT < limited < 1.3 * RATE_MBIT

    unlimited_lab = lab_up(shaped_lab.name, hosts=2, base_dir=base_dir, link=LinkProperties(mtu=9000))
    assert [host.sshd_pid for host in unlimited_lab.hosts] != [host.sshd_pid for host in shaped_lab.hosts]
    status = lab_status(shaped_lab.name, base_dir)
    assert status.healthy, status.problems
    assert [(host.link.rate_mbit, host.link.qdisc, host.link.mtu) for host in status.hosts] == [
        (None, "noqueue", 9000)
    ] * 2
    unlimited = throughput_mbit(unlimited_lab)
    print(f"throughput without a limit: {unlimited:.1f} Mbit/s")
    assert unlimited > 4 * RATE_MBIT


# --- loss -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lossy_lab(base_dir, make_lab):
    return make_lab(f"ll{PID}", base_dir, hosts=2, link=LinkProperties(loss_percent=LOSS_PERCENT))


@pytest.mark.integration
def test_loss_drops_about_that_share_of_datagrams_and_ssh_stays_reliable(lossy_lab, base_dir):
    status = lab_status(lossy_lab.name, base_dir)
    assert status.healthy, status.problems
    for host in status.hosts:
        assert (host.link.loss_percent, host.link.loss_mechanism, host.link.ssh_exempt, host.link.gso_max_segs) == (
            LOSS_PERCENT,
            "nftables",
            True,
            1,
        )
    sender, receiver = lossy_lab.hosts
    with server_in(receiver.namespace, UDP_COUNT, receiver.address, 9000, DATAGRAMS) as counter:
        python_in(sender.namespace, UDP_SEND, receiver.address, 9000, DATAGRAMS)
        received = int(counter.communicate(timeout=20)[0])
    lost = 1 - received / DATAGRAMS
    print(f"\n{DATAGRAMS} datagrams at {LOSS_PERCENT:g}% loss: {received} arrived, {lost:.1%} lost")
    assert 0.10 <= lost <= 0.30

    for host in lossy_lab.hosts:  # new SSH connections and many commands, none lost
        for _ in range(3):
            with HostSession(lossy_lab.harness_host(host)) as session:
                assert [session.run(["hostname"]).stdout.strip() for _ in range(5)] == [host.name] * 5


# --- delay ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def delayed_lab(base_dir, request):
    name = f"ld{PID}"
    request.addfinalizer(lambda: lab_down(name, base_dir))
    made = run_harness(
        "lab",
        "up",
        "--name",
        name,
        "--hosts",
        "2",
        "--queues",
        "1",
        "--delay",
        f"{DELAY_MS:g}ms",
        "--base-dir",
        base_dir,
    )
    assert (made.returncode, made.stderr) == (0, ""), made.stderr
    lab = lab_up(name, hosts=2, base_dir=base_dir, link=LinkProperties(queues=1, delay_ms=DELAY_MS))
    for host in lab.hosts:  # the lab that the command line built was kept, not rebuilt
        assert f"{host.name:<14} {host.address:<15} [{host.group}]  sshd pid {host.sshd_pid}" in made.stdout
    return lab


@pytest.mark.integration
def test_status_reports_each_mechanism(delayed_lab, base_dir):
    netem = delayed_lab.link_mechanisms.delay == "netem"
    expected = "netem" if netem else "proxy"
    assert delayed_lab.link_mechanisms == lab_module.LinkMechanisms(delay=expected)
    state = json.loads(delayed_lab.state_file.read_text())
    assert state["link"]["delay"]["mechanism"] == expected
    if not netem:
        assert state["link"]["delay"]["in_link"] is False
        assert state["link"]["delay"]["program"] == str(lab_links.DELAY_PROXY_PROGRAM)
        assert state["link"]["delay"]["why"].startswith("netem unavailable (")
    assert f"delay {DELAY_MS:g} ms ({expected}" in delayed_lab.inventory.read_text().splitlines()[2]

    shown = run_harness("lab", "status", "--name", delayed_lab.name, "--base-dir", base_dir)
    assert (shown.returncode, shown.stderr) == (0, "")
    for line in shown.stdout.splitlines()[1:]:
        assert line.endswith(f"eth0@{line.split()[0]} UP rx 1 tx 1  mtu 1500, delay {DELAY_MS:g} ms ({expected})")


@pytest.mark.integration
def test_the_delay_proxy_adds_the_delay_each_way_and_stops_on_sigterm(delayed_lab, tmp_path):
    server, client = delayed_lab.hosts
    with (
        server_in(server.namespace, ECHO, server.address, 7001, 60),
        HostSession(delayed_lab.harness_host(server)) as session,
    ):
        proxy = start_delay_proxy(
            session, f"{server.address}:7000", f"{server.address}:7001", DELAY_MS, str(tmp_path), udp=True
        )
        try:
            times = json.loads(
                python_in(client.namespace, ROUND_TRIPS, f"{server.address}:7000", f"{server.address}:7001")
            )
        finally:
            started = time.monotonic()
            session.stop(proxy, grace=5)
            stop_seconds = time.monotonic() - started
    log = (tmp_path / "delay-proxy-7000.log").read_text()
    proxy_tcp, direct_tcp, proxy_udp = (min(times[key]) for key in ("proxy_tcp", "direct_tcp", "proxy_udp"))
    print(
        f"\nround trip (connect + 100 B echo): direct {direct_tcp:.2f} ms, through the {DELAY_MS:g} ms proxy "
        f"{proxy_tcp:.2f} ms; UDP through the proxy {proxy_udp:.2f} ms; stopped in {stop_seconds:.2f} s"
    )
    assert proxy_tcp >= 2 * DELAY_MS and proxy_udp >= 2 * DELAY_MS
    assert proxy_tcp - direct_tcp >= 1.8 * DELAY_MS
    if delayed_lab.link_mechanisms.delay == "proxy":  # no netem in the link: the direct path is fast
        assert direct_tcp < DELAY_MS / 2
    assert "listening on" in log and "(tcp and udp)" in log
    assert "stopped on SIGTERM after 5 tcp connections, 0 datagrams dropped" in log  # not KILLed
    # The proxy exits within milliseconds; stop() also waits until the orphan is reaped,
    # which this machine's init does only every second or two. Under the 5 s grace: no KILL.
    assert stop_seconds < 5
    assert not lab_system.alive(proxy.pid)


def test_lab_up_takes_the_link_from_an_experiment_and_flags_win(experiment_copy, tmp_path):
    from tests.builders import run_harness

    text = experiment_copy.read_text().replace(
        "workload: sendfile\n", "workload: sendfile\nlink:\n  queues: 4\n  rate_mbit: 200\n  mtu: 1400\n"
    )
    experiment_copy.write_text(text)
    name = f"e{os.getpid() % 100000}"
    base = tmp_path / "labs"
    try:
        result = run_harness(
            "lab",
            "up",
            "--name",
            name,
            "--hosts",
            "1",
            "--experiment",
            experiment_copy,
            "--mtu",
            "9000",
            "--base-dir",
            base,
        )
        assert result.returncode == 0, result.stderr
        assert "link: 4 queues, mtu 9000, rate 200 Mbit/s (tbf)" in result.stdout
        device = subprocess.run(
            ["ip", "netns", "exec", f"{name}-h1", "ip", "-o", "link", "show", "eth0"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "mtu 9000" in device and "tbf" in device
    finally:
        run_harness("lab", "down", "--name", name, "--base-dir", base)
