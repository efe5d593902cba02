"""The ``reminder`` command line: a thin layer over the library's functions."""

from __future__ import annotations

import json
from pathlib import Path

import click

from reminder.errors import ReminderError


class _Group(click.Group):
    """Turns a :class:`ReminderError` anywhere below into a one-line error and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ReminderError as error:
            click.echo(f"Error: {error}", err=True)
            ctx.exit(2)


def _parse_order(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        return [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise ReminderError(f"class order {value!r} must be comma-separated class ids") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="reminder")
def main() -> None:
    """Continual semantic segmentation (REMINDER, CVPR 2022) from training to devices."""


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True,
              help="Folder for the demo's data, runs, bundles and report (an interrupted demo resumes).")
@click.option("--quick", is_flag=True, help="A smaller, shorter demo (about 2 minutes; what the tests run).")
@click.option("--methods", default="finetune,reminder", show_default=True,
              help="Comma-separated methods to train (reminder required; plop adds a third run).")
def demo(out: Path, quick: bool, methods: str) -> None:
    """The whole product on SynthVOC on this CPU: train 15-1, export, run, update on device, report."""
    from reminder.demo import run_demo

    run_demo(out, quick=quick, methods=_parse_list(methods, "--methods"), echo=click.echo)


@main.group()
def data() -> None:
    """Generate SynthVOC and inspect continual splits of VOC, ADE20k or SynthVOC."""


@data.command("synth")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write VOCdevkit/ into.")
@click.option("--images", type=int, default=1000, show_default=True, help="Number of images (train + val).")
@click.option("--size", type=int, default=128, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Generator seed.")
@click.option("--workers", type=int, default=None, help="Processes (default: CPU count).")
def data_synth(out: Path, images: int, size: int, seed: int, workers: int | None) -> None:
    """Write SynthVOC in the Pascal VOC 2012 layout (JPEG images, palette PNG masks, split lists)."""
    from reminder.data.synthetic import write_synthvoc

    voc = write_synthvoc(out, images=images, size=size, seed=seed, workers=workers, progress=True)
    click.echo(f"SynthVOC: {images} images of {size}x{size} px (seed {seed}) in {voc}")


@data.command("split")
@click.option("--dataset", type=click.Choice(["voc", "ade", "synthvoc"]), required=True)
@click.option("--root", type=click.Path(path_type=Path), required=True, help="Dataset root folder.")
@click.option("--setting", required=True, help="N-M or N-Ms, e.g. 15-1, 15-5s, 100-50.")
@click.option("--mode", type=click.Choice(["overlap", "disjoint"]), default="overlap", show_default=True)
@click.option("--order", default=None, help="Class order, comma-separated ids (default: natural).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Where the class index is cached (default: $REMINDER_CACHE or ~/.cache/reminder).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the per-step image ids.")
def data_split(dataset: str, root: Path, setting: str, mode: str, order: str | None,
               cache_dir: Path | None, as_json: bool) -> None:
    """Show which images and classes each step of a continual setting uses."""
    from reminder.data.splits import format_split_table, load_scenario

    scenario_data = load_scenario(dataset, root, setting, mode=mode, order=_parse_order(order),
                                  cache_dir=cache_dir, progress=not as_json)
    if as_json:
        click.echo(json.dumps(scenario_data.as_json()))
    else:
        click.echo(format_split_table(scenario_data))


def _parse_overrides(pairs: tuple[str, ...]) -> dict:
    """``--set key=value`` pairs; values parsed as JSON when they can be (numbers, null, lists)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ReminderError(f"--set {pair!r} must be key=value")
        try:
            overrides[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.replace("-", "_")] = value
    return overrides


def _eval_size(value: str | None) -> int | None | str:
    if value is None:
        return None
    if value == "full":
        return "full"
    try:
        return int(value)
    except ValueError:
        raise ReminderError(f"--eval-size must be a number of pixels or 'full', got {value!r}") from None


