"""``reminder update``: new classes on the device."""

from __future__ import annotations

from pathlib import Path

import click

from reminder.cli.common import parse_list, say_err


@click.command("update")
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
@click.option("--freeze-aspp", is_flag=True,
              help="With --freeze-backbone: freeze the ASPP's branches too; only its projection, the decoder and "
                   "the head train (faster; see docs/update.md for what it costs in IoU).")
@click.option("--views", type=click.IntRange(1, 256), default=16, show_default=True,
              help="With --freeze-backbone: augmented views per frame whose backbone features are computed once.")
@click.option("--no-feature-cache", is_flag=True,
              help="With --freeze-backbone: run the backbone at every iteration (fresh augmentations, slower).")
@click.option("--no-csw-kd", is_flag=True, help="Leave out CSW-KD (pseudo-labels and local POD only).")
@click.option("--holdout", type=float, default=0.25, show_default=True,
              help="Share of the frames held out to measure the new classes' IoU.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--amp", type=click.Choice(["auto", "none", "bf16", "fp16"]), default="auto", show_default=True,
              help="Mixed precision (auto: bf16 on CUDA, none on CPU).")
@click.option("--format", "formats", default=None, help="Formats to export (default: the parent's).")
@click.option("--version", "version", default=None, help="Version of the new bundle (default: PARENT+NAMES).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace --out even when it holds something other than this bundle.")
@click.option("--int8-min-agreement", type=float, default=0.99, show_default=True,
              help="An INT8 child's gate: share of pixels labelled as its FP32 model does. Below it "
                   "(after keeping sensitive layers in float) the child is written in FP32.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="CPU threads for torch. [default: the physical cores]")
@click.option("--quiet", is_flag=True, help="No progress bar or step messages; the report and the bundle only.")
def update_command(bundle, images, masks, classes, out, iterations, time_budget, batch_size, crop_size, lr,
                   freeze_backbone, freeze_aspp, views, no_feature_cache, no_csw_kd, holdout, device, amp, formats,
                   version, seed, force, int8_min_agreement, threads, quiet) -> None:
    """Teach a bundle new classes from a few labelled frames, on the device (REMINDER losses)."""
    from reminder.train.threads import set_threads
    from reminder.update import UpdateOptions, format_report, update_bundle

    set_threads(threads)

    options = UpdateOptions(iterations=iterations, time_budget=time_budget, batch_size=batch_size,
                            crop_size=crop_size, lr=lr, freeze_backbone=freeze_backbone, freeze_aspp=freeze_aspp,
                            views=views,
                            feature_cache=not no_feature_cache, csw_kd=not no_csw_kd,
                            holdout=holdout, device=device, amp=amp, seed=seed, version=version, force=force,
                            int8_min_agreement=int8_min_agreement,
                            formats=tuple(parse_list(formats, "--format")) if formats else None)
    result = update_bundle(bundle, images=images, masks=masks, classes=list(classes), out=out, options=options,
                           progress=not quiet, log=(lambda message: None) if quiet else
                           (say_err))
    click.echo(format_report(result.report))
    click.echo(f"new bundle: {result.bundle}")
