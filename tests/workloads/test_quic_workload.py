"""Tests of the QUIC workload: the app in-process, then real servers and the real client.

    .venv/bin/pytest tests/workloads/test_quic_workload.py -x -q

The integration tests build a venv with the exact requirements of experiments/quic.yaml
(`provision.pip`), as provisioning does, start serve.py over HTTP/2 and HTTP/3 on loopback and
run client.py against it; its output must be what the harness's json_values parser reads.
"""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from tests.builders import ROOT

HERE = ROOT / "experiments" / "quic"
EXPERIMENT = HERE.parent / "quic.yaml"
sys.path.insert(0, str(HERE))

import app as quic_app  # noqa: E402


def call_app(method: str, path: str) -> tuple[int, dict, bytes]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": []}
    asyncio.run(quic_app.app(scope, receive, send))
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"]


def test_app_returns_exactly_n_bytes():
    status, headers, body = call_app("GET", "/bytes/1000")
    assert status == 200
    assert len(body) == 1000 and headers[b"content-length"] == b"1000"
    assert body[:3] == b"\x00\x01\x02"  # the pattern, not a run of one byte
    assert call_app("GET", "/bytes/0")[2] == b""


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/bytes/abc", 404),
        ("GET", "/bytes/", 404),
        ("GET", "/other/10", 404),
        ("GET", f"/bytes/{quic_app.MAX_BODY_BYTES + 1}", 404),
        ("POST", "/bytes/10", 405),
    ],
)
def test_app_refuses_what_it_does_not_serve(method, path, status):
    got, _, body = call_app(method, path)
    assert (got, body) == (status, b"")


# --- real servers, real client ------------------------------------------------------------------


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory) -> str:
    requirements = yaml.safe_load(EXPERIMENT.read_text())["provision"]["pip"]
    venv = tmp_path_factory.mktemp("quic-venv")
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *requirements], check=True, timeout=600)
    return str(venv / "bin" / "python3")


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(proto: str, port: int) -> bool:
    table = "/proc/net/udp" if proto == "h3" else "/proc/net/tcp"
    with open(table) as rows:
        next(rows)
        return any(int(row.split()[1].rsplit(":", 1)[1], 16) == port for row in rows)


@pytest.fixture(params=["h2", "h3"])
def server(request, venv_python, tmp_path):
    proto = request.param
    port = free_port(socket.SOCK_DGRAM if proto == "h3" else socket.SOCK_STREAM)
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115  (the server writes to it until the fixture ends)
    process = subprocess.Popen(
        [
            venv_python,
            str(HERE / "serve.py"),
            "--proto",
            proto,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--workdir",
            str(tmp_path),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while not listening(proto, port):
        assert process.poll() is None, (tmp_path / "server.log").read_text()
        assert time.monotonic() < deadline, "the server did not listen within 30 s"
        time.sleep(0.1)
    yield proto, port, process, tmp_path
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    log.close()


def run_client(python: str, proto: str, port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, str(HERE / "client.py"), "--proto", proto, "--host", "127.0.0.1", "--port", str(port), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def parsed(stdout: str):
    from harness.run.collect import parse_json_values

    return parse_json_values(stdout, "client")


@pytest.mark.integration
def test_client_fetches_over_each_protocol(server, venv_python):
    proto, port, _, _ = server
    result = run_client(
        venv_python, proto, port, "--size", "2KiB", "--requests", "50", "--concurrency", "8", "--repeats", "3"
    )
    assert result.returncode == 0, result.stderr
    load = parsed(result.stdout)
    assert len(load.seconds) == 3 and load.units == 150 and load.errors == 0
    assert load.client_cpu_seconds > 0
    assert all(0 < value < 1 for value in load.seconds)
    # The negotiated protocol is the one asked for: h2 says its ALPN, h3 its QUIC cipher suite.
    assert ("ALPN h2" if proto == "h2" else "h3: connected") in result.stderr


@pytest.mark.integration
def test_large_objects_are_counted_whole_and_batches_capped(server, venv_python):
    proto, port, _, _ = server
    result = run_client(
        venv_python,
        proto,
        port,
        "--size",
        "1MiB",
        "--requests",
        "100",
        "--batch-bytes",
        "8MiB",
        "--concurrency",
        "4",
        "--repeats",
        "2",
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line.get("units") for line in lines[:2]] == [8, 8]  # 8 MiB / 1 MiB, not 100
    assert parsed(result.stdout).errors == 0


@pytest.mark.integration
def test_refused_requests_count_as_errors(server, venv_python):
    proto, port, _, _ = server
    too_big = str(quic_app.MAX_BODY_BYTES + 1)  # the app answers 404: none may count as done
    result = run_client(
        venv_python,
        proto,
        port,
        "--size",
        too_big,
        "--requests",
        "20",
        "--concurrency",
        "4",
        "--repeats",
        "1",
        "--batch-bytes",
        "8GiB",
    )
    load = parsed(result.stdout)
    assert load.units == 20 and load.errors == 20


@pytest.mark.integration
def test_a_batch_out_of_time_counts_what_did_not_finish(server, venv_python):
    proto, port, _, _ = server
    result = run_client(
        venv_python,
        proto,
        port,
        "--size",
        "4MiB",
        "--requests",
        "64",
        "--batch-bytes",
        "1GiB",
        "--concurrency",
        "4",
        "--repeats",
        "3",
        "--timeout",
        "0.05",
    )
    assert result.returncode == 1
    load = parsed(result.stdout)
    assert len(load.seconds) == 1  # no batch after the one that ran out of time
    assert load.units == 64 and 60 <= load.errors <= 64
    assert "timeout after 0.05 s" in result.stderr


@pytest.mark.integration
def test_no_key_material_is_left_after_sigterm(server):
    _, _, process, workdir = server
    assert sorted(p.name for p in workdir.glob("quic-tls-*/*")) == ["cert.pem", "key.pem"]
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    assert not list(workdir.glob("quic-tls-*"))
