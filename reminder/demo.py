"""``reminder demo``: the embedded default (SynthVOC, setting 15-1) end to end on a CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from reminder.data.splits import format_split_table, load_scenario
from reminder.data.synthetic import write_synthvoc


def ensure_synthvoc(root: Path, *, images: int, size: int, seed: int = 0) -> Path:
    """Generate SynthVOC under ``root`` unless the same one is already there."""
    meta = root / "VOCdevkit" / "VOC2012" / "synthvoc.json"
    if meta.is_file():
        stored = json.loads(meta.read_text())
        if (stored.get("images"), stored.get("size"), stored.get("seed")) == (images, size, seed):
            return meta.parent
    return write_synthvoc(root, images=images, size=size, seed=seed, progress=True)


def run_demo(out: Path, *, images: int = 600, size: int = 128, echo: Callable[[str], None] = print) -> None:
    out = Path(out)
    data_root = out / "synthvoc"
    ensure_synthvoc(data_root, images=images, size=size)
    scenario = load_scenario("synthvoc", data_root, "15-1", cache_dir=out / "cache")
    echo(format_split_table(scenario))
    echo(f"\nSynthVOC is in {data_root}. Train this scenario with REMINDER on the CPU:\n"
         f"  reminder train --dataset synthvoc --root {data_root} --setting 15-1 --method reminder "
         f"--out {out / 'reminder-15-1'}")
