"""On-device incremental update: a bundle learns new classes from a few labelled frames.

The bundle's model is the frozen teacher; the student is a copy with the new classes added
(MiB initialisation). Training uses REMINDER's losses on the given frames alone (no old
data): cross-entropy on PLOP's entropy pseudo-labels, local POD, and CSW-KD with the
bundle's stored prototypes. Afterwards the new classes' prototypes are computed and stored,
the quality is measured (new-class IoU on held-out frames, old-class agreement with the
parent), and the model is exported to the parent's formats into a new bundle whose lineage
points at the parent. The parent is never modified.

Masks (same file stem as their image, PNG): palette and RGB masks are read by colour
(the bundle's class colours and the new classes' colours; VOC's void colour and index 255
are ignored; any other colour is background); grey masks hold class ids in the new
bundle's numbering (old ids, then the new classes in the order given, 255 ignored).

This module imports torch: it runs where PyTorch is installed (JetPack ships it).
"""

from __future__ import annotations

import copy
import math
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from reminder.data.classes import VOC_CLASSES, voc_palette
from reminder.errors import ReminderError
from reminder.export.bundle import manifest_sha256, open_bundle
from reminder.runtime.sources import IMAGE_EXTENSIONS

VOID_COLOR = (224, 224, 192)  # VOC's "difficult / void" colour (palette index 255)


@dataclass(frozen=True)
class NewClass:
    name: str
    color: tuple[int, int, int] | None = None  # default: VOC's colour for a VOC name, else a free one


