"""The package famerec.runs (`dir`: the run directory, `load`: loading a finished run) and the
old import paths it keeps: `famerec.rundir` is `famerec.runs.dir`, and every name of the former
module `famerec.runs` is still importable from the package, without `dir` loading `load`."""

from __future__ import annotations

import subprocess
import sys

import pytest

import famerec.runs
import famerec.runs.dir
import famerec.runs.load


def test_the_old_module_rundir_is_the_run_directory_module():
    import famerec.rundir
    from famerec.rundir import LOCK, RunDir, atomic_write

    assert famerec.rundir is famerec.runs.dir
    assert (LOCK, RunDir, atomic_write) == (
        famerec.runs.dir.LOCK,
        famerec.runs.dir.RunDir,
        famerec.runs.dir.atomic_write,
    )


def test_every_name_of_the_loading_module_is_importable_from_the_package():
    from famerec.runs import TrainedRun, load_run, resolve_device, save_weights

    load = famerec.runs.load
    assert (TrainedRun, load_run, resolve_device, save_weights) == (
        load.TrainedRun,
        load.load_run,
        load.resolve_device,
        load.save_weights,
    )
    names = [name for name in vars(load) if not name.startswith("__")]
    assert "RunDir" in names and "input_copy" in names  # what it imports, as before
    assert all(getattr(famerec.runs, name) is getattr(load, name) for name in names)
    from famerec.runs import dir as dir_module
    from famerec.runs import load as load_module

    assert (dir_module, load_module) == (famerec.runs.dir, famerec.runs.load)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        famerec.runs.no_such_name  # noqa: B018


def test_the_run_directory_is_imported_without_the_loading_module():
    script = (
        "import sys\n"
        "import famerec.runs.dir, famerec.rundir\n"
        "from famerec.runs import dir\n"
        "print(sorted({'famerec.runs.load', 'torch'} & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout == "[]\n"


def test_a_machine_names_its_cpu_family_and_model(tmp_path):
    from famerec.runs.machine import cpu_id, cpu_label, machine

    cpuinfo = tmp_path / "cpuinfo"
    block = "vendor_id\t: AuthenticAMD\ncpu family\t: {f}\nmodel\t\t: {m}\nmodel name\t: AMD EPYC\n"
    cpuinfo.write_text(block.format(f=25, m=1) + "\n" + block.format(f=26, m=2))
    assert cpu_id(cpuinfo) == "family 25, model 1"  # the first processor's
    cpuinfo.write_text("model name\t: Some CPU\n")
    assert cpu_id(cpuinfo) is None and cpu_id(tmp_path / "missing") is None
    # two generations that a virtual machine names alike are told apart; old records are not
    assert cpu_label({"cpu": "AMD EPYC", "cpu_id": "family 25, model 1"}) == (
        "AMD EPYC (family 25, model 1)"
    )
    assert cpu_label({"cpu": "Intel Xeon Processor @ 2.80GHz"}) == "Intel Xeon Processor @ 2.80GHz"
    info = machine("cpu")
    assert info["cores"] >= 1 and info["cpu"] and "gpu" not in info
