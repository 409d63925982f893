# lpot-ir set-up contract: `make demo` runs the main job on the bundled example, `make test` the suite.
# Both install what they need first (a .venv in this checkout), so a fresh clone needs nothing else.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := torch,tensorflow,tuning,data,tensorboard,examples,distributed,dev
PYTEST_ARGS ?=

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	# torch first, pinned: any other spec pulls a multi-GB CUDA build on this platform.
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e '.[$(EXTRAS)]'
	touch $(STAMP)

demo: install
	$(BIN)/python -m lpot_ir.demo

test: install
	$(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check lpot_ir tests benchmarks examples
	$(BIN)/mypy lpot_ir

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
