"""The device's side of the fleet: sync from a TUF repository, smoke-test, install,
switch, roll back, and report status.

Device install folder::

    DIR/tuf/                 trusted TUF metadata (starts from the trusted root.json)
    DIR/downloads/           verified bundle archives
    DIR/versions/<version>/  installed bundles; DIR/current -> versions/<version>
    DIR/status.json          installed, previous, refused versions, last sync time and result
    DIR/health.json          written by ``reminder run`` (:mod:`reminder.runtime.health`)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from reminder.bundle import check_name, read_manifest, unpack_bundle
from reminder.contracts.manifest import Manifest
from reminder.errors import LocalError, ReminderError
from reminder.fleet.fetcher import deadline_fetcher, describe_error
from reminder.fleet.repository import utc_now
from reminder.fleet.status import read_status, write_status
from reminder.runtime.health import HEALTH_FILE, read_health

STAGING_PREFIX = ".staging-"
LOCK_FILE = ".sync.lock"


@contextlib.contextmanager
def device_lock(install_dir: Path, *, wait: bool = True):
    """One sync, rollback or install at a time per install folder (``flock``): a second
    one waits, or, with ``wait=False``, is told that another runs."""
    install_dir.mkdir(parents=True, exist_ok=True)
    with open(install_dir / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise ReminderError(f"another sync is running on {install_dir}; try again when it ends") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _switch(install_dir: Path, version: str) -> None:
    """Point ``current`` at ``versions/<version>`` atomically (new link renamed over the old)."""
    check_name(version, "version")
    if not (install_dir / "versions" / version / "manifest.json").is_file():
        raise ReminderError(f"versions/{version} is not an installed bundle; current is left as it is")
    link = install_dir / f".current-{os.getpid()}-{threading.get_ident()}"
    link.unlink(missing_ok=True)
    os.symlink(f"versions/{version}", link)
    os.replace(link, install_dir / "current")
    fd = os.open(install_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def smoke_test(folder: Path, manifest: Manifest, install_dir: Path) -> None:
    """Load the bundle with the runtime, run one inference on its sample frame (or a grey
    frame), and check its classes against its parent's when that is installed here."""
    import numpy as np

    from reminder.runtime.predictor import Predictor

    table = manifest.classes  # ids, names, colours: checked when the manifest was read
    names = table.names
    parent = manifest.parent
    if parent is not None and (install_dir / "versions" / parent.version / "manifest.json").is_file():
        table.check_extends(read_manifest(install_dir / "versions" / parent.version).classes,
                            what=f"its classes (parent {parent.version})")
    try:
        predictor = Predictor(folder)
        sample = folder / "sample.png"
        if sample.is_file():
            import cv2

            frame = cv2.imread(str(sample))
        else:
            frame = np.full((*manifest.input.size, 3), 128, np.uint8)
        [prediction] = predictor.predict(frame)
    except LocalError as error:  # a package missing here, not a fault of the bundle: retried
        raise LocalError(f"it cannot run on this device yet ({error}); it stays eligible") from None
    except ReminderError as error:
        raise ReminderError(f"it does not run here: {error}") from None
    except Exception as error:  # the smoke test must catch whatever the backend raises
        raise ReminderError(f"it does not run here: {type(error).__name__}: {error}") from None
    if prediction.labels.shape != frame.shape[:2] or int(prediction.labels.max()) >= len(names):
        raise ReminderError("its output is not a label map of the frame's size and classes")


