import json
import os
import shutil
import threading
import time

import cv2
import numpy as np
import pytest
from PIL import Image
from click.testing import CliRunner

from conftest import label_ids, read_video, write_video
from reminder.cli import main
from reminder.errors import ReminderError
from reminder.runtime.predictor import Predictor
from reminder.runtime.stream import Stream, run_stream


def _stats(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_video_through_reminder_run(bundles, frames, tmp_path):
    video = write_video(tmp_path / "clip.mp4", frames[:20])
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", str(bundles[0]), "--source", str(video), "--out", str(out),
                                       "--save", "video,labels,stats", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "20 frames from 1 source(s)" in result.output
    decoded = read_video(video)
    predictor = Predictor(bundles[0])
    expected = predictor.predict(decoded)
    # every frame comes out, in order, as label PNGs equal to the model's labels
    labels = sorted((out / "clip" / "labels").glob("*.png"))
    assert len(labels) == len(decoded) == 20
    for path, prediction in zip(labels, expected):
        assert np.array_equal(label_ids(path), prediction.labels)
    # palette PNGs: the pixel values are the ids, and any viewer shows the bundle's class colours
    with Image.open(labels[0]) as image:
        assert image.mode == "P"
        palette = np.array(image.getpalette()[: 3 * len(predictor.classes)]).reshape(-1, 3)
    assert np.array_equal(palette, predictor.classes.colors)
    # the overlay video has as many frames, and they are the overlays of those labels (mp4v is lossy)
    overlays = read_video(out / "clip" / "overlay.mp4")
    assert len(overlays) == 20
    for frame, drawn, prediction in zip(decoded, overlays, expected):
        reference = predictor.render(frame, prediction).astype(np.int16)
        assert np.abs(drawn.astype(np.int16) - reference).mean() < 6  # (64 px frames: no legend)
        plain = np.abs(drawn.astype(np.int16) - frame.astype(np.int16)).mean()
        if (prediction.labels > 0).mean() > 0.1:
            assert plain > np.abs(drawn.astype(np.int16) - reference).mean()
    # one JSON line per frame, with shares that are the label maps' pixel shares
    stats = _stats(out / "stats.jsonl")
    assert [s["frame"] for s in stats] == list(range(20))
    for record, prediction in zip(stats, expected):
        shares = prediction.counts / prediction.counts.sum()
        assert record["shares"] == {predictor.names[k]: pytest.approx(shares[k], abs=1e-5)
                                    for k in np.flatnonzero(shares)}
        assert record["version"] == predictor.version and record["latency_ms"] >= record["infer_ms"] > 0


def test_image_folder_with_a_corrupt_file(bundles, frames, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, frame in enumerate(frames[:5]):
        cv2.imwrite(str(folder / f"img{i}.png"), frame)
    (folder / "img2b.jpg").write_bytes(b"not a jpeg at all")
    (folder / "notes.txt").write_text("ignored")
    log = []
    summary = run_stream(bundles[0], [str(folder)], out=tmp_path / "out", save=["video", "labels", "stats"],
                         log=log.append)
    assert summary.frames == {"images": 5} and summary.skipped == {"images": 1}
    assert any("skipping unreadable frame img2b" in line for line in log)
    predictor = Predictor(bundles[0])
    for i, frame in enumerate(frames[:5]):
        written = label_ids(tmp_path / "out" / "images" / "labels" / f"img{i}.png")
        assert np.array_equal(written, predictor.predict(frame)[0].labels)
        assert (tmp_path / "out" / "images" / "overlay" / f"img{i}.jpg").is_file()
    assert [s["name"] for s in _stats(tmp_path / "out" / "stats.jsonl")] == [f"img{i}" for i in range(5)]


def test_glob_source(bundles, frames, tmp_path):
    for i, frame in enumerate(frames[:3]):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), frame)
    summary = run_stream(bundles[0], [str(tmp_path / "f*.png")], log=lambda m: None)
    assert summary.total == 3


def test_two_sources_are_batched_together(bundles, frames, tmp_path):
    first = write_video(tmp_path / "a.mp4", frames[:16])
    second = write_video(tmp_path / "b.mp4", [cv2.resize(f, (80, 60)) for f in frames[10:26]])
    summary = run_stream(bundles[0], [str(first), str(second)], out=tmp_path / "out", save=["stats", "labels"],
                         log=lambda m: None)
    assert summary.frames == {"a": 16, "b": 16}
    stats = _stats(tmp_path / "out" / "stats.jsonl")
    assert sum(s["batch"] == 2 for s in stats) >= 0.8 * len(stats)
    assert summary.batches < 32
    for source in ("a", "b"):
        assert [s["frame"] for s in stats if s["source"] == source] == list(range(16))
    second_labels = label_ids(tmp_path / "out" / "b" / "labels" / "000003.png")
    assert second_labels.shape == (60, 80)


def test_live_source_keeps_the_newest_frame_and_ends_after_retries(bundles, frames, tmp_path):
    """A recording read as a live source with a slow consumer: frames are dropped, not
    queued. When it disappears, reconnection is retried with backoff, then it ends."""
    video = write_video(tmp_path / "cam.mp4", frames * 4)  # 120 frames
    log = []

    def slow(frame, prediction, record):
        time.sleep(0.01)

    stream = Stream(bundles[0], [str(video)], live=True, on_result=slow, retries=2, backoff=0.01, log=log.append)
    video.unlink()  # the "camera" goes away; the open capture still plays what it has, then cannot come back
    summary = stream.run()
    assert summary.dropped.get("cam", 0) > 0
    assert summary.total + summary.dropped["cam"] <= 120
    assert any("dropped out; reconnecting" in line for line in log)
    assert any("did not come back after 2 attempts" in line for line in log)


