"""The command line as users run it: exit codes, one-line errors, no tracebacks."""

import socket

import pytest

from tests.conftest import ROOT, run_harness

SENDFILE = ROOT / "experiments" / "sendfile.yaml"


def assert_one_error_line(result, *fragments):
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) >= 1 and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])


def test_validate_accepts_the_catalog():
    result = run_harness("validate", SENDFILE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("sendfile.yaml: ok (sendfile, 4 variants, 2 pairs)")
    assert result.stderr == ""


def test_validate_reports_each_bad_file(experiment_copy):
    experiment_copy.write_text(experiment_copy.read_text().replace("better: lower", "better: faster"))
    result = run_harness("validate", SENDFILE, experiment_copy)
    assert result.returncode == 1
    assert "sendfile.yaml: ok" in result.stdout
    assert result.stderr.count("error: ") == 1
    assert "claim.better" in result.stderr and "Traceback" not in result.stderr


def test_list_prints_each_claim():
    result = run_harness("list", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("sendfile"))
    assert "3.5x" in line and "experiments/sendfile.yaml" in line and "sendfile()" in line


def test_bad_usage_exits_2():
    result = run_harness("run")
    assert result.returncode == 2
    assert "give an EXPERIMENT file, or --resume RUN_DIR" in result.stderr


def test_run_with_malformed_yaml(tmp_path, experiment_copy):
    experiment_copy.write_text(experiment_copy.read_text().replace("roles:", "roles: [", 1))
    result = run_harness("run", experiment_copy, "--out", tmp_path / "out")
    assert_one_error_line(result, "sendfile.yaml:", "YAML syntax error")
    assert not (tmp_path / "out").exists()


def test_run_with_a_missing_group(tmp_path):
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[servers]\nlocalhost ansible_connection=local\n")
    result = run_harness("run", SENDFILE, "--inventory", inventory, "--out", tmp_path / "out")
    assert_one_error_line(result, str(inventory), "role 'client'", "[clients]")


def test_run_with_a_missing_inventory(tmp_path):
    result = run_harness("run", SENDFILE, "--inventory", tmp_path / "absent.ini", "--out", tmp_path / "out")
    assert_one_error_line(result, "absent.ini: no such inventory file")


def test_run_with_an_unreachable_host(tmp_path):
    # Port 1 on loopback refuses connections: an SSH host that is down, without leaving this machine.
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[servers]\ndown ansible_host=127.0.0.1 ansible_port=1\n"
                         "[clients]\nlocalhost ansible_connection=local\n")
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
