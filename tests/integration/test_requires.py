"""A claim the host cannot test gets "not applicable", the reason and the host's
topology, and no trial runs (the NUMA experiment itself, on a one-node host, too); a
CPU-bound claim gets the host's ceiling beside it."""

import json

import pytest

from tests.builders import ROOT, numa_nodes, run_harness, sweep_experiment


def test_a_host_with_too_few_numa_nodes_gets_not_applicable(tmp_path):
    nodes = numa_nodes()
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


@pytest.mark.skipif(
    numa_nodes() != 1, reason="this host has several NUMA nodes: the real run is needed, not the 'not applicable' path"
)
def test_numa_experiment_is_not_applicable_on_a_one_node_host(tmp_path):
    result = run_harness("run", ROOT / "experiments" / "numa.yaml", "--quick", "--out", tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "memory_local_vs_remote (remote -> local): not applicable" in result.stdout
    run_dir = next(tmp_path.iterdir())
    verdicts = json.loads((run_dir / "verdicts.json").read_text())
    assert verdicts and {v["verdict"] for v in verdicts} == {"not applicable"}
    for verdict in verdicts:
        assert "localhost has 1 NUMA node" in verdict["reason"] and "requires.numa_nodes" in verdict["reason"]
    topology = (run_dir / "raw" / "topology-localhost.txt").read_text()
    assert "numa_nodes 1" in topology and "--- lscpu" in topology and "node0:" in topology
    assert not list((run_dir / "raw").glob("*-load.out"))  # no trial ran
