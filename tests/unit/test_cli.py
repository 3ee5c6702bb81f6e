"""The command line as users run it: exit codes, one-line errors, no tracebacks, for input
refused before any host is touched. tests/integration/test_preflight.py has the faults a run
finds on its hosts."""

from tests.builders import ROOT, assert_one_error_line, run_harness

SENDFILE = ROOT / "experiments" / "sendfile.yaml"


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
