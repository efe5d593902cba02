"""Triton serving with the real ``tritonserver`` of the nvidia-pytriton wheel, on 127.0.0.1:
a repository of bundles, HTTP and gRPC clients against the local runtime, a new version
while a stream runs, a server that goes away and comes back."""

import socket
import threading
import time

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from reminder.bundle import read_manifest
from reminder.cli import main
from reminder.errors import LocalError, MissingDependency, ReminderError
from reminder.runtime.predictor import Predictor
from reminder.serving.repository import add_bundle, model_config, model_versions


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_add_writes_one_version_per_increment_and_refuses_bad_input(bundles, tmp_path):
    repo = tmp_path / "repo"
    first = add_bundle(repo, bundles[0])
    name = read_manifest(bundles[0]).name
    assert first == repo / name / "1" and {p.name for p in first.iterdir()} == {"model.onnx", "model.py",
                                                                             "manifest.json"}
    second = add_bundle(repo, bundles[1], platform="onnxruntime", max_batch_size=4, instances=2, kind="gpu")
    assert second.name == "2" and (second / "model.onnx").is_file() and not (second / "model.py").exists()
    config = (repo / name / "config.pbtxt").read_text()
    for line in ('platform: "onnxruntime_onnx"', "max_batch_size: 4", "dynamic_batching",
                 "instance_group [ { count: 2 kind: KIND_GPU } ]", "version_policy: { latest { num_versions: 2 } }",
                 'dims: [ 3, -1, -1 ]', "reminder_manifest_1", "reminder_manifest_2"):
        assert line in config
    # the step-0 bundle has one class fewer than version 2: its classes do not extend them
    with pytest.raises(ReminderError, match="do not extend"):
        add_bundle(repo, bundles[0])
    assert add_bundle(repo, bundles[0], reset_classes=True).name == "3"
    with pytest.raises(ReminderError, match="exists"):
        add_bundle(repo, bundles[1], version=2)
    with pytest.raises(ReminderError, match="no tensorrt artifact"):
        add_bundle(repo, bundles[1], platform="tensorrt")
    (repo / "notes.txt").write_text("not a model")
    with pytest.raises(ReminderError, match="notes.txt is not a Triton model"):
        add_bundle(repo, bundles[1])
    assert model_versions(repo / name) == [1, 2, 3]
    plan = model_config(name, read_manifest(bundles[1]), platform="tensorrt", max_batch_size=8, instances=1,
                        kind="gpu", queue_delay_us=100, versions_served=0, manifests={1: read_manifest(bundles[1])})
    assert 'platform: "tensorrt_plan"' in plan and "version_policy: { all { } }" in plan


@pytest.fixture(scope="module")
def server(bundles, tmp_path_factory):
    from reminder.serving.server import TritonServer

    repo = tmp_path_factory.mktemp("triton") / "repo"
    add_bundle(repo, bundles[0])
    try:
        server = TritonServer(repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                              threads=1).start(timeout=120)
    except MissingDependency as error:
        pytest.skip(f"tritonserver cannot start here: {error}")
    yield server
    server.stop()


def test_served_labels_match_the_local_runtime_over_http_and_grpc(server, bundles, frames):
    local = Predictor(bundles[0], backend="ort")
    expected = local.predict(frames[:8])
    name = read_manifest(bundles[0]).name
    for url in (server.http_url, server.grpc_url):
        remote = Predictor(name, backend="triton", url=url)
        assert remote.names == local.names and remote.version == local.version
        got = remote.predict(frames[:8])
        agreement = np.mean([(a.labels == b.labels).mean() for a, b in zip(expected, got)])
        assert agreement >= 0.999, url


def test_a_down_server_or_a_missing_model_is_one_line(server, bundles):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(LocalError, match=f"Triton at {url} \\(model m\\)"):
        Predictor("m", backend="triton", url=url)
    with pytest.raises(ReminderError, match="has no model 'nothing'"):
        Predictor("nothing", backend="triton", url=server.grpc_url)
    result = CliRunner().invoke(main, ["run", "--backend", "triton", "--url", url, "--model", "m", "--source", "x"])
    assert result.exit_code != 0 and url in result.output and "Traceback" not in result.output


def test_a_stream_follows_a_new_version_and_survives_a_restart(server, bundles, frames, tmp_path):
    """A running stream switches to the version added while it runs, without a lost frame;
    when the server stops mid-stream, the client says so, backs off, and resumes on the
    restarted server with the frames it held."""
    from reminder.runtime.stream import Stream

    folder = tmp_path / "frames"
    folder.mkdir()
    count = 160
    for i in range(count):
        cv2.imwrite(str(folder / f"f{i:04d}.png"), frames[i % len(frames)])
    name = read_manifest(bundles[0]).name
    lines, seen = [], []
    events = {}

    def on_result(frame, prediction, record):
        seen.append(record["version"])
        if len(seen) == 20 and "added" not in events:
            events["added"] = add_bundle(server.repo, bundles[1])
        if len(seen) == 100 and "stopped" not in events:
            events["stopped"] = True
            server.stop()
            threading.Timer(1.0, server.start).start()
        time.sleep(0.03)  # a camera's pace: the stream is still running when the new version arrives

    stream = Stream(name, [str(folder)], backend="triton", url=server.http_url, batch=2, reload_interval=0.2,
                    retries=8, backoff=0.5, on_result=on_result, log=lines.append)
    summary = stream.run()
    step0, step1 = read_manifest(bundles[0]).version, read_manifest(bundles[1]).version
    assert summary.versions == [step0, step1], lines
    assert summary.total == count and not summary.skipped and not summary.dropped, lines
    assert seen[0] == step0 and seen[-1] == step1 and seen == sorted(seen, key=[step0, step1].index)
    assert any("retrying in" in line for line in lines) and any("reconnected" in line for line in lines), lines


def test_deepstream_configurations(bundles, tmp_path):
    repo = tmp_path / "repo"
    add_bundle(repo, bundles[1])
    result = CliRunner().invoke(main, ["triton", "deepstream-config", str(bundles[1]), "--out", str(tmp_path / "ds"),
                                       "--repo", str(repo)])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "ds" / "config_infer_triton.txt").read_text()
    name = read_manifest(bundles[1]).name
    assert f'model_name: "{name}"' in text and "output_tensor_meta: true" in text and "scale_factor: 1.0" in text
    labels = (tmp_path / "ds" / "labels.txt").read_text().splitlines()
    assert labels == list(read_manifest(bundles[1]).class_names)
    refused = CliRunner().invoke(main, ["triton", "deepstream-config", str(bundles[1]), "--out", str(tmp_path / "n"),
                                        "--mode", "nvinfer"])
    assert refused.exit_code != 0 and "--output logits" in refused.output
