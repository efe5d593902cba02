"""A real bundle for the runtime benchmarks: SynthVOC, one joint training iteration of the
chosen backbone (latency does not depend on the weights), exported by the real exporter."""

from __future__ import annotations

from pathlib import Path


def make_bundle(workdir: Path, *, backbone: str = "mobilenet_v3_large", size: int = 512,
                formats: str = "onnx") -> Path:
    from reminder.data.synthetic import write_synthvoc
    from reminder.export.exporter import export_bundle
    from reminder.train.config import resolve_config
    from reminder.train.run import train_scenario

    workdir = Path(workdir)
    bundle = workdir / f"bundle-{backbone}-{size}"
    if (bundle / "manifest.json").is_file():
        return bundle
    data = workdir / "synthvoc"
    if not (data / "synthvoc.json").is_file() and not any(data.glob("**/synthvoc.json")):
        write_synthvoc(data, images=16, size=size, seed=0, workers=2)
    config = resolve_config(dataset="synthvoc", root=data, setting="offline", method="joint",
                            out=workdir / f"run-{backbone}-{size}", backbone=backbone, max_iterations=1,
                            batch_size=2, crop_size=128, eval_size=size, eval_batch_size=2, workers=0)
    train_scenario(config, progress=False, log=lambda message: None)
    return export_bundle(config.out, out=bundle, formats=formats, log=lambda message: None)


def synthvoc_frames(workdir: Path, count: int, size: int):
    """``count`` BGR frames from the SynthVOC images written by :func:`make_bundle`, cycled."""
    import cv2

    paths = sorted(Path(workdir, "synthvoc").glob("**/JPEGImages/*.jpg"))
    images = [cv2.resize(cv2.imread(str(p)), (size, size)) for p in paths]
    return [images[i % len(images)] for i in range(count)]


def write_video(path: Path, frames, fps: float = 30.0) -> Path:
    import cv2

    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def make_bundle_in_child(workdir: Path, *, backbone: str = "mobilenet_v3_large", size: int = 512) -> Path:
    """:func:`make_bundle` in a separate process, so the caller never imports torch and
    its memory measures the runtime alone."""
    import subprocess
    import sys

    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "from _bundle import make_bundle\n"
              f"print(make_bundle({str(workdir)!r}, backbone={backbone!r}, size={size}))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"building the benchmark bundle failed:\n{result.stderr}")
    return Path(result.stdout.strip().splitlines()[-1])
