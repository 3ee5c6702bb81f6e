"""The NUMA experiment's triad kernel measures bandwidth and says where its memory sits.
tests/integration/test_requires.py runs the experiment on a one-node host ("not applicable")."""

import json
import shutil
import subprocess

import pytest

from tests.builders import ROOT

SOURCE = ROOT / "experiments" / "numa" / "stream.c"
GIB = 2**30


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    """stream.c compiled as the experiment's build does, with warnings as errors."""
    binary = tmp_path_factory.mktemp("numa") / "stream"
    built = subprocess.run(
        ["gcc", "-O2", "-pthread", "-Wall", "-Wextra", "-Werror", "-o", str(binary), str(SOURCE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return binary


def run_stream(*argv):
    return subprocess.run([*map(str, argv)], capture_output=True, text=True, timeout=60, check=False)


def json_values(stdout):
    records = [json.loads(line) for line in stdout.splitlines()]
    return [r for r in records if "value" in r], [r for r in records if "client_cpu_seconds" in r]


@pytest.mark.parametrize("threads", ["1", "2"])
def test_stream_prints_plausible_seconds_per_gib(stream, threads):
    array_mib = 64
    result = run_stream(stream, "--array-mib", array_mib, "--repeats", 2, "--threads", threads)
    assert result.returncode == 0, result.stderr
    values, cpu = json_values(result.stdout)
    assert len(values) == 2 and len(cpu) == 1
    moved_gib = 3 * array_mib * 2**20 / GIB  # STREAM accounting: b and c read, a written
    for record in values:
        assert set(record) == {"value", "units"}
        assert record["units"] == round(moved_gib)
        assert 0.1 <= 1 / record["value"] <= 1000  # GiB/s
    assert cpu[0]["client_cpu_seconds"] > 0
    assert f"{threads} thread(s)" in result.stderr and "0.188 GiB moved per repeat" in result.stderr


def test_stream_output_is_what_the_harness_parser_takes(stream):
    from harness.run.collect import parse_json_values

    result = run_stream(stream, "--array-mib", 16, "--repeats", 3)
    parsed = parse_json_values(result.stdout, "stream")
    assert len(parsed.seconds) == 3 and all(s > 0 for s in parsed.seconds)
    assert parsed.client_cpu_seconds > 0


@pytest.mark.skipif(shutil.which("numactl") is None, reason="numactl is not installed")
def test_stream_under_numactl_reports_the_binding_in_force(stream):
    result = run_stream("numactl", "--cpunodebind=0", "--membind=0", stream, "--array-mib", 16, "--repeats", 2)
    assert result.returncode == 0, result.stderr
    assert "memory policy bind 0;" in result.stderr
    assert "a 0,0,0, b 0,0,0, c 0,0,0" in result.stderr  # pages really sit on node 0
    assert len(json_values(result.stdout)[0]) == 2
    unbound = run_stream(stream, "--array-mib", 16, "--repeats", 1)
    assert "memory policy default;" in unbound.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--repeats", "0"], "--repeats 0: give a whole number from 1 to 100000"),
        (["--array-mib", "x"], "--array-mib x: give a whole number"),
        (["--sizes", "1"], "unknown flag --sizes"),
        (["--threads"], "usage: stream"),
    ],
)
def test_stream_rejects_bad_usage(stream, argv, message):
    result = run_stream(stream, *argv)
    assert result.returncode == 2 and message in result.stderr and result.stdout == ""
