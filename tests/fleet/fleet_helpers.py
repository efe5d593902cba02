"""Shared by the fleet tests: a real HTTP server on 127.0.0.1 serving a real TUF
repository, a device installed from it, and small helpers."""

import os
import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reminder import fleet
from reminder.bundle import read_manifest, write_manifest

QUIET = {"log": lambda message: None}
# the test bundles are trained for seconds: their classes are weak, which publish would refuse
PUBLISH = {**QUIET, "allow_weak_classes": True}


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.server.cut and self.path.endswith(".tar"):
            path = Path(self.translate_path(self.path))
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])  # the connection drops half-way
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(repo)))
    httpd.cut = False
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd, repo, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _version(bundle):
    return read_manifest(bundle).to_json()["version"]


def _renamed(bundle, tmp_path, version):
    """The same model under another version, as a newer publish of the same step."""
    copy = shutil.copytree(bundle, tmp_path / f"bundle-{version}")
    manifest = read_manifest(copy).to_json()
    manifest["version"] = version
    write_manifest(copy, manifest)
    return copy


def _device(install, url, repo, channel="stable", **options):
    return fleet.sync(install, url=url, trusted_root=repo / "metadata" / "root.json", channel=channel, **QUIET,
                      **options)


def _current(install):
    return os.readlink(install / "current") if (install / "current").is_symlink() else None


@pytest.fixture
def installed(server, bundles, tmp_path):
    """A device on version A of the stable channel; version B is published next."""
    httpd, repo, url = server
    fleet.init_repository(repo)
    fleet.publish(repo, bundles[0], channel="stable", **PUBLISH)
    device = tmp_path / "device"
    _device(device, url, repo)
    return httpd, repo, url, device, _version(bundles[0])


def _still_on(device, version):
    assert _current(device) == f"versions/{version}"
    assert not list((device / "versions").glob(".staging-*"))
    assert fleet.read_status(device)["installed"] == version


