"""Load-generator output -> measurements -> pyperf files."""

import dataclasses
import json

import pyperf
import pytest

from harness.errors import TrialError
from harness.results import store
from harness.run.collect import (
    GIB,
    costs_frame,
    measure,
    parse_fetch_json,
    values_frame,
    write_pyperf,
)
from harness.run.execute import TrialOutput
from harness.run.gates import gates, trial_status
from harness.run.plan import Trial

FETCH_OUTPUT = """{"seconds": 0.500000000, "bytes": 1073741824}
{"seconds": 0.250000000, "bytes": 1073741824}
{"seconds": 0.260000000, "bytes": 1073741824}
{"client_cpu_seconds": 0.120000}
"""


def output(text=FETCH_OUTPUT, variant="sendfile_on", repetition=0, server_cpu=1.5, host_changes=None):
    return TrialOutput(
        trial=Trial(repetition, variant, repetition),
        load_stdouts=(text,),
        load_files=("000-x-load.out",),
        load_cpu_seconds=None,
        server_cpu_seconds=server_cpu,
        harness_cpu_seconds=0.01,
        wall_seconds=1.1,
        host_changes=host_changes or {"h": {}},
        host_cpus={"h": 2.0},
    )


def test_fetch_json_values_and_client_cpu():
    result = parse_fetch_json(FETCH_OUTPUT, "raw/x")
    assert result.seconds == (0.5, 0.25, 0.26)
    assert result.bytes == (GIB, GIB, GIB)
    assert result.client_cpu_seconds == 0.12


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "reported no transfers"),
        ('{"seconds": 0.5, "bytes": 1}\nnot json\n', "raw/x:2: not a fetch_json line"),
        ('{"seconds": 0, "bytes": 1}\n', "not positive"),
    ],
)
def test_fetch_json_rejects(text, message):
    with pytest.raises(TrialError, match=message):
        parse_fetch_json(text, "raw/x")


def test_measure_splits_warmups_and_costs_per_gib():
    measurement = measure(output(), "fetch_json", warmup_values=1)
    assert measurement.warmups == (0.5,)
    assert measurement.values == (0.25, 0.26)
    assert measurement.bytes_moved == 3 * GIB
    assert measurement.server_cpu_seconds_per_gib == pytest.approx(0.5)


def test_measure_needs_a_value_after_the_warmups():
    with pytest.raises(TrialError, match="no measured value is left"):
        measure(output(), "fetch_json", warmup_values=3)


def test_pyperf_file_has_one_run_per_repetition(tmp_path):
    measurements = [measure(output(repetition=r), "fetch_json", 1) for r in range(3)]
    measurements.append(measure(output(variant="other"), "fetch_json", 1))
    path = tmp_path / "sendfile_on.json"
    write_pyperf(measurements, "sendfile_on", "sendfile", path)
    benchmark = pyperf.Benchmark.load(str(path))
    assert benchmark.get_name() == "sendfile"
    assert benchmark.get_nrun() == 3
    assert benchmark.get_values() == (0.25, 0.26) * 3
    run = benchmark.get_runs()[0]
    assert run.warmups == ((1, 0.5),)
    assert run.get_metadata()["server_cpu_seconds"] == 1.5
    frame = values_frame(measurements)
    assert list(frame.columns) == ["variant", "condition", "run", "value", "order"]
    assert len(frame) == 8 and set(frame["variant"]) == {"sendfile_on", "other"}


def gate_results(**changes):
    results = gates(measure(output(**changes), "fetch_json", 1), load_cpu_limit=0.95, steal_limit=0.05)
    return {row["gate"]: row for row in results}


def test_gates_pass_on_a_quiet_host():
    results = gate_results()
    assert set(results) == {"load generator CPU", "load errors", "swap", "CPU steal"}
    assert all(row["passed"] for row in results.values())
    assert results["load generator CPU"]["value"] == pytest.approx(0.12 / 1.1)


def test_swap_steal_and_throttling_fail_their_gates():
    results = gate_results(
        host_changes={"h": {"pswpin": 3, "pswpout": 0, "steal_seconds": 0.5, "cgroup_nr_throttled": 2}}
    )
    assert not results["swap"]["passed"] and results["swap"]["value"] == 3
    assert not results["CPU steal"]["passed"]  # 0.5 s of 1.1 s x 2 CPUs
    assert not results["throttling"]["passed"]


def test_a_saturated_load_generator_fails_while_the_server_has_headroom():
    busy_client = FETCH_OUTPUT.replace('"client_cpu_seconds": 0.120000', '"client_cpu_seconds": 1.08')
    assert not gate_results(text=busy_client, server_cpu=0.3)["load generator CPU"]["passed"]
    # Both saturated: the server set the pace, the run stands.
    assert gate_results(text=busy_client, server_cpu=1.09)["load generator CPU"]["passed"]


def test_costs_carry_the_hosts_busy_cpu():
    frame = costs_frame([measure(output(host_changes={"h": {"busy_seconds": 1.25}}), "fetch_json", 1)])
    assert frame.loc[0, "host_busy_cpu_seconds"] == "h=1.250"
    assert frame.loc[0, "server_cpu_s_per_gib"] == pytest.approx(0.5)


def test_load_errors_above_the_limit_fail_their_gate():
    measurement = dataclasses.replace(measure(output(), "fetch_json", warmup_values=1), units=200, errors=3)
    failed = {row["gate"]: row for row in gates(measurement, 0.95, 0.05, error_limit=0.01)}["load errors"]
    assert not failed["passed"] and failed["value"] == pytest.approx(0.015)
    assert "3 of 200 failed" in failed["detail"]
    passing = dataclasses.replace(measurement, errors=2)
    assert {row["gate"]: row for row in gates(passing, 0.95, 0.05, error_limit=0.01)}["load errors"]["passed"]


