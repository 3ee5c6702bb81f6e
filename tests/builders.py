"""What several test modules build: paths, the CLI as a user runs it, experiment files and
run directories. Test modules import this module; no test module imports another.

Fixtures live in the conftest.py files (tests/conftest.py for every tier, tests/unit/ and
tests/integration/ for their own); the plain functions they and the tests call live here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.hosts.inventory import Host
from harness.results import store
from harness.results.verdicts import compare_pair

ROOT = Path(__file__).resolve().parent.parent
HARNESS = Path(sys.executable).parent / "harness"
TEMPLATES = ROOT / "templates"
FIXTURES = ROOT / "tests" / "fixtures"
BAD = FIXTURES / "bad"  # one fault per file; valid.yaml is the base they were made from
VALID = BAD / "valid.yaml"
LOADGEN = FIXTURES / "loadgen"  # load generators' output, captured from the real tools

# This machine as a host: HostSession runs its commands locally, without SSH.
LOCAL = Host(name="localhost", address="127.0.0.1", port=22, user="root", local=True)


def run_harness(*args, cwd=None, timeout=120):
    """The CLI as a user runs it: a subprocess, its exit code and both streams."""
    return subprocess.run(
        [str(HARNESS), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout, check=False
    )


def assert_one_error_line(result, *fragments):
    """Exit status 1, the last stderr line an `error: ` naming every fragment, no traceback."""
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) >= 1 and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])


def numa_nodes() -> int:
    """How many NUMA nodes this machine has."""
    return len([name for name in os.listdir("/sys/devices/system/node") if name[4:].isdigit()])


def sweep_experiment(folder: Path, extra: str) -> Path:
    """The known-effect calibration with `extra` appended (a sweep:, a requires: ...), and
    the sources its builds need, in `folder`."""
    source = ROOT / "experiments" / "calibration" / "known_effect.yaml"
    work = folder / "work"
    work.mkdir()
    shutil.copyfile(ROOT / "experiments" / "calibration" / "work" / "work_server.c", work / "work_server.c")
    shutil.copyfile(ROOT / "experiments" / "sendfile" / "fetch.c", work / "fetch.c")
    target = folder / "sweep.yaml"
    target.write_text(source.read_text() + extra)
    return target


# --- a real quick run ------------------------------------------------------------------------

CLAIM = "calibration_known_effect"  # the claim of the real quick run


@dataclass(frozen=True)
class QuickRun:
    run_dir: Path
    returncode: int
    stdout: str
    stderr: str


# The known-effect calibration, smaller: 14M rounds (~20 ms) per request instead of 210M, 4
# repetitions, its own ports. Each edit must apply, so a change to the original fails here.
_SMALLER = {
    "iterations: 210000000": "iterations: 14000000",
    "half_iterations: 105000000": "half_iterations: 7000000",
    "port: 18111": "port: 18711",
    "port: 18112": "port: 18712",
    "  repetitions: 12": "  repetitions: 4",
}


def small_known_effect_run(base: Path) -> QuickRun:
    """`harness run --quick` of a smaller known-effect experiment, with its output under `base`."""
    source = ROOT / "experiments" / "calibration"
    shutil.copytree(source / "work", base / "work")  # symlinks into the catalog become files
    text = (source / "known_effect.yaml").read_text()
    for old, new in _SMALLER.items():
        assert old in text, old
        text = text.replace(old, new)
    (base / "small.yaml").write_text(text)
    result = run_harness("run", base / "small.yaml", "--quick", "--out", base / "out", timeout=300)
    run_dirs = sorted((base / "out").iterdir()) if (base / "out").exists() else []
    assert result.returncode == 0 and len(run_dirs) == 1, result.stderr
    return QuickRun(run_dirs[0], result.returncode, result.stdout, result.stderr)


# --- run directories with a known answer ------------------------------------------------------


def frame(rng, ratio: float, runs: int = 8, noise: float = 0.05, values_per_run: int = 3) -> pd.DataFrame:
    """Seconds per request: baseline `ratio` x the treatment's, lognormal noise per value."""
    rows = [
        (variant, run, mean * np.exp(rng.normal(0, noise)))
        for variant, mean in (("base", ratio), ("treat", 1.0))
        for run in range(runs)
        for _ in range(values_per_run)
    ]
    return pd.DataFrame(rows, columns=["variant", "run", "value"])


