"""Experiment files: YAML -> a frozen ExperimentSpec.

The schema is a set of pydantic models that forbid unknown keys and coerce
nothing (strict types). Every error becomes one line naming the file, the line
of the offending key and the dotted field path, e.g.

    experiments/x.yaml:14: variants.fast.server.port: Input should be a valid integer

The README documents every field; tests/test_docs.py keeps the two in step.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
import re
import string
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from harness import resources
from harness.cpuset import CpuListError, CpuSet
from harness.errors import SpecError

SCHEMA_VERSION = 1
PROJECT_ROOT = resources.PROJECT_ROOT
CATALOG = resources.CATALOG

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
PositiveInt = Annotated[int, Field(gt=0)]
Port = Annotated[int, Field(ge=1024, le=65535)]


def _cpu_set(value: object) -> CpuSet:
    """A CPU list field's text -> CpuSet; pydantic errors that _first_error words as the others."""
    if isinstance(value, CpuSet):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "Input should be a valid string")
    try:
        return CpuSet.parse(value)
    except CpuListError as exc:
        raise PydanticCustomError("cpu_list", "{message}", {"message": exc.message(quote='"')}) from None


# Held as a CpuSet, written back (model_dump, Ansible's extra vars) as the text it was given as.
CpuList = Annotated[CpuSet, PlainValidator(_cpu_set), PlainSerializer(str, return_type=str)]
ParamValue = str | int | float
# A swept value is one value of its name, or a mapping that sets several placeholders at
# once (a delay and the call count that keeps a run short at that delay, say).
SweepValues = Annotated[list[ParamValue | dict[Name, ParamValue]], Field(min_length=1, max_length=64)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Source(Model):
    file: str
    section: str


class Claim(Model):
    id: Name
    statement: Annotated[str, Field(min_length=1)]
    source: Source
    claimed_ratio: Annotated[float, Field(gt=0, le=1e6)]
    metric: Annotated[str, Field(min_length=1)]
    unit: Literal["s"]
    better: Literal["lower", "higher"]
    # What physically bounds the speedup: "cpus" when it cannot exceed the number of CPUs
    # (work spread over cores); the report sets the host's bound beside the claim.
    ceiling: Literal["cpus"] | None = None


class Requires(Model):
    """What a host must have for the claim to be testable at all; a host without it gets
    the verdict "not applicable" with its topology in the report, and no trials run."""

    numa_nodes: Annotated[int, Field(ge=1, le=1024)] | None = None
    cpus: Annotated[int, Field(ge=1, le=65536)] | None = None


class Build(Model):
    """A native program compiled on every host of `role` by the provision playbook."""

    name: Name
    role: Name
    sources: Annotated[list[str], Field(min_length=1)]
    flags: list[str] = ["-O2"]
    libraries: list[str] = []


class DataFile(Model):
    """A file of random bytes created on every host of `role` before the trials."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    role: Name
    size: str  # "256MiB", "1GiB" or a "{parameter}"


class NetTuning(Model):
    """Receive/transmit steering for the device that carries each host's service
    address; every value is read back after writing and restored after the run."""

    rps_cpus: Annotated[str, Field(pattern=r"^[0-9a-fA-F,]+$")] | None = None  # hex CPU mask
    xps_cpus: Annotated[str, Field(pattern=r"^[0-9a-fA-F,]+$")] | None = None
    rps_flow_cnt: Annotated[int, Field(ge=0, le=1 << 20)] | None = None
    rps_sock_flow_entries: Annotated[int, Field(ge=0, le=1 << 24)] | None = None
    channels: Annotated[int, Field(ge=1, le=1024)] | None = None  # ethtool -L combined N
    irq_cpus: CpuList | None = None
    irq_node: Annotated[int, Field(ge=0, le=1023)] | None = None  # IRQs on the CPUs of this NUMA node


# A pip requirement: a name, optional extras, optional version constraints; nothing a shell reads.
Requirement = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9_,-]+\])?([<>=!~]=?[A-Za-z0-9.*+-]+,?)*$",
                                   max_length=200)]


class Provision(Model):
    packages: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9+.-]*$")]] = []
    sysctls: dict[Annotated[str, Field(pattern=r"^[a-z0-9_]+(\.[a-zA-Z0-9_-]+)+$")], str | int] = {}
    builds: list[Build] = []
    data: list[DataFile] = []
    pip: list[Requirement] = []  # installed into a venv on every host; commands use {python}
    net: NetTuning | None = None


class Link(Model):
    """The network between lab hosts this experiment wants; `harness lab up --experiment FILE`
    builds a lab with it. Omitted properties are left off (queues default to 2)."""

    queues: Annotated[int, Field(ge=1, le=64)] = 2
    mtu: Annotated[int, Field(ge=68, le=65535)] | None = None
    rate_mbit: Annotated[float, Field(gt=0)] | None = None
    loss_percent: Annotated[float, Field(ge=0, le=100)] | None = None
    delay_ms: Annotated[float, Field(ge=0, le=10000)] | None = None


class ConfigFile(Model):
    """A Jinja template from the workload folder, rendered and copied to the host."""

    template: str
    vars: dict[str, ParamValue] = {}


class Server(Model):
    role: Name
    command: Annotated[list[str], Field(min_length=1)]
    port: Port
    config: ConfigFile | None = None
    cpus: CpuList | None = None
    ready_timeout: Annotated[float, Field(gt=0, le=300)] = 20.0
    protocol: Literal["tcp", "udp"] = "tcp"  # what kind of socket readiness waits for on `port`


class Load(Model):
    role: Name
    command: Annotated[list[str], Field(min_length=1)]
    parser: Literal["fetch_json", "json_values", "wrk", "h2load", "redis_benchmark", "iperf3_json"]
    cpus: CpuList | None = None
    timeout: Annotated[float, Field(gt=0, le=3600)] = 600.0
    runs: Annotated[int, Field(gt=0, le=100)] = 1  # the command runs this often per trial; values concatenate


class Result(Model):
    """A command run after the load, whose output gives the trial's values instead of the
    load generator's: for what only the receiving side can count (packets an XDP program
    dropped, say). It may use {load_seconds}, the load's wall time."""

    role: Name
    command: Annotated[list[str], Field(min_length=1)]
    parser: Literal["json_values"]
    timeout: Annotated[float, Field(gt=0, le=600)] = 60.0


