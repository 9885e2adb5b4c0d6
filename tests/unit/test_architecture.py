"""The architecture holds: `lint-imports` keeps the contracts of pyproject.toml
([tool.importlinter]): smscenter -> storage -> routing -> protocol; inside smscenter, entry points
(bench, cli, tools) -> app -> doors (smpp, http) -> pipeline -> config -> runtime; protocol and
routing never touch asyncio, sockets or SQLAlchemy."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_a_layer_violation_is_caught(tmp_path):
    """The contracts can fail: a pipeline module that imports a door breaks them."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    for top in ("smscenter", "storage", "routing", "protocol"):
        os.symlink(ROOT / top, tmp_path / top) if top != "smscenter" else None
    pkg = tmp_path / "smscenter"
    pkg.mkdir()
    for child in (ROOT / "smscenter").iterdir():
        if child.name not in {"pipeline", "__pycache__"}:
            os.symlink(child, pkg / child.name)
    pipeline = pkg / "pipeline"
    pipeline.mkdir()
    for child in (ROOT / "smscenter" / "pipeline").iterdir():
        if child.suffix == ".py":
            os.symlink(child, pipeline / child.name)
    (pipeline / "leak.py").write_text("from smscenter.http import ops\n")
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([str(lint), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "smscenter.pipeline.leak -> smscenter.http.ops" in done.stdout
