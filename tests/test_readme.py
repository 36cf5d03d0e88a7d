"""Every Python block of README.md runs as written, each in a fresh interpreter and directory."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README.read_text(), flags=re.M | re.S)


def _first_code_line(block: str) -> str:
    return next(line for line in block.splitlines() if line and not line.startswith("#"))


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("block", BLOCKS, ids=[_first_code_line(b)[:40] for b in BLOCKS])
def test_readme_block_runs(block, tmp_path):
    completed = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
