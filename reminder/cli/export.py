"""``reminder export`` and ``reminder bundle``."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
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
    click.echo(f"{path}: OK ({manifest['name']} {manifest['version']}, {len(manifest['classes'])} classes)")


@bundle.command("pack")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Archive (default: PATH.tar).")
def bundle_pack(path: Path, out: Path | None) -> None:
    """Write a verified bundle folder as one .tar for transport."""
    from reminder.bundle import pack_bundle

    click.echo(f"packed {pack_bundle(path, out or path.with_suffix('.tar'))}")


@bundle.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest.")
def bundle_inspect(path: Path, as_json: bool) -> None:
    """Show a bundle's classes, artifacts, parity results and lineage."""
    import tempfile

    from reminder.bundle import describe_bundle, open_bundle

    with tempfile.TemporaryDirectory() as tmp:
        _, manifest = open_bundle(path, tmp)
    click.echo(json.dumps(manifest, indent=2) if as_json else describe_bundle(manifest))
