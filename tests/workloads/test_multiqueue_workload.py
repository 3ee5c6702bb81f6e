"""The multiqueue workload: iperf_load.py turns iperf3 --json into json_values (seconds per
GiB for TCP, seconds per million delivered datagrams for udp64) and rejects what is not a
throughput; cpu_spread.py reads /proc/softirqs and /proc/net/softnet_stat into per-CPU
deltas; iperf_server.py reports the server side's spread when stopped. The fixtures in
experiments/multiqueue/testdata are real iperf3 3.12 outputs captured between two lab hosts;
the end-to-end tests run real iperf3 over loopback for a second.

    .venv/bin/pytest tests/workloads/test_multiqueue_workload.py -x -q
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from harness.run import spec as spec_module
from harness.run.collect import parse_json_values
from tests.builders import ROOT

EXPERIMENT = ROOT / "experiments" / "multiqueue.yaml"
WORKLOAD = EXPERIMENT.with_suffix("")
TESTDATA = WORKLOAD / "testdata"
sys.path.insert(0, str(WORKLOAD))

import cpu_spread  # noqa: E402
import iperf_load  # noqa: E402
import iperf_server  # noqa: E402
from cpu_spread import CounterError  # noqa: E402
from iperf_load import LoadError  # noqa: E402

needs_iperf3 = pytest.mark.skipif(
    shutil.which("iperf3") is None, reason="iperf3 is not installed (apt-get install iperf3)"
)


def fixture(name):
    return (TESTDATA / name).read_text()


# --- iperf3's JSON -> json_values -------------------------------------------------------


def test_tcp_report_gives_seconds_per_gib_received():
    record = iperf_load.parse_report(fixture("iperf3-tcp-2streams.json"), "tcp")
    # end.sum_received of the fixture: 1767112704 bytes in 2.003164 s.
    assert record["value"] == pytest.approx(2.003164 / (1767112704 / 2**30))
    assert record["units"] == 1767112704 and record["errors"] == 0
    assert record["streams"] == 2 and record["retransmits"] == 396
    assert record["gbit_per_second"] == pytest.approx(1767112704 * 8 / 2.003164 / 1e9, rel=1e-4)
    parsed = parse_json_values(json.dumps(record), "load.out")
    assert parsed.seconds == (record["value"],) and parsed.units == 1767112704 and parsed.errors == 0


def test_udp64_report_gives_seconds_per_million_delivered_datagrams():
    record = iperf_load.parse_report(fixture("iperf3-udp64-1stream.json"), "udp64")
    # 11315072 bytes of 64-byte datagrams arrived; iperf3's own sequence count agrees:
    # 241029 seen, 64231 of them missing.
    assert record["units"] == 11315072 // 64 == 241029 - 64231
    assert record["value"] == pytest.approx(2.001753 / (176798 / 1e6))
    assert record["sent_packets"] == 241270 and record["lost_packets"] == 64231
    assert record["lost_percent"] == pytest.approx(100 * 64231 / 241270, abs=1e-3)
    # Loss at saturation is kept in the line, not counted as failed units.
    assert record["errors"] == 0
    assert parse_json_values(json.dumps(record), "load.out").units == 176798


def test_iperf3_error_is_passed_on():
    with pytest.raises(LoadError, match="iperf3: unable to connect to server: Connection refused"):
        iperf_load.parse_report(fixture("iperf3-refused.json"), "tcp")


def test_a_report_of_the_other_protocol_is_refused():
    with pytest.raises(LoadError, match="ran a TCP test, not the UDP test of mode udp64"):
        iperf_load.parse_report(fixture("iperf3-tcp-2streams.json"), "udp64")
    with pytest.raises(LoadError, match="ran a UDP test, not the TCP test of mode tcp"):
        iperf_load.parse_report(fixture("iperf3-udp64-1stream.json"), "tcp")


def edited(name, change):
    report = json.loads(fixture(name))
    change(report)
    return json.dumps(report)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "printed no JSON"),
        ('{"start": {', "printed no JSON"),
        ("[1, 2]", "not an object"),
        (edited("iperf3-tcp-2streams.json", lambda r: r["end"].pop("sum_received")), "no end.sum_received"),
        (edited("iperf3-tcp-2streams.json", lambda r: r["end"]["sum_received"].update(bytes=0)), "got 0 bytes"),
        (edited("iperf3-tcp-2streams.json", lambda r: r["end"]["sum_received"].update(seconds=0)), "in 0 s"),
    ],
)
def test_reports_without_a_throughput_are_refused(text, message):
    with pytest.raises(LoadError, match=message):
        iperf_load.parse_report(text, "tcp")


def test_udp_reports_must_be_64_byte_datagrams_and_deliver_one():
    bigger = edited("iperf3-udp64-1stream.json", lambda r: r["start"]["test_start"].update(blksize=1448))
    with pytest.raises(LoadError, match="1448-byte datagrams, not 64"):
        iperf_load.parse_report(bigger, "udp64")
    crumbs = edited("iperf3-udp64-1stream.json", lambda r: r["end"]["sum_received"].update(bytes=63))
    with pytest.raises(LoadError, match="no whole datagram arrived"):
        iperf_load.parse_report(crumbs, "udp64")


def test_iperf3_arguments_per_mode():
    tcp = iperf_load.iperf_argv("iperf3", "198.18.0.11", 18501, "tcp", 4, 10, 1)
    assert tcp[tcp.index("--parallel") + 1] == "4" and tcp[tcp.index("--omit") + 1] == "1"
    assert "--udp" not in tcp
    udp = iperf_load.iperf_argv("iperf3", "198.18.0.11", 18501, "udp64", 1, 3, 1)
    assert udp[udp.index("--length") + 1] == "64" and udp[udp.index("--bitrate") + 1] == "0"
    assert "--omit" not in udp  # iperf3 3.12 counts omitted datagrams as lost


# --- the counters ------------------------------------------------------------------------

SOFTIRQS = """                    CPU0       CPU2
          HI:          1          0
      NET_TX:       2111       3120
      NET_RX:   71460446   48828694