def test_hot_reload_switches_between_frames_and_keeps_the_old_model_on_failure(bundles, frames, tmp_path):
    install = tmp_path / "device"
    (install / "versions").mkdir(parents=True)
    for name, step in (("v0", 0), ("v1", 1)):
        shutil.copytree(bundles[step], install / "versions" / name)
    broken = shutil.copytree(bundles[1], install / "versions" / "broken")
    (broken / "model.onnx").write_bytes(b"corrupted")
    os.symlink("versions/v0", install / "current")
    video = write_video(tmp_path / "long.mp4", frames * 8)  # 240 frames

    def switch(target):
        link = install / "current.tmp"
        os.symlink(f"versions/{target}", link)
        os.replace(link, install / "current")

    versions = Predictor(bundles[0]).version, Predictor(bundles[1]).version
    seen = []
    log = []

    def on_result(frame, prediction, record):
        seen.append(record["version"])
        if len(seen) == 10:
            switch("v1")
        if record["version"] == versions[1] and seen.count(versions[1]) == 10:
            switch("broken")
        time.sleep(0.005)  # a camera's pace, so the reloads land mid-stream

    summary = run_stream(install, [str(video)], out=tmp_path / "out", save=["stats"], reload_interval=0.0,
                         on_result=on_result, log=log.append)
    assert summary.total == 240 and len(seen) == 240  # nothing dropped while switching
    assert summary.versions == list(versions)
    first_new = seen.index(versions[1])
    assert seen[:first_new] == [versions[0]] * first_new and seen[first_new:] == [versions[1]] * (240 - first_new)
    assert len(summary.reload_failures) == 1 and "model.onnx" in summary.reload_failures[0]
    assert any(f"switched from version {versions[0]} to {versions[1]}" in line for line in log)
    assert [s["version"] for s in _stats(tmp_path / "out" / "stats.jsonl")] == seen
    # an install folder hears about it: the fleet updater rolls back what the runtime cannot load
    health = json.loads((install / "health.json").read_text())
    assert health["version"] == "broken" and health["ok"] is False and "model.onnx" in health["error"]


def test_max_frames_and_stop(bundles, frames, tmp_path):
    video = write_video(tmp_path / "v.mp4", frames)
    assert run_stream(bundles[0], [str(video)], max_frames=7, batch=1, log=lambda m: None).total == 7
    stream = Stream(bundles[0], [str(video)], live=True, log=lambda m: None)
    threading.Timer(0.5, stream.stop).start()
    summary = stream.run()  # a live source never ends by itself; stop() ends it
    assert summary.total > 0


def test_unreachable_sources_are_named(bundles, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["run", str(bundles[0]), "--source", "9"])
    assert result.exit_code == 2 and "cannot open camera 9 (/dev/video9)" in result.output
    result = runner.invoke(main, ["run", str(bundles[0]), "--source", "rtsp://127.0.0.1:9/cam"])
    assert result.exit_code == 2 and "cannot open stream rtsp://127.0.0.1:9/cam" in result.output
    result = runner.invoke(main, ["run", str(bundles[0]), "--source", str(tmp_path / "missing.mp4")])
    assert result.exit_code == 2 and "missing.mp4: no such file" in result.output
    result = runner.invoke(main, ["run", str(bundles[0]), "--source", str(tmp_path)])
    assert result.exit_code == 2 and "no images" in result.output
    result = runner.invoke(main, ["run", str(bundles[0]), "--source", "videotestsrc ! appsink"])
    assert result.exit_code == 2 and "GStreamer" in result.output
    result = runner.invoke(main, ["run", str(bundles[0]), "--source", "0", "--save", "labels"])
    assert result.exit_code == 2 and "--save needs --out" in result.output


def test_bench_reports_percentiles_and_skips_what_cannot_run(bundles, tmp_path):
    result = CliRunner().invoke(main, ["bench", str(bundles[0]), "--backend", "ort,trt", "--batch", "1,2",
                                       "--size", "64,48x80", "--warmup", "1", "--iterations", "5",
                                       "--out", str(tmp_path / "bench.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "bench.json").read_text())
    assert [(r["batch"], r["height"], r["width"]) for r in report["results"]] == [
        (1, 64, 64), (2, 64, 64), (1, 48, 80), (2, 48, 80)]
    for case in report["results"]:
        assert 0 < case["model_ms"]["p50"] <= case["model_ms"]["p95"] <= case["model_ms"]["p99"]
        assert case["throughput_fps"] > 0 and case["backend"] == "ort"
    assert "trt" in report["skipped"]
    with pytest.raises(ReminderError, match="batch sizes"):
        from reminder.runtime.bench import benchmark

        benchmark(bundles[0], batches=[0])


def test_http_camera_that_drops_out_is_reconnected(bundles, frames):
    """A real MJPEG-over-HTTP stream on 127.0.0.1 (as IP cameras serve): each connection
    sends 30 frames and closes; the third connection is refused. The runtime reconnects
    after the first drop, then gives up after its retries and ends cleanly."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames[:10]]
    connections = []

    class Camera(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            connections.append(self.path)
            if len(connections) > 2:
                self.send_error(503)
                return
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for i in range(30):
                    jpeg = jpegs[i % len(jpegs)]
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                     % len(jpeg) + jpeg + b"\r\n")
                    time.sleep(0.01)
            except OSError:
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Camera)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log = []
    try:
        summary = run_stream(bundles[0], [f"http://127.0.0.1:{server.server_address[1]}/video.mjpg"],
                             retries=2, backoff=0.05, log=log.append)
    finally:
        server.shutdown()
    assert any("reconnected" in line for line in log), log
    assert any("did not come back after 2 attempts" in line for line in log), log
    assert 30 < summary.total + sum(summary.dropped.values()) <= 60
