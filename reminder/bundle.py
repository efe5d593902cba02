"""Bundles: a folder (or its ``.tar``) with ``manifest.json`` and the files it hashes.

Torch-free: devices verify, pack and unpack bundles with this module alone.

``manifest.json`` (format ``reminder-bundle/1``)::

    name, version, step, created, parent {version, manifest_sha256} or null
    classes [{id, name, color}], input {layout, dtype, range, color, mean, std, normalization}
    outputs {kind: labels|logits, names, label_dtype}
    artifacts {format: {path, sha256, bytes, ... engine fields}}, skipped {format: reason}
    files {checkpoint.safetensors | prototypes.safetensors: {sha256, bytes}}
    parity {format: {images, pixel_agreement, max_abs_diff, ...}}
    model {backbone, classes_per_step, ...}, metrics {...}, tools {...}
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from reminder.errors import ReminderError
from reminder.io import atomic_write, atomic_write_text

BUNDLE_FORMAT = "reminder-bundle/1"
MANIFEST = "manifest.json"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def write_manifest(bundle: Path, manifest: dict) -> Path:
    return atomic_write_text(bundle / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def read_manifest(bundle: str | Path) -> dict:
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise ReminderError(f"{bundle} is not a bundle: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ReminderError(f"{path} is not valid JSON: {error}") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise ReminderError(f"{path} has format {manifest.get('format')!r}; this reminder reads {BUNDLE_FORMAT}")
    return manifest


def manifest_sha256(bundle: str | Path) -> str:
    return sha256_file(Path(bundle) / MANIFEST)


def listed_files(manifest: dict) -> dict[str, dict]:
    """Every file the manifest hashes: relative path -> {sha256, bytes}."""
    files = {entry["path"]: entry for entry in manifest.get("artifacts", {}).values()}
    files.update(manifest.get("files", {}))
    return files


def verify_bundle(bundle: str | Path) -> dict:
    """Check every hashed file of a bundle folder; return its manifest.

    A missing file, a size or a sha256 that differs is refused with the file named.
    """
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    for relative, entry in listed_files(manifest).items():
        path = bundle / relative
        if not path.is_file():
            raise ReminderError(f"bundle {bundle}: {relative} is missing")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise ReminderError(f"bundle {bundle}: {relative} does not match its sha256 in {MANIFEST} "
                                f"(corrupted or tampered)")
    return manifest


def pack_bundle(bundle: str | Path, tar_path: str | Path) -> Path:
    """Verify ``bundle`` and write it as an uncompressed ``.tar`` (sorted, fixed metadata)."""
    bundle = Path(bundle)
    manifest = verify_bundle(bundle)
    names = [MANIFEST] + sorted(listed_files(manifest))

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


def unpack_bundle(tar_path: str | Path, destination: str | Path) -> Path:
    """Extract a bundle ``.tar`` into ``destination`` (created; must not exist) and verify it.

    Only regular files at the top level are accepted; extraction goes to a temporary
    folder beside ``destination`` and is renamed into place once verified.
    """
    tar_path, destination = Path(tar_path), Path(destination)
    if destination.exists():
        raise ReminderError(f"{destination} already exists")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        try:
            with tarfile.open(tar_path, "r") as tar:
                for member in tar.getmembers():
                    if not member.isfile() or "/" in member.name or member.name.startswith("."):
                        raise ReminderError(f"{tar_path}: unexpected entry {member.name!r} in a bundle")
                    source = tar.extractfile(member)
                    with open(staging / member.name, "wb") as handle:
                        shutil.copyfileobj(source, handle)
                        handle.flush()
                        os.fsync(handle.fileno())
        except (tarfile.TarError, EOFError, OSError) as error:
            raise ReminderError(f"cannot read bundle archive {tar_path}: {error}") from None
        verify_bundle(staging)
        os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def open_bundle(path: str | Path, workdir: str | Path | None = None) -> tuple[Path, dict]:
    """A bundle folder or ``.tar`` -> (verified folder, manifest)."""
    path = Path(path)
    if path.is_dir():
        return path, verify_bundle(path)
    if path.is_file() and tarfile.is_tarfile(path):
        workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="reminder-bundle-"))
        folder = unpack_bundle(path, workdir / path.stem)
        return folder, read_manifest(folder)
    raise ReminderError(f"{path} is neither a bundle folder nor a bundle .tar")


def describe_bundle(manifest: dict) -> str:
    """A few lines for ``reminder bundle inspect``."""
    lines = [f"{manifest['name']} {manifest['version']} (step {manifest['step']}, {len(manifest['classes'])} classes)"]
    parent = manifest.get("parent")
    lines.append(f"parent: {parent['version']} ({parent['manifest_sha256'][:12]})" if parent else "parent: none")
    lines.append("classes: " + ", ".join(c["name"] for c in manifest["classes"]))
    for name, entry in manifest.get("artifacts", {}).items():
        parity = manifest.get("parity", {}).get(name, {})
        agreement = f", parity {100 * parity['pixel_agreement']:.3f}% pixels" if parity else ""
        lines.append(f"{name}: {entry['path']} ({entry['bytes'] / 1e6:.1f} MB{agreement})")
    for name, reason in manifest.get("skipped", {}).items():
        lines.append(f"{name}: skipped ({reason})")
    metrics = manifest.get("metrics") or {}
    if "all" in metrics:
        lines.append(f"training metrics: all-mIoU {100 * metrics['all']:.2f}")
    return "\n".join(lines)
