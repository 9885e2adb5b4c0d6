"""The unit file passes ``systemd-analyze verify`` (issue 17): with the daemon's binary where
the unit expects it (a copy of the unit pointing at this venv's ``smscenter``), no error and no
warning — systemd only warns about a key it cannot parse, so any output fails the test. Under
CI, a missing systemd-analyze fails instead of skipping (``.ci/run`` installs systemd)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "smscenter.service"
INSTALLED = "/opt/smscenter/.venv/bin/smscenter"


def _verify(unit: Path) -> subprocess.CompletedProcess:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing (apt-get install systemd)")
        pytest.skip("systemd-analyze is not installed")
    return subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True)


def _unit_here(tmp_path: Path, text: str) -> Path:
    smscenter = Path(sys.executable).with_name("smscenter")
    assert smscenter.exists(), "the package's console script (pip install -e .)"
    path = tmp_path / "smscenter.service"
    path.write_text(text.replace(INSTALLED, str(smscenter)))
    return path


def test_the_unit_verifies_cleanly(tmp_path):
    text = UNIT.read_text()
    assert INSTALLED in text and "ExecReload=/bin/kill -HUP $MAINPID" in text and "Type=notify" in text
    done = _verify(_unit_here(tmp_path, text))
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done.stdout + done.stderr


def test_a_broken_unit_is_caught(tmp_path):
    """The check can fail: a misspelt key value is reported (as a warning, exit 0)."""
    done = _verify(_unit_here(tmp_path, UNIT.read_text().replace("Type=notify", "Type=notifyy")))
    assert "notifyy" in done.stdout + done.stderr
