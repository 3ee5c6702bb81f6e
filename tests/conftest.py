"""Fixtures for every tier. The tiers are folders:

    tests/unit/          pure: no servers, no Ansible, no root; seconds
    tests/integration/   real servers, Ansible, sshd, network namespaces, root
    tests/workloads/     the experiments' own programs (experiments/<claim>/)

Plain helpers (paths, the CLI runner, experiment and run builders) are in tests/builders.py.
"""

import shutil
from pathlib import Path

import pytest

from tests.builders import ROOT

INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(items):
    """Every test in tests/integration/ is an integration test, marked or not."""
    for item in items:
        if item.path.is_relative_to(INTEGRATION):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def experiment_copy(tmp_path):
    """A writable copy of the sendfile experiment and its workload folder."""
    shutil.copytree(ROOT / "experiments" / "sendfile", tmp_path / "sendfile")
    target = tmp_path / "sendfile.yaml"
    shutil.copyfile(ROOT / "experiments" / "sendfile.yaml", target)
    return target
