"""The {placeholders} of an experiment's commands, config vars and data sizes.

Which names the harness fills itself, which names a sweep sets, filling them (each filled
word stays one argv word, never parsed by a shell), and reading a filled data size.
"""

from __future__ import annotations

import re
import string

# Placeholders a command, config var or data size may use besides the parameters.
RUNTIME_PLACEHOLDERS = frozenset(
    {"workdir", "workload", "bin", "data", "port", "server_address", "config", "python", "load_seconds"}
)
# A swept parameter with this name is the one-way delay (ms) the delay proxy adds in that condition.
DELAY_KEY = "delay_ms"
# ... and with this name, the share of packets (%) dropped each way at the server's port.
LOSS_KEY = "loss_percent"


def swept_names(key: str, values: list) -> list[str]:
    """The placeholders a sweep entry sets: its own name, or the keys of its mappings."""
    return list(values[0]) if isinstance(values[0], dict) else [key]


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
