"""The parts parameter sweeps rest on: conditions in the plan, the load generators' parsers
(fed with output captured from the real tools, tests/fixtures/loadgen/), the load generator's
CPU time, and the verdict on the claim over all conditions. tests/integration/test_sweep_runs.py
runs a sweep end to end and applies a swept loss with nftables."""

import json

import pandas as pd
import pytest

from harness.errors import SpecError, TrialError
from harness.hosts.remote import HostSession
from harness.results.verdicts import claim_verdict, compare_pair
from harness.run import collect
from harness.run.accounting import load_script, split_load_cpu
from harness.run.plan import conditions, make_plan
from harness.run.spec import load
from tests.builders import LOADGEN, LOCAL, ROOT, sweep_experiment

# --- conditions ----------------------------------------------------------------


def test_conditions_are_every_combination_first_key_slowest():
    found = [c.label for c in conditions({"connections": [1, 64], "size": ["64B", "16KiB"]})]
    assert found == [
        "connections=1, size=64B",
        "connections=1, size=16KiB",
        "connections=64, size=64B",
        "connections=64, size=16KiB",
    ]
    assert [c.label for c in conditions({})] == [""]


def test_a_round_runs_every_variant_under_every_condition_once(tmp_path):
    spec = load(sweep_experiment(tmp_path, "\nsweep:\n  delay_ms: [0, 5, 20]\n"))
    plan = make_plan(spec, quick=False, seed=7)
    round_one = plan.round(1)
    assert len(round_one) == plan.trials_per_round == 6
    assert {(t.variant, t.condition.label) for t in round_one} == {
        (variant, f"delay_ms={d}") for variant in ("full_work", "half_work") for d in (0, 5, 20)
    }
    assert [t.index for t in round_one] == list(range(6, 12))
    assert make_plan(spec, quick=False, seed=7).round(1) == round_one  # the seed replays the order
    assert plan.parameters_for(round_one[0])["delay_ms"] == round_one[0].condition.as_dict()["delay_ms"]


def test_quick_sweep_replaces_the_full_lists(tmp_path):
    path = sweep_experiment(tmp_path, "\nsweep:\n  delay_ms: [0, 5, 20]\n")
    path.write_text(path.read_text().replace("quick:", "quick:\n  sweep:\n    delay_ms: [5]", 1))
    spec = load(path)
    assert [c.label for c in make_plan(spec, quick=True, seed=1).conditions] == ["delay_ms=5"]
    assert len(make_plan(spec, quick=False, seed=1).conditions) == 3


@pytest.mark.parametrize(
    "extra, message",
    [
        ("\nsweep:\n  iterations: [1, 2]\n", "sweep.iterations: 'iterations' is both a parameter and swept"),
        ("\nsweep:\n  port: [1, 2]\n", "sweep.port: 'port' is a placeholder the harness fills"),
        ("\nsweep:\n  delay_ms: [fast]\n", "sweep.delay_ms: delay_ms values must be numbers"),
        ("\nsweep:\n  size: [1, 1]\n", "sweep.size: a value is listed twice"),
        ("\nsweep:\n  size: []\n", "sweep.size: List should have at least 1 item"),
    ],
)
def test_bad_sweeps_name_the_field_and_line(tmp_path, extra, message):
    path = sweep_experiment(tmp_path, extra)
    with pytest.raises(SpecError) as error:
        load(path)
    last_line = len(path.read_text().splitlines())  # the swept name's own line
    assert f"sweep.yaml:{last_line}: {message}" in str(error.value)


def test_quick_sweep_of_an_unswept_name_is_refused(tmp_path):
    path = sweep_experiment(tmp_path, "\nsweep:\n  delay_ms: [0, 5]\n")
    path.write_text(path.read_text().replace("quick:", "quick:\n  sweep:\n    rtt: [5]", 1))
    with pytest.raises(SpecError, match=r"quick\.sweep\.rtt: 'rtt' is not in sweep"):
        load(path)


# --- parsers, on output captured from the real tools on this machine ------------


def test_wrk_value_is_seconds_per_request():
    result = collect.parse_wrk((LOADGEN / "wrk.txt").read_text(), "wrk.txt")
    assert result.seconds == pytest.approx((1 / 809.74,))
    assert (result.units, result.errors) == (817, 0)


def test_wrk_counts_non_2xx_responses_as_errors():
    result = collect.parse_wrk((LOADGEN / "wrk-non2xx.txt").read_text(), "wrk-non2xx.txt")
    assert (result.units, result.errors) == (2190, 2190)


def test_wrk_counts_socket_errors():
    text = (
        (LOADGEN / "wrk.txt")
        .read_text()
        .replace("Requests/sec", "  Socket errors: connect 3, read 4, write 0, timeout 1\nRequests/sec")
    )
    assert collect.parse_wrk(text, "x").errors == 8


