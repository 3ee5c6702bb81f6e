"""Fixtures of the integration tier: labs that are taken down after their module, one real
quick run per session, and the reports folder and published site built from it
(test_compare_real_run, test_publish, test_browser).

Every test of this tier carries the `integration` marker (see pytest_collection_modifyitems
in tests/conftest.py), so `-m "not integration"` leaves the whole tier out.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.hosts.lab import lab_down, lab_up
from harness.results import publish
from tests.builders import TEMPLATES, QuickRun, derived_run, frame, small_known_effect_run, swept, write_run


@pytest.fixture(scope="module")
def make_lab(request, tmp_path_factory):
    """make_lab(name, base_dir=None, **options): lab_up in base_dir (a new folder by default),
    and lab_down after the module's last test, also of a lab whose lab_up failed halfway."""

    def make(name: str, base_dir: Path | None = None, **options):
        base_dir = base_dir or tmp_path_factory.mktemp("labs")
        request.addfinalizer(lambda: lab_down(name, base_dir))  # first: runs even if lab_up fails
        return lab_up(name, base_dir=base_dir, **options)

    return make


@pytest.fixture(scope="session")
def real_run(tmp_path_factory) -> QuickRun:
    """A real `harness run --quick` of a smaller known-effect experiment, made once per session."""
    return small_known_effect_run(tmp_path_factory.mktemp("real-run"))


@pytest.fixture(scope="session")
def published_runs(real_run, tmp_path_factory) -> dict[str, Path]:
    """A reports folder as several `harness run --out` calls leave it; the runs by role: the
    real run, an older run and one on another host (derived from it, the latter's verdict
    flipped), a synthetic run of a second claim with a sweep whose conditions disagree, and
    a folder that is not a whole run."""
    reports = tmp_path_factory.mktemp("reports")
    runs = {"real": reports / real_run.run_dir.name}
    shutil.copytree(real_run.run_dir, runs["real"])
    runs["older"] = derived_run(real_run.run_dir, reports, "older", ratio=2.0, started="2000-01-01T00:00:00+00:00")
    runs["other_host"] = derived_run(
        real_run.run_dir,
        reports,
        "otherhost",
        ratio=2 / 3,
        hostname="otherhost",
        kernel="6.1.0-test",
        started="2099-01-01T00:00:00+00:00",
    )
    rng = np.random.default_rng(20)
    runs["synthetic"] = write_run(
        reports / "lab" / "synthetic-20260101",
        swept({"connections=1": frame(rng, 2.0), "connections=64": frame(rng, 1.0)}),
        sha256="c" * 64,
    )
    broken = reports / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text(json.dumps({"run_id": "broken"}))
    return runs


@pytest.fixture(scope="session")
def site(published_runs, tmp_path_factory):
    """`harness publish` of that reports folder."""
    return publish.build_site(published_runs["real"].parent, tmp_path_factory.mktemp("site") / "site", TEMPLATES)
