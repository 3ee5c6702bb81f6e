"""The run directory and its typed records; the only module that knows the on-disk layout.

    <out>/<claim>-<UTC time>-<random>/
        index.html        the report
        verdicts.json     one VerdictEntry per compared pair and condition
        manifest.json     a Manifest: what ran, where, with which versions; the harness's own costs
        summary.json      a Summary: the verdict on the claim over every pair and condition
        trials.jsonl      one Trial per completed trial, written as it completes (--resume)
        measurements.csv  every measured value; costs.csv per-trial CPU costs; gates.csv validity gates
        drift.json        settings that restore could not put back
        pyperf/<variant>[-c<N>].json, pyperf/compare-<pair>[-c<N>].txt
        raw/              load-generator output, server logs, rendered configs, topology
        ansible/          ansible-runner artifacts of each playbook call

It is longer than most modules because it is the one place that knows the run format: every
record, every file name and the upgrade of older formats live here and nowhere else.

Every record is a frozen dataclass with `to_json()` and `from_json(data, source)` (pyperf's
model: the objects are the only way anyone touches the JSON). `FORMAT_VERSION` is written into
every manifest and checked on read; runs of format 1 (before hosts' roles and links were fields
of their own) are upgraded as they load. Files are written to a temporary name and renamed, so
a reader never sees half a file and an interrupted run leaves whole files behind
(write_atomically, also used for the compare and site pages).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness import controller as controller_module
from harness.errors import HarnessError

# 3: verdict words changed (issue 17): "partially reproduced" and "not reproduced" became
# "smaller effect", "no effect" and "reversed", and "reproduced" no longer covers an interval
# wholly above claimed*k ("larger effect"); trials that failed a gate are replaced.
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
GIB = 1 << 30

MANIFEST = "manifest.json"
VERDICTS = "verdicts.json"
SUMMARY = "summary.json"
TRIALS = "trials.jsonl"
MEASUREMENTS = "measurements.csv"
COSTS = "costs.csv"
GATES = "gates.csv"
DRIFT = "drift.json"
REPORT = "index.html"
SUBFOLDERS = ("raw", "pyperf", "ansible")


def write_atomically(target: Path, text: str) -> Path:
    """Write `text` to a temporary file beside `target`, then rename it into place."""
    target = Path(target)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, target)
    return target


def _json_text(data) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"


# --- records ----------------------------------------------------------------------------


def _record(cls, data, source: str, **converted):
    """A `cls` from its JSON object: keys it does not know are left out (a newer writer's
    extras), missing keys with defaults take them, a missing required key is an error."""
    if not isinstance(data, dict):
        raise HarnessError(f"{source}: holds {type(data).__name__}, not the object a run writes")
    known = {f.name: f for f in dataclasses.fields(cls)}
    values = {name: value for name, value in data.items() if name in known}
    values.update(converted)
    missing = [
        name
        for name, f in known.items()
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise HarnessError(f"{source}: lacks {', '.join(missing)} (not written by this harness?)")
    return cls(**values)


@dataclass(frozen=True)
class Link:
    """How a load generator reaches its server: the route's device and its properties."""

    client: str
    server: str
    description: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Hosts:
    """The hosts of a run: who played which role, their facts and settings, the links between them."""

    roles: dict[str, tuple[str, ...]] = field(default_factory=dict)  # role -> host names
    links: tuple[Link, ...] = ()
    facts: dict = field(default_factory=dict)  # host -> Ansible facts the harness keeps
    sysctls_before: dict = field(default_factory=dict)
    sysctls_applied: dict = field(default_factory=dict)
    settings_before: dict = field(default_factory=dict)
    state_notes: dict = field(default_factory=dict)
    cpu_restriction: str | None = None  # --cpus: part of the host's fingerprint
    topology: dict = field(default_factory=dict)  # host -> {"cpus", "numa_nodes"}
    tools: dict = field(default_factory=dict)  # host -> tool -> version

    def role_label(self, host: str) -> str:
        """'server+client' for a host that played both roles; the host's name when it played none."""
        names = [role for role, hosts in self.roles.items() if host in hosts]
        return "+".join(names) or host

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["roles"] = {role: list(hosts) for role, hosts in self.roles.items()}
        return data

    @classmethod
    def from_json(cls, data, source: str) -> Hosts:
        data = data if isinstance(data, dict) else {}
        roles = {str(role): tuple(hosts) for role, hosts in (data.get("roles") or {}).items()}
        links = tuple(_record(Link, link, f"{source}: hosts.links") for link in data.get("links") or ())
        return _record(cls, data, source, roles=roles, links=links)


