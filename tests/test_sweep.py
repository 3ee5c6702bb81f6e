"""Parameter sweeps end to end, and the parts they rest on: conditions in the plan,
the load generators' parsers (fed with output captured from the real tools here),
the load generator's CPU time, and the verdict on the claim over all conditions."""

import json
from collections import Counter
import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness.run import collect
from harness.results.verdicts import compare_pair, claim_verdict
from harness.errors import SpecError, TrialError
from harness.run.execute import _load_script, _split_load_cpu
from harness.hosts.inventory import Host
from harness.run.plan import conditions, make_plan
from harness.hosts.remote import HostSession
from harness.run.spec import load
from tests.conftest import ROOT, run_harness

LOADGEN = Path(__file__).parent / "fixtures" / "loadgen"
LOCAL = Host(name="localhost", address="127.0.0.1", port=22, user="root", local=True)


# --- conditions ----------------------------------------------------------------


def test_conditions_are_every_combination_first_key_slowest():
    found = [c.label for c in conditions({"connections": [1, 64], "size": ["64B", "16KiB"]})]
    assert found == ["connections=1, size=64B", "connections=1, size=16KiB",
                     "connections=64, size=64B", "connections=64, size=16KiB"]
    assert [c.label for c in conditions({})] == [""]


def sweep_experiment(tmp_path, extra: str) -> Path:
    source = ROOT / "experiments" / "calibration" / "known_effect.yaml"
    work = tmp_path / "work"
    work.mkdir()
    shutil.copyfile(ROOT / "experiments" / "calibration" / "work" / "work_server.c", work / "work_server.c")
    shutil.copyfile(ROOT / "experiments" / "sendfile" / "fetch.c", work / "fetch.c")
    target = tmp_path / "sweep.yaml"
    target.write_text(source.read_text() + extra)
    return target


def test_a_round_runs_every_variant_under_every_condition_once(tmp_path):
    spec = load(sweep_experiment(tmp_path, "\nsweep:\n  delay_ms: [0, 5, 20]\n"))
    plan = make_plan(spec, quick=False, seed=7)
    round_one = plan.round(1)
    assert len(round_one) == plan.trials_per_round == 6
    assert {(t.variant, t.condition.label) for t in round_one} == {
        (variant, f"delay_ms={d}") for variant in ("full_work", "half_work") for d in (0, 5, 20)}
    assert [t.index for t in round_one] == list(range(6, 12))
    assert make_plan(spec, quick=False, seed=7).round(1) == round_one  # the seed replays the order
    assert plan.parameters_for(round_one[0])["delay_ms"] == round_one[0].condition.as_dict()["delay_ms"]


def test_quick_sweep_replaces_the_full_lists(tmp_path):
    path = sweep_experiment(tmp_path, "\nsweep:\n  delay_ms: [0, 5, 20]\n")
    path.write_text(path.read_text().replace("quick:", "quick:\n  sweep:\n    delay_ms: [5]", 1))
    spec = load(path)
    assert [c.label for c in make_plan(spec, quick=True, seed=1).conditions] == ["delay_ms=5"]
    assert len(make_plan(spec, quick=False, seed=1).conditions) == 3


@pytest.mark.parametrize("extra, message", [
    ("\nsweep:\n  iterations: [1, 2]\n", "sweep.iterations: 'iterations' is both a parameter and swept"),
    ("\nsweep:\n  port: [1, 2]\n", "sweep.port: 'port' is a placeholder the harness fills"),
    ("\nsweep:\n  delay_ms: [fast]\n", "sweep.delay_ms: delay_ms values must be numbers"),
    ("\nsweep:\n  size: [1, 1]\n", "sweep.size: a value is listed twice"),
    ("\nsweep:\n  size: []\n", "sweep.size: List should have at least 1 item"),
])
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
    text = (LOADGEN / "wrk.txt").read_text().replace(
        "Requests/sec", "  Socket errors: connect 3, read 4, write 0, timeout 1\nRequests/sec")
    assert collect.parse_wrk(text, "x").errors == 8


def test_h2load_value_and_errors():
    result = collect.parse_h2load((LOADGEN / "h2load.txt").read_text(), "h2load.txt")
    assert result.seconds == pytest.approx((1 / 652.92,))
    assert (result.units, result.errors) == (200, 0)
    failed = (LOADGEN / "h2load.txt").read_text().replace("200 succeeded, 0 failed, 0 errored",
                                                           "150 succeeded, 30 failed, 20 errored")
    assert collect.parse_h2load(failed, "x").errors == 50


