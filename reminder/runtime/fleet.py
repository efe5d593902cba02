"""Fleet updates: a TUF repository of bundles, and devices that verify, install and roll back.

Built on python-tuf (The Update Framework): the publisher signs root, targets, snapshot and
timestamp metadata with separate ed25519 keys; a device trusts one root.json and lets
``tuf.ngclient`` check signatures, versions (rollback protection), expiry, and the length
and hashes of every download. Nothing here invents a signing scheme.

Repository (static files; any HTTP server, CDN or object store serves ``metadata/`` and
``targets/``)::

    REPO/keys/<role>.pem            private keys (move root.pem offline after init)
    REPO/metadata/<v>.root.json     root history; timestamp.json; <v>.snapshot.json; <v>.targets.json
    REPO/targets/channels/<channel>/<sha256>.<name>-<version>.tar     bundles (consistent snapshots)
    REPO/targets/channels/<channel>/<sha256>.latest.json               the channel's newest bundle

Device install folder::

    DIR/tuf/                 trusted TUF metadata (starts from the trusted root.json)
    DIR/downloads/           verified bundle archives
    DIR/versions/<version>/  installed bundles; DIR/current -> versions/<version>
    DIR/status.json          installed, previous, refused versions, last sync time and result
    DIR/health.json          written by ``reminder run`` when a bundle fails to load there
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from reminder.errors import ReminderError
from reminder.export.bundle import open_bundle, pack_bundle, read_manifest, unpack_bundle
from reminder.io import atomic_write, atomic_write_text

ROLES = ("root", "targets", "snapshot", "timestamp")
EXPIRY_DAYS = {"root": 365, "targets": 90, "snapshot": 7, "timestamp": 1}
STAGING_PREFIX = ".staging-"


def _tuf():
    try:
        from tuf.api import metadata
        from tuf.api.serialization.json import JSONSerializer
    except ImportError:
        raise ReminderError("fleet updates need python-tuf: pip install 'tuf>=5' cryptography") from None
    return metadata, JSONSerializer


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _expiry(role: str, expires: dict | None) -> datetime:
    days = (expires or {}).get(role, EXPIRY_DAYS[role])
    return _now() + timedelta(days=days)


# -- publisher ---------------------------------------------------------------------------

def _write_metadata(path: Path, metadata) -> None:
    _, serializer = _tuf()
    atomic_write(path, lambda tmp: metadata.to_file(str(tmp), serializer(compact=False)))


def _load_signer(repo: Path, role: str):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner

    path = repo / "keys" / f"{role}.pem"
    if not path.is_file():
        raise ReminderError(f"the {role} key {path} is not here" +
                            (" (kept offline: bring it back to change the root)" if role == "root" else ""))
    return CryptoSigner(load_pem_private_key(path.read_bytes(), password=None))


def init_repository(repo: str | Path, *, expires: dict | None = None) -> Path:
    """Keys for the four roles and version 1 of every metadata file; returns the
    ``root.json`` that devices must be given as their trusted root."""
    from securesystemslib.signer import CryptoSigner

    metadata, _ = _tuf()
    repo = Path(repo)
    if (repo / "metadata" / "root.json").exists():
        raise ReminderError(f"{repo} already holds a repository (metadata/root.json exists)")
    (repo / "keys").mkdir(parents=True, exist_ok=True)
    (repo / "metadata").mkdir(exist_ok=True)
    (repo / "targets").mkdir(exist_ok=True)
    signers = {role: CryptoSigner.generate_ed25519() for role in ROLES}
    for role, signer in signers.items():
        path = repo / "keys" / f"{role}.pem"
        atomic_write(path, lambda tmp, s=signer: tmp.write_bytes(s.private_bytes))
        path.chmod(0o600)
    root = metadata.Root(expires=_expiry("root", expires), consistent_snapshot=True)
    for role, signer in signers.items():
        root.add_key(signer.public_key, role)
    roles = {"root": metadata.Metadata(root),
             "targets": metadata.Metadata(metadata.Targets(expires=_expiry("targets", expires))),
             "snapshot": metadata.Metadata(metadata.Snapshot(expires=_expiry("snapshot", expires))),
             "timestamp": metadata.Metadata(metadata.Timestamp(expires=_expiry("timestamp", expires)))}
    for role, md in roles.items():
        md.sign(signers[role])
    _write_metadata(repo / "metadata" / "1.root.json", roles["root"])
    _write_metadata(repo / "metadata" / "root.json", roles["root"])
    _write_metadata(repo / "metadata" / "1.targets.json", roles["targets"])
    _write_metadata(repo / "metadata" / "targets.json", roles["targets"])
    _write_metadata(repo / "metadata" / "1.snapshot.json", roles["snapshot"])
    _write_metadata(repo / "metadata" / "snapshot.json", roles["snapshot"])
    _write_metadata(repo / "metadata" / "timestamp.json", roles["timestamp"])
    return repo / "metadata" / "root.json"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def _store_target(repo: Path, target_path: str, source: Path):
    """Copy ``source`` to its consistent-snapshot name; return its TargetFile."""
    metadata, _ = _tuf()
    info = metadata.TargetFile.from_file(target_path, str(source), ["sha256"])
    folder, name = os.path.split(target_path)
    destination = repo / "targets" / folder / f"{info.hashes['sha256']}.{name}"
    destination.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(destination, lambda tmp: shutil.copyfile(source, tmp))
    return info


def publish(repo: str | Path, bundle: str | Path, *, channel: str = "stable", expires: dict | None = None,
            log: Callable[[str], None] = print) -> dict:
    """Add ``bundle`` (folder or .tar) to ``channel`` as its newest version; re-sign targets,
    snapshot and timestamp (timestamp last, so clients never see a half publish)."""
    metadata, _ = _tuf()
    repo = Path(repo)
    if not (repo / "metadata" / "targets.json").is_file():
        raise ReminderError(f"{repo} is not a repository: run `reminder fleet init --repo {repo}` first")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", channel):
        raise ReminderError(f"channel {channel!r} may use letters, digits, '.', '_' and '-' only")
    signers = {role: _load_signer(repo, role) for role in ("targets", "snapshot", "timestamp")}
    with tempfile.TemporaryDirectory(prefix="reminder-publish-") as tmp:
        folder, manifest = open_bundle(bundle, tmp)
        tar = pack_bundle(folder, Path(tmp) / "bundle.tar")
        targets = metadata.Metadata.from_file(str(repo / "metadata" / "targets.json"))
        prefix = f"channels/{channel}/"
        sequence = 1 + max((t.unrecognized_fields.get("custom", {}).get("sequence", 0)
                            for path, t in targets.signed.targets.items() if path.startswith(prefix)), default=0)
        target_path = f"{prefix}{_safe(manifest['name'])}-{_safe(manifest['version'])}.tar"
        info = _store_target(repo, target_path, tar)
        custom = {"name": manifest["name"], "version": manifest["version"], "step": manifest["step"],
                  "classes": [c["name"] for c in manifest["classes"]], "channel": channel, "sequence": sequence,
                  "parent": manifest.get("parent")}
        info.unrecognized_fields["custom"] = custom
        latest = Path(tmp) / "latest.json"
        latest.write_text(json.dumps({"target": target_path, **custom}, indent=2))
        index = _store_target(repo, f"{prefix}latest.json", latest)
    targets.signed.targets[target_path] = info
    targets.signed.targets[f"{prefix}latest.json"] = index
    targets.signed.version += 1
    targets.signed.expires = _expiry("targets", expires)
    targets.sign(signers["targets"])
    snapshot = metadata.Metadata.from_file(str(repo / "metadata" / "snapshot.json"))
    snapshot.signed.meta["targets.json"] = metadata.MetaFile(version=targets.signed.version)
    snapshot.signed.version += 1
    snapshot.signed.expires = _expiry("snapshot", expires)
    snapshot.sign(signers["snapshot"])
    timestamp = metadata.Metadata.from_file(str(repo / "metadata" / "timestamp.json"))
    timestamp.signed.snapshot_meta = metadata.MetaFile(version=snapshot.signed.version)
    timestamp.signed.version += 1
    timestamp.signed.expires = _expiry("timestamp", expires)
    timestamp.sign(signers["timestamp"])
    _write_metadata(repo / "metadata" / f"{targets.signed.version}.targets.json", targets)
    _write_metadata(repo / "metadata" / "targets.json", targets)
    _write_metadata(repo / "metadata" / f"{snapshot.signed.version}.snapshot.json", snapshot)
    _write_metadata(repo / "metadata" / "snapshot.json", snapshot)
    _write_metadata(repo / "metadata" / "timestamp.json", timestamp)
    log(f"published {manifest['name']} {manifest['version']} to channel {channel} as {target_path} "
        f"(sequence {sequence}; targets v{targets.signed.version}, timestamp v{timestamp.signed.version})")
    return custom | {"target": target_path}


def resign_timestamp(repo: str | Path, *, expires: dict | None = None,
                     log: Callable[[str], None] = print) -> int:
    """A new timestamp version with a fresh expiry, for the days nothing is published
    (run it daily, e.g. from cron; devices refuse an expired timestamp)."""
    metadata, _ = _tuf()
    repo = Path(repo)
    path = repo / "metadata" / "timestamp.json"
    if not path.is_file():
        raise ReminderError(f"{repo} is not a repository: metadata/timestamp.json is missing")
    timestamp = metadata.Metadata.from_file(str(path))
    timestamp.signed.version += 1
    timestamp.signed.expires = _expiry("timestamp", expires)
    timestamp.sign(_load_signer(repo, "timestamp"))
    _write_metadata(path, timestamp)
    log(f"timestamp v{timestamp.signed.version} signed, expires {timestamp.signed.expires.isoformat()}")
    return timestamp.signed.version


# -- device ------------------------------------------------------------------------------

def read_status(install_dir: str | Path) -> dict:
    path = Path(install_dir) / "status.json"
    if not path.is_file():
        return {"installed": None, "previous": [], "refused": [], "last_sync": None, "history": []}
    return json.loads(path.read_text())


def _write_status(install_dir: Path, status: dict) -> None:
    status["history"] = status.get("history", [])[-50:]
    atomic_write_text(install_dir / "status.json", json.dumps(status, indent=2) + "\n")


def _switch(install_dir: Path, version: str) -> None:
    """Point ``current`` at ``versions/<version>`` atomically (new link renamed over the old)."""
    link = install_dir / f".current-{os.getpid()}"
    link.unlink(missing_ok=True)
    os.symlink(f"versions/{version}", link)
    os.replace(link, install_dir / "current")
    fd = os.open(install_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def smoke_test(folder: Path, manifest: dict, install_dir: Path) -> None:
    """Load the bundle with the runtime, run one inference on its sample frame (or a grey
    frame), and check its classes against its parent's when that is installed here."""
    import numpy as np

    from reminder.runtime.predictor import Predictor

    names = [c["name"] for c in manifest["classes"]]
    if [c["id"] for c in manifest["classes"]] != list(range(len(names))) or len(set(names)) != len(names):
        raise ReminderError("class ids are not 0..K-1 or class names repeat")
    parent = manifest.get("parent") or {}
    parent_dir = install_dir / "versions" / str(parent.get("version"))
    if parent.get("version") and (parent_dir / "manifest.json").is_file():
        old = [c["name"] for c in read_manifest(parent_dir)["classes"]]
        if names[:len(old)] != old:
            raise ReminderError(f"its classes do not extend its parent {parent['version']}'s classes")
    try:
        predictor = Predictor(folder)
        sample = folder / "sample.png"
        if sample.is_file():
            import cv2

            frame = cv2.imread(str(sample))
        else:
            frame = np.full((int(manifest["input"]["height"]), int(manifest["input"]["width"]), 3), 128, np.uint8)
        [prediction] = predictor.predict(frame)
    except ReminderError as error:
        raise ReminderError(f"it does not run here: {error}") from None
    except Exception as error:  # the smoke test must catch whatever the backend raises
        raise ReminderError(f"it does not run here: {type(error).__name__}: {error}") from None
    if prediction.labels.shape != frame.shape[:2] or int(prediction.labels.max()) >= len(names):
        raise ReminderError("its output is not a label map of the frame's size and classes")


