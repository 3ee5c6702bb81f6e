"""Parameter sweeps for real: a run with a swept delay gives a verdict per condition and one
for the claim; a swept loss drops that share of a port's packets through nftables, and the
trial's clean-up removes the rules."""

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from harness.hosts.remote import HostSession
from tests.builders import LOCAL, run_harness, sweep_experiment

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
