"""Variants without a server (microbenchmarks), and variants whose values come from a
result command on the receiving side rather than from the load generator."""

import json

import pandas as pd

from tests.builders import run_harness, valid_trials

EXPERIMENT = """
version: 1
claim:
  id: kinds
  statement: "sleeping 0.1 s is 2x faster than sleeping 0.2 s"
  source: {file: tests/integration/test_variant_kinds.py, section: "EXPERIMENT"}
  claimed_ratio: 2.0
  metric: seconds per sleep
  unit: s
  better: lower
roles: {client: clients}
workload: work
parameters: {long: "0.2", short: "0.1"}
variants:
  long_sleep:
    description: a microbenchmark without a server, timed by the shell
    load:
      role: client
      command: [python3, -c, "import json, time; t = time.monotonic(); time.sleep({long});
                 print(json.dumps({{'value': time.monotonic() - t}}))"]
      parser: json_values
      runs: 3
  short_sleep:
    description: the same, with its value taken from a result command given the load's wall time
    load:
      role: client
      command: [sleep, "{short}"]
      parser: json_values
      runs: 3
    result:
      role: client
      command: [python3, -c, "import json; print(json.dumps({{'value': {load_seconds}, 'units': 3}}))"]
      parser: json_values
pairs:
  - {name: sleeps, baseline: long_sleep, treatment: short_sleep}
repetitions: 3
warmup_values: 0
quick: {repetitions: 3}
notes: ["The sleeps are <b>not</b> network work."]
"""


def test_serverless_and_result_variants_measure_and_compare(tmp_path):
    (tmp_path / "work").mkdir()
    path = tmp_path / "kinds.yaml"
    path.write_text(EXPERIMENT)
    result = run_harness("run", path, "--quick", "--out", tmp_path / "out", "--seed", "1")
    assert result.returncode == 0, result.stderr
    run_dir = next((tmp_path / "out").iterdir())
    values = pd.read_csv(run_dir / "measurements.csv")
    long_values = values.loc[values["variant"] == "long_sleep", "value"]
    counted = valid_trials(run_dir)  # 3 trials each, less any CPU steal kept out
    assert len(long_values) == 3 * counted["long_sleep"] and long_values.between(0.2, 1.0).all()  # runs: 3
    short_values = values.loc[values["variant"] == "short_sleep", "value"]
    # One value per trial, from the result command: the wall time of three 0.1 s sleeps.
    assert len(short_values) == counted["short_sleep"] and short_values.between(0.3, 3.0).all()
    costs = pd.read_csv(run_dir / "costs.csv")
    assert (costs.loc[costs["variant"] == "short_sleep", "units"] == 3).all()
    assert (costs["server_cpu_seconds"] == 0).all()
    verdict = json.loads((run_dir / "verdicts.json").read_text())[0]
    assert verdict["measured_ratio"] is not None
    ran = costs["variant"].value_counts()  # every trial that ran, reruns included: one raw set each
    assert len(list((run_dir / "raw").glob("*-long_sleep-load-3.out"))) == ran["long_sleep"] >= 3
    results = sorted((run_dir / "raw").glob("*-short_sleep-result.out"))
    assert len(results) == ran["short_sleep"] >= 3 and json.loads(results[0].read_text())["value"] > 0.1
    conditions = (run_dir / "index.html").read_text()
    assert "server (no server)" in conditions
    assert "<th>client NIC</th><td>lo (loopback)</td>" in conditions  # the device a run uses, and its driver
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["hosts"]["facts"]["localhost"]["nic"] == "lo (loopback)"
    assert "<li>The sleeps are &lt;b&gt;not&lt;/b&gt; network work.</li>" in conditions  # the file's notes, escaped
