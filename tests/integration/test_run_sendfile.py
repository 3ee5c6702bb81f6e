"""End to end, for real: `harness run experiments/sendfile.yaml --quick` on this machine.

Real ansible-runner, real nginx, the real Python server and the compiled client.
Before the run the test gives the two sysctls the experiment sets distinctive
values, so that a restore that did nothing would be caught.
"""

import datetime
import json
import math
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pyperf
import pytest

from harness.results.verdicts import VERDICTS
from harness.run import spec
from harness.run.plan import make_plan
from tests.builders import HARNESS, ROOT, run_harness, valid_trials

pytestmark = pytest.mark.integration

SENDFILE = ROOT / "experiments" / "sendfile.yaml"
SYSCTLS = {"net/ipv4/tcp_rmem": "4096 131071 6291455", "net/ipv4/tcp_wmem": "4096 16383 4194303"}


def read_sysctls():
    return {key: " ".join(Path("/proc/sys", key).read_text().split()) for key in SYSCTLS}


@pytest.fixture
def distinctive_sysctls():
    original = read_sysctls()
    for key, value in SYSCTLS.items():
        Path("/proc/sys", key).write_text(value)
    try:
        yield read_sysctls()
    finally:
        for key, value in original.items():
            Path("/proc/sys", key).write_text(value)


