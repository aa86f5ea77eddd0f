# make train  — create .venv if needed, install, run the default experiment (t5_tiny, embedded corpus)
# make test   — create .venv if needed, install, run the test suite (not `slow`; `make test-slow` runs those)
PYTHON ?= python3
TORCH_INDEX ?=
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install train test test-slow test-all lint report figures clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and exactly pinned, so that no range elsewhere pulls in another release. From PyPI on Linux
	# x86_64 this pin is the CUDA build (its wheel plus the CUDA libraries, several GB); on a CPU-only machine
	# `make install TORCH_INDEX=https://download.pytorch.org/whl/cpu` takes PyTorch's CPU build of the same release.
	$(PY) -m pip install --quiet "torch==2.13.0" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@

train: install
	$(PY) -m glu_study.train $(ARGS)

# The fast tier in parallel worker processes (pytest-xdist, one per core: `make test TEST_WORKERS=0` runs it in
# one process): most of its time is CLI subprocesses starting torch, which two cores overlap. The slow tier stays
# serial: its kill/poll loops and torchrun ranks want the cores they were written for.
TEST_WORKERS ?= auto
test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) $(ARGS)

# The slow tier alone (kill/poll loops, torchrun, multi-run sweeps as fixtures): .ci/run runs it after `make test`.
test-slow: install
	$(PY) -m pytest -q --runslow -m slow $(ARGS)

test-all: install
	$(PY) -m pytest -q --runslow $(ARGS)

lint: install
	$(VENV)/bin/ruff check glu_study tests scripts
	$(VENV)/bin/ruff format --check glu_study tests scripts

# Regenerate every committed study from the raw run records committed beside it (byte for byte), and its README
# section; reports/perf.md from the benchmark scripts' raw measurements (reports/perf/*.json); the MLP comparison
# from reports/mlp/runs.jsonl; the activation gallery (drawn from the code, no records).
STUDIES := table1_cpu_lr table1_cpu scaling_cpu table1_regime_lr table1_regime regime_curve scaling_regime fall_probe fall_probe_long table1_past_fall_lr
report: install
	@for s in $(STUDIES); do \
	  if [ -d reports/$$s/runs ]; then $(PY) -m glu_study.report reports/$$s/runs --out reports/$$s --readme README.md || exit 1; \
	  else echo "reports/$$s: no committed records"; fi; \
	done
	@# the repetition control, read against its reference study (only where each run's loss falls is compared)
	@if [ -d reports/regime_control/runs ]; then $(PY) -m glu_study.report reports/regime_control/runs \
	  --reference table1_regime --out reports/regime_control --readme README.md || exit 1; \
	else echo "reports/regime_control: no committed records"; fi
	$(PY) -m glu_study.reporting.perf reports/perf --out reports/perf.md
	$(PY) -m glu_study.mlp --render
	$(PY) -m glu_study.gallery

# The activation gallery and the quick MLP comparison (reports/figures, reports/mlp).
figures: install
	$(PY) -m glu_study.gallery
	$(PY) -m glu_study.mlp

clean:
	rm -rf runs outputs .pytest_cache
