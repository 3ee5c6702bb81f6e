from harness.cpuset import CpuSet
from harness.run import spec
from harness.run.plan import make_plan
from harness.run.profile import resolve_profile
from tests.builders import ROOT

NAMES = ["python_readwrite", "python_sendfile", "nginx_sendfile_off", "nginx_sendfile_on"]


def sendfile():
    return spec.load(ROOT / "experiments" / "sendfile.yaml")


def test_every_round_runs_every_variant_once_in_a_seeded_order():
    plan = make_plan(sendfile(), quick=True, seed=7)
    assert plan.variants == tuple(NAMES)
    trials = plan.trials
    assert len(trials) == 5 * 4
    for repetition in range(5):
        round_trials = trials[repetition * 4 : (repetition + 1) * 4]
        assert sorted(t.variant for t in round_trials) == sorted(NAMES)
        assert {t.repetition for t in round_trials} == {repetition}
    assert [t.index for t in trials] == list(range(20))
    orders = {tuple(t.variant for t in plan.round(r)) for r in range(10)}
    assert len(orders) > 1  # shuffled, not the same order every round
    assert plan.profile.parameters["file_size"] == "256MiB"


def test_the_same_seed_gives_the_same_order_and_another_seed_another():
    first = [t.variant for t in make_plan(sendfile(), quick=False, seed=7).trials]
    again = [t.variant for t in make_plan(sendfile(), quick=False, seed=7).trials]
    other = [t.variant for t in make_plan(sendfile(), quick=False, seed=8).trials]
    assert first == again and first != other


def test_stopping_rule_without_and_with_a_target():
    fixed = make_plan(sendfile(), quick=False, seed=1).profile.stopping
    assert (fixed.minimum, fixed.maximum, fixed.target) == (10, 30, 0.05)
    quick = make_plan(sendfile(), quick=True, seed=1)
    assert (quick.profile.stopping.minimum, quick.profile.stopping.maximum) == (5, 5)
    adaptive = make_plan(sendfile(), quick=False, seed=1, target=0.03)
    assert adaptive.profile.stopping.target == 0.03
    assert adaptive.profile.stopping.maximum >= adaptive.profile.stopping.minimum == 10
    assert adaptive.most_trials == adaptive.profile.stopping.maximum * 4


def test_the_plan_carries_the_resolved_profile():
    loaded = sendfile()
    plan = make_plan(loaded, quick=True, seed=3, target=0.02, cpus=CpuSet.parse("0-1"))
    assert plan.profile == resolve_profile(loaded, quick=True, target=0.02, cpus=CpuSet.parse("0-1"))
    assert plan.profile.quick
    assert plan.profile.repetitions == 5
    assert str(plan.profile.cpus) == "0-1"
    assert make_plan(loaded, quick=False, seed=3).profile.cpus is None
