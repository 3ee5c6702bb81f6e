"""Checks of a validated experiment that need the file's location: workload paths that
stay in their folder, placeholders that something fills, no Jinja in text bound for Ansible."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness import resources
from harness.errors import SpecError
from harness.run.placeholders import RUNTIME_PLACEHOLDERS, fill, parse_size, placeholders, swept_names
from harness.run.profile import resolve_profile
from harness.run.spec_source import Source

if TYPE_CHECKING:
    from harness.run.spec import ExperimentSpec

JINJA_MARKS = ("{{", "{%", "{#")


def check_paths_and_placeholders(spec: ExperimentSpec, workload: Path, source: Source) -> None:
    """SpecError at the first fault; `workload` is the spec's workload folder (spec.workload_dir)."""

    def fail(field: tuple, message: str):
        raise SpecError(source.at(field, message))

    # Text that Ansible receives as extra vars is evaluated as Jinja there: "{{ lookup('pipe', ...) }}"
    # would run a command on the controller. None of these fields has a use for Jinja.
    for field, text in _ansible_bound_text(spec):
        if any(mark in text for mark in JINJA_MARKS):
            fail(
                field,
                f"{text!r} holds Jinja delimiters ({', '.join(JINJA_MARKS)}); this text goes to Ansible, "
                "which would evaluate them",
            )
    if not _inside(workload, source.path.resolve().parent):
        fail(("workload",), f"{spec.workload!r} leaves the experiment's folder; keep workloads beside it")
    if not workload.is_dir():
        fail(("workload",), f"no folder {workload}")

    def check_workload_file(field: tuple, name: str):
        if not _inside((workload / name).absolute(), workload) or ".." in Path(name).parts:
            fail(field, f"{name!r} leaves the workload folder")
        # A file in the workload folder may be a symlink into the catalog (a client that
        # several experiments share); provisioning copies what it points to.
        target = (workload / name).resolve()
        if not (_inside(target, workload) or _inside(target, resources.CATALOG)):
            fail(field, f"{name!r} links outside the workload folder and {resources.CATALOG.name}/")
        if not target.is_file():
            fail(field, f"no file {name!r} in {spec.workload}/")

    for i, build in enumerate(spec.provision.builds):
        for j, source_file in enumerate(build.sources):
            check_workload_file(("provision", "builds", i, "sources", j), source_file)

    known = (
        set(spec.parameters)
        | {name for key, values in spec.sweep.items() for name in swept_names(key, values)}
        | RUNTIME_PLACEHOLDERS
    )

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