def test_h2load_value_and_errors():
    result = collect.parse_h2load((LOADGEN / "h2load.txt").read_text(), "h2load.txt")
    assert result.seconds == pytest.approx((1 / 652.92,))
    assert (result.units, result.errors) == (200, 0)
    failed = (
        (LOADGEN / "h2load.txt")
        .read_text()
        .replace("200 succeeded, 0 failed, 0 errored", "150 succeeded, 30 failed, 20 errored")
    )
    assert collect.parse_h2load(failed, "x").errors == 50


def test_redis_benchmark_gives_one_value_per_test_row():
    result = collect.parse_redis_benchmark((LOADGEN / "redis-benchmark.csv").read_text(), "r.csv")
    assert result.seconds == pytest.approx((1 / 111111.12, 1 / 71428.57))


def test_json_values_sums_units_and_errors():
    text = '{"value": 0.002, "units": 100, "errors": 1}\n{"value": 0.001, "units": 100}\n{"client_cpu_seconds": 0.5}\n'
    result = collect.parse_json_values(text, "x")
    assert result.seconds == (0.002, 0.001)
    assert (result.units, result.errors, result.client_cpu_seconds) == (200, 1, 0.5)


@pytest.mark.parametrize(
    "parser, text",
    [
        ("wrk", "unable to connect to 127.0.0.1:1 Connection refused\n"),
        ("h2load", "starting benchmark...\n"),
        ("redis_benchmark", "Could not connect to Redis\n"),
        ("json_values", '{"value": 0}\n'),
        ("json_values", "{not json\n"),
        ("json_values", ""),
    ],
)
def test_output_without_values_fails_the_trial_naming_the_file(parser, text):
    with pytest.raises(TrialError, match="raw/x.out"):
        collect.PARSERS[parser](text, "raw/x.out")


# --- the load generator's CPU time ---------------------------------------------


def test_load_script_reports_the_load_generators_cpu_time(tmp_path):
    busy = [
        "python3",
        "-c",
        "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\nprint('done')",
    ]
    with HostSession(LOCAL) as session:
        result = session.shell(load_script(busy, str(tmp_path / "load.pid"), None, 30), timeout=60, check=False)
    stderr, cpu = split_load_cpu(result.stderr)
    assert result.exited == 0 and result.stdout == "done\n"
    assert stderr == ""
    assert 0.3 <= cpu < 1.0
    assert (tmp_path / "load.pid").read_text().strip().isdigit()


def test_load_script_keeps_the_exit_status_and_stderr(tmp_path):
    failing = ["sh", "-c", "echo broken >&2; exit 3"]
    with HostSession(LOCAL) as session:
        result = session.shell(load_script(failing, str(tmp_path / "load.pid"), None, 30), timeout=60, check=False)
    stderr, cpu = split_load_cpu(result.stderr)
    assert result.exited == 3
    assert stderr == "broken\n"
    assert cpu is not None


# --- the verdict on the claim ----------------------------------------------------


def verdict_for(ratio: float, condition: str, spread: float = 0.01):
    rows = [
        (variant, run, mean * (1 + spread * (run - 2)))
        for variant, mean in (("base", ratio), ("treat", 1.0))
        for run in range(5)
    ]
    values = pd.DataFrame(rows, columns=["variant", "run", "value"])
    return compare_pair(
        values, pair="p", baseline="base", treatment="treat", claimed_ratio=2.0, better="lower", condition=condition
    )


def test_claim_holds_everywhere_only_when_every_condition_reproduces():
    assert claim_verdict([verdict_for(2.0, "a"), verdict_for(2.1, "b")]).verdict == "reproduced"
    mixed = claim_verdict([verdict_for(2.0, "a"), verdict_for(1.0, "b")])
    assert mixed.verdict == "reproduced under some conditions"
    assert mixed.counts == {"reproduced": 1, "no effect": 1}
    assert mixed.best.condition == "a" and "holds only under some conditions: p · a (" in mixed.reason
    assert claim_verdict([verdict_for(1.0, "a"), verdict_for(0.5, "b")]).verdict == "no effect"
    undecided = claim_verdict([verdict_for(1.0, "a"), verdict_for(1.6, "b", spread=0.2)])
    assert undecided.verdict == "inconclusive"


def test_a_swept_mapping_sets_its_placeholders_together_and_is_named_by_its_first():
    found = conditions({"batch": [16, 64], "rtt": [{"delay_ms": 0, "calls": 20000}, {"delay_ms": 5, "calls": 300}]})
    assert [c.label for c in found] == [
        "batch=16, delay_ms=0",
        "batch=16, delay_ms=5",
        "batch=64, delay_ms=0",
        "batch=64, delay_ms=5",
    ]
    assert found[1].as_dict() == {"batch": 16, "delay_ms": 5, "calls": 300}