@dataclass(frozen=True)
class ExperimentRecord:
    file: str
    sha256: str | None
    claim_id: str
    path: str | None = None
    quick: bool = False
    repetitions: int | None = None
    parameters: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Stopping:
    minimum: int | None = None
    maximum: int | None = None
    target_half_width: float | None = None
    time_budget_s: float | None = None
    rounds: int = 0
    reason: str | None = None
    retries_per_variant: int | None = None  # trials failing a gate that may run again (format 3)
    retries_total: int | None = None


@dataclass(frozen=True)
class Manifest:
    """What ran, where, with which versions, and what the harness itself cost."""

    run_id: str
    status: str  # running (written as the run starts), complete, interrupted, or "failed: <why>"
    started: str
    experiment: ExperimentRecord
    hosts: Hosts
    format_version: int = FORMAT_VERSION
    finished: str | None = None
    resumed_trials: int = 0
    inventory: str | None = None
    harness: dict = field(default_factory=dict)  # version, git_commit
    python: dict = field(default_factory=dict)  # version, packages
    trials: dict = field(default_factory=dict)  # planned, most, completed
    order_seed: int | None = None
    stopping: Stopping = Stopping()
    harness_costs: dict = field(default_factory=dict)
    # Where the wall time went (harness/run/timing.py): wall_seconds, stages, trials, load_window_share.
    timing: dict = field(default_factory=dict)
    # The process running the run (harness/controller.py): a "running" run whose
    # controller is gone crashed (shown_status), and `harness run --resume` finishes it.
    controller: dict = field(default_factory=dict)
    # Journals of earlier runs this run found on its hosts and restored before its own
    # snapshot: {"host", "run_id", "result"} each.
    recovered: list = field(default_factory=list)
    file_sha256: dict | None = None  # written last, for `harness verify`

    @property
    def shown_status(self) -> str:
        """The status as compare and publish show it: a run still marked running whose
        controller no longer runs is "crashed"; one recorded on another machine cannot be
        checked from here: "running or crashed"."""
        if self.status != "running":
            return self.status
        alive = controller_module.alive(self.controller)
        if alive is None:
            return "running or crashed"
        return "running" if alive else "crashed"

    def to_json(self) -> dict:
        data = {"format_version": self.format_version, **dataclasses.asdict(self)}  # the version first, for a reader
        data["hosts"] = self.hosts.to_json()
        if self.file_sha256 is None:
            del data["file_sha256"]
        return data

    @classmethod
    def from_json(cls, data, source: str) -> Manifest:
        if not isinstance(data, dict):
            raise HarnessError(f"{source}: holds {type(data).__name__}, not a manifest")
        version = data.get("format_version")
        if version not in READABLE_VERSIONS:
            raise HarnessError(
                f"{source}: run format {version!r}; this harness reads formats "
                f"{', '.join(map(str, READABLE_VERSIONS))} (use the harness that wrote it)"
            )
        nested = {
            "experiment": lambda value: _record(ExperimentRecord, value, f"{source}: experiment"),
            "hosts": lambda value: Hosts.from_json(value, f"{source}: hosts"),
            "stopping": lambda value: _record(Stopping, value or {}, f"{source}: stopping"),
        }
        return _record(cls, data, source, **{key: read(data[key]) for key, read in nested.items() if key in data})