@main.command()
@click.option("--dataset", type=click.Choice(["voc", "ade", "synthvoc"]), required=True)
@click.option("--root", type=click.Path(path_type=Path), required=True, help="Dataset root folder.")
@click.option("--setting", required=True, help="N-M or N-Ms, e.g. 15-1, 100-50 (joint: any).")
@click.option("--method", type=click.Choice(["finetune", "joint", "ewc", "lwf-mc", "ilt", "mib", "plop",
                                             "reminder", "reminder-kd", "reminder-unkd"]), default="reminder",
              show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder (resumed if present).")
@click.option("--mode", type=click.Choice(["overlap", "disjoint"]), default=None, help="[default: overlap]")
@click.option("--order", default=None, help="Class order, comma-separated ids.")
@click.option("--test-protocol", type=click.Choice(["reminder", "mib"]), default=None,
              help="Unseen test classes -> 0 (reminder/PLOP) or 255 (MiB). [default: reminder]")
@click.option("--backbone", type=click.Choice(["resnet101", "resnet50", "mobilenet_v3_large", "tiny"]),
              default=None, help="[default: resnet101; tiny on synthvoc]")
@click.option("--weights-backbone", default=None, help="'imagenet' or a local weights file.")
@click.option("--epochs", type=int, default=None, help="Step-0 epochs (preset by dataset).")
@click.option("--lr", type=float, default=None, help="Step-0 learning rate.")
@click.option("--epochs-next", type=int, default=None, help="Epochs of the later steps.")
@click.option("--lr-next", type=float, default=None, help="Learning rate of the later steps.")
@click.option("--batch-size", type=int, default=None, help="Global batch size (all processes).")
@click.option("--crop-size", type=int, default=None)
@click.option("--eval-size", default=None, help="Resize+centre-crop size for evaluation, or 'full'.")
@click.option("--max-iterations", type=int, default=None, help="Cap on iterations per step (quick runs).")
@click.option("--seed", type=int, default=None)
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:1 ... [default: auto]")
@click.option("--workers", type=int, default=None, help="Data loader processes. [default: 2]")
@click.option("--amp", type=click.Choice(["none", "bf16", "fp16"]), default=None, help="Mixed precision (CUDA).")
@click.option("--channels-last", is_flag=True, default=None)
@click.option("--compile", "compile_", is_flag=True, default=None, help="torch.compile the student.")
@click.option("--freeze-bn", is_flag=True, default=None, help="Keep batch-norm statistics frozen.")
@click.option("--sync-bn", is_flag=True, default=None, help="SyncBatchNorm across GPUs (torchrun).")
@click.option("--from-step0", type=click.Path(path_type=Path), default=None,
              help="Reuse a trained step-0 checkpoint folder (RUN/step0) of another run.")
@click.option("--export-each-step", default=None, metavar="FORMATS",
              help="Export a bundle after each step into RUN/bundles/step<t> (e.g. onnx,torchscript).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any configuration field, e.g. --set pod_factor=0.02 (repeatable).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train(dataset, root, setting, method, out, mode, order, test_protocol, backbone, weights_backbone, epochs, lr,
          epochs_next, lr_next, batch_size, crop_size, eval_size, max_iterations, seed, device, workers, amp,
          channels_last, compile_, freeze_bn, sync_bn, from_step0, export_each_step, overrides, quiet) -> None:
    """Train every step of a continual setting; an interrupted run resumes at its first incomplete step."""
    from reminder.train.config import resolve_config
    from reminder.train.run import train_scenario

    size = _eval_size(eval_size)
    options = dict(mode=mode, order=tuple(_parse_order(order)) if order else None, test_protocol=test_protocol,
                   backbone=backbone, weights_backbone=weights_backbone, epochs=epochs, lr=lr,
                   epochs_next=epochs_next, lr_next=lr_next, batch_size=batch_size, crop_size=crop_size,
                   eval_size=size, max_iterations=max_iterations, seed=seed,
                   device=device, workers=workers, amp=amp, channels_last=channels_last, compile=compile_,
                   freeze_bn=freeze_bn, sync_bn=sync_bn, from_step0=str(from_step0) if from_step0 else None,
                   export_each_step=export_each_step)
    options.update(_parse_overrides(overrides))
    config = resolve_config(dataset=dataset, root=root, setting=setting, method=method, out=out, **options)
    results = train_scenario(config, progress=not quiet, log=click.echo)
    last = results["steps"][-1]
    click.echo(f"{method} {setting}: final all-mIoU {100 * last['all']:.2f}, avg {100 * last['avg']:.2f}; "
               f"results in {out / 'results.json'}")


@main.command("eval")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--step", type=int, default=None, help="One step (default: every step with a checkpoint).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def eval_(run: Path, step: int | None, as_json: bool) -> None:
    """Re-evaluate a run's checkpoints on its test set."""
    from reminder.train.run import evaluate_run

    metrics = evaluate_run(run, step=step, progress=not as_json, log=(lambda m: None) if as_json else click.echo)
    if as_json:
        click.echo(json.dumps(metrics))


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("report"), show_default=True)
def report(runs: tuple[Path, ...], out: Path) -> None:
    """Paper-layout tables and plots (mIoU per step, forgetting, confusion) for run folders."""
    from reminder.train.report import write_report

    click.echo(f"report written to {write_report(runs, out)}")


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--step", type=int, default=None, help="Step to export (default: the last complete one).")
@click.option("--format", "formats", default="onnx", show_default=True,
              help="Comma-separated: onnx, torchscript, aoti, tensorrt.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Bundle folder to write.")
