from harness import spec
from harness.plan import make_plan
from tests.conftest import ROOT


def test_trials_interleave_variants_for_every_repetition():
    loaded = spec.load(ROOT / "experiments" / "sendfile.yaml")
    plan = make_plan(loaded, quick=True)
    names = ["python_readwrite", "python_sendfile", "nginx_sendfile_off", "nginx_sendfile_on"]
    assert plan.variants == names
    assert len(plan.trials) == 5 * 4
    assert [t.variant for t in plan.trials[:8]] == names + names
    assert [t.repetition for t in plan.trials[:5]] == [0, 0, 0, 0, 1]
    assert [t.index for t in plan.trials] == list(range(20))
    assert plan.parameters["file_size"] == "256MiB"
    assert make_plan(loaded, quick=False).repetitions == 10
