"""The layout's rules, checked on the source: which room may import which, and which rooms
run without torch (docs/architecture.md states the same table)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "reminder"

# room -> the rooms its modules may import (besides itself), eagerly or lazily
BASE = {"errors", "io", "progress", "contracts"}
ALLOWED = {
    "errors": set(),
    "contracts": {"errors"},
    "io": {"errors"},
    "progress": set(),
    "bundle": {"errors", "io", "contracts"},
    "runtime": {"errors", "io", "bundle", "contracts"},
    "fleet": {"errors", "io", "bundle", "runtime", "contracts"},
    "serving": {"errors", "io", "bundle", "runtime", "contracts"},
    "data": BASE,
    "models": BASE,
    "train": BASE | {"data", "models"},
    "export": BASE | {"data", "models", "train", "bundle", "runtime"},
    "update": BASE | {"data", "models", "train", "export", "bundle", "runtime"},
    "demo": BASE | {"data", "models", "train", "export", "bundle", "runtime", "update", "fleet"},
    "cli": BASE | {"data", "models", "train", "export", "bundle", "runtime", "update", "fleet", "serving", "demo"},
}
TORCH_FREE = ("contracts", "bundle", "runtime", "fleet", "serving", "errors", "io", "progress", "cli")
# torch-free rooms' modules that load torch inside a function, for the backends that run on
# it (TorchScript, AOTInductor, the TensorRT engine's GPU buffers) and only when opened
LAZY_TORCH = {"runtime/backends.py", "runtime/engines.py"}


def _room(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _imports(path: Path) -> list[tuple[int, str, bool]]:
    """Every imported module name (top-level and inside functions), with its line and
    whether it is imported at module level."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append((node.lineno, node.module, id(node) in top))
            if node.module == "reminder":  # `from reminder import fleet`
                names += [(node.lineno, f"reminder.{alias.name}", id(node) in top) for alias in node.names]
    return names


def test_every_room_is_in_the_table():
    rooms = {_room(p) for p in _modules() if p.name != "__init__.py" or p.parent != PACKAGE}
    assert rooms <= set(ALLOWED), f"rooms without a rule: {rooms - set(ALLOWED)}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path):
    if path == PACKAGE / "__init__.py":
        return
    room = _room(path)
    wrong = []
    lazy_torch_allowed = str(path.relative_to(PACKAGE)) in LAZY_TORCH
    for line, name, module_level in _imports(path):
        parts = name.split(".")
        if parts[0] == "reminder" and len(parts) > 1 and parts[1] != room and parts[1] not in ALLOWED[room]:
            wrong.append(f"line {line}: {name}")
        if parts[0] in ("torch", "torchvision") and room in TORCH_FREE and (module_level or not lazy_torch_allowed):
            wrong.append(f"line {line}: {name} in a torch-free room")
    assert not wrong, f"{path.relative_to(PACKAGE)} ({room}) may import {sorted(ALLOWED[room])}: {wrong}"


def test_torch_free_rooms_import_with_torch_blocked():
    modules = [".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
               for p in _modules() if _room(p) in TORCH_FREE and p.name != "__main__.py"]
    script = (
        "import importlib, sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision'):\n"
        "            raise ImportError(f'{name} is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "assert not any(m.split('.')[0] == 'torch' for m in sys.modules)\n"
        "print(len(sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "reminder.fleet.device" in modules and "reminder.runtime.stream" in modules and "reminder.bundle" in modules


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > 400}
    assert not long


MANIFEST_KEYS = {"format", "name", "version", "step", "created", "parent", "classes", "input", "outputs", "artifacts",
                 "skipped", "files", "parity", "model", "metrics", "quality", "tools", "int8_refused", "update"}


def test_only_the_manifest_module_reads_the_manifest_by_key():
    """The manifest is typed (contracts/manifest.py): it has no ``[key]`` to read, and no other
    module indexes a manifest-like name with one of its keys or pulls them with ``.get``."""
    from reminder.contracts.manifest import Manifest

    assert not hasattr(Manifest, "__getitem__") and not hasattr(Manifest, "get")
    found = []
    for path in _modules():
        if path.relative_to(PACKAGE).as_posix() == "contracts/manifest.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            target, key = None, None
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                target, key = node.value, node.slice.value
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                  and node.args and isinstance(node.args[0], ast.Constant)):
                target, key = node.func.value, node.args[0].value
            name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")
            if key in MANIFEST_KEYS and ("manifest" in name.lower() or name == "parent"):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {name}[{key!r}]")
    assert not found, found
