"""The publisher's side of the fleet: a TUF repository of bundles.

Built on python-tuf (The Update Framework): the publisher signs root, targets, snapshot and
timestamp metadata with separate ed25519 keys; devices (:mod:`reminder.fleet.device`)
trust one root.json and let ``tuf.ngclient`` check signatures, versions (rollback
protection), expiry, and the length and hashes of every download. Nothing here invents a
signing scheme.

Repository (static files; any HTTP server, CDN or object store serves ``metadata/`` and
``targets/``)::

    REPO.keys/<role>.pem            private keys, OUTSIDE the served folder (--keys; mode 0700,
                                    files 0600; move root.pem offline after init)
    REPO/metadata/<v>.root.json     root history; timestamp.json; <v>.snapshot.json; <v>.targets.json
    REPO/targets/channels/<channel>/<sha256>.<name>-<version>.tar     bundles (consistent snapshots)
    REPO/targets/channels/<channel>/<sha256>.latest.json               the channel's newest bundle
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from reminder.bundle import open_bundle, pack_bundle
from reminder.contracts.manifest import Manifest
from reminder.errors import ReminderError
from reminder.io import atomic_write

ROLES = ("root", "targets", "snapshot", "timestamp")
EXPIRY_DAYS = {"root": 365, "targets": 90, "snapshot": 7, "timestamp": 1}


def _tuf():
    try:
        from tuf.api import metadata
        from tuf.api.serialization.json import JSONSerializer
    except ImportError:
        raise ReminderError("fleet updates need python-tuf: pip install 'tuf>=5' cryptography") from None
    return metadata, JSONSerializer


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _expiry(role: str, expires: dict | None) -> datetime:
    days = (expires or {}).get(role, EXPIRY_DAYS[role])
    return utc_now() + timedelta(days=days)


def _write_metadata(path: Path, metadata) -> None:
    _, serializer = _tuf()
    atomic_write(path, lambda tmp: metadata.to_file(str(tmp), serializer(compact=False)))


def default_keys(repo: Path) -> Path:
    """Where a repository's private keys live unless told: a folder beside it, never in it."""
    return repo.parent / f"{repo.name}.keys"


def keys_folder(repo: Path, keys: str | Path | None) -> Path:
    """The keys folder, refused when it lies inside the repository (which is served as it
    is, so its keys would be too) or when the repository holds keys of an older layout."""
    keys = Path(keys) if keys is not None else default_keys(repo)
    inside = keys.resolve() == repo.resolve() or repo.resolve() in keys.resolve().parents
    stray = sorted(str(p) for p in repo.rglob("*.pem")) if repo.is_dir() else []
    if inside or stray:
        raise ReminderError(f"private keys are inside the repository {repo} ({keys if inside else stray[0]}), which "
                            f"is served as it is: move them to {default_keys(repo)} (or a folder given with `keys`)")
    return keys


def existing_keys(repo: Path, keys: str | Path | None) -> Path:
    """:func:`keys_folder`, which must exist: publishing and re-signing need its keys."""
    folder = keys_folder(repo, keys)
    if not folder.is_dir():
        raise ReminderError(f"the keys folder {folder} does not exist" + (" (`keys`)" if keys is not None else
                            f" (give the folder of {repo}'s keys with `keys`)"))
    return folder


