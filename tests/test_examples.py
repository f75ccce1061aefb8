"""The examples in examples/ run (small sizes) and do what they say."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_compare_example_trains_compares_and_plots(tmp_path):
    script = ROOT / "examples" / "compare_sasrec_fame.py"
    args = ["--users", "400", "--epochs", "2", "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "Run(" in done.stdout and "fame" in done.stdout
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert (tmp_path / "fame" / "metrics.json").is_file()
