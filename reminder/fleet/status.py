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
        check_schema(status)
    except (OSError, ValueError, RecursionError) as error:
        if log is not None:
            log(f"warning: {path} is unreadable ({str(error)[:120]}); status rebuilt from current and versions/")
        return rebuild_status(install_dir)
    base = empty_status()
    base.update(status)
    return base


# each field and the JSON types it may hold (a file that parses may still hold `"previous": null`)
_SCHEMA = {"installed": (str, type(None)), "previous": (list,), "refused": (list,), "last_sync": (dict, type(None)),
           "history": (list,), "digests": (dict,), "channel": (str, type(None)), "sequence": (int, type(None))}


def check_schema(status: dict) -> None:
    """Refuse (ValueError) a status whose fields have the wrong types: the sync, status and
    rollback code would fail on them with TypeErrors, for ever."""
    for key, types in _SCHEMA.items():
        if key in status and (not isinstance(status[key], types) or isinstance(status[key], bool)):
            raise ValueError(f"its {key!r} is a {type(status[key]).__name__}")
    for key in ("previous", "refused"):
        if not all(isinstance(v, str) for v in status.get(key, [])):
            raise ValueError(f"its {key!r} holds something other than version names")
    if not all(isinstance(v, dict) for v in status.get("history", [])):
        raise ValueError("its 'history' holds something other than records")
    if not all(isinstance(k, str) and isinstance(v, (str, type(None))) for k, v in status.get("digests", {}).items()):
        raise ValueError("its 'digests' holds something other than version -> sha256")


def write_status(install_dir: Path, status: dict) -> None:
    status["history"] = status.get("history", [])[-50:]
    atomic_write_text(install_dir / STATUS_FILE, json.dumps(status, indent=2) + "\n")
