"""Where a run's time goes: the stage clock (harness/run/timing.py) and the report's table."""

import pytest

from harness.results.report import time_table
from harness.run import timing
from tests.builders import trial_record


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(timing.time, "monotonic", fake)
    return fake


def test_every_second_is_charged_to_the_stage_the_run_was_in(clock):
    stages = timing.StageClock()
    for stage, seconds in [("start-up", 0.5), ("hosts", 1.0), ("snapshot", 2.0), ("provision", 5.0)]:
        stages.enter(stage)
        clock.now += seconds
    stages.enter("trials")
    clock.now += 10.0
    stages.enter("restore")
    clock.now += 1.5
    trials = [trial_record(wall_seconds=3.0, setup_seconds=0.5, teardown_seconds=0.25) for _ in range(2)]
    record = stages.record(trials)
    assert record["stages"] == {
        "start-up": 0.5,
        "hosts": 1.0,
        "snapshot": 2.0,
        "provision": 5.0,
        "trials": 10.0,
        "restore": 1.5,
    }
    assert record["wall_seconds"] == 20.0
    assert record["trials"] == {"load_windows": 6.0, "set_up": 1.0, "tear_down": 0.5, "between": 2.5}
    assert record["load_window_share"] == 0.3


def test_a_resumed_run_adds_to_what_its_first_part_recorded(clock):
    first = {"wall_seconds": 30.0, "stages": {"start-up": 1.0, "trials": 29.0}}
    stages = timing.StageClock(first)
    stages.enter("start-up")
    clock.now += 2.0
    stages.enter("trials")
    clock.now += 8.0
    record = stages.record([])
    assert record["stages"] == {"start-up": 3.0, "trials": 37.0}
    assert record["wall_seconds"] == 40.0


def test_an_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="unknown stage 'warm-up'"):
        timing.StageClock().enter("warm-up")


def test_the_time_table_lists_stages_with_the_trials_split_and_the_wall_time_last():
    record = {
        "wall_seconds": 20.0,
        "stages": {"provision": 5.0, "trials": 15.0},
        "trials": {"load_windows": 12.0, "set_up": 1.0, "tear_down": 1.0, "between": 1.0},
    }
    rows = time_table(record)
    assert [row["seconds"] for row in rows] == [5.0, 15.0, 12.0, 1.0, 1.0, 1.0, 20.0]
    assert [row["part"] for row in rows] == [False, False, True, True, True, True, False]
    assert rows[2]["what"].startswith("load windows") and rows[2]["share"] == 0.6
    assert time_table({}) == []  # a run written before timing was recorded