"""
# 15 columns as Linux 6.x writes them; the 13th is the CPU's number.
SOFTNET = (
    "04f17503 00000001 00000004 00000000 00000000 00000000 00000000 00000000 00000000 00000019 00000000 "
    "00000000 00000000 00000000 00000000\n"
    "034d95c1 00000000 00000004 00000000 00000000 00000000 00000000 00000000 00000000 000001c3 00000002 "
    "00000000 00000002 00000000 00000000\n"
)


def test_softirqs_are_read_per_cpu_by_the_header_numbers():
    cpus, counts = cpu_spread.parse_softirqs(SOFTIRQS)
    assert cpus == [0, 2]  # CPU1 offline: the header, not the position, names the CPU
    assert counts["NET_RX"] == [71460446, 48828694] and counts["NET_TX"] == [2111, 3120]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no 'CPU0 CPU1 ...' header"),
        ("    CPU0  CPU1\n  NET_RX: 5\n  NET_TX: 1 2\n", "'NET_RX' has no count for each of 2 CPUs"),
        ("    CPU0\n  NET_TX: 1\n", "no NET_RX line"),
    ],
)
def test_softirqs_in_another_format_are_refused(text, message):
    with pytest.raises(CounterError, match=message):
        cpu_spread.parse_softirqs(text)


def test_softnet_stat_columns_and_cpu_numbers():
    per_cpu = cpu_spread.parse_softnet_stat(SOFTNET)
    assert sorted(per_cpu) == [0, 2]
    assert per_cpu[0] == {
        "processed": 0x04F17503,
        "dropped": 1,
        "time_squeeze": 4,
        "received_rps": 0x19,
        "flow_limit": 0,
    }
    assert per_cpu[2]["received_rps"] == 0x1C3 and per_cpu[2]["flow_limit"] == 2
    # Kernels before the CPU column: lines follow the CPUs in order.
    older = "\n".join(" ".join(line.split()[:11]) for line in SOFTNET.splitlines())
    assert sorted(cpu_spread.parse_softnet_stat(older)) == [0, 1]


@pytest.mark.parametrize(
    "text, message", [("", "empty"), ("0000000a 0000000b\n", "has 2 columns"), ("zz " * 15, "not hex numbers")]
)
def test_softnet_stat_in_another_format_is_refused(text, message):
    with pytest.raises(CounterError, match=message):
        cpu_spread.parse_softnet_stat(text)


def counters(time_, net_rx, processed, received_rps=(0, 0)):
    return {
        "time": time_,
        "cpus": [0, 1],
        "softirqs": {"NET_RX": list(net_rx), "NET_TX": [0, 0]},
        "softnet": {
            cpu: {
                "processed": processed[cpu],
                "dropped": 0,
                "time_squeeze": 0,
                "received_rps": received_rps[cpu],
                "flow_limit": 0,
            }
            for cpu in (0, 1)
        },
    }


def test_spread_gives_per_cpu_deltas_and_shares():
    before = counters(10.0, (100, 200), (1000, 50), (0, 0))
    after = counters(12.5, (400, 300), (1900, 350), (0, 7))
    line = cpu_spread.spread(before, after, "load")
    assert line["window_seconds"] == 2.5 and line["side"] == "load" and line["cpus"] == [0, 1]
    assert line["net_rx"] == [300, 100] and line["net_rx_share"] == [0.75, 0.25] and line["net_rx_max_share"] == 0.75
    assert line["processed"] == [900, 300] and line["processed_max_share"] == 0.75
    assert line["received_rps"] == [0, 7] and line["dropped"] == [0, 0]
    text = cpu_spread.spread_line(before, after, "server")
    assert text.startswith("softirq: {") and json.loads(text[len("softirq: ") :])["side"] == "server"


def test_spread_of_nothing_has_no_shares():
    still = counters(1.0, (5, 5), (7, 7))
    line = cpu_spread.spread(still, dict(still, time=2.0), "load")
    assert line["net_rx_share"] == [None, None] and line["net_rx_max_share"] is None


def test_spread_refuses_a_changed_cpu_set():
    after = counters(2.0, (5, 5), (7, 7))
    after["cpus"] = [0]
    with pytest.raises(CounterError, match="CPUs in /proc/softirqs changed"):
        cpu_spread.spread(counters(1.0, (5, 5), (7, 7)), after, "load")


def test_this_machines_counters_read():
    now = cpu_spread.snapshot()
    assert now["cpus"] == sorted(now["softnet"])  # both files list the online CPUs
    assert all(count >= 0 for count in now["softirqs"]["NET_RX"])


def test_udp_errors_from_snmp():
    snmp = "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdp: 10 0 52630 4 52630 0\n"
    assert iperf_server.udp_errors(snmp) == {"udp_in_errors": 52630, "udp_rcvbuf_errors": 52630}
    assert iperf_server.udp_errors("Ip: Forwarding\nIp: 1\n") == {}


# --- the scripts, end to end over loopback -------------------------------------------------


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_load(*args, timeout=60):
    return subprocess.run(
        [sys.executable, str(WORKLOAD / "iperf_load.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def softirq_lines(text):
    return [json.loads(line[len("softirq: ") :]) for line in text.splitlines() if line.startswith("softirq: ")]


@pytest.fixture
def server(tmp_path):
    """iperf_server.py on loopback in its own session, as the harness starts it; stopped by
    SIGTERM to its group. Yields (port, process, log path)."""
    port, log = free_port(), tmp_path / "server.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, str(WORKLOAD / "iperf_server.py"), "--bind", "127.0.0.1", "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert process.poll() is None, log.read_text()
        time.sleep(0.05)
    else:
        pytest.fail(f"iperf_server.py did not listen on {port}: {log.read_text()}")
    yield port, process, log
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@needs_iperf3
@pytest.mark.parametrize("mode", ["tcp", "udp64"])
def test_load_and_server_over_loopback(server, mode):
    port, process, log = server
    done = run_load(
        "--host", "127.0.0.1", "--port", str(port), "--mode", mode, "--streams", "2", "--seconds", "1", "--omit", "0"
    )
    assert done.returncode == 0, done.stderr
    parsed = parse_json_values(done.stdout, "load.out")
    assert len(parsed.seconds) == 1 and parsed.seconds[0] > 0 and parsed.units > 0 and parsed.errors == 0
    assert json.loads(done.stdout)["mode"] == mode and json.loads(done.stdout)["streams"] == 2
    [load_line] = softirq_lines(done.stderr)
    assert done.stderr.count("\n") == 1  # the softirq line and nothing else
    assert load_line["side"] == "load" and len(load_line["net_rx"]) == len(load_line["cpus"])
    assert 0.9 <= load_line["window_seconds"] < 30
    assert sum(load_line["processed"]) > 0  # loopback traffic goes through the CPUs' backlogs
    os.killpg(process.pid, signal.SIGTERM)  # as the harness stops a server
    assert process.wait(timeout=15) == 0
    [server_line] = softirq_lines(log.read_text())
    assert server_line["side"] == "server" and sum(server_line["processed"]) >= sum(load_line["processed"])
    assert "udp_rcvbuf_errors" in server_line


@needs_iperf3
def test_load_without_a_server_fails_with_iperf3s_reason():
    done = run_load("--host", "127.0.0.1", "--port", str(free_port()), "--mode", "tcp", "--seconds", "1")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == "iperf_load: iperf3: unable to connect to server: Connection refused"


def test_load_without_iperf3_names_the_package():
    done = run_load("--host", "127.0.0.1", "--port", "5201", "--mode", "tcp", "--iperf3", "/nonexistent/iperf3")
    assert done.returncode == 1 and done.stdout == ""
    assert "/nonexistent/iperf3 not found: install iperf3" in done.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mode", "udp"], "invalid choice: 'udp'"),
        (["--mode", "tcp", "--streams", "0"], "0 is not a positive integer"),
    ],
)
def test_load_rejects_bad_arguments(args, message):
    done = run_load("--host", "127.0.0.1", "--port", "5201", *args)
    assert done.returncode == 2 and message in done.stderr


@needs_iperf3
def test_server_that_cannot_listen_exits_1_and_says_so(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, str(WORKLOAD / "iperf_server.py"), "--bind", "127.0.0.1", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 1
    assert "iperf_server: iperf3 exited 1 before it was stopped" in done.stderr
    assert "Address already in use" in done.stdout + done.stderr


# --- the experiment file --------------------------------------------------------------------


def test_experiment_sets_only_what_a_lab_host_can_set():
    spec = spec_module.load(EXPERIMENT)
    fields = {name: variant.net.model_dump(exclude_none=True) for name, variant in spec.variants.items()}
    assert fields["single_queue"] == {"channels": 1, "rps_cpus": "0", "xps_cpus": "0", "rps_flow_cnt": 0}
    assert fields["multi_queue_steered"] == {"channels": 2, "rps_cpus": "3", "xps_cpus": "3", "rps_flow_cnt": 16384}
    # rps_sock_flow_entries is absent in a lab namespace; a veth has no IRQs for irq_cpus.
    assert spec.link.queues >= max(net["channels"] for net in fields.values())
    assert spec.claim.ceiling == "cpus" and spec.requires.cpus == 2
