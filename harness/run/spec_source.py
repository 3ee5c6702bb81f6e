"""An experiment file as text: read, parsed as YAML with the line of every field, and
errors worded as one line naming the file, that line and the dotted field path:

    experiments/x.yaml:14: variants.fast.server.port: Input should be a valid integer
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from harness.errors import SpecError


@dataclass(frozen=True)
class Source:
    """The file's path and its name as messages show it, its bytes, its YAML data and the
    line (1-based) each field path stands on."""

    path: Path
    shown: str
    raw: bytes
    data: dict
    lines: dict[tuple, int]

    def at(self, field: tuple, message: str) -> str:
        """`file:line: field.path: message`, at the line of `field` or of its nearest parent."""
        return f"{self.shown}:{_line_of(field, self.lines)}: {_dotted(field)}: {message}"


class Located(ValueError):
    """A cross-field error that knows which field it is about."""

    def __init__(self, path: tuple, message: str):
        super().__init__(message)
        self.path = path


def read_source(path: Path) -> Source:
    """Read and parse an experiment file that must hold a mapping; SpecError with file:line if not."""
    shown = shown_path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{shown}: no such file") from None
    except OSError as exc:
        raise SpecError(f"{shown}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(f"{shown}:{line}: not UTF-8 text") from None
    data, lines = _parse_yaml(text, shown)
    if not isinstance(data, dict):
        raise SpecError(f"{shown}:1: the file must hold a mapping (claim:, roles:, variants: ...), not {_kind(data)}")
    return Source(path=path, shown=shown, raw=raw, data=data, lines=lines)


def first_error(exc: ValidationError, source: Source) -> str:
    """The first of pydantic's errors as one line, worded for someone editing the file."""
    error = exc.errors()[0]
    if isinstance(error.get("ctx", {}).get("error"), Located):
        located = error["ctx"]["error"]
        return source.at(located.path, str(located))
    # pydantic adds the union member's type name to the path ("str", "int"); drop those.
    path = tuple(
        p for p in error["loc"] if not (isinstance(p, str) and p in {"str", "int", "float", "ConfigFile", "Adaptive"})
    )
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field (see the README's experiment file format)"
    elif error["type"] == "missing":
        message = "required field is missing"
    elif "input" in error and error["type"].endswith("_type"):
        message = f"{message}, got {_kind(error['input'])}"
    return source.at(path, message)


def shown_path(path: Path) -> str:
    """A path as messages show it: relative to the working folder when it lies inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


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


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "text", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )
