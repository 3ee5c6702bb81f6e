"""Tests for the batch_rpc workload: the real server and client over loopback, a deliberately
wrong server to prove the client counts errors, and the experiment file's own commands.

    .venv/bin/pytest tests/workloads/test_batch_rpc_workload.py -x -q
"""

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import yaml

from tests.builders import ROOT

WORKLOAD = ROOT / "experiments" / "batch_rpc"
EXPERIMENT = WORKLOAD.parent / "batch_rpc.yaml"
sys.path.insert(0, str(WORKLOAD))

from rpc_frame import (  # noqa: E402  (after the sys.path line above)
    BATCH_CALL,
    BATCH_ENTRY,
    BATCH_REPLY,
    BATCH_RESULT,
    CALL,
    CALL_ARGS,
    COUNT,
    ERROR,
    HEADER,
    REPLY,
    RESULT,
    VERSION,
    FrameReader,
    add,
    frame,
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def server():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(WORKLOAD / "rpc_server.py"), "--bind", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_listening(port, process)
        yield port, process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def run_client(port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(WORKLOAD / "rpc_client.py"), "--port", str(port), "--timeout", "10", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("batch", [1, 16, 7])
def test_client_makes_every_call_and_reports_per_repeat(server, batch):
    port, _ = server
    result = run_client(port, "--calls", "500", "--batch", str(batch), "--repeats", "3")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    *repeats, cpu = json_lines(result.stdout)
    assert len(repeats) == 3
    for repeat in repeats:
        assert set(repeat) == {"value", "units", "errors"}
        assert repeat["units"] == 500 and repeat["errors"] == 0
        assert 0 < repeat["value"] < 0.1
    assert set(cpu) == {"client_cpu_seconds"} and cpu["client_cpu_seconds"] >= 0


def test_frames_split_into_single_bytes_are_reassembled(server):
    port, _ = server
    calls = [(7, 1, 2), (8, -5, 3), (9, 2**62, 2**62)]  # the last one wraps like a native add
    request = COUNT.pack(len(calls)) + b"".join(BATCH_ENTRY.pack(*call) for call in calls)
    data = frame(BATCH_CALL, 41, request) + frame(CALL, 42, CALL_ARGS.pack(40, 2))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(data)):
            sock.sendall(data[i : i + 1])
        reader = FrameReader(sock)
        message_type, seq, payload = reader.read()
        assert (message_type, seq) == (BATCH_REPLY, 41)
        assert COUNT.unpack_from(payload)[0] == 3
        results = [BATCH_RESULT.unpack_from(payload, COUNT.size + i * BATCH_RESULT.size) for i in range(3)]
        assert results == [(7, 3), (8, -2), (9, -(2**63))]
        assert reader.read() == (REPLY, 42, RESULT.pack(42))


def test_bad_magic_gets_an_error_frame_and_the_server_keeps_serving(server):
    port, process = server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(HEADER.pack(0xDEADBEEF, VERSION, CALL, CALL_ARGS.size, 1) + CALL_ARGS.pack(1, 2))
        message_type, _, payload = FrameReader(sock).read()
        assert message_type == ERROR and b"bad magic 0xdeadbeef" in payload
        assert sock.recv(1) == b""  # and the connection is closed
    result = run_client(port, "--calls", "10")
    assert result.returncode == 0 and json_lines(result.stdout)[0]["errors"] == 0


def test_sigterm_exits_cleanly_with_a_connection_open(server):
    port, process = server
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0


class WrongServer:
    """Answers with deliberate faults so the client's checks can be seen to fire:
    every third single call gets a wrong sum, call 5 gets the wrong sequence number,
    and in a batch every fourth result is off by one."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            reader = FrameReader(conn)
            while (request := reader.read()) is not None:
                message_type, seq, payload = request
                if message_type == CALL:
                    a, b = CALL_ARGS.unpack(payload)
                    total = add(a, b) + (1 if seq % 3 == 0 else 0)
                    conn.sendall(frame(REPLY, seq + 1 if seq == 5 else seq, RESULT.pack(total)))
                else:
                    (count,) = COUNT.unpack_from(payload)
                    out = [COUNT.pack(count)]
                    for i in range(count):
                        call_id, a, b = BATCH_ENTRY.unpack_from(payload, COUNT.size + i * BATCH_ENTRY.size)
                        out.append(BATCH_RESULT.pack(call_id, add(a, b) + (1 if i % 4 == 3 else 0)))
                    conn.sendall(frame(BATCH_REPLY, seq, b"".join(out)))


def test_client_counts_wrong_replies_as_errors():
    single = run_client(WrongServer().port, "--calls", "30", "--batch", "1")
    assert single.returncode == 0, single.stderr
    # calls 1..30: ten multiples of 3 carry a wrong sum; call 5 carries a wrong sequence number
    repeat = json_lines(single.stdout)[0]
    assert (repeat["units"], repeat["errors"]) == (30, 11)

    batched = run_client(WrongServer().port, "--calls", "30", "--batch", "8")
    assert batched.returncode == 0, batched.stderr
    # batches of 8, 8, 8, 6: two wrong results in each full batch and one in the last
    assert json_lines(batched.stdout)[0]["errors"] == 7


def test_max_seconds_ends_a_repeat_early_and_reports_the_calls_made(server):
    port, _ = server
    result = run_client(port, "--calls", "100000000", "--batch", "4", "--max-seconds", "0.3")
    assert result.returncode == 0, result.stderr
    repeat = json_lines(result.stdout)[0]
    assert 0 < repeat["units"] < 100000000 and repeat["units"] % 4 == 0
    assert repeat["errors"] == 0


def test_a_closed_server_fails_the_client_with_a_message():
    result = run_client(free_port(), "--calls", "10")
    assert result.returncode == 1
    assert result.stdout == "" and "cannot connect" in result.stderr


# The experiment file's own commands, run here with small counts; placeholders as the harness fills them.
def render(argv: list[str], values: dict) -> list[str]:
    return [re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), arg) for arg in argv]


@pytest.mark.parametrize("variant", ["python_single", "python_batched", "redis_single", "redis_pipelined"])
def test_experiment_commands_run_on_loopback(variant, tmp_path):
    spec = yaml.safe_load(EXPERIMENT.read_text())
    if variant.startswith("redis") and not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    values = {
        **spec["parameters"],
        "calls": 300,
        "batched_calls": 3000,
        "batch": 16,
        "workload": WORKLOAD,
        "workdir": tmp_path,
        "port": port,
        "server_address": "127.0.0.1",
    }
    server_argv = render(spec["variants"][variant]["server"]["command"], values)
    load = spec["variants"][variant]["load"]
    process = subprocess.Popen(server_argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(port, process)
        result = subprocess.run(
            render(load["command"], values), capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0, process.stderr.read()
    assert result.returncode == 0, result.stderr
    if load["parser"] == "json_values":
        *repeats, cpu = json_lines(result.stdout)
        assert len(repeats) == spec["parameters"]["repeats_per_run"]
        assert all(
            r["errors"] == 0 and r["units"] == values["calls" if variant == "python_single" else "batched_calls"]
            for r in repeats
        )
    else:
        header, row = result.stdout.splitlines()
        assert header.startswith('"test","rps",')
        assert row.startswith('"PING_MBULK","') and float(row.split(",")[1].strip('"')) > 0
