"""Where the files that ship beside the code live: templates, playbooks, the catalog.

The one module that locates them, so that a move or a packaging change is made here.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = PROJECT_ROOT / "templates"
PLAYBOOKS = PROJECT_ROOT / "playbooks"
HOST_STATE_SCRIPT = PLAYBOOKS / "files" / "host_state.py"
CATALOG = PROJECT_ROOT / "experiments"
