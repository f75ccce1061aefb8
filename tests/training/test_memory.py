"""keep_freed_memory: large blocks freed by one step are reused by the next, not re-faulted."""

import json
import os
import platform
import subprocess
import sys

import pytest

# Allocate and free a 64 MiB tensor 20 times; report the page faults of the loop.
CHILD = """
import json, resource, sys, torch
from famerec.training.memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
torch.empty(1).fill_(0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    block = torch.empty(16 * 2**20)  # 64 MiB: over glibc's largest mmap threshold
    block.fill_(1.0)
    del block
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": faults}))
"""

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)


def child(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    clean.pop("GLIBC_TUNABLES", None)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


@glibc
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    default, kept = child("default"), child("keep")
    block_pages = 64 * 2**20 // 4096
    assert kept["applied"] and not default["applied"]
    assert default["faults"] > 0.9 * 20 * block_pages  # each step maps and zeroes it again
    assert kept["faults"] < 3 * block_pages  # the heap grows once or twice, then is reused


@glibc
def test_the_users_malloc_settings_win():
    assert not child("keep", MALLOC_MMAP_MAX_="65536")["applied"]
    assert not child("keep", GLIBC_TUNABLES="glibc.malloc.mmap_max=65536")["applied"]