class Variant(Model):
    description: str = ""
    server: Server | None = None  # none: the load command is the whole benchmark
    load: Load
    result: Result | None = None
    # Steering set before each of this variant's trials on its server's and load's hosts.
    net: NetTuning | None = None


class Pair(Model):
    name: Name
    baseline: Name
    treatment: Name


class Adaptive(Model):
    """Repeat beyond `repetitions` until every pair's interval is narrow enough."""

    target_half_width: Annotated[float, Field(gt=0, lt=1)] = 0.05  # relative, on the ratio
    max_repetitions: Annotated[int, Field(gt=1, le=1000)] = 30
    time_budget_s: Annotated[float, Field(gt=0, le=86400)] = 1800.0  # seconds of trials


class Analysis(Model):
    """How verdicts are decided; see the README's verdict rules."""

    k: Annotated[float, Field(ge=1, le=100)] = 1.25
    margin: Annotated[float, Field(ge=0, lt=1)] | None = None  # None: from the baseline's own A/A noise
    gate_load_cpu: Annotated[float, Field(gt=0, le=1)] = 0.95  # load generator share of a core that saturates it
    gate_steal: Annotated[float, Field(ge=0, le=1)] = 0.05  # CPU steal share of the window that invalidates a run
    gate_errors: Annotated[float, Field(ge=0, le=1)] = 0.01  # share of failed requests that invalidates a run


