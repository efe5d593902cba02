"""A Triton Inference Server model repository of bundles: one model per bundle name, one
numeric version per increment (docs/serving.md).

    REPO/NAME/config.pbtxt          one configuration for every version
    REPO/NAME/<N>/model.onnx        (onnxruntime, python) or model.plan (tensorrt)
    REPO/NAME/<N>/model.py          (python) runs model.onnx with ONNX Runtime
    REPO/NAME/<N>/manifest.json     the bundle's manifest: classes, colours, input, lineage

Why one model with versions rather than a model per class count: the graph's outputs are
``labels`` (B, H, W) and ``confidence`` (B, H, W) whatever the number of classes, so one
configuration serves every version; Triton's versions are what an increment is (the same
model, later), and a client asking for the newest version follows the increments. Each
version's class table is in its ``manifest.json`` and, for clients that only speak to the
server, in the configuration's ``parameters`` (``reminder_manifest_<N>``: base64 of its JSON).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from reminder.bundle import check_name, open_bundle
from reminder.contracts.manifest import Manifest
from reminder.errors import ReminderError
from reminder.io import atomic_write_text

PLATFORMS = ("python", "onnxruntime", "tensorrt")
MODEL_FILES = {"python": "model.onnx", "onnxruntime": "model.onnx", "tensorrt": "model.plan"}
LABEL_TYPES = {"uint8": "TYPE_UINT8", "int32": "TYPE_INT32"}


def model_versions(model_dir: Path) -> list[int]:
    """The numeric version folders of a model folder, in order."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def check_repository(repo: Path) -> None:
    """Every entry of ``repo`` must be a model folder (with ``config.pbtxt``); name the first that is not."""
    if repo.exists() and not repo.is_dir():
        raise ReminderError(f"model repository {repo} is a file, not a folder")
    for entry in sorted(repo.iterdir()) if repo.is_dir() else []:
        if entry.name.startswith("."):
            continue
        if not entry.is_dir() or not (entry / "config.pbtxt").is_file():
            raise ReminderError(f"{entry} is not a Triton model (a folder with config.pbtxt): a model repository "
                                f"holds models only; use another `repo`, or move it out")


