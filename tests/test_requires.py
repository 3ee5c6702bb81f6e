"""A claim the host cannot test gets "not applicable", the reason and the host's
topology, and no trial runs; a CPU-bound claim gets the host's ceiling beside it."""

import json
import os

from tests.conftest import run_harness
from tests.test_sweep import sweep_experiment


def test_a_host_with_too_few_numa_nodes_gets_not_applicable(tmp_path):
    nodes = len([name for name in os.listdir("/sys/devices/system/node") if name[4:].isdigit()])
    path = sweep_experiment(tmp_path, f"\nrequires:\n  numa_nodes: {nodes + 1}\n")
    result = run_harness("run", path, "--quick", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "not applicable" in result.stdout
    run_dir = next((tmp_path / "out").iterdir())
    verdicts = json.loads((run_dir / "verdicts.json").read_text())
    assert [v["verdict"] for v in verdicts] == ["not applicable"]
    assert f"localhost has {nodes} NUMA node" in verdicts[0]["reason"]
    assert verdicts[0]["measured_ratio"] is None
    topology = (run_dir / "raw" / "topology-localhost.txt").read_text()
    assert f"numa_nodes {nodes}" in topology and "--- lscpu" in topology
    assert json.loads((run_dir / "summary.json").read_text())["verdict"] == "not applicable"
    assert not list((run_dir / "raw").glob("*-load.out"))  # no trial ran
    assert (run_dir / "manifest.json").exists() and "topology-localhost.txt" in (run_dir / "index.html").read_text()
