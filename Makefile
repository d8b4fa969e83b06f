# ferlit: every set-up step lives here, so a fresh clone needs only `make fit` or `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: install fit test lint format clean-sample

# The venv is rebuilt when pyproject.toml changes. torch/torchvision are pinned exactly
# (2.14.1 / 0.29.1): pip takes them from this machine's wheel cache instead of downloading.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

## Train on experiments/sample.yaml (writes the sample data first if absent).
fit: install
	$(PY) -m ferlit.fit --config experiments/sample.yaml

## The whole test suite (CI runs exactly this).
test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check ferlit tests
	$(VENV)/bin/ruff format --check ferlit tests

format: install
	$(VENV)/bin/ruff format ferlit tests
	$(VENV)/bin/ruff check --fix ferlit tests

## Loader, index and training-step figures on this machine (a few minutes; see README "Data at scale").
.PHONY: bench
bench: install
	$(PY) -m ferlit.bench
