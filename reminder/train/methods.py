"""Methods as compositions of named loss terms.

A :class:`Method` lists its terms for the steps after step 0 (step 0 is plain
cross-entropy for every method). Each term reads what it needs from a
:class:`StepInputs` and returns a scalar; the step sums ``weight * term`` and reports every
term by name. Weights are the reference ones (docs/training.md) via the config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from reminder.models.segmenter import SegmenterOutput
from reminder.train import dkd as D
from reminder.train import losses as L
from reminder.train.config import TrainConfig


@dataclass
class StepInputs:
    """One batch of step t, with the student's and the frozen teacher's outputs."""

    images: torch.Tensor  # (B, 3, H, W)
    labels: torch.Tensor  # (B, H, W) training labels of the step
    student: SegmenterOutput
    teacher: SegmenterOutput | None
    num_old: int  # channels of the teacher (background included)
    num_seen: int  # channels of the student
    thresholds: torch.Tensor | None = None  # (num_old,) pseudo-label thresholds
    old_prototypes: torch.Tensor | None = None  # (num_old, C)
    ewc: dict | None = None  # {"anchors", "fisher", "parameters"}
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None  # sum across ranks (DDP)
    pseudo_mode: str = "reference"  # the pseudo-label uncertainty scale (config.pseudo_thresholds)
    class_weights: torch.Tensor | None = None  # (K,) of the CE terms (train/balance.py); None: unweighted
    cache: dict = field(default_factory=dict)

    @property
    def teacher_logits(self) -> torch.Tensor:
        """The teacher's logits at label size (computed once per batch)."""
        if "teacher_logits" not in self.cache:
            lowres = self.teacher.lowres_logits
            self.cache["teacher_logits"] = torch.nn.functional.interpolate(
                lowres, size=self.labels.shape[-2:], mode="bilinear", align_corners=False).float()
        return self.cache["teacher_logits"]

    def pseudo_labelled(self) -> tuple[torch.Tensor, torch.Tensor]:
        if "pseudo" not in self.cache:
            self.cache["pseudo"] = L.entropy_pseudo_labels(self.labels, self.teacher_logits, self.thresholds,
                                                           num_all=self.num_seen, mode=self.pseudo_mode)
        return self.cache["pseudo"]


@dataclass(frozen=True)
class Term:
    name: str
    weight: float
    compute: Callable[[StepInputs], torch.Tensor]
    uses_teacher: bool = True  # reads the teacher's outputs (so the teacher must run)


@dataclass(frozen=True)
class Method:
    name: str
    terms: tuple[Term, ...]
    pseudo_labels: bool = False  # needs entropy thresholds before the step
    prototypes: bool = False  # needs old prototypes
    fisher: bool = False  # needs the Fisher information of the previous step
    single_step: bool = False  # all classes at once (joint)
    outputs: str = "softmax"  # the model's outputs: softmax, or one sigmoid per class (DKD)
    head_init: str = "mib"  # how a step's new classes start (IncrementalClassifier.add_classes)
    freeze_bn: bool = False  # batch norm keeps its statistics after step 0
    step0: "Method | None" = None  # step 0's terms (None: plain cross-entropy)

    @property
    def needs_teacher_outputs(self) -> bool:
        return self.pseudo_labels or any(term.uses_teacher for term in self.terms)


def _ce(x: StepInputs) -> torch.Tensor:
    return L.cross_entropy(x.student.logits.float(), x.labels, class_weights=x.class_weights)


def _pseudo_ce(x: StepInputs) -> torch.Tensor:
    labels, weights = x.pseudo_labelled()
    return L.cross_entropy(x.student.logits.float(), labels, image_weights=weights, class_weights=x.class_weights)


def _unce(x: StepInputs) -> torch.Tensor:
    return L.unbiased_cross_entropy(x.student.logits.float(), x.labels, num_old=x.num_old,
                                    class_weights=x.class_weights)


def _pod(config: TrainConfig) -> Callable[[StepInputs], torch.Tensor]:
    """Local POD on the backbone stages, the ASPP output (the pre-classifier features) and
    the low-resolution logits: six layers on ResNet, as the reference distils."""
    def compute(x: StepInputs) -> torch.Tensor:
        old = list(x.teacher.stages) + [x.teacher.features, x.teacher.lowres_logits]
        new = list(x.student.stages) + [x.student.features, L.fold_new_logits(x.student.lowres_logits, x.num_old)]
        weights = [config.pod_factor] * (len(x.student.stages) + 1) + [config.pod_logits_factor]
        schedule = math.sqrt(x.num_seen / (x.num_seen - x.num_old))
        return schedule * L.local_pod(old, new, scales=config.pod_scales, layer_weights=weights)
    return compute


def _csw(config: TrainConfig) -> Callable[[StepInputs], torch.Tensor]:
    def compute(x: StepInputs) -> torch.Tensor:
        return L.csw_kd(x.student.logits, x.teacher_logits, x.labels, x.student.features, x.old_prototypes,
                        temperature=config.csw_temperature, delta=config.csw_delta, reduce=x.reduce)
    return compute


def _kd(class_reduction: str) -> Callable[[StepInputs], torch.Tensor]:
    return lambda x: L.knowledge_distillation(x.student.logits.float(), x.teacher_logits,
                                              class_reduction=class_reduction)


def _unkd(x: StepInputs) -> torch.Tensor:
    return L.unbiased_kd(x.student.logits.float(), x.teacher_logits, num_old=x.num_old)


