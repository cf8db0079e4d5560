# make setup  - .venv with clr_dist and everything it needs (torch, torchvision, timm, hydra, DALI, wandb)
# make demo   - AlexNet, triangular CLR, 2 torchrun processes on the embedded dataset (CPU is fine)
# make test   - the test suite (fast unit tests and real multi-process runs); installs Debian test data
# make deps   - Debian packages the tests use (Fashion-MNIST), when run as root
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.clr_dist-installed

.PHONY: setup deps demo test test-fast clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian packages some tests use (Fashion-MNIST); without root or apt those tests skip.
deps:
	CLR_DIST_DEPS_STRICT=$${CI:+1} bash tools/install-debian-deps.sh

demo: setup
	VENV=$(VENV) bash launch/demo.sh

test: setup deps
	$(BIN)/python -m pytest

# Unit tests only (seconds): skips the real multi-process runs.
test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

clean:
	rm -rf runs outputs multirun .pytest_cache