class Quick(Model):
    """What --quick changes: fewer repetitions, smaller parameters."""

    repetitions: Annotated[int, Field(gt=0, le=1000)] | None = None
    max_repetitions: Annotated[int, Field(gt=1, le=1000)] | None = None
    time_budget_s: Annotated[float, Field(gt=0, le=86400)] | None = None
    parameters: dict[str, ParamValue] = {}
    sweep: dict[str, SweepValues] = {}


class ExperimentSpec(Model):
    version: Literal[1]
    claim: Claim
    roles: Annotated[dict[Name, Name], Field(min_length=1)]
    workload: str
    requires: Requires = Requires()
    provision: Provision = Provision()
    link: Link = Link()
    parameters: dict[Name, ParamValue] = {}
    # Every combination of these values is one condition; verdicts are given per condition.
    sweep: dict[Name, SweepValues] = {}
    variants: Annotated[dict[Name, Variant], Field(min_length=2)]
    pairs: Annotated[list[Pair], Field(min_length=1)]
    repetitions: Annotated[int, Field(gt=1, le=1000)]
    adaptive: Adaptive = Adaptive()
    analysis: Analysis = Analysis()
    warmup_values: Annotated[int, Field(ge=0, le=100)] = 1
    quick: Quick = Quick()
    # What a reader of the report must know that the numbers cannot say (the source's own
    # inconsistencies, what this setup cannot test); shown under Notes.
    notes: list[Annotated[str, Field(min_length=1, max_length=2000)]] = []

    @model_validator(mode="after")
    def _names_resolve(self) -> ExperimentSpec:
        roles = set(self.roles)
        for where, role in self._role_uses():
            if role not in roles:
                raise _Located(where + ("role",), f"role {role!r} is not in roles ({', '.join(sorted(roles))})")
        for i, pair in enumerate(self.pairs):
            for side in ("baseline", "treatment"):
                if getattr(pair, side) not in self.variants:
                    raise _Located(("pairs", i, side), f"no variant named {getattr(pair, side)!r}")
            if pair.baseline == pair.treatment:
                raise _Located(("pairs", i, "treatment"), "baseline and treatment must differ")
        for key in self.quick.parameters:
            if key not in self.parameters:
                raise _Located(("quick", "parameters", key), f"{key!r} is not in parameters")
        for key in self.quick.sweep:
            if key not in self.sweep:
                raise _Located(("quick", "sweep", key), f"{key!r} is not in sweep")
        for where, sweep in (("sweep",), self.sweep), (("quick", "sweep"), self.quick.sweep):
            for key, values in sweep.items():
                _check_swept(where + (key,), key, values, self.parameters)
        # Variants that set `net` set the same fields, or a trial would inherit some of the last
        # variant's settings; a variant without `net` takes the devices as it finds them.
        tuned = {name: tuple(sorted(v.net.model_dump(exclude_none=True)))
                 for name, v in self.variants.items() if v.net}
        if len(set(tuned.values())) > 1:
            name = min(tuned, key=lambda n: len(tuned[n]))
            raise _Located(("variants", name, "net"),
                           "every variant that sets net must set the same fields, or a trial would inherit the "
                           f"last variant's settings ({name} sets {', '.join(tuned[name]) or 'none'}; "
                           f"others set {', '.join(max(tuned.values(), key=len))})")
        if self.link.delay_ms and any(DELAY_KEY in swept_names(k, v) for k, v in self.sweep.items()):
            raise _Located(("link", "delay_ms"), "the delay is swept (sweep.delay_ms); drop link.delay_ms")
        return self

    def _role_uses(self):
        for i, build in enumerate(self.provision.builds):
            yield ("provision", "builds", i), build.role
        for i, data in enumerate(self.provision.data):
            yield ("provision", "data", i), data.role
        for name, variant in self.variants.items():
            if variant.server:
                yield ("variants", name, "server"), variant.server.role
            yield ("variants", name, "load"), variant.load.role
            if variant.result:
                yield ("variants", name, "result"), variant.result.role


def swept_names(key: str, values: list) -> list[str]:
    """The placeholders a sweep entry sets: its own name, or the keys of its mappings."""
    return list(values[0]) if isinstance(values[0], dict) else [key]


