"""The README walkthrough, run as a new user would run it, so the README cannot rot."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- walkthrough -->\s*```sh\n(.*?)```", text, re.S)
    assert match, "README has no walkthrough block"
    return match.group(1)


def test_readme_walkthrough(tmp_path: Path) -> None:
    (tmp_path / "domain" / "protocols").mkdir(parents=True)
    shutil.copy(ROOT / "domain" / "protocols" / "msc-t2dm.toml", tmp_path / "domain" / "protocols")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAL_LEDGER")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", walkthrough()], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    out, err = result.stdout, result.stderr
    assert "initialised MSC-T2DM" in out
    assert "registered dr-li as investigator" in out
    assert "lab FBG: 8.4 mmol/L" in out                      # show
    assert "icf-1.0.txt: registered icf version 1.0" in out  # document check
    assert "dr-li (investigator, Dr Li Wei)" in out          # audit
    assert "OK: every hash link" in out                      # verify before tampering
    assert "package OK: manifest signed by the pinned key" in out  # the inspector's one command
    assert "verify exited 1 — tampering detected" in out     # verify after
    assert "hash mismatch" in err
    assert "Traceback" not in out + err