def _prune(install_dir: Path, status: dict, keep: int) -> None:
    keepers = {status.get("installed")} | set(status.get("previous", [])[:max(keep - 1, 1)])
    for folder in (install_dir / "versions").iterdir():
        if folder.name.startswith(STAGING_PREFIX) or folder.name in keepers:
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _record(install_dir: Path, status: dict, result: str, **fields) -> dict:
    status["last_sync"] = {"time": _now().isoformat(), "result": result, **fields}
    status.setdefault("history", []).append(status["last_sync"])
    _write_status(install_dir, status)
    return status


def sync(install_dir: str | Path, *, url: str, trusted_root: str | Path | None = None, channel: str = "stable",
         keep: int = 3, log: Callable[[str], None] = print) -> dict:
    """One update round; returns the status. Raises :class:`ReminderError` (after
    recording it in ``status.json``) when the update is refused or fails; the device then
    still runs its previous, verified version."""
    from tuf.ngclient import Updater

    install_dir = Path(install_dir)
    for sub in ("tuf", "downloads", "versions"):
        (install_dir / sub).mkdir(parents=True, exist_ok=True)
    for leftover in (install_dir / "versions").glob(f"{STAGING_PREFIX}*"):
        log(f"removing {leftover.name}, left by an interrupted update")
        shutil.rmtree(leftover, ignore_errors=True)
    _check_health(install_dir, read_status(install_dir), log)
    status = read_status(install_dir)  # after a health rollback, if there was one
    trusted = install_dir / "tuf" / "root.json"
    if not trusted.is_file():
        if trusted_root is None or not Path(trusted_root).is_file():
            raise ReminderError(f"{install_dir} has no trusted root yet: pass --trusted-root root.json "
                                f"(the repository's, obtained out of band)")
        shutil.copyfile(trusted_root, trusted)
    base = url.rstrip("/")
    try:
        updater = Updater(str(install_dir / "tuf"), f"{base}/metadata/", str(install_dir / "downloads"),
                          f"{base}/targets/", bootstrap=None)
        updater.refresh()
        index_info = updater.get_targetinfo(f"channels/{channel}/latest.json")
        if index_info is None:
            raise ReminderError(f"channel {channel!r} has nothing published at {url}")
        index = json.loads(Path(updater.download_target(index_info)).read_text())
        info = updater.get_targetinfo(index["target"])
        if info is None:
            raise ReminderError(f"the channel index names {index['target']}, which the repository does not list")
        custom = info.unrecognized_fields.get("custom", {})
        version, sequence = str(custom.get("version")), int(custom.get("sequence", 0))
        if version == status.get("installed"):
            log(f"up to date: {version} on channel {channel}")
            return _record(install_dir, status, "up to date", version=version, channel=channel)
        if version in status.get("refused", []):
            log(f"{version} was refused on this device before; staying on {status.get('installed')}")
            return _record(install_dir, status, "refused before", version=version, channel=channel)
        if sequence <= int(status.get("sequence", 0)) and status.get("channel") == channel:
            raise ReminderError(f"update refused: {version} (sequence {sequence}) is older than the installed "
                                f"{status.get('installed')} (sequence {status.get('sequence')})")
        log(f"downloading {index['target']} ({info.length / 1e6:.1f} MB)")
        archive = Path(updater.download_target(info, str(install_dir / "downloads" / Path(index["target"]).name)))
    except ReminderError as error:
        _record(install_dir, status, "failed", error=str(error), channel=channel)
        raise
    except Exception as error:  # TUF's refusals, and network errors it lets through (urllib3's)
        failure = ReminderError(f"update refused: {type(error).__name__}: {error}")
        _record(install_dir, status, "refused", error=str(failure), channel=channel)
        raise failure from None
    return _install(install_dir, archive, version, sequence, channel, status, keep, log)


