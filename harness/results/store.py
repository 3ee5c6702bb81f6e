"""The on-disk layout of a run; the only module that knows it.

    <out>/<claim>-<UTC time>-<random>/
        index.html        the report
        verdicts.json     one object per compared pair
        manifest.json     what ran, where, with which versions; the harness's own costs
        measurements.csv  every measured value; costs.csv per-trial CPU costs
        trials.jsonl      every completed trial's measurement, written as it completes (--resume)
        summary.json      the verdict on the claim over every pair and condition
        pyperf/<variant>[-c<N>].json
        raw/              load-generator output, server logs, rendered configs
        ansible/          ansible-runner artifacts of each playbook call

Files are written to a temporary name and renamed (write_atomically, also used for
the compare and site pages), so a reader never sees half a file and an interrupted
run leaves whole files behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

FORMAT_VERSION = 1


@dataclass(frozen=True)
class RunDirectory:
    path: Path

    @classmethod
    def create(cls, out_dir: Path, claim_id: str) -> RunDirectory:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = Path(out_dir) / f"{claim_id}-{stamp}-{secrets.token_hex(2)}"
        try:
            path.mkdir(parents=True)
            for sub in ("raw", "pyperf", "ansible"):
                (path / sub).mkdir()
        except OSError as exc:
            raise HarnessError(f"{out_dir}: cannot create the run directory: {exc.strerror} (pick another --out)") from None
        return cls(path)

    @classmethod
    def existing(cls, path: Path) -> RunDirectory:
        """A run directory written before, to resume: it must hold a manifest."""
        path = Path(path)
        if not (path / "manifest.json").is_file():
            raise HarnessError(f"{path}: no manifest.json; is this a run directory?")
        for sub in ("raw", "pyperf", "ansible"):
            (path / sub).mkdir(exist_ok=True)
        return cls(path)

    def read_json(self, name: str):
        try:
            return json.loads((self.path / name).read_text())
        except FileNotFoundError:
            raise HarnessError(f"{self.path / name}: missing") from None
        except (OSError, ValueError) as exc:
            raise HarnessError(f"{self.path / name}: cannot be read: {exc}") from None

    def read_lines_json(self, name: str) -> list:
        """One JSON value per line; [] when the file does not exist."""
        target = self.path / name
        if not target.exists():
            return []
        try:
            return [json.loads(line) for line in target.read_text().splitlines() if line.strip()]
        except (OSError, ValueError) as exc:
            raise HarnessError(f"{target}: cannot be read: {exc}") from None

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def raw(self) -> Path:
        return self.path / "raw"

    @property
    def ansible(self) -> Path:
        return self.path / "ansible"

    def pyperf_file(self, variant: str, condition: int | None = None) -> Path:
        """pyperf/<variant>.json, or pyperf/<variant>-c<N>.json for the N-th swept condition."""
        suffix = "" if condition is None else f"-c{condition}"
        return self.path / "pyperf" / f"{variant}{suffix}.json"

    def write_text(self, name: str, text: str) -> Path:
        return write_atomically(self.path / name, text)

    def write_json(self, name: str, data) -> Path:
        return self.write_text(name, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")

    def digests(self) -> dict[str, str]:
        """sha256 of every file of the run but the manifest that holds them."""
        return {name: _sha256(self.path / name) for name in self.files(include_ansible=True) if name != "manifest.json"}

    def files(self, include_ansible: bool = False) -> list[str]:
        """Every file of the run, relative to its directory, for the report's links."""
        return sorted(
            str(p.relative_to(self.path)) for p in self.path.rglob("*")
            if p.is_file() and not p.name.startswith(".")
            and (include_ansible or "ansible" not in p.relative_to(self.path).parts[:1])
        )


def write_atomically(path: Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file beside it and a rename, so a reader
    never sees half a file. The folder must exist. Returns `path`."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
    return path


def verify(run_dir: Path) -> int:
    """Check every file against the manifest's sha256; return how many were checked.

    Raises HarnessError naming the first file that changed, went missing or appeared."""
    run_dir = Path(run_dir)
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except FileNotFoundError:
        raise HarnessError(f"{run_dir}: no manifest.json; is this a run directory?") from None
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{run_dir}/manifest.json: cannot be read: {exc}") from None
    recorded = manifest.get("file_sha256")
    if not isinstance(recorded, dict):
        raise HarnessError(f"{run_dir}/manifest.json: holds no file_sha256 (written by an older harness?)")
    present = RunDirectory(run_dir).digests()
    for name, digest in sorted(recorded.items()):
        if name not in present:
            raise HarnessError(f"{run_dir}/{name}: missing (the manifest lists it)")
        if present[name] != digest:
            raise HarnessError(f"{run_dir}/{name}: changed since the run wrote it (sha256 differs)")
    extra = sorted(set(present) - set(recorded))
    if extra:
        raise HarnessError(f"{run_dir}/{extra[0]}: not written by the run (the manifest does not list it)")
    return len(recorded)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
