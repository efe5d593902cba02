"""Fleet updates against a real HTTP server on 127.0.0.1 serving a real TUF repository."""

import json
import shutil
import subprocess
import sys
import threading
import time

import pytest

from conftest import write_video
from fleet_helpers import PUBLISH, QUIET, _current, _device, _renamed, _still_on, _version
from fleet_helpers import installed, server  # noqa: F401  (fixtures)
from reminder.errors import ReminderError
from reminder.bundle import file_entry, read_manifest, write_manifest
from reminder import fleet
from reminder.runtime.health import write_health
from reminder.runtime.stream import Stream


def test_two_devices_two_channels_and_a_running_stream_switches(server, bundles, frames, tmp_path):
    httpd, repo, url = server
    fleet.init_repository(repo)
    fleet.publish(repo, bundles[0], channel="stable", **PUBLISH)
    fleet.publish(repo, bundles[1], channel="beta", **PUBLISH)
    camera, lab = tmp_path / "camera", tmp_path / "lab"
    assert _device(camera, url, repo, "stable")["installed"] == _version(bundles[0])
    assert _device(lab, url, repo, "beta")["installed"] == _version(bundles[1])
    assert _current(camera) == f"versions/{_version(bundles[0])}"
    # a second sync finds nothing new
    assert _device(camera, url, repo)["last_sync"]["result"] == "up to date"

    # `reminder run` on the camera's install folder, while a new step is published and synced
    video = write_video(tmp_path / "long.mp4", frames * 8)
    seen = []
    stream = Stream(camera, [str(video)], reload_interval=0.05, log=lambda m: None,
                    on_result=lambda frame, prediction, record: (seen.append(record["version"]), time.sleep(0.01)))
    runner = threading.Thread(target=stream.run)
    runner.start()
    while len(seen) < 5:
        time.sleep(0.01)
    fleet.publish(repo, bundles[1], channel="stable", **PUBLISH)
    status = _device(camera, url, repo)
    runner.join(timeout=60)
    assert status["installed"] == _version(bundles[1]) and status["previous"] == [_version(bundles[0])]
    assert stream.summary.versions == [_version(bundles[0]), _version(bundles[1])]
    assert seen[0] == _version(bundles[0]) and seen[-1] == _version(bundles[1]) and len(seen) == 240
    assert json.loads((camera / "health.json").read_text())["ok"] is True
    assert _device(lab, url, repo, "beta")["last_sync"]["result"] == "up to date"

    # the CLI shows the device's state; a rollback goes back and refuses the abandoned version
    from click.testing import CliRunner

    from reminder.cli import main

    shown = CliRunner().invoke(main, ["fleet", "status", "--install-dir", str(camera)])
    assert f"installed: {_version(bundles[1])}" in shown.output and "last sync:" in shown.output
    rolled = CliRunner().invoke(main, ["fleet", "rollback", "--install-dir", str(camera)])
    assert rolled.exit_code == 0, rolled.output
    assert _current(camera) == f"versions/{_version(bundles[0])}"
    assert _device(camera, url, repo)["last_sync"]["result"] == "refused before"


def test_tampered_bundle_is_refused(installed, bundles, tmp_path):
    httpd, repo, url, device, old = installed
    fleet.publish(repo, _renamed(bundles[0], tmp_path, "B"), **PUBLISH)
    [archive] = list((repo / "targets" / "channels" / "stable").glob("*-B.tar"))
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(ReminderError, match="update refused: LengthOrHashMismatchError"):
        _device(device, url, repo)
    _still_on(device, old)
    assert fleet.read_status(device)["last_sync"]["result"] == "refused"


def test_tampered_metadata_is_refused(installed, bundles, tmp_path):
    httpd, repo, url, device, old = installed
    fleet.publish(repo, _renamed(bundles[0], tmp_path, "B"), **PUBLISH)
    timestamp = json.loads((repo / "metadata" / "timestamp.json").read_text())
    timestamp["signed"]["expires"] = "2099-01-01T00:00:00Z"  # changed without the key
    (repo / "metadata" / "timestamp.json").write_text(json.dumps(timestamp))
    with pytest.raises(ReminderError, match="UnsignedMetadataError"):
        _device(device, url, repo)
    _still_on(device, old)


def test_expired_metadata_is_refused_until_re_signed(installed, bundles, tmp_path):
    httpd, repo, url, device, old = installed
    fleet.publish(repo, _renamed(bundles[0], tmp_path, "B"), expires={"timestamp": -1}, **PUBLISH)
    with pytest.raises(ReminderError, match="ExpiredMetadataError"):
        _device(device, url, repo)
    _still_on(device, old)
    from click.testing import CliRunner

    from reminder.cli import main

    result = CliRunner().invoke(main, ["fleet", "resign", "--repo", str(repo)])
    assert result.exit_code == 0 and "timestamp v" in result.output
    assert _device(device, url, repo)["installed"] == "B"


