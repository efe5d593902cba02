"""`reminder compare` on the README's own-data walk-through: the warehouse's day 1, then carts."""

import json

import pytest
from click.testing import CliRunner

from reminder.cli import main
from reminder.data.warehouse import write_warehouse

NAMES = ("background", "shelf", "pallet", "forklift", "person")
QUICK = ["--max-iterations", "12", "--batch-size", "4", "--crop-size", "64", "--workers", "0", "--quiet"]


@pytest.fixture(scope="module")
def warehouse_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    day1 = write_warehouse(root / "day1", names=NAMES, train=16, val=6, size=64)
    day2 = write_warehouse(root / "day2", names=NAMES + ("cart",), labelled=["cart"], must=["cart"], train=20, val=6,
                           size=64, seed=1)
    result = CliRunner().invoke(main, ["train", "--data", str(day1), "--out", str(root / "run"), "--backbone", "tiny",
                                       *QUICK])
    assert result.exit_code == 0, result.output
    return root / "run", day2


def test_compare_scores_candidates_on_held_out_data_and_keeps_the_best(warehouse_run):
    run, day2 = warehouse_run
    first = CliRunner().invoke(main, ["compare", str(run), "--data", str(day2), "--methods", "reminder,dkd",
                                      "--no-keep", *QUICK])
    assert first.exit_code == 0, first.output
    assert "cart" in first.output and "recommended:" in first.output and "similar-class drop" in first.output
    assert not (run / "step1").exists()  # --no-keep: the run is unchanged
    comparison = json.loads((run / "compare" / "step1" / "comparison.json").read_text())
    rows = {r["method"]: r for r in comparison["candidates"]}
    assert set(rows) == {"reminder", "dkd"} and comparison["chosen"] in rows
    assert all(0 <= r["all"] <= 1 and set(r["iou"]) == set(NAMES) | {"cart"} for r in rows.values())
    assert all(r["validation_images"] > 6 for r in rows.values())  # day 1's val images and day 2's held-out share
    trained = (run / "compare" / "step1" / "dkd" / "step1" / "model.safetensors").stat().st_mtime_ns

    # increment --method auto: compare with the defaults (reminder, dkd, mib); the two scored
    # candidates are resumed, not trained again, and the best is kept
    again = CliRunner().invoke(main, ["increment", str(run), "--data", str(day2), "--method", "auto", *QUICK])
    assert again.exit_code == 0, again.output
    assert (run / "compare" / "step1" / "dkd" / "step1" / "model.safetensors").stat().st_mtime_ns == trained
    comparison = json.loads((run / "compare" / "step1" / "comparison.json").read_text())
    assert {r["method"] for r in comparison["candidates"]} == {"reminder", "dkd", "mib"}
    chosen = comparison["chosen"]
    config = json.loads((run / "config.json").read_text())
    assert config["increments"][0]["method"] == chosen and config["increments"][0]["holdout"] == 0.2
    results = json.loads((run / "results.json").read_text())
    assert [s["classes"] for s in results["steps"]] == [list(NAMES[1:]), ["cart"]]
    evaluated = CliRunner().invoke(main, ["eval", str(run), "--quiet"])  # the kept step loads and scores
    assert evaluated.exit_code == 0, evaluated.output

    done = CliRunner().invoke(main, ["compare", str(run), "--data", str(day2), *QUICK])
    assert done.exit_code != 0 and "already a complete step of" in done.output


def test_compare_refuses_unknown_methods_and_keeps_to_its_budget(warehouse_run, tmp_path):
    import time

    from reminder.train.compare import _candidate
    from reminder.train.config import load_config

    run, day2 = warehouse_run
    bad = CliRunner().invoke(main, ["compare", str(run), "--data", str(day2), "--methods", "reminder,bogus"])
    assert bad.exit_code != 0 and "bogus" in bad.output and "Traceback" not in bad.output
    # a candidate that would not fit the budget, judged by those before it, is skipped untrained
    lines = []
    row = _candidate(run, tmp_path / "next", load_config(run), 1, budget=10.0, started=time.perf_counter(),
                     spent=[60.0], progress=False, log=lines.append)
    assert row == {"method": "reminder", "skipped": "budget"} and "budget of 10 s" in lines[0]
    assert not (tmp_path / "next").exists()