@dataclass(frozen=True)
class Trial:
    """One completed trial's numbers: warm-ups split off, CPU costs attached."""

    variant: str
    repetition: int
    order: int  # the trial's position in the run
    condition: str  # the swept values, "" when nothing is swept
    values: tuple[float, ...]
    warmups: tuple[float, ...]
    bytes_moved: int
    server_cpu_seconds: float
    client_cpu_seconds: float | None
    harness_cpu_seconds: float
    wall_seconds: float
    load_file: str
    host_changes: dict
    host_cpus: dict
    units: int = 0
    errors: int = 0
    # Per machine: the CPUs the trial's processes were allowed to use, roles, hosts (format 3).
    placement: dict = field(default_factory=dict)
    # Wall time around the load window: before it (config, server start, readiness, counters)
    # and after it (counters, stopping the server); None in runs written before these existed.
    setup_seconds: float | None = None
    teardown_seconds: float | None = None

    @property
    def server_cpu_seconds_per_gib(self) -> float:
        return self.server_cpu_seconds / (self.bytes_moved / GIB) if self.bytes_moved else float("nan")

    @property
    def server_cpu_seconds_per_unit(self) -> float:
        return self.server_cpu_seconds / self.units if self.units else float("nan")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data, source: str) -> Trial:
        try:
            return _record(cls, data, source, values=tuple(data["values"]), warmups=tuple(data["warmups"]))
        except (KeyError, TypeError) as exc:
            raise HarnessError(f"{source}: a trial record does not fit this harness: {exc}") from None


@dataclass(frozen=True)
class VerdictEntry:
    """One pair under one condition: the claimed and measured ratio and the verdict."""

    claim_id: str
    pair: tuple[str, str]  # baseline, treatment
    verdict: str
    pair_name: str = ""
    better: str = "lower"
    condition: dict = field(default_factory=dict)  # the swept values
    condition_label: str = ""
    claimed_ratio: float | None = None
    measured_ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float | None = None
    rule: str | None = None
    reason: str = ""
    n_baseline: int | None = None
    n_treatment: int | None = None
    half_width: float | None = None
    runs_needed: int | None = None
    k: float | None = None
    margin: float | None = None
    margin_source: str | None = None
    pyperf_compare_to: str | None = None
    pyperf_note: str | None = None
    conditions: dict = field(default_factory=dict)  # the report's conditions table, as display text
    # Trials of this pair and condition that failed a validity gate (format 3): gate -> count, and
    # how many of them a later trial replaced; the verdict uses valid trials only.
    invalid_trials: dict = field(default_factory=dict)
    replaced_trials: int = 0

    @property
    def baseline(self) -> str:
        return self.pair[0]

    @property
    def treatment(self) -> str:
        return self.pair[1]

    @property
    def name(self) -> str:
        return self.pair_name or "/".join(self.pair)

    @property
    def label(self) -> str:
        """The swept values as text, '' when nothing was swept."""
        return self.condition_label or ", ".join(f"{key}={value}" for key, value in self.condition.items())

    @property
    def key(self) -> tuple[str, str, str]:
        """What the entry is about, for lining runs up: (claim, pair, condition)."""
        return self.claim_id, self.name, self.label

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["pair"] = list(self.pair)
        return data

    @classmethod
    def from_json(cls, data, source: str) -> VerdictEntry:
        pair = tuple((list(data.get("pair") or []) + ["", ""])[:2]) if isinstance(data, dict) else ()
        return _record(cls, data, source, pair=pair)


@dataclass(frozen=True)
class Summary:
    """The verdict on the claim over every pair and condition."""

    claim_id: str
    verdict: str
    reason: str = ""
    statement: str | None = None
    claimed_ratio: float | None = None
    better: str = "lower"
    status: str | None = None
    sweep: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)  # verdict -> how many pair/condition verdicts had it
    best: dict | None = None  # the pair and condition with the largest measured ratio
    rule: str = ""  # how the claim's word was chosen from the pairs' (format 3)
    replaced_trials: int = 0  # trials that failed a gate and were run again (format 3)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data, source: str) -> Summary:
        return _record(cls, data, source)


@dataclass(frozen=True)
class StoredRun:
    """A run directory read back: what compare and publish know of a run."""

    path: Path
    manifest: Manifest
    verdicts: tuple[VerdictEntry, ...]
    summary: Summary | None
    values: pd.DataFrame  # variant, run, value, condition ("" without a sweep)

    @property
    def run_id(self) -> str:
        return self.manifest.run_id or self.path.name

    @property
    def claim_id(self) -> str:
        return self.manifest.experiment.claim_id or (self.verdicts[0].claim_id if self.verdicts else "unknown")

    @property
    def host_label(self) -> str:
        """The hosts' own names (`hostname` fact), else their inventory names."""
        facts = self.manifest.hosts.facts
        names = sorted({str((fact or {}).get("hostname") or host) for host, fact in facts.items()})
        return ", ".join(names) or "unknown host"


