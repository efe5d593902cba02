"""CPU threads for training, evaluation and updates (``--threads``).

torch's default is one thread per logical CPU. On a busy machine that is the slow choice:
a user's 2-core machine shared with another job measured 2.1-4.5 s per iteration with the
default threads, and 0.6 s with one thread. The default here is the physical cores, and a warning
names ``--threads`` when the machine is already busy as the work starts.
"""

from __future__ import annotations

import os
from pathlib import Path


def _allowed_cpus() -> set[int]:
    """The logical CPUs this process may run on."""
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def physical_cores() -> int:
    """Physical cores this process may use: distinct (package, core) pairs of the CPUs in its
    affinity mask, from /proc/cpuinfo; the CPU count where that cannot be read."""
    allowed = _allowed_cpus()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return max(1, len(allowed))
    cores, entry = set(), {}
    for line in text.splitlines() + [""]:
        if not line.strip():
            if entry.get("processor") is not None and int(entry["processor"]) in allowed:
                cores.add((entry.get("physical id", "0"), entry.get("core id", entry["processor"])))
            entry = {}
            continue
        key, _, value = line.partition(":")
        entry[key.strip()] = value.strip()
    return max(1, len(cores) or len(allowed))


def set_threads(threads: int | None) -> int:
    """Use ``threads`` CPU threads in torch (default: the physical cores); returns the number."""
    import torch

    if threads is not None and threads < 1:
        from reminder.errors import ReminderError

        raise ReminderError(f"threads must be at least 1, got {threads}")
    count = threads or physical_cores()
    torch.set_num_threads(count)
    return count


def busy_warning() -> str | None:
    """A warning naming ``--threads`` when the machine's load already exceeds its CPUs as
    training starts (said once the inputs are checked, never in place of their errors)."""
    import torch

    cpus = len(_allowed_cpus())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    threads = torch.get_num_threads()
    if load <= cpus or threads == 1:
        return None
    return (f"WARNING: this machine is busy (load {load:.1f} on {cpus} CPUs): with {threads} torch threads each "
            f"iteration may take several times longer; `threads` 1 can be faster (docs/own-data.md, 'Threads')")


# Seconds per megapixel of a training batch (batch x crop x crop) at step 0, measured with
# 2 torch threads on this project's 2-core CI machine (docs/benchmarks.md, "Training step
# speed", and the heads' measurements in docs/training.md); resnet50 is estimated between.
EXPECTED_SECONDS_PER_MEGAPIXEL = {
    ("tiny", "deeplabv3"): 0.55, ("tiny", "deeplabv3plus"): 1.5,
    ("mobilenet_v3_large", "deeplabv3"): 2.5, ("mobilenet_v3_large", "deeplabv3plus"): 3.5,
    ("resnet50", "deeplabv3"): 6.0, ("resnet50", "deeplabv3plus"): 7.0,
    ("resnet101", "deeplabv3"): 9.2, ("resnet101", "deeplabv3plus"): 10.2,
}
SLOW_FACTOR = 4.0  # slower than this many times the expectation: the machine is busy, or threads fight


def expected_iteration_seconds(config, *, teacher: bool, threads: int) -> float | None:
    """What one CPU training iteration of ``config`` should take with ``threads`` threads
    (None: no measurement for its backbone and head)."""
    per_megapixel = EXPECTED_SECONDS_PER_MEGAPIXEL.get((config.backbone, config.head))
    if per_megapixel is None:
        return None
    seconds = per_megapixel * config.batch_size * config.crop_size ** 2 / 1e6
    seconds *= (2.0 if config.output_stride == 8 else 1.0) * (1.4 if teacher else 1.0)
    return seconds * (2 / max(1, threads)) ** 0.8  # more threads help less than linearly


def slow_warning(seconds: float, config, *, teacher: bool) -> str | None:
    """A one-line warning when CPU iterations take far longer than measured for the backbone,
    head and sizes, naming --threads; None otherwise."""
    import torch

    threads = torch.get_num_threads()
    expected = expected_iteration_seconds(config, teacher=teacher, threads=threads)
    if expected is None or seconds < SLOW_FACTOR * expected:
        return None
    return (f"WARNING: training iterations take {seconds:.2f} s, {seconds / expected:.0f}x what {config.backbone} "
            f"({config.head}, batch {config.batch_size}, crop {config.crop_size}) takes on a quiet 2-core machine "
            f"with {threads} threads ({expected:.2f} s): another job may share these cores; `threads` 1 (or fewer "
            f"`workers`) often runs several times faster on a busy machine")
