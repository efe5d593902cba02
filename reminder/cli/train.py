"""``reminder train``, ``eval`` and ``report``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from reminder.cli.common import parse_eval_size, parse_order, parse_overrides, say
from reminder.errors import ReminderError


METHODS = ["finetune", "joint", "ewc", "lwf-mc", "ilt", "mib", "plop", "reminder", "reminder-kd", "reminder-unkd",
           "dkd", "dkd+csw"]


def training_options(command):
    """The options ``train`` and ``increment`` share (how a step trains, and on what machine)."""
    options = [
        click.option("--epochs", type=int, default=None, help="Epochs (preset by the data; for increment: its own)."),
        click.option("--lr", type=float, default=None, help="Learning rate (for increment: its own)."),
        click.option("--batch-size", type=int, default=None, help="Global batch size (all processes)."),
        click.option("--crop-size", type=int, default=None),
        click.option("--max-iterations", type=int, default=None, help="Cap on iterations per step (quick runs)."),
        click.option("--class-weights", type=click.Choice(["none", "sqrt", "inverse"]), default=None,
                     help="Weight rare classes up in the CE terms, from the step's pixel counts. "
                          "[default: sqrt with --data; none on benchmarks]"),
        click.option("--eval-every", type=int, default=None, help="Validation mIoU every N epochs into history.csv."),
        click.option("--seed", type=int, default=None),
        click.option("--device", default=None, help="auto, cpu, cuda, cuda:1 ... [default: auto]"),
        click.option("--workers", type=int, default=None, help="Data loader processes. [default: 2]"),
        click.option("--threads", type=click.IntRange(1), default=None,
                     help="CPU threads for torch. [default: the physical cores]"),
        click.option("--amp", type=click.Choice(["none", "bf16", "fp16"]), default=None,
                     help="Mixed precision (CUDA)."),
        click.option("--channels-last", is_flag=True, default=None),
        click.option("--compile", "compile_", is_flag=True, default=None, help="torch.compile the student."),
        click.option("--freeze-bn", is_flag=True, default=None, help="Keep batch-norm statistics frozen."),
        click.option("--export-each-step", default=None, metavar="FORMATS",
                     help="Export a bundle after each step into RUN/bundles/step<t> (e.g. onnx,torchscript; "
                          "onnx-int8 calibrates on the step's training images)."),
        click.option("--tensorboard", is_flag=True, default=None,
                     help="Also log to RUN/tensorboard (needs tensorboard)."),
        click.option("--wandb", is_flag=True, default=None, help="Also log to Weights & Biases (needs wandb)."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override any configuration field, e.g. --set pod_factor=0.02 (repeatable)."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _common(values: dict) -> dict:
    options = dict(epochs=values["epochs"], lr=values["lr"], batch_size=values["batch_size"],
                   crop_size=values["crop_size"], max_iterations=values["max_iterations"],
                   class_weights=values["class_weights"],
                   eval_every=values["eval_every"], seed=values["seed"], device=values["device"],
                   workers=values["workers"], amp=values["amp"], channels_last=values["channels_last"],
                   compile=values["compile_"], freeze_bn=values["freeze_bn"],
                   export_each_step=values["export_each_step"], tensorboard=values["tensorboard"],
                   wandb=values["wandb"])
    options.update(parse_overrides(values["overrides"]))
    return options


def _threads(threads: int | None) -> None:
    from reminder.train.threads import set_threads

    set_threads(threads)


def _exporter(formats: str | None):
    if not formats:
        return None
    from reminder.export.exporter import each_step_exporter

    return each_step_exporter(formats, log=say)


@click.command()
@click.option("--data", "data", type=click.Path(path_type=Path), default=None,
              help="Your own dataset YAML (or a labelling tool's export folder): step 0 learns its classes.")
@click.option("--dataset", type=click.Choice(["voc", "ade", "synthvoc"]), default=None,
              help="A benchmark dataset (with --root and --setting).")
@click.option("--root", type=click.Path(path_type=Path), default=None, help="Benchmark dataset root folder.")
@click.option("--setting", default=None, help="N-M or N-Ms, e.g. 15-1, 100-50 (joint: any).")
@click.option("--method", type=click.Choice(METHODS), default="reminder", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder (resumed if present).")
@click.option("--mode", type=click.Choice(["overlap", "disjoint"]), default=None, help="[default: overlap]")
@click.option("--order", default=None, help="Class order, comma-separated ids.")
@click.option("--test-protocol", type=click.Choice(["reminder", "mib"]), default=None,
              help="Unseen test classes -> 0 (reminder/PLOP) or 255 (MiB). [default: reminder]")
@click.option("--backbone", type=click.Choice(["resnet101", "resnet50", "mobilenet_v3_large", "tiny"]),
              default=None, help="[default: resnet101; tiny on synthvoc; mobilenet_v3_large with --data]")
@click.option("--weights-backbone", default=None, help="'imagenet' or a local weights file.")
@click.option("--head", type=click.Choice(["deeplabv3", "deeplabv3plus"]), default=None,
              help="deeplabv3plus adds a decoder on stride-4 features (thin and small objects). "
                   "[default: deeplabv3plus with --data; deeplabv3 on benchmarks, as the paper]")
@click.option("--output-stride", type=click.Choice(["8", "16"]), default=None,
              help="Backbone output stride; 8 keeps more detail at about twice the cost. [default: 16]")
@click.option("--epochs-next", type=int, default=None, help="Epochs of the later steps.")
@click.option("--lr-next", type=float, default=None, help="Learning rate of the later steps.")
@click.option("--eval-size", default=None, help="Resize+centre-crop size for evaluation, or 'full'.")
@click.option("--sync-bn", is_flag=True, default=None, help="SyncBatchNorm across GPUs (torchrun).")
@click.option("--from-step0", type=click.Path(path_type=Path), default=None,
              help="Reuse a trained step-0 checkpoint folder (RUN/step0) of another run.")
@training_options
def train(data, dataset, root, setting, method, out, mode, order, test_protocol, backbone, weights_backbone, head,
          output_stride, epochs_next, lr_next, eval_size, sync_bn, from_step0, **values) -> None:
    """Train step 0 on your own data (--data), or every step of a benchmark setting.

    An interrupted run resumes at its first incomplete step; add classes to a --data run with
    `reminder increment`."""
    from reminder.train.config import resolve_config
    from reminder.train.run import train_scenario

    _threads(values.pop("threads"))
    options = dict(mode=mode, order=tuple(parse_order(order)) if order else None, test_protocol=test_protocol,
                   backbone=backbone, weights_backbone=weights_backbone, head=head,
                   output_stride=int(output_stride) if output_stride else None, epochs_next=epochs_next,
                   lr_next=lr_next,
                   eval_size=parse_eval_size(eval_size), sync_bn=sync_bn,
                   from_step0=str(from_step0) if from_step0 else None) | _common(values)
    if data is not None:
        if dataset or root or setting:
            raise ReminderError("give --data (your own dataset) or --dataset/--root/--setting (a benchmark), not both")
        from reminder.train.custom import resolve_custom_config

        config = resolve_custom_config(data, out, method=method, **options)
    else:
        missing = [name for name, value in (("--dataset", dataset), ("--root", root), ("--setting", setting))
                   if not value]
        if missing:
            raise ReminderError(f"missing {', '.join(missing)}: a benchmark run needs --dataset, --root and "
                                f"--setting (or give --data DATA.yaml for your own data)")
        config = resolve_config(dataset=dataset, root=root, setting=setting, method=method, out=out, **options)
    results = train_scenario(config, progress=not values["quiet"], log=say,
                             on_step=_exporter(config.export_each_step))
    _final_line(results, out)


def _final_line(results: dict, out: Path) -> None:
    last = results["steps"][-1]
    click.echo(f"{results['method']} {results['setting']}: final all-mIoU {100 * last['all']:.2f}, avg "
               f"{100 * last['avg']:.2f} (step {last['step']}); results in {out / 'results.json'}")


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--data", "data", type=click.Path(path_type=Path), required=True,
              help="Dataset YAML of the new step: the run's classes first (same ids), then the new ones.")
@click.option("--method", type=click.Choice([m for m in METHODS if m != "joint"] + ["auto"]), default="reminder",
              show_default=True, help="auto: compare reminder, dkd and mib on held-out data and keep the best "
                                      "(as `reminder compare` with its defaults).")
@click.option("--redo", is_flag=True,
              help="Train the last step (the one --data added) again with these options; the old step is kept "
                   "until the new one completes.")
@training_options
def increment(run: Path, data: Path, method: str, redo: bool, **values) -> None:
    """Add the classes new in --data to RUN as its next step (the previous step teaches).

    The new data needs labels for the new classes only: everything else is background and is
    pseudo-labelled by the previous model. Run again to resume an interrupted step."""
    from reminder.train.custom import increment_config
    from reminder.train.results import read_results
    from reminder.train.run import train_scenario

    _threads(values.pop("threads"))
    if method == "auto":
        if redo:
            raise ReminderError("--method auto chooses the method of a new step; --redo trains a step again with one")
        from reminder.train.compare import compare_methods

        compare_methods(run, data, progress=not values["quiet"], log=say, **_common(values))
        _final_line(read_results(run), run)
        return
    if redo:
        from reminder.train.redo import redo_last_step

        results = redo_last_step(run, data, method=method, progress=not values["quiet"], log=say,
                                 on_step=_exporter(values["export_each_step"]), **_common(values))
        _final_line(results, run)
        return
    config = increment_config(run, data, method=method, log=say, **_common(values))
    if config is None:
        results = read_results(run)
    else:
        results = train_scenario(config, progress=not values["quiet"], log=say,
                                 on_step=_exporter(config.export_each_step))
    _final_line(results, run)


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--data", "data", type=click.Path(path_type=Path), required=True,
              help="Dataset YAML of the new step (as for increment).")
@click.option("--methods", default="reminder,dkd,mib", show_default=True,
              help="Comma-separated candidates, e.g. reminder,dkd,dkd+csw,mib,plop.")
@click.option("--holdout", type=float, default=0.2, show_default=True,
              help="Share of the new training images held out of training to score the candidates on.")
@click.option("--budget", type=float, default=None, metavar="SECONDS",
              help="Time for the whole comparison; candidates that would not fit are skipped.")
@click.option("--no-keep", is_flag=True, help="Only compare: do not make the best step the run's next step.")
@training_options
def compare(run: Path, data: Path, methods: str, holdout: float, budget: float | None, no_keep: bool,
            **values) -> None:
    """Train the next step of RUN with each method, score them on validation data, keep the best.

    The candidates learn the same classes from the same previous step, without the held-out
    share of the new images; they are scored on the earlier steps' val images and that share
    (never the new YAML's val set) with a per-class table. Run again to resume."""
    from reminder.train.compare import compare_methods

    _threads(values.pop("threads"))
    names = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS or m == "joint"]
    if unknown:
        raise ReminderError(f"--methods: unknown method {unknown[0]!r}; choose from "
                            f"{', '.join(m for m in METHODS if m != 'joint')}")
    compare_methods(run, data, methods=names, holdout=holdout, budget=budget, keep=not no_keep,
                    progress=not values["quiet"], log=say, **_common(values))


@click.command("eval")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--step", type=int, default=None, help="One step (default: every step with a checkpoint).")
@click.option("--data", "data", type=click.Path(path_type=Path), multiple=True,
              help="Own-data runs: score on the union of these YAMLs' val sets (repeatable; default: the run's).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="CPU threads for torch. [default: the physical cores]")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def eval_(run: Path, step: int | None, data: tuple[Path, ...], as_json: bool, threads: int | None,
          quiet: bool) -> None:
    """Re-evaluate a run's checkpoints: old / new / all mIoU and every class's IoU per step."""
    from reminder.train.run import evaluate_run

    _threads(threads)
    metrics = evaluate_run(run, step=step, data=list(data) or None, progress=not (as_json or quiet),
                           log=(lambda m: None) if as_json else say)
    if as_json:
        click.echo(json.dumps(metrics))


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("report"), show_default=True)
def report(runs: tuple[Path, ...], out: Path) -> None:
    """Paper-layout tables and plots (mIoU per step, forgetting, confusion) for run folders."""
    from reminder.train.report import write_report

    click.echo(f"report written to {write_report(runs, out)}")
