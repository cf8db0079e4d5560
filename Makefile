# make setup  - .venv with clr_dist and everything it needs (torch, torchvision, timm, hydra, DALI, wandb)
# make demo   - AlexNet, triangular CLR on the embedded dataset: 2 torchrun processes on a CPU, one per GPU
# make test   - lint, then the test suite (fast unit tests and real multi-process runs); installs Debian test data
# make test-fast - lint and the unit tests only (under a minute)
# make lint   - ruff: the linter and the formatter's check (make format applies the formatter)
# make deps   - Debian packages the tests use (Fashion-MNIST), when run as root
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.clr_dist-installed

.PHONY: setup deps demo lint format test test-fast clean

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

lint: setup
	$(BIN)/ruff check clr_dist tests bench
	$(BIN)/ruff format --check clr_dist tests bench

format: setup
	$(BIN)/ruff check --fix clr_dist tests bench
	$(BIN)/ruff format clr_dist tests bench

test: setup deps lint
	$(BIN)/python -m pytest

# Lint and the unit tests (under a minute): skips everything that starts a process or trains.
test-fast: setup lint
	$(BIN)/python -m pytest -m "not slow"

clean:
	rm -rf runs outputs multirun .pytest_cache
