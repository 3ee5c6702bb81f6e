"""Where the files that ship beside the code live: templates, playbooks, the default inventory, the catalog.

The one module that locates them, so that a move or a packaging change is made here.

Two layouts, told apart by whether the package holds a `_data` folder:

- installed (a wheel, `pip install .`): pyproject.toml's package-dir maps the repository's
  top-level `templates/`, `playbooks/` and `inventory.ini` into `harness/_data/`;
- a checkout (running from the repository, or `pip install -e .`): they stay at the top level
  of the repository, beside `harness/`.

The experiments are not shipped: they are read from the folder they are given in (the
catalog is the checkout's `experiments/`, or `./experiments` when installed).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
_SHIPPED = PACKAGE / "_data"
INSTALLED = _SHIPPED.is_dir()

# The repository the harness runs from; None when it is installed from a wheel.
CHECKOUT: Path | None = None if INSTALLED else PACKAGE.parent
# Where a run asks git for the commit it records. Installed, that is the package's own
# folder: no repository there, so no commit (unless the venv sits inside some other repository).
PROJECT_ROOT = CHECKOUT or PACKAGE

_DATA = _SHIPPED if INSTALLED else PACKAGE.parent
TEMPLATES = _DATA / "templates"
PLAYBOOKS = _DATA / "playbooks"
HOST_STATE_SCRIPT = PLAYBOOKS / "files" / "host_state.py"
HOST_JOURNAL_SCRIPT = PLAYBOOKS / "files" / "host_journal.py"
# Every role on this machine (localhost).
SHIPPED_INVENTORY = _DATA / "inventory.ini"
CATALOG = (CHECKOUT / "experiments") if CHECKOUT else Path("experiments").absolute()


def default_inventory() -> Path:
    """`./inventory.ini` when the current folder has one, else the shipped localhost default."""
    local = Path("inventory.ini")
    return local.absolute() if local.is_file() else SHIPPED_INVENTORY