def parse_class(text: str) -> NewClass:
    """``NAME`` or ``NAME:R,G,B``."""
    name, _, color = text.partition(":")
    name = name.strip()
    if not name:
        raise ReminderError(f"--class {text!r} has no name")
    if not color:
        return NewClass(name)
    try:
        rgb = tuple(int(v) for v in color.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise ReminderError(f"--class {text!r}: the colour must be R,G,B with values 0..255")
    return NewClass(name, rgb)


@dataclass(frozen=True)
class UpdateOptions:
    """What bounds an update on a device."""

    iterations: int = 300
    time_budget: float | None = None     # seconds of training; stops early when reached
    batch_size: int = 4
    crop_size: int | None = None         # default: the bundle's input size, at most 512
    lr: float | None = None              # default: 0.01 with a frozen backbone, else 0.001
    clip_norm: float | None = 5.0        # gradient norm cap: few frames and frozen batch norm diverge easily
    freeze_backbone: bool = False        # train the ASPP and the head only
    csw_kd: bool = True                  # False: pseudo-labels + local POD only (PLOP's losses)
    holdout: float = 0.25                # share of the frames kept out of training for the IoU
    agreement_confidence: float = 0.9    # parent confidence above which old-class pixels are compared
    device: str = "auto"
    amp: str = "auto"                    # auto: bf16 on CUDA, none on CPU
    seed: int = 0
    formats: tuple[str, ...] | None = None  # default: the parent's
    version: str | None = None
    workers: int = 0


@dataclass
class UpdateResult:
    bundle: Path
    report: dict = field(default_factory=dict)


@dataclass
class _Frame:
    name: str
    image: np.ndarray   # (H, W, 3) uint8 RGB
    labels: np.ndarray  # (H, W) uint8, new numbering, 255 ignored


# -- the bundle's model ------------------------------------------------------------------

def load_bundle_model(folder: Path, manifest: dict, device: torch.device):
    """The segmenter of a bundle, from its safetensors checkpoint."""
    from reminder.models import build_segmenter
    from reminder.train.checkpoint import load_tensors

    if "checkpoint.safetensors" not in manifest.get("files", {}):
        raise ReminderError(f"bundle {folder} has no checkpoint.safetensors: it was exported for inference only, "
                            f"and an update needs the weights (export the run again; bundles include them)")
    model_info = manifest.get("model") or {}
    model = build_segmenter(model_info["backbone"], num_classes=list(model_info["classes_per_step"]))
    try:
        model.load_state_dict(load_tensors(folder / "checkpoint.safetensors"))
    except RuntimeError as error:
        raise ReminderError(f"checkpoint of bundle {folder} does not match its manifest: "
                            f"{str(error).splitlines()[0]}") from None
    return model.to(device)


def _load_prototypes(folder: Path, manifest: dict, num_old: int, *, required: bool) -> dict | None:
    """The bundle's prototype bank; ``None`` when it has none and CSW-KD does not need it."""
    from reminder.train.prototypes import load_prototypes

    if "prototypes.safetensors" not in manifest.get("files", {}):
        if not required:
            return None
        raise ReminderError(f"bundle {folder} has no prototypes.safetensors, which CSW-KD needs "
                            f"(or update with csw_kd off)")
    bank = load_prototypes(folder / "prototypes.safetensors")
    if bank["prototypes"].shape[0] < num_old:
        raise ReminderError(f"bundle {folder}: prototypes.safetensors has {bank['prototypes'].shape[0]} classes, "
                            f"the model has {num_old}")
    return bank


# -- frames and masks ------------------------------------------------------------------

def _class_colors(manifest: dict, new: Sequence[NewClass]) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, colour) for every class of the updated model; refuses clashes."""
    classes = [(c["name"], tuple(c["color"])) for c in manifest["classes"]]
    names = {name for name, _ in classes}
    used = {color: name for name, color in classes}
    palette = voc_palette()
    for cls in new:
        if cls.name in names:
            raise ReminderError(f"class {cls.name!r} already exists in the bundle; choose another name")
        color = cls.color
        if color is None and cls.name in VOC_CLASSES and tuple(palette[VOC_CLASSES.index(cls.name)]) not in used:
            color = tuple(palette[VOC_CLASSES.index(cls.name)])
        if color is None:
            color = next(tuple(c) for c in palette[1:255] if tuple(c) not in used and tuple(c) != VOID_COLOR)
        if color in used:
            raise ReminderError(f"colour {','.join(map(str, color))} of class {cls.name!r} is already used by "
                                f"{used[color]!r}; give another with --class {cls.name}:R,G,B")
        classes.append((cls.name, color))
        names.add(cls.name)
        used[color] = cls.name
    return classes


def _read_mask(path: Path, colors: list[tuple[int, int, int]], log) -> np.ndarray:
    """A mask file -> class ids in the new numbering (see the module docstring)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode in ("L", "I", "I;16"):
                ids = np.array(image)
                if ids.max(initial=0) > 255 or np.any((ids >= len(colors)) & (ids != 255)):
                    bad = int(ids[(ids >= len(colors)) & (ids != 255)].flat[0])
                    raise ReminderError(f"mask {path} has class id {bad}; the updated model has ids "
                                        f"0..{len(colors) - 1} (and 255 for ignore)")
                return ids.astype(np.uint8)
            rgb = np.array(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise ReminderError(f"cannot decode mask {path}: {error}") from None
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    labels = np.zeros(codes.shape, np.uint8)
    known = np.zeros(codes.shape, bool)
    for class_id, (r, g, b) in enumerate(colors):
        hit = codes == ((r << 16) | (g << 8) | b)
        labels[hit] = class_id
        known |= hit
    void = codes == ((VOID_COLOR[0] << 16) | (VOID_COLOR[1] << 8) | VOID_COLOR[2])
    labels[void] = 255
    unknown = int((~known & ~void).sum())
    if unknown:
        log(f"{path.name}: {unknown} pixels in colours of no known class were taken as background")
    return labels


def read_frames(images: Path, masks: Path, colors: list[tuple[int, int, int]], new_ids: Sequence[int],
                log: Callable[[str], None] = print) -> list[_Frame]:
    """Pairs of image and mask by file stem, each checked (size, values, new-class pixels)."""
    from reminder.data.samples import read_image

    images, masks = Path(images), Path(masks)
    for folder, what in ((images, "--images"), (masks, "--masks")):
        if not folder.is_dir():
            raise ReminderError(f"{what} {folder} is not a folder")
    image_files = {p.stem: p for p in sorted(images.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
    mask_files = {p.stem: p for p in sorted(masks.iterdir()) if p.suffix.lower() == ".png"}
    if not image_files:
        raise ReminderError(f"no frames: {images} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    missing = sorted(set(image_files) - set(mask_files))
    if missing:
        raise ReminderError(f"image {image_files[missing[0]]} has no mask {masks / (missing[0] + '.png')}")
    extra = sorted(set(mask_files) - set(image_files))
    if extra:
        raise ReminderError(f"mask {mask_files[extra[0]]} has no image of the same name in {images}")
    frames = []
    for stem, image_path in image_files.items():
        image = read_image(image_path)
        labels = _read_mask(mask_files[stem], colors, log)
        if labels.shape != image.shape[:2]:
            raise ReminderError(f"mask {mask_files[stem]} is {labels.shape[1]}x{labels.shape[0]} but image "
                                f"{image_path} is {image.shape[1]}x{image.shape[0]}")
        if not np.isin(labels, list(new_ids)).any():
            raise ReminderError(f"mask {mask_files[stem]} has no pixel of the new class(es); label at least "
                                f"one region of them in every frame")
        frames.append(_Frame(stem, image, labels))
    return frames


class _FrameDataset(torch.utils.data.Dataset):
    def __init__(self, frames: Sequence[_Frame], transform):
        self.frames, self.transform = list(frames), transform

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, item: int):
        from torchvision import tv_tensors

        frame = self.frames[item]
        image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(frame.image)).permute(2, 0, 1))
        mask = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(frame.labels)))
        image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long()


