import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = Path(sys.executable).parent / "harness"


@pytest.fixture
def experiment_copy(tmp_path):
    """A writable copy of the sendfile experiment and its workload folder."""
    shutil.copytree(ROOT / "experiments" / "sendfile", tmp_path / "sendfile")
    target = tmp_path / "sendfile.yaml"
    shutil.copyfile(ROOT / "experiments" / "sendfile.yaml", target)
    return target


def run_harness(*args, cwd=None, timeout=120):
    """The CLI as a user runs it: a subprocess, its exit code and both streams."""
    return subprocess.run([str(HARNESS), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)
