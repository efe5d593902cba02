"""The hostile audit's runtime failures: a reload racing a switch of `current`, SIGTERM
during a recording, values that wrote outside --out or ran nothing, and files that decode
only in part. Each test failed before its fix."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import cv2
import pytest
from click.testing import CliRunner

from conftest import write_video
from reminder.cli import main
from reminder.errors import ReminderError
from reminder.runtime.predictor import Predictor
from reminder.runtime.stream import Stream


def _install(tmp_path, bundles):
    install = tmp_path / "device"
    (install / "versions").mkdir(parents=True)
    shutil.copytree(bundles[0], install / "versions" / "A")
    shutil.copytree(bundles[1], install / "versions" / "B")
    os.symlink("versions/A", install / "current")
    return install


def _switch(install, target):
    link = install / f"current.{target}.tmp"
    os.symlink(f"versions/{target}", link)
    os.replace(link, install / "current")


LOADS = 80  # each load verifies a bundle while another thread flips `current` as fast as it can


def test_loading_an_install_while_current_switches_never_mixes_versions(bundles, tmp_path):
    install = _install(tmp_path, bundles)
    names = {"A": len(Predictor(bundles[0]).classes), "B": len(Predictor(bundles[1]).classes)}
    stop = threading.Event()

    def flip():
        while not stop.is_set():
            for target in ("B", "A"):
                _switch(install, target)

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    failures, loads = [], 0
    try:
        for _ in range(LOADS):
            try:
                predictor = Predictor(install)
            except ReminderError as error:
                failures.append(str(error))
                continue
            loads += 1
            assert predictor.path.name in names and len(predictor.classes) == names[predictor.path.name]
    finally:
        stop.set()
        flipper.join()
    assert not failures, failures[:3]
    assert loads == LOADS


def test_sigterm_leaves_a_playable_video(bundles, frames, tmp_path):
    video = write_video(tmp_path / "long.mp4", frames * 100)  # 3000 frames at 256 px: still running at SIGTERM
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "reminder.cli", "run", str(bundles[0]), "--source", str(video),
                                "--out", str(out), "--save", "video", "--quiet", "--batch", "1", "--size", "256"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "long" / "overlay.mp4").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert "(interrupted)" in stdout, stderr
    capture = cv2.VideoCapture(str(out / "long" / "overlay.mp4"))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, _ = capture.read()
    capture.release()
    assert ok and 0 < count < 3000


def test_source_labels_never_lead_outside_out(bundles, frames, tmp_path):
    work = tmp_path / "work" / "inner"
    work.mkdir(parents=True)
    for i, frame in enumerate(frames[:3]):
        cv2.imwrite(str(work.parent / f"f{i}.png"), frame)
    out = work / "out"
    old = os.getcwd()
    os.chdir(work)
    try:
        result = CliRunner().invoke(main, ["run", str(bundles[0]), "--source", "..", "--out", "out", "--save",
                                           "labels", "--quiet"])
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    written = [p for p in tmp_path.rglob("*.png") if "labels" in p.parts]
    assert written and all(out in p.parents for p in written)


@pytest.mark.parametrize("arguments, message", [
    (["--max-frames", "0"], "--max-frames must be at least 1, got 0"),
    (["--size", "100000"], "input size 100000x100000 is outside 16..8192"),
])
def test_run_values_that_did_nothing_are_refused(bundles, frames, tmp_path, arguments, message):
    video = write_video(tmp_path / "v.mp4", frames[:3])
    result = CliRunner().invoke(main, ["run", str(bundles[0]), "--source", str(video), "--quiet", *arguments])
    assert result.exit_code == 2 and message in result.output


def test_every_frame_failing_is_a_failure(bundles, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    for i in range(3):
        (folder / f"x{i}.jpg").write_bytes(b"not a jpeg")
    result = CliRunner().invoke(main, ["run", str(bundles[0]), "--source", str(folder), "--quiet"])
    assert result.exit_code == 2 and "no frame was processed (3 skipped)" in result.output


def test_predict_none_says_what_happened(bundles):
    with pytest.raises(ReminderError, match="no frame given \\(None\\): cv2.imread returns None"):
        Predictor(bundles[0]).predict(None)


def test_truncated_jpeg_is_processed_with_a_warning(bundles, frames, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "whole.jpg"), frames[0])
    data = cv2.imencode(".jpg", frames[1])[1].tobytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    log = []
    summary = Stream(bundles[0], [str(folder)], log=log.append).run()
    assert summary.total == 2
    assert any("cut.jpg is a truncated JPEG" in line for line in log)
    assert not any("whole.jpg" in line for line in log)


def test_same_stems_and_non_utf8_names_each_get_their_own_outputs(bundles, frames, tmp_path):
    """`--source "g/*/*"` with a/f.jpg, b/f.jpg and a/f.png wrote one label PNG over the
    others; a file named 000\\xff.jpg ended `reminder run` in a segmentation fault."""
    images = tmp_path / "g"
    for i, name in enumerate(["a/f.jpg", "b/f.jpg", "a/f.png"]):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(images / name), frames[i])
    ok, encoded = cv2.imencode(".jpg", frames[3])
    with open(os.fsencode(images / "a") + b"/000\xff.jpg", "wb") as handle:
        handle.write(encoded.tobytes())
    command = [sys.executable, "-m", "reminder.cli", "run", str(bundles[0]), "--source", str(images / "*" / "*"),
               "--out", str(tmp_path / "out"), "--save", "labels", "--quiet"]
    result = subprocess.run(command, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    written = sorted(p.name for p in (tmp_path / "out").rglob("*.png"))
    assert written == ["000xff.png", "a-f_jpg.png", "a-f_png.png", "b-f_jpg.png"], written


def test_outputs_lost_to_a_full_disk_fail_the_run(bundles, frames, tmp_path):
    """With the disk full, `reminder run` exited 0 and said "outputs in ..." while it had
    written 2 of 12 overlays: cv2.imwrite says False and raises nothing. A write limit
    (RLIMIT_FSIZE, the way a full disk fails writes) stands in for the full disk."""
    images = tmp_path / "frames"
    images.mkdir()
    for i, frame in enumerate(frames[:6]):
        cv2.imwrite(str(images / f"{i:03d}.png"), frame)
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))\n"
              "from reminder.cli import main\n"
              "sys.argv = ['reminder'] + sys.argv[1:]\n"
              "main()\n")
    command = [sys.executable, "-c", script, "run", str(bundles[0]), "--source", str(images),
               "--out", str(tmp_path / "out"), "--save", "video,labels,stats", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "outputs were not written, the first: " in result.stdout + result.stderr
    assert "MB free on its disk" in result.stdout + result.stderr
    assert "outputs in" not in result.stdout
