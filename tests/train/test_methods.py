import pytest
import torch

from reminder.train.config import resolve_config
from reminder.train.methods import METHOD_NAMES, STEP0_METHOD, build_method


def test_methods_declare_what_they_need():
    config = resolve_config(dataset="voc", root=".", setting="15-1", method="reminder", out=".")
    needs_teacher = {name: build_method(name, config).needs_teacher_outputs for name in METHOD_NAMES}
    assert {n for n, needed in needs_teacher.items() if not needed} == {"finetune", "joint", "ewc"}
    assert not STEP0_METHOD.needs_teacher_outputs
    reminder = build_method("reminder", config)
    assert reminder.pseudo_labels and reminder.prototypes
    assert [(t.name, t.weight) for t in reminder.terms] == [("ce", 1.0), ("pod", 1.0), ("csw_kd", 0.5)]
    assert [(t.name, t.weight) for t in build_method("mib", config).terms] == [("unce", 1.0), ("unkd", 10.0)]
    assert build_method("ewc", config).fisher and build_method("joint", config).single_step


def test_presets_follow_the_paper_and_options_override_them():
    voc = resolve_config(dataset="voc", root=".", setting="15-1", method="plop", out=".")
    assert (voc.lr, voc.epochs, voc.lr_next, voc.epochs_next, voc.batch_size) == (0.01, 30, 0.001, 30, 24)
    assert resolve_config(dataset="voc", root=".", setting="15-1", method="reminder", out=".").batch_size == 16
    ade = resolve_config(dataset="ade", root=".", setting="100-50", method="reminder", out=".", lr_next=0.002)
    assert (ade.pod_factor, ade.pod_logits_factor, ade.csw_delta, ade.lr_next) == (0.001, 0.00001, 1.0, 0.002)
    joint = resolve_config(dataset="voc", root=".", setting="15-1", method="joint", out=".")
    assert joint.setting == "offline"


def test_evaluation_shards_are_disjoint_and_unpadded():
    import torch

    from reminder.train.distributed import DistContext
    from reminder.train.run import make_loader

    config = resolve_config(dataset="synthvoc", root=".", setting="15-1", method="reminder", out=".", workers=0)
    dataset = list(range(7))
    seen = []
    for rank in range(2):
        loader = make_loader(dataset, batch_size=4, train=False, seed=0, config=config,
                             dist=DistContext(rank, 2, 0), device=torch.device("cpu"))
        seen += [int(i) for batch in loader for i in batch]
    assert sorted(seen) == list(range(7))  # every image once, none padded in


def test_local_pod_distils_six_layers_with_the_aspp_output():
    """The reference distils the four stages, the ASPP output (pre-logits) and the logits,
    summing the weighted terms and dividing by 6: features alone differing must count."""
    from reminder.models.segmenter import SegmenterOutput
    from reminder.train import losses as L
    from reminder.train.config import resolve_config
    from reminder.train.methods import StepInputs, build_method

    torch.manual_seed(0)
    stages = [torch.rand(2, 8, 8, 8) for _ in range(4)]
    logits = torch.rand(2, 16, 4, 4)
    teacher = SegmenterOutput(torch.rand(2, 16, 32, 32), logits, torch.rand(2, 256, 4, 4), stages)
    student_features = teacher.features + torch.rand(2, 256, 4, 4)
    student = SegmenterOutput(torch.rand(2, 17, 32, 32), torch.cat([logits, torch.zeros(2, 1, 4, 4)], 1),
                              student_features, stages)
    config = resolve_config(dataset="voc", root=".", setting="15-1", method="plop", out=".")
    pod = next(t for t in build_method("plop", config).terms if t.name == "pod")
    inputs = StepInputs(torch.zeros(2, 3, 32, 32), torch.zeros(2, 32, 32, dtype=torch.long), student, teacher,
                        num_old=16, num_seen=17)
    expected = (17 / 1) ** 0.5 * config.pod_factor * L.local_pod([teacher.features], [student_features]) / 6
    assert pod.compute(inputs).item() == pytest.approx(expected.item(), rel=1e-5)
    assert expected.item() > 0
