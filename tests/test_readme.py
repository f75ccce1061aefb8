"""README.md: its runnable shell blocks run, and its links into docs/ lead to files.

A runnable block is a fenced block with the info string `sh runnable`. Each of its lines is
one `famerec ...` command; it runs in this process (famerec.cli.main) and must exit 0, so
keep those commands cheap (help, listings)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from famerec.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def runnable_commands(text: str) -> list[str]:
    commands = []
    for info, body in FENCE.findall(text):
        if info.split() != ["sh", "runnable"]:
            continue
        for line in body.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def docs_links(text: str) -> list[str]:
    """Targets of markdown links and backticked paths that start with docs/."""
    links = re.findall(r"\]\((docs/[^)\s#]*)", text)
    links += re.findall(r"`(docs/[^`\s#]*)`", text)
    return links


def test_readme_has_runnable_commands_and_the_ci_command():
    text = README.read_text()
    assert len(runnable_commands(text)) >= 3
    assert "make test" in text  # .ci/run runs `make test`; the README names it


@pytest.mark.parametrize("command", runnable_commands(README.read_text()))
def test_readme_runnable_command(command, capsys):
    argv = shlex.split(command)
    assert argv[0] == "famerec", f"runnable blocks hold famerec commands only: {command}"
    assert main(argv[1:]) == 0, command
    assert capsys.readouterr().out.strip(), f"{command} printed nothing"


def test_readme_docs_links_exist():
    links = docs_links(README.read_text())
    assert links, "the README links to docs/"
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_docs_pages_link_to_existing_pages():
    for page in sorted((ROOT / "docs").glob("*.md")):
        for target in re.findall(r"\]\(([^)\s#:]+\.md)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_runnable_block_parsing():
    text = "```sh runnable\nfamerec --help   # all\n# note\n```\n```sh\nmake test\n```\n"
    assert runnable_commands(text) == ["famerec --help"]
