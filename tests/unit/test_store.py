"""The run directory: atomic files and the sha256 check of `harness verify`."""

import pytest

from harness.errors import HarnessError
from harness.results.store import RunDirectory, verify


@pytest.fixture
def run(tmp_path):
    run = RunDirectory.create(tmp_path, "claim")
    run.write_text("measurements.csv", "variant,run,value\n")
    (run.raw / "000-a-load.out").write_text('{"seconds": 1.0, "bytes": 1}\n')
    run.write_json("manifest.json", {"file_sha256": run.digests()})
    return run


def test_an_untouched_run_verifies(run):
    assert verify(run.path) == 2


def test_a_missing_file_is_named(run):
    (run.raw / "000-a-load.out").unlink()
    with pytest.raises(HarnessError, match=r"raw/000-a-load.out: missing"):
        verify(run.path)


def test_an_added_file_is_named(run):
    (run.raw / "extra.txt").write_text("x")
    with pytest.raises(HarnessError, match=r"raw/extra.txt: not written by the run"):
        verify(run.path)


def test_a_directory_without_manifest(tmp_path):
    with pytest.raises(HarnessError, match="no manifest.json"):
        verify(tmp_path)