def test_replayed_old_metadata_is_refused(installed, bundles, tmp_path):
    """Rollback attack: after the device saw version B, the server offers A's metadata again."""
    httpd, repo, url, device, old = installed
    saved = tmp_path / "old-metadata"
    shutil.copytree(repo / "metadata", saved)
    fleet.publish(repo, _renamed(bundles[0], tmp_path, "B"), **PUBLISH)
    assert _device(device, url, repo)["installed"] == "B"
    shutil.copyfile(saved / "timestamp.json", repo / "metadata" / "timestamp.json")
    with pytest.raises(ReminderError, match="BadVersionNumberError"):
        _device(device, url, repo)
    _still_on(device, "B")


def test_wrong_trusted_root_is_refused(installed, bundles, tmp_path):
    httpd, repo, url, device, old = installed
    other = fleet.init_repository(tmp_path / "other-repo")
    with pytest.raises(ReminderError, match="UnsignedMetadataError"):
        fleet.sync(tmp_path / "new-device", url=url, trusted_root=other, **QUIET)
    assert not (tmp_path / "new-device" / "current").exists()


def test_download_cut_off_then_completed(installed, bundles, tmp_path):
    httpd, repo, url, device, old = installed
    fleet.publish(repo, _renamed(bundles[0], tmp_path, "B"), **PUBLISH)
    httpd.cut = True
    with pytest.raises(ReminderError, match="update refused"):
        _device(device, url, repo)
    _still_on(device, old)
    httpd.cut = False
    assert _device(device, url, repo)["installed"] == "B"


@pytest.mark.parametrize("moment", ["unpacking and verifying", "switching current"])
def test_killed_during_unpack_or_before_the_switch(installed, bundles, tmp_path, moment):
    """The process dies (os._exit, no clean-up) at that moment; the device still runs the old
    version, and the next sync completes."""
    httpd, repo, url, device, old = installed
    fleet.publish(repo, _renamed(bundles[0], tmp_path, "B"), **PUBLISH)
    script = ("import os, sys\n"
              "from reminder import fleet\n"
              "def log(message):\n"
              f"    if message.startswith({moment!r}):\n"
              "        os._exit(137)\n"
              f"fleet.sync({str(device)!r}, url={url!r}, log=log)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 137, result.stderr
    assert _current(device) == f"versions/{old}"
    assert _device(device, url, repo)["installed"] == "B"
    assert not list((device / "versions").glob(".staging-*"))


def test_disk_full_during_download(installed, bundles, tmp_path):
    """A write limit (RLIMIT_FSIZE, the way a full disk fails writes) stops the download."""
    httpd, repo, url, device, old = installed
    fleet.publish(repo, _renamed(bundles[0], tmp_path, "B"), **PUBLISH)
    script = ("import resource, signal\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))\n"
              "from reminder.errors import ReminderError\n"
              "from reminder import fleet\n"
              "try:\n"
              f"    fleet.sync({str(device)!r}, url={url!r}, log=lambda m: None)\n"
              "except ReminderError as error:\n"
              "    print(error)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "File too large" in result.stdout or "No space" in result.stdout, result.stdout + result.stderr
    _still_on(device, old)
    assert _device(device, url, repo)["installed"] == "B"


def test_bundle_failing_its_smoke_test_is_not_switched(installed, bundles, tmp_path):
    httpd, repo, url, device, old = installed
    broken = _renamed(bundles[0], tmp_path, "B")
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    manifest = read_manifest(broken).to_json()
    manifest["artifacts"]["onnx"].update(file_entry(broken / "model.onnx"))  # hashes consistent, model broken
    write_manifest(broken, manifest)
    fleet.publish(repo, broken, **PUBLISH)
    with pytest.raises(ReminderError, match="B failed its smoke test, not installed"):
        _device(device, url, repo)
    _still_on(device, old)
    assert "B" in fleet.read_status(device)["refused"]


def test_runtime_reports_unhealthy_and_the_device_rolls_back(installed, bundles, tmp_path):
    httpd, repo, url, device, old = installed
    fleet.publish(repo, _renamed(bundles[0], tmp_path, "B"), **PUBLISH)
    _device(device, url, repo)
    write_health(device, "B", False, "CUDA error: no kernel image for this GPU")
    status = _device(device, url, repo)
    assert status["installed"] == old and "B" in status["refused"]
    assert _current(device) == f"versions/{old}"


def test_watch_keeps_going_after_a_failed_round(installed, bundles, tmp_path):
    httpd, repo, url, device, old = installed
    messages = []
    fleet.watch(device, every=0, rounds=2, url=url, channel="nightly", log=messages.append)
    assert sum("channel 'nightly' has nothing published" in m for m in messages) == 2
    assert fleet.read_status(device)["last_sync"]["result"] == "failed"
    _still_on(device, old)
