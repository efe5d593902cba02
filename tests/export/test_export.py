import json
import shutil
import tarfile

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from conftest import SILENT, quick_config
from reminder.contracts.manifest import Manifest
from reminder.cli import main
from reminder.errors import ReminderError
from reminder.bundle import manifest_sha256, open_bundle, pack_bundle, read_manifest, unpack_bundle, verify_bundle
from reminder.export.exporter import each_step_exporter, export_bundle
from reminder.export.formats import FORMATS, parse_formats
from reminder.export.graph import ExportModule
from reminder.runtime.backends import open_artifact
from reminder.train.checkpoint import load_model
from reminder.train.run import train_scenario

QUIET = {"log": lambda message: None}


def _frames(batch=3, height=48, width=80, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (batch, 3, height, width)).astype(np.float32)


@pytest.mark.parametrize("step, classes, formats", [(0, 16, ("onnx", "torchscript")),
                                                     (1, 21, ("onnx", "torchscript"))])
def test_every_step_exports_to_onnx_torchscript_aoti(reminder_run, tmp_path, step, classes, formats):
    """(AOTInductor compiles for 25-40 s: tests/export/test_aoti.py compiles this model, and
    the DeepLabV3+ test below the decoder's, each once.)"""
    bundle = export_bundle(reminder_run, out=tmp_path / "bundle", formats=",".join(formats), step=step, **QUIET)
    manifest = verify_bundle(bundle).to_json()
    assert set(manifest["artifacts"]) == set(formats)
    assert len(manifest["classes"]) == classes and manifest["step"] == step
    for fmt, result in manifest["parity"].items():
        assert result["pixel_agreement"] >= 0.999 and result["images"] > 0, fmt
    eager = ExportModule(load_model(reminder_run / f"step{step}")[0])
    frames = _frames()  # traced at batch 2, 64x96: run at batch 3, 48x80
    with torch.no_grad():
        expected_labels = eager(torch.from_numpy(frames))[0].numpy()
    for fmt in formats:
        out = open_artifact(bundle, Manifest(manifest), fmt)(frames)
        assert out["labels"].shape == (3, 48, 80) and out["labels"].dtype == np.uint8
        assert (out["labels"] == expected_labels).mean() >= 0.999, fmt
        assert out["labels"].max() < classes and out["confidence"].max() <= 1.0 + 1e-6
    assert (bundle / "checkpoint.safetensors").is_file() and (bundle / "prototypes.safetensors").is_file()


def test_a_deeplabv3plus_model_exports_to_every_format_with_parity(v3plus_bundle):
    manifest = verify_bundle(v3plus_bundle).to_json()
    assert set(manifest["artifacts"]) == {"onnx", "onnx-int8", "torchscript", "aoti"}
    assert (manifest["model"]["head"], manifest["model"]["output_stride"]) == ("deeplabv3plus", 8)
    for fmt in ("onnx", "torchscript", "aoti"):
        assert manifest["parity"][fmt]["pixel_agreement"] >= 0.999, fmt
    assert manifest["parity"]["onnx-int8"]["images"] > 0  # quantised through the decoder's depthwise convolutions
    eager = ExportModule(load_model(v3plus_bundle.parent / "run" / "step0")[0])
    frames = _frames(height=40, width=72)  # not a multiple of 16: the decoder's stride-4 map is resized to fit
    with torch.no_grad():
        expected = eager(torch.from_numpy(frames))[0].numpy()
    for fmt in ("onnx", "torchscript", "aoti"):
        labels = open_artifact(v3plus_bundle, Manifest(manifest), fmt)(frames)["labels"]
        assert (labels == expected).mean() >= 0.999, fmt


def test_logits_output_and_metadata(reminder_run, tmp_path):
    bundle = export_bundle(reminder_run, out=tmp_path / "b", formats="onnx,torchscript", output="logits", **QUIET)
    manifest = read_manifest(bundle).to_json()
    assert manifest["outputs"]["kind"] == "logits" and manifest["input"]["normalization"] == "in-graph"
    out = open_artifact(bundle, Manifest(manifest), "onnx")(_frames(batch=2, height=40, width=56))
    assert out["logits"].shape == (2, 21, 40, 56)
    props = {p.key: p.value for p in onnx.load(str(bundle / "model.onnx")).metadata_props}
    assert json.loads(props["classes"])[-1]["name"] == "tvmonitor" and props["step"] == "1"
    extra = {"reminder.json": ""}
    torch.jit.load(str(bundle / "model.ts"), _extra_files=extra)
    assert json.loads(extra["reminder.json"])["output"] == "logits"