def _prune(install_dir: Path, status: dict, keep: int) -> None:
    """Remove installed versions and downloaded archives beyond ``keep`` (never the
    installed version or the newest previous one)."""
    keepers = {status.get("installed")} | set(status.get("previous", [])[:max(keep - 1, 1)])
    for folder in (install_dir / "versions").iterdir():
        if folder.name.startswith(STAGING_PREFIX) or folder.name in keepers:
            continue
        shutil.rmtree(folder, ignore_errors=True)
    archives = sorted((install_dir / "downloads").glob("*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
    refused = set(status.get("refused", []))
    for index, archive in enumerate(archives):
        if index >= max(keep, 1) or archive.stem in refused:  # a refused version is never installed
            archive.unlink(missing_ok=True)


def _record(install_dir: Path, status: dict, result: str, **fields) -> dict:
    status["last_sync"] = {"time": utc_now().isoformat(), "result": result, **fields}
    status.setdefault("history", []).append(status["last_sync"])
    write_status(install_dir, status)
    return status


def sync(install_dir: str | Path, *, url: str, trusted_root: str | Path | None = None, channel: str = "stable",
         keep: int = 3, wait: bool = True, deadline: float = 60.0, min_rate: float = 50_000.0,
         log: Callable[[str], None] = print) -> dict:
    """One update round; returns the status. Raises :class:`ReminderError` (after
    recording it in ``status.json``) when the update is refused or fails; the device then
    still runs its previous, verified version. One round runs at a time per install folder
    (a second waits, or fails at once with ``wait=False``). Each download must finish
    within ``deadline`` seconds plus its length at ``min_rate`` bytes per second."""
    install_dir = Path(install_dir)
    if keep < 1:
        raise ReminderError(f"`keep` must be at least 1, got {keep}")
    with device_lock(install_dir, wait=wait):
        return _sync(install_dir, url, trusted_root, channel, keep, deadline, min_rate, log)


def _sync(install_dir: Path, url, trusted_root, channel, keep, deadline, min_rate, log) -> dict:
    from tuf.ngclient import Updater

    for sub in ("tuf", "downloads", "versions"):
        (install_dir / sub).mkdir(parents=True, exist_ok=True)
    for leftover in (install_dir / "versions").glob(f"{STAGING_PREFIX}*"):
        log(f"removing {leftover.name}, left by an interrupted update")
        shutil.rmtree(leftover, ignore_errors=True)
    _check_health(install_dir, read_status(install_dir, log=log), log)
    status = read_status(install_dir, log=log)  # after a health rollback, if there was one
    trusted = install_dir / "tuf" / "root.json"
    if not trusted.is_file():
        if trusted_root is None or not Path(trusted_root).is_file():
            raise ReminderError(f"{install_dir} has no trusted root yet: pass `trusted_root` root.json "
                                f"(the repository's, obtained out of band)")
        shutil.copyfile(trusted_root, trusted)
    base = url.rstrip("/")
    try:
        updater = Updater(str(install_dir / "tuf"), f"{base}/metadata/", str(install_dir / "downloads"),
                          f"{base}/targets/", fetcher=deadline_fetcher(deadline=deadline, min_rate=min_rate),
                          bootstrap=None)
        updater.refresh()
        index_info = updater.get_targetinfo(f"channels/{channel}/latest.json")
        if index_info is None:
            raise ReminderError(f"channel {channel!r} has nothing published at {url}")
        index = json.loads(Path(updater.download_target(index_info)).read_text())
        info = updater.get_targetinfo(index["target"])
        if info is None:
            raise ReminderError(f"the channel index names {index['target']}, which the repository does not list")
        custom = info.unrecognized_fields.get("custom", {})
        version, sequence = check_name(custom.get("version"), "published version"), int(custom.get("sequence", 0))
        digest = info.hashes.get("sha256")
        if version == status.get("installed"):
            installed_digest = status.get("digests", {}).get(version)
            if installed_digest and digest != installed_digest:
                raise ReminderError(f"update refused: {version} is published with other content than the installed "
                                    f"{version}; a version is never replaced in place")
            log(f"up to date: {version} on channel {channel}")
            return _record(install_dir, status, "up to date", version=version, channel=channel)
        if version in status.get("refused", []):
            log(f"{version} was refused on this device before; staying on {status.get('installed')}")
            return _record(install_dir, status, "refused before", version=version, channel=channel)
        if sequence <= int(status.get("sequence", 0)) and status.get("channel") == channel:
            raise ReminderError(f"update refused: {version} (sequence {sequence}) is older than the installed "
                                f"{status.get('installed')} (sequence {status.get('sequence')})")
        log(f"downloading {index['target']} ({info.length / 1e6:.1f} MB)")
        archive = Path(updater.download_target(info, str(install_dir / "downloads" / f"{version}.tar")))
    except ReminderError as error:
        _record(install_dir, status, "failed", error=str(error), channel=channel)
        raise
    except Exception as error:  # TUF's refusals, and network errors it lets through (urllib3's)
        failure = ReminderError(f"update refused: {describe_error(error)} (repository {base})")
        _record(install_dir, status, "refused", error=str(failure), channel=channel)
        raise failure from None
    return _install(install_dir, archive, version, sequence, channel, status, keep, log,
                    digest=digest, reset_classes=bool(custom.get("reset_classes")))


def _check_classes(manifest: Manifest, install_dir: Path, installed: str | None, reset: bool) -> None:
    """A new bundle must keep the running bundle's classes (and add to them) unless its
    publisher marked it a class reset."""
    if reset or not installed or not (install_dir / "versions" / installed / "manifest.json").is_file():
        return
    old = list(read_manifest(install_dir / "versions" / installed).class_names)
    new = list(manifest.class_names)
    if new[:len(old)] != old:
        first = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
        raise ReminderError(f"{manifest.version}'s classes do not extend the installed {installed}'s (class "
                            f"{first}: {old[first] if first < len(old) else '-'} -> "
                            f"{new[first] if first < len(new) else '-'}); publish it with `reset_classes` to "
                            f"change the class list on purpose")


def _install(install_dir: Path, archive: Path, version: str, sequence: int, channel: str, status: dict,
             keep: int, log, *, digest: str | None, reset_classes: bool) -> dict:
    """Unpack, check, smoke-test and switch to ``version``. The bundle's own faults (its
    content, classes or smoke test) refuse the version for ever; local ones (disk, an
    interruption) do not, and the next sync tries again."""
    target = install_dir / "versions" / version
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=install_dir / "versions"))
    unpacked = staging / "bundle"
    try:
        log(f"unpacking and verifying {version}")
        try:
            unpack_bundle(archive, unpacked)
            manifest = read_manifest(unpacked)
            if manifest.version != version:
                raise ReminderError(f"the archive holds version {manifest.version}, the repository said {version}")
            _check_classes(manifest, install_dir, status.get("installed"), reset_classes)
            known = status.get("digests", {}).get(version)
            if target.exists() and known and digest and known != digest:
                raise ReminderError(f"{version} is published with other content than the {version} installed here; "
                                    f"a version is never replaced in place")
            log(f"smoke test of {version}")
            try:
                smoke_test(unpacked, manifest, install_dir)
            except LocalError as error:
                raise LocalError(f"{version} was not installed: {error}") from None
            except ReminderError as error:
                raise ReminderError(f"{version} failed its smoke test, not installed: {error}") from None
        except LocalError:
            raise
        except ReminderError as error:
            status.setdefault("refused", []).append(version)
            _record(install_dir, status, "refused", error=str(error), version=version, channel=channel)
            Path(archive).unlink(missing_ok=True)  # refused for ever: its archive is of no use here
            raise
        live = {status.get("installed"), *status.get("previous", [])}
        if target.exists() and version not in live:  # a stale copy nobody runs: set aside, then removed
            os.replace(target, staging / "stale")
        if not target.exists():  # a live copy of the same content is switched to as it is
            os.replace(unpacked, target)
        log(f"switching current to {version}")
        _switch(install_dir, version)
    except ReminderError as error:
        if isinstance(error, LocalError):
            _record(install_dir, status, "failed", error=str(error), version=version, channel=channel)
        raise
    except OSError as error:
        message = f"install of {version} failed here (it stays eligible): {error}"
        _record(install_dir, status, "failed", error=message, version=version, channel=channel)
        raise ReminderError(message) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    previous = status.get("installed")
    status["previous"] = ([previous] if previous else []) + [v for v in status.get("previous", []) if v != version]
    status.update(installed=version, sequence=sequence, channel=channel)
    status.setdefault("digests", {})[version] = digest
    _prune(install_dir, status, keep)
    status["previous"] = [v for v in status["previous"] if (install_dir / "versions" / v).is_dir()]
    status["digests"] = {v: d for v, d in status["digests"].items() if v == version or v in status["previous"]}
    log(f"installed {version} (previous: {previous or 'none'})")
    return _record(install_dir, status, "installed", version=version, channel=channel)


