"""An experiment that asks for added delay gets it from the delay proxy when there is no netem."""

import json
import subprocess

import pandas as pd
import pytest

from tests.builders import run_harness

pytestmark = pytest.mark.integration

DELAY_MS = 20


def test_link_delay_goes_through_the_proxy(experiment_copy, tmp_path):
    text = (
        experiment_copy.read_text()
        .replace("workload: sendfile\n", f"workload: sendfile\nlink:\n  delay_ms: {DELAY_MS}\n")
        .replace("repetitions: 5", "repetitions: 3")
        .replace("file_size: 256MiB", "file_size: 1MiB")
    )
    experiment_copy.write_text(text)
    result = run_harness("run", experiment_copy, "--quick", "--out", tmp_path / "out", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "out").iterdir()
    conditions = json.loads((run_dir / "verdicts.json").read_text())[0]["conditions"]
    assert (
        conditions["added delay"]
        == f"{DELAY_MS} ms each way, by harness/hosts/delay_proxy.py on the client host (no netem)"
    )
    # The request and the first bytes of the answer each wait DELAY_MS in the proxy.
    values = pd.read_csv(run_dir / "measurements.csv")["value"]
    assert values.min() >= 2 * DELAY_MS / 1000
    # Every proxy was stopped with its trial.
    assert subprocess.run(["pgrep", "-f", "delay_proxy.py"], capture_output=True, check=False).returncode == 1