# -- the update ------------------------------------------------------------------------

def _peak_memory_mb(device: torch.device) -> dict:
    peak = {}
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                peak["process_rss_mb"] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    if device.type == "cuda":
        peak["cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return peak


def _out_of_memory(error: BaseException, options: UpdateOptions, crop: int) -> ReminderError:
    advice = "--freeze-backbone, " if not options.freeze_backbone else ""
    return ReminderError(f"not enough memory for batch size {options.batch_size} at crop {crop} px "
                         f"({str(error).splitlines()[0][:120]}); try {advice}a smaller --crop-size or --batch-size")


@torch.no_grad()
def _evaluate(student, teacher, frames: Sequence[_Frame], num_classes: int, new_ids: Sequence[int],
              holdout: Sequence[_Frame], names: list[str], confidence: float, device: torch.device) -> dict:
    """New-class IoU on ``holdout``; old-class agreement with the parent on ``frames``."""
    from reminder.data.transforms import eval_transform
    from reminder.train.metrics import ConfusionMatrix

    transform = eval_transform(None)
    student.eval()
    matrix = ConfusionMatrix(num_classes)
    for frame in holdout:
        image, labels = _FrameDataset([frame], transform)[0]
        matrix.update(student(image[None].to(device)).argmax(1).cpu(), labels[None])
    iou = matrix.iou()
    agree = compared = 0
    for frame in frames:
        image, labels = _FrameDataset([frame], transform)[0]
        image = image[None].to(device)
        teacher_logits = teacher(image).float()
        probabilities = teacher_logits.softmax(1)
        top, parent = probabilities.max(1)
        child = student(image).argmax(1)
        labelled_new = torch.isin(labels[None].to(device), torch.as_tensor(list(new_ids), device=device))
        mask = (parent > 0) & (top >= confidence) & ~labelled_new
        compared += int(mask.sum())
        agree += int((mask & (child == parent)).sum())
    new_iou = {names[i]: (None if math.isnan(float(iou[i])) else round(float(iou[i]), 4)) for i in new_ids}
    return {"new_iou": new_iou, "holdout_frames": len(holdout),
            "old_agreement": round(agree / compared, 4) if compared else None, "old_pixels_compared": compared,
            "agreement_confidence": confidence}


def update_bundle(bundle: str | Path, *, images: str | Path, masks: str | Path, classes: Sequence[NewClass | str],
                  out: str | Path, options: UpdateOptions = UpdateOptions(), progress: bool = True,
                  log: Callable[[str], None] = print) -> UpdateResult:
    """Teach ``bundle`` the ``classes`` from the frames in ``images`` / ``masks``; write ``out``."""
    from reminder.data.transforms import eval_transform, train_transform
    from reminder.export.exporter import write_bundle
    from reminder.export.formats import parse_formats
    from reminder.export.graph import ExportModule
    from reminder.progress import progress as progress_bar
    from reminder.train.config import TrainConfig
    from reminder.train.methods import build_method
    from reminder.train.distributed import DistContext
    from reminder.train.prototypes import compute_prototypes, merge_prototypes, save_prototypes
    from reminder.train.run import resolve_device
    from reminder.train.checkpoint import save_tensors
    from reminder.train.step import (StepState, compute_thresholds, freeze, make_optimizer, poly_lr, record_terms,
                                     set_train_mode, train_iteration)

    started = time.perf_counter()
    classes = [c if isinstance(c, NewClass) else parse_class(c) for c in classes]
    if not classes:
        raise ReminderError("no new class given (--class NAME[:R,G,B])")
    if len({c.name for c in classes}) != len(classes):
        raise ReminderError("a new class name is given twice")
    if options.iterations < 1 or options.batch_size < 1:
        raise ReminderError("iterations and batch size must be at least 1")
    if not 0 <= options.holdout < 1:
        raise ReminderError(f"holdout must be within 0..1, got {options.holdout}")
    source, out = Path(bundle), Path(out)
    folder, manifest = open_bundle(source)
    if out.resolve() == folder.resolve() or out.resolve() == source.resolve():
        raise ReminderError("--out must differ from the parent bundle, which an update never modifies")
    device = resolve_device(options.device)
    amp = options.amp if options.amp != "auto" else ("bf16" if device.type == "cuda" else "none")
    random.seed(options.seed)
    np.random.seed(options.seed)
    torch.manual_seed(options.seed)

    num_old = len(manifest["classes"])
    table = _class_colors(manifest, classes)
    names = [name for name, _ in table]
    new_ids = list(range(num_old, len(table)))
    frames = read_frames(images, masks, [color for _, color in table], new_ids, log)
    order = np.random.default_rng(options.seed).permutation(len(frames))
    count = round(len(frames) * options.holdout) if len(frames) >= 4 else 0
    holdout = [frames[i] for i in sorted(order[:count])]
    train_frames = [frames[i] for i in sorted(order[count:])]
    crop = options.crop_size or min(512, int(manifest["input"]["height"]))
    lr = options.lr or (0.01 if options.freeze_backbone else 0.001)
    log(f"update {manifest['name']} {manifest['version']}: +{', '.join(c.name for c in classes)} from "
        f"{len(train_frames)} frames ({len(holdout)} held out), crop {crop}, {options.iterations} iterations "
        f"on {device}{' with a frozen backbone' if options.freeze_backbone else ''}")

    teacher = freeze(load_bundle_model(folder, manifest, device))
    student = copy.deepcopy(teacher)
    student.requires_grad_(True)
    student.add_classes(len(classes))
    student.to(device)
    if options.freeze_backbone:
        student.backbone.requires_grad_(False)
    config = TrainConfig(dataset="device", root=str(images), setting="update", method="reminder", out=str(out),
                         batch_size=options.batch_size, crop_size=crop, lr_next=lr, amp=amp,
                         freeze_bn=True, seed=options.seed, device=str(device), workers=options.workers)
    method = build_method("reminder" if options.csw_kd else "plop", config)
    state = StepState(step=int(manifest.get("step", 0)) + 1, num_old=num_old, teacher=teacher)
    bank = _load_prototypes(folder, manifest, num_old, required=options.csw_kd)
    if options.csw_kd:
        state.old_prototypes = bank["prototypes"][:num_old].to(device)

    dataset = _FrameDataset(train_frames, train_transform(crop, scale=(0.5, 2.0)))
    generator = torch.Generator().manual_seed(options.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=min(options.batch_size, len(dataset)), shuffle=True,
                                         drop_last=False, num_workers=options.workers, generator=generator)
    plain = torch.utils.data.DataLoader(_FrameDataset(train_frames, eval_transform(None)), batch_size=1)
    try:
        state.thresholds = compute_thresholds(teacher, plain, device=device, bins=config.pseudo_bins,
                                              floor=config.pseudo_floor)
        optimizer = make_optimizer(student, lr, config)
        scaler = torch.amp.GradScaler("cuda") if amp == "fp16" and device.type == "cuda" else None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        bar = progress_bar(None, progress, total=options.iterations, desc="update", unit="it", dynamic_ncols=True)
        train_started = time.perf_counter()
        sums: dict[str, float] = {}
        iteration = 0
        stopped_by = "iterations"
        while iteration < options.iterations:
            for images_t, labels_t in loader:
                if iteration >= options.iterations:
                    break
                if options.time_budget is not None and time.perf_counter() - train_started >= options.time_budget:
                    stopped_by = "time budget"
                    break
                set_train_mode(student, freeze_bn=True)  # the parent's statistics: few frames cannot estimate new ones
                for group in optimizer.param_groups:
                    group["lr"] = poly_lr(lr, iteration, options.iterations, config.lr_power)
                terms = train_iteration(student, method, images_t, labels_t, state, optimizer, scaler,
                                        config=config, device=device, dist=DistContext(), iteration=iteration,
                                        clip_norm=options.clip_norm)
                record_terms(sums, terms, bar)
                iteration += 1
            if stopped_by == "time budget":
                break
        if bar is not None:
            bar.close()
        train_seconds = time.perf_counter() - train_started
        student.eval()
        prototypes, counts = compute_prototypes(student, plain, new_ids, device=device)
    except (torch.OutOfMemoryError, MemoryError) as error:
        raise _out_of_memory(error, options, crop) from None
    except RuntimeError as error:
        if "can't allocate memory" in str(error) or "out of memory" in str(error):
            raise _out_of_memory(error, options, crop) from None
        raise
    memory = _peak_memory_mb(device)
    quality = _evaluate(student, teacher, frames, len(table), new_ids, holdout, names,
                        options.agreement_confidence, device)
    report = {**quality, "iterations": iteration, "stopped_by": stopped_by, "train_seconds": round(train_seconds, 1),
              "seconds": round(time.perf_counter() - started, 1), "peak_memory": memory,
              "losses": {k: round(v / max(iteration, 1), 4) for k, v in sums.items()},
              "frames": len(frames), "train_frames": len(train_frames), "device": str(device), "amp": amp, "lr": lr,
              "options": {k: v for k, v in asdict(options).items() if k not in ("formats", "version")},
              "method": "reminder" if options.csw_kd else "plop (no CSW-KD)"}

    student = student.cpu().eval()
    new_bank = merge_prototypes(bank, new_ids, prototypes, counts,
                                len(table))
    parent_manifest = manifest
    manifest = _child_manifest(parent_manifest, folder, table, classes, report, options)
    formats = options.formats or [f for f in parent_manifest["artifacts"]] + list(parent_manifest.get("skipped", {}))
    with tempfile.TemporaryDirectory(prefix="reminder-update-") as tmp:
        tmp = Path(tmp)
        save_tensors(tmp / "checkpoint.safetensors", student.state_dict())
        save_prototypes(tmp / "prototypes.safetensors", new_bank)
        module = ExportModule(student, output=parent_manifest["outputs"]["kind"])
        parity_set = [f.image for f in frames[:8]]
        path = write_bundle(module, manifest, out=out, formats=parse_formats(",".join(dict.fromkeys(formats))),
                            parity_set=parity_set, files={"checkpoint.safetensors": tmp / "checkpoint.safetensors",
                                                          "prototypes.safetensors": tmp / "prototypes.safetensors"},
                            log=log)
    return UpdateResult(path, report)


def _child_manifest(parent: dict, folder: Path, table, classes, report: dict, options: UpdateOptions) -> dict:
    added = [c.name for c in classes]
    manifest = {key: copy.deepcopy(value) for key, value in parent.items()
                if key not in ("artifacts", "skipped", "files", "parity")}
    manifest.update({
        "version": options.version or f"{parent['version']}+{'+'.join(added)}",
        "step": int(parent.get("step", 0)) + 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "parent": {"version": parent["version"], "manifest_sha256": manifest_sha256(folder)},
        "classes": [{"id": i, "name": name, "color": list(color)} for i, (name, color) in enumerate(table)],
        "artifacts": {}, "skipped": {}, "files": {}, "parity": {},
        "metrics": {"new_iou": report["new_iou"], "old_agreement": report["old_agreement"]},
        "update": report,
    })
    model = dict(manifest.get("model") or {})
    model["classes_per_step"] = list(model.get("classes_per_step", [])) + [len(classes)]
    model["method"] = f"{report['method']}, on device"
    manifest["model"] = model
    return manifest


def format_report(report: dict) -> str:
    """The on-screen quality report."""
    lines = []
    for name, value in report["new_iou"].items():
        shown = "not measured (no held-out frame)" if value is None or not report["holdout_frames"] \
            else f"{100 * value:.1f}% on {report['holdout_frames']} held-out frames"
        lines.append(f"new class {name}: IoU {shown}")
    agreement = report["old_agreement"]
    lines.append("old classes: " + ("no confident old-class pixel to compare" if agreement is None else
                                    f"{100 * agreement:.1f}% of {report['old_pixels_compared']} pixels the parent "
                                    f"labels with confidence >= {report['agreement_confidence']} keep their label"))
    memory = report["peak_memory"]
    lines.append(f"{report['iterations']} iterations ({report['stopped_by']}) in {report['train_seconds']} s; "
                 f"peak memory " + ", ".join(f"{k} {v}" for k, v in memory.items()))
    return "\n".join(lines)
