"""No text from an experiment is ever evaluated by a shell or a template engine, and the
report shows every text as text, for real runs on this machine.

One experiment carries payloads in every string field that reaches a host (tests/payloads.py):
each payload would create its own marker file if any shell (`$(...)`, backticks, `;`, `|`,
`&&`, broken quotes, a newline) or any Jinja (Ansible's, the config renderer's) evaluated it.
The real harness validates and runs it; afterwards no marker may exist, the server and the
load generator must have received every payload as one argument, unchanged, and the report
must show the HTML in the claim as text. tests/unit/test_injection.py checks the fields and
inventory values that must refuse such text instead.
"""

import secrets
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.builders import BAD, HARNESS, VALID
from tests.payloads import Payloads, check_run, write_payload_experiment


def payload_run(base: Path, payloads: Payloads) -> dict:
    """Validate and run the payload experiment on this machine."""
    written = write_payload_experiment(base / "experiment", payloads)
    checked = subprocess.run(
        [str(HARNESS), "validate", str(written["path"])], capture_output=True, text=True, timeout=60, check=False
    )
    out = base / f"out {payloads.name('--out')}"
    result = subprocess.run(
        [str(HARNESS), "run", str(written["path"]), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=base,
        check=False,
    )
    return {"written": written, "checked": checked, "result": result, "out": out, "fired": payloads.fired()}


def jinja_run(base: Path, payloads: Payloads) -> dict:
    """Run an experiment with Jinja in the fields that become Ansible's extra vars. Each payload
    is placed so that, evaluated, it leaves a working value behind (the run goes on and every
    later payload is reached too); unevaluated, the run fails or the schema refuses it."""
    folder = base / "experiment"
    experiment = yaml.safe_load(VALID.read_text())
    # Evaluated, 'work{{ ... }}' is 'work' and 'noop{{ ... }}.c' is 'noop.c': both exist.
    experiment["workload"] = f"work{payloads.jinja_name('workload (folder name)')}"
    source = f"noop{payloads.jinja_name('provision.builds.0.sources')}.c"
    for name in ("work", experiment["workload"]):
        shutil.copytree(BAD / "work", folder / name)
        shutil.copyfile(BAD / "work" / "noop.c", folder / name / source)
    fin_timeout = _sysctl("net.ipv4.tcp_fin_timeout")
    experiment["provision"] = {
        # Evaluated, the value is the current one: nothing changes on this machine.
        "sysctls": {"net.ipv4.tcp_fin_timeout": payloads.jinja("provision.sysctls") + fin_timeout},
        "builds": [
            {
                "name": "noop",
                "role": "server",
                "sources": [source],
                "flags": ["-O0", "-DFLAG" + payloads.jinja("provision.builds.0.flags")],
                "libraries": [payloads.jinja("provision.builds.0.libraries") + "m"],
            }
        ],
    }
    experiment["adaptive"] = {"max_repetitions": 2}
    path = folder / "jinja.yaml"
    path.write_text(yaml.safe_dump(experiment, sort_keys=False))
    result = subprocess.run(
        [str(HARNESS), "run", str(path), "--out", str(base / "out")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=base,
        check=False,
    )
    return {
        "result": result,
        "fired": payloads.fired(),
        "fin_timeout": (fin_timeout, _sysctl("net.ipv4.tcp_fin_timeout")),
    }


def _sysctl(key: str) -> str:
    return subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, check=True).stdout.strip()


RUNS = {
    "test_payloads_in_every_field_run_nothing": payload_run,
    "test_jinja_in_fields_that_reach_ansible_runs_nothing": jinja_run,
}


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """Both harness runs of this module at once (each spends most of its time in Ansible);
    only those whose tests are selected."""
    selected = {item.originalname for item in request.session.items if item.module.__name__ == __name__} & set(RUNS)
    placed = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        started = {}
        for test in selected:
            placed.append(Payloads(secrets.token_hex(4)))
            started[test] = pool.submit(RUNS[test], tmp_path_factory.mktemp(test[5:25]), placed[-1])
        yield started
    for payloads in placed:
        payloads.clean()


@pytest.mark.integration
def test_payloads_in_every_field_run_nothing(runs):
    run = runs["test_payloads_in_every_field_run_nothing"].result()
    assert run["fired"] == {}
    assert run["checked"].returncode == 0, run["checked"].stderr
    assert run["result"].returncode == 0, run["result"].stderr[-3000:]
    (run_dir,) = run["out"].iterdir()
    check_run(run_dir, run["written"])


@pytest.mark.integration
def test_jinja_in_fields_that_reach_ansible_runs_nothing(runs):
    run = runs["test_jinja_in_fields_that_reach_ansible_runs_nothing"].result()
    assert "Traceback" not in run["result"].stderr
    before, after = run["fin_timeout"]
    assert after == before
    assert run["fired"] == {}
