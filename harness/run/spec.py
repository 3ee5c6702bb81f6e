"""Experiment files: YAML -> a frozen ExperimentSpec.

The schema is a set of pydantic models that forbid unknown keys and coerce
nothing (strict types). Every error becomes one line naming the file, the line
of the offending key and the dotted field path, e.g.

    experiments/x.yaml:14: variants.fast.server.port: Input should be a valid integer

Reading the file and wording errors is spec_source's; the checks that need the file's
location (workload paths, placeholders, Jinja) are spec_checks'. The README documents every
field; tests/test_docs.py keeps the two in step.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from harness.cpuset import CpuListError, CpuSet
from harness.errors import SpecError
from harness.run.placeholders import DELAY_KEY, LOSS_KEY, RUNTIME_PLACEHOLDERS, swept_names
from harness.run.spec_checks import check_paths_and_placeholders
from harness.run.spec_source import Located, first_error, read_source

SCHEMA_VERSION = 1

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
PositiveInt = Annotated[int, Field(gt=0)]
Port = Annotated[int, Field(ge=1024, le=65535)]


def _cpu_set(value: object) -> CpuSet:
    """A CPU list field's text -> CpuSet; pydantic errors that first_error words as the others."""
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
Requirement = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9_,-]+\])?([<>=!~]=?[A-Za-z0-9.*+-]+,?)*$", max_length=200),
]


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


class Retries(Model):
    """How many trials that failed a validity gate may be run again (README, "Validity gates")."""

    # Replacements per variant and condition; a noisy VM fails a steal gate in a few trials of each.
    per_variant: Annotated[int, Field(ge=0, le=1000)] = 4
    # Replacements in the whole run; None: half the run's most trials, at least 8.
    total: Annotated[int, Field(ge=0, le=100000)] | None = None


class Analysis(Model):
    """How verdicts are decided; see the README's verdict rules."""

    k: Annotated[float, Field(ge=1, le=100)] = 1.25
    margin: Annotated[float, Field(ge=0, lt=1)] | None = None  # None: from the baseline's own A/A noise
    gate_load_cpu: Annotated[float, Field(gt=0, le=1)] = 0.95  # load generator share of a core that saturates it
    gate_steal: Annotated[float, Field(ge=0, le=1)] = 0.05  # CPU steal share of the window that invalidates a run
    gate_errors: Annotated[float, Field(ge=0, le=1)] = 0.01  # share of failed requests that invalidates a run
    # Share of the trial's CPUs' time used by neither server nor load generator (nor the harness).
    # Off unless an experiment sets it: see README (Validity gates) for why.
    gate_busy: Annotated[float, Field(ge=0, le=1)] = 1.0
    retries: Retries = Retries()


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
                raise Located(where + ("role",), f"role {role!r} is not in roles ({', '.join(sorted(roles))})")
        for i, pair in enumerate(self.pairs):
            for side in ("baseline", "treatment"):
                if getattr(pair, side) not in self.variants:
                    raise Located(("pairs", i, side), f"no variant named {getattr(pair, side)!r}")
            if pair.baseline == pair.treatment:
                raise Located(("pairs", i, "treatment"), "baseline and treatment must differ")
        for key in self.quick.parameters:
            if key not in self.parameters:
                raise Located(("quick", "parameters", key), f"{key!r} is not in parameters")
        for key in self.quick.sweep:
            if key not in self.sweep:
                raise Located(("quick", "sweep", key), f"{key!r} is not in sweep")
        for where, sweep in (("sweep",), self.sweep), (("quick", "sweep"), self.quick.sweep):
            for key, values in sweep.items():
                _check_swept(where + (key,), key, values, self.parameters)
        # Variants that set `net` set the same fields, or a trial would inherit some of the last
        # variant's settings; a variant without `net` takes the devices as it finds them.
        tuned = {name: tuple(sorted(v.net.model_dump(exclude_none=True))) for name, v in self.variants.items() if v.net}
        if len(set(tuned.values())) > 1:
            name = min(tuned, key=lambda n: len(tuned[n]))
            raise Located(
                ("variants", name, "net"),
                "every variant that sets net must set the same fields, or a trial would inherit the "
                f"last variant's settings ({name} sets {', '.join(tuned[name]) or 'none'}; "
                f"others set {', '.join(max(tuned.values(), key=len))})",
            )
        if self.link.delay_ms and any(DELAY_KEY in swept_names(k, v) for k, v in self.sweep.items()):
            raise Located(("link", "delay_ms"), "the delay is swept (sweep.delay_ms); drop link.delay_ms")
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


def _check_swept(where: tuple, key: str, values: list, parameters: dict) -> None:
    mappings = [value for value in values if isinstance(value, dict)]
    if mappings and (len(mappings) != len(values) or any(not m or set(m) != set(mappings[0]) for m in mappings)):
        raise Located(where, "give every value as a mapping with the same keys, or none as a mapping")
    names = swept_names(key, values)
    for name in names:
        if name in parameters:
            raise Located(where, f"{name!r} is both a parameter and swept; keep one")
        if name in RUNTIME_PLACEHOLDERS:
            raise Located(where, f"{name!r} is a placeholder the harness fills; pick another name")
    for name in names:
        column = [value[name] for value in mappings] if mappings else values
        if name == DELAY_KEY and not all(isinstance(v, (int, float)) and 0 <= v <= 10000 for v in column):
            raise Located(where, "delay_ms values must be numbers of milliseconds from 0 to 10000")
        if name == LOSS_KEY and not all(isinstance(v, (int, float)) and 0 <= v < 100 for v in column):
            raise Located(where, "loss_percent values must be numbers from 0 to below 100")
    if len({str(value) for value in values}) != len(values):
        raise Located(where, "a value is listed twice")


def load(path: str | Path) -> ExperimentSpec:
    """Read and validate an experiment file; raise SpecError with file:line on any fault."""
    spec, _ = load_with_digest(path)
    return spec


def load_with_digest(path: str | Path) -> tuple[ExperimentSpec, str]:
    source = read_source(Path(path))
    try:
        spec = ExperimentSpec.model_validate(source.data)
    except ValidationError as exc:
        raise SpecError(first_error(exc, source)) from None
    check_paths_and_placeholders(spec, workload_dir(spec, source.path), source)
    return spec, hashlib.sha256(source.raw).hexdigest()


def workload_dir(spec: ExperimentSpec, experiment_path: str | Path) -> Path:
    return (Path(experiment_path).resolve().parent / spec.workload).resolve()