def _check_swept(where: tuple, key: str, values: list, parameters: dict) -> None:
    mappings = [value for value in values if isinstance(value, dict)]
    if mappings and (len(mappings) != len(values) or any(not m or set(m) != set(mappings[0]) for m in mappings)):
        raise _Located(where, "give every value as a mapping with the same keys, or none as a mapping")
    names = swept_names(key, values)
    for name in names:
        if name in parameters:
            raise _Located(where, f"{name!r} is both a parameter and swept; keep one")
        if name in RUNTIME_PLACEHOLDERS:
            raise _Located(where, f"{name!r} is a placeholder the harness fills; pick another name")
    for name in names:
        column = [value[name] for value in mappings] if mappings else values
        if name == DELAY_KEY and not all(isinstance(v, (int, float)) and 0 <= v <= 10000 for v in column):
            raise _Located(where, "delay_ms values must be numbers of milliseconds from 0 to 10000")
        if name == LOSS_KEY and not all(isinstance(v, (int, float)) and 0 <= v < 100 for v in column):
            raise _Located(where, "loss_percent values must be numbers from 0 to below 100")
    if len({str(value) for value in values}) != len(values):
        raise _Located(where, "a value is listed twice")


class _Located(ValueError):
    """A cross-field error that knows which field it is about."""

    def __init__(self, path: tuple, message: str):
        super().__init__(message)
        self.path = path


# Placeholders a command, config var or data size may use besides the parameters.
RUNTIME_PLACEHOLDERS = frozenset({"workdir", "workload", "bin", "data", "port", "server_address", "config", "python",
                                  "load_seconds"})
# A swept parameter with this name is the one-way delay (ms) the delay proxy adds in that condition.
DELAY_KEY = "delay_ms"
# ... and with this name, the share of packets (%) dropped each way at the server's port.
LOSS_KEY = "loss_percent"


def load(path: str | Path) -> ExperimentSpec:
    """Read and validate an experiment file; raise SpecError with file:line on any fault."""
    spec, _ = load_with_digest(path)
    return spec


def load_with_digest(path: str | Path) -> tuple[ExperimentSpec, str]:
    path = Path(path)
    shown = _shown(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{shown}: no such file") from None
    except OSError as exc:
        raise SpecError(f"{shown}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise SpecError(f"{shown}:{line}: not UTF-8 text") from None
    data, lines = _parse_yaml(text, shown)
    if not isinstance(data, dict):
        raise SpecError(f"{shown}:1: the file must hold a mapping (claim:, roles:, variants: ...), not {_kind(data)}")
    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_first_error(exc, shown, lines)) from None
    _check_paths_and_placeholders(spec, path, shown, lines)
    return spec, hashlib.sha256(raw).hexdigest()


def workload_dir(spec: ExperimentSpec, experiment_path: str | Path) -> Path:
    return (Path(experiment_path).resolve().parent / spec.workload).resolve()


@dataclass(frozen=True)
class Stopping:
    """When a run stops repeating: after `minimum` rounds, as soon as every pair's
    interval half-width is within `target` (if set), at `maximum` rounds, or when
    the trials have used `budget_s` seconds."""

    minimum: int
    maximum: int
    target: float | None
    budget_s: float | None


@dataclass(frozen=True)
class Profile:
    """The experiment as one run uses it: the full or the quick profile, with the command
    line's overrides applied. Resolved once (resolve_profile); the plan carries it."""

    quick: bool
    parameters: dict[str, ParamValue]  # fixed placeholders: the experiment's, quick's on top
    sweep: dict[str, list]  # swept placeholders: quick's lists replace the full ones
    stopping: Stopping
    cpus: CpuSet | None = None  # `harness run --cpus`: the only CPUs servers and load generators may use

    @property
    def repetitions(self) -> int:
        """The rounds that always run."""
        return self.stopping.minimum


def resolve_profile(spec: ExperimentSpec, quick: bool, target: float | None = None,
                    cpus: CpuSet | None = None) -> Profile:
    """The full or quick profile; `target` (from the command line) overrides the experiment's
    adaptive target. A full run repeats adaptively up to adaptive.max_repetitions; a quick
    run does its quick.repetitions only, unless quick.max_repetitions lets it go on."""
    adaptive = spec.adaptive
    parameters = dict(spec.parameters)
    sweep = {key: list(values) for key, values in spec.sweep.items()}
    if quick:
        parameters.update(spec.quick.parameters)
        sweep.update({key: list(values) for key, values in spec.quick.sweep.items()})
        minimum = spec.quick.repetitions or spec.repetitions
        maximum = spec.quick.max_repetitions or minimum
        budget = spec.quick.time_budget_s or adaptive.time_budget_s
    else:
        minimum, maximum, budget = spec.repetitions, adaptive.max_repetitions, adaptive.time_budget_s
    stopping = Stopping(minimum=minimum, maximum=max(minimum, maximum), target=target or adaptive.target_half_width,
                        budget_s=budget)
    return Profile(quick=quick, parameters=parameters, sweep=sweep, stopping=stopping, cpus=cpus)


def placeholders(text: str) -> list[str]:
    """Names of the {placeholders} in a template string."""
    return [field for _, field, _, _ in string.Formatter().parse(text) if field is not None]


def fill(text: str, values: dict[str, object]) -> str:
    """Fill {placeholders}; the result is one argv word, never parsed by a shell."""
    return text.format_map(values)


_SIZE = re.compile(r"^([0-9]+)(B|KiB|MiB|GiB)$")
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def parse_size(text: str) -> int:
    match = _SIZE.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"size {text!r} must be a positive whole number of B, KiB, MiB or GiB, e.g. 256MiB")
    return int(match.group(1)) * _UNITS[match.group(2)]


