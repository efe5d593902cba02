"""``reminder export`` and ``reminder bundle``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from reminder.cli.common import parse_list, parse_size, say


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--step", type=int, default=None, help="Step to export (default: the last complete one).")
@click.option("--format", "formats", default="onnx", show_default=True,
              help="Comma-separated: onnx, onnx-int8 (adds onnx), torchscript, aoti, tensorrt.")
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
@click.option("--trt-fp16", "--fp16-onnx", "trt_fp16", is_flag=True,
              help="An FP16 TensorRT engine (TensorRT 10: FP16 builder flag; 11: from an FP16 ONNX).")
@click.option("--trt-sizes", default=None, metavar="SIZES",
              help="Comma-separated N or HEIGHTxWIDTH the TensorRT engine must accept besides the bundle's input "
                   "and parity images (its profile spans half the smallest to twice the largest).")
@click.option("--trt-max-batch", type=int, default=8, show_default=True, help="Largest batch the engine accepts.")
@click.option("--trt-int8", is_flag=True,
              help="An INT8 TensorRT engine (TensorRT 10: entropy calibration, its cache kept in the bundle; "
                   "11: from the QDQ ONNX of onnx-int8).")
@click.option("--calibration-images", type=click.Path(path_type=Path), default=None,
              help="INT8 calibration images (default: the step's own training images).")
@click.option("--calibration-count", type=click.IntRange(1, 10000), default=32, show_default=True,
              help="INT8 calibration images to use.")
@click.option("--int8-min-agreement", type=click.FloatRange(0, 1), default=0.99, show_default=True,
              help="INT8 quality gate: share of held-out pixels labelled as the FP32 model does.")
@click.option("--int8-max-miou-drop", type=click.FloatRange(0), default=1.0, show_default=True,
              help="INT8 quality gate: mIoU points it may lose against FP32 (where labels exist).")
@click.option("--name", default=None, help="Bundle name (default: the run's, made a plain name).")
@click.option("--version", "version", default=None,
              help="Bundle version (default: RUNFOLDER-step<N>, made a plain name): letters, digits, . _ + -.")
@click.option("--deploy-size", default=None, metavar="HEIGHTxWIDTH",
              help="Input size the bundle runs at (default: your data's frame size; benchmarks: the eval size).")
@click.option("--force", is_flag=True, help="Replace --out even when it holds something other than this bundle.")
@click.option("--quiet", is_flag=True, help="Only the final line (no per-format messages).")
def export(run, step, formats, out, output, images, parity_threshold, parent, device, trt_fp16, trt_sizes,
           trt_max_batch, trt_int8, calibration_images, calibration_count, int8_min_agreement, int8_max_miou_drop,
           name, version, deploy_size, force, quiet) -> None:
    """Export a trained step to ONNX (FP32, INT8) / TorchScript / AOTInductor / TensorRT in a verified bundle."""
    from reminder.export.exporter import export_bundle

    sizes = [parse_size(v) for v in parse_list(trt_sizes, "--trt-sizes")] if trt_sizes else ()
    path = export_bundle(run, out=out, formats=formats, step=step, output=output, images=images,
                         parity_threshold=parity_threshold, parent=parent, device=device, trt_fp16=trt_fp16,
                         trt_sizes=sizes, trt_max_batch=trt_max_batch, trt_int8=trt_int8,
                         deploy_size=parse_size(deploy_size) if deploy_size else None,
                         calibration_images=calibration_images, calibration_count=calibration_count,
                         int8_min_agreement=int8_min_agreement, int8_max_miou_drop=int8_max_miou_drop,
                         name=name, version=version, force=force,
                         log=(lambda message: None) if quiet else say)
    click.echo(f"bundle written to {path}")


@click.group()
def bundle() -> None:
    """Pack, verify and inspect bundles."""


@bundle.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
def bundle_verify(path: Path) -> None:
    """Check every file of a bundle (folder or .tar) against the sha256 in its manifest."""
    import tempfile

    from reminder.bundle import open_bundle

    with tempfile.TemporaryDirectory() as tmp:
        _, manifest = open_bundle(path, tmp)
    click.echo(f"{path}: OK ({manifest.name} {manifest.version}, {len(manifest.classes)} classes)")


@bundle.command("pack")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Archive (default: PATH.tar).")
@click.option("--force", is_flag=True, help="Replace --out even when it is not an archive of this bundle.")
def bundle_pack(path: Path, out: Path | None, force: bool) -> None:
    """Write a verified bundle folder as one .tar for transport."""
    from reminder.bundle import pack_bundle

    # PATH.tar, also for a folder named like a version (wh-1.5: not wh-1.tar)
    click.echo(f"packed {pack_bundle(path, out or path.parent / (path.name + '.tar'), force=force)}")


@bundle.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest.")
def bundle_inspect(path: Path, as_json: bool) -> None:
    """Show a bundle's classes, artifacts, parity results and lineage."""
    import tempfile

    from reminder.bundle import describe_bundle, open_bundle

    with tempfile.TemporaryDirectory() as tmp:
        _, manifest = open_bundle(path, tmp)
    click.echo(json.dumps(manifest.to_json(), indent=2) if as_json else describe_bundle(manifest))
