"""A list of CPUs ("0", "0-1", "0,2-3"), parsed once where it enters (the `--cpus` option,
an experiment's `cpus` fields) and passed on as a frozen CpuSet; nothing downstream parses.

The one grammar: CPU numbers or ranges `a-b` with a <= b, separated by commas; no spaces,
no empty parts. Order is kept (it matters under a restriction, see CpuSet.place) and a
CPU named twice counts once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PART = re.compile(r"([0-9]+)(?:-([0-9]+))?")
EXAMPLES = ("0", "0-1", "0,2")


class CpuListError(ValueError):
    """Text that is not a CPU list; `message()` says what to give instead."""

    def __init__(self, text: str, why: str = ""):
        self.text = text
        self.why = why
        super().__init__(self.message())

    def message(self, quote: str = "") -> str:
        """The problem and the advice; `quote` wraps the examples (`"` where YAML would
        otherwise read a bare 0 as a number)."""
        examples = " or ".join(f"{quote}{example}{quote}" for example in EXAMPLES)
        return f"{self.text!r}: {self.why + '; ' if self.why else ''}give CPU numbers and ranges, e.g. {examples}"


@dataclass(frozen=True)
class CpuSet:
    """CPU numbers in the order given, and the text they were given as (what manifests and
    reports show: `str(cpus)`)."""

    cpus: tuple[int, ...]
    text: str = field(default="", compare=False)

    def __post_init__(self):
        if not self.cpus:
            raise ValueError("a CpuSet holds at least one CPU")
        if not self.text:
            object.__setattr__(self, "text", ",".join(map(str, self.cpus)))

    @classmethod
    def parse(cls, text: str) -> CpuSet:
        """ "0-2,5" -> CpuSet((0, 1, 2, 5)); CpuListError for anything else ("0-1-2", "2-1", "0,")."""
        cpus: list[int] = []
        for part in text.split(","):
            match = _PART.fullmatch(part)
            if match is None:
                raise CpuListError(text)
            first = int(match.group(1))
            last = int(match.group(2)) if match.group(2) is not None else first
            if last < first:
                raise CpuListError(text, f"the range {part} runs downward")
            cpus.extend(range(first, last + 1))
        return cls(tuple(dict.fromkeys(cpus)), text)

    def __str__(self) -> str:
        return self.text

    def __len__(self) -> int:
        return len(self.cpus)

    def __iter__(self):
        return iter(self.cpus)

    @property
    def highest(self) -> int:
        return max(self.cpus)

    def place(self, pinned: CpuSet | None) -> CpuSet:
        """The CPUs a process pinned to `pinned` may use when only this set's CPUs are
        allowed: the host looks like a machine with only these CPUs, so a pin to CPU i means
        the i-th allowed CPU (wrapping round when there are fewer), and no pin means all."""
        if pinned is None:
            return CpuSet(self.cpus)
        return CpuSet(tuple(dict.fromkeys(self.cpus[i % len(self.cpus)] for i in pinned)))


def placed(pinned: CpuSet | None, restriction: CpuSet | None) -> CpuSet | None:
    """`pinned` under `restriction` (CpuSet.place); the pin itself when nothing restricts."""
    return restriction.place(pinned) if restriction is not None else pinned
