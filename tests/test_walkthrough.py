"""The README's own-data walk-through, every command in order, on a fresh folder.

The commands are read from the README's ``## Your own data, step by step`` bash block and
run as a user would, through the installed ``reminder`` command. The one line that starts
a web server in the background (``python -m http.server ... &``) is replaced by a server
on a free port of 127.0.0.1, whose address replaces ``http://127.0.0.1:8000`` after it.
``train`` and ``increment`` are capped at ``STEP_ITERATIONS`` iterations a step, a sixth of
the preset (a third of the increment's), so that the suite keeps its time: the commands and every file they write are
the user's; the numbers of the full schedule are in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"
STEP_ITERATIONS = 100


def walkthrough_commands() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Your own data, step by step"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.mark.timeout(1500)  # about 3 minutes alone on 2 cores; CI machines share theirs
def test_the_walkthrough_runs_as_written(tmp_path):
    commands = walkthrough_commands()
    assert any(c.startswith("reminder increment") for c in commands) and any("fleet sync" in c for c in commands)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    server, url = None, "http://127.0.0.1:8000"
    try:
        for command in commands:
            if command.startswith("python -m http.server"):
                folder = tmp_path / command.split("--directory")[1].split()[0]
                server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(folder)))
                threading.Thread(target=server.serve_forever, daemon=True).start()
                url = f"http://127.0.0.1:{server.server_address[1]}"
                continue
            command = command.replace("http://127.0.0.1:8000", url)
            if command.startswith(("reminder train ", "reminder increment ")):
                command += f" --max-iterations {STEP_ITERATIONS}"
            done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=400)
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()

    names = ["background", "shelf", "pallet", "forklift", "person", "cart"]
    assert (tmp_path / "wh" / "day1" / "data-check.png").is_file()
    results = json.loads((tmp_path / "runs" / "wh" / "results.json").read_text())
    assert [s["classes"] for s in results["steps"]] == [names[1:5], ["cart"]]
    assert (tmp_path / "runs" / "wh" / "step1" / "history.csv").is_file()
    assert (tmp_path / "runs" / "wh" / "report" / "losses_wh.png").is_file()
    # the user's names all the way: server bundle, device bundle, the installed one
    first = json.loads((tmp_path / "bundles" / "wh-1" / "manifest.json").read_text())
    assert [c["name"] for c in first["classes"]] == names and first["name"] == "wh"
    second = json.loads((tmp_path / "bundles" / "wh-2" / "manifest.json").read_text())
    assert [c["name"] for c in second["classes"]] == names + ["cone"]
    installed = json.loads((tmp_path / "device" / "current" / "manifest.json").read_text())
    assert installed["version"] == second["version"] and installed["classes"] == second["classes"]
    # reminder run wrote a labelled overlay and a palette label PNG per frame
    labels = sorted((tmp_path / "seen" / "val" / "labels").glob("*.png"))
    assert len(labels) == 16 and len(list((tmp_path / "seen" / "val" / "overlay").glob("*.jpg"))) == 16
    with Image.open(labels[0]) as image:
        assert image.mode == "P" and np.array(image).max() < len(names)