def swept(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One values frame from a frame per condition label."""
    return pd.concat([values.assign(condition=label) for label, values in frames.items()], ignore_index=True)


def write_run(
    path: Path,
    values: pd.DataFrame,
    *,
    sha256: str = "a" * 64,
    run_id: str | None = None,
    pairs=(("p", "base", "treat"),),
    with_condition_column: bool = True,
) -> Path:
    """A run directory as the pipeline writes it, from a values frame with a condition column."""
    path.mkdir(parents=True)
    verdicts = []
    for label in dict.fromkeys(values["condition"]):
        own = values[values["condition"] == label]
        for name, baseline, treatment in pairs:
            verdict = compare_pair(
                own, pair=name, baseline=baseline, treatment=treatment, claimed_ratio=2.0, better="lower"
            )
            verdicts.append(
                {
                    "claim_id": "synthetic",
                    "pair_name": name,
                    "pair": [baseline, treatment],
                    "condition": dict(part.split("=") for part in label.split(", ")) if label else {},
                    "condition_label": label,
                    **{
                        key: getattr(verdict, key)
                        for key in (
                            "claimed_ratio",
                            "measured_ratio",
                            "ci_low",
                            "ci_high",
                            "confidence",
                            "verdict",
                            "rule",
                            "reason",
                            "n_baseline",
                            "n_treatment",
                        )
                    },
                }
            )
    if not with_condition_column:
        values = values.drop(columns="condition")
        for entry in verdicts:
            del entry["condition"], entry["condition_label"]
    values.to_csv(path / "measurements.csv", index=False)
    (path / "verdicts.json").write_text(json.dumps(verdicts))
    (path / "manifest.json").write_text(
        json.dumps(
            {
                "format_version": 1,
                "run_id": run_id or path.name,
                "status": "complete",
                "started": "2026-01-01T00:00:00+00:00",
                "experiment": {
                    "file": "synthetic.yaml",
                    "sha256": sha256,
                    "claim_id": "synthetic",
                    "quick": True,
                    "parameters": {},
                },
                "hosts": {"facts": {"h1": {"cpu_model": "Test CPU", "cores": 2, "kernel": "6.1"}}},
            }
        )
    )
    return path


def derived_run(
    source: Path,
    parent: Path,
    suffix: str,
    *,
    ratio: float | None = None,
    kernel: str | None = None,
    hostname: str | None = None,
    cpu_restriction=None,
    sha256: str | None = None,
    started: str | None = None,
) -> Path:
    """A copy of a run directory with known changes. With `ratio`, every value is replaced by a
    clean one (3% noise, seeded) whose baseline/treatment ratio is `ratio`, so that the verdict
    is known whatever the shared machine did to the real run; the verdicts are recomputed the
    way the pipeline computes them. Also: host facts, CPU restriction, experiment hash, start time."""
    target = parent / f"{source.name}-{suffix}"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("ansible"))
    values = pd.read_csv(target / "measurements.csv", dtype={"condition": str}, keep_default_na=False, na_values=[""])
    values["condition"] = values["condition"].fillna("") if "condition" in values else ""
    verdicts = json.loads((target / "verdicts.json").read_text())
    for entry in verdicts:
        baseline, treatment = entry["pair"]
        chosen = values["condition"] == entry.get("condition_label", "")
        if ratio is not None:
            noise = np.exp(np.random.default_rng(zlib.crc32(suffix.encode())).normal(0, 0.03, len(values)))
            for variant, mean in ((baseline, 0.03), (treatment, 0.03 / ratio)):
                rows = chosen & (values["variant"] == variant)
                values.loc[rows, "value"] = mean * noise[rows.to_numpy()]
        verdict = compare_pair(
            values[chosen],
            pair=entry["pair_name"],
            baseline=baseline,
            treatment=treatment,
            claimed_ratio=entry["claimed_ratio"],
            better="lower",
        )
        entry.update(
            {
                key: getattr(verdict, key)
                for key in ("measured_ratio", "ci_low", "ci_high", "verdict", "rule", "reason", "half_width")
            }
        )
    values.to_csv(target / "measurements.csv", index=False)
    (target / "verdicts.json").write_text(json.dumps(verdicts, indent=2))
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["run_id"] = target.name
    if started:
        manifest["started"] = started
    for facts in manifest["hosts"]["facts"].values():
        facts["kernel"] = kernel or facts["kernel"]
        facts["hostname"] = hostname or facts["hostname"]
    if cpu_restriction is not None:
        manifest["hosts"]["cpu_restriction"] = cpu_restriction  # a string, as `harness run --cpus` records it
    if sha256:
        manifest["experiment"]["sha256"] = sha256
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    summary_file = target / "summary.json"
    if summary_file.exists():
        summary = json.loads(summary_file.read_text())
        summary["verdict"] = verdicts[0]["verdict"] if len({v["verdict"] for v in verdicts}) == 1 else "mixed"
        summary_file.write_text(json.dumps(summary))
    return target


def journal_experiment(folder: Path) -> Path:
    """The smaller known-effect experiment (_SMALLER, 2 quick repetitions: 4 trials) that also
    sets two sysctls and, in one variant, receive and transmit steering: a run of it changes
    what a killed controller would leave changed."""
    source = ROOT / "experiments" / "calibration"
    shutil.copytree(source / "work", folder / "work")
    text = (source / "known_effect.yaml").read_text()
    edits = {
        **_SMALLER,
        "  repetitions: 4": "  repetitions: 2",
        "provision:\n  packages:": (
            'provision:\n  sysctls:\n    net.core.somaxconn: 1234\n    net.ipv4.tcp_rmem: "4096 65536 3000001"\n'
            "  packages:"
        ),
        "    load: *fetch\n": '    load: *fetch\n    net: {rps_cpus: "3", xps_cpus: "3"}\n',
    }
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    target = folder / "journal.yaml"
    target.write_text(text)
    return target


def trial_record(**overrides) -> store.Trial:
    """A completed trial's record with plausible numbers; `overrides` set any field."""
    fields = {
        "variant": "a",
        "repetition": 0,
        "order": 0,
        "condition": "",
        "values": (0.5, 0.25),
        "warmups": (1.0,),
        "bytes_moved": 10,
        "server_cpu_seconds": 0.1,
        "client_cpu_seconds": None,
        "harness_cpu_seconds": 0.01,
        "wall_seconds": 1.0,
        "load_file": "000-a-load.out",
        "host_changes": {"h1": {"steal_seconds": 0.0}},
        "host_cpus": {"h1": 2.0},
    }
    return store.Trial(**{**fields, **overrides})


def valid_trials(run_dir: Path) -> dict[str, int]:
    """variant -> how many of its trials count (passed every validity gate), from costs.csv:
    on this VM CPU steal keeps some trials out, so tests count values per valid trial."""
    costs = pd.read_csv(run_dir / "costs.csv")
    return costs[costs["status"] == "valid"].groupby("variant").size().to_dict()