def test_export_each_step_during_training_with_lineage(synthvoc_root, tmp_path):
    config = quick_config(synthvoc_root, tmp_path, setting="15-1", export_each_step="onnx")
    train_scenario(config, on_step=each_step_exporter("onnx", log=lambda message: None), **SILENT)
    previous = None
    for step in range(6):
        bundle = tmp_path / "bundles" / f"step{step}"
        manifest = verify_bundle(bundle).to_json()
        assert len(manifest["classes"]) == 16 + step
        assert manifest["parity"]["onnx"]["pixel_agreement"] >= 0.999
        if previous is None:
            assert manifest["parent"] is None
        else:
            assert manifest["parent"] == {"version": read_manifest(previous).to_json()["version"],
                                          "manifest_sha256": manifest_sha256(previous)}
        previous = bundle


def test_tampered_bundle_is_refused_naming_the_file(reminder_run, tmp_path):
    bundle = export_bundle(reminder_run, out=tmp_path / "b", formats="onnx", **QUIET)
    archive = pack_bundle(bundle, tmp_path / "b.tar")
    assert verify_bundle(unpack_bundle(archive, tmp_path / "unpacked")).version == read_manifest(bundle).version
    original = (bundle / "model.onnx").read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ReminderError, match="model.onnx does not match its sha256"):
        verify_bundle(bundle).to_json()
    result = CliRunner().invoke(main, ["bundle", "verify", str(bundle)])
    assert result.exit_code == 2 and "model.onnx does not match" in result.output
    assert CliRunner().invoke(main, ["bundle", "verify", str(archive)]).exit_code == 0
    (bundle / "model.onnx").write_bytes(original)
    (bundle / "checkpoint.safetensors").unlink()
    with pytest.raises(ReminderError, match="checkpoint.safetensors is missing"):
        verify_bundle(bundle).to_json()


def test_tampered_archive_leaves_nothing_installed(reminder_run, tmp_path):
    bundle = export_bundle(reminder_run, out=tmp_path / "b", formats="onnx", **QUIET)
    archive = pack_bundle(bundle, tmp_path / "b.tar")
    with tarfile.open(archive) as tar:  # flip a byte inside model.onnx's data, wherever it lies
        offset = tar.getmember("model.onnx").offset_data + 100
    data = bytearray(archive.read_bytes())
    data[offset] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(ReminderError, match="model.onnx does not match its sha256"):
        open_bundle(archive, tmp_path / "work")
    assert not (tmp_path / "work" / "b").exists()


def test_unknown_manifest_format(reminder_run, tmp_path):
    bundle = export_bundle(reminder_run, out=tmp_path / "b", formats="onnx", **QUIET)
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "format": "reminder-bundle/9"}))
    with pytest.raises(ReminderError, match="has format 'reminder-bundle/9'"):
        verify_bundle(bundle).to_json()


def test_bad_export_requests(reminder_run, tmp_path, synthvoc_root):
    with pytest.raises(ReminderError, match="unknown export format 'tflite'"):
        parse_formats("onnx,tflite")
    with pytest.raises(ReminderError, match="step 7 of .* was never trained"):
        export_bundle(reminder_run, out=tmp_path / "b", step=7, **QUIET)
    empty = tmp_path / "empty_run"
    shutil.copytree(reminder_run, empty, ignore=shutil.ignore_patterns("step*", "bundles"))
    with pytest.raises(ReminderError, match="has no completed step"):
        export_bundle(empty, out=tmp_path / "b", **QUIET)
    assert list(parse_formats("tensorrt,onnx")) == [FORMATS["onnx"], FORMATS["tensorrt"]]


