import json
import re

import cv2
import numpy as np
from click.testing import CliRunner

from reminder.cli import main


def test_quick_demo_end_to_end(tmp_path):
    """`reminder demo --quick`: SynthVOC, two 15-1 runs, ONNX bundles per step, the runtime on
    a video, an on-device update and a report whose numbers are the runs' results."""
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = out / "report" / "report.md"
    assert f"Report: {report}" in result.output
    text = report.read_text()
    for method in ("finetune", "reminder"):
        steps = json.loads((out / f"{method}-15-1" / "results.json").read_text())["steps"]
        assert len(steps) == 6
        final = steps[-1]
        row = re.search(rf"^\| {method} \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", text, re.M)
        assert row, text
        assert [float(v) for v in row.groups()] == [round(100 * final[k], 2) for k in ("old", "new", "all", "avg")]
    # every picture the report shows is a real image
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        image = cv2.imread(str(out / "report" / name))
        assert image is not None and image.shape[0] > 50, name
    strip = cv2.imread(str(out / "report" / "overlays.png"))
    assert strip.shape[1] == 8 * 64  # the frame, its ground truth and steps 0-5 side by side
    assert np.all(strip[-22:] == 255, axis=2).mean() > 0.5  # the legend bar: white, with colour boxes
    assert not np.all(strip[-22:] == 255)
    # one bundle per step, the runtime's outputs, and the device update with its lineage
    assert sorted(p.name for p in (out / "reminder-15-1" / "bundles").iterdir()) == [f"step{i}" for i in range(6)]
    assert len((out / "runtime" / "stats.jsonl").read_text().splitlines()) == 12
    update = json.loads((out / "device-update" / "manifest.json").read_text())
    assert update["classes"][-1]["name"] == "pottedplant" and update["parent"]["version"].endswith("step0")
    assert "## On-device update" in text and "pottedplant" in text
    status = json.loads((out / "fleet-device" / "status.json").read_text())
    assert status["installed"] == json.loads((out / "reminder-15-1" / "bundles" / "step5" / "manifest.json")
                                             .read_text())["version"]
    # an interrupted or repeated demo resumes instead of retraining
    again = CliRunner().invoke(main, ["demo", "--quick", "--out", str(out)])
    assert again.exit_code == 0 and "complete in" in again.output
