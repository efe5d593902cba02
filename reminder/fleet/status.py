"""A device's ``status.json``: what is installed, what came before, what was refused, and
the last syncs. A missing or unreadable file is rebuilt from ``current`` and
``versions/`` (with a warning), so one bad write never stops a device from syncing,
rolling back or reporting."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from reminder.io import atomic_write_text

STATUS_FILE = "status.json"


def empty_status() -> dict:
    return {"installed": None, "previous": [], "refused": [], "last_sync": None, "history": []}


def installed_version(install_dir: Path) -> str | None:
    """The version ``current`` points at, when it points at an installed bundle."""
    link = install_dir / "current"
    if not link.is_symlink():
        return None
    target = Path(os.path.realpath(link))
    return target.name if (target / "manifest.json").is_file() and target.parent.name == "versions" else None


def rebuild_status(install_dir: Path) -> dict:
    """What can be known without status.json: the installed version and the others kept."""
    status = empty_status()
    status["installed"] = installed_version(install_dir)
    versions = install_dir / "versions"
    if versions.is_dir():
        others = [p for p in versions.iterdir() if p.name != status["installed"] and (p / "manifest.json").is_file()
                  and not p.name.startswith(".")]
        status["previous"] = [p.name for p in sorted(others, key=lambda p: p.stat().st_mtime, reverse=True)]
    return status


def read_status(install_dir: str | Path, *, log: Callable[[str], None] | None = None) -> dict:
    """The device's status; rebuilt (and said so through ``log``) when unreadable."""
    install_dir = Path(install_dir)
    path = install_dir / STATUS_FILE
    if not path.is_file():
        return rebuild_status(install_dir) if (install_dir / "current").is_symlink() else empty_status()
    try:
        status = json.loads(path.read_text())
        if not isinstance(status, dict):
            raise ValueError(f"it holds a JSON {type(status).__name__}")
    except (OSError, ValueError, RecursionError) as error:
        if log is not None:
            log(f"warning: {path} is unreadable ({str(error)[:120]}); status rebuilt from current and versions/")
        return rebuild_status(install_dir)
    base = empty_status()
    base.update(status)
    return base


def write_status(install_dir: Path, status: dict) -> None:
    status["history"] = status.get("history", [])[-50:]
    atomic_write_text(install_dir / STATUS_FILE, json.dumps(status, indent=2) + "\n")
