"""The README documents every field of the experiment file format and every command."""

import re
import types
import typing

from pydantic import BaseModel

from harness.run.spec import ExperimentSpec
from tests.builders import ROOT

README = (ROOT / "README.md").read_text()


def _models_in(annotation):
    """(suffix, model) for a field type: Model, dict[str, Model], list[Model], Model | None."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [("", annotation)]
    if origin is dict:
        return [(".<name>" + suffix, model) for suffix, model in _models_in(typing.get_args(annotation)[1])]
    if origin is list:
        return [("[]" + suffix, model) for suffix, model in _models_in(typing.get_args(annotation)[0])]
    if origin in (typing.Union, types.UnionType):
        return [found for arg in typing.get_args(annotation) for found in _models_in(arg)]
    return []


def field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        for suffix, inner in _models_in(field.annotation):
            paths.extend(field_paths(inner, f"{path}{suffix}."))
    return paths


def test_every_experiment_field_is_documented():
    paths = field_paths(ExperimentSpec)
    assert "variants.<name>.server.ready_timeout" in paths  # the walk reaches nested models
    missing = [path for path in paths if f"`{path}`" not in README]
    assert missing == [], f"README lacks these experiment fields: {missing}"


def test_every_command_and_option_is_documented():
    """Read off the CLI itself, so a new command or flag without documentation fails here."""
    import click

    from harness.cli import main

    def walk(group, prefix):
        for name, command in group.commands.items():
            yield f"{prefix} {name}", command
            if isinstance(command, click.Group):
                yield from walk(command, f"{prefix} {name}")

    missing = []
    for name, command in walk(main, "harness"):
        if name not in README:
            missing.append(name)
        missing += [
            f"{name} {flag}"
            for param in command.params
            if isinstance(param, click.Option)
            for flag in param.opts
            if flag.startswith("--") and flag not in README
        ]
    assert missing == [], f"README lacks: {missing}"
    assert "make run" in README and "make test" in README


def test_quick_start_is_exactly_two_commands():
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^\s*(make \w+)\s*$", section, flags=re.M)
    assert commands == ["make run", "make test"]
