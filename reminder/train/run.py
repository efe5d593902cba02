"""A whole continual scenario: step 0..T, resumable, with results after every step.

Run folder::

    RUN/config.json              the resolved configuration
    RUN/step<t>/model.safetensors, meta.json, prototypes.safetensors, [fisher.safetensors]
    RUN/step<t>/metrics.json     written last: the step is complete
    RUN/results.json, results.csv

Each step is seeded from (seed, step) alone, and after training the final weights are
reloaded from disk before prototypes and evaluation, so a run that was interrupted and
started again gives the same results as one that was not.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader

from reminder.data.classes import voc_palette
from reminder.data.splits import load_scenario
from reminder.data.transforms import eval_transform, train_transform
from reminder.contracts.quality import per_class_report
from reminder.train.threads import busy_warning
from reminder.errors import ReminderError
from reminder.io import atomic_write_text, folder_lock
from reminder.models import build_segmenter
from reminder.train.balance import step_class_weights
from reminder.train.checkpoint import (check_compatible, completed_steps, load_model, load_tensors, read_meta,
                                       save_model, save_tensors, step_file_hashes)
from reminder.train.config import TrainConfig, check_resume, load_config
from reminder.train.history import History
from reminder.train.loaders import make_loader, resolve_device, seed_everything  # noqa: F401 (public here too)
from reminder.train.distributed import init_distributed
from reminder.train.evaluate import confusion_matrix, step_metrics
from reminder.train.methods import build_method, step0_method
from reminder.train.results import collect_steps, read_results, write_results  # noqa: F401 (public here too)
from reminder.train.prototypes import compute_prototypes, load_prototypes, merge_prototypes, save_prototypes
from reminder.train.step import ForwardFeatures, StepState, compute_thresholds, estimate_fisher, freeze, train_increment

class ScenarioRunner:
    """Trains, checkpoints and evaluates the steps of one configuration."""

    def __init__(self, config: TrainConfig, *, progress: bool = True, log: Callable[[str], None] = print,
                 on_step: Callable[[Path, int], object] | None = None):
        self.base = self.config = config
        self.out = Path(config.out)
        self.progress, self.on_step = progress, on_step
        self.device = resolve_device(config.device)
        self.dist = init_distributed(self.device)
        self.log = log if self.dist.is_main else (lambda message: None)
        self.method = build_method(config.method, config)
        self.data = load_run_data(config, cache_dir=config.cache_dir or self.out / "cache",
                                  progress=progress and self.dist.is_main)
        for note in (n for d in getattr(self.data, "datasets", []) for n in d.notes):
            self.log(f"WARNING: {note}")
        self.scenario = self.data.scenario

    def enter(self, step: int) -> None:
        """Use step ``step``'s options (a later step of your own data may have its own method and schedule)."""
        self.config = self.base.for_step(step)
        self.method = build_method(self.config.method, self.config)

    # -- run folder -------------------------------------------------------------------
    def prepare(self) -> None:
        """Check that every step can train, then record the configuration. Nothing is written
        before the checks pass, and a run folder in which no step completed takes the new
        options: a failed start never blocks the retry."""
        for step in range(self.scenario.num_steps):
            if not self.data.train_ids(step):
                names = ", ".join(f"{c} {self.data.spec.class_names[c]}" for c in self.scenario.steps[step])
                where = self.data.datasets[step].source if self.base.dataset == "custom" else self.base.root
                raise ReminderError(f"step {step} ({names}) has no training image in {where}: "
                                    f"the dataset lacks classes this "
                                    f"{'step' if self.base.dataset == 'custom' else 'setting'} needs")
            config = self.base.for_step(step)
            per_rank = config.batch_size // self.dist.world_size
            if per_rank < 2 and not config.freeze_bn:
                raise ReminderError(f"batch size {config.batch_size} over {self.dist.world_size} process(es) "
                                    f"leaves {per_rank} image per batch; batch norm needs 2 (or use `freeze_bn`)")
        if self.base.dataset == "custom":
            for step in range(self.scenario.num_steps):
                missing = self.data.missing_val_classes(step)
                if missing:
                    self.log(f"warning: the val images of step {step} hold no pixel of {', '.join(missing)}; "
                             f"their IoU cannot be measured (add val images with them)")
        path = self.out / "config.json"
        if path.is_file():
            check_completed_steps(load_config(self.out), self.base, completed_steps(self.out))
        if self.dist.is_main:
            atomic_write_text(path, json.dumps(self.base.to_json(), indent=2))
        self.dist.barrier()

    def step_dir(self, step: int) -> Path:
        return self.out / f"step{step}"

    def is_complete(self, step: int) -> bool:
        return (self.step_dir(step) / "metrics.json").is_file()

    def meta(self, step: int) -> dict:
        names = self.data.spec.class_names
        ids = [0] + list(self.scenario.order[: self.scenario.num_seen(step) - 1])
        colors = self.data.colors if self.base.dataset == "custom" else voc_palette()
        meta = {"dataset": self.base.dataset, "setting": self.base.setting, "step": step,
                "method": self.base.for_step(step).method, "order": list(self.scenario.order),
                "classes": [names[c] for c in ids], "colors": [list(colors[c]) for c in ids]}
        if self.base.dataset == "custom":
            meta["data"] = self.base.data[step]
        return meta

    # -- one step ---------------------------------------------------------------------
    def train_loader(self, step: int) -> DataLoader:
        transform = train_transform(self.config.crop_size, scale=self.config.crop_scale, mode=self.config.crop_mode)
        return make_loader(self.data.train_dataset(step, transform), batch_size=self.config.batch_size,
                           train=True, seed=seed_everything(self.config.seed, step), config=self.config,
                           dist=self.dist, device=self.device)

    def plain_loader(self, dataset) -> DataLoader:
        return make_loader(dataset, batch_size=self.config.eval_batch_size * self.dist.world_size, train=False,
                           seed=0, config=self.config, dist=self.dist, device=self.device)

    def run_step(self, step: int) -> dict:
        self.enter(step)
        config, scenario = self.config, self.scenario
        started = time.perf_counter()
        seed_everything(config.seed, step)
        step_dir = self.step_dir(step)
        num_old = scenario.num_seen(step - 1) if step > 0 else 0
        stats: dict = {}
        if step == 0 and config.from_step0:
            self._import_step0(Path(config.from_step0))
        else:
            state = StepState(step=step, num_old=num_old)
            if step == 0:
                model = build_segmenter(config.backbone, num_classes=scenario.classes_per_step()[0],
                                        weights_backbone=config.weights_backbone, head=config.head,
                                        output_stride=config.output_stride,
                                        outputs=self.method.outputs).to(self.device)
            else:  # a previous step with the other outputs is converted, its predictions unchanged
                model = load_model(self.step_dir(step - 1), self.device)[0].convert_outputs(self.method.outputs)
                if self.method.needs_teacher_outputs or self.method.fisher:  # EWC anchors on its weights
                    state.teacher = freeze(copy.deepcopy(model))  # the previous step, loaded once
                model.add_classes(scenario.classes_per_step()[step], init=self.method.head_init)
            stats = self._train(model, state)
            if self.dist.is_main:
                save_model(step_dir, model, self.meta(step))
            self.dist.barrier()
        model, _ = load_model(step_dir, self.device)  # the final weights, as a resumed run sees them
        self._store_statistics(model, step)
        test_loader = self.plain_loader(self.data.test_dataset(step, eval_transform(config.eval_size)))
        matrix = confusion_matrix(model, test_loader,
                                  scenario.num_seen(step), device=self.device, reduce=self.dist.reduce,
                                  progress=self.progress and self.dist.is_main)
        metrics = step_metrics(matrix, scenario, step, self.data.spec.class_names)
        metrics.update({"step": step, "num_seen": scenario.num_seen(step),
                        "classes": [self.data.spec.class_names[c] for c in scenario.steps[step]],
                        "train_images": len(self.data.train_ids(step)), "test_images": len(self.data.test_ids(step)),
                        "seconds": round(time.perf_counter() - started, 1), "train": stats,
                        "confusion": matrix.matrix.tolist()})
        if self.dist.is_main:
            metrics["sha256"] = step_file_hashes(step_dir)  # checked whenever the step is loaded again
            atomic_write_text(step_dir / "metrics.json", json.dumps(metrics))
        self.dist.barrier()
        return metrics

    def _train(self, model, state: StepState) -> dict:
        config, step = self.config, state.step
        method = self.method if step > 0 else step0_method(self.method)
        loader = self.train_loader(step)
        state.class_weights = step_class_weights(loader.dataset, self.scenario.num_seen(step), config.class_weights,
                                                 self.device)
        if method.pseudo_labels:
            state.thresholds = compute_thresholds(state.teacher, loader, device=self.device, bins=config.pseudo_bins,
                                                  floor=config.pseudo_floor, num_all=self.scenario.num_seen(step),
                                                  mode=config.pseudo_thresholds, reduce=self.dist.reduce,
                                                  progress=self.progress and self.dist.is_main)
        if method.prototypes:
            bank = load_prototypes(self.step_dir(step - 1) / "prototypes.safetensors")
            state.old_prototypes = bank["prototypes"][: state.num_old].to(self.device)
        if method.fisher:
            fisher_path = self.step_dir(step - 1) / "fisher.safetensors"
            state.fisher = load_tensors(fisher_path, self.device) if fisher_path.is_file() else None
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        trained = model
        if self.dist.enabled:
            if config.sync_bn:
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            trained = torch.nn.parallel.DistributedDataParallel(ForwardFeatures(model), device_ids=ids)
        epochs = config.epochs if step == 0 else config.epochs_next
        lr = config.lr if step == 0 else config.lr_next
        history = None
        if self.dist.is_main:
            history = History(self.step_dir(step), step, tensorboard=config.tensorboard, wandb=config.wandb,
                               run_name=self.out.name)
        try:
            stats = train_increment(trained, method, loader, state, config=config, device=self.device,
                                    dist=self.dist, epochs=epochs, lr=lr, progress=self.progress, history=history,
                                    validate=self._validator(step) if config.eval_every else None,
                                    log=self.log if self.dist.is_main else None)
            weights = state.class_weights
            return stats | ({"class_weights": [round(float(w), 4) for w in weights]} if weights is not None else {})
        finally:
            if history is not None:
                history.close()

    def _validator(self, step: int):
        """mIoU of the seen classes on the step's evaluation images (the val set, or the carved
        validation share), for the history's per-epoch rows."""
        loader = self.plain_loader(self.data.test_dataset(step, eval_transform(self.config.eval_size)))

        def validate(model) -> float:
            matrix = confusion_matrix(model, loader, self.scenario.num_seen(step), device=self.device,
                                      reduce=self.dist.reduce)
            return step_metrics(matrix, self.scenario, step, self.data.spec.class_names)["all"]
        return validate

    def _store_statistics(self, model, step: int) -> None:
        """Prototypes of the step's classes (and the Fisher for EWC), kept with the checkpoint."""
        scenario, step_dir = self.scenario, self.step_dir(step)
        loader = self.plain_loader(self.data.train_dataset(step, eval_transform(self.config.crop_size)))
        first = scenario.num_seen(step - 1) if step > 0 else 0
        classes = list(range(first, scenario.num_seen(step)))
        prototypes, counts = compute_prototypes(model, loader, classes, device=self.device, reduce=self.dist.reduce,
                                                progress=self.progress and self.dist.is_main)
        previous = load_prototypes(self.step_dir(step - 1) / "prototypes.safetensors") if step > 0 else None
        bank = merge_prototypes(previous, classes, prototypes, counts, scenario.num_seen(step))
        fisher = None
        if self.method.fisher:
            fisher = estimate_fisher(model, self.train_loader(step), device=self.device, reduce=self.dist.reduce,
                                     max_batches=min(50, self.config.max_iterations or 50))
        if self.dist.is_main:
            save_prototypes(step_dir / "prototypes.safetensors", bank)
            if fisher is not None:
                save_tensors(step_dir / "fisher.safetensors", fisher)
        self.dist.barrier()

    def _import_step0(self, source: Path) -> None:
        """Reuse a trained step-0 model (``--from-step0``), as the paper does across settings."""
        step_dir = source if source.is_dir() else source.parent
        meta = read_meta(step_dir)
        expected = self.meta(0)
        check_compatible(meta, {"backbone": self.config.backbone, "dataset": self.config.dataset,
                                "classes_per_step": [self.scenario.classes_per_step()[0]],
                                "classes": expected["classes"]}, step_dir)
        model, _ = load_model(step_dir, self.device)
        if self.dist.is_main:
            save_model(self.step_dir(0), model, {**expected, "imported_from": str(step_dir)})
        self.dist.barrier()

    # -- whole scenario ---------------------------------------------------------------
    def run(self) -> dict:
        """Every step, the main process holding the run folder's lock (other ranks follow it)."""
        with folder_lock(self.out, what="run", log=self.log) if self.dist.is_main else contextlib.nullcontext():
            return self._run()

    def _run(self) -> dict:
        self.prepare()
        if self.device.type == "cpu" and (warning := busy_warning()):
            self.log(warning)
        for step in range(self.scenario.num_steps):
            self.enter(step)
            if self.is_complete(step):
                self.log(f"step {step}: complete in {self.step_dir(step)}, skipped")
            else:
                metrics = self.run_step(step)
                self.log(f"step {step}: " + _summary(metrics) + f" ({metrics['seconds']} s)")
                for line in per_class_report(metrics):
                    self.log(line)
                if self.dist.is_main:
                    write_results(self.out)
            if self.on_step is not None and self.dist.is_main:
                self.on_step(self.out, step)
        if self.dist.is_main:
            write_results(self.out)
        return read_results(self.out)


