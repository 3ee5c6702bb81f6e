"""The Fabric wrapper against real processes on this machine (a local host)."""

import subprocess
import sys

import pytest

from harness.errors import HostError, TrialError
from harness.hosts.remote import HostSession
from tests.builders import LOCAL

PORT = 18998


@pytest.fixture
def session():
    with HostSession(LOCAL) as opened:
        yield opened


def in_session(pid):
    """Live processes of the session; zombies have ended and only wait for pid 1 to reap them."""
    listing = subprocess.run(
        ["ps", "-o", "pid=,stat=", "-s", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return [line.split()[0] for line in listing.splitlines() if not line.split()[1].startswith("Z")]


def test_background_server_is_found_ready_and_stopped_with_its_children(session, tmp_path):
    # A shell that forks a child, like nginx's master and worker: stop() must end both.
    script = f"sleep 300 & exec {sys.executable} -m http.server {PORT} --bind 127.0.0.1"
    server = session.start_background(["sh", "-c", script], str(tmp_path), str(tmp_path / "server.log"))
    try:
        assert str(server.pid) in in_session(server.pid)  # the pid leads its own session
        session.wait_listening(server, PORT, timeout=20)
        assert session.port_in_use(PORT)
        assert len(in_session(server.pid)) == 2
        assert session.counters(server)["server_cpu_ns"] > 0  # the session's CPU time, read with the counters
    finally:
        session.stop(server)
    assert in_session(server.pid) == []
    assert not session.is_alive(server)
    assert not session.port_in_use(PORT)


def test_a_server_that_exits_is_reported_with_its_last_log_line(session, tmp_path):
    server = session.start_background(
        ["sh", "-c", "echo 'bind: no such file'; exit 3"], str(tmp_path), str(tmp_path / "crash.log")
    )
    with pytest.raises(TrialError, match="server exited before listening on port 18997: bind: no such file"):
        session.wait_listening(server, 18997, timeout=20)
    session.stop(server)


def test_a_server_that_never_listens_times_out(session, tmp_path):
    server = session.start_background(["sleep", "30"], str(tmp_path), str(tmp_path / "sleep.log"))
    try:
        with pytest.raises(TrialError, match="did not listen on port 18996 within 1 s"):
            session.wait_listening(server, 18996, timeout=1)
    finally:
        session.stop(server)
    assert in_session(server.pid) == []


def test_failing_and_slow_commands_name_the_host(session):
    with pytest.raises(HostError, match="localhost: false exited 1"):
        session.run(["false"])
    with pytest.raises(HostError, match="localhost: sleep did not finish within 0.5 s"):
        session.run(["sleep", "5"], timeout=0.5)
    assert session.run(["echo", "a b;c"]).stdout == "a b;c\n"  # argv words are quoted, not parsed
