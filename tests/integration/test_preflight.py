"""`harness run` stops with one error line when its pre-flight checks find a host it cannot
reach or a port in use, before anything is provisioned."""

import socket

import pytest

from tests.builders import ROOT, assert_one_error_line, run_harness

SENDFILE = ROOT / "experiments" / "sendfile.yaml"


def test_run_with_an_unreachable_host(tmp_path):
    # Port 1 on loopback refuses connections: an SSH host that is down, without leaving this machine.
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        "[servers]\ndown ansible_host=127.0.0.1 ansible_port=1\n[clients]\nlocalhost ansible_connection=local\n"
    )
    result = run_harness("run", SENDFILE, "--quick", "--inventory", inventory, "--out", tmp_path / "out")
    assert_one_error_line(result, "down: cannot reach 127.0.0.1:1")


def test_run_with_a_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            busy.bind(("127.0.0.1", 18083))
        except OSError:
            pytest.skip("port 18083 is taken by something else on this machine")
        busy.listen()
        result = run_harness("run", SENDFILE, "--quick", "--out", tmp_path / "out")
    assert_one_error_line(result, "port 18083 (variants.nginx_sendfile_off.server.port) is already in use")
    # The run directory exists and says why it stopped.
    (run_dir,) = (tmp_path / "out").iterdir()
    assert "port 18083" in (run_dir / "manifest.json").read_text()
