"""Where a run ran: platform, Python, CPU (name, family and model), cores, and a CUDA run's GPU.

`famerec train` writes it into metrics.json (`machine`) and the experiment runner into each
record.json, so that minutes from two machines are never compared as if from one.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def first_processor(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The fields of the first processor in /proc/cpuinfo ({} where it cannot be read)."""
    fields: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip():
                break  # the first processor's block is enough
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return {}
    return fields


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    name = first_processor(cpuinfo).get("model name")
    return name or platform.processor() or platform.machine()


def cpu_id(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's family and model numbers ("family 25, model 1"): a virtual machine may name
    two generations alike ("AMD EPYC"), and their speeds differ by 2-3x. None where
    /proc/cpuinfo does not say."""
    fields = first_processor(cpuinfo)
    if "cpu family" not in fields or "model" not in fields:
        return None
    return f"family {fields['cpu family']}, model {fields['model']}"


@functools.cache
def gpu_name() -> str | None:
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return names[0] if result.returncode == 0 and names else None


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine(device: str) -> dict[str, Any]:
    """Where a run ran: platform, CPU (name, and family and model where known), cores, and
    the GPU for CUDA runs."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cores": usable_cores(),
    }
    if (cpu := cpu_id()) is not None:
        info["cpu_id"] = cpu
    if device.startswith("cuda"):
        info["gpu"] = gpu_name() or "unknown CUDA device"
    return info


def cpu_label(info: dict[str, Any]) -> str:
    """A machine's CPU in words: its name, with family and model where recorded ("AMD EPYC
    (family 25, model 1)"); records older than the field give the name alone."""
    name = str(info.get("cpu", "?"))
    return f"{name} ({info['cpu_id']})" if info.get("cpu_id") else name