@pytest.mark.parametrize(
    "extra, message",
    [
        ("\nsweep:\n  rtt: [{delay_ms: 0, calls: 1}, {delay_ms: 5}]\n", "sweep.rtt: give every value as a mapping"),
        ("\nsweep:\n  rtt: [{delay_ms: 0}, 5]\n", "sweep.rtt: give every value as a mapping"),
        ("\nsweep:\n  rtt: [{delay_ms: -1, calls: 1}]\n", "sweep.rtt: delay_ms values must be numbers"),
        ("\nsweep:\n  rtt: [{iterations: 1}]\n", "sweep.rtt: 'iterations' is both a parameter and swept"),
    ],
)
def test_bad_swept_mappings_are_refused(tmp_path, extra, message):
    with pytest.raises(SpecError, match=message):
        load(sweep_experiment(tmp_path, extra))


def test_iperf3_json_value_is_seconds_per_gib_received():
    text = (ROOT / "experiments" / "multiqueue" / "testdata" / "iperf3-tcp-2streams.json").read_text()
    received = json.loads(text)["end"]["sum_received"]
    result = collect.parse_iperf3_json(text, "x")
    assert result.seconds == pytest.approx((received["seconds"] / (received["bytes"] / 2**30),))
    refused = (ROOT / "experiments" / "multiqueue" / "testdata" / "iperf3-refused.json").read_text()
    with pytest.raises(TrialError, match="iperf3 failed"):
        collect.parse_iperf3_json(refused, "x")


def test_irq_node_names_a_node_the_host_lacks_before_writing_anything():
    import subprocess

    addresses = [
        entry["local"]
        for link in json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=False).stdout)
        if link["ifname"] != "lo"
        for entry in link.get("addr_info", [])
        if entry.get("family") == "inet"
    ]
    if not addresses:
        pytest.skip("no device but lo holds an IPv4 address")
    script = ROOT / "playbooks" / "files" / "host_state.py"
    given = json.dumps({"address": addresses[0], "net": {"irq_node": 999}})
    result = subprocess.run(
        ["/usr/bin/python3", str(script), "tune"], input=given, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "no NUMA node 999: cannot set irq_node" in result.stderr
    assert json.loads(result.stdout)["failures"]  # and it wrote nothing: no other field was given


# --- the claim's word over every condition: one test per rule of CLAIM_RULE -----------------


def test_claim_not_applicable_only_when_every_condition_is():
    na = compare_pair(
        pd.DataFrame(columns=["variant", "run", "value"]),
        pair="p",
        baseline="base",
        treatment="treat",
        claimed_ratio=2.0,
        better="lower",
        not_applicable="no IPv6",
    )
    assert claim_verdict([na, na]).verdict == "not applicable"
    assert claim_verdict([na, verdict_for(2.0, "a")]).verdict == "reproduced"


def test_claim_reproduced_with_some_larger_still_reads_reproduced_and_says_so():
    found = claim_verdict([verdict_for(2.0, "a"), verdict_for(5.0, "b")])
    assert [found.verdict, found.counts] == ["reproduced", {"reproduced": 1, "larger effect": 1}]
    assert "1 of them measured wholly above" in found.reason


def test_claim_larger_effect_when_every_condition_is():
    assert claim_verdict([verdict_for(5.0, "a"), verdict_for(6.0, "b")]).verdict == "larger effect"


def test_claim_reproduced_under_some_conditions_names_them():
    found = claim_verdict([verdict_for(1.0, "a"), verdict_for(2.0, "b"), verdict_for(5.0, "c")])
    assert found.verdict == "reproduced under some conditions"
    assert "p · b, p · c" in found.reason and "p · a," not in found.reason


def test_claim_inconclusive_when_nothing_holds_and_something_is_undecided():
    undecided = verdict_for(1.6, "b", spread=0.2)
    assert undecided.verdict == "inconclusive"
    assert claim_verdict([verdict_for(1.3, "a"), undecided]).verdict == "inconclusive"


def test_claim_otherwise_takes_the_most_favourable_decided_word():
    smaller, none, reversed_ = verdict_for(1.3, "a"), verdict_for(1.0, "b"), verdict_for(0.5, "c")
    assert [smaller.verdict, none.verdict, reversed_.verdict] == ["smaller effect", "no effect", "reversed"]
    assert claim_verdict([smaller, none, reversed_]).verdict == "smaller effect"
    assert claim_verdict([none, reversed_]).verdict == "no effect"
    assert claim_verdict([reversed_, reversed_]).verdict == "reversed"
    assert claim_verdict([]).verdict == "inconclusive"
