"""The hostile audit's fleet failures, each reproduced against a real repository served on
127.0.0.1: paths from versions, served keys, another class list, re-published versions,
concurrent syncs, slow servers, corrupt state, and the download folder that grew."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fleet_helpers import PUBLISH, QUIET, _current, _device, _renamed, _still_on
from fleet_helpers import installed, server  # noqa: F401  (fixtures)
from reminder.contracts import manifest as manifest_contract
from reminder import fleet
from reminder.bundle import read_manifest, write_manifest
from reminder.errors import LocalError, ReminderError


def _publish_unchecked(monkeypatch, repo, bundle, **options):
    """Publish as a compromised or older publisher would: without this version's name checks."""
    with monkeypatch.context() as patch:
        patch.setattr(manifest_contract, "check_name", lambda value, what: value)
        return fleet.publish(repo, bundle, **PUBLISH, **options)


@pytest.mark.parametrize("version", ["..", "../../victim"])
def test_a_version_that_is_a_path_is_refused_on_publish_and_on_the_device(installed, bundles, tmp_path,
                                                                           monkeypatch, version):
    httpd, repo, url, device, old = installed
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    evil = _renamed(bundles[0], tmp_path, "evil")
    manifest = read_manifest(evil).to_json()
    manifest["version"] = version
    (evil / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ReminderError, match="version"):
        fleet.publish(repo, evil, **PUBLISH)
    _publish_unchecked(monkeypatch, repo, evil)
    with pytest.raises(ReminderError, match="version"):
        _device(device, url, repo)
    _still_on(device, old)
    assert (victim / "precious.txt").read_text() == "keep me"
    assert (device / "versions" / old / "manifest.json").is_file()


def test_keys_are_not_in_the_served_folder(server, bundles, tmp_path):
    httpd, repo, url = server
    fleet.init_repository(repo)
    keys = repo.parent / f"{repo.name}.keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for role in ("root", "targets", "snapshot", "timestamp"):
        assert stat.S_IMODE((keys / f"{role}.pem").stat().st_mode) == 0o600
    assert not list(repo.rglob("*.pem"))
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{url}/keys/targets.pem")
    fleet.publish(repo, bundles[0], **PUBLISH)  # finds its keys beside the repository
    assert not list(repo.rglob("*.pem"))


def test_a_repository_with_keys_inside_is_refused_until_they_move(server, bundles, tmp_path):
    httpd, repo, url = server
    with pytest.raises(ReminderError, match="inside the repository"):
        fleet.init_repository(repo, keys=repo / "keys")
    fleet.init_repository(repo)
    keys = repo.parent / f"{repo.name}.keys"
    keys.rename(repo / "keys")  # the layout of older releases: keys in the served folder
    with pytest.raises(ReminderError, match="private keys are inside the repository"):
        fleet.publish(repo, bundles[0], **PUBLISH)
    (repo / "keys").rename(keys)
    fleet.publish(repo, bundles[0], **PUBLISH)


def _reclassed(bundle, tmp_path, version, names):
    copy = _renamed(bundle, tmp_path, version)
    manifest = read_manifest(copy).to_json()
    for entry, name in zip(manifest["classes"], names):
        entry["name"] = name
    write_manifest(copy, manifest)
    return copy


def test_a_bundle_with_another_class_list_is_refused_unless_marked_a_reset(installed, bundles, tmp_path):
    httpd, repo, url, device, old = installed
    names = [f"thing{i}" for i in range(len(read_manifest(bundles[0]).to_json()["classes"]))]
    fleet.publish(repo, _reclassed(bundles[0], tmp_path, "other", names), **PUBLISH)
    with pytest.raises(ReminderError, match="classes do not extend the installed"):
        _device(device, url, repo)
    _still_on(device, old)
    assert fleet.read_status(device)["last_sync"]["result"] == "refused"
    assert not (device / "downloads" / "other.tar").exists()  # a refused version's archive is not kept
    fleet.publish(repo, _reclassed(bundles[0], tmp_path, "reset", names), reset_classes=True, **PUBLISH)
    assert _device(device, url, repo)["installed"] == "reset"


def test_republishing_a_version_with_other_content_is_refused(installed, bundles, tmp_path, monkeypatch):
    httpd, repo, url, device, old = installed
    other = _renamed(bundles[1], tmp_path, old)  # same version, other weights
    with pytest.raises(ReminderError, match=f"{old} is already published with other content"):
        fleet.publish(repo, other, **PUBLISH)
    fleet.publish(repo, bundles[0], **PUBLISH)  # the same content again is harmless
    # on another channel too: one version, one content in the whole repository
    with pytest.raises(ReminderError, match=f"{old} is already published with other content on channel stable"):
        fleet.publish(repo, other, channel="beta", **PUBLISH)
    fleet.publish(repo, bundles[0], channel="beta", **PUBLISH)
    monkeypatch.setattr(fleet.repository, "_check_republish", lambda *args: None)
    fleet.publish(repo, other, **PUBLISH)
    with pytest.raises(ReminderError, match="other content than the installed"):
        _device(device, url, repo)
    _still_on(device, old)