def test_redis_benchmark_gives_one_value_per_test_row():
    result = collect.parse_redis_benchmark((LOADGEN / "redis-benchmark.csv").read_text(), "r.csv")
    assert result.seconds == pytest.approx((1 / 111111.12, 1 / 71428.57))


def test_json_values_sums_units_and_errors():
    text = '{"value": 0.002, "units": 100, "errors": 1}\n{"value": 0.001, "units": 100}\n{"client_cpu_seconds": 0.5}\n'
    result = collect.parse_json_values(text, "x")
    assert result.seconds == (0.002, 0.001)
    assert (result.units, result.errors, result.client_cpu_seconds) == (200, 1, 0.5)


@pytest.mark.parametrize("parser, text", [
    ("wrk", "unable to connect to 127.0.0.1:1 Connection refused\n"),
    ("h2load", "starting benchmark...\n"),
    ("redis_benchmark", "Could not connect to Redis\n"),
    ("json_values", '{"value": 0}\n'),
    ("json_values", "{not json\n"),
    ("json_values", ""),
])
def test_output_without_values_fails_the_trial_naming_the_file(parser, text):
    with pytest.raises(TrialError, match="raw/x.out"):
        collect.PARSERS[parser](text, "raw/x.out")


# --- the load generator's CPU time ---------------------------------------------


def test_load_script_reports_the_load_generators_cpu_time(tmp_path):
    busy = ["python3", "-c", "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
            "print('done')"]
    with HostSession(LOCAL) as session:
        result = session.shell(_load_script(busy, str(tmp_path / "load.pid"), None, 30), timeout=60, check=False)
    stderr, cpu = _split_load_cpu(result.stderr)
    assert result.exited == 0 and result.stdout == "done\n"
    assert stderr == ""
    assert 0.3 <= cpu < 1.0
    assert (tmp_path / "load.pid").read_text().strip().isdigit()


def test_load_script_keeps_the_exit_status_and_stderr(tmp_path):
    failing = ["sh", "-c", "echo broken >&2; exit 3"]
    with HostSession(LOCAL) as session:
        result = session.shell(_load_script(failing, str(tmp_path / "load.pid"), None, 30), timeout=60, check=False)
    stderr, cpu = _split_load_cpu(result.stderr)
    assert result.exited == 3
    assert stderr == "broken\n"
    assert cpu is not None


# --- the verdict on the claim ----------------------------------------------------


def verdict_for(ratio: float, condition: str, spread: float = 0.01):
    rows = [(variant, run, mean * (1 + spread * (run - 2)))
            for variant, mean in (("base", ratio), ("treat", 1.0)) for run in range(5)]
    values = pd.DataFrame(rows, columns=["variant", "run", "value"])
    return compare_pair(values, pair="p", baseline="base", treatment="treat", claimed_ratio=2.0, better="lower",
                        condition=condition)


def test_claim_holds_everywhere_only_when_every_condition_reproduces():
    assert claim_verdict([verdict_for(2.0, "a"), verdict_for(2.1, "b")]).verdict == "reproduced"
    mixed = claim_verdict([verdict_for(2.0, "a"), verdict_for(1.0, "b")])
    assert mixed.verdict == "partially reproduced"
    assert mixed.counts == {"reproduced": 1, "not reproduced": 1}
    assert mixed.best.condition == "a" and "p · a" in mixed.reason
    assert claim_verdict([verdict_for(1.0, "a"), verdict_for(0.5, "b")]).verdict == "not reproduced"
    undecided = claim_verdict([verdict_for(1.0, "a"), verdict_for(1.6, "b", spread=0.2)])
    assert undecided.verdict == "inconclusive"


# --- a real run with a swept delay -----------------------------------------------


