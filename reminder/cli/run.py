"""``reminder run`` and ``reminder bench``: the runtime on streams and benchmarks."""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path

import click

from reminder.cli.common import parse_list, parse_size, say_err
from reminder.errors import LocalError, ReminderError


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
        say_err(message)

    def clear(self) -> None:
        if self.tty and self.width:
            click.echo("\r" + " " * self.width + "\r", nl=False, err=True)
            self.width = 0




@contextlib.contextmanager
def _stop_on_sigterm(stream):
    """SIGTERM ends the stream as Ctrl-C does: outputs are closed (a video stays readable)."""
    def stop(signum, frame):
        stream.summary.interrupted = True
        stream.stop()

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command("run")
@click.argument("bundle", type=click.Path(path_type=Path), required=False)
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
@click.option("--backend", type=click.Choice(["auto", "ort", "openvino", "trt", "torchscript", "aoti", "triton"]),
              default="auto", show_default=True,
              help="triton: send the frames to a Triton server (--url, --model) instead of running BUNDLE here.")
@click.option("--url", default=None, help="With --backend triton: http://HOST:8000 or grpc://HOST:8001.")
@click.option("--model", default=None, help="With --backend triton: the model's name on the server.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "int8"]), default="auto", show_default=True,
              help="int8: the bundle's INT8 artifact; bf16: its FP32 model computed in bf16 (openvino); auto: "
                   "INT8 on a CPU when the bundle has one.")
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
def run_command(bundle, sources, out, save, view, alpha, backend, url, model, precision, size, resize, batch,
                threads, live, max_frames, retries, watch, quiet) -> None:
    """Segment camera streams, videos or images with a bundle (or an install folder), or with
    a model served by Triton (--backend triton --url URL --model NAME)."""
    from reminder.runtime.stream import Stream

    saves = parse_list(save, "--save") if save else (["video", "stats"] if out else [])
    served = {}
    if backend == "triton":
        if not url or not (model or bundle):
            raise ReminderError("--backend triton needs --url (http://HOST:8000) and --model (the model's name)")
        bundle, served = model or str(bundle), {"url": url}
    elif bundle is None:
        raise ReminderError("give the BUNDLE to run (a bundle folder, its .tar, or an install folder)")
    elif url or model:
        raise ReminderError("--url and --model go with --backend triton")
    line = _StatusLine(not quiet)
    options = {"threads": threads} if backend != "triton" else {}
    stream = Stream(bundle, sources, out=out, save=saves, view=view, alpha=alpha, batch=batch,
                    live=True if live else None, watch=watch, max_frames=max_frames, retries=retries,
                    on_status=line.status, log=line.log, backend=backend, precision=precision,
                    size=parse_size(size) if size else None, resize=resize, **options, **served)
    line.log(f"{stream.predictor.version}: {len(stream.predictor.classes)} classes on {stream.predictor.backend_name}; "
             f"sources: {', '.join(s.description for s in stream.sources)}")
    with _stop_on_sigterm(stream):  # systemd and Docker stop services with SIGTERM: finish the outputs
        summary = stream.run()
    line.clear()
    dropped = sum(summary.dropped.values())
    skipped = sum(summary.skipped.values())
    click.echo(f"{summary.total} frames from {len(summary.frames)} source(s) in {summary.seconds:.1f} s "
               f"({summary.fps:.1f} FPS); dropped {dropped}, skipped {skipped}; "
               f"version {' -> '.join(summary.versions)}" + (" (interrupted)" if summary.interrupted else ""))
    if summary.lost_outputs:
        raise LocalError(f"{len(summary.lost_outputs)} outputs were not written, the first: "
                         f"{summary.lost_outputs[0]}")
    if out and saves:
        click.echo(f"outputs in {out}")
    if summary.total == 0 and not summary.interrupted:
        raise ReminderError(f"no frame was processed ({skipped} skipped); see the messages above")


@click.command("bench")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--backend", "backends", default="auto", show_default=True,
              help="Comma-separated: auto, ort, openvino, trt, torchscript, aoti, or all (every backend that "
                   "can run one of the bundle's artifacts here).")
@click.option("--precision", "precisions", default="auto", show_default=True,
              help="Comma-separated: auto, fp32, bf16 (openvino), int8 (each backend is measured at each).")
@click.option("--batch", "batches", default="1", show_default=True, help="Comma-separated batch sizes.")
@click.option("--size", "sizes", default=None, help="Comma-separated N or HEIGHTxWIDTH (default: the bundle's).")
@click.option("--warmup", type=int, default=10, show_default=True)
@click.option("--iterations", type=int, default=50, show_default=True)
@click.option("--threads", type=int, default=None, help="CPU threads for ONNX Runtime.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the JSON here.")
def bench_command(bundle, backends, precisions, batches, sizes, warmup, iterations, threads, out) -> None:
    """Latency p50/p95/p99 and throughput per backend, batch size and input size (JSON)."""
    from reminder.io import atomic_write_text
    from reminder.runtime.bench import benchmark

    report = benchmark(bundle, backends=parse_list(backends, "--backend"),
                       precisions=parse_list(precisions, "--precision"),
                       batches=parse_list(batches, "--batch", int),
                       sizes=[parse_size(v) for v in parse_list(sizes, "--size")] if sizes else None,
                       warmup=warmup, iterations=iterations, threads=threads,
                       log=say_err)
    text = json.dumps(report, indent=2)
    if out:
        atomic_write_text(out, text + "\n")
    click.echo(text)