def test_a_second_sync_waits_for_the_first_or_says_it_runs(installed, bundles, tmp_path):
    httpd, repo, url, device, old = installed
    fleet.publish(repo, _renamed(bundles[0], tmp_path, "B"), **PUBLISH)
    lock = open(device / ".sync.lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    with pytest.raises(ReminderError, match="another sync is running"):
        _device(device, url, repo, wait=False)
    threading.Timer(1.0, lambda: (fcntl.flock(lock, fcntl.LOCK_UN), lock.close())).start()
    started = time.monotonic()
    assert _device(device, url, repo)["installed"] == "B"
    assert time.monotonic() - started >= 0.9


def test_concurrent_syncs_never_refuse_a_good_version(installed, bundles, tmp_path):
    httpd, repo, url, device, old = installed
    fleet.publish(repo, _renamed(bundles[0], tmp_path, "B"), **PUBLISH)
    errors = []

    def one():
        try:
            _device(device, url, repo)
        except ReminderError as error:
            errors.append(str(error))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    status = fleet.read_status(device)
    assert not errors and status["installed"] == "B" and not status.get("refused")
    assert _current(device) == "versions/B"


def test_a_local_failure_does_not_refuse_the_version(installed, bundles, tmp_path, monkeypatch):
    httpd, repo, url, device, old = installed
    fleet.publish(repo, _renamed(bundles[0], tmp_path, "B"), **PUBLISH)
    real = os.replace
    failed = []

    def flaky(source, target):
        if str(target).endswith("versions/B") and not failed:
            failed.append(target)
            raise OSError(28, "No space left on device")
        return real(source, target)

    monkeypatch.setattr(fleet.device.os, "replace", flaky)
    with pytest.raises(ReminderError, match="No space left"):
        _device(device, url, repo)
    assert "B" not in fleet.read_status(device).get("refused", [])
    monkeypatch.setattr(fleet.device.os, "replace", real)
    assert _device(device, url, repo)["installed"] == "B"


def test_a_resync_of_the_installed_version_never_removes_it(installed, bundles, tmp_path):
    httpd, repo, url, device, old = installed
    (device / "status.json").unlink()  # the device lost track of what it runs
    status = _device(device, url, repo)
    assert status["installed"] == old and _current(device) == f"versions/{old}"
    assert (device / "versions" / old / "manifest.json").is_file()


@pytest.mark.parametrize("content", ["{not json", "[]", "",
                                     '{"previous": null, "refused": null, "history": null}',
                                     '{"installed": 5, "previous": [1], "digests": []}'])
def test_a_corrupt_status_is_rebuilt(installed, bundles, tmp_path, content):
    httpd, repo, url, device, old = installed
    (device / "status.json").write_text(content)
    messages = []
    status = fleet.read_status(device, log=messages.append)
    assert status["installed"] == old and "rebuilt" in messages[0]
    (device / "status.json").write_text(content)
    fleet.publish(repo, _renamed(bundles[0], tmp_path, "B"), **PUBLISH)
    assert _device(device, url, repo)["installed"] == "B"
    (device / "status.json").write_text(content)
    assert fleet.rollback(device, **QUIET)["installed"] in (old, "B")


def test_downloads_are_pruned(installed, bundles, tmp_path):
    httpd, repo, url, device, old = installed
    for i in range(5):
        fleet.publish(repo, _renamed(bundles[0], tmp_path, f"v{i}"), **PUBLISH)
        _device(device, url, repo, keep=2)
    assert len(list((device / "downloads").glob("*.tar"))) <= 2
    assert len([p for p in (device / "versions").iterdir()]) <= 2


class _Drip(BaseHTTPRequestHandler):
    """A server that answers every request slowly: one byte at a time."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(100000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass


def test_a_slow_server_hits_the_download_deadline(installed, bundles, tmp_path):
    httpd, repo, url, device, old = installed
    drip = ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    drip.daemon_threads = True
    threading.Thread(target=drip.serve_forever, daemon=True).start()
    slow = f"http://127.0.0.1:{drip.server_address[1]}"
    started = time.monotonic()
    with pytest.raises(ReminderError, match="too slowly"):
        fleet.sync(device, url=slow, deadline=2.0, min_rate=1000, **QUIET)
    assert time.monotonic() - started < 20
    _still_on(device, old)
    drip.shutdown()


def test_a_server_that_is_down_is_named(installed, tmp_path):
    httpd, repo, url, device, old = installed
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ReminderError, match=f"caused by ConnectionRefusedError.*127.0.0.1:{port}"):
        fleet.sync(device, url=f"http://127.0.0.1:{port}", **QUIET)
    _still_on(device, old)


def test_a_device_without_onnxruntime_retries_instead_of_refusing(installed, bundles, tmp_path, monkeypatch):
    """A device installed with reminder[fleet] but no onnxruntime: the smoke test cannot run
    the bundle, which is this device's problem, not the version's. It used to be refused for
    ever; now the sync fails with what to install, and succeeds once it is there."""
    import sys

    httpd, repo, url, device, old = installed
    fleet.publish(repo, _renamed(bundles[0], tmp_path, "B"), **PUBLISH)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
        patch.setitem(sys.modules, "openvino", None)
        with pytest.raises(LocalError, match=r"B was not installed: .*pip install onnxruntime.*stays eligible"):
            _device(device, url, repo)
    status = fleet.read_status(device)
    assert "B" not in status.get("refused", []) and status["installed"] == old
    assert _device(device, url, repo)["installed"] == "B"


def test_a_bundle_whose_new_class_is_not_learnt_is_refused_unless_allowed(installed, bundles, tmp_path):
    from reminder.contracts.quality import weak_classes

    httpd, repo, url, device, old = installed
    weak = _renamed(bundles[1], tmp_path, "weak")
    manifest = read_manifest(weak).to_json()
    new = manifest["classes"][-1]["name"]
    iou = {c["name"]: 0.6 for c in manifest["classes"]} | {new: 0.01}
    manifest["quality"] = {"per_class_iou": iou, "new_classes": [new], "weak": weak_classes(iou)}
    write_manifest(weak, manifest)
    logs = []
    with pytest.raises(ReminderError, match=rf"adds classes that are not learnt: {new} \(IoU 1.0 is under 10\)"):
        fleet.publish(repo, weak, log=logs.append)
    assert any(line.endswith("<- not learnt") and new in line for line in logs)
    assert fleet.publish(repo, weak, allow_weak_classes=True, **QUIET)["version"] == "weak"


def test_installed_versions_are_readable_by_other_users(installed, bundles, tmp_path):
    """Installed versions were mode 0700, so a runtime running as a service account could not
    read current/; bundles get 0755 folders and 0644 files, whatever the umask."""
    httpd, repo, url, device, old = installed
    fleet.publish(repo, _renamed(bundles[0], tmp_path, "B"), **PUBLISH)
    previous = os.umask(0o077)
    try:
        _device(device, url, repo)
    finally:
        os.umask(previous)
    folder = device / "versions" / "B"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o644}


def test_key_folder_mistakes_are_one_line(tmp_path, bundles):
    repo = tmp_path / "repo"
    fleet.init_repository(repo)
    with pytest.raises(ReminderError, match=r"the keys folder .*typo does not exist \(`keys`\)"):
        fleet.publish(repo, bundles[0], keys=tmp_path / "typo", **PUBLISH)
    with pytest.raises(ReminderError, match="the keys folder .*typo does not exist"):
        fleet.resign_timestamp(repo, keys=tmp_path / "typo", **QUIET)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ReminderError, match="is a symbolic link to .*nowhere, which does not exist"):
        fleet.init_repository(tmp_path / "repo2", keys=dangling)


def test_resign_waits_for_a_publish_in_progress(tmp_path):
    """`fleet resign` took no lock: overlapping a publish, its timestamp could point at an
    old snapshot, and fresh devices refused with BadVersionNumberError."""
    repo = tmp_path / "repo"
    fleet.init_repository(repo)
    done = []
    with open(tmp_path / "repo.keys" / ".publish.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a publish in progress
        worker = threading.Thread(target=lambda: done.append(fleet.resign_timestamp(repo, **QUIET)))
        worker.start()
        time.sleep(1.5)
        assert worker.is_alive() and not done
    worker.join(timeout=60)
    assert done == [2]


class _TrickledHeaders(BaseHTTPRequestHandler):
    """A server that sends its status line one byte every half second: every read returns
    within any socket timeout, and the headers never end."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        try:
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n" * 1000:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.5)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass


def test_trickled_headers_hit_the_deadline_and_free_the_lock(installed, tmp_path):
    httpd, repo, url, device, old = installed
    trickle = ThreadingHTTPServer(("127.0.0.1", 0), _TrickledHeaders)
    trickle.daemon_threads = True
    threading.Thread(target=trickle.serve_forever, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(ReminderError, match="no complete response headers within 2 s"):
        fleet.sync(device, url=f"http://127.0.0.1:{trickle.server_address[1]}", deadline=2.0, min_rate=1000,
                   **QUIET)
    assert time.monotonic() - started < 20
    _still_on(device, old)
    from reminder.fleet.device import device_lock

    with device_lock(device, wait=False):  # the sync let go of the device: rollback can run
        pass
    trickle.shutdown()