def load_run_data(config: TrainConfig, *, cache_dir, progress: bool = False, data=None):
    """The images and labels of a run: a benchmark dataset and setting, or one YAML per step
    (``data`` replaces the run's YAMLs, e.g. to score on other val sets)."""
    if config.dataset == "custom":
        from reminder.data.increments import load_increments

        return load_increments(data or config.data, mode=config.mode, test_protocol=config.test_protocol,
                               cache_dir=cache_dir, validation=config.validation, progress=progress,
                               holdouts=[config.for_step(t).holdout for t in range(len(config.data))])
    return load_scenario(config.dataset, config.root, config.setting, mode=config.mode, order=config.order,
                         test_protocol=config.test_protocol, other_as_background=config.other_as_background,
                         cache_dir=cache_dir, validation=config.validation, progress=progress)


def check_completed_steps(saved: TrainConfig, current: TrainConfig, done: list[int]) -> None:
    """A run folder may take new options only for the steps it has not completed."""
    if not done:
        return  # nothing trained yet: the new options simply apply
    check_resume(saved, current)
    for step in done:
        if step < len(current.data):
            if saved.data[step:step + 1] != current.data[step:step + 1]:
                raise ReminderError(f"step {step} of {current.out} was trained on "
                                    f"{(saved.data[step:step + 1] or ['?'])[0]}, not {current.data[step]}")
            if step and saved.for_step(step) != current.for_step(step):
                raise ReminderError(f"step {step} of {current.out} is complete with other options; use another "
                                    f"`out`, or the options it was trained with")