# --- YAML with line numbers -------------------------------------------------


def _parse_yaml(text: str, shown: str) -> tuple[object, dict[tuple, int]]:
    """Parse YAML and map each field path to the line it stands on (1-based)."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            lines: dict[tuple, int] = {}
            if node is not None:
                # Before construction: constructing flattens '<<' merges into the node.
                _record_lines(node, (), lines, shown)
                data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise SpecError(f"{shown}:{line}: YAML syntax error: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{shown}: YAML error: {exc}") from None
    if node is None:
        raise SpecError(f"{shown}:1: the file is empty")
    return data, lines


def _record_lines(node: yaml.Node, path: tuple, lines: dict[tuple, int], shown: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.start_mark)
            if key == "<<":  # a merge: its keys keep the lines of the anchor they come from
                continue
            if key in seen:
                raise SpecError(f"{shown}:{key_node.start_mark.line + 1}: {_dotted(path + (key,))}: duplicate key")
            seen.add(key)
            lines[path + (key,)] = key_node.start_mark.line + 1
            _record_lines(value_node, path + (key,), lines, shown)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[path + (index,)] = item.start_mark.line + 1
            _record_lines(item, path + (index,), lines, shown)


def _line_of(path: tuple, lines: dict[tuple, int]) -> int:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return 1


def _dotted(path: tuple) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


def _first_error(exc: ValidationError, shown: str, lines: dict[tuple, int]) -> str:
    error = exc.errors()[0]
    if isinstance(error.get("ctx", {}).get("error"), _Located):
        located = error["ctx"]["error"]
        return f"{shown}:{_line_of(located.path, lines)}: {_dotted(located.path)}: {located}"
    # pydantic adds the union member's type name to the path ("str", "int"); drop those.
    path = tuple(p for p in error["loc"]
                 if not (isinstance(p, str) and p in {"str", "int", "float", "ConfigFile", "Adaptive"}))
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field (see the README's experiment file format)"
    elif error["type"] == "missing":
        message = "required field is missing"
    elif "input" in error and error["type"].endswith("_type"):
        message = f"{message}, got {_kind(error['input'])}"
    return f"{shown}:{_line_of(path, lines)}: {_dotted(path)}: {message}"


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "text", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --- checks that need the file's location --------------------------------------


def _check_paths_and_placeholders(spec: ExperimentSpec, path: Path, shown: str, lines: dict) -> None:
    def fail(field: tuple, message: str):
        raise SpecError(f"{shown}:{_line_of(field, lines)}: {_dotted(field)}: {message}")

    # Text that Ansible receives as extra vars is evaluated as Jinja there: "{{ lookup('pipe', ...) }}"
    # would run a command on the controller. None of these fields has a use for Jinja.
    for field, text in _ansible_bound_text(spec):
        if any(mark in text for mark in JINJA_MARKS):
            fail(field, f"{text!r} holds Jinja delimiters ({', '.join(JINJA_MARKS)}); this text goes to Ansible, "
                        "which would evaluate them")
    workload = workload_dir(spec, path)
    if not _inside(workload, path.resolve().parent):
        fail(("workload",), f"{spec.workload!r} leaves the experiment's folder; keep workloads beside it")
    if not workload.is_dir():
        fail(("workload",), f"no folder {workload}")

    def check_workload_file(field: tuple, name: str):
        if not _inside((workload / name).absolute(), workload) or ".." in Path(name).parts:
            fail(field, f"{name!r} leaves the workload folder")
        # A file in the workload folder may be a symlink into the catalog (a client that
        # several experiments share); provisioning copies what it points to.
        target = (workload / name).resolve()
        if not (_inside(target, workload) or _inside(target, CATALOG)):
            fail(field, f"{name!r} links outside the workload folder and {CATALOG.name}/")
        if not target.is_file():
            fail(field, f"no file {name!r} in {spec.workload}/")

    for i, build in enumerate(spec.provision.builds):
        for j, source in enumerate(build.sources):
            check_workload_file(("provision", "builds", i, "sources", j), source)

    known = (set(spec.parameters) | {name for key, values in spec.sweep.items() for name in swept_names(key, values)}
             | RUNTIME_PLACEHOLDERS)

    def check_template(field: tuple, text: str):
        try:
            names = placeholders(text)
        except ValueError as exc:
            fail(field, f"bad placeholder in {text!r}: {exc}")
        for name in names:
            if name == "load_seconds" and field[2:3] != ("result",):
                fail(field, "{load_seconds} is known only after the load, in a variant's result command")
            if name not in known:
                fail(field, f"unknown placeholder {{{name}}}; known: {', '.join(sorted(known))}")

    for i, data in enumerate(spec.provision.data):
        check_template(("provision", "data", i, "size"), data.size)
        try:
            parse_size(fill(data.size, spec.parameters))
            parse_size(fill(data.size, resolve_profile(spec, quick=True).parameters))
        except (ValueError, KeyError) as exc:
            fail(("provision", "data", i, "size"), str(exc))
    for name, variant in spec.variants.items():
        for part in ("server", "load", "result"):
            for i, word in enumerate(getattr(variant, part).command if getattr(variant, part) else ()):
                check_template(("variants", name, part, "command", i), word)
        if variant.server and variant.server.config:
            check_workload_file(("variants", name, "server", "config", "template"), variant.server.config.template)
            for key, value in variant.server.config.vars.items():
                if isinstance(value, str):
                    check_template(("variants", name, "server", "config", "vars", key), value)


JINJA_MARKS = ("{{", "{%", "{#")


def _ansible_bound_text(spec: ExperimentSpec):
    """(field path, text) for every string of the experiment that provisioning hands to Ansible."""
    yield ("workload",), spec.workload
    for i, build in enumerate(spec.provision.builds):
        for part in ("sources", "flags", "libraries"):
            for j, text in enumerate(getattr(build, part)):
                yield ("provision", "builds", i, part, j), text
    for key, value in spec.provision.sysctls.items():
        yield ("provision", "sysctls", key), str(value)
    for i, data in enumerate(spec.provision.data):
        yield ("provision", "data", i, "size"), data.size


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents
