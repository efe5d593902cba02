"""Bundles: a folder (or its ``.tar``) with ``manifest.json`` and the files it hashes.

Torch-free: devices verify, pack and unpack bundles with this module alone.

The manifest itself (its fields, checks and the one preparation of frames) is
:mod:`reminder.contracts.manifest`; this module reads, hashes and moves bundles.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path

from reminder.contracts.manifest import Manifest
# the names' rules and the format tag live with the manifest; re-exported for the bundle's users
from reminder.contracts.manifest import BUNDLE_FORMAT, check_file_name, check_name  # noqa: F401
from reminder.errors import LocalError, ReminderError
from reminder.io import atomic_write, atomic_write_text, sha256_file

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 4 << 20
# an archive is refused, before anything is written, when its manifest lists more than this
MAX_BUNDLE_BYTES = int(os.environ.get("REMINDER_MAX_BUNDLE_BYTES", 16 << 30))


def file_entry(path: Path) -> dict:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def write_manifest(bundle: Path, manifest: Manifest | dict) -> Path:
    """Write ``manifest`` (a plain dict is written as it is: tools and tests that edit one)."""
    data = manifest.to_json() if isinstance(manifest, Manifest) else manifest
    return atomic_write_text(bundle / MANIFEST, json.dumps(data, indent=2) + "\n")


def read_manifest(bundle: str | Path) -> Manifest:
    """The manifest of a bundle folder, checked (see :class:`Manifest`)."""
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise ReminderError(f"{bundle} is not a bundle: {MANIFEST} is missing")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ReminderError(f"{path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB")
    try:
        data = json.loads(path.read_text())
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise ReminderError(f"{path} is not valid JSON: {str(error)[:200] or type(error).__name__}") from None
    return Manifest(data, str(path))


def manifest_sha256(bundle: str | Path) -> str:
    return sha256_file(Path(bundle) / MANIFEST)


def verify_bundle(bundle: str | Path) -> Manifest:
    """Check every hashed file of a bundle folder; return its manifest.

    A missing file, a size or a sha256 that differs is refused with the file named.
    """
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    for relative, entry in manifest.listed_files().items():
        path = bundle / relative
        if path.is_symlink():
            raise ReminderError(f"bundle {bundle}: {relative} is a symbolic link; a bundle holds plain files only")
        if not path.is_file():
            raise ReminderError(f"bundle {bundle}: {relative} is missing")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise ReminderError(f"bundle {bundle}: {relative} does not match its sha256 in {MANIFEST} "
                                f"(corrupted or tampered)")
    return manifest


def _archived_manifest(tar_path: Path) -> bytes | None:
    """The manifest bytes of a bundle archive (its first entry), or None for any other file."""
    try:
        with tarfile.open(tar_path, "r:") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST or not first.isfile() or first.size > 16 * 1024 * 1024:
                return None
            handle = tar.extractfile(first)
            return handle.read() if handle is not None else None
    except (tarfile.TarError, OSError):
        return None


def pack_bundle(bundle: str | Path, tar_path: str | Path, *, force: bool = False) -> Path:
    """Verify ``bundle`` and write it as an uncompressed ``.tar`` (sorted, fixed metadata).
    An existing ``tar_path`` is replaced only when it is an archive of this same bundle
    (the same manifest), or with ``force``: never someone else's file."""
    bundle, tar_path = Path(bundle), Path(tar_path)
    manifest = verify_bundle(bundle)
    if tar_path.exists() and not force:
        if tar_path.is_dir() or _archived_manifest(tar_path) != (bundle / MANIFEST).read_bytes():
            raise ReminderError(f"{tar_path} is not an archive of this bundle; choose another output, or force "
                                f"(`force`) to replace it")
    names = [MANIFEST] + sorted(manifest.listed_files())  # the manifest first: unpacking reads it first

    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w") as tar:
            for name in names:
                info = tar.gettarinfo(str(bundle / name), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                with open(bundle / name, "rb") as handle:
                    tar.addfile(info, handle)

    return atomic_write(Path(tar_path), write)


_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")  # gzip, bzip2, xz, zstd


def _read_problem(tar_path: Path, error: Exception) -> str:
    """Why tarfile could not read an archive: compressed (by its magic bytes), cut short, or
    tarfile's own words."""
    try:
        with open(tar_path, "rb") as handle:
            head = handle.read(8)
        size = tar_path.stat().st_size
    except OSError:
        return str(error)
    if head.startswith(_COMPRESSED):
        return "compressed archives are not accepted (unpack it, or pack with `reminder bundle pack`)"
    if "unexpected end of data" in str(error) or size % 512:
        return f"it is truncated ({size} bytes; a tar is whole 512-byte blocks): download or copy it again"
    return str(error)


def unpack_bundle(tar_path: str | Path, destination: str | Path) -> Path:
    """Extract a bundle ``.tar`` into ``destination`` (created; must not exist) and verify it.

    Accepted: an uncompressed tar whose first entry is ``manifest.json``, followed by the
    regular, top-level files that manifest lists, each of the size it says. Anything else
    (compressed, sparse, links, devices, folders, unlisted or oversized entries, more than
    ``MAX_BUNDLE_BYTES`` in all) is refused before its data is written. Extraction goes to
    a temporary folder beside ``destination``, renamed into place once verified.
    """
    tar_path, destination = Path(tar_path), Path(destination)
    if destination.exists():
        raise ReminderError(f"{destination} already exists")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        try:
            with tarfile.open(tar_path, "r:") as tar:
                _extract(tar, tar_path, staging)
        except tarfile.ReadError as error:
            raise ReminderError(f"cannot read bundle archive {tar_path}: {_read_problem(tar_path, error)}") from None
        except (tarfile.TarError, EOFError) as error:
            raise ReminderError(f"cannot read bundle archive {tar_path}: {error}") from None
        except OSError as error:  # the disk, not the archive
            raise LocalError(f"cannot unpack bundle archive {tar_path} into {destination.parent}: {error}") from None
        verify_bundle(staging)
        for path in staging.iterdir():  # a bundle's modes, whatever the umask: another user (a service) reads it
            path.chmod(0o644)
        staging.chmod(0o755)  # mkdtemp made it 0700
        os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def _extract(tar: tarfile.TarFile, tar_path: Path, staging: Path) -> None:
    expected: dict[str, dict] | None = None
    for member in tar:
        if not member.isreg() or member.issparse():
            raise ReminderError(f"{tar_path}: entry {member.name!r} is not a regular file")
        if expected is None:
            if member.name != MANIFEST:
                raise ReminderError(f"{tar_path}: {MANIFEST} must be the archive's first entry, found "
                                    f"{member.name!r}")
            if member.size > MAX_MANIFEST_BYTES:
                raise ReminderError(f"{tar_path}: {MANIFEST} is larger than {MAX_MANIFEST_BYTES >> 20} MiB")
            _copy(tar, member, staging / MANIFEST)
            expected = read_manifest(staging).listed_files()
            total = sum(entry["bytes"] for entry in expected.values())
            if total > MAX_BUNDLE_BYTES:
                raise ReminderError(f"{tar_path}: its manifest lists {total} bytes, more than the "
                                    f"{MAX_BUNDLE_BYTES} a bundle may hold (REMINDER_MAX_BUNDLE_BYTES)")
            continue
        entry = expected.pop(member.name, None)
        if entry is None:
            raise ReminderError(f"{tar_path}: entry {member.name!r} is not listed in its manifest (or repeats)")
        if member.size != entry["bytes"]:
            raise ReminderError(f"{tar_path}: {member.name} holds {member.size} bytes; the manifest says "
                                f"{entry['bytes']}")
        _copy(tar, member, staging / member.name)
    if expected is None:
        raise ReminderError(f"{tar_path} is empty: no {MANIFEST}")


def _copy(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    source = tar.extractfile(member)
    with open(target, "xb") as handle:
        shutil.copyfileobj(source, handle)
        handle.flush()
        os.fsync(handle.fileno())


def check_output_folder(out: str | Path, name: str, *, protect=(), force: bool = False) -> Path:
    """Refuse to write a bundle named ``name`` to ``out`` when that would destroy what this
    program did not make: ``out`` may be missing, empty, or a bundle of the same name (the
    same lineage, re-exported); anything else needs ``force``. ``out`` is never one of
    ``protect`` (a parent bundle, a run folder) nor a folder that contains one, force or not."""
    out = Path(out)
    resolved = out.resolve()
    inside = None
    for path in protect:
        path = Path(path).resolve()
        if resolved == path or resolved in path.parents:
            raise ReminderError(f"`out` {out} would replace {path}, which must be kept; choose another folder")
        if path in resolved.parents:
            inside = path
    if not out.exists() and not out.is_symlink():
        return out
    if not out.is_dir() or out.is_symlink():
        raise ReminderError(f"`out` {out} exists and is not a folder")
    if inside is not None and force and any(out.iterdir()) and not (out / MANIFEST).is_file():
        # a step of the run (its checkpoint, metrics) is never replaced, force or not
        raise ReminderError(f"`out` {out} is inside {inside} and holds files that are not a bundle; `force` never "
                            f"replaces those: choose another folder")
    if not any(out.iterdir()) or force:
        return out
    try:
        existing = read_manifest(out).name
    except ReminderError:
        existing = None
    if existing != name:
        what = f"bundle {existing!r}" if existing else "files that are not a bundle"
        raise ReminderError(f"`out` {out} holds {what}; a bundle named {name!r} replaces only a bundle of its own "
                            f"name (pass `force` to replace it anyway)")
    return out


def remove_stale_staging(out: str | Path, *, legacy_age: float = 3600.0) -> list[Path]:
    """Remove the staging folders an export into ``out`` left beside it when it was killed:
    ``.OUT.staging-PID-*`` and ``.OUT.old-PID`` whose process is gone, and the older
    ``.OUT.XXXXXXXX`` form (no process id) once it is an hour old. Nothing else is touched."""
    import time

    out = Path(out)
    if not out.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(?:staging-(\d+)-[a-z0-9_]+|old-(\d+)|([a-z0-9_]{{8}}))")
    removed = []
    for path in out.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match is None or not path.is_dir() or path.is_symlink():
            continue
        pid = match.group(1) or match.group(2)
        stale = not _alive(int(pid)) if pid else time.time() - path.stat().st_mtime > legacy_age
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_bundle(path: str | Path, workdir: str | Path | None = None) -> tuple[Path, Manifest]:
    """A bundle folder or ``.tar`` -> (verified folder, manifest)."""
    path = Path(path)
    if path.is_dir():
        return path, verify_bundle(path)
    if path.is_file() and tarfile.is_tarfile(path):
        workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="reminder-bundle-"))
        folder = unpack_bundle(path, workdir / path.stem)
        return folder, read_manifest(folder)
    raise ReminderError(f"{path} is neither a bundle folder nor a bundle .tar")


def describe_bundle(manifest: Manifest) -> str:
    """A few lines for ``reminder bundle inspect``: name, version, lineage, classes, artifacts
    with their parity."""
    lines = [f"{manifest.name} {manifest.version} (step {manifest.step}, {len(manifest.classes)} classes)"]
    parent = manifest.parent
    lines.append(f"parent: {parent.version} ({parent.manifest_sha256[:12]})" if parent else "parent: none")
    lines.append("classes: " + ", ".join(manifest.class_names))
    parity = manifest.parity
    for fmt in manifest.formats:
        artifact, result = manifest.artifact(fmt), parity.get(fmt, {})
        agreement = f", parity {100 * result['pixel_agreement']:.3f}% pixels" if result else ""
        lines.append(f"{fmt}: {artifact.path} ({artifact.bytes / 1e6:.1f} MB{agreement})")
    for fmt, reason in manifest.skipped.items():
        lines.append(f"{fmt}: skipped ({reason})")
    metrics = manifest.metrics
    if "all" in metrics:
        lines.append(f"training metrics: all-mIoU {100 * metrics['all']:.2f}")
    return "\n".join(lines)
