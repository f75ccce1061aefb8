# Two commands for a fresh machine with Python 3: `make demo` and `make test`.
# Both create (or reuse) a virtual environment in .venv and install what they need.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch 2.13.0 installs from local disk on the project's machines;
# elsewhere pip fetches it from PyPI. Override with e.g. `make demo TORCH=torch==2.11.0`.
TORCH ?= torch==2.13.0

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,ann]"
	touch $@

DEMO ?= runs/demo
QUICK ?= --dataset beauty --preset quick --overwrite

# SASRec, then FAME fine-tuned from it, both with the quick preset, then one user's explanation.
demo: $(VENV)/.installed
	@echo "famerec demo on Amazon Beauty with the QUICK PRESET (15 epochs, patience 3): enough to"
	@echo "see learning, not to converge; the README's results come from full runs."
	@echo; echo "== 1/3: SASRec (quick preset) -> $(DEMO)/sasrec"
	$(BIN)/famerec train --model sasrec $(QUICK) --out $(DEMO)/sasrec
	@echo; echo "== 2/3: FAME fine-tuned from that SASRec run (quick preset) -> $(DEMO)/fame"
	$(BIN)/famerec train --model fame $(QUICK) --init-from $(DEMO)/sasrec --out $(DEMO)/fame
	@echo; echo "== 3/3: what each FAME head recommends to user 230, and why"
	$(BIN)/famerec explain --run $(DEMO)/fame --user 230 -k 10
	@echo; echo "quick-preset demo done: runs in $(DEMO); full runs: README.md and docs/training.md"

test: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks studies tools
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/speed.py

clean:
	rm -rf $(VENV) runs
