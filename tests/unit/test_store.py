"""The run directory: typed records, format versions, atomic files and `harness verify`."""

import dataclasses
import json

import pandas as pd
import pytest

from harness.errors import HarnessError
from harness.results import store
from harness.results.store import RunDirectory, verify

MANIFEST = store.Manifest(
    run_id="claim-1",
    status="complete",
    started="2026-01-01T00:00:00+00:00",
    experiment=store.ExperimentRecord(file="experiments/x.yaml", sha256="a" * 64, claim_id="claim", quick=True),
    hosts=store.Hosts(
        roles={"server": ("h1",), "client": ("h1",)},
        links=(store.Link("h1", "h1", "lo, mtu 65536"),),
        facts={"h1": {"cores": 2}},
    ),
    order_seed=7,
    stopping=store.Stopping(minimum=3, maximum=6, target_half_width=0.05, rounds=3),
)


@pytest.fixture
def run(tmp_path):
    run = RunDirectory.create(tmp_path, "claim")
    run.write_tables(pd.DataFrame({"variant": [], "run": [], "value": []}), pd.DataFrame(), pd.DataFrame())
    (run.raw / "000-a-load.out").write_text('{"seconds": 1.0, "bytes": 1}\n')
    run.write_manifest(dataclasses.replace(MANIFEST, file_sha256=run.digests()))
    return run


def test_an_untouched_run_verifies(run):
    assert verify(run.path) == 4  # three tables and the raw file


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


def test_every_record_survives_its_file(tmp_path):
    run = RunDirectory.create(tmp_path, "claim")
    trial = store.Trial(
        variant="a",
        repetition=0,
        order=3,
        condition="",
        values=(0.5, 0.25),
        warmups=(1.0,),
        bytes_moved=10,
        server_cpu_seconds=0.1,
        client_cpu_seconds=None,
        harness_cpu_seconds=0.01,
        wall_seconds=1.0,
        load_file="003-a-load.out",
        host_changes={"h1": {"steal_seconds": 0.0}},
        host_cpus={"h1": 2.0},
        units=2,
        setup_seconds=0.2,
        teardown_seconds=0.1,
    )
    entry = store.VerdictEntry(
        claim_id="claim",
        pair=("a", "b"),
        verdict="reproduced",
        pair_name="p",
        condition={"connections": 64},
        condition_label="connections=64",
        measured_ratio=2.0,
    )
    summary = store.Summary(claim_id="claim", verdict="reproduced", counts={"reproduced": 1})
    run.write_manifest(MANIFEST)
    run.write_trials([trial])
    run.write_verdicts([entry])
    run.write_summary(summary)
    assert run.read_manifest() == MANIFEST
    assert run.read_trials() == [trial]
    loaded = store.load_run(run.path)
    assert loaded.verdicts == (entry,) and loaded.summary == summary and loaded.manifest == MANIFEST
    assert entry.key == ("claim", "p", "connections=64")


def test_roles_and_links_are_fields_not_display_text():
    hosts = MANIFEST.hosts
    assert hosts.role_label("h1") == "server+client"
    assert hosts.links[0].server == "h1"


def test_an_unknown_format_version_is_refused_with_its_number(run):
    data = json.loads((run.path / store.MANIFEST).read_text())
    (run.path / store.MANIFEST).write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(HarnessError, match=r"manifest.json: run format 99; this harness reads formats 1, 2"):
        run.read_manifest()


def test_a_format_1_run_loads_with_roles_and_links_from_its_verdicts(tmp_path):
    """Format 1 wrote roles and links only as display keys of each verdict's conditions."""
    (tmp_path / store.MANIFEST).write_text(
        json.dumps(
            {
                "format_version": 1,
                "run_id": "old",
                "status": "complete",
                "started": "2026-01-01T00:00:00+00:00",
                "experiment": {"file": "x.yaml", "sha256": "b" * 64, "claim_id": "claim", "quick": False},
                "hosts": {"facts": {"lab1": {}, "lab2": {}}, "cpu_restriction": None},
            }
        )
    )
    (tmp_path / store.VERDICTS).write_text(
        json.dumps(
            [
                {
                    "claim_id": "claim",
                    "pair": ["a", "b"],
                    "pair_name": "p",
                    "verdict": "not reproduced",
                    "conditions": {"server host": "lab2", "client host": "lab1", "link lab1 -> lab2": "eth0, mtu 1500"},
                }
            ]
        )
    )
    loaded = store.load_run(tmp_path)
    assert loaded.manifest.hosts.roles == {"server": ("lab2",), "client": ("lab1",)}
    assert loaded.manifest.hosts.links == (store.Link("lab1", "lab2", "eth0, mtu 1500"),)
    assert loaded.manifest.hosts.role_label("lab2") == "server"
    assert loaded.values.empty and loaded.summary is None