def test_missing_tensorrt_is_one_line_and_the_rest_exports(reminder_run, tmp_path):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here; this test covers its absence")
    except ImportError:
        pass
    result = CliRunner().invoke(main, ["export", str(reminder_run), "--format", "onnx,tensorrt",
                                       "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "tensorrt skipped: TensorRT is not installed" in result.output
    manifest = verify_bundle(tmp_path / "b").to_json()
    assert set(manifest["artifacts"]) == {"onnx"} and "tensorrt" in manifest["skipped"]
    # TensorRT alone: nothing to run, so no bundle (verify would have called it OK)
    alone = CliRunner().invoke(main, ["export", str(reminder_run), "--format", "tensorrt", "--out",
                                      str(tmp_path / "t")])
    assert alone.exit_code == 2 and "no model was exported (tensorrt: TensorRT is not installed" in alone.output
    assert not (tmp_path / "t").exists() and not list(tmp_path.glob(".t.*"))


def test_parity_failure_writes_no_bundle(reminder_run, tmp_path):
    with pytest.raises(ReminderError, match="parity failed for onnx"):
        export_bundle(reminder_run, out=tmp_path / "b", formats="onnx", parity_threshold=1.01, **QUIET)
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))


@pytest.mark.tensorrt
def test_tensorrt_engine_matches_onnx(reminder_run, tmp_path):
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU")
    bundle = export_bundle(reminder_run, out=tmp_path / "b", formats="onnx,tensorrt", **QUIET)
    manifest = verify_bundle(bundle).to_json()
    assert manifest["parity"]["tensorrt"]["pixel_agreement"] >= 0.999
    assert manifest["artifacts"]["tensorrt"]["compute_capability"].startswith("sm")


