"""Runtime pipeline benchmark: pipeline FPS over raw model FPS, start-up time, memory.

1. Raw model FPS: the backend alone on a ready batch of 1 at the input size.
2. Pipeline FPS: ``run_stream`` on a video file of frames at the input size (reader
   thread decoding, pre-processing, inference, post-processing, writer thread), headless.
   Target: pipeline / model >= 0.9.
3. Process start to first label map, ONNX backend, in a fresh interpreter (import,
   bundle verification, session creation, one frame). Target: < 1 s on CPU for
   MobileNetV3 at 512 px.
4. Peak resident memory of a runtime process running the video, beside a torch process
   running the same model (eager, from the bundle's checkpoint) on the same frames.

    python benchmarks/stream.py --size 512 --frames 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _bundle import make_bundle_in_child, synthvoc_frames, write_video  # noqa: E402

FIRST_LABEL = """
import time
began = time.time()
import sys, numpy as np, cv2
from reminder.runtime.predictor import Predictor
predictor = Predictor(sys.argv[1], backend="ort")
[prediction] = predictor.predict(cv2.imread(sys.argv[2]))
done = time.time()
print(done, done - began, "torch" in sys.modules)
"""

# ru_maxrss survives fork + exec (a child reports its parent's peak); VmHWM does not
PEAK_RSS = """
def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

RUNTIME_RSS = PEAK_RSS + """
import sys
from reminder.runtime.stream import run_stream
summary = run_stream(sys.argv[1], [sys.argv[2]], log=lambda message: None, backend="ort")
print(summary.total, peak_rss_mb())
"""

TORCH_RSS = PEAK_RSS + """
import json, sys
import cv2, numpy as np, torch
from reminder.export.graph import ExportModule
from reminder.models import build_segmenter
from reminder.train.checkpoint import load_tensors
bundle = sys.argv[1]
manifest = json.load(open(bundle + "/manifest.json"))
model = build_segmenter(manifest["model"]["backbone"], num_classes=manifest["model"]["classes_per_step"])
model.load_state_dict(load_tensors(bundle + "/checkpoint.safetensors"))
module = ExportModule(model).eval()
capture = cv2.VideoCapture(sys.argv[2])
frames = 0
with torch.inference_mode():
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        image = torch.from_numpy(np.ascontiguousarray(frame[:, :, ::-1].transpose(2, 0, 1))).float()[None]
        labels, confidence = module(image)
        np.bincount(labels.numpy().ravel())
        frames += 1
print(frames, peak_rss_mb())
"""


def _child(script: str, *args) -> list[str]:
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                            timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"child process failed:\n{result.stderr}")
    return result.stdout.strip().splitlines()[-1].split()  # the last line: libraries may print before it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenet_v3_large")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=200, help="Frames in the test video.")
    parser.add_argument("--model-iterations", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="Alternated model / pipeline measurements.")
    parser.add_argument("--starts", type=int, default=5, help="Fresh processes timed for the first label map.")
    parser.add_argument("--workdir", type=Path, default=None, help="Keep the bundle and video here.")
    args = parser.parse_args()

    from reminder.runtime.predictor import Predictor
    from reminder.runtime.stream import run_stream

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        bundle = make_bundle_in_child(workdir, backbone=args.backbone, size=args.size)
        frames = synthvoc_frames(workdir, args.frames, args.size)
        video = write_video(workdir / f"video-{args.size}.mp4", frames)
        image = workdir / "frame.jpg"
        import cv2

        cv2.imwrite(str(image), frames[0])

        predictor = Predictor(bundle, backend="ort")
        batch = np.ascontiguousarray(frames[0][:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32)
        for _ in range(5):
            predictor.backend(batch)
        run_stream(bundle, [str(video)], log=lambda m: None, max_frames=10, backend="ort")  # warm caches
        # model alone and the whole pipeline, alternated (this machine's speed drifts by ~10%)
        model_runs, pipeline_runs = [], []
        for _ in range(args.rounds):
            began = time.perf_counter()
            for _ in range(args.model_iterations):
                predictor.backend(batch)
            model_runs.append(args.model_iterations / (time.perf_counter() - began))
            summary = run_stream(bundle, [str(video)], log=lambda m: None, backend="ort")
            pipeline_runs.append(summary.fps)
        model_fps, pipeline_fps = float(np.median(model_runs)), float(np.median(pipeline_runs))

        starts = []
        for _ in range(args.starts):
            launched = time.time()
            done, inside, torch_loaded = _child(FIRST_LABEL, bundle, image)
            starts.append(float(done) - launched)
            assert torch_loaded == "False", "the runtime imported torch"
        runtime_frames, runtime_rss = _child(RUNTIME_RSS, bundle, video)
        torch_frames, torch_rss = _child(TORCH_RSS, bundle, video)

    result = {
        "benchmark": "stream", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "backbone": args.backbone, "size": args.size, "frames": summary.total, "backend": predictor.backend_name,
        "providers": getattr(predictor.backend, "providers", None),
        "model_fps": round(model_fps, 2), "pipeline_fps": round(pipeline_fps, 2),
        "pipeline_over_model": round(pipeline_fps / model_fps, 3), "target_pipeline_over_model": 0.9,
        "rounds": {"model_fps": [round(v, 2) for v in model_runs],
                   "pipeline_fps": [round(v, 2) for v in pipeline_runs]},
        "first_label_s": {"median": round(float(np.median(starts)), 3), "min": round(min(starts), 3),
                          "max": round(max(starts), 3)}, "target_first_label_s": 1.0,
        "peak_rss_mb": {"runtime": round(float(runtime_rss), 1), "torch": round(float(torch_rss), 1)},
        "rss_frames": {"runtime": int(runtime_frames), "torch": int(torch_frames)},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