def _write_secret(path: Path, data: bytes) -> None:
    """A private file, mode 0600 from its first byte (mkstemp), written atomically."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_signer(keys: Path, role: str):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner

    path = keys / f"{role}.pem"
    if not path.is_file():
        raise ReminderError(f"the {role} key {path} is not here" +
                            (" (kept offline: bring it back to change the root)" if role == "root" else ""))
    return CryptoSigner(load_pem_private_key(path.read_bytes(), password=None))


def init_repository(repo: str | Path, *, keys: str | Path | None = None, expires: dict | None = None) -> Path:
    """Keys for the four roles (in ``keys``, default ``REPO.keys`` beside the repository)
    and version 1 of every metadata file; returns the ``root.json`` that devices must be
    given as their trusted root. The repository folder holds nothing secret: serve it."""
    from securesystemslib.signer import CryptoSigner

    metadata, _ = _tuf()
    repo = Path(repo)
    if (repo / "metadata" / "root.json").exists():
        raise ReminderError(f"{repo} already holds a repository (metadata/root.json exists)")
    keys = keys_folder(repo, keys)
    if keys.is_symlink() and not keys.exists():
        raise ReminderError(f"the keys folder {keys} is a symbolic link to {os.readlink(keys)}, which does not exist")
    if keys.exists() and not keys.is_dir():
        raise ReminderError(f"the keys folder {keys} is a file, not a folder")
    if keys.exists() and any(keys.iterdir()):
        raise ReminderError(f"the keys folder {keys} is not empty; keys are never overwritten")
    keys.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys.chmod(0o700)
    (repo / "metadata").mkdir(parents=True, exist_ok=True)
    (repo / "targets").mkdir(exist_ok=True)
    signers = {role: CryptoSigner.generate_ed25519() for role in ROLES}
    for role, signer in signers.items():
        _write_secret(keys / f"{role}.pem", signer.private_bytes)
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


def safe_name(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9._+-]`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def _target_info(target_path: str, source: Path):
    metadata, _ = _tuf()
    return metadata.TargetFile.from_file(target_path, str(source), ["sha256"])


def _store_target(repo: Path, info, source: Path):
    """Copy ``source`` to the consistent-snapshot name of ``info``; return ``info``."""
    target_path = info.path
    folder, name = os.path.split(target_path)
    destination = repo / "targets" / folder / f"{info.hashes['sha256']}.{name}"
    destination.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(destination, lambda tmp: shutil.copyfile(source, tmp))
    return info


def _check_republish(targets, info, name: str, version: str, channel: str) -> None:
    """A version is published once, with one content across every channel: the same content
    again is harmless, other content is refused (a device that has the version, or that
    later switches channel, would refuse it for good, or never see it)."""
    for path, existing in targets.signed.targets.items():
        custom = existing.unrecognized_fields.get("custom", {})
        same = path == info.path or (custom.get("name") == name and custom.get("version") == version)
        if same and path.endswith(".tar") and existing.hashes.get("sha256") != info.hashes["sha256"]:
            where = path.split("/")[1] if path.startswith("channels/") else "?"
            raise ReminderError(f"{version} is already published with other content on channel {where}; "
                                f"give the new bundle another version")


def publish(repo: str | Path, bundle: str | Path, *, channel: str = "stable", keys: str | Path | None = None,
            reset_classes: bool = False, allow_weak_classes: bool = False, expires: dict | None = None,
            log: Callable[[str], None] = print) -> dict:
    """Add ``bundle`` (folder or .tar) to ``channel`` as its newest version; re-sign targets,
    snapshot and timestamp (timestamp last, so clients never see a half publish).

    Devices refuse a bundle whose classes do not extend the ones they run unless it is
    published with ``reset_classes`` (a deliberate change of class list). A bundle whose
    new classes are not learnt (the manifest's ``quality.weak``) is refused, naming them,
    unless ``allow_weak_classes``; its per-class IoU is shown either way."""
    import fcntl

    repo = Path(repo)
    if not (repo / "metadata" / "targets.json").is_file():
        raise ReminderError(f"{repo} is not a repository: run `reminder fleet init --repo {repo}` first")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", channel):
        raise ReminderError(f"channel {channel!r} may use letters, digits, '.', '_' and '-' only")
    keys = existing_keys(repo, keys)
    with open(keys / ".publish.lock", "a") as lock:  # one publisher at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _publish(repo, bundle, channel, keys, reset_classes, expires, log, allow_weak_classes)


def check_quality(manifest: Manifest, *, allow_weak_classes: bool, log) -> None:
    """Show the bundle's per-class IoU; refuse it when a class it adds is not learnt."""
    from reminder.contracts.quality import iou_table

    quality = manifest.quality
    weak = [w for w in quality.get("weak") or [] if w.get("name") in (quality.get("new_classes") or [])]
    if quality.get("per_class_iou"):
        log(f"per-class IoU of {manifest.version} ({quality.get('measured_on', 'its evaluation')}):")
        for line in iou_table(quality["per_class_iou"], weak):
            log(line)
    if weak and not allow_weak_classes:
        names = ", ".join(f"{w['name']} ({w['why']})" for w in weak)
        raise ReminderError(f"{manifest.version} adds classes that are not learnt: {names}; train them further, "
                            f"or publish anyway with `allow_weak_classes`")


def _publish(repo: Path, bundle, channel: str, keys: Path, reset_classes: bool, expires, log,
             allow_weak_classes: bool = False) -> dict:
    metadata, _ = _tuf()
    signers = {role: _load_signer(keys, role) for role in ("targets", "snapshot", "timestamp")}
    with tempfile.TemporaryDirectory(prefix="reminder-publish-") as tmp:
        folder, manifest = open_bundle(bundle, tmp)
        check_quality(manifest, allow_weak_classes=allow_weak_classes, log=log)
        tar = pack_bundle(folder, Path(tmp) / "bundle.tar")
        targets = metadata.Metadata.from_file(str(repo / "metadata" / "targets.json"))
        prefix = f"channels/{channel}/"
        sequence = 1 + max((t.unrecognized_fields.get("custom", {}).get("sequence", 0)
                            for path, t in targets.signed.targets.items() if path.startswith(prefix)), default=0)
        target_path = f"{prefix}{safe_name(manifest.name)}-{safe_name(manifest.version)}.tar"
        info = _target_info(target_path, tar)
        _check_republish(targets, info, manifest.name, manifest.version, channel)
        _store_target(repo, info, tar)
        parent = manifest.parent
        custom = {"name": manifest.name, "version": manifest.version, "step": manifest.step,
                  "classes": list(manifest.class_names), "channel": channel, "sequence": sequence,
                  "parent": None if parent is None else vars(parent).copy(), "reset_classes": bool(reset_classes)}
        info.unrecognized_fields["custom"] = custom
        latest = Path(tmp) / "latest.json"
        latest.write_text(json.dumps({"target": target_path, **custom}, indent=2))
        index = _store_target(repo, _target_info(f"{prefix}latest.json", latest), latest)
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
    log(f"published {manifest.name} {manifest.version} to channel {channel} as {target_path} "
        f"(sequence {sequence}; targets v{targets.signed.version}, timestamp v{timestamp.signed.version})")
    return custom | {"target": target_path}


def resign_timestamp(repo: str | Path, *, keys: str | Path | None = None, expires: dict | None = None,
                     log: Callable[[str], None] = print) -> int:
    """A new timestamp version with a fresh expiry, for the days nothing is published
    (run it daily, e.g. from cron; devices refuse an expired timestamp)."""
    import fcntl

    metadata, _ = _tuf()
    repo = Path(repo)
    path = repo / "metadata" / "timestamp.json"
    if not path.is_file():
        raise ReminderError(f"{repo} is not a repository: metadata/timestamp.json is missing")
    keys = existing_keys(repo, keys)
    # publish's lock: a timestamp read before a publish and written after it would point devices
    # at the old snapshot (BadVersionNumberError until the next publish)
    with open(keys / ".publish.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        timestamp = metadata.Metadata.from_file(str(path))
        timestamp.signed.version += 1
        timestamp.signed.expires = _expiry("timestamp", expires)
        timestamp.sign(_load_signer(keys, "timestamp"))
        _write_metadata(path, timestamp)
    log(f"timestamp v{timestamp.signed.version} signed, expires {timestamp.signed.expires.isoformat()}")
    return timestamp.signed.version
