"""The bundle format against hostile input: names and versions that are paths, artifact
paths that leave the bundle, archives that fill the disk or hold special entries, and
manifests that are not what they claim. Each case failed before the checks existed."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile

import pytest

from reminder.bundle import (check_name, open_bundle, pack_bundle, read_manifest, unpack_bundle, verify_bundle,
                             write_manifest)
from reminder.errors import ReminderError


@pytest.fixture
def bundle(bundles, tmp_path):
    return shutil.copytree(bundles[0], tmp_path / "bundle")


def _edit(bundle, **changes):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.update(changes)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return manifest


@pytest.mark.parametrize("version", ["..", ".", "../../victim", "/tmp/abs", "a/b", "", "x" * 200, "v1\n", "-v"])
def test_versions_that_are_paths_are_refused(bundle, version):
    _edit(bundle, version=version)
    with pytest.raises(ReminderError, match="version"):
        read_manifest(bundle).to_json()


@pytest.mark.parametrize("name", ["../up", "a/b", "..", ""])
def test_names_that_are_paths_are_refused(bundle, name):
    _edit(bundle, name=name)
    with pytest.raises(ReminderError, match="name"):
        verify_bundle(bundle).to_json()


def test_plain_names_pass():
    for ok in ("synthvoc-15-1-reminder", "run-step2+sheep", "v1.2.3_rc1"):
        assert check_name(ok, "version") == ok


@pytest.mark.parametrize("path", ["/etc/hostname", "../model.onnx", "sub/model.onnx", ".hidden.onnx"])
def test_artifact_paths_must_be_plain_names_inside_the_bundle(bundle, path):
    manifest = _edit(bundle)
    manifest["artifacts"]["onnx"]["path"] = path
    write_manifest(bundle, manifest)
    with pytest.raises(ReminderError, match="plain file name"):
        verify_bundle(bundle).to_json()


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("classes"), "no 'classes'"),
    (lambda m: m.pop("input"), "no 'input'"),
    (lambda m: m["files"]["checkpoint.safetensors"].pop("bytes"), "checkpoint.safetensors has no 'bytes'"),
    (lambda m: m.update(classes="all"), "'classes' must be a list"),
    # values of the wrong type, which a reader would have met as a traceback further on
    (lambda m: m["outputs"].update(names=5), "outputs.names must be a list of names"),
    (lambda m: m["outputs"].update(kind="masks"), "outputs.kind must be 'labels' or 'logits'"),
    (lambda m: m.update(step="one"), "'step' must be a whole number"),
    (lambda m: m.update(step=-1), "'step' must be a whole number"),
    (lambda m: m["input"].update(height="tall"), "'input' needs integer height and width"),
    (lambda m: m["input"].update(width=10 ** 9), "'input' has size"),
    (lambda m: m["input"].update(mean=[0.5]), "without 3 channels"),
    (lambda m: m.update(parent={"version": 3}), "'parent' must be null or"),
    (lambda m: m["classes"][1].update(id=7), "class ids must be 0.."),
    (lambda m: m.update(model=[1]), "'model' must be an object"),
    (lambda m: m["input"].update(profile={"min_shape": "x"}), "input.profile needs min_shape"),
])
def test_incomplete_manifests_get_one_line(bundle, change, message):
    manifest = _edit(bundle)
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ReminderError, match=message):
        verify_bundle(bundle).to_json()


@pytest.mark.parametrize("text", ["[1, 2, 3]", "[" * 200_000 + "]" * 200_000, "{\"format\": "])
def test_manifests_that_are_not_objects_get_one_line(bundle, text):
    (bundle / "manifest.json").write_text(text)
    with pytest.raises(ReminderError, match="manifest.json"):
        read_manifest(bundle).to_json()


def test_symlinks_are_not_packed(bundle, tmp_path):
    outside = tmp_path / "outside.safetensors"
    shutil.move(bundle / "prototypes.safetensors", outside)
    (bundle / "prototypes.safetensors").symlink_to(outside)
    with pytest.raises(ReminderError, match="prototypes.safetensors is a symbolic link"):
        pack_bundle(bundle, tmp_path / "b.tar")
    assert not (tmp_path / "b.tar").exists()


def _tar(path, entries):
    with tarfile.open(path, "w") as tar:
        for name, source in entries:
            tar.add(str(source), arcname=name)
    return path


def test_a_sparse_bomb_is_refused_before_it_is_written(bundle, tmp_path):
    """A 10 KB archive whose model.onnx unpacks to 3 GB (a sparse file, GNU tar)."""
    stage = tmp_path / "stage"
    stage.mkdir()
    shutil.copy(bundle / "manifest.json", stage / "manifest.json")
    with open(stage / "model.onnx", "wb") as handle:
        handle.truncate(3 << 30)
    archive = tmp_path / "bomb.tar"
    subprocess.run(["tar", "--sparse", "-cf", str(archive), "-C", str(stage), "manifest.json", "model.onnx"],
                   check=True)
    assert archive.stat().st_size < 100_000
    with pytest.raises(ReminderError, match="model.onnx"):
        open_bundle(archive, tmp_path / "work")
    written = sum(p.stat().st_size for p in (tmp_path / "work").rglob("*") if p.is_file()) \
        if (tmp_path / "work").exists() else 0
    assert written < 10_000_000


def test_an_entry_larger_than_its_manifest_says_is_refused_unwritten(bundle, tmp_path):
    big = tmp_path / "model.onnx"
    big.write_bytes(b"\0" * (read_manifest(bundle).to_json()["artifacts"]["onnx"]["bytes"] + 4096))
    archive = _tar(tmp_path / "big.tar", [("manifest.json", bundle / "manifest.json"), ("model.onnx", big)])
    with pytest.raises(ReminderError, match="model.onnx holds .* bytes; the manifest says"):
        unpack_bundle(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_entries_the_manifest_does_not_list_are_refused(bundle, tmp_path):
    extra = tmp_path / "run.sh"
    extra.write_text("echo hi")
    archive = _tar(tmp_path / "x.tar", [("manifest.json", bundle / "manifest.json"), ("run.sh", extra)])
    with pytest.raises(ReminderError, match="'run.sh' is not listed"):
        unpack_bundle(archive, tmp_path / "out")


def test_special_entries_and_compressed_archives_are_refused(bundle, tmp_path):
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(str(bundle / "manifest.json"), arcname="manifest.json")
        info = tarfile.TarInfo("model.onnx")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(ReminderError, match="'model.onnx' is not a regular file"):
        unpack_bundle(archive, tmp_path / "out")
    packed = pack_bundle(bundle, tmp_path / "b.tar")
    with tarfile.open(tmp_path / "b.tar.gz", "w:gz") as tar:
        with tarfile.open(packed) as source:
            for member in source.getmembers():
                tar.addfile(member, source.extractfile(member))
    with pytest.raises(ReminderError, match="compressed"):
        open_bundle(tmp_path / "b.tar.gz", tmp_path / "work")


def test_manifest_must_come_first(bundle, tmp_path):
    packed = pack_bundle(bundle, tmp_path / "b.tar")
    reordered = tmp_path / "r.tar"
    with tarfile.open(packed) as source, tarfile.open(reordered, "w") as tar:
        members = source.getmembers()
        for member in members[1:] + members[:1]:
            tar.addfile(member, source.extractfile(member))
    with pytest.raises(ReminderError, match="manifest.json must be the archive's first entry"):
        unpack_bundle(reordered, tmp_path / "out")
    assert verify_bundle(unpack_bundle(packed, tmp_path / "ok")).version == read_manifest(bundle).version


def test_pack_never_replaces_a_file_that_is_not_this_bundle(bundle, tmp_path):
    """`bundle pack pk/wh-1.5` wrote pk/wh-1.tar (with_suffix), replacing another bundle's
    archive, and `--out notes.txt` overwrote any file."""
    from click.testing import CliRunner

    from reminder.cli import main

    versioned = shutil.copytree(bundle, tmp_path / "pk" / "wh-1.5")
    other = tmp_path / "pk" / "wh-1.tar"
    other.write_bytes(b"another bundle's archive")
    result = CliRunner().invoke(main, ["bundle", "pack", str(versioned)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pk" / "wh-1.5.tar").is_file() and other.read_bytes() == b"another bundle's archive"
    notes = tmp_path / "notes.txt"
    notes.write_text("precious")
    result = CliRunner().invoke(main, ["bundle", "pack", str(versioned), "--out", str(notes)])
    assert result.exit_code == 2 and "notes.txt is not an archive of this bundle" in result.output
    assert notes.read_text() == "precious"
    # the same bundle packed again replaces its own archive; --force replaces anything
    assert pack_bundle(versioned, tmp_path / "pk" / "wh-1.5.tar") == tmp_path / "pk" / "wh-1.5.tar"
    with pytest.raises(ReminderError, match="is not an archive of this bundle"):
        pack_bundle(versioned, other)
    assert pack_bundle(versioned, notes, force=True) == notes and tarfile.is_tarfile(notes)


def test_stale_staging_folders_of_killed_exports_are_removed(tmp_path):
    """SIGKILL during export left `.OUT.XXXX` staging folders (up to 5 MB) that later exports
    never removed. Only this program's staging names are touched: of dead processes, or,
    without a process id (the older form), once an hour old."""
    import os
    import sys
    import time

    from reminder.bundle import remove_stale_staging

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = {"dead": f".b.staging-{dead.pid}-ab12cd34", "alive": f".b.staging-{os.getpid()}-ab12cd34",
             "old": ".b.k3j4h5g6", "young": ".b.q1w2e3r4", "user": ".b.my-notes", "other": ".c.staging-1-x",
             "replaced": f".b.old-{dead.pid}"}
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.onnx").write_bytes(b"x")
    os.utime(tmp_path / names["old"], (time.time() - 7200, time.time() - 7200))
    removed = {p.name for p in remove_stale_staging(tmp_path / "b")}
    assert removed == {names["dead"], names["old"], names["replaced"]}
    assert {p.name for p in tmp_path.iterdir()} == {names[k] for k in ("alive", "young", "user", "other")}


def test_a_truncated_archive_is_called_truncated_and_a_compressed_one_compressed(bundle, tmp_path):
    import gzip

    tar = pack_bundle(bundle, tmp_path / "b.tar")
    data = tar.read_bytes()
    for cut in (len(data) // 2 + 100, len(data) // 2 // 512 * 512 + 512 * 3 + 7):
        (tmp_path / "cut.tar").write_bytes(data[:cut])
        with pytest.raises(ReminderError, match=r"cut.tar: it is truncated \(\d+ bytes"):
            unpack_bundle(tmp_path / "cut.tar", tmp_path / f"out{cut}")
    (tmp_path / "b.tar.gz").write_bytes(gzip.compress(data))
    with pytest.raises(ReminderError, match="compressed archives are not accepted"):
        unpack_bundle(tmp_path / "b.tar.gz", tmp_path / "gz")