def _lwf(x: StepInputs) -> torch.Tensor:
    return L.lwf_mc_distillation(x.student.logits.float(), x.teacher_logits)


def _encoder_mse(x: StepInputs) -> torch.Tensor:
    return L.feature_mse(x.teacher.stages[-1].float(), x.student.stages[-1].float())


def _ewc(x: StepInputs) -> torch.Tensor:
    return L.ewc_penalty(x.ewc["parameters"], x.ewc["anchors"], x.ewc["fisher"])


def _mbce(pos_weight: float, *, step0: bool = False) -> Callable[[StepInputs], torch.Tensor]:
    def compute(x: StepInputs) -> torch.Tensor:
        return D.multilabel_bce(x.student.logits.float(), x.labels, first=1 if step0 else x.num_old,
                                pos_weight=pos_weight)
    return compute


def _sigmoid_kd(x: StepInputs) -> torch.Tensor:
    return D.sigmoid_kd(x.student.logits.float(), x.teacher_logits, num_old=x.num_old)


def _regulator(index: int) -> Callable[[StepInputs], torch.Tensor]:
    def compute(x: StepInputs) -> torch.Tensor:
        if "regulators" not in x.cache:
            x.cache["regulators"] = D.decomposed_kd(x.student.features, x.student.weight, x.teacher.features,
                                                    x.teacher.weight, num_old=x.num_old)
        return x.cache["regulators"][index]
    return compute


def _aux(x: StepInputs) -> torch.Tensor:
    return D.auxiliary_negative(x.student.lowres_logits[:, :1].float())


def _csw_sigmoid(config: TrainConfig) -> Callable[[StepInputs], torch.Tensor]:
    def compute(x: StepInputs) -> torch.Tensor:
        return D.csw_sigmoid_kd(x.student.logits, x.teacher_logits, x.labels, x.student.features, x.old_prototypes,
                                temperature=config.csw_temperature, delta=config.csw_delta, reduce=x.reduce)
    return compute


def _dkd_methods(config: TrainConfig) -> dict[str, Method]:
    """DKD (and DKD with CSW-KD): per-class sigmoid outputs, docs/training.md "DKD"."""
    aux = Term("ac", config.dkd_ac_weight, _aux, uses_teacher=False)
    step0 = Method("dkd-step0", (Term("mbce", 1.0, _mbce(config.bce_pos_weight_step0, step0=True),
                                      uses_teacher=False), aux), outputs="sigmoid")
    terms = (Term("mbce", 1.0, _mbce(config.bce_pos_weight), uses_teacher=False),
             Term("kd", config.dkd_kd_weight, _sigmoid_kd),
             Term("dkd_pos", config.dkd_regulator_weight, _regulator(0)),
             Term("dkd_neg", config.dkd_regulator_weight, _regulator(1)), aux)
    like = {"outputs": "sigmoid", "head_init": "aux", "freeze_bn": True, "step0": step0}
    return {"dkd": Method("dkd", terms, **like),
            "dkd+csw": Method("dkd+csw", terms + (Term("csw_kd", config.csw_weight, _csw_sigmoid(config)),),
                              prototypes=True, **like)}


def step0_method(method: Method) -> Method:
    """The terms of step 0 for a run of ``method``."""
    return method.step0 or STEP0_METHOD


def build_method(name: str, config: TrainConfig) -> Method:
    """The method ``name`` with the loss weights of ``config``."""
    ce = Term("ce", 1.0, _ce, uses_teacher=False)
    plop_terms = (Term("ce", 1.0, _pseudo_ce), Term("pod", 1.0, _pod(config)))
    plop_like = {"pseudo_labels": True}
    table = {
        "finetune": Method("finetune", (ce,)),
        "joint": Method("joint", (ce,), single_step=True),
        "ewc": Method("ewc", (ce, Term("ewc", config.ewc_weight, _ewc, uses_teacher=False)), fisher=True),
        "lwf-mc": Method("lwf-mc", (ce, Term("lwf_mc", config.lwf_weight, _lwf))),
        "ilt": Method("ilt", (ce, Term("kd", config.ilt_kd_weight, _kd("mean")),
                              Term("encoder_mse", config.ilt_feature_weight, _encoder_mse))),
        "mib": Method("mib", (Term("unce", 1.0, _unce), Term("unkd", config.mib_kd_weight, _unkd))),
        "plop": Method("plop", plop_terms, **plop_like),
        "reminder": Method("reminder", plop_terms + (Term("csw_kd", config.csw_weight, _csw(config)),),
                           prototypes=True, **plop_like),
        # Table 5 ablations: REMINDER's output distillation replaced by KD or UNKD
        "reminder-kd": Method("reminder-kd", plop_terms + (Term("kd", config.ablation_kd_weight, _kd("sum")),),
                              **plop_like),
        "reminder-unkd": Method("reminder-unkd", plop_terms + (Term("unkd", config.ablation_kd_weight, _unkd),),
                                **plop_like),
    } | _dkd_methods(config)
    return table[name]


METHOD_NAMES = ("finetune", "joint", "ewc", "lwf-mc", "ilt", "mib", "plop", "reminder",
                "reminder-kd", "reminder-unkd", "dkd", "dkd+csw")
STEP0_METHOD = Method("step0", (Term("ce", 1.0, _ce, uses_teacher=False),))