def rollback(install_dir: str | Path, *, reason: str = "rollback requested",
             log: Callable[[str], None] = print) -> dict:
    """Switch ``current`` back to the previous version; the abandoned version is refused
    from then on (a newer one is installed normally)."""
    install_dir = Path(install_dir)
    with device_lock(install_dir):
        return _rollback(install_dir, reason, log)


def _rollback(install_dir: Path, reason: str, log) -> dict:
    status = read_status(install_dir, log=log)
    previous = [v for v in status.get("previous", []) if (install_dir / "versions" / v / "manifest.json").is_file()]
    if not previous:
        raise ReminderError(f"{install_dir} has no previous version to roll back to")
    abandoned, target = status.get("installed"), previous[0]
    _switch(install_dir, target)
    status["refused"] = status.get("refused", []) + ([abandoned] if abandoned else [])
    status["previous"] = previous[1:]
    status["installed"] = target
    log(f"rolled back from {abandoned} to {target} ({reason})")
    return _record(install_dir, status, "rolled back", version=target, abandoned=abandoned, reason=reason)


def _check_health(install_dir: Path, status: dict, log) -> None:
    """Roll back when the runtime reported the installed version unhealthy."""
    health = read_health(install_dir)
    if health is not None and not health.get("ok", True) and health.get("version") == status.get("installed"):
        _rollback(install_dir, f"the runtime reported it unhealthy: {health.get('error')}", log)
        (install_dir / HEALTH_FILE).unlink(missing_ok=True)


def watch(install_dir: str | Path, *, every: float, log: Callable[[str], None] = print, rounds: int | None = None,
          **options) -> None:
    """``sync`` every ``every`` seconds; a failed round, whatever failed, is logged and
    retried next time."""
    done = 0
    while rounds is None or done < rounds:
        try:
            sync(install_dir, log=log, **options)
        except ReminderError as error:
            log(str(error))
        except Exception as error:  # one bad round never ends the watch
            log(f"sync round failed: {type(error).__name__}: {error}")
        done += 1
        if rounds is None or done < rounds:
            time.sleep(every)
