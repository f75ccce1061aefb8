"""Keep freed memory in the process, so that training does not page-fault its way through.

Every training step allocates and frees the same large tensors (scores over every item, their
gradients). glibc's malloc serves each block over its mmap threshold (128 KiB at first, at
most 32 MiB) from a fresh `mmap` and unmaps it when freed, so the kernel maps and zeroes every
page again at the next step: on the project's CPU a quarter of MiaSRec's CPU time went there
(`benchmarks/allocator.py`; RESULTS.md). Taking every block from the heap (`M_MMAP_MAX` 0)
and not trimming it (`M_TRIM_THRESHOLD`) makes the next step reuse the same pages; what is
computed does not change, only where the bytes live. The cost: the process holds its peak
memory until it ends (Beauty, 1 thread, training with evaluation: MiaSRec 3.5 GiB resident
against 2.2 GiB with glibc's default, MSGIFSR 4.6 against 4.1 GiB, read with `ps`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

# mallopt parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
KEEP_UP_TO = 2**31 - 1  # bytes of free memory at the heap's top before it is handed back


def user_tuned_malloc() -> bool:
    """The user set glibc's malloc through the environment: theirs wins."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(key.startswith("MALLOC_") for key in os.environ) or "malloc" in tunables


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed blocks instead of returning them to the kernel; call once
    at the start of a training process. Returns whether it applied (not on other C libraries,
    nor when any MALLOC_* variable or a malloc GLIBC_TUNABLES is set: set e.g.
    MALLOC_MMAP_MAX_=65536, glibc's default, to keep the default behaviour)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or user_tuned_malloc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    applied = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, KEEP_UP_TO) == 1
    log.debug("malloc keeps freed memory: %s", applied)
    return applied