# --- the directory ----------------------------------------------------------------------


@dataclass(frozen=True)
class RunDirectory:
    path: Path

    @classmethod
    def create(cls, out_dir: Path, claim_id: str) -> RunDirectory:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = Path(out_dir) / f"{claim_id}-{stamp}-{secrets.token_hex(2)}"
        try:
            path.mkdir(parents=True)
            for sub in SUBFOLDERS:
                (path / sub).mkdir()
        except OSError as exc:
            raise HarnessError(
                f"{out_dir}: cannot create the run directory: {exc.strerror} (pick another --out)"
            ) from None
        return cls(path)

    @classmethod
    def existing(cls, path: Path) -> RunDirectory:
        """A run directory written before, to resume: it must hold a manifest."""
        path = Path(path)
        if not (path / MANIFEST).is_file():
            raise HarnessError(f"{path}: no {MANIFEST}; is this a run directory?")
        for sub in SUBFOLDERS:
            (path / sub).mkdir(exist_ok=True)
        return cls(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    def has_file(self, name: str) -> bool:
        return (self.path / name).is_file()

    @property
    def raw(self) -> Path:
        return self.path / "raw"

    @property
    def ansible(self) -> Path:
        return self.path / "ansible"

    def pyperf_file(self, variant: str, condition: int | None = None) -> Path:
        """pyperf/<variant>.json, or pyperf/<variant>-c<N>.json for the N-th swept condition."""
        return self.path / "pyperf" / f"{variant}{_condition_suffix(condition)}.json"

    def pyperf_compare_file(self, pair: str, condition: int | None = None) -> Path:
        return self.path / "pyperf" / f"compare-{pair}{_condition_suffix(condition)}.txt"

    def topology_file(self, host: str) -> Path:
        return self.raw / f"topology-{host}.txt"

    @staticmethod
    def topology_name(host: str) -> str:
        """The topology file as the report and notes name it, relative to the run."""
        return f"raw/topology-{host}.txt"

    # Writing. Each writer names its file here, so no other module spells a file name.

    def write_text(self, name: str | Path, text: str) -> Path:
        return write_atomically(self.path / name, text)

    def write_manifest(self, manifest: Manifest) -> Path:
        return self.write_text(MANIFEST, _json_text(manifest.to_json()))

    def write_verdicts(self, entries: list[VerdictEntry]) -> Path:
        return self.write_text(VERDICTS, _json_text([entry.to_json() for entry in entries]))

    def write_summary(self, summary: Summary) -> Path:
        return self.write_text(SUMMARY, _json_text(summary.to_json()))

    def write_trials(self, trials: list[Trial]) -> Path:
        return self.write_text(TRIALS, "".join(json.dumps(trial.to_json()) + "\n" for trial in trials))

    def write_tables(self, measurements: pd.DataFrame, costs: pd.DataFrame, gates: pd.DataFrame) -> None:
        for name, frame in ((MEASUREMENTS, measurements), (COSTS, costs), (GATES, gates)):
            self.write_text(name, frame.to_csv(index=False))

    def write_drift(self, drift: list[dict]) -> Path:
        return self.write_text(DRIFT, _json_text(drift))

    def write_report(self, html: str) -> Path:
        return self.write_text(REPORT, html)

    # Reading.

    def read_manifest(self) -> Manifest:
        return Manifest.from_json(self._read_json(MANIFEST, "is this a run directory?"), str(self.path / MANIFEST))

    def read_trials(self) -> list[Trial]:
        """Every trial recorded so far; [] when none completed."""
        target = self.path / TRIALS
        if not target.exists():
            return []
        try:
            lines = target.read_text().splitlines()
            return [
                Trial.from_json(json.loads(line), f"{target}:{number}")
                for number, line in enumerate(lines, 1)
                if line.strip()
            ]
        except (OSError, ValueError) as exc:
            raise HarnessError(f"{target}: cannot be read: {exc}") from None

    def _read_json(self, name: str, hint: str):
        try:
            return json.loads((self.path / name).read_text())
        except FileNotFoundError:
            raise HarnessError(f"{self.path}: no {name}; {hint}") from None
        except (OSError, ValueError) as exc:
            raise HarnessError(f"{self.path / name}: cannot be read: {exc}") from None

    def digests(self) -> dict[str, str]:
        """sha256 of every file of the run but the manifest that holds them."""
        return {name: _sha256(self.path / name) for name in self.files(include_ansible=True) if name != MANIFEST}

    def files(self, include_ansible: bool = False) -> list[str]:
        """Every file of the run, relative to its directory, for the report's links."""
        return sorted(
            str(p.relative_to(self.path))
            for p in self.path.rglob("*")
            if p.is_file()
            and not p.name.startswith(".")
            and (include_ansible or "ansible" not in p.relative_to(self.path).parts[:1])
        )

    def report_links(self) -> list[str]:
        """The files the report links to: every file but the report itself."""
        return [name for name in self.files() if name != REPORT]


def _condition_suffix(condition: int | None) -> str:
    return "" if condition is None else f"-c{condition}"


def is_run_directory(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def find_runs(folder: Path) -> list[Path]:
    """Every run directory under `folder` (a folder with a manifest), in path order."""
    return [manifest.parent for manifest in sorted(Path(folder).rglob(MANIFEST))]


def load_run(path: str | Path) -> StoredRun:
    """Read a run directory for compare and publish: manifest, verdicts, values, summary."""
    run = RunDirectory(Path(path))
    raw_manifest = run._read_json(MANIFEST, "is this a run directory?")
    if isinstance(raw_manifest, dict) and raw_manifest.get("status") == "running" and not run.has_file(VERDICTS):
        shown = Manifest.from_json(raw_manifest, str(run.path / MANIFEST)).shown_status
        raise HarnessError(
            f"{run.path}: {shown}: the run wrote no verdicts yet"
            + ("; finish it with `harness run --resume`" if shown != "running" else "")
        )
    raw_verdicts = run._read_json(VERDICTS, "the run wrote no verdicts; it cannot be compared")
    if not isinstance(raw_verdicts, list):
        raise HarnessError(f"{run.path / VERDICTS}: holds {type(raw_verdicts).__name__}, not a list of verdicts")
    verdicts = tuple(
        VerdictEntry.from_json(entry, f"{run.path / VERDICTS}: entry {number}")
        for number, entry in enumerate(raw_verdicts, 1)
    )
    version = raw_manifest.get("format_version") if isinstance(raw_manifest, dict) else None
    if version == 1:
        raw_manifest = _upgrade_v1(raw_manifest, verdicts)
    manifest = Manifest.from_json(raw_manifest, str(run.path / MANIFEST))
    summary = None
    if run.has_file(SUMMARY):
        summary = Summary.from_json(run._read_json(SUMMARY, ""), str(run.path / SUMMARY))
    if version in (1, 2):  # written with the old verdict words: every reader sees the new ones
        verdicts = tuple(upgrade_verdict(entry) for entry in verdicts)
        summary = upgrade_summary(summary, verdicts) if summary is not None else None
    return StoredRun(
        path=run.path,
        manifest=manifest,
        verdicts=verdicts,
        summary=summary,
        values=_read_values(run.path / MEASUREMENTS),
    )


OLD_WORDS = ("partially reproduced", "not reproduced")


def upgrade_verdict(entry: VerdictEntry) -> VerdictEntry:
    """A format 1-2 verdict in the words of format 3, from the rule it recorded: "partially
    reproduced" -> smaller effect; "not reproduced" -> reversed (ci_high < 1) or no effect;
    "reproduced" with the interval wholly above claimed*k -> larger effect. The old word is
    kept in the reason."""
    old = entry.verdict
    if old == "partially reproduced":
        new = "smaller effect"
    elif old == "not reproduced":
        new = "reversed" if (entry.rule or "").strip() == "ci_high < 1" else "no effect"
    elif (
        old == "reproduced"
        and None not in (entry.ci_low, entry.claimed_ratio, entry.k)
        and entry.ci_low > entry.claimed_ratio * entry.k
    ):
        new = "larger effect"
    else:
        return entry
    reason = f"{entry.reason} (recorded as {old!r} by an older harness)".strip()
    return dataclasses.replace(entry, verdict=new, reason=reason)


def upgrade_summary(summary: Summary, verdicts: tuple[VerdictEntry, ...]) -> Summary:
    """A format 1-2 claim verdict in the words of format 3, from its pairs' upgraded words
    (the claim rule of harness.results.verdicts, CLAIM_RULE, in short)."""
    words = [entry.verdict for entry in verdicts]
    counts = {word: words.count(word) for word in dict.fromkeys(words)}
    tested = [word for word in words if word != "not applicable"]
    holding = [word for word in tested if word in ("reproduced", "larger effect")]
    verdict = summary.verdict
    if summary.verdict in (*OLD_WORDS, "reproduced") and tested:
        if holding and len(holding) == len(tested):
            verdict = "reproduced" if "reproduced" in holding else "larger effect"
        elif holding:
            verdict = "reproduced under some conditions"
        elif "inconclusive" in tested:
            verdict = "inconclusive"
        else:
            verdict = next(word for word in ("smaller effect", "no effect", "reversed") if word in tested)
    if verdict == summary.verdict and counts == summary.counts:
        return summary
    return dataclasses.replace(summary, verdict=verdict, counts=counts)


def _upgrade_v1(manifest: dict, verdicts: tuple[VerdictEntry, ...]) -> dict:
    """Format 1 kept the hosts' roles and the links only as display text in each verdict's
    conditions ("server host": name, "link A -> B": description); read them into fields."""
    conditions = verdicts[0].conditions if verdicts else {}
    roles: dict[str, list[str]] = {}
    links = []
    for key, value in conditions.items():
        if key.endswith(" host"):
            roles.setdefault(key.removesuffix(" host"), []).append(str(value))
        elif key.startswith("link ") and " -> " in key:
            client, server = key.removeprefix("link ").split(" -> ", 1)
            links.append({"client": client, "server": server, "description": str(value)})
    hosts = {**(manifest.get("hosts") or {}), "roles": roles, "links": links}
    experiment = dict(manifest.get("experiment") or {})
    experiment.setdefault("claim_id", verdicts[0].claim_id if verdicts else "unknown")
    experiment.setdefault("file", "")
    experiment.setdefault("sha256", None)
    upgraded = {**manifest, "hosts": hosts, "experiment": experiment}
    upgraded.setdefault("run_id", "")
    upgraded.setdefault("status", "unknown")
    upgraded.setdefault("started", "")
    return upgraded


def _read_values(path: Path) -> pd.DataFrame:
    columns = ["variant", "run", "value", "condition"]
    try:
        values = pd.read_csv(path, dtype={"condition": str}, keep_default_na=False, na_values=[""])
    except (FileNotFoundError, pd.errors.EmptyDataError):  # no trial completed
        return pd.DataFrame({column: pd.Series(dtype=float if column == "value" else object) for column in columns})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise HarnessError(f"{path}: cannot be read: {exc}") from None
    if "condition" not in values.columns:
        values["condition"] = ""
    values["condition"] = values["condition"].fillna("").astype(str)
    return values


def verify(run_dir: Path) -> int:
    """Check every file against the manifest's sha256; return how many were checked.

    Raises HarnessError naming the first file that changed, went missing or appeared."""
    run = RunDirectory(Path(run_dir))
    recorded = run._read_json(MANIFEST, "is this a run directory?")
    recorded = recorded.get("file_sha256") if isinstance(recorded, dict) else None
    if not isinstance(recorded, dict):
        raise HarnessError(f"{run.path}/{MANIFEST}: holds no file_sha256 (written by an older harness?)")
    present = run.digests()
    for name, digest in sorted(recorded.items()):
        if name not in present:
            raise HarnessError(f"{run.path}/{name}: missing (the manifest lists it)")
        if present[name] != digest:
            raise HarnessError(f"{run.path}/{name}: changed since the run wrote it (sha256 differs)")
    extra = sorted(set(present) - set(recorded))
    if extra:
        raise HarnessError(f"{run.path}/{extra[0]}: not written by the run (the manifest does not list it)")
    return len(recorded)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