def leftovers():
    """Processes a sendfile run starts: none may survive it."""
    found = subprocess.run(
        ["pgrep", "-af", "file_server.py|/var/tmp/harness/|fetch 127.0.0.1"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


def the_run_dir(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def test_quick_run_gives_verdicts_from_its_own_numbers(tmp_path, distinctive_sysctls):
    result = run_harness("run", SENDFILE, "--quick", "--out", tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = the_run_dir(tmp_path)

    verdicts = json.loads((run_dir / "verdicts.json").read_text())
    assert [v["pair"] for v in verdicts] == [
        ["python_readwrite", "python_sendfile"],
        ["nginx_sendfile_off", "nginx_sendfile_on"],
    ]
    values = pd.read_csv(run_dir / "measurements.csv")
    for verdict in verdicts:
        assert verdict["claim_id"] == "sendfile" and verdict["claimed_ratio"] == 3.5
        assert verdict["verdict"] in VERDICTS and verdict["reason"]
        assert verdict["conditions"]["parameter file_size"] == "256MiB"
        # The ratio is recomputed here from the values the run stored.
        baseline, treatment = verdict["pair"]
        means = values.groupby(["variant", "run"])["value"].mean()
        expected = means[baseline].mean() / means[treatment].mean()
        assert math.isclose(verdict["measured_ratio"], expected, rel_tol=1e-9)
        assert verdict["ci_low"] <= verdict["measured_ratio"] <= verdict["ci_high"]
        assert f"{verdict['pair'][0]}" in result.stdout
    # 3 measured transfers (4 per trial, the first a warm-up) per valid trial; 5 repetitions,
    # less any trial a validity gate kept out (CPU steal on this VM)
    counted = valid_trials(run_dir)
    assert set(counted) == {"nginx_sendfile_off", "nginx_sendfile_on", "python_readwrite", "python_sendfile"}
    assert all(1 <= count <= 5 for count in counted.values())
    assert values.groupby("variant").size().to_dict() == {variant: 3 * count for variant, count in counted.items()}

    # pyperf files: one run per repetition, the same benchmark name on both sides.
    for variant in values["variant"].unique():
        benchmark = pyperf.Benchmark.load(str(run_dir / "pyperf" / f"{variant}.json"))
        assert benchmark.get_name() == "sendfile" and benchmark.get_nrun() == 5
    compare = subprocess.run(
        [
            str(HARNESS.parent / "python"),
            "-m",
            "pyperf",
            "compare_to",
            run_dir / "pyperf" / "python_readwrite.json",
            run_dir / "pyperf" / "python_sendfile.json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compare.returncode == 0, compare.stderr
    assert re.search(r"faster|slower|[Nn]ot significant", compare.stdout), compare.stdout

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    trials = manifest["trials"]
    assert (trials["planned"], trials["most"]) == (20, 20)
    # A trial that failed a validity gate (steal on a noisy host) is run again: each rerun adds one.
    assert trials["completed"] == 20 + trials["replaced"]
    assert manifest["stopping"]["rounds"] == 5 and manifest["stopping"]["reason"]
    assert isinstance(manifest["order_seed"], int)
    before = manifest["hosts"]["sysctls_before"]["localhost"]["net.ipv4.tcp_wmem"]
    assert " ".join(before.split()) == SYSCTLS["net/ipv4/tcp_wmem"]
    assert manifest["hosts"]["facts"]["localhost"]["cores"] >= 1
    assert manifest["harness_costs"]["peak_rss_mib"] > 0
    assert len(manifest["experiment"]["sha256"]) == 64
    # Every second of the run is charged to a stage; the stages add up to the wall time,
    # which matches the run's start and end times (whole seconds; the wall time also counts
    # the experiment's loading before `started` and the page's drawing after `finished`).
    timing = manifest["timing"]
    assert set(timing["stages"]) == {"start-up", "hosts", "snapshot", "provision", "trials", "restore", "report"}
    assert math.isclose(sum(timing["stages"].values()), timing["wall_seconds"], rel_tol=0.05)
    started, finished = (datetime.datetime.fromisoformat(manifest[key]) for key in ("started", "finished"))
    assert abs((finished - started).total_seconds() - timing["wall_seconds"]) <= 5
    assert math.isclose(
        timing["trials"]["load_windows"], manifest["harness_costs"]["load_window_seconds"], rel_tol=0.01
    )
    assert sum(timing["trials"].values()) <= timing["stages"]["trials"] + 0.01

    html = (run_dir / "index.html").read_text()
    assert "<svg" in html and verdicts[0]["verdict"] in html and "raw/" in html
    assert "Where the time went" in html
    assert list((run_dir / "raw").glob("*-load.out")) and list((run_dir / "raw").glob("*-server.log"))

    # Every file the run wrote is in the manifest with its sha256; a change is caught and named.
    verified = run_harness("verify", run_dir)
    assert verified.returncode == 0 and verified.stdout.startswith(f"{run_dir}: ok ("), verified.stderr
    with open(run_dir / "measurements.csv", "a") as stream:
        stream.write("python_sendfile,0,0.001,0\n")
    tampered = run_harness("verify", run_dir)
    assert tampered.returncode == 1
    assert (
        tampered.stderr.strip() == f"error: {run_dir}/measurements.csv: changed since the run wrote it (sha256 differs)"
    )

    # The host is as it was: sysctls back, work folder gone, no process left.
    assert read_sysctls() == distinctive_sysctls
    assert not Path("/var/tmp/harness", run_dir.name).exists()
    assert leftovers() == []


def test_a_crashing_server_fails_the_run_but_keeps_results(tmp_path, experiment_copy, distinctive_sysctls):
    # The sendfile variant's server dies at start: the readwrite trial before it has been measured.
    text = experiment_copy.read_text().replace(
        '[python3, "{workload}/file_server.py", --mode, sendfile,',
        '[python3, "-c", "import sys; print(\'deliberate crash\'); sys.exit(3)", --mode, sendfile,',
    )
    experiment_copy.write_text(text)
    # A seed whose first round runs the readwrite variant before the crashing one.
    seed, crash_at = next(
        (seed, order.index("python_sendfile") + 1)
        for seed in range(100)
        for order in [[t.variant for t in make_plan(spec.load(SENDFILE), True, seed).round(0)]]
        if order.index("python_readwrite") < order.index("python_sendfile")
    )
    result = run_harness("run", experiment_copy, "--quick", "--seed", seed, "--out", tmp_path / "out", timeout=900)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"error: trial {crash_at} of 20 (python_sendfile): localhost: server exited before "
        "listening on port 18082: deliberate crash"
    )
    assert "Traceback" not in result.stderr
    run_dir = the_run_dir(tmp_path / "out")
    # Every trial before the crash is kept (trials.jsonl; measurements.csv would leave out one
    # that CPU steal on this VM had failed, and no rerun comes before the round ends).
    kept = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    variants = [trial["variant"] for trial in kept]
    assert "python_readwrite" in variants and "python_sendfile" not in variants
    assert {trial["repetition"] for trial in kept} == {0} and len(set(variants)) == len(kept) == crash_at - 1
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"].startswith(f"failed: trial {crash_at} of 20 (python_sendfile): localhost: server exited")
    assert "inconclusive" in (run_dir / "verdicts.json").read_text()
    assert read_sysctls() == distinctive_sysctls
    assert leftovers() == []


def test_ctrl_c_restores_the_host_and_keeps_results(tmp_path, distinctive_sysctls):
    process = subprocess.Popen(
        [str(HARNESS), "run", str(SENDFILE), "--quick", "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait for the second trial to finish, then interrupt in the middle of the run.
        deadline = time.monotonic() + 600
        for line in process.stderr:
            if line.strip().startswith("trial 2:") or time.monotonic() > deadline:
                break
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "error: SIGINT received" in stderr and "Traceback" not in stderr
    run_dir = the_run_dir(tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert 2 <= manifest["trials"]["completed"] < 20
    assert read_sysctls() == distinctive_sysctls
    assert not Path("/var/tmp/harness", run_dir.name).exists()
    assert leftovers() == []