def test_a_swept_delay_gives_a_verdict_per_condition_and_one_for_the_claim(tmp_path):
    """The known effect (half the CPU work) under 0 and 25 ms of added delay each way:
    the delay is the same for both variants, so it must shrink the ratio."""
    path = sweep_experiment(tmp_path, "\nsweep:\n  delay_ms: [0, 25]\n")
    text = path.read_text().replace("iterations: 210000000", "iterations: 21000000")
    text = text.replace("half_iterations: 105000000", "half_iterations: 10500000")
    path.write_text(text.replace("quick:", "quick:\n  repetitions: 3", 1).replace("  repetitions: 12\n", ""))
    result = run_harness("run", path, "--quick", "--seed", "3", "--out", tmp_path / "out", timeout=300)
    assert result.returncode == 0, result.stderr
    run_dir = next((tmp_path / "out").iterdir())
    verdicts = json.loads((run_dir / "verdicts.json").read_text())
    assert [v["condition"] for v in verdicts] == [{"delay_ms": 0}, {"delay_ms": 25}]
    no_delay, delayed = verdicts
    assert delayed["measured_ratio"] < no_delay["measured_ratio"]
    values = pd.read_csv(run_dir / "measurements.csv")
    assert values.loc[values["condition"] == "delay_ms=25", "value"].min() >= 0.050  # two 25 ms legs at least
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["sweep"] == {"delay_ms": [0, 25]}
    assert summary["counts"] == dict(Counter(v["verdict"] for v in verdicts))
    assert summary["best"]["condition"] == "delay_ms=0"
    for number in (0, 1):
        assert (run_dir / "pyperf" / f"full_work-c{number}.json").exists()
    html = (run_dir / "index.html").read_text()
    assert "Verdict on the claim" in html and "delay_ms=25" in html
    # Loopback traffic raises NET_RX softirqs; the report spreads them over the CPUs per series.
    assert "<td>full_work · delay_ms=25</td><td>localhost</td>" in html



# --- swept loss --------------------------------------------------------------------


@pytest.mark.skipif(not Path("/usr/sbin/nft").exists(), reason="nftables is not installed (harness lab up installs it)")
def test_swept_loss_drops_that_share_of_the_ports_packets_and_clean_up_removes_the_rules():
    import socket

    from harness.hosts.nftables import TRIAL_TABLE as LOSS_TABLE
    from harness.run.execute import _clean_up, _drop_share
    from harness.run.plan import Condition, Trial

    trial = Trial(0, "v", 0, Condition((("loss_percent", 50),)))
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(0.05)
    port = receiver.getsockname()[1]
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    other.settimeout(0.05)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with HostSession(LOCAL) as session:
        try:
            _drop_share(session, port, 50, trial)
            received = untouched = 0
            for _ in range(20):  # in batches, so that no socket buffer overflows
                for _ in range(100):
                    sender.sendto(b"x", ("127.0.0.1", port))
                    sender.sendto(b"x", other.getsockname())
                received += _drain(receiver)
                untouched += _drain(other)
            assert 850 <= received <= 1150  # half of 2000, give or take sampling (7 standard deviations)
            assert untouched == 2000  # another port is untouched
        finally:
            problems = _clean_up(session, session, None, None, "", "", True, Path("/tmp"), "x", loss=50)
        assert problems == []
        listed = session.shell(f"/usr/sbin/nft list table inet {LOSS_TABLE}", check=False)
        assert listed.exited != 0  # the table is gone


def _drain(sock) -> int:
    count = 0
    try:
        while True:
            sock.recv(16)
            count += 1
    except OSError:
        return count


def test_a_swept_mapping_sets_its_placeholders_together_and_is_named_by_its_first():
    found = conditions({"batch": [16, 64], "rtt": [{"delay_ms": 0, "calls": 20000}, {"delay_ms": 5, "calls": 300}]})
    assert [c.label for c in found] == ["batch=16, delay_ms=0", "batch=16, delay_ms=5",
                                        "batch=64, delay_ms=0", "batch=64, delay_ms=5"]
    assert found[1].as_dict() == {"batch": 16, "delay_ms": 5, "calls": 300}


@pytest.mark.parametrize("extra, message", [
    ("\nsweep:\n  rtt: [{delay_ms: 0, calls: 1}, {delay_ms: 5}]\n", "sweep.rtt: give every value as a mapping"),
    ("\nsweep:\n  rtt: [{delay_ms: 0}, 5]\n", "sweep.rtt: give every value as a mapping"),
    ("\nsweep:\n  rtt: [{delay_ms: -1, calls: 1}]\n", "sweep.rtt: delay_ms values must be numbers"),
    ("\nsweep:\n  rtt: [{iterations: 1}]\n", "sweep.rtt: 'iterations' is both a parameter and swept"),
])
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

    addresses = [entry["local"] for link in json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True,
                                                                        text=True).stdout)
                 if link["ifname"] != "lo" for entry in link.get("addr_info", []) if entry.get("family") == "inet"]
    if not addresses:
        pytest.skip("no device but lo holds an IPv4 address")
    script = ROOT / "playbooks" / "files" / "host_state.py"
    given = json.dumps({"address": addresses[0], "net": {"irq_node": 999}})
    result = subprocess.run(["/usr/bin/python3", str(script), "tune"], input=given, capture_output=True, text=True)
    assert result.returncode != 0
    assert "no NUMA node 999: cannot set irq_node" in result.stderr
    assert json.loads(result.stdout)["failures"]  # and it wrote nothing: no other field was given
