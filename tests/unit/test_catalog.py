"""The catalog: every claim of the seed has an experiment file that validates, has a quick
profile, and is described in the README."""

import pytest

from harness.run.spec import load
from tests.builders import ROOT

CLAIMS = (
    "sendfile",
    "io_uring",
    "per_core",
    "numa",
    "multiqueue",
    "zero_copy_serialization",
    "batch_rpc",
    "quic",
    "xdp",
)
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("claim", CLAIMS)
def test_each_claim_has_a_valid_experiment_with_a_quick_profile(claim):
    path = ROOT / "experiments" / f"{claim}.yaml"
    if not path.exists():
        pytest.fail(f"no experiment file for the claim {claim}")
    spec = load(path)
    assert spec.claim.id == claim
    assert spec.quick.repetitions is not None, "a quick profile keeps --quick short"
    assert f"`experiments/{claim}.yaml`" in README, "the README's catalog describes it"


def test_every_experiment_file_is_a_claim_of_the_catalog():
    files = {path.stem for path in (ROOT / "experiments").glob("*.yaml")}
    assert files == set(CLAIMS)
