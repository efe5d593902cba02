"""The health report a running stream leaves in an install folder.

``reminder run`` on an install folder (``DIR/current -> versions/<v>``) writes
``DIR/health.json`` when it switches to a new version: ``ok`` true once it runs, false
with the error when it cannot load it. The fleet's device side reads it and rolls back a
version the runtime reported unhealthy. It lives here, in the runtime that writes it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from reminder.io import atomic_write_text

HEALTH_FILE = "health.json"


def write_health(install_dir: str | Path, version: str, ok: bool, error: str | None = None) -> None:
    """Record whether ``version`` runs here (atomically)."""
    now = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    atomic_write_text(Path(install_dir) / HEALTH_FILE, json.dumps(
        {"version": version, "ok": ok, "error": error, "time": now}) + "\n")


def read_health(install_dir: str | Path) -> dict | None:
    """The last report, or ``None`` when there is none or it cannot be read."""
    path = Path(install_dir) / HEALTH_FILE
    try:
        health = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return health if isinstance(health, dict) else None