def _summary(metrics: dict) -> str:
    def pct(value):
        return "-" if value is None or value != value else f"{100 * value:.1f}"
    return f"old {pct(metrics['old'])}  new {pct(metrics['new'])}  all {pct(metrics['all'])}"


def train_scenario(config: TrainConfig, *, progress: bool = True, log: Callable[[str], None] = print,
                   on_step: Callable[[Path, int], object] | None = None) -> dict:
    """Train every step of ``config`` (skipping complete ones) and return ``results.json``.

    ``on_step(run_folder, step)`` is called on the main process after each step, complete
    or skipped: the exporter's :func:`reminder.export.exporter.each_step_exporter` for
    ``config.export_each_step`` (training never imports the exporter itself).
    """
    if config.export_each_step and on_step is None:
        raise ReminderError(f"export_each_step={config.export_each_step!r} needs on_step: pass "
                            f"on_step=reminder.export.exporter.each_step_exporter(config.export_each_step)")
    return ScenarioRunner(config, progress=progress, log=log, on_step=on_step).run()


def evaluate_run(run: str | Path, *, step: int | None = None, data=None, progress: bool = True,
                 log: Callable[[str], None] = print) -> list[dict]:
    """Re-evaluate the saved checkpoints of a run (all complete steps, or one). ``data``: for
    a run on your own data, the YAMLs whose val sets (together) score every step, in place
    of the run's own."""
    run = Path(run)
    config = load_config(run)
    if data and config.dataset != "custom":
        raise ReminderError(f"{run} is a benchmark run ({config.dataset}); `data` scores runs on your own data")
    runner = ScenarioRunner(config, progress=progress, log=log)
    steps = range(runner.scenario.num_steps) if step is None else [step]
    out = []
    for t in steps:
        if not (runner.step_dir(t) / "model.safetensors").is_file():
            if step is not None:
                raise ReminderError(f"step {t} of {run} has no checkpoint")
            break
        model, _ = load_model(runner.step_dir(t), runner.device)
        transform = eval_transform(runner.config.eval_size)
        if data:
            from reminder.data.increments import union_val_dataset

            dataset = union_val_dataset(data, runner.data.spec.class_names, runner.scenario.num_seen(t), transform)
        else:
            dataset = runner.data.test_dataset(t, transform)
        matrix = confusion_matrix(model, runner.plain_loader(dataset), runner.scenario.num_seen(t),
                                  device=runner.device, progress=progress)
        metrics = {"step": t, **step_metrics(matrix, runner.scenario, t, runner.data.spec.class_names)}
        log(f"step {t}: " + _summary(metrics))
        for line in per_class_report(metrics):
            log(line)
        out.append(metrics)
    return out
