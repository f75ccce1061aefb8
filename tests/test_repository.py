"""The repository's tracked files: no absolute machine paths, no references to numbered issues
(write the fact instead), no large files outside the bundled data, and run archives, checkpoints
and weights are git-ignored (carry them outside git: docs/long-runs.md)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = "src/famerec/data/bundled/"  # the bundled datasets: large by nature
LIMIT = 5 * 2**20  # bytes; a tracked file above it outside BUNDLED fails the check
# Home and work folders of the machines this project ran on; built from parts so that this
# file does not match itself.
MACHINE_ROOTS = ("work", "root", "home", "Users", "mnt")
MACHINE_PATH = re.compile(r"(?<![\w.~/-])/(?:" + "|".join(MACHINE_ROOTS) + r")/[\w.-]")
ISSUE = re.compile(r"\bissues?\s+#?[0-9]", re.IGNORECASE)


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [name for name in out.decode().split("\0") if name]


def text_of(path: Path) -> str | None:
    """The file's text, or None for a binary file (a NUL byte, or not UTF-8)."""
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def text_problems(root: Path, paths: Iterable[str]) -> list[str]:
    """'path:line: what' for each absolute machine path and each issue number in the text
    files among `paths` (relative to `root`); binary files and the bundled data are skipped."""
    problems = []
    for name in paths:
        path = root / name
        if name.startswith(BUNDLED) or not path.is_file():
            continue
        text = text_of(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for pattern, what in ((MACHINE_PATH, "absolute machine path"), (ISSUE, "issue number")):
                found = pattern.search(line)
                if found:
                    problems.append(f"{name}:{number}: {what} {line[found.start() :][:60]!r}")
    return problems


def large_files(root: Path, paths: Iterable[str], limit: int = LIMIT) -> list[str]:
    """The files among `paths` (relative to `root`) larger than `limit` bytes, the bundled
    data aside."""
    return [
        name
        for name in paths
        if not name.startswith(BUNDLED)
        and (root / name).is_file()
        and (root / name).stat().st_size > limit
    ]


def test_no_machine_paths_or_issue_numbers_in_tracked_text():
    problems = text_problems(ROOT, tracked_files())
    assert not problems, "\n".join(problems)


def test_no_large_tracked_files_outside_the_bundled_data():
    assert not large_files(ROOT, tracked_files())


def test_the_bundled_data_exists_where_the_checks_leave_it_out():
    assert any(name.startswith(BUNDLED) for name in tracked_files())


def test_large_files_finds_a_6_mb_file(tmp_path):
    (tmp_path / "big.bin").write_bytes(b"\1" * (6 * 2**20))
    (tmp_path / "small.txt").write_text("small\n")
    bundled = tmp_path / BUNDLED / "huge.txt.gz"
    bundled.parent.mkdir(parents=True)
    bundled.write_bytes(b"\1" * (6 * 2**20))
    names = ["big.bin", "small.txt", f"{BUNDLED}huge.txt.gz", "missing.bin"]
    assert large_files(tmp_path, names) == ["big.bin"]


def test_text_problems_finds_paths_and_issue_numbers(tmp_path):
    home = "/" + MACHINE_ROOTS[2] + "/someone/famerec"
    word = "issue"  # in parts, so that this file does not match itself
    (tmp_path / "a.md").write_text(
        f"run it in {home}\nsee {word.title()} 12\n{word}s 9 and 10\n"
        "runs/x and https://example.org/home/x\n"
    )
    (tmp_path / "b.bin").write_bytes(b"\0" + home.encode())
    problems = text_problems(tmp_path, ["a.md", "b.bin"])
    assert [p.split(": ", 1)[0] for p in problems] == ["a.md:1", "a.md:2", "a.md:3"]


def test_run_archives_and_weights_are_ignored():
    examples = [
        "experiments/checkpoints/defaults_beauty.tar.gz",
        "checkpoints.tar.gz.part-aa",
        "records.tar.gz",
        "runs.zip",
        "runs/x/checkpoint.pt",
        "weights/model.safetensors",
        "gpu-out/sitting.log",
    ]
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", *examples], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode not in (0, 1):
        pytest.skip("not a git checkout")
    assert done.stdout.split() == examples


def test_no_tracked_file_is_ignored():
    done = subprocess.run(
        ["git", "ls-files", "--cached", "--ignored", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip("not a git checkout")
    assert done.stdout.split() == []
