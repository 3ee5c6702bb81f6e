"""`harness run --cpus` and `harness run --resume`, run for real with a small experiment
whose load commands need no build: a CPU-bound Python loop that reports its own
affinity on stderr."""

import json
import signal
import subprocess
import time

from tests.builders import HARNESS, run_harness

EXPERIMENT = """
version: 1
claim:
  id: options
  statement: "half the loop is 2x faster"
  source: {file: tests/integration/test_run_options.py, section: "EXPERIMENT"}
  claimed_ratio: 2.0
  metric: seconds per loop
  unit: s
  better: lower
roles: {client: clients}
workload: work
parameters: {long: 2000000, short: 1000000}
variants:
  long_loop:
    load: &loop
      role: client
      command: [python3, -c, "import json, os, sys, time; print(sorted(os.sched_getaffinity(0)), file=sys.stderr);
                 t = time.process_time(); sum(i * i for i in range({long}));
                 print(json.dumps({{'value': time.process_time() - t}}))"]
      parser: json_values
      cpus: "0"
  short_loop:
    load:
      <<: *loop
      command: [python3, -c, "import json, os, sys, time; print(sorted(os.sched_getaffinity(0)), file=sys.stderr);
                 t = time.process_time(); sum(i * i for i in range({short}));
                 print(json.dumps({{'value': time.process_time() - t}}))"]
pairs:
  - {name: loops, baseline: long_loop, treatment: short_loop}
repetitions: 4
warmup_values: 0
quick: {repetitions: 4}
"""


def experiment(tmp_path):
    (tmp_path / "work").mkdir()
    path = tmp_path / "options.yaml"
    path.write_text(EXPERIMENT)
    return path


def test_cpus_moves_every_process_onto_the_listed_cpus_and_into_the_fingerprint(tmp_path):
    result = run_harness("run", experiment(tmp_path), "--quick", "--cpus", "1", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    run_dir = next((tmp_path / "out").iterdir())
    # Pinned to CPU 0 in the file; under --cpus 1 "CPU 0" means the first allowed CPU, 1.
    affinities = {path.read_text().strip() for path in (run_dir / "raw").glob("*-load.err")}
    assert affinities == {"[1]"}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["hosts"]["cpu_restriction"] == "1"
    assert "CPU restriction (--cpus)" in (run_dir / "index.html").read_text()


def test_a_bad_cpu_list_is_a_usage_error(tmp_path):
    result = run_harness("run", experiment(tmp_path), "--cpus", "0-a", "--out", tmp_path / "out")
    assert result.returncode == 2 and "0-a" in result.stderr
    assert not (tmp_path / "out").exists()


def test_resume_finishes_an_interrupted_run_in_its_own_directory(tmp_path):
    path = experiment(tmp_path)
    process = subprocess.Popen(
        [str(HARNESS), "run", str(path), "--quick", "--seed", "5", "--out", str(tmp_path / "out")],
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []
    deadline = time.monotonic() + 120
    for line in process.stderr:  # interrupt once three trials are done
        seen.append(line)
        if line.startswith("trial 3:") or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode == 130, "".join(seen)
    run_dir = next((tmp_path / "out").iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    kept = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    assert 3 <= len(kept) < 8
    first_outputs = {p.name: p.read_text() for p in (run_dir / "raw").glob("*-load.out")}

    resumed = run_harness("run", "--resume", run_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert "claim:" in resumed.stdout
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["resumed_trials"] == len(kept)
    assert manifest["order_seed"] == 5
    # Every trial of the 4 rounds, once (a trial that CPU steal invalidated is rerun as order 8 on).
    orders = [json.loads(line)["order"] for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    assert sorted(order for order in orders if order < 8) == list(range(8))
    for kept_trial in kept:  # the trials before the interruption are kept, not run again
        name = f"{kept_trial['order']:03d}-{kept_trial['variant']}-load.out"
        assert (run_dir / "raw" / name).read_text() == first_outputs[name]
    assert run_harness("verify", run_dir).returncode == 0
    again = run_harness("run", "--resume", run_dir)
    assert again.returncode == 1 and "complete" in again.stderr


def test_resume_refuses_a_changed_experiment(tmp_path):
    path = experiment(tmp_path)
    run_dir = tmp_path / "out" / "fake"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(
        json.dumps(
            {
                "format_version": 2,
                "run_id": "fake",
                "status": "interrupted",
                "order_seed": 1,
                "started": "x",
                "hosts": {},
                "stopping": {"target_half_width": 0.05},
                "experiment": {
                    "file": str(path),
                    "path": str(path),
                    "sha256": "0" * 64,
                    "quick": True,
                    "claim_id": "fake",
                },
            }
        )
    )
    result = run_harness("run", "--resume", run_dir)
    assert result.returncode == 1
    assert "changed since run fake started" in result.stderr
