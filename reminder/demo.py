"""``reminder demo``: the whole product on the embedded default (SynthVOC), on a CPU.

1. Generate SynthVOC and show its 15-1 scenario.
2. Train 15-1 with fine-tuning and with REMINDER (and PLOP with ``plop`` in ``methods``)
   on the tiny backbone; the runs share one step-0 model, as the paper's do. Each step
   is evaluated, and each REMINDER step is exported to an ONNX bundle.
3. Run the runtime on a short synthetic video with the last step's bundle.
4. Teach the step-0 bundle a class on the "device" from 20 labelled frames, and compare it
   with the server's step 1, which learned the same class from all of its data.
5. Write ``OUT/report/report.md``: the paper-layout table, the plots (mIoU per step,
   forgetting, confusion) and an overlay strip of frames through the increments.

Everything is resumable: an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from reminder.data.splits import format_split_table, load_scenario
from reminder.data.synthetic import write_class_frames, write_synthvoc
from reminder.errors import ReminderError
from reminder.io import atomic_write_text

DEMO_METHODS = ("finetune", "reminder", "plop")


@dataclass(frozen=True)
class DemoSize:
    images: int
    size: int
    epochs: int
    epochs_next: int
    batch_size: int
    video_frames: int
    update_frames: int
    update_iterations: int


FULL = DemoSize(images=600, size=128, epochs=30, epochs_next=30, batch_size=16, video_frames=60,
                update_frames=20, update_iterations=300)
QUICK = DemoSize(images=160, size=64, epochs=4, epochs_next=1, batch_size=8, video_frames=12,
                 update_frames=8, update_iterations=20)


def ensure_synthvoc(root: Path, *, images: int, size: int, seed: int = 0, progress: bool = True) -> Path:
    """Generate SynthVOC under ``root`` unless the same one is already there."""
    meta = root / "VOCdevkit" / "VOC2012" / "synthvoc.json"
    if meta.is_file():
        stored = json.loads(meta.read_text())
        if (stored.get("images"), stored.get("size"), stored.get("seed")) == (images, size, seed):
            return meta.parent
    return write_synthvoc(root, images=images, size=size, seed=seed, progress=progress)


def _config(data: Path, out: Path, method: str, plan: DemoSize, **extra):
    from reminder.train.config import resolve_config

    return resolve_config(dataset="synthvoc", root=data, setting="15-1", method=method, out=out,
                          epochs=plan.epochs, epochs_next=plan.epochs_next, batch_size=plan.batch_size,
                          crop_size=plan.size, eval_size=None, workers=0, **extra)


def _train(data: Path, out: Path, methods: Sequence[str], plan: DemoSize, echo,
           progress: bool = True) -> dict[str, Path]:
    from reminder.export.exporter import each_step_exporter
    from reminder.train.run import train_scenario

    def log(message: str) -> None:
        echo(f"  {message}")

    runs: dict[str, Path] = {}
    first = methods[0]
    for method in methods:
        run = out / f"{method}-15-1"
        extra, on_step = {}, None
        if method != first:  # every run starts from the first run's step-0 model
            extra["from_step0"] = str(runs[first] / "step0")
        if method == "reminder":
            extra["export_each_step"] = "onnx"
            on_step = each_step_exporter("onnx", log=log)
        echo(f"\n== training {method} on SynthVOC 15-1 ({run})")
        train_scenario(_config(data, run, method, plan, **extra), progress=progress, log=log, on_step=on_step)
        runs[method] = run
    return runs


def _video(data: Path, path: Path, frames: int) -> Path:
    """A short video of the validation images (each held for a few frames, as a camera would)."""
    import cv2

    voc = data / "VOCdevkit" / "VOC2012"
    ids = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    images = [cv2.imread(str(voc / "JPEGImages" / f"{i}.jpg")) for i in ids[: max(1, frames // 3)]]
    height, width = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (width, height))
    for i in range(frames):
        writer.write(cv2.resize(images[(i // 3) % len(images)], (width, height)))
    writer.release()
    return path


def _overlay_strip(data: Path, bundles: list[Path], path: Path, rows: int = 4) -> Path:
    """Validation frames showing the later classes: the frame, its ground truth, then each
    step's bundle in turn, with a legend of every class shown."""
    import cv2
    from PIL import Image

    from reminder.runtime.overlay import legend_bar, overlay
    from reminder.runtime.predictor import Predictor

    voc = data / "VOCdevkit" / "VOC2012"
    ids = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    predictors = [Predictor(b) for b in bundles]
    last = predictors[-1]
    truths = {i: np.array(Image.open(voc / "SegmentationClass" / f"{i}.png")) for i in ids[:200]}
    later = [i for i, t in truths.items() if np.isin(t, [16, 17, 18, 19, 20]).mean() > 0.05]
    chosen = (later + [i for i in truths if i not in later])[:rows]
    tiles, shown = [], set()
    for image_id in chosen:
        frame = cv2.imread(str(voc / "JPEGImages" / f"{image_id}.jpg"))
        truth = np.where(truths[image_id] == 255, 0, truths[image_id]).astype(np.uint8)
        predictions = [p.predict(frame)[0] for p in predictors]
        shown.update(int(k) for labels in [truth] + [q.labels for q in predictions] for k in np.unique(labels))
        row = [frame, overlay(frame, truth, last.palette, alpha=0.6)]
        row += [overlay(frame, q.labels, p.palette, alpha=0.6) for p, q in zip(predictors, predictions)]
        tiles.append(np.concatenate(row, axis=1))
    header = np.full((24, tiles[0].shape[1], 3), 255, np.uint8)
    width = frame.shape[1]
    for column, title in enumerate(["frame", "ground truth"] + [f"step {i}" for i in range(len(bundles))]):
        cv2.putText(header, title, (column * width + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    legend = legend_bar(tiles[0].shape[1], sorted(k for k in shown if 0 < k < len(last.names)), last.palette,
                        last.names)
    cv2.imwrite(str(path), np.concatenate([header] + tiles + [legend], axis=0))
    return path


def _fleet(out: Path, bundles: list[Path], echo) -> dict:
    """Publish the last two steps to a local TUF repository served on 127.0.0.1 and let a
    device folder sync to each in turn."""
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from reminder import fleet

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    repo, device = out / "fleet-repo", out / "fleet-device"
    for folder in (repo, device, repo.parent / f"{repo.name}.keys"):  # the demo's own, made afresh each time
        shutil.rmtree(folder, ignore_errors=True)
    root = fleet.init_repository(repo)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(repo)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    log = lambda message: echo(f"  {message}")  # noqa: E731
    try:
        # the demo's models train for a minute: publish shows their per-class IoU, weak classes included
        fleet.publish(repo, bundles[-2], channel="stable", allow_weak_classes=True, log=log)
        fleet.sync(device, url=url, trusted_root=root, channel="stable", log=log)
        fleet.publish(repo, bundles[-1], channel="stable", allow_weak_classes=True, log=log)
        return fleet.sync(device, url=url, channel="stable", log=log)
    finally:
        server.shutdown()
        server.server_close()


def run_demo(out: Path, *, quick: bool = False, methods: Sequence[str] = ("finetune", "reminder"),
             echo: Callable[[str], None] = print, progress: bool = True) -> Path:
    """Run the demo into ``out``; return the report's path (``progress``: progress bars)."""
    from reminder.bundle import read_manifest
    from reminder.runtime.stream import run_stream
    from reminder.update import UpdateOptions, format_report, update_bundle
    from reminder.train.report import write_report
    from reminder.train.run import read_results

    unknown = [m for m in methods if m not in DEMO_METHODS]
    if unknown or "reminder" not in methods:
        raise ReminderError(f"demo methods must include reminder and come from {', '.join(DEMO_METHODS)}; "
                            f"got {', '.join(methods)}")
    methods = sorted(methods, key=lambda m: (m != "finetune", m))  # finetune trains the shared step 0
    plan = QUICK if quick else FULL
    out = Path(out)
    started = time.perf_counter()
    data = out / "synthvoc"
    echo(f"== SynthVOC: {plan.images} images of {plan.size} px in {data}")
    ensure_synthvoc(data, images=plan.images, size=plan.size, progress=progress)
    echo(format_split_table(load_scenario("synthvoc", data, "15-1", cache_dir=out / "cache")))

    runs = _train(data, out, methods, plan, echo, progress)
    reminder_run = runs["reminder"]
    bundles = sorted((reminder_run / "bundles").glob("step*"), key=lambda p: int(p.name[4:]))

    echo(f"\n== runtime: {bundles[-1].name} bundle on a {plan.video_frames}-frame video (ONNX Runtime, no torch)")
    video = _video(data, out / "video.mp4", plan.video_frames)
    runtime_out = out / "runtime"
    shutil.rmtree(runtime_out, ignore_errors=True)
    stream = run_stream(bundles[-1], [str(video)], out=runtime_out, save=["video", "stats"],
                        log=lambda message: echo(f"  {message}"))
    echo(f"  {stream.total} frames at {stream.fps:.1f} FPS -> {runtime_out / 'video' / 'overlay.mp4'}")

    echo(f"\n== on-device update: the step-0 bundle learns pottedplant from {plan.update_frames} labelled frames")
    shutil.rmtree(out / "device-frames", ignore_errors=True)
    frames = write_class_frames(data, 16, plan.update_frames, out / "device-frames", split="train", min_share=0.02)
    updated = update_bundle(bundles[0], images=frames / "images", masks=frames / "masks", classes=["pottedplant"],
                            out=out / "device-update", log=lambda message: echo(f"  {message}"), progress=progress,
                            options=UpdateOptions(iterations=plan.update_iterations, freeze_backbone=True,
                                                  agreement_confidence=0.7))
    echo("  " + format_report(updated.report).replace("\n", "\n  "))
    server_step1 = json.loads((reminder_run / "step1" / "metrics.json").read_text())

    echo("\n== fleet: publish the last two steps to a signed (TUF) repository; a device syncs to each")
    fleet_status = _fleet(out, bundles, echo)

    echo("\n== report")
    report_dir = out / "report"
    report = write_report([runs[m] for m in methods], report_dir)
    strip = _overlay_strip(data, bundles, report_dir / "overlays.png")
    manifest = read_manifest(updated.bundle)
    extra = [
        "", "## Frames through the increments", "",
        "Validation frames that show the classes learnt after step 0: the frame, its ground truth, then "
        "the REMINDER bundle of each step (ONNX Runtime), with a legend of the classes shown.", "",
        f"![overlays]({strip.name})", "",
        "## Runtime", "",
        f"`reminder run` on a {stream.total}-frame video with bundle `{bundles[-1].name}` "
        f"({len(read_manifest(bundles[-1]).classes)} classes): {stream.fps:.1f} FPS on this machine, "
        f"overlay video in `{runtime_out.relative_to(out)}/video/overlay.mp4`, per-frame stats in "
        f"`{runtime_out.relative_to(out)}/stats.jsonl`.", "",
        "## On-device update", "",
        f"The step-0 bundle learnt `pottedplant` from {updated.report['frames']} labelled frames "
        f"({updated.report['holdout_frames']} held out), frozen backbone, {updated.report['iterations']} iterations, "
        f"{updated.report['train_seconds']} s on {updated.report['device']}.", "",
        "| | pottedplant IoU | old-class agreement with the parent |", "| --- | --- | --- |",
        f"| device update (held-out frames) | {_pct(updated.report['new_iou']['pottedplant'])} | "
        f"{_pct(updated.report['old_agreement'])} |",
        f"| server step 1, REMINDER on all step-1 data (test set) | "
        f"{_pct(server_step1['iou'].get('pottedplant'))} | - |", "",
        f"New bundle: `{updated.bundle.relative_to(out)}` (version {manifest.version}, parent "
        f"{manifest.parent.version}).", "",
        "## Fleet", "",
        f"Steps {bundles[-2].name} and {bundles[-1].name} were published in turn to a TUF repository "
        f"(`fleet-repo`) served on 127.0.0.1; the device folder `fleet-device` verified, smoke-tested and "
        f"installed each. It now runs {fleet_status['installed']} (previous: "
        f"{', '.join(fleet_status['previous']) or 'none'}).",
    ]
    atomic_write_text(report, report.read_text() + "\n".join(extra) + "\n")
    results = {m: read_results(runs[m]) for m in methods}
    echo("\n== summary (final step, 15-1)")
    for method, result in results.items():
        final = result["steps"][-1]
        echo(f"  {method:9s} old {_pct(final['old'])}  new {_pct(final['new'])}  all {_pct(final['all'])}")
    echo(f"  device update: pottedplant IoU {_pct(updated.report['new_iou']['pottedplant'])} on held-out frames")
    echo(f"\nDone in {time.perf_counter() - started:.0f} s. Report: {report}")
    return report


def _pct(value) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}"