def _install(install_dir: Path, archive: Path, version: str, sequence: int, channel: str, status: dict,
             keep: int, log) -> dict:
    staging = install_dir / "versions" / f"{STAGING_PREFIX}{_safe(version)}"
    target = install_dir / "versions" / version
    try:
        log(f"unpacking and verifying {version}")
        unpack_bundle(archive, staging)
        manifest = read_manifest(staging)
        if manifest["version"] != version:
            raise ReminderError(f"the archive holds version {manifest['version']}, the repository said {version}")
        log(f"smoke test of {version}")
        try:
            smoke_test(staging, manifest, install_dir)
        except ReminderError as error:
            status.setdefault("refused", []).append(version)
            raise ReminderError(f"{version} failed its smoke test, not installed: {error}") from None
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
        log(f"switching current to {version}")
        _switch(install_dir, version)
    except (ReminderError, OSError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        message = str(error) if isinstance(error, ReminderError) else f"install of {version} failed: {error}"
        _record(install_dir, status, "failed", error=message, version=version, channel=channel)
        raise ReminderError(message) from None
    previous = status.get("installed")
    status["previous"] = ([previous] if previous else []) + [v for v in status.get("previous", []) if v != version]
    status.update(installed=version, sequence=sequence, channel=channel)
    _prune(install_dir, status, keep)
    status["previous"] = [v for v in status["previous"] if (install_dir / "versions" / v).is_dir()]
    log(f"installed {version} (previous: {previous or 'none'})")
    return _record(install_dir, status, "installed", version=version, channel=channel)


def rollback(install_dir: str | Path, *, reason: str = "rollback requested",
             log: Callable[[str], None] = print) -> dict:
    """Switch ``current`` back to the previous version; the abandoned version is refused
    from then on (a newer one is installed normally)."""
    install_dir = Path(install_dir)
    status = read_status(install_dir)
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
    path = install_dir / "health.json"
    if not path.is_file():
        return
    try:
        health = json.loads(path.read_text())
    except json.JSONDecodeError:
        return
    if not health.get("ok", True) and health.get("version") == status.get("installed"):
        rollback(install_dir, reason=f"the runtime reported it unhealthy: {health.get('error')}", log=log)
        path.unlink(missing_ok=True)


def write_health(install_dir: Path, version: str, ok: bool, error: str | None = None) -> None:
    """What ``reminder run`` reports about the bundle it was asked to switch to."""
    atomic_write_text(Path(install_dir) / "health.json", json.dumps(
        {"version": version, "ok": ok, "error": error, "time": _now().isoformat()}) + "\n")


def watch(install_dir: str | Path, *, every: float, log: Callable[[str], None] = print, rounds: int | None = None,
          **options) -> None:
    """``sync`` every ``every`` seconds; a failed round is logged and retried next time."""
    done = 0
    while rounds is None or done < rounds:
        try:
            sync(install_dir, log=log, **options)
        except ReminderError as error:
            log(str(error))
        done += 1
        if rounds is None or done < rounds:
            time.sleep(every)