def test_a_record_without_a_required_field_names_it(tmp_path):
    (tmp_path / store.MANIFEST).write_text(json.dumps({"format_version": 2, "run_id": "r", "status": "complete"}))
    with pytest.raises(HarnessError, match=r"lacks started, experiment|lacks experiment"):
        RunDirectory(tmp_path).read_manifest()


# --- format 2 and older: the old verdict words read as the new ones --------------------


def _old_run(folder, entries, summary):
    (folder / store.MANIFEST).write_text(
        json.dumps(
            {
                "format_version": 2,
                "run_id": "old",
                "status": "complete",
                "started": "2026-01-01T00:00:00+00:00",
                "experiment": {"file": "x.yaml", "sha256": "b" * 64, "claim_id": "claim"},
                "hosts": {},
            }
        )
    )
    (folder / store.VERDICTS).write_text(json.dumps(entries))
    (folder / store.SUMMARY).write_text(json.dumps(summary))
    return store.load_run(folder)


def _entry(condition, verdict, rule, ci_low=1.0, ci_high=1.1):
    return {
        "claim_id": "claim",
        "pair": ["a", "b"],
        "pair_name": "p",
        "condition_label": condition,
        "verdict": verdict,
        "rule": rule,
        "reason": "old reason.",
        "claimed_ratio": 2.0,
        "k": 1.25,
        "ci_low": ci_low,
        "ci_high": ci_high,
    }


def test_old_words_are_read_as_the_new_ones(tmp_path):
    entries = [
        _entry("c=1", "partially reproduced", "ci_low > 1 + margin and ci_high < claimed/k", 1.2, 1.4),
        _entry("c=2", "not reproduced", "ci_high < 1", 0.4, 0.5),
        _entry("c=3", "not reproduced", "ci_high < claimed/k and ci_low <= 1 + margin", 0.98, 1.03),
        _entry("c=4", "reproduced", "ci_low >= claimed/k", 3.0, 3.2),  # wholly above 2 * 1.25
        _entry("c=5", "reproduced", "ci_low >= claimed/k", 1.9, 2.1),
        _entry("c=6", "inconclusive", "run invalid"),
    ]
    summary = {"claim_id": "claim", "verdict": "partially reproduced", "counts": {"partially reproduced": 1}}
    loaded = _old_run(tmp_path, entries, summary)
    words = [entry.verdict for entry in loaded.verdicts]
    assert words == ["smaller effect", "reversed", "no effect", "larger effect", "reproduced", "inconclusive"]
    assert "recorded as 'partially reproduced' by an older harness" in loaded.verdicts[0].reason
    assert loaded.verdicts[4].reason == "old reason."  # unchanged words keep their reason
    assert loaded.summary.verdict == "reproduced under some conditions"
    assert loaded.summary.counts == {
        "smaller effect": 1,
        "reversed": 1,
        "no effect": 1,
        "larger effect": 1,
        "reproduced": 1,
        "inconclusive": 1,
    }


@pytest.mark.parametrize(
    ("old", "entries", "new"),
    [
        (
            "partially reproduced",
            [("partially reproduced", "ci_low > 1 + margin and ci_high < claimed/k")],
            "smaller effect",
        ),
        (
            "not reproduced",
            [("not reproduced", "ci_high < 1"), ("not reproduced", "ci_high < claimed/k and ci_low <= 1 + margin")],
            "no effect",
        ),
        ("not reproduced", [("not reproduced", "ci_high < 1")], "reversed"),
        ("reproduced", [("reproduced", "ci_low >= claimed/k")], "reproduced"),
        ("inconclusive", [("inconclusive", "run invalid")], "inconclusive"),
    ],
)
def test_an_old_claim_word_is_chosen_again_from_its_pairs(tmp_path, old, entries, new):
    rows = [_entry(f"c={n}", verdict, rule) for n, (verdict, rule) in enumerate(entries)]
    loaded = _old_run(tmp_path, rows, {"claim_id": "claim", "verdict": old})
    assert loaded.summary.verdict == new


def test_a_format_3_run_is_read_as_written(tmp_path):
    run = _old_run(
        tmp_path,
        [_entry("", "reproduced", "ci_low >= claimed/k", 3.0, 3.2)],
        {"claim_id": "c", "verdict": "reproduced"},
    )
    assert run.verdicts[0].verdict == "larger effect"  # format 2: re-read
    manifest = json.loads((tmp_path / store.MANIFEST).read_text())
    (tmp_path / store.MANIFEST).write_text(json.dumps({**manifest, "format_version": 3}))
    assert store.load_run(tmp_path).verdicts[0].verdict == "reproduced"  # format 3: its own words