@click.option("--output", type=click.Choice(["labels", "logits"]), default="labels", show_default=True,
              help="labels (+ confidence) computed in the graph, or raw logits.")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Images for the parity check (default: the step's test images).")
@click.option("--parity-threshold", type=float, default=0.999, show_default=True,
              help="Minimum share of pixels whose label matches eager PyTorch.")
@click.option("--parent", type=click.Path(path_type=Path), default=None,
              help="Parent bundle for lineage (default: RUN/bundles/step<N-1> when present).")
@click.option("--device", default="cpu", show_default=True, help="Device for AOTInductor compilation.")
@click.option("--fp16-onnx", is_flag=True, help="Build the TensorRT engine in FP16 from an FP16 ONNX.")
def export(run, step, formats, out, output, images, parity_threshold, parent, device, fp16_onnx) -> None:
    """Export a trained step to ONNX / TorchScript / AOTInductor / TensorRT in a verified bundle."""
    from reminder.export.exporter import export_bundle

    path = export_bundle(run, out=out, formats=formats, step=step, output=output, images=images,
                         parity_threshold=parity_threshold, parent=parent, device=device, fp16_onnx=fp16_onnx,
                         log=click.echo)
    click.echo(f"bundle written to {path}")


@main.group()
def bundle() -> None:
    """Pack, verify and inspect bundles."""


@bundle.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
def bundle_verify(path: Path) -> None:
    """Check every file of a bundle (folder or .tar) against the sha256 in its manifest."""
    import tempfile

    from reminder.export.bundle import open_bundle

    with tempfile.TemporaryDirectory() as tmp:
        _, manifest = open_bundle(path, tmp)
    click.echo(f"{path}: OK ({manifest['name']} {manifest['version']}, {len(manifest['classes'])} classes)")


@bundle.command("pack")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Archive (default: PATH.tar).")
def bundle_pack(path: Path, out: Path | None) -> None:
    """Write a verified bundle folder as one .tar for transport."""
    from reminder.export.bundle import pack_bundle

    click.echo(f"packed {pack_bundle(path, out or path.with_suffix('.tar'))}")


@bundle.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest.")
def bundle_inspect(path: Path, as_json: bool) -> None:
    """Show a bundle's classes, artifacts, parity results and lineage."""
    import tempfile

    from reminder.export.bundle import describe_bundle, open_bundle

    with tempfile.TemporaryDirectory() as tmp:
        _, manifest = open_bundle(path, tmp)
    click.echo(json.dumps(manifest, indent=2) if as_json else describe_bundle(manifest))


def _parse_size(value: str) -> tuple[int, int]:
    """``512`` -> (512, 512); ``480x640`` -> (480, 640) as HEIGHTxWIDTH."""
    try:
        parts = [int(v) for v in value.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise ReminderError(f"size {value!r} must be N or HEIGHTxWIDTH in pixels, e.g. 512 or 480x640")
    return (parts[0], parts[-1])


def _parse_list(value: str, what: str, convert=str) -> list:
    try:
        items = [convert(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise ReminderError(f"{what} {value!r} must be a comma-separated list") from None
    if not items:
        raise ReminderError(f"{what} is empty")
    return items


class _StatusLine:
    """One live status line on a terminal (rewritten in place); log lines print above it.
    Off a terminal the status is printed as a plain line every few seconds."""

    def __init__(self, enabled: bool):
        import sys
        import time

        self.enabled, self.tty, self.clock = enabled, sys.stderr.isatty(), time.monotonic
        self.width, self.last = 0, 0.0

    def status(self, status: dict) -> None:
        if not self.enabled:
            return
        text = (f"{status['frames']} frames | {status['fps']:.1f} FPS | latency {status['latency_ms']:.1f} ms | "
                f"dropped {status['dropped']} | skipped {status['skipped']} | {status['version']}")
        if self.tty:
            click.echo("\r" + text.ljust(self.width), nl=False, err=True)
            self.width = len(text)
        elif self.clock() - self.last >= 5:
            self.last = self.clock()
            click.echo(text, err=True)

    def log(self, message: str) -> None:
        self.clear()
        click.echo(message, err=True)

    def clear(self) -> None:
        if self.tty and self.width:
            click.echo("\r" + " " * self.width + "\r", nl=False, err=True)
            self.width = 0


@main.command("run")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--source", "sources", multiple=True, required=True,
              help="Camera index or /dev/videoN, video file, rtsp:// or http:// URL, GStreamer pipeline, image "
                   "folder or glob. Repeat for several sources (batched together).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for outputs (default: none, a headless run).")
@click.option("--save", default=None,
              help="Comma-separated: video (overlay video, or overlay images for image sources), labels "
                   "(label PNGs), stats (stats.jsonl). Default with --out: video,stats.")
@click.option("--view", type=click.Choice(["overlay", "mask", "both"]), default="overlay", show_default=True)
@click.option("--alpha", type=float, default=0.5, show_default=True, help="Overlay opacity, 0..1.")
@click.option("--backend", type=click.Choice(["auto", "ort", "trt", "torchscript", "aoti"]), default="auto",
              show_default=True)
@click.option("--size", default=None, help="Network input N or HEIGHTxWIDTH (default: the bundle's).")
@click.option("--resize", type=click.Choice(["letterbox", "fit", "stretch", "none"]), default="letterbox",
              show_default=True)
@click.option("--batch", type=int, default=None, help="Frames per inference (default: number of sources).")
@click.option("--threads", type=int, default=None, help="CPU threads for ONNX Runtime.")
@click.option("--live", is_flag=True, help="Treat file sources as live (newest frame wins, reconnect).")
@click.option("--max-frames", type=int, default=None, help="Stop after this many frames.")
@click.option("--retries", type=int, default=5, show_default=True,
              help="Reconnection attempts for a live source that drops out (with backoff).")
@click.option("--watch/--no-watch", default=True, show_default=True,
              help="Switch to the bundle when it is replaced (an install's `current`).")
@click.option("--quiet", is_flag=True, help="No status line.")
def run_command(bundle, sources, out, save, view, alpha, backend, size, resize, batch, threads, live, max_frames,
                retries, watch, quiet) -> None:
    """Segment camera streams, videos or images with a bundle (or an install folder)."""
    from reminder.runtime.stream import Stream

    saves = _parse_list(save, "--save") if save else (["video", "stats"] if out else [])
    line = _StatusLine(not quiet)
    stream = Stream(bundle, sources, out=out, save=saves, view=view, alpha=alpha, batch=batch,
                    live=True if live else None, watch=watch, max_frames=max_frames, retries=retries,
                    on_status=line.status, log=line.log, backend=backend,
                    size=_parse_size(size) if size else None, resize=resize, threads=threads)
    line.log(f"{stream.predictor.version}: {len(stream.predictor.classes)} classes on {stream.predictor.backend_name}; "
             f"sources: {', '.join(s.description for s in stream.sources)}")
    summary = stream.run()
    line.clear()
    dropped = sum(summary.dropped.values())
    skipped = sum(summary.skipped.values())
    click.echo(f"{summary.total} frames from {len(summary.frames)} source(s) in {summary.seconds:.1f} s "
               f"({summary.fps:.1f} FPS); dropped {dropped}, skipped {skipped}; "
               f"version {' -> '.join(summary.versions)}" + (" (interrupted)" if summary.interrupted else ""))
    if out and saves:
        click.echo(f"outputs in {out}")


@main.command("bench")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--backend", "backends", default="auto", show_default=True,
              help="Comma-separated: auto, ort, trt, torchscript, aoti, or all (every artifact).")
@click.option("--batch", "batches", default="1", show_default=True, help="Comma-separated batch sizes.")
@click.option("--size", "sizes", default=None, help="Comma-separated N or HEIGHTxWIDTH (default: the bundle's).")
@click.option("--warmup", type=int, default=10, show_default=True)
@click.option("--iterations", type=int, default=50, show_default=True)
@click.option("--threads", type=int, default=None, help="CPU threads for ONNX Runtime.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the JSON here.")
def bench_command(bundle, backends, batches, sizes, warmup, iterations, threads, out) -> None:
    """Latency p50/p95/p99 and throughput per backend, batch size and input size (JSON)."""
    from reminder.io import atomic_write_text
    from reminder.runtime.bench import benchmark

    report = benchmark(bundle, backends=_parse_list(backends, "--backend"),
                       batches=_parse_list(batches, "--batch", int),
                       sizes=[_parse_size(v) for v in _parse_list(sizes, "--size")] if sizes else None,
                       warmup=warmup, iterations=iterations, threads=threads,
                       log=lambda message: click.echo(message, err=True))
    text = json.dumps(report, indent=2)
    if out:
        atomic_write_text(out, text + "\n")
    click.echo(text)


@main.command("update")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--images", type=click.Path(path_type=Path), required=True, help="Folder of labelled frames.")
@click.option("--masks", type=click.Path(path_type=Path), required=True,
              help="Folder of PNG masks with the frames' file names (colours, or class ids in grey PNGs).")
@click.option("--class", "classes", multiple=True, required=True, metavar="NAME[:R,G,B]",
              help="A new class and its mask colour (default: VOC's colour for VOC names). Repeatable.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The new bundle folder.")
@click.option("--iterations", type=int, default=300, show_default=True)
@click.option("--time-budget", type=float, default=None, help="Stop training after this many seconds.")
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--crop-size", type=int, default=None, help="Training crop (default: the bundle's input, max 512).")
@click.option("--lr", type=float, default=None,
              help="Learning rate (default: 0.01 with --freeze-backbone, else 0.001).")
@click.option("--freeze-backbone", is_flag=True, help="Train the ASPP and the head only (less memory and time).")
@click.option("--no-csw-kd", is_flag=True, help="Leave out CSW-KD (pseudo-labels and local POD only).")
@click.option("--holdout", type=float, default=0.25, show_default=True,
              help="Share of the frames held out to measure the new classes' IoU.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--amp", type=click.Choice(["auto", "none", "bf16", "fp16"]), default="auto", show_default=True,
              help="Mixed precision (auto: bf16 on CUDA, none on CPU).")
@click.option("--format", "formats", default=None, help="Formats to export (default: the parent's).")
@click.option("--version", "version", default=None, help="Version of the new bundle (default: PARENT+NAMES).")
@click.option("--seed", type=int, default=0, show_default=True)
def update_command(bundle, images, masks, classes, out, iterations, time_budget, batch_size, crop_size, lr,
                   freeze_backbone, no_csw_kd, holdout, device, amp, formats, version, seed) -> None:
    """Teach a bundle new classes from a few labelled frames, on the device (REMINDER losses)."""
    from reminder.runtime.update import UpdateOptions, format_report, update_bundle

    options = UpdateOptions(iterations=iterations, time_budget=time_budget, batch_size=batch_size,
                            crop_size=crop_size, lr=lr, freeze_backbone=freeze_backbone, csw_kd=not no_csw_kd,
                            holdout=holdout, device=device, amp=amp, seed=seed, version=version,
                            formats=tuple(_parse_list(formats, "--format")) if formats else None)
    result = update_bundle(bundle, images=images, masks=masks, classes=list(classes), out=out, options=options,
                           log=lambda message: click.echo(message, err=True))
    click.echo(format_report(result.report))
    click.echo(f"new bundle: {result.bundle}")


@main.group()
def fleet() -> None:
    """Publish bundles to a signed (TUF) repository; sync, roll back and inspect devices."""


@fleet.command("init")
@click.option("--repo", type=click.Path(path_type=Path), required=True, help="Repository folder to create.")
def fleet_init(repo: Path) -> None:
    """Create the four role keys and signed metadata; print the root devices must trust."""
    from reminder.runtime.fleet import init_repository

    root = init_repository(repo)
    click.echo(f"repository in {repo}; give devices {root} as --trusted-root, and keep {repo / 'keys' / 'root.pem'} "
               f"offline")


@fleet.command("publish")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--repo", type=click.Path(path_type=Path), required=True)
@click.option("--channel", default="stable", show_default=True)
def fleet_publish(bundle: Path, repo: Path, channel: str) -> None:
    """Add a bundle (folder or .tar) to a channel as its newest version."""
    from reminder.runtime.fleet import publish

    publish(repo, bundle, channel=channel, log=click.echo)


@fleet.command("resign")
@click.option("--repo", type=click.Path(path_type=Path), required=True)
def fleet_resign(repo: Path) -> None:
    """Sign a fresh timestamp (daily, when nothing is published, so devices do not refuse it as expired)."""
    from reminder.runtime.fleet import resign_timestamp

    resign_timestamp(repo, log=click.echo)


@fleet.command("sync")
@click.option("--url", required=True, help="Base URL of the repository (serving metadata/ and targets/).")
@click.option("--trusted-root", type=click.Path(path_type=Path), default=None,
              help="The repository's root.json, obtained out of band (needed on the first sync).")
@click.option("--install-dir", type=click.Path(path_type=Path), required=True)
@click.option("--channel", default="stable", show_default=True)
@click.option("--keep", type=int, default=3, show_default=True, help="Installed versions kept for rollback.")
@click.option("--watch", type=float, default=None, metavar="SECONDS", help="Sync again every SECONDS.")
def fleet_sync(url, trusted_root, install_dir, channel, keep, watch) -> None:
    """Fetch, verify, smoke-test and install the channel's newest bundle; switch atomically."""
    from reminder.runtime import fleet as fleet_module

    options = dict(url=url, trusted_root=trusted_root, channel=channel, keep=keep, log=click.echo)
    if watch:
        fleet_module.watch(install_dir, every=watch, **options)
    else:
        fleet_module.sync(install_dir, **options)


@fleet.command("rollback")
@click.option("--install-dir", type=click.Path(path_type=Path), required=True)
def fleet_rollback(install_dir: Path) -> None:
    """Switch back to the previous installed version (the abandoned one is not reinstalled)."""
    from reminder.runtime.fleet import rollback

    rollback(install_dir, log=click.echo)


@fleet.command("status")
@click.option("--install-dir", type=click.Path(path_type=Path), required=True)
@click.option("--json", "as_json", is_flag=True)
def fleet_status(install_dir: Path, as_json: bool) -> None:
    """Installed and previous versions, and the last sync's time and result."""
    from reminder.runtime.fleet import read_status

    status = read_status(install_dir)
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    last = status.get("last_sync") or {}
    click.echo(f"installed: {status.get('installed') or 'nothing'} (channel {status.get('channel', '-')})")
    click.echo(f"previous: {', '.join(status.get('previous', [])) or 'none'}")
    click.echo(f"refused: {', '.join(status.get('refused', [])) or 'none'}")
    click.echo(f"last sync: {last.get('time', 'never')} {last.get('result', '')} {last.get('error', '')}".rstrip())


if __name__ == "__main__":
    main()