def test_onnx_bundle_verifies_and_runs_with_torch_blocked(reminder_run, tmp_path):
    """Devices verify and run ONNX bundles without torch (the full clean-venv test is the runtime's)."""
    import subprocess
    import sys

    bundle = export_bundle(reminder_run, out=tmp_path / "b", formats="onnx", **QUIET)
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from reminder.bundle import verify_bundle\n"
        "from reminder.runtime.backends import open_artifact\n"
        f"manifest = verify_bundle({str(bundle)!r})\n"
        f"out = open_artifact({str(bundle)!r}, manifest, 'onnx')(np.zeros((1, 3, 40, 40), np.float32))\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(out['labels'].shape)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 40, 40)"
    cli = subprocess.run([sys.executable, "-c", "import sys; sys.modules['torch'] = None\n"
                          "from reminder.cli import main; main()", "bundle", "verify", str(bundle)],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and "OK" in cli.stdout, cli.stderr


def test_the_input_profile_holds_the_parity_images_and_the_input_size(bundles):
    """The shapes a TensorRT engine of this bundle would accept (recorded for every bundle,
    so ONNX Runtime's TensorRT provider gets them too)."""
    from reminder.runtime.engines import EngineProfile

    manifest = read_manifest(bundles[1]).to_json()
    profile = EngineProfile.from_json(manifest["input"]["profile"])
    assert profile.opt_shape == (1, manifest["input"]["height"], manifest["input"]["width"])
    assert manifest["parity"]["onnx"]["images"] > 0
    assert profile.holds(64, 64) and profile.holds(manifest["input"]["height"], manifest["input"]["width"], 8)
    assert profile.min_shape[1] <= 32 and profile.max_shape[1] >= 128


def test_out_never_wipes_what_the_export_did_not_make(reminder_run, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    result = CliRunner().invoke(main, ["export", str(reminder_run), "--out", str(mine)])
    assert result.exit_code == 2 and "holds files that are not a bundle" in result.output
    assert (mine / "thesis.tex").read_text() == "precious"
    for out in (reminder_run, reminder_run.parent):
        with pytest.raises(ReminderError, match="which must be kept"):
            export_bundle(reminder_run, out=out, formats="onnx", force=True, **QUIET)
    assert (reminder_run / "step0" / "model.safetensors").is_file()
    first = export_bundle(reminder_run, out=tmp_path / "b", formats="onnx", **QUIET)
    assert export_bundle(reminder_run, out=first, formats="onnx", version="again", **QUIET) == first
    assert read_manifest(first).to_json()["version"] == "again"
    other = export_bundle(reminder_run, out=tmp_path / "o", formats="onnx", name="another", **QUIET)
    with pytest.raises(ReminderError, match="holds bundle 'another'"):
        export_bundle(reminder_run, out=other, formats="onnx", **QUIET)
    forced = CliRunner().invoke(main, ["export", str(reminder_run), "--out", str(mine), "--force"])
    assert forced.exit_code == 0 and not (mine / "thesis.tex").exists()


@pytest.mark.parametrize("field, value", [("version", "../../x"), ("version", ".."), ("name", "a/b")])
def test_names_and_versions_that_are_paths_are_refused_at_export(reminder_run, tmp_path, field, value):
    with pytest.raises(ReminderError, match=f"bundle {field} {value!r} is not allowed"):
        export_bundle(reminder_run, out=tmp_path / "b", formats="onnx", **{field: value}, **QUIET)
    assert not (tmp_path / "b").exists()


def test_tensorrt_options_without_the_tensorrt_format_are_refused(reminder_run, tmp_path):
    """--trt-fp16 with --format onnx was silently ignored."""
    with pytest.raises(ReminderError, match=r"trt_fp16 is an option of the tensorrt format.*\(onnx\)"):
        export_bundle(reminder_run, out=tmp_path / "b", formats="onnx", trt_fp16=True, **QUIET)
    with pytest.raises(ReminderError, match="trt_sizes is an option of the tensorrt format"):
        export_bundle(reminder_run, out=tmp_path / "b", formats="onnx,torchscript", trt_sizes=[(64, 64)], **QUIET)
    assert not (tmp_path / "b").exists()


def test_force_never_replaces_a_step_of_the_run(reminder_run, tmp_path):
    """`export --out runs/wh/step1 --force` deleted that step's checkpoint and metrics."""
    step = reminder_run / "step1"
    before = sorted(p.name for p in step.iterdir())
    with pytest.raises(ReminderError, match="is inside .* holds files that are not a bundle; `force` never"):
        export_bundle(reminder_run, out=step, formats="onnx", step=0, force=True, **QUIET)
    assert sorted(p.name for p in step.iterdir()) == before and (step / "model.safetensors").is_file()


def test_an_export_waits_for_the_process_that_holds_the_run(reminder_run, tmp_path):
    """Two processes on one run left a step whose checkpoint did not match its hash: train,
    increment and export now take the run folder's lock, and a second one waits."""
    import subprocess
    import sys
    import time

    from reminder.io import folder_lock

    command = [sys.executable, "-m", "reminder.cli", "export", str(reminder_run), "--out", str(tmp_path / "b"),
               "--step", "0"]
    with folder_lock(reminder_run):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        said = [process.stdout.readline() for _ in range(1)]
        while "another reminder process" not in said[-1] and said[-1] and len(said) < 20:
            said.append(process.stdout.readline())  # (a library warning may come first)
        time.sleep(2)
        assert "another reminder process is working on run" in said[-1] and process.poll() is None
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out
    assert (tmp_path / "b" / "manifest.json").is_file()


def test_a_bundles_calibration_cache_is_verified_and_never_written(bundles, tmp_path):
    """build_engine(..., calibration_cache=BUNDLE/calibration.cache) read the cache without
    verifying the bundle, and the calibrator could write it back into the bundle folder."""
    from reminder.bundle import file_entry, write_manifest
    from reminder.errors import IntegrityError
    from reminder.export.tensorrt import calibration_cache_bytes

    bundle = shutil.copytree(bundles[0], tmp_path / "b")
    cache = bundle / "calibration.cache"
    cache.write_bytes(b"TRT-100-EntropyCalibration2\nimages: 3c010a14\n")
    with pytest.raises(IntegrityError, match="not a file its bundle lists"):
        calibration_cache_bytes(cache)
    manifest = read_manifest(bundle).to_json()
    manifest["files"]["calibration.cache"] = file_entry(cache)
    write_manifest(bundle, manifest)
    assert calibration_cache_bytes(cache) == (cache.read_bytes(), False)  # read, never written back
    cache.write_bytes(b"TRT-100-EntropyCalibration2\nimages: 7f7f7f7f\n")
    with pytest.raises(IntegrityError, match="does not match its sha256"):
        calibration_cache_bytes(cache)
    assert calibration_cache_bytes(tmp_path / "scratch.cache") == (None, True)  # a build's own: written


def test_every_format_of_the_artifact_table_has_a_writer():
    from reminder.contracts.artifacts import ARTIFACTS
    from reminder.export.writers import WRITERS

    assert list(WRITERS) == list(ARTIFACTS)
