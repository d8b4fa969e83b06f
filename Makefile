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
	$(VENV)/bin/ruff check ferlit tests benchmarks
	$(VENV)/bin/ruff format --check ferlit tests benchmarks

format: install
	$(VENV)/bin/ruff format ferlit tests benchmarks
	$(VENV)/bin/ruff check --fix ferlit tests benchmarks

## Loader, index and training-step figures on this machine (a few minutes; see README "Data at scale").
.PHONY: bench
bench: install
	$(PY) benchmarks/bench.py

## The whole training pipeline on a CUDA GPU: packed loader -> SE-ResNet-50 forward and backward,
## batch 256, fp32 / bf16, eager / torch.compile, augmentation on cpu / device (without CUDA: what
## the CPU can, and what it skipped).
.PHONY: bench-gpu
bench-gpu: install
	$(PY) benchmarks/bench.py --gpu

## Create the W&B sweep of experiments/sweep.yaml and print the command that starts its agents
## (needs network and `wandb login`; see README "Weights & Biases and sweeps").
.PHONY: sweep
SWEEP_CONFIG ?= experiments/sweep.yaml
sweep: install
	@out=$$($(VENV)/bin/wandb sweep $(SWEEP_CONFIG) 2>&1); status=$$?; printf '%s\n' "$$out"; \
	sweep=$$(printf '%s\n' "$$out" | sed -n 's/.*Run sweep agent with: wandb agent //p' | tail -n 1); \
	if [ $$status -ne 0 ] || [ -z "$$sweep" ]; then echo "make sweep: no sweep was created" >&2; exit 1; fi; \
	echo; \
	echo "Start agents from this folder, on as many machines or SLURM nodes as you like:"; \
	echo "  source $(VENV)/bin/activate"; \
	echo "  FERLIT_AFFWILD2_DIR=/data/Aff-Wild2 FERLIT_EXPW_DIR=/data/ExpW wandb agent $$sweep"

## Evaluate the sample run (after `make fit`): the best checkpoint runs/sample's newest run recorded
## into runs/sample-eval/ (predictions, metrics, plots, ABAW files; see README "Evaluation and exploration").
.PHONY: evaluate
evaluate: install
	$(PY) -m ferlit.evaluate --ckpt runs/sample --out runs/sample-eval --overwrite \
		--smooth auto --submission runs/sample-eval/submission