def test_a_measurement_survives_the_trials_file_round_trip():
    measurement = measure(output(), "fetch_json", warmup_values=1)
    assert store.Trial.from_json(json.loads(json.dumps(measurement.to_json())), "trials.jsonl:1") == measurement


def test_without_a_server_the_load_commands_cpu_is_not_a_fault():
    busy = dataclasses.replace(measure(output(), "fetch_json", warmup_values=1), client_cpu_seconds=1.1)
    assert "load generator CPU" in {row["gate"] for row in gates(busy, 0.95, 0.05)}
    assert "load generator CPU" not in {row["gate"] for row in gates(busy, 0.95, 0.05, has_server=False)}


# --- gates on the trial's CPUs: steal and busy host --------------------------------------


def per_cpu(steal=(0.0, 0.0), process=(0.0, 0.0)):
    """host_changes for a 2-CPU host: per-CPU steal and process seconds, machine-wide steal too."""
    changes = {"steal_seconds": sum(steal)}
    for cpu, (stolen, work) in enumerate(zip(steal, process, strict=True)):
        changes[f"cpu{cpu}_steal_seconds"] = stolen
        changes[f"cpu{cpu}_process_seconds"] = work
    return {"h": changes}


def placed_trial(placement, **changes):
    measurement = measure(output(**changes), "fetch_json", 1)
    return dataclasses.replace(measurement, placement=placement)


SERVER_ON_0 = {"h": {"cpus": [0], "roles": ["server"], "hosts": ["h"], "harness": False}}
BOTH = {"h": {"cpus": None, "roles": ["server", "load"], "hosts": ["h"], "harness": True}}


def test_steal_is_taken_on_the_trials_cpus_not_machine_wide():
    # 0.33 s stolen on CPU 1 only: 15% machine-wide, 0% on the server's CPU 0.
    trial = placed_trial(SERVER_ON_0, host_changes=per_cpu(steal=(0.0, 0.33)))
    steal = {row["gate"]: row for row in gates(trial, 0.95, 0.05)}["CPU steal"]
    assert steal["passed"] and steal["value"] == 0.0 and "CPU 0" in steal["detail"]
    trial = placed_trial(SERVER_ON_0, host_changes=per_cpu(steal=(0.11, 0.0)))
    steal = {row["gate"]: row for row in gates(trial, 0.95, 0.05)}["CPU steal"]
    assert not steal["passed"] and steal["value"] == pytest.approx(0.1)


def test_the_steal_gate_allows_for_the_counters_one_tick_resolution():
    # A 0.1 s window on both CPUs: /proc/stat counts in 0.01 s ticks, each CPU off by up to one.
    def steal_row(ticks: tuple[int, int]):
        changes = per_cpu(steal=(ticks[0] * 0.01, ticks[1] * 0.01))
        changes["h"]["window_seconds"] = 0.1
        trial = placed_trial(BOTH, host_changes=changes)
        return {row["gate"]: row for row in gates(trial, 0.95, 0.05)}["CPU steal"]

    one_tick = steal_row((1, 0))  # reads 5%, but could be nothing at all
    assert one_tick["passed"] and one_tick["value"] == pytest.approx(0.05)
    three = steal_row((2, 1))  # reads 15%, at least 5%: not beyond the limit
    assert three["passed"]
    four = steal_row((2, 2))  # reads 20%, at least 10%
    assert not four["passed"] and "at least 10.0%" in four["detail"]


def test_busy_host_counts_work_neither_server_load_generator_nor_harness_did():
    # Server 1.5 s + client 0.12 s + harness 0.01 s on both CPUs over 1.1 s; 2.0 s were busy.
    trial = placed_trial(BOTH, host_changes=per_cpu(process=(1.1, 0.9)))
    busy = {row["gate"]: row for row in gates(trial, 0.95, 0.05, busy_limit=0.25)}["busy host"]
    assert busy["value"] == pytest.approx((2.0 - 1.63) / 2.2)
    assert busy["passed"]
    # A hog takes 1.1 s more on CPU 0: (3.1 - 1.63) / 2.2 = 67% of the trial's CPUs.
    hogged = placed_trial(BOTH, host_changes=per_cpu(process=(2.2, 0.9)))
    busy = {row["gate"]: row for row in gates(hogged, 0.95, 0.05, busy_limit=0.25)}["busy host"]
    assert not busy["passed"] and busy["value"] == pytest.approx(1.47 / 2.2)
    assert "CPUs 0,1" in busy["detail"] and "1.47 CPU s" in busy["detail"]


def test_busy_host_only_looks_at_the_pinned_cpus():
    # The server pinned to CPU 0 spent 1.1 s there; CPU 1 was full of other work: not the trial's CPU.
    trial = placed_trial(SERVER_ON_0, host_changes=per_cpu(process=(1.1, 1.1)), server_cpu=1.1)
    busy = {row["gate"]: row for row in gates(trial, 0.95, 0.05)}["busy host"]
    assert busy["passed"] and busy["value"] == 0.0


def test_a_trial_recorded_without_placement_has_no_busy_gate_and_machine_wide_steal():
    results = gate_results(host_changes=per_cpu(steal=(0.0, 0.33)))
    assert "busy host" not in results
    assert results["CPU steal"]["value"] == pytest.approx(0.15)


def test_trial_status_replaced_excluded_valid():
    trials = [
        dataclasses.replace(measure(output(repetition=r), "fetch_json", 1), order=order, repetition=r)
        for order, r in ((0, 0), (1, 1), (5, 0))
    ]
    rows = {0: [{"passed": False}], 1: [{"passed": False}], 5: [{"passed": True}]}
    assert trial_status(rows, trials) == {0: "replaced", 1: "excluded", 5: "valid"}
