"""``reminder train``, ``eval`` and ``report``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from reminder.cli.common import parse_eval_size, parse_order, parse_overrides


@click.command()
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

    size = parse_eval_size(eval_size)
    options = dict(mode=mode, order=tuple(parse_order(order)) if order else None, test_protocol=test_protocol,
                   backbone=backbone, weights_backbone=weights_backbone, epochs=epochs, lr=lr,
                   epochs_next=epochs_next, lr_next=lr_next, batch_size=batch_size, crop_size=crop_size,
                   eval_size=size, max_iterations=max_iterations, seed=seed,
                   device=device, workers=workers, amp=amp, channels_last=channels_last, compile=compile_,
                   freeze_bn=freeze_bn, sync_bn=sync_bn, from_step0=str(from_step0) if from_step0 else None,
                   export_each_step=export_each_step)
    options.update(parse_overrides(overrides))
    config = resolve_config(dataset=dataset, root=root, setting=setting, method=method, out=out, **options)
    on_step = None
    if config.export_each_step:
        from reminder.export.exporter import each_step_exporter

        on_step = each_step_exporter(config.export_each_step, log=click.echo)
    results = train_scenario(config, progress=not quiet, log=click.echo, on_step=on_step)
    last = results["steps"][-1]
    click.echo(f"{method} {setting}: final all-mIoU {100 * last['all']:.2f}, avg {100 * last['avg']:.2f}; "
               f"results in {out / 'results.json'}")


@click.command("eval")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--step", type=int, default=None, help="One step (default: every step with a checkpoint).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def eval_(run: Path, step: int | None, as_json: bool) -> None:
    """Re-evaluate a run's checkpoints on its test set."""
    from reminder.train.run import evaluate_run

    metrics = evaluate_run(run, step=step, progress=not as_json, log=(lambda m: None) if as_json else click.echo)
    if as_json:
        click.echo(json.dumps(metrics))


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("report"), show_default=True)
def report(runs: tuple[Path, ...], out: Path) -> None:
    """Paper-layout tables and plots (mIoU per step, forgetting, confusion) for run folders."""
    from reminder.train.report import write_report

    click.echo(f"report written to {write_report(runs, out)}")
