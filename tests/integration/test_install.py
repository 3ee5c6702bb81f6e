"""A plain (non-editable) `pip install` into a fresh venv outside the checkout gives a
`harness` that runs: templates, playbooks and the default inventory ship inside the package.

The harness is built and installed afresh from a copy of the files pyproject.toml names; its
dependencies are this test venv's, seen through a .pth file (and its commands on PATH), so
that the test does not download and install pandas, scipy and matplotlib a second time.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# What a source distribution holds: pyproject.toml names the rest.
SOURCE_FILES = ["pyproject.toml", "README.md", "inventory.ini", "harness", "templates", "playbooks"]

EXPERIMENT = """
version: 1
claim:
  id: installed
  statement: "half the loop is 2x faster"
  source: {file: tests/integration/test_install.py, section: "EXPERIMENT"}
  claimed_ratio: 2.0
  metric: seconds per loop
  unit: s
  better: lower
roles: {client: clients}
workload: work
parameters: {long: 400000, short: 200000}
variants:
  long_loop:
    load:
      role: client
      command: [python3, -c, "import json, time; t = time.process_time(); sum(i * i for i in range({long}));
                 print(json.dumps({{'value': time.process_time() - t}}))"]
      parser: json_values
  short_loop:
    load:
      role: client
      command: [python3, -c, "import json, time; t = time.process_time(); sum(i * i for i in range({short}));
                 print(json.dumps({{'value': time.process_time() - t}}))"]
      parser: json_values
pairs:
  - {name: loops, baseline: long_loop, treatment: short_loop}
repetitions: 3
warmup_values: 0
quick: {repetitions: 3}
"""


# The dependencies' commands (ansible-playbook) come from this venv as well.
ENVIRONMENT = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def _run(argv, **kwargs):
    return subprocess.run(
        [str(word) for word in argv], capture_output=True, text=True, check=False, env=ENVIRONMENT, **kwargs
    )


def _python(venv: Path, code: str, cwd: Path | None = None):
    """`code` run by the venv's python, from `cwd` (never the checkout: `python -c` imports from there)."""
    return _run([venv / "bin" / "python", "-c", code], cwd=cwd or venv, timeout=60)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv with the harness installed from a copy of its source (no link to the checkout)."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    source.mkdir()
    for name in SOURCE_FILES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    venv = base / "venv"
    created = _run([sys.executable, "-m", "venv", venv], timeout=120)
    assert created.returncode == 0, created.stderr
    pip = [venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check"]
    installed = _run([*pip, "install", "--quiet", "--no-deps", source], timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # Written after the install, so that pip never sees this venv's editable harness; appended
    # to sys.path after the venv's own site-packages, so that the installed harness comes first.
    site = Path(_python(venv, "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv.resolve()


def test_the_installed_package_holds_templates_playbooks_and_inventory(venv, tmp_path):
    shown = _python(
        venv,
        "import json, harness.resources as r; print(json.dumps({'file': r.__file__, 'files': [str(p) for p in "
        "(r.TEMPLATES / 'report.html.j2', r.PLAYBOOKS / 'provision.yml', r.HOST_STATE_SCRIPT, r.default_inventory()) "
        "if p.is_file()]}))",
        cwd=tmp_path,
    )
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout)
    assert Path(found["file"]).is_relative_to(venv)
    assert len(found["files"]) == 4 and all(Path(path).is_relative_to(venv) for path in found["files"])


def test_test_tools_are_no_runtime_dependency(venv):
    shown = _python(
        venv, "import json; from importlib import metadata; print(json.dumps(metadata.requires('harness')))"
    )
    requirements = json.loads(shown.stdout)
    runtime = [line for line in requirements if "extra ==" not in line]
    assert not any(line.startswith(("pytest", "selenium", "ruff", "ansible-lint")) for line in runtime), runtime
    assert any(line.startswith("pytest") and 'extra == "test"' in line for line in requirements), requirements


def test_validate_runs_from_the_checkout_and_from_elsewhere(venv, tmp_path):
    from_checkout = _run([venv / "bin" / "harness", "validate", "experiments/sendfile.yaml"], cwd=ROOT, timeout=120)
    assert from_checkout.returncode == 0, from_checkout.stderr
    assert from_checkout.stdout.strip().endswith("sendfile.yaml: ok (sendfile, 4 variants, 2 pairs)")
    elsewhere = _run(
        [venv / "bin" / "harness", "validate", ROOT / "experiments/sendfile.yaml"], cwd=tmp_path, timeout=120
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert elsewhere.stderr == ""


def test_a_run_uses_the_shipped_playbooks_templates_and_inventory(venv, tmp_path):
    # No inventory.ini in the current folder: the shipped localhost one is used.
    (tmp_path / "work").mkdir()
    (tmp_path / "installed.yaml").write_text(EXPERIMENT)
    result = _run(
        [venv / "bin" / "harness", "run", "installed.yaml", "--quick", "--out", "out"], cwd=tmp_path, timeout=600
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "out").iterdir()
    verdicts = json.loads((run_dir / "verdicts.json").read_text())
    assert verdicts, "no verdicts"
    assert "loops" in (run_dir / "index.html").read_text()