def add_bundle(repo: str | Path, bundle: str | Path, *, platform: str = "python", max_batch_size: int = 8,
               instances: int = 1, kind: str = "cpu", queue_delay_us: int = 2000, versions_served: int = 2,
               version: int | None = None, reset_classes: bool = False) -> Path:
    """Add a verified ``bundle`` to ``repo`` as the next version of the model named after it;
    return the version folder.

    A bundle whose classes do not extend the model's newest version is refused unless
    ``reset_classes`` (a deliberate change of class list, as the fleet). ``versions_served``:
    how many of the newest versions the server keeps loaded (0: all; 2, the default, keeps
    the previous version answering while clients move to the new one)."""
    if platform not in PLATFORMS:
        raise ReminderError(f"unknown `platform` {platform!r}; expected one of {', '.join(PLATFORMS)}")
    if kind not in ("cpu", "gpu"):
        raise ReminderError(f"`kind` must be cpu or gpu, got {kind!r}")
    for name, value, low in (("max_batch_size", max_batch_size, 1), ("instances", instances, 1),
                             ("queue_delay_us", queue_delay_us, 0), ("versions_served", versions_served, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ReminderError(f"`{name}` must be a whole number of at least {low}, got {value!r}")
    repo = Path(repo)
    check_repository(repo)
    folder, manifest = open_bundle(bundle)
    name = check_name(manifest.name, "bundle name")
    source = _model_file(folder, manifest, platform)
    model_dir = repo / name
    existing = model_versions(model_dir)
    if version is None:
        version = (existing[-1] + 1) if existing else 1
    elif isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ReminderError(f"`version` must be a whole number from 1, got {version!r}")
    target = model_dir / str(version)
    if target.exists():
        raise ReminderError(f"{target} exists: a version folder is never replaced; add the bundle as a new version")
    if existing and not reset_classes:
        newest = read_version_manifest(model_dir, existing[-1])
        manifest.classes.check_extends(newest.classes, what=f"the classes of {manifest.version}")
    staging = model_dir / f".{version}.adding"
    if staging.exists():
        shutil.rmtree(staging)  # our own half-added version from an interrupted add
    staging.mkdir(parents=True)
    shutil.copy2(source, staging / MODEL_FILES[platform])
    if platform == "python":
        from reminder.serving.python_model import SOURCE

        (staging / "model.py").write_text(SOURCE)
    (staging / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=2))
    os.replace(staging, target)
    manifests = {v: read_version_manifest(model_dir, v) for v in model_versions(model_dir)}
    text = model_config(name, manifest, platform=platform, max_batch_size=max_batch_size, instances=instances,
                        kind=kind, queue_delay_us=queue_delay_us, versions_served=versions_served, manifests=manifests)
    atomic_write_text(model_dir / "config.pbtxt", text)
    return target


def _model_file(folder: Path, manifest: Manifest, platform: str) -> Path:
    fmt = "tensorrt" if platform == "tensorrt" else "onnx"
    if fmt not in manifest.formats:
        raise ReminderError(f"bundle {folder} has no {fmt} artifact, which platform {platform} serves; export it "
                            f"with that format" + (" on the GPU of the server" if fmt == "tensorrt" else ""))
    if manifest.outputs.kind != "labels":
        raise ReminderError(f"bundle {folder} outputs {manifest.outputs.kind}; Triton serves bundles that output "
                            f"labels (export with the default outputs)")
    return folder / manifest.artifact(fmt).path


def read_version_manifest(model_dir: Path, version: int) -> Manifest:
    path = model_dir / str(version) / "manifest.json"
    if not path.is_file():
        raise ReminderError(f"{model_dir / str(version)} has no manifest.json: it was not added by reminder triton "
                            f"add; remove it or add with `reset_classes`")
    return Manifest.from_json(json.loads(path.read_text()), str(path))


def _client_manifest(manifest: Manifest) -> str:
    """What a client needs of a version (the manifest without its file and artifact tables),
    as base64 of its JSON: any class name survives the protobuf text format."""
    import base64

    data = manifest.to_json()
    for key in ("files", "artifacts", "parity", "skipped", "update", "metrics"):
        data.pop(key, None)
    return base64.b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()


def model_config(name: str, manifest: Manifest, *, platform: str, max_batch_size: int, instances: int, kind: str,
                 queue_delay_us: int, versions_served: int, manifests: dict[int, Manifest]) -> str:
    """The model's ``config.pbtxt`` (Triton's protobuf text format)."""
    header = {"python": 'backend: "python"', "onnxruntime": 'platform: "onnxruntime_onnx"',
              "tensorrt": 'platform: "tensorrt_plan"'}[platform]
    label_type = LABEL_TYPES.get(manifest.outputs.label_dtype, "TYPE_UINT8")
    policy = "all { }" if versions_served == 0 else f"latest {{ num_versions: {versions_served} }}"
    parameters = [("reminder_platform", platform), ("reminder_newest", str(max(manifests)))]
    parameters += [(f"reminder_manifest_{v}", _client_manifest(m)) for v, m in sorted(manifests.items())]
    lines = [f'name: "{name}"', header, f"max_batch_size: {max_batch_size}",
             'input [ { name: "images" data_type: TYPE_FP32 dims: [ 3, -1, -1 ] } ]',
             "output [",
             f'  {{ name: "labels" data_type: {label_type} dims: [ -1, -1 ] }},',
             '  { name: "confidence" data_type: TYPE_FP32 dims: [ -1, -1 ] }',
             "]",
             f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}",
             f"instance_group [ {{ count: {instances} kind: KIND_{kind.upper()} }} ]",
             f"version_policy: {{ {policy} }}"]
    for key, value in parameters:
        lines.append(f'parameters {{ key: "{key}" value: {{ string_value: {json.dumps(value)} }} }}')
    return "\n".join(lines) + "\n"
